#!/usr/bin/env python3
"""memlens census from outside versus objgraph and pympler inside, on a process with about five
million reachable objects. Prints, for each: wall time and the target's longest pause (from a
heartbeat thread in the target); for memlens also the pause it reports, how it made the census
consistent, and its own peak RSS beside the target's RSS.

Usage: bench/.venv/bin/python bench/census_bench.py [--objects N] [--runs R] [--memlens PATH]
The target runs with the venv's interpreter (it must have objgraph and pympler installed:
bench/.venv/bin/python -m pip install objgraph pympler).
Targets (issue 7): memlens wall under 1.0 s, target pause under 0.1 s, memlens peak RSS under
half of the target's RSS.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--memlens", default=os.path.join(ROOT, "target", "release", "memlens"))
    args = ap.parse_args()

    target = subprocess.Popen([sys.executable, os.path.join(HERE, "census_target.py"), str(args.objects)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(cmd):
        target.stdin.write(cmd + "\n")
        target.stdin.flush()
        return target.stdout.readline().strip()

    try:
        assert target.stdout.readline().strip() == "READY"
        target_rss = rss_kib(target.pid)  # before `count`, which grows it
        reachable = int(ask("count"))
        rows = []
        walls, pauses, reported, methods, objects = [], [], [], [], 0
        peak_rss = 0
        for _ in range(args.runs):
            ask("reset")
            t = time.perf_counter()
            out = subprocess.run([args.memlens, "census", str(target.pid), "--json", "--top", "5"],
                                 capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - t)
            # RUSAGE_CHILDREN: the largest of the children reaped so far, i.e. memlens (the
            # target is reaped last)
            peak_rss = max(peak_rss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            time.sleep(0.05)  # let the heartbeat notice the end of the pause
            pauses.append(float(ask("pause")) / 1000)
            census = json.loads(out.stdout)
            objects = census["objects"]
            reported.append(census["consistency"]["pause_us"] / 1e6)
            methods.append(census["consistency"]["method"])
        rows.append(("memlens census (outside)", statistics.median(walls), statistics.median(pauses)))
        for tool in ("objgraph", "pympler"):
            ws, ps = [], []
            for _ in range(max(1, args.runs // 2)):
                ask("reset")
                ws.append(float(ask(tool)))
                time.sleep(0.05)
                ps.append(float(ask("pause")) / 1000)
            label = {"objgraph": "objgraph.show_most_common_types (inside)",
                     "pympler": "pympler muppy+summary (inside)"}[tool]
            rows.append((label, statistics.median(ws), statistics.median(ps)))
        print("python %s, %d objects reachable (gc.get_referents), memlens counted %d" % (
            sys.version.split()[0], reachable, objects))
        print("%-42s %10s %16s %8s" % ("tool", "wall s", "target pause s", "x wall"))
        base = rows[0][1]
        for name, wall, pause in rows:
            print("%-42s %10.3f %16.3f %8.1f" % (name, wall, pause, wall / base))
        print("memlens: walls %s s; pauses it reports %s s (heartbeat saw %s s); methods %s" % (
            " ".join("%.3f" % w for w in walls), " ".join("%.3f" % p for p in reported),
            " ".join("%.3f" % p for p in pauses), " ".join(sorted(set(methods)))))
        print("memlens peak RSS %d MiB, target RSS %d MiB (%.0f%%)" % (
            peak_rss >> 10, target_rss >> 10, 100.0 * peak_rss / max(target_rss, 1)))
    finally:
        try:
            ask("quit")
        except (BrokenPipeError, OSError):
            pass
        target.kill()
        target.wait()


if __name__ == "__main__":
    main()
