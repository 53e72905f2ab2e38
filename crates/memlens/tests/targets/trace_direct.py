"""memlens-preload test target for how events reach the aggregate (applied in the allocating
thread under a try-lock, else queued and drained first by the next holder): 8 threads start
together, each allocates and drops CHURN bytearrays (`# @churn`) and makes as many C mallocs
and frees through ctypes, which releases the GIL (`# @cmalloc`: the threads then contend for
the tracer's lock), then allocates HELD bytearrays of about 1 MiB (`# @held`) and one it
leaves behind in a global list (`# @kept`); all of them wait at a barrier, holding their
blocks (the peak), then drop them and exit. The main thread then forks a child that
allocates 10 bytearrays (`# @child`) and leaves with `os._exit` (no destructors, no atexit).
Each marked line makes its bytearray alone (its size computed before: an int made there would
be counted there too). Sizes are the objects' own `sys.getsizeof` (header and buffer: all that each marked line
allocates); it prints `TRUTH held=B churn=B kept=B child=B child_pid=P cmalloc=B` and exits 0.
With TRACE_DIRECT_ONE_CPU set, it first puts itself (and so every thread it starts) on one
CPU: a thread holding the tracer's lock is then often preempted while the others queue.
"""
import ctypes
import os
import sys
import threading

THREADS = 8
HELD = 4
CHURN = 3000
SIZE = 1 << 20

if os.environ.get("TRACE_DIRECT_ONE_CPU"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.restype = None
libc.free.argtypes = [ctypes.c_void_p]

start = threading.Barrier(THREADS + 1)
peak = threading.Barrier(THREADS + 1)
lock = threading.Lock()
kept = []
sizes = {"held": 0, "churn": 0, "kept": 0, "cmalloc": 0}


def work(k):
    start.wait()
    churn = 0
    cm = 0
    n = 1000 + k
    for i in range(CHURN):
        t = bytearray(n)  # @churn
        churn += sys.getsizeof(t)
        del t
        p = libc.malloc(4000 + i)  # @cmalloc
        cm += 4000 + i
        libc.free(p)
    held = []
    for n in [SIZE + k * 4096 + i for i in range(HELD)]:
        b = bytearray(n)  # @held
        held.append(b)
    n = 50000 + k
    x = bytearray(n)  # @kept
    with lock:
        sizes["held"] += sum(sys.getsizeof(b) for b in held)
        sizes["churn"] += churn
        sizes["cmalloc"] += cm
        sizes["kept"] += sys.getsizeof(x)
        kept.append(x)
    del b, x
    peak.wait()
    del held


def main():
    ts = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for t in ts:
        t.start()
    start.wait()
    peak.wait()
    for t in ts:
        t.join()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        c = []
        for n in [30000 + i for i in range(10)]:
            y = bytearray(n)  # @child
            c.append(y)
        os.write(w, b"%d\n" % sum(sys.getsizeof(y) for y in c))
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = int(f.read())
    os.waitpid(pid, 0)
    print("TRUTH held=%d churn=%d kept=%d child=%d child_pid=%d cmalloc=%d" % (
        sizes["held"], sizes["churn"], sizes["kept"], child, pid, sizes["cmalloc"]),
        flush=True)


main()
