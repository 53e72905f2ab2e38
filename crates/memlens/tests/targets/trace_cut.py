"""run --trace=all test target (it::trace_cut): makes its tracer's newest peak block cut, for
real, and says where. Arguments: N SIZE PAD BIG MARGIN.

1. `hold`: N bytearrays of SIZE bytes, each made at its own line of generated functions (file
   `<cut-lines>`, which allocate nowhere else: N stacks, so every peak block has at least N
   `peaksite` lines); then PAD bytes at the `# @PAD` line. It waits for two snapshots after that (it reads
   its own trace file, MEMLENS_TRACE_OUT, as docs/trace-format.md defines it), so the peak
   block of that high is written whole; then frees PAD (the live total falls PAD below the
   high, so the small allocations made while waiting make no new high) and waits for one more.
2. It limits its own file size (RLIMIT_FSIZE) to the trace file's size plus MARGIN bytes and
   makes BIG bytes at `# @BIG`: a new high. The tracer's next write (its stack lines, snapshot,
   sites, then the peak block of at least N lines) stops at the limit: the kernel writes up to
   it, the next write() fails with EFBIG (CPython ignores SIGXFSZ), and the tracer stops
   tracing, leaving a cut block at the end of its file, as if it had been killed while writing
   it.
3. It reads its file back and checks that the cut lies inside that block (else it prints
   `MISPLACED why` and exits 3), then prints `CUT OFFSET K LINES PEAK_LIVE HOLD_BYTES
   BIG_BYTES PAD_BYTES`: OFFSET, the byte where the cut block's `peak` line starts (everything
   before it is whole lines); K, its `sites=`; LINES, the `peaksite` lines written whole;
   PEAK_LIVE, `peak_live_bytes` of the snapshot written with it; then sys.getsizeof of the held
   blocks (summed), of BIG's and of PAD's bytearray. It then waits for a line on stdin (or
   EOF) and exits.

Polling the file is a wait on an event (the tracer's next write), not on time: the tracer
drains on an allocation once its period has passed (it has no thread), so the loops allocate
small objects meanwhile. Everything it allocates while waiting is small (reads of 16 KiB), so
the highs it makes are far below PAD."""
import os
import resource
import signal
import sys
import time

N, SIZE, PAD, BIG, MARGIN = (int(a) for a in sys.argv[1:6])
OUT = os.environ["MEMLENS_TRACE_OUT"]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

# Functions of 100 lines each, compiled one by one (compiling N lines at once would make a
# higher transient peak than the blocks), numbered on from each other in `<cut-lines>`.
fills = []
first = 1
for c in range(0, N, 100):
    n = min(100, N - c)
    source = "\n" * (first - 1) + "def fill(out):\n" + "".join(
        "    out[%d] = bytearray(%d)\n" % (k, SIZE) for k in range(c, c + n)
    )
    namespace = {}
    exec(compile(source, "<cut-lines>", "exec"), namespace)
    fills.append(namespace["fill"])
    first += n + 1
del source, namespace

trace = open(OUT, "rb")
pending = b""


def snaps(n):
    """Reads the trace file until n snap lines stamped after now have been written."""
    global pending
    since = time.monotonic_ns()
    seen = 0
    while True:
        # Small reads: a read of the whole file (megabytes in `all` mode) would itself be a
        # new high of the live total, after PAD is freed too.
        data = trace.read(16384)
        if not data:
            junk = [bytearray(64) for _ in range(64)]  # drives the tracer's drain
            del junk
            continue
        pending += data
        start = 0
        while True:
            nl = pending.find(b"\n", start)
            if nl < 0:
                break
            line = pending[start:nl]
            start = nl + 1
            if line.startswith(b"snap "):
                fields = dict(f.split(b"=", 1) for f in line.split()[1:] if b"=" in f)
                if int(fields[b"t_ns"]) >= since:
                    seen += 1
                    if seen == n:
                        pending = pending[start:]
                        return
        pending = pending[start:]


def field(line, key):
    for f in line.split()[1:]:
        k, _, v = f.partition(b"=")
        if k == key:
            return int(v)
    return None


hold = [None] * N
for fill in fills:
    fill(hold)
pad = bytearray(PAD)  # @PAD
snaps(2)
pad_bytes = sys.getsizeof(pad)
del pad
snaps(1)

limit = os.fstat(trace.fileno()).st_size + MARGIN
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
big = bytearray(BIG)  # @BIG
deadline = time.monotonic() + 120
while os.fstat(trace.fileno()).st_size < limit:
    if time.monotonic() > deadline:
        print("MISPLACED the trace file never reached the limit in 120 s", flush=True)
        sys.exit(3)
    junk = [bytearray(64) for _ in range(64)]  # drives the tracer's drain
    del junk

with open(OUT, "rb") as f:
    data = f.read()
end = data.rfind(b"\n") + 1
at = data.rfind(b"\npeak ", 0, end) + 1
snap_at = data.rfind(b"\nsnap ", 0, at) + 1
why = None
if len(data) != limit:
    why = "the file is %d bytes, not the limit %d" % (len(data), limit)
elif at <= 0 or snap_at <= 0:
    why = "no peak or snap line before the cut"
else:
    peak_line = data[at:data.index(b"\n", at)]
    snap_line = data[snap_at:data.index(b"\n", snap_at)]
    want = field(peak_line, b"sites")
    lines = data[at:end].count(b"\npeaksite ")
    tail = data[at:end].split(b"\n")[1:-1]
    if want is None or lines >= want:
        why = "the last peak block is whole (%r, %d lines)" % (peak_line, lines)
    elif any(not t.startswith(b"peaksite ") for t in tail):
        why = "a record other than peaksite follows the last peak line"
    elif b"\nend " in data[snap_at - 1:]:
        why = "an end line was written"
if why:
    print("MISPLACED " + why, flush=True)
    sys.exit(3)
hold_bytes = sum(sys.getsizeof(b) for b in hold)
print(
    "CUT %d %d %d %d %d %d %d"
    % (
        at,
        want,
        lines,
        field(snap_line, b"peak_live_bytes"),
        hold_bytes,
        sys.getsizeof(big),
        pad_bytes,
    ),
    flush=True,
)
sys.stdin.readline()
sys.exit(0)
