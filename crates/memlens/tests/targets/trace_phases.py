"""run --trace test target (it::trace_live): steps through phases, one per `go` line on
stdin. Each phase allocates or frees blocks of SIZE bytes (argv[1]) by construction at two
known lines (`# @A`, `# @B`), then makes the tracer write a snapshot that covers it: it reads
its own trace file (MEMLENS_TRACE_OUT, the contract of docs/trace-format.md) until two `snap`
lines written after the phase have appeared, allocating small objects meanwhile (the tracer
drains on an allocation once its period has passed; it has no thread), and prints
`PHASE K OFFSET` (OFFSET: bytes of its trace file up to the second snap line, so every line
of the first snapshot lies before it). On EOF or a SIGINT (KeyboardInterrupt) it leaves
normally (exit, so the tracer writes its `end` line). Phases: 1 A holds 8 blocks; 2 B holds
16; 3 A freed; 4 B freed."""
import os
import sys
import time

SIZE = int(sys.argv[1])
OUT = os.environ["MEMLENS_TRACE_OUT"]


def make_a(n):
    return [bytearray(SIZE) for _ in range(n)]  # @A


def make_b(n):
    return [bytearray(SIZE) for _ in range(n)]  # @B


trace = open(OUT, "rb")
pending = b""
position = 0


def snapped():
    """Reads the trace file until two snap lines stamped after now; returns the offset."""
    global pending, position
    since = time.monotonic_ns()
    seen = 0
    while True:
        data = trace.read()
        if not data:
            junk = [bytearray(64) for _ in range(64)]  # drives the tracer's drain
            del junk
            continue
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            position += len(line) + 1
            if line.startswith(b"snap "):
                fields = dict(f.split(b"=", 1) for f in line.split()[1:] if b"=" in f)
                if int(fields[b"t_ns"]) >= since:
                    seen += 1
                    if seen == 2:
                        return position


def step(k):
    print("PHASE %d %d" % (k, snapped()), flush=True)
    return sys.stdin.readline() == "go\n"


a = b = None
try:
    a = make_a(8)
    if step(1):
        b = make_b(16)
        if step(2):
            a = None
            if step(3):
                b = None
                step(4)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
sys.exit(0)
