#!/usr/bin/env python3
"""Benchmark: memlens against psutil and smem on a 32-process Python tree, side by side.

usage: bench/.venv/bin/python bench/tree_ledger.py [--memlens PATH] [--compare PATH] [-n RUNS]
           [--warmup W] [--workers 31] [--shared-mib 50] [--private-mib 2] [--json FILE]

Starts workloads/fork_tree.py (a parent holding ~50 MiB of Python objects and 31 forked
workers, each with some copied and some private memory), then times whole commands,
interpreter start-up included, with the paired method of the baseline study's
pairbench.py: every command of a group in turn (A B C A B C ...), W warm-up rounds (default
1), N counted rounds (default 20); wall, user and sys seconds of the reaped child per run;
ratios taken round by round, medians printed.

  (a) full ledger of the tree: `memlens snapshot --tree ROOT --json` (with the Python view of
      every process: GC, pymalloc arenas and pools, sys.modules; the check below counts them)
      vs `peers/psutil_maps.py ROOT` (psutil memory_maps(grouped=False) for every process)
      vs `smem -P TAG` (reads /proc/PID/smaps of the processes whose command line matches)
      reference: `cat /proc/PID/smaps` of the 32 PIDs (the smaps-read baseline)
      and, with --compare PATH, the same snapshot by another memlens binary (e.g. main's)
  (b) totals: `memlens ps --json`
      vs `peers/psutil_totals.py` (psutil memory_full_info() for every Python process)
      reference: `cat /proc/PID/smaps_rollup` of the 32 PIDs

Each group also times `cat` of the same /proc files for the tree's PIDs (given the list, no
tree discovery, no parsing): the kernel's own cost of producing them, which every tool pays;
PSS needs a walk of every resident page, so it grows with the tree's resident memory and
bounds the ratios any tool can reach on a given tree.

Before timing, each command runs once untimed and its output is checked: the number of tree
processes it saw and the tree's PSS sum are printed, so the commands are shown to do the same
work. The memlens binary is --memlens or target/release/memlens
(`cargo build --release -p memlens`). Run bench/setup.sh first.
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(HERE)
MiB = 1 << 20


# ------------------------------------------------------------------ paired timer
# Same measurement as shared/research/baseline/harness/pairbench.py's run_once.

def run_once(argv):
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    return {"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "rc": rc}


def paired(commands, runs, warmup):
    """Runs every command of `commands` (name -> argv) in turn, round after round."""
    for _ in range(warmup):
        for argv in commands.values():
            run_once(argv)
    results = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            results[name].append(run_once(argv))
    return results


# ------------------------------------------------------------------ the tree

def start_tree(args, tag):
    cmd = [sys.executable, os.path.join(HERE, "workloads", "fork_tree.py"),
           "--workers", str(args.workers), "--shared-mib", str(args.shared_mib),
           "--private-mib", str(args.private_mib), "--tag", tag]
    tree = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            universal_newlines=True, start_new_session=True)
    line = tree.stdout.readline()
    if not line.startswith("READY "):
        tree.kill()
        sys.exit("tree_ledger: the workload did not start (got %r)" % line)
    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
    return tree, int(fields["root"]), [int(p) for p in fields["pids"].split(",")]


def stop_tree(tree, pids):
    tree.stdin.close()  # the parent exits on EOF, and its workers with it
    try:
        tree.wait(timeout=30)
    except subprocess.TimeoutExpired:
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        tree.wait()


# ------------------------------------------------------------------ checks

def capture(argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    if r.returncode != 0:
        sys.exit("tree_ledger: `%s` failed with exit code %d:\n%s"
                 % (" ".join(shlex.quote(a) for a in argv), r.returncode, r.stderr.strip()))
    return r.stdout


def check_memlens_snapshot(out, pids):
    snap = json.loads(out)
    seen = [p["pid"] for p in snap["processes"] if p["pid"] in pids]
    maps = sum(row["mappings"] for p in snap["processes"] for row in p["ledger"])
    views = sum(1 for p in snap["processes"]
                if p["pid"] in pids and (p.get("python") or {}).get("pymalloc"))
    return len(seen), snap["totals"]["pss"], "%d mappings, %d Python views" % (maps, views)


def check_psutil_maps(out, pids):
    d = json.loads(out)
    rows = [p for p in d["processes"] if p["pid"] in pids]
    return (len(rows), sum(p["pss"] for p in rows),
            "%d mappings" % sum(p["mappings"] for p in rows))


def check_smem(out, pids):
    rows = [line.split() for line in out.splitlines() if line.strip()]
    mine = [r for r in rows if int(r[0]) in pids]
    return len(mine), sum(int(r[2]) * 1024 for r in mine), "%d rows" % len(rows)


def check_cat(out, pids):
    """`cat` of smaps or smaps_rollup files: the sum of their `Pss:` lines (kB)."""
    pss = sum(int(line.split()[1]) * 1024 for line in out.splitlines()
              if line.startswith("Pss:"))
    return len(pids), pss, "given the PIDs"


def check_memlens_ps(out, pids):
    d = json.loads(out)
    n, pss, trees = 0, 0, len(d["trees"])
    for tree in d["trees"]:
        for p in tree["processes"]:
            if p["pid"] in pids:
                n += 1
                pss += p["totals"]["pss"]
    return n, pss, "%d trees" % trees


def check_psutil_totals(out, pids):
    d = {int(k): v for k, v in json.loads(out).items()}
    mine = [v for k, v in d.items() if k in pids]
    return len(mine), sum(v["pss"] for v in mine), "%d Python processes" % len(d)


# ------------------------------------------------------------------ report

def median(xs):
    return statistics.median(xs)


def shown(argv, memlens, py):
    """The command as the table shows it: short names for the binary, python and our scripts."""
    if argv[0] == "cat":
        return "cat /proc/PID/%s  (%d PIDs)" % (argv[1].rsplit("/", 1)[1], len(argv) - 1)
    words = []
    for a in argv:
        if a == memlens:
            a = "memlens"
        elif a == py:
            a = "python"
        elif a.startswith(ROOT_DIR + os.sep):
            a = os.path.relpath(a, ROOT_DIR)
        words.append(shlex.quote(a))
    return " ".join(words)


def print_group(title, names, argvs, results, checks, base, memlens, py):
    print()
    print("## " + title)
    print()
    print("| command | tree procs seen | tree PSS MiB | also | wall s median (min-max) "
          "| user s / sys s median | wall / memlens wall, median (min-max) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        rs = results[name]
        walls = [r["wall"] for r in rs]
        ratios = [a["wall"] / b["wall"] for a, b in zip(rs, results[base])]
        n, pss, also = checks[name]
        bad = sorted(set(r["rc"] for r in rs) - {0})
        print("| `%s` | %d | %.1f | %s | %.4f (%.4f-%.4f) | %.4f / %.4f | %s |%s" % (
            shown(argvs[name], memlens, py), n, pss / MiB, also, median(walls), min(walls), max(walls),
            median([r["user"] for r in rs]), median([r["sys"] for r in rs]),
            "1 (base)" if name == base else "**%.1fx** (%.1f-%.1f)" % (
                median(ratios), min(ratios), max(ratios)),
            " exit codes %s!" % bad if bad else ""))


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memlens", default=os.path.join(ROOT_DIR, "target", "release", "memlens"))
    ap.add_argument("--compare", metavar="PATH",
                    help="another memlens binary whose snapshot is timed beside (e.g. main's)")
    ap.add_argument("-n", "--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--workers", type=int, default=31)
    ap.add_argument("--shared-mib", type=int, default=50)
    ap.add_argument("--private-mib", type=int, default=2)
    ap.add_argument("--json", metavar="FILE", help="also write every measurement to FILE")
    args = ap.parse_args()

    memlens = os.path.abspath(args.memlens)
    if not os.access(memlens, os.X_OK):
        sys.exit("tree_ledger: no memlens binary at %s (cargo build --release -p memlens, "
                 "or pass --memlens PATH)" % memlens)
    try:
        import psutil
    except ImportError:
        sys.exit("tree_ledger: psutil is missing; run bench/setup.sh and use bench/.venv/bin/python")
    py = sys.executable
    peers = os.path.join(HERE, "peers")

    print("# tree_ledger: %s; python %s; psutil %s; %s; %d CPUs, load %s; %s UTC" % (
        capture([memlens, "--version"]).strip(), platform.python_version(), psutil.__version__,
        capture(["sh", "-c", "dpkg-query -W -f 'smem ${Version}' smem 2>/dev/null || echo smem"]),
        os.cpu_count(), loadavg(), time.strftime("%Y-%m-%d %H:%M", time.gmtime())))

    # A regex that matches the tree's command lines but not smem's own (`[e]` is not "e").
    tag = "memlens-bench-tree-%d" % os.getpid()
    smem_filter = tag[:-1] + "[" + tag[-1] + "]"
    tree, root, pids = start_tree(args, tag)
    try:
        pidset = set(pids)
        found = [root] + [p.pid for p in psutil.Process(root).children(recursive=True)]
        if sorted(found) != sorted(pids):
            sys.exit("tree_ledger: the tree has %d processes, expected %d" % (len(found), len(pids)))
        rss = sum(psutil.Process(p).memory_info().rss for p in pids)
        print("# tree: root %d, %d processes, sum of RSS %.1f MiB" % (root, len(pids), rss / MiB))

        ledger = {
            "memlens snapshot": [memlens, "snapshot", str(root), "--tree", "--json"],
        }
        if args.compare:
            ledger["memlens snapshot (compare)"] = [os.path.abspath(args.compare), "snapshot",
                                                    str(root), "--tree", "--json"]
        ledger.update({
            "psutil memory_maps": [py, os.path.join(peers, "psutil_maps.py"), str(root)],
            "smem": ["smem", "-H", "-c", "pid uss pss rss", "-P", smem_filter],
            "cat smaps": ["cat"] + ["/proc/%d/smaps" % p for p in pids],
        })
        totals = {
            "memlens ps": [memlens, "ps", "--json"],
            "psutil memory_full_info": [py, os.path.join(peers, "psutil_totals.py")],
            "cat smaps_rollup": ["cat"] + ["/proc/%d/smaps_rollup" % p for p in pids],
        }
        checkers = {"memlens snapshot": check_memlens_snapshot,
                    "memlens snapshot (compare)": check_memlens_snapshot,
                    "psutil memory_maps": check_psutil_maps, "smem": check_smem,
                    "memlens ps": check_memlens_ps,
                    "cat smaps": check_cat, "cat smaps_rollup": check_cat,
                    "psutil memory_full_info": check_psutil_totals}
        checks = {}
        for name, argv in list(ledger.items()) + list(totals.items()):
            checks[name] = checkers[name](capture(argv), pidset)

        print("# %d warm-up + %d counted rounds per group, commands alternating" % (
            args.warmup, args.runs))
        r_ledger = paired(ledger, args.runs, args.warmup)
        r_totals = paired(totals, args.runs, args.warmup)
        load_after = loadavg()
    finally:
        stop_tree(tree, pids)

    print_group("(a) full ledger of the %d-process tree" % len(pids), list(ledger), ledger,
                r_ledger, checks, "memlens snapshot", memlens, py)
    print_group("(b) totals of every Python process", list(totals), totals, r_totals, checks,
                "memlens ps", memlens, py)
    print()
    print("# load average after timing: %s" % load_after)
    for group, base, peer, target in ((r_ledger, "memlens snapshot", "psutil memory_maps", 5),
                                      (r_totals, "memlens ps", "psutil memory_full_info", 3)):
        ratio = median([a["wall"] / b["wall"] for a, b in zip(group[peer], group[base])])
        print("# target: %s at least %dx faster than %s: %.1fx, %s" % (
            base, target, peer, ratio, "met" if ratio >= target else "NOT met"))
    # the Python view's cost: the snapshot (Python view included) against reading the smaps
    ratio = median([a["wall"] / b["wall"]
                    for a, b in zip(r_ledger["memlens snapshot"], r_ledger["cat smaps"])])
    print("# target: memlens snapshot (with the Python view) within 1.5x of cat smaps: "
          "%.2fx, %s" % (ratio, "met" if ratio <= 1.5 else "NOT met"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ledger": {"argv": ledger, "runs": r_ledger},
                       "totals": {"argv": totals, "runs": r_totals},
                       "checks": checks}, f, indent=1)


if __name__ == "__main__":
    main()
