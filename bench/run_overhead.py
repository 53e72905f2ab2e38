#!/usr/bin/env python3
"""Overhead of `memlens run` and `memlens record`, side by side with mprof.

(a) A CPU-bound Python workload (workloads/w6_alloc_heavy.py) run plain, under `memlens run`
    at 100 Hz (--interval 10ms), and under `mprof run` at its default (0.1 s), in paired
    rounds A B C A B C ... after a warm-up round; wall from spawn to reap, user/sys from
    wait4. Ratios against plain are taken round by round; medians (min-max) are printed.
    memlens's own CPU comes from its recording (meta memlens_cpu_s: /proc/self/stat at exit).
(b) A 16-process tree (workloads/tree16.py: three processes of 1-1.5 GiB, twelve of 16-64 MiB)
    under `memlens record ROOT --duration D` at 100 Hz: memlens's own CPU (utime+stime from
    /proc/<memlens pid>/stat, last value before it exits; cross-checked with wait4) over the
    wall time, with the samples, PSS reads and ledgers it managed.
(c) The fixed cost `memlens run` adds around a program (start-up, cgroup, first attach, the
    report at exit): `true` and `python -c pass` plain and under `memlens run -q` (with and
    without its memory cgroup), in paired rounds after a warm-up; the median of the per-round
    differences (memlens minus plain) in milliseconds. Each run writes a fresh recording,
    removed outside the timing.

Nothing is asserted; it prints what it measured. Run from the repository root:
    bench/.venv/bin/python bench/run_overhead.py [--rounds 5] [--tree-seconds 20]
        [--fixed-rounds 30] [--skip-a] [--skip-b] [--skip-c]
"""
import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TICK = os.sysconf("SC_CLK_TCK")


def timed(cmd, env=None):
    """Runs a command; returns (wall s, user s, sys s) of it and its reaped children."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {err}")
    return wall, ru.ru_utime, ru.ru_stime


def med(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt(m, unit="", digits=3):
    return f"{m[0]:.{digits}f}{unit} ({m[1]:.{digits}f}-{m[2]:.{digits}f})"


def meta(db, key):
    c = sqlite3.connect(db)
    try:
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None
    finally:
        c.close()


def counts(db):
    c = sqlite3.connect(db)
    try:
        return {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("ticks", "samples", "pss", "ledgers", "processes")}
    finally:
        c.close()


def section_a(args, memlens, python, mprof, out):
    w6 = os.path.join(HERE, "workloads", "w6_alloc_heavy.py")
    db = os.path.join(out, "w6.db")
    groups = [
        ("plain", [python, w6]),
        ("memlens run 100 Hz", [memlens, "run", "-q", "--interval", "10ms", "-o", db, "--", python, w6]),
    ]
    if mprof:
        groups.append(("mprof run (0.1 s)", [mprof, "run", "-o", os.path.join(out, "w6.mprof.dat"), python, w6]))
    else:
        print("mprof not found (bench/.venv/bin/mprof): its row is left out")
    res = {name: [] for name, _ in groups}
    cpu = []
    for rnd in range(args.rounds + 1):
        for name, cmd in groups:
            if name.startswith("mprof"):
                try:
                    os.remove(os.path.join(out, "w6.mprof.dat"))
                except FileNotFoundError:
                    pass
            if name.startswith("memlens"):
                remove_recording(db)
            r = timed(cmd)
            if rnd > 0:
                res[name].append(r)
                if name.startswith("memlens"):
                    cpu.append(float(meta(db, "memlens_cpu_s")))
    base = res["plain"]
    print(f"\n(a) {os.path.basename(w6)}: {args.rounds} paired rounds after 1 warm-up; medians (min-max)\n")
    print("| command | wall s | user+sys s | wall / plain | cpu / plain |")
    print("|---|---|---|---|---|")
    for name, _ in groups:
        rows = res[name]
        wall = med([r[0] for r in rows])
        cpu_t = med([r[1] + r[2] for r in rows])
        rw = med([r[0] / b[0] for r, b in zip(rows, base)])
        rc = med([(r[1] + r[2]) / (b[1] + b[2]) for r, b in zip(rows, base)])
        print(f"| {name} | {fmt(wall)} | {fmt(cpu_t)} | **{rw[0]:.3f}** ({rw[1]:.3f}-{rw[2]:.3f}) | {rc[0]:.3f} ({rc[1]:.3f}-{rc[2]:.3f}) |")
    walls = [r[0] for r in res["memlens run 100 Hz"]]
    share = med([c / w * 100 for c, w in zip(cpu, walls)])
    print(f"\nmemlens's own CPU during `run`: {fmt(med(cpu), ' s')} = {fmt(share, ' % of a core', 2)}")
    print("recording of the last run:", counts(db))


def remove_recording(db):
    """memlens never replaces a file: the bench removes the last round's recording."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(db + suffix)
        except FileNotFoundError:
            pass


