"""Target of it::trace_fork (`memlens run --trace`, a prefork server's shape): a parent builds
memory by construction, forks workers that each allocate their own known amount, and the tree
reaches its peak while all of them live. Lines are marked `# @NAME` (the test finds their
numbers in this file). argv: truth.json, the number of workers.

  1. the parent builds PARENT_N bytearrays of CHUNK bytes (`# @parent_big`) and SMALL_N small
     bytes objects (`# @parent_small`, pymalloc blocks), and forks the workers (no thread
     runs: 3.12+ warns at fork with threads);
  2. worker i allocates i + 1 bytearrays of CHUNK bytes (`# @worker`); worker 0 also frees
     one of the parent's bytearrays (`# @free_inherited`: its copy of the reference was the
     last one there), so its inherited figure is one CHUNK lower while the parent still holds
     its own; under the tracer each waits for its tracer's next snapshot (its allocations are
     then in its trace file), writes READY with its figures on its pipe, and waits;
     the last worker first forks a grandchild that allocates one CHUNK (`# @grandchild`)
     and says READY on the same pipe: it inherits the parent's blocks and the worker's own;
  3. once every worker is READY, the parent waits for its own next snapshot (the tree's
     peak, all alive, is then in every file), releases the workers (they leave by os._exit
     with their memory held), reaps them, writes the truth and exits 0.

The truth is sys.getsizeof of what each line made and holds (its list included). Without the
tracer the program runs the same (what it waits for under the tracer it skips).
"""
import json
import os
import sys

from _trace_wait import TRACE, next_snapshot, own_trace

MIB = 1 << 20
CHUNK = 8 * MIB
PARENT_N = 32
SMALL_N = 40_000


def build_big():
    return [bytearray(CHUNK) for _ in range(PARENT_N)]  # @parent_big


def build_small():
    return [b"%07d" % i for i in range(SMALL_N)]  # @parent_small


def ready(w, own, freed, kind):
    """Once its allocations are in its trace file: READY with its figures, upward."""
    next_snapshot(own_trace())
    held = sys.getsizeof(own) + sum(sys.getsizeof(x) for x in own)
    os.write(w, b"READY %d %d %d %s\n" % (os.getpid(), held, freed, kind))


def grandchild(w, r):
    own = [bytearray(CHUNK)]  # @grandchild
    ready(w, own, 0, b"grandchild")
    os.read(r, 1)
    os._exit(0)


def work(i, n, big, w, r):
    own = [bytearray(CHUNK) for _ in range(i + 1)]  # @worker
    freed = 0
    if i == 0:
        freed = sys.getsizeof(big[-1])
        big.pop()  # @free_inherited
    child = None
    if i == n - 1:
        # the last worker forks a grandchild, which inherits the worker's own blocks too
        child = os.fork()
        if child == 0:
            grandchild(w, r)
    ready(w, own, freed, b"worker")
    os.read(r, 1)
    if child is not None:
        _, status = os.waitpid(child, 0)
        assert status == 0, status
    os._exit(0)


def main(truth_path, n):
    big = build_big()
    small = build_small()
    truth = {
        "pid": os.getpid(),
        "parent_big": sys.getsizeof(big) + sum(sys.getsizeof(x) for x in big),
        "parent_small": sys.getsizeof(small) + sum(sys.getsizeof(x) for x in small),
        "workers": [],
    }
    pipes = []
    for i in range(n):
        r_up, w_up = os.pipe()
        r_down, w_down = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r_up)
            os.close(w_down)
            work(i, n, big, w_up, r_down)
        os.close(w_up)
        os.close(r_down)
        pipes.append((pid, r_up, w_down))
    truth["grandchild"] = None
    for k, (pid, r_up, _) in enumerate(pipes):
        # the last worker's pipe carries its grandchild's line too
        want = 2 if k == n - 1 else 1
        buf = b""
        while buf.count(b"\n") < want:
            chunk = os.read(r_up, 256)
            if not chunk:
                sys.stderr.write("worker %d left before READY\n" % pid)
                os._exit(91)
            buf += chunk
        for line in buf.splitlines():
            _, wpid, own, freed, kind = line.split()
            fig = {"pid": int(wpid), "own": int(own), "freed": int(freed)}
            if kind == b"grandchild":
                truth["grandchild"] = fig
            else:
                truth["workers"].append(fig)
    next_snapshot(TRACE)
    for k, (pid, _, w_down) in enumerate(pipes):
        os.write(w_down, b"xx" if k == n - 1 else b"x")
    for pid, _, _ in pipes:
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
    with open(truth_path, "w") as f:
        json.dump(truth, f)
    sys.stdout.write("DONE %d workers\n" % n)
    sys.stdout.flush()
    del big, small


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
