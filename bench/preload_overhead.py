#!/usr/bin/env python3
"""Overhead of memlens-preload, the LD_PRELOAD allocation tracer (`memlens run --trace`'s
foundation), on the baseline study's workloads: w6 (alloc-heavy, ~60 M short-lived small
allocations, CPU-bound) and w1 (5 M objects built and half freed).

Each workload runs plain, under the preload in sampled mode (MEMLENS_SAMPLE_BYTES, default
512 KiB) and in `all` mode (every allocation recorded), in paired rounds A B C A B C ... after
a warm-up round; wall from spawn to reap. Ratios against plain are taken round by round;
medians (min-max) are printed, with the trace's own figures of the last run (peak live
estimate, samples, drops). Each traced run writes a fresh trace file in a temporary folder,
removed at the end. Nothing is asserted.

Run from the repository root (it builds the release cdylib unless --so is given):
    python3 bench/preload_overhead.py [--python PY] [--rounds 5] [--so PATH]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKLOADS = ["w6_alloc_heavy.py", "w1_objects.py"]


def timed(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{cmd} failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    if p.stderr:
        sys.exit(f"{cmd}: unexpected stderr: {p.stderr.decode(errors='replace')}")
    return wall


def last_record(path):
    """The last `end` or `snap` line (version 2 follows it with code/stack/site/peak lines),
    with the number of stacks the file names."""
    with open(path) as f:
        lines = f.read().splitlines()
    last = [l for l in lines if l.startswith(("end ", "snap "))][-1]
    rec = dict(kv.split("=", 1) for kv in last.split()[1:])
    rec["stacks"] = str(sum(1 for l in lines if l.startswith("stack ")))
    return last.split()[0], rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=os.path.expanduser("~/.pyenv/versions/3.11.7/bin/python3.11"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--so")
    ap.add_argument("--sample-bytes", type=int, default=512 * 1024)
    a = ap.parse_args()
    so = a.so
    if not so:
        subprocess.run(["cargo", "build", "-q", "--release", "-p", "memlens-preload"], cwd=ROOT, check=True)
        so = os.path.join(ROOT, "target/release/libmemlens_preload.so")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MEMLENS_") and k != "LD_PRELOAD"}
    print(f"python {a.python}, preload {so}, {a.rounds} rounds + 1 warm-up")
    with tempfile.TemporaryDirectory(prefix="memlens-preload-bench-") as tmp:
        n = 0
        for w in WORKLOADS:
            script = os.path.join(HERE, "workloads", w)
            modes = {
                "plain": None,
                f"sampled {a.sample_bytes // 1024} KiB": {"MEMLENS_SAMPLE_BYTES": str(a.sample_bytes)},
                "all": {"MEMLENS_TRACE": "all"},
            }
            walls = {m: [] for m in modes}
            last = {}
            for r in range(a.rounds + 1):
                for m, extra in modes.items():
                    env = dict(base_env)
                    out = None
                    if extra is not None:
                        n += 1
                        out = os.path.join(tmp, f"trace-{n}")
                        env.update(extra, LD_PRELOAD=so, MEMLENS_TRACE_OUT=out)
                    wall = timed([a.python, script], env)
                    if r > 0:
                        walls[m].append(wall)
                    if out:
                        last[m] = last_record(out)
            print(f"\n{w}")
            plain = walls["plain"]
            print(f"  {'plain':<18} wall median {statistics.median(plain):6.3f} s")
            for m in list(modes)[1:]:
                ratios = [x / y for x, y in zip(walls[m], plain)]
                tag, rec = last[m]
                print(
                    f"  {m:<18} wall median {statistics.median(walls[m]):6.3f} s  "
                    f"ratio {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f})  "
                    f"[{tag}: peak_live {int(rec['peak_live_bytes']) / 2**20:.1f} MiB, "
                    f"total {int(rec['total_bytes']) / 2**20:.1f} MiB, samples {rec['alloc_samples']}, "
                    f"dropped {rec['dropped_allocs']}/{rec['dropped_frees']}, table_full {rec['table_full']}, "
                    f"stacks {rec['stacks']}, unreadable {rec.get('unreadable_stacks', '-')}, "
                    f"lost {rec.get('stacks_lost', '-')}]"
                )


if __name__ == "__main__":
    main()
