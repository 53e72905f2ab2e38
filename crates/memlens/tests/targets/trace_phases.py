"""run --trace test target (it::trace_live): steps through phases, one per `go` line on
stdin. Each phase allocates or frees blocks of SIZE bytes (argv[1]) by construction at two
known lines (`# @A`, `# @B`), then makes the tracer write a snapshot that covers it: it reads
its own trace file (MEMLENS_TRACE_OUT, the contract of docs/trace-format.md) until two `snap`
lines written after the phase have appeared, allocating small objects meanwhile (the tracer
drains on an allocation once its period has passed; it has no thread), and prints
`PHASE K OFFSET` (OFFSET: bytes of its trace file up to the second snap line, so every line
of the first snapshot lies before it). On EOF or a SIGINT (KeyboardInterrupt) it leaves
normally (exit, so the tracer writes its `end` line). Phases: 1 A holds 8 blocks; 2 B holds
16; 3 A freed; 4 B freed.

It waits for `go` in select() on stdin and a signal wakeup pipe, not in a blocking read: a
SIGINT that lands after the interpreter's last check for signals and before a read() would
not end that read (CPython runs its handler only once the read returns), so the program would
wait for a line that never comes."""
import os
import select
import signal
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
        # Lines found by index: splitting the rest off line by line copies it each time, and
        # a backlog (the program descheduled on a busy host) then takes quadratic time while
        # the tracer keeps writing: the program would never catch up.
        pending += data
        start = 0
        while True:
            nl = pending.find(b"\n", start)
            if nl < 0:
                break
            line = pending[start:nl]
            start = nl + 1
            position += len(line) + 1
            if line.startswith(b"snap "):
                fields = dict(f.split(b"=", 1) for f in line.split()[1:] if b"=" in f)
                if int(fields[b"t_ns"]) >= since:
                    seen += 1
                    if seen == 2:
                        pending = pending[start:]
                        return position
        pending = pending[start:]


wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
stdin_buf = b""


def read_line():
    """The next line of stdin (b"" at EOF). A signal that came before or during the wait
    writes into the wakeup pipe, so select() returns and its handler runs."""
    global stdin_buf
    while b"\n" not in stdin_buf:
        ready, _, _ = select.select([0, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 512)
        if 0 in ready:
            data = os.read(0, 4096)
            if not data:
                return b""
            stdin_buf += data
    line, stdin_buf = stdin_buf.split(b"\n", 1)
    return line + b"\n"


def step(k):
    print("PHASE %d %d" % (k, snapped()), flush=True)
    return read_line() == b"go\n"


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
