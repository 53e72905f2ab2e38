#!/usr/bin/env python3
"""Benchmark: one collection of `memlens serve` over a 100-process Python tree, against what
process-exporter's smaps mode and a plain read of the same processes' smaps cost.

usage: python3 bench/serve_scrape.py [--memlens PATH] [-n RUNS] [--workers 99]
           [--shared-mib 50] [--private-mib 2] [--json FILE]

Starts workloads/fork_tree.py (a parent holding ~50 MiB of Python objects and 99 forked
workers: 100 processes), then measures, N times each (default 7), and prints medians:

  (a) memlens serve (--interval 1ms --cpu-budget 100: a collection right after the other):
      per collection, the CPU seconds the kernel counted for the memlens process (utime + stime
      of /proc/PID/stat between two complete collections, so the scrapes that watch for them
      are included) and the wall time the collection took (memlens_collection_duration_seconds);
      each collection is the whole job of a scrape's figures: ps of the host, the ledger of
      every process (smaps, thread stacks), each Python view read without stopping it,
      copy-on-write sharing from pagemap, the tree's exclusive frames from kpagecount.
      memlens collects every Python tree on the host: the count of processes it exported is
      printed beside (other Python programs running on the host add to it).
  (b) prometheus-process-exporter -gather-smaps (Debian's package, if installed), tracking the
      tree by its interpreter's name: one scrape's wall time (HTTP GET) and the exporter's CPU
      seconds for it (from /proc/PID/stat around the scrape).
  (c) reference: `cat /proc/PID/smaps` of the 100 PIDs (given the list): the kernel's cost of
      producing what process-exporter's smaps mode reads (wall, user + sys of the child).

The memlens binary is --memlens or target/release/memlens (`cargo build --release -p memlens`).
Timing figures are only meaningful on a quiet machine: say "under load" otherwise.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(HERE)
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read().decode()


def sample(body, name):
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def start_tree(args):
    cmd = [sys.executable, os.path.join(HERE, "workloads", "fork_tree.py"),
           "--workers", str(args.workers), "--shared-mib", str(args.shared_mib),
           "--private-mib", str(args.private_mib), "--tag", "serve-bench"]
    tree = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = tree.stdout.readline()
    if not line.startswith("READY"):
        raise SystemExit("the tree did not start: %r" % line)
    pids = [int(p) for p in line.split("pids=")[1].split(",")]
    return tree, pids


def bench_memlens(args, pids):
    proc = subprocess.Popen([args.memlens, "serve", "--listen", "127.0.0.1:0", "--interval", "1ms",
                             "--cpu-budget", "100"], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    url = line.strip().split("serving ")[1]
    cpu, wall, exported = [], [], []
    try:
        seen, last_cpu = 0.0, None
        deadline = time.monotonic() + 600
        while len(cpu) < args.runs and time.monotonic() < deadline:
            body = get(url)
            n = sample(body, "memlens_collections_total") or 0.0
            if n > seen:
                now = cpu_seconds(proc.pid)
                if last_cpu is not None and n == seen + 1:
                    cpu.append(now - last_cpu)
                    wall.append(sample(body, "memlens_collection_duration_seconds"))
                    exported.append(sample(body, "memlens_processes"))
                seen, last_cpu = n, now
            time.sleep(0.01)
        missing = [p for p in pids if 'memlens_process_total_pss_bytes{pid="%d"' % p not in body]
        if missing:
            print("  memlens: %d of the tree's processes missing from the last collection"
                  % len(missing))
    finally:
        proc.terminate()
        proc.wait()
    return {"cpu": cpu, "wall": wall, "processes": exported}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def bench_process_exporter(args, pids):
    exe = shutil.which("prometheus-process-exporter") or shutil.which("process-exporter")
    if not exe:
        print("  process-exporter: not installed (apt-get install prometheus-process-exporter);"
              " only the smaps read is compared")
        return None
    with open("/proc/%d/comm" % pids[0]) as f:
        comm = f.read().strip()
    port = free_port()
    proc = subprocess.Popen([exe, "-gather-smaps", "-procnames", comm, "-threads=false",
                             "-web.listen-address", "127.0.0.1:%d" % port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d/metrics" % port
    cpu, wall, procs = [], [], []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get(url)  # the first scrape (warm-up)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for _ in range(args.runs):
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            body = get(url)
            wall.append(time.monotonic() - t0)
            cpu.append(cpu_seconds(proc.pid) - c0)
            procs.append(sample(body, 'namedprocess_namegroup_num_procs{groupname="%s"}' % comm))
    finally:
        proc.terminate()
        proc.wait()
    return {"cpu": cpu, "wall": wall, "processes": procs}


def bench_smaps(args, pids):
    cpu, wall = [], []
    argv = ["cat"] + ["/proc/%d/smaps" % p for p in pids]
    for _ in range(args.runs):
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, _, ru = os.wait4(p.pid, 0)
        wall.append(time.monotonic() - t0)
        cpu.append(ru.ru_utime + ru.ru_stime)
    return {"cpu": cpu, "wall": wall}


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--memlens", default=os.path.join(ROOT_DIR, "target", "release", "memlens"))
    ap.add_argument("-n", "--runs", type=int, default=7)
    ap.add_argument("--workers", type=int, default=99)
    ap.add_argument("--shared-mib", type=int, default=50)
    ap.add_argument("--private-mib", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    tree, pids = start_tree(args)
    try:
        print("tree: %d processes (root %d); %d runs each; medians" % (len(pids), pids[0], args.runs))
        results = {"memlens": bench_memlens(args, pids),
                   "process_exporter": bench_process_exporter(args, pids),
                   "smaps_read": bench_smaps(args, pids)}
    finally:
        tree.stdin.close()
        tree.wait()
    m = results["memlens"]
    print("  memlens serve, one collection: %.3f s CPU, %.3f s wall (%d processes exported)"
          % (median(m["cpu"]), median(m["wall"]), median(m["processes"])))
    pe = results["process_exporter"]
    if pe:
        print("  process-exporter -gather-smaps, one scrape: %.3f s CPU, %.3f s wall"
              " (%s processes in its group)" % (median(pe["cpu"]), median(pe["wall"]),
                                                 median(pe["processes"])))
    s = results["smaps_read"]
    print("  cat /proc/PID/smaps of the tree: %.3f s CPU, %.3f s wall"
          % (median(s["cpu"]), median(s["wall"])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