def section_c(args, memlens, python, out):
    programs = [("true", ["true"]), ("python -c pass", [python, "-c", "pass"])]
    print(f"\n(c) fixed cost of `memlens run`: {args.fixed_rounds} paired rounds after 3 warm-up; "
          "memlens minus plain, ms: median (min-max)\n")
    print("| program | plain ms | memlens run -q | run (summary on stderr) | run -q --no-cgroup |")
    print("|---|---|---|---|---|")
    db = os.path.join(out, "fixed.db")
    for label, prog in programs:
        groups = [
            ("plain", prog),
            ("run", [memlens, "run", "-q", "-o", db, "--"] + prog),
            ("summary", [memlens, "run", "-o", db, "--"] + prog),
            ("nocg", [memlens, "run", "-q", "--no-cgroup", "-o", db, "--"] + prog),
        ]
        res = {name: [] for name, _ in groups}
        for rnd in range(args.fixed_rounds + 3):
            for name, cmd in groups:
                remove_recording(db)
                wall = timed(cmd)[0]
                if rnd >= 3:
                    res[name].append(wall)
        plain = res["plain"]
        diff = {k: med([(a - b) * 1e3 for a, b in zip(res[k], plain)]) for k in ("run", "summary", "nocg")}
        print(f"| {label} | {fmt(med([p * 1e3 for p in plain]), digits=1)} | "
              f"**{fmt(diff['run'], digits=1)}** | {fmt(diff['summary'], digits=1)} | {fmt(diff['nocg'], digits=1)} |")
    remove_recording(db)


def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def section_b(args, memlens, python, out):
    tree = subprocess.Popen([python, os.path.join(HERE, "workloads", "tree16.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pids = None
        for line in tree.stdout:
            if line.startswith("PIDS"):
                pids = line.split()[1:]
            if line.strip() == "READY":
                break
        rss = 0
        for p in pids:
            with open(f"/proc/{p}/status") as f:
                for l in f:
                    if l.startswith("VmRSS:"):
                        rss += int(l.split()[1]) * 1024
        print(f"\n(b) 16-process tree: {len(pids)} processes, sum of RSS {rss / 2**30:.2f} GiB")
        print("| interval | wall s | memlens CPU s (/proc stat) | % of a core | wait4 user+sys s | ticks | samples rows | PSS reads | ledgers |")
        print("|---|---|---|---|---|---|---|---|---|")
        for interval in args.intervals:
            db = os.path.join(out, f"tree-{interval}.db")
            remove_recording(db)
            t0 = time.perf_counter()
            m = subprocess.Popen([memlens, "record", pids[0], "--duration", f"{args.tree_seconds}s",
                                  "--interval", interval, "--json", "-o", db],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            last = 0.0
            # The last /proc/<pid>/stat reading before memlens exits (it stops on its own).
            while True:
                c = proc_cpu(m.pid)
                if c is None:
                    break
                with open(f"/proc/{m.pid}/stat", "rb") as f:
                    if f.read().split(b") ")[1][:1] == b"Z":
                        break
                last = c
                time.sleep(0.05)
            _, status, ru = os.wait4(m.pid, 0)
            wall = time.perf_counter() - t0
            m.returncode = os.waitstatus_to_exitcode(status)
            n = counts(db)
            print(f"| {interval} | {wall:.2f} | {last:.3f} | **{last / wall * 100:.2f}** | {ru.ru_utime + ru.ru_stime:.3f} | {n['ticks']} | {n['samples']} | {n['pss']} | {n['ledgers']} |")
    finally:
        tree.stdin.close()
        tree.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memlens", default=os.path.join(ROOT, "target", "release", "memlens"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tree-seconds", type=float, default=20)
    ap.add_argument("--intervals", nargs="+", default=["10ms"])
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--skip-c", action="store_true")
    ap.add_argument("--fixed-rounds", type=int, default=30)
    args = ap.parse_args()
    if not os.access(args.memlens, os.X_OK):
        sys.exit(f"{args.memlens} not found: cargo build --release -p memlens")
    mprof = os.path.join(os.path.dirname(args.python), "mprof")
    mprof = mprof if os.access(mprof, os.X_OK) else None
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    with open("/proc/loadavg") as f:
        print("load average before:", f.read().split()[:3], "cores:", os.cpu_count())
    print("python:", subprocess.run([args.python, "-V"], capture_output=True, text=True).stdout.strip())
    if not args.skip_a:
        section_a(args, args.memlens, args.python, mprof, out)
    if not args.skip_b:
        section_b(args, args.memlens, args.python, out)
    if not args.skip_c:
        section_c(args, args.memlens, args.python, out)
    with open("/proc/loadavg") as f:
        print("\nload average after:", f.read().split()[:3])


if __name__ == "__main__":
    main()
