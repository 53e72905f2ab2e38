"""memlens-preload test target for the wrap of CPython's allocator domains (pymalloc) and
untouched memory. Leaves through os._exit with everything held (no finalisation frees it: the
tracer's `end` line shows it live), after printing a READY line with the ground truth.

  objects N        N bytes objects of 40 bytes (pymalloc blocks, made by construction), held
                   in a list; READY total=<sum of sys.getsizeof of them and of an empty list>
                   list=<the list's item array: malloc'd, over pymalloc's 512 bytes>.
                   Exits with status 3. N=0: the same program allocating nothing.
  tracemalloc N    the same, the first N made under tracemalloc (which wraps the tracer's
                   wrapper; traced_enough=1: it saw at least 90% of their bytes), then
                   tracemalloc stopped and N more made; all held.
  mmap PAGES       an anonymous 256 MiB mmap.mmap, its first PAGES pages written (-1: no
                   mapping); READY, then waits for a line on stdin (the test reads the
                   mapping's Rss in /proc/PID/smaps meanwhile).
"""
import os
import sys

MODE = sys.argv[1]
N = int(sys.argv[2])


def objects(n):
    """n small objects (pymalloc blocks) and the list holding them; the list's item array,
    over 512 bytes, is passed by pymalloc to malloc (the tracer records it as malloc)."""
    held = [b"%040d" % i for i in range(n)]
    return held, sum(sys.getsizeof(o) for o in held) + sys.getsizeof([])


if MODE == "objects":
    held, total = objects(N)
    print(f"READY total={total} list={sys.getsizeof(held) - sys.getsizeof([])}", flush=True)
    os._exit(3)
elif MODE == "tracemalloc":
    import tracemalloc

    tracemalloc.start()
    first, t1 = objects(N)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    second, t2 = objects(N)
    print(f"READY total={t1 + t2} traced_enough={int(current >= 0.9 * t1)}", flush=True)
    os._exit(3)
elif MODE == "mmap":
    import mmap

    m = None
    if N >= 0:
        m = mmap.mmap(-1, 256 << 20)
        for i in range(N):
            m[i * 4096] = 1
    print("READY", flush=True)
    sys.stdin.readline()
    os._exit(0)
else:
    sys.exit("unknown mode " + MODE)
