# Runs memlens on its own process, as the memlens Python package does (memlens is then a
# descendant of its target), with one child of its own that must be counted:
#   reads_itself.py MEMLENS record   -> `memlens record <own pid> --json`, stopped with SIGINT
#                                       once memlens printed its READY line on stderr
#   reads_itself.py MEMLENS snapshot -> `memlens snapshot <own pid> --tree --json`
# Prints {"self", "child", "memlens", "exit", "report"} as one JSON line, then READY.
import json, os, signal, subprocess, sys

memlens, mode = sys.argv[1], sys.argv[2]
child = subprocess.Popen(
    [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
assert child.stdout.readline() == b"up\n"
me = str(os.getpid())
if mode == "record":
    argv = [memlens, "record", me, "--json", "-o", sys.argv[3]]
else:
    argv = [memlens, "snapshot", me, "--tree", "--json"]
m = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
if mode == "record":
    # The READY line the Python package waits for: SIGINT from then on stops it cleanly.
    line = m.stderr.readline().decode()
    assert line.startswith("memlens: recording pid %s into " % me), line
    m.send_signal(signal.SIGINT)
out, err = m.communicate()
child.stdin.close()
child.wait()
print(json.dumps({"self": os.getpid(), "child": child.pid, "memlens": m.pid,
                  "exit": m.returncode, "stderr": err.decode(),
                  "report": json.loads(out) if m.returncode == 0 else None}), flush=True)
print("READY", flush=True)
sys.stdin.read()
