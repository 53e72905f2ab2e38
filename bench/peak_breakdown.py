#!/usr/bin/env python3
"""The recorder's breakdown at the peak, and its CPU, at the default budget.

(a) A program builds about 400 MiB of small objects (python-heap) over 6 s and exits at once
    (os._exit: no teardown) under `memlens run` (default: --interval 10ms --cpu-budget 2);
    per run: how far the breakdown the report shows is from the program's own peak (its
    wall-clock time when done, against the recording's started_unix), whether the report
    calls it at the peak, its largest category, and memlens's CPU share (meta memlens_cpu_s
    over the run, start-up included).
(b) 2,000 threads blocked for 8 s under `memlens run`: memlens's CPU share over that window
    from /proc/<memlens pid>/stat (the kernel's accounting), with and without --no-cgroup.

Nothing is asserted; it prints what it measured. Run from the repository root, with the
release binary built (cargo build --release -p memlens):
    python3 bench/peak_breakdown.py [--runs 5] [--memlens target/release/memlens]
        [--python PATH] [-- extra memlens run options, e.g. --cpu-budget 4]
"""
import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TICK = os.sysconf("SC_CLK_TCK")

BUILD_400 = r"""
import os, time
per = 144
n = (400 << 20) // per
steps = 60
keep = []
t0 = time.monotonic()
for k in range(steps):
    keep.extend([b'%100d' % i for i in range(n // steps)])
    time.sleep(max(0.0, t0 + (k + 1) * 0.1 - time.monotonic()))
print('PEAK_UNIX %.6f' % time.time(), flush=True)
os._exit(0)
"""

# The same program as the CPU-budget test (it::recorder_truth).
THREADS = os.path.join(ROOT, "crates", "memlens", "tests", "targets", "threads_2000.py")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(") ", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def largest(ledger):
    cats = {}
    for p in ledger.get("processes", []):
        for row in p["ledger"]:
            cats[row["category"]] = cats.get(row["category"], 0) + row["pss"]
    return max(cats.items(), key=lambda kv: kv[1]) if cats else ("-", 0)


def build_runs(args, tmp):
    print(f"(a) 400 MiB over 6 s, {args.runs} runs: memlens run {' '.join(args.extra)}")
    print(f"    {'run':>3}  {'from peak':>9}  {'at peak':>7}  {'largest':>12}  {'MiB':>5}  {'CPU %':>5}")
    for k in range(args.runs):
        db = os.path.join(tmp, f"b{k}.db")
        out = subprocess.run(
            [args.memlens, "run", "--json", *args.extra, "-o", db, "--", args.python, "-c", BUILD_400],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, check=True,
        ).stdout.decode()
        peak_unix = float(next(l for l in out.splitlines() if l.startswith("PEAK_UNIX")).split()[1])
        report = json.loads(out[out.index("{"):])
        con = sqlite3.connect(db)
        started = float(con.execute("select value from meta where key='started_unix'").fetchone()[0])
        con.close()
        at = report["ledger_at_peak_seconds"]
        name, pss = largest(report["ledger_at_peak"] or {})
        share = report["memlens_cpu_seconds"] / report["duration_seconds"] * 100
        print(f"    {k:>3}  {at - (peak_unix - started):>+8.2f}s  {str(report['breakdown']['at_peak']):>7}"
              f"  {name:>12}  {pss >> 20:>5}  {share:>5.2f}")


def thread_runs(args, tmp):
    print("(b) 2,000 threads, 8 s window: memlens's CPU share (kernel accounting)")
    for extra in ([], ["--no-cgroup"]):
        p = subprocess.Popen(
            [args.memlens, "run", "-q", *args.extra, *extra, "-o", os.path.join(tmp, "t.db"),
             "--", args.python, THREADS],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert p.stdout.readline().strip() == b"READY"
        c0, w0 = cpu_seconds(p.pid), time.monotonic()
        assert p.stdout.readline().strip() == b"DONE"
        c1, w1 = cpu_seconds(p.pid), time.monotonic()
        p.stdin.write(b"exit\n")
        p.stdin.close()
        p.wait()
        print(f"    {' '.join(extra) or 'default':>12}: {(c1 - c0) / (w1 - w0) * 100:.2f} % of a core")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--memlens", default=os.path.join(ROOT, "target/release/memlens"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().split()[0]} ({os.cpu_count()} CPUs); {args.python}")
    with tempfile.TemporaryDirectory(prefix="memlens-bench-") as tmp:
        build_runs(args, tmp)
        thread_runs(args, tmp)


if __name__ == "__main__":
    main()
