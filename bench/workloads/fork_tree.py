"""A forked tree of Python processes holding shared and private memory (for the benches).

The parent builds about SHARED_MIB MiB of Python objects (tuples of an int and a 100-char
str), then forks WORKERS children. Each child reads its own contiguous share of the tuples
(reference-count writes copy those pages: copy-on-write), touches PRIVATE_MIB MiB of its own,
reports ready and blocks. The parent then prints one line

    READY root=<pid> pids=<pid,pid,...>     (the root first, then every worker)

and waits for its stdin to close (or a signal); the children exit when the parent does (they
block on a pipe whose write end only the parent holds), so nothing outlives the bench.
Derived from w3_fork_cow.py of the baseline study (shared/research/baseline/workloads).

usage: fork_tree.py [--workers 31] [--shared-mib 50] [--private-mib 2] [--tag TEXT]
(--tag is not used by the program; it puts a unique word on the command line for `smem -P`.)
"""
import argparse
import os
import sys

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
BYTES_PER_ITEM = 240  # tuple 56 + int 32 + str(100 ascii) 149, rounded up


def child(data, index, workers, private_mib, ready_w, lifeline_r):
    share = len(data) // workers
    total = 0
    for j in range(index * share, (index + 1) * share):
        total += data[j][0]  # INCREF/DECREF: the tuple's page is copied
    private = bytearray(private_mib * MiB)
    for off in range(0, len(private), PAGE):
        private[off] = 1
    os.write(ready_w, b"r")
    os.read(lifeline_r, 1)  # returns b"" (EOF) when the parent exits or closes its end
    return total & 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=31)
    ap.add_argument("--shared-mib", type=int, default=50)
    ap.add_argument("--private-mib", type=int, default=2)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    n = args.shared_mib * MiB // BYTES_PER_ITEM
    data = [(i, ("%010d" % i) * 10) for i in range(n)]
    ready_r, ready_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()
    sys.stdout.flush()
    pids = []
    for index in range(args.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(ready_r)
                os.close(lifeline_w)
                code = child(data, index, args.workers, args.private_mib, ready_w, lifeline_r)
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(ready_w)
    os.close(lifeline_r)
    got = 0
    while got < args.workers:
        chunk = os.read(ready_r, args.workers - got)
        if not chunk:
            print("fork_tree: a worker died before it was ready", file=sys.stderr)
            return 1
        got += len(chunk)
    print("READY root=%d pids=%s" % (os.getpid(), ",".join(str(p) for p in [os.getpid()] + pids)),
          flush=True)
    try:
        sys.stdin.read()
    finally:
        os.close(lifeline_w)
        for pid in pids:
            os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
