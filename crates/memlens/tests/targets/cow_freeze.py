# Target of the cow-freeze advice test (crates/memlens/tests/it/advice_more.rs):
#
#   cow_freeze.py N K FREEZE
#
# The parent builds N lists (objects the GC tracks: a collection writes to each one's header),
# calls gc.freeze() when FREEZE is 1, forks K workers that each run gc.collect() (the pages of
# the inherited heap it writes to are copied), waits until every worker has collected, and
# prints READY; the test reads the workers (the children of the parent)' memory from the kernel.
# "grow" allocates 32 MiB in the parent outside pymalloc, touched, keeps it and prints GROWN, and
# "shrink" frees it and prints SHRUNK: a peak of the recorded tree between the two, after its
# workers were measured (it/report_advice.rs). On any other line (or end of input) the parent
# exits; its workers read end of file on a pipe and exit too.
import gc
import os
import sys

n, k, freeze = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
gc.disable()
data = [[i, -i] for i in range(n)]
if freeze:
    gc.freeze()
ready_r, ready_w = os.pipe()
hold_r, hold_w = os.pipe()
pids = []
for _ in range(k):
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(hold_w)
        gc.collect()
        os.write(ready_w, b"x")
        os.read(hold_r, 1)  # end of file when the parent exits
        os._exit(0)
    pids.append(pid)
os.close(ready_w)
os.close(hold_r)
got = 0
while got < k:
    b = os.read(ready_r, k)
    if not b:
        sys.exit("a worker exited early")
    got += len(b)
print("READY", flush=True)
ballast = None
cmd = sys.stdin.readline().strip()
while cmd in ("grow", "shrink"):
    if cmd == "grow":
        ballast = bytearray(32 << 20)
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
        print("GROWN", flush=True)
    else:
        ballast = None  # its own mapping: unmapped at once
        print("SHRUNK", flush=True)
    cmd = sys.stdin.readline().strip()
os.close(hold_w)
for pid in pids:
    os.waitpid(pid, 0)
