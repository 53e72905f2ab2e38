"""`memlens run --trace` with the tracer memlens carries (tests/it/trace_embedded.rs).

usage: trace_embedded.py N [replace]

Prints one JSON line: the first library of LD_PRELOAD, its mode, the directory of
MEMLENS_TRACE_OUT, and whether the kernel mapped that library into this process and into a
child Python (/proc/self/maps). Then holds N bytes (one bytearray, on the line the test finds
by its marker) and exits. With `replace`, it first moves memlens's copy of the library aside in
the private directory and puts a file of its own at that name (memlens must leave both).
"""
import json
import os
import subprocess
import sys

MAPPED = "import os, sys; lib = os.path.realpath(os.environ['LD_PRELOAD'].split(':')[0]); " \
    "print(any(l.rstrip('\\n').endswith(' ' + lib) for l in open('/proc/self/maps')))"

n = int(sys.argv[1])
lib = os.environ.get("LD_PRELOAD", "").split(":")[0]
mode = os.stat(lib).st_mode & 0o7777
with open("/proc/self/maps") as f:
    real = os.path.realpath(lib)  # as the kernel names it
    mapped = any(line.rstrip("\n").endswith(" " + real) for line in f)
child = subprocess.check_output([sys.executable, "-c", MAPPED]).decode().strip() == "True"
if sys.argv[2:] == ["replace"]:
    os.rename(lib, os.path.join(os.path.dirname(lib), "moved-by-program"))
    with open(lib, "w") as f:
        f.write("the program's own file")
held = bytearray(n)  # @hold
print(json.dumps({
    "lib": lib,
    "mode": mode,
    "mapped": mapped,
    "child_mapped": child,
    "trace_dir": os.path.dirname(os.environ["MEMLENS_TRACE_OUT"]),
}))
sys.stdout.flush()
