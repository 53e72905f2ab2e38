"""memlens-preload test target: allocations by construction at lines marked `# @NAME` (the
test finds the line numbers in this file), in known functions:

- `f` (called from `g`, 10 times) keeps 10 bytearrays of 4 MiB, released before the end;
- `spike` makes 20 bytearrays of 8 MiB, each freed at once (temporaries) while the 40 MiB of
  `f` are held: the highest live total is then, with `f`'s 40 MiB and one spike buffer;
- `worker`, in 4 threads, keeps one bytearray of 3 MiB each until exit;
- `leak` (called from `main`) keeps 5 bytearrays of 2 MiB until exit;
- `deep`, 151 frames deep (deeper than the tracer keeps), keeps one bytearray of 1 MiB;
- with argument `fork`: a forked child allocates 3 bytearrays of 6 MiB in `child_work`
  (called from `child_main`), prints `CHILD pid` and leaves by `os._exit(0)`.

It prints `DONE` and leaves by `os._exit(7)` (so what is held is alive at the end line).
"""
import os
import sys
import threading

MIB = 1 << 20
kept = []
leaked = []
from_threads = []


def f():
    kept.append(bytearray(4 * MIB))  # @f


def g():
    for _ in range(10):
        f()  # @g


def spike():
    for _ in range(20):
        b = bytearray(8 * MIB)  # @spike
        del b


def worker(ready):
    from_threads.append(bytearray(3 * MIB))  # @thread
    ready.release()


def leak():
    for _ in range(5):
        leaked.append(bytearray(2 * MIB))  # @leak


def deep(n):
    if n:
        return deep(n - 1)  # @deep_call
    return bytearray(1 * MIB)  # @deep


def child_work(held):
    for _ in range(3):
        held.append(bytearray(6 * MIB))  # @child


def child_main():
    held = []
    child_work(held)  # @child_main
    print("CHILD %d" % os.getpid(), flush=True)
    os._exit(0)


def main():
    done = threading.Semaphore(0)
    threads = [threading.Thread(target=worker, args=(done,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    g()  # @main_g
    spike()  # @main_spike
    del kept[:]
    leak()  # @main_leak
    deep_kept = deep(150)
    if sys.argv[1:] == ["fork"]:
        pid = os.fork()
        if pid == 0:
            child_main()
        os.waitpid(pid, 0)
    print("DONE %d" % len(deep_kept), flush=True)
    os._exit(7)


main()
