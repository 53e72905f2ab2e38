#!/usr/bin/env python3
"""The cost of copy-on-write sharing (issue 11, DESIGN §6): `memlens snapshot --tree` and
`memlens ps` with and without sharing (`--no-sharing`), on a tree of N forked Python workers
whose parent built a known heap (small tuples: python-heap) and each of which copied a tenth
of it (iterating over a tenth of the tuples writes their reference counts).

Prints, for each worker count, the median CPU time (memlens's user + system, from
RUSAGE_CHILDREN) and wall time of each command over R runs, and the ratio with / without.

Usage: python3 bench/sharing_cost.py [--workers 1,8,32] [--heap-mib 200] [--runs 5]
                                     [--memlens PATH] [--load N]
`--load N` starts N busy loops beside it (figures "under load"). Re-run on a quiet machine
for figures to quote: python3 bench/sharing_cost.py --runs 7
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TARGET = r'''
import gc, os, sys
heap = int(sys.argv[1]) << 20
workers = int(sys.argv[2])
gc.disable()
# a tuple of two small ints: about 64 bytes of python-heap (tuple header, GC header)
keep = [(i, -i) for i in range(heap // 64)]
gc.collect()
r, w = os.pipe()
pids = []
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        for x in keep[: len(keep) // 10]:  # refcount writes: copies a tenth of the heap
            pass
        os.write(w, b"x")
        os.close(w)
        sys.stdin.read()
        os._exit(0)
    pids.append(pid)
os.close(w)
done = 0
while done < workers:
    done += len(os.read(r, workers))
print("READY", flush=True)
sys.stdin.read()
for pid in pids:
    os.waitpid(pid, 0)
'''


def timed(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,8,32")
    ap.add_argument("--heap-mib", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    default = os.path.join(ROOT, "target", "release", "memlens")
    if not os.path.exists(default):
        default = os.path.join(ROOT, "target", "debug", "memlens")
    ap.add_argument("--memlens", default=default)
    ap.add_argument("--load", type=int, default=0)
    args = ap.parse_args()
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    print("memlens: %s; parent heap %d MiB; %d runs; %s" % (
        args.memlens, args.heap_mib, args.runs,
        "UNDER LOAD (%d busy loops)" % args.load if args.load else "no added load"))
    print("%8s %-28s %10s %10s %10s %10s" % ("workers", "command", "cpu med s", "wall med s", "cpu ratio", "wall ratio"))
    try:
        for n in [int(x) for x in args.workers.split(",")]:
            target = subprocess.Popen([sys.executable, "-c", TARGET, str(args.heap_mib), str(n)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                line = target.stdout.readline().strip()
                assert line == "READY", line
                pid = str(target.pid)
                cases = [
                    ("snapshot --tree", [args.memlens, "snapshot", pid, "--tree", "--json"]),
                    ("ps", [args.memlens, "ps", "--json"]),
                ]
                for name, cmd in cases:
                    res = {}
                    for variant, extra in (("with sharing", []), ("--no-sharing", ["--no-sharing"])):
                        runs = [timed(cmd + extra) for _ in range(args.runs)]
                        res[variant] = (statistics.median(r[0] for r in runs),
                                        statistics.median(r[1] for r in runs))
                    base = res["--no-sharing"]
                    for variant, (cpu, wall) in res.items():
                        ratio = ("%10.2f %10.2f" % (cpu / base[0] if base[0] else float("nan"),
                                                    wall / base[1] if base[1] else float("nan"))
                                 if variant == "with sharing" else "%10s %10s" % ("1", "1"))
                        print("%8d %-28s %10.3f %10.3f %s" % (n, name + " " + variant, cpu, wall, ratio))
            finally:
                target.stdin.close()
                target.wait()
    finally:
        for p in loops:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
