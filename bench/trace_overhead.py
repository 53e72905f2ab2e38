#!/usr/bin/env python3
"""Cost of allocation tracing: `memlens run --trace` beside the peers, side by side in one run.

For each workload (bench/workloads/w6_alloc_heavy.py, w1_objects.py, w7_numpy.py) every tool
runs the same interpreter on the same script in paired rounds (A B C ... A B C ...) after
warm-up rounds; per run:
  - wall from spawn to reap, user+sys of the command and the children it reaped (wait4);
  - the target's peak RSS: VmHWM of the Python process that runs the workload (the one whose
    executable is the interpreter and whose command line names the script; the deepest one
    when several do), read from /proc/PID/status every --poll seconds while it lives: VmHWM
    only grows, so the last reading is the peak up to then (growth in the last poll interval
    before exit is missed); beside it the largest process of the whole command (ru_maxrss of
    wait4), which for `memlens run` may be memlens itself;
  - the capture: bytes of the files the tool wrote (memlens: the recording `-o` with its
    -wal/-shm, and the part of it the trace tables take, from SQLite's dbstat; memray: its
    .bin; Fil: its output folder; Scalene: its JSON; tracemalloc writes none: n/a).
Ratios against plain are taken round by round (wall, CPU, peak RSS); medians (min-max) are
printed. Each run's output files are removed before the next; the workload's own result line
must appear on stdout, else the run counts as failed. A tool that is missing or fails is shown
as such and left out of the later rounds of that workload; the others go on. Nothing is
asserted.

Run from the repository root after bench/setup.sh and
`cargo build --release -p memlens -p memlens-preload`:
    bench/.venv/bin/python bench/trace_overhead.py [--rounds 3] [--warmup 1]
        [--workloads w6,w1,w7] [--tools plain,memlens-run,memlens-sampled,...] [--json FILE]
Then, unless --capture-seconds 0, w6 and w7 stretched to about a minute each run once more
under `memlens run --trace` for the capture rate per minute (the issue's target: under 1 MB).
`--rounds 1` takes about 10 minutes on an idle 2-core machine (about 4 with --warmup 0
--capture-seconds 0); several times that under load.
"""
import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV_BIN = os.path.join(HERE, ".venv", "bin")

WORKLOADS = {
    "w6": ("w6_alloc_heavy.py", "w6 "),
    "w1": ("w1_objects.py", "w1 "),
    "w7": ("w7_numpy.py", "w7 "),
}
# The knob that scales a workload's work, and its default, for the long capture runs.
SCALE = {"w6": ("W6_ITERS", 10_000_000), "w7": ("W7_ROUNDS", 40)}

# name -> (label, needs, capture kind). `needs` is the executable looked up in the venv.
TOOLS = {
    "plain": ("plain python", None, None),
    "memlens-run": ("memlens run (no trace)", "memlens", "memlens"),
    "memlens-sampled": ("memlens run --trace (sampled 512 KiB)", "memlens", "memlens"),
    "memlens-all": ("memlens run --trace=all", "memlens", "memlens"),
    "memray": ("memray run", "memray", "file"),
    "memray-pyalloc": ("memray run --trace-python-allocators", "memray", "file"),
    "fil": ("fil-profile run", "fil-profile", "dir"),
    "scalene": ("scalene run (memory on, JSON)", "scalene", "file"),
    "tracemalloc1": ("python -X tracemalloc=1", None, None),
    "tracemalloc25": ("python -X tracemalloc=25", None, None),
}
DEFAULT_TOOLS = [t for t in TOOLS if t != "tracemalloc25"]


def command(tool, exe, python, script, out):
    """The command line of one run, and the path of its capture (None: writes none)."""
    if tool == "plain":
        return [python, script], None
    if tool.startswith("tracemalloc"):
        return [python, "-X", f"tracemalloc={tool[len('tracemalloc'):]}", script], None
    if tool.startswith("memlens"):
        db = out + ".db"
        trace = {"memlens-run": [], "memlens-sampled": ["--trace"], "memlens-all": ["--trace=all"]}[tool]
        return [exe, "run", "-q", *trace, "-o", db, "--", python, script], db
    if tool.startswith("memray"):
        binf = out + ".bin"
        extra = ["--trace-python-allocators"] if tool == "memray-pyalloc" else []
        return [exe, "run", *extra, "-q", "-f", "-o", binf, script], binf
    if tool == "fil":
        d = out + ".fil"
        return [exe, "-o", d, "--no-browser", "run", script], d
    if tool == "scalene":
        j = out + ".scalene.json"
        return [exe, "run", "--memory", "-o", j, script], j
    raise ValueError(tool)


def remove_capture(path):
    """Removes what one run wrote: only paths this bench named, inside its own folder."""
    if path is None:
        return
    for p in (path, path + "-wal", path + "-shm", path + "-journal"):
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.remove(p)


def capture_bytes(path):
    if path is None:
        return None
    total, found = 0, False
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.isdir(p) and not os.path.islink(p):
            found = True
            for d, _, files in os.walk(p):
                total += sum(os.lstat(os.path.join(d, f)).st_size for f in files)
        elif os.path.isfile(p):
            found = True
            total += os.lstat(p).st_size
    return total if found else None


def trace_figures(db):
    """Bytes the trace tables take in a memlens recording (dbstat pages), and the tracer's own
    counters from its last snapshot of each traced process."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        try:
            pages = c.execute(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'trace%' "
                "OR name LIKE 'sqlite_autoindex_trace%'").fetchone()[0]
        except sqlite3.Error:
            pages = None  # SQLite built without dbstat
        rows = c.execute(
            "SELECT count(*), coalesce(sum(alloc_samples), 0), coalesce(sum(dropped_allocs), 0), "
            "coalesce(sum(dropped_frees), 0), coalesce(sum(table_full), 0), "
            "coalesce(sum(unreadable_stacks), 0), coalesce(sum(stacks_lost), 0) "
            "FROM trace_snaps WHERE rowid IN (SELECT max(rowid) FROM trace_snaps GROUP BY trace)"
        ).fetchone()
        stacks = c.execute("SELECT count(*) FROM trace_stacks").fetchone()[0]
        traces = c.execute("SELECT count(*) FROM traces").fetchone()[0]
        # none in a Python program: the pymalloc wrapper was never installed
        pym = c.execute("SELECT count(*) FROM trace_stacks WHERE domain = 'pymalloc'").fetchone()[0]
    finally:
        c.close()
    keys = ("snapshotted", "alloc_samples", "dropped_allocs", "dropped_frees", "table_full",
            "unreadable_stacks", "stacks_lost")
    fig = dict(zip(keys, rows))
    fig["stacks"] = stacks
    fig["traces"] = traces
    fig["pymalloc_stacks"] = pym
    fig["trace_table_bytes"] = pages
    return fig


def vmhwm(fd):
    """VmHWM of /proc/PID/status read through an open descriptor (None for a zombie, whose
    memory is gone, or a process that has been reaped)."""
    try:
        text = os.pread(fd, 8192, 0)
    except OSError:
        return None
    for line in text.split(b"\n"):
        if line.startswith(b"VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


class PeakWatcher(threading.Thread):
    """Polls the command's process tree; keeps the last VmHWM of each process that runs the
    workload (interpreter executable, script on its command line).

    VmHWM only grows (until an exec, which starts a fresh one), so finding a process late loses
    nothing: the tree is walked every `walk` seconds, and only the last reading before the
    process exits matters, so the processes found are read every `poll` seconds through a
    descriptor kept open (one pread each)."""

    def __init__(self, root, python_exe, script, poll, walk=0.05):
        super().__init__(daemon=True)
        self.root, self.exe, self.script, self.poll = root, python_exe, script, poll
        self.walk_every = max(1, round(walk / poll))
        self.stopped = False
        self.hwm = {}  # pid -> (depth, last VmHWM)
        self.fds = {}  # pid -> (depth, fd of /proc/PID/status)

    def is_target(self, pid):
        try:
            if os.path.realpath(f"/proc/{pid}/exe") != self.exe:
                return False
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            return False
        return self.script.encode() in args

    def walk(self):
        stack = [(self.root, 0)]
        while stack:
            pid, depth = stack.pop()
            # Checked on every walk until found: a process may exec the interpreter later
            # (memlens's child; Fil re-executes itself with its library preloaded).
            if pid not in self.fds and self.is_target(pid):
                try:
                    self.fds[pid] = (depth, os.open(f"/proc/{pid}/status", os.O_RDONLY))
                except OSError:
                    pass
            stack.extend((c, depth + 1) for c in children(pid))

    def read(self):
        for pid, (depth, fd) in self.fds.items():
            h = vmhwm(fd)
            if h is not None:
                self.hwm[pid] = (depth, h)

    def run(self):
        try:
            n = 0
            while not self.stopped:
                if n % self.walk_every == 0:
                    self.walk()
                self.read()
                n += 1
                time.sleep(self.poll)  # cheaper than an Event's timed wait
        finally:
            for _, fd in self.fds.values():
                os.close(fd)

    def peak(self):
        """(VmHWM of the deepest target process, number of target processes)."""
        if not self.hwm:
            return None, 0
        deepest = max(d for d, _ in self.hwm.values())
        return max(h for d, h in self.hwm.values() if d == deepest), len(self.hwm)


def run_once(cmd, env, python_exe, script, expect, poll, timeout):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, start_new_session=True)
    w = PeakWatcher(p.pid, python_exe, script, poll)
    w.start()
    outs = {}

    def drain(name, f):
        outs[name] = f.read()

    readers = [threading.Thread(target=drain, args=(n, f), daemon=True)
               for n, f in (("out", p.stdout), ("err", p.stderr))]
    for r in readers:
        r.start()
    timer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
    timer.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    timer.cancel()
    w.stopped = True
    w.join()
    for r in readers:
        r.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    out = outs.get("out", b"").decode(errors="replace")
    err = outs.get("err", b"").decode(errors="replace")
    peak, ntargets = w.peak()
    res = {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss": ru.ru_maxrss * 1024,
           "peak": peak, "targets": ntargets, "rc": p.returncode}
    if p.returncode != 0:
        tail = (err.strip().splitlines() or ["(no stderr)"])[-1]
        res["error"] = f"exit {p.returncode}: {tail[:160]}"
    elif not any(l.startswith(expect) for l in out.splitlines()):
        res["error"] = f"the workload's line '{expect.strip()} ...' is not on stdout"
    elif peak is None:
        res["error"] = "the target process was not seen (ended before the first poll?)"
    return res


def med(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt(m, digits=3):
    return f"{m[0]:.{digits}f} ({m[1]:.{digits}f}-{m[2]:.{digits}f})"


def mib(b):
    return b / 2**20


def human(b):
    if b is None:
        return "n/a"
    if b >= 2**20:
        return f"{b / 2**20:.1f} MiB"
    if b >= 2**10:
        return f"{b / 2**10:.1f} KiB"
    return f"{b} B"


def versions(python, exes):
    v = {"python": subprocess.run([python, "-V"], capture_output=True, text=True).stdout.strip()}
    code = ("import importlib.metadata as m\n"
            "for p in ('numpy', 'memray', 'filprofiler', 'scalene'):\n"
            "    try: print(p, m.version(p))\n"
            "    except Exception: print(p, 'missing')\n")
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        k, val = line.split(" ", 1)
        v[k] = val
    if exes.get("memlens"):
        r = subprocess.run([exes["memlens"], "--version"], capture_output=True, text=True)
        v["memlens"] = r.stdout.strip()
    try:
        v["memlens_commit"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                             capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return v


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=os.path.join(VENV_BIN, "python"),
                    help="the interpreter every tool runs (default: bench/.venv's)")
    ap.add_argument("--memlens", default=os.path.join(ROOT, "target", "release", "memlens"))
    ap.add_argument("--rounds", type=int, default=3, help="counted paired rounds (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up rounds, not counted (default 1)")
    ap.add_argument("--workloads", default="w6,w1,w7", help=f"comma-separated, of {','.join(WORKLOADS)}")
    ap.add_argument("--tools", default=",".join(DEFAULT_TOOLS),
                    help=f"comma-separated, of {','.join(TOOLS)} (plain is always run)")
    ap.add_argument("--poll", type=float, default=0.005, help="seconds between /proc reads (default 0.005)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before a run is killed (default 600)")
    ap.add_argument("--capture-seconds", type=float, default=60,
                    help="then run w6 and w7 (those measured) stretched to about this long under "
                         "`memlens run --trace` for the capture rate (0: skip; default 60)")
    ap.add_argument("--json", help="also write every measurement here")
    a = ap.parse_args()

    workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
    tools = ["plain"] + [t.strip() for t in a.tools.split(",") if t.strip() and t.strip() != "plain"]
    for w in workloads:
        if w not in WORKLOADS:
            sys.exit(f"unknown workload {w!r}: choose from {', '.join(WORKLOADS)}")
    for t in tools:
        if t not in TOOLS:
            sys.exit(f"unknown tool {t!r}: choose from {', '.join(TOOLS)}")
    if not os.access(a.python, os.X_OK):
        sys.exit(f"{a.python} not found: run bench/setup.sh")
    python = os.path.abspath(a.python)  # not resolved: a venv's python finds its packages by its path
    python_exe = os.path.realpath(python)

    # Where each tool's executable is; a missing one is shown as such, the others go on.
    exes, missing = {}, {}
    for t in tools:
        need = TOOLS[t][1]
        if need is None:
            continue
        path = a.memlens if need == "memlens" else os.path.join(os.path.dirname(python), need)
        if os.access(path, os.X_OK):
            exes[need] = path
        else:
            hint = ("cargo build --release -p memlens -p memlens-preload" if need == "memlens"
                    else "bench/setup.sh")
            missing[t] = f"missing: {path} ({hint})"
    if "memlens" in exes and any(t in tools for t in ("memlens-sampled", "memlens-all")):
        so = os.environ.get("MEMLENS_PRELOAD") or os.path.join(os.path.dirname(exes["memlens"]),
                                                               "libmemlens_preload.so")
        if not os.path.isfile(so):
            for t in ("memlens-sampled", "memlens-all"):
                missing.setdefault(t, f"missing: {so} (cargo build --release -p memlens-preload)")

    base_env = {k: v for k, v in os.environ.items()
                if k != "LD_PRELOAD" and not k.startswith(("MEMLENS_TRACE", "MEMLENS_SAMPLE", "PYTHON"))}
    vers = versions(python, exes)
    print(f"load average before: {loadavg()}   cores: {os.cpu_count()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    print(f"interpreter: {python} ({python_exe}); {a.rounds} counted rounds after {a.warmup} warm-up")
    for t, why in missing.items():
        print(f"  {TOOLS[t][0]}: {why}")

    results_dir = os.path.join(HERE, "results")
    os.makedirs(results_dir, exist_ok=True)
    everything = {"versions": vers, "load_before": loadavg(), "rounds": a.rounds,
                  "warmup": a.warmup, "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="trace-overhead-", dir=results_dir) as tmp:
        for wname in workloads:
            script_file, expect = WORKLOADS[wname]
            script = os.path.join(HERE, "workloads", script_file)
            runs = {t: [] for t in tools}
            failed = dict(missing)
            started = time.perf_counter()
            for rnd in range(a.warmup + a.rounds):
                for t in tools:
                    if t in failed:
                        continue
                    need = TOOLS[t][1]
                    cmd, cap = command(t, exes.get(need), python, script, os.path.join(tmp, f"{wname}-{t}"))
                    remove_capture(cap)
                    r = run_once(cmd, base_env, python_exe, script, expect, a.poll, a.timeout)
                    if "error" in r:
                        failed[t] = f"failed in round {rnd + 1 - a.warmup}: {r['error']}"
                        print(f"  {wname} {TOOLS[t][0]}: {failed[t]}", flush=True)
                        remove_capture(cap)
                        continue
                    r["capture"] = capture_bytes(cap)
                    if t.startswith("memlens") and cap and os.path.isfile(cap):
                        try:
                            r.update(trace_figures(cap) if t != "memlens-run" else {})
                        except sqlite3.Error as e:
                            r["trace_error"] = str(e)
                    remove_capture(cap)
                    if rnd >= a.warmup:
                        runs[t].append(r)
            report(wname, script_file, tools, runs, failed, time.perf_counter() - started)
            everything["workloads"][wname] = {"runs": runs, "failed": failed}
        if a.capture_seconds > 0 and "memlens-sampled" in tools and "memlens-sampled" not in missing:
            everything["capture_runs"] = capture_runs(a, exes["memlens"], python, python_exe,
                                                      base_env, everything["workloads"], tmp)
    everything["load_after"] = loadavg()
    print(f"\nload average after: {loadavg()}")
    if a.json:
        with open(a.json, "x") as f:
            json.dump(everything, f, indent=1)
        print(f"every measurement: {a.json}")


def capture_runs(a, memlens, python, python_exe, base_env, measured, tmp):
    """The sampled trace's capture over a longer run: w6 and w7 with their work scaled so the
    plain run would take about --capture-seconds."""
    print(f"\n### capture of `memlens run --trace` (sampled 512 KiB) over ~{a.capture_seconds:.0f} s runs\n")
    print("| workload | scaled to | wall s | recording | per minute | trace tables | per minute | "
          "samples | stacks | dropped allocs/frees |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    out = []
    for wname, (knob, default) in SCALE.items():
        plain = measured.get(wname, {}).get("runs", {}).get("plain")
        if not plain or wname not in measured or "memlens-sampled" in measured[wname]["failed"]:
            continue
        base = int(base_env.get(knob, default))  # what the measured runs did
        work = max(1, round(base * a.capture_seconds / statistics.median(r["wall"] for r in plain)))
        env = dict(base_env, **{knob: str(work)})
        script_file, expect = WORKLOADS[wname]
        script = os.path.join(HERE, "workloads", script_file)
        cmd, cap = command("memlens-sampled", memlens, python, script, os.path.join(tmp, f"{wname}-long"))
        remove_capture(cap)
        r = run_once(cmd, env, python_exe, script, expect, a.poll, max(a.timeout, 20 * a.capture_seconds))
        if "error" in r:
            print(f"| {wname} | {knob}={work} | failed: {r['error']} | | | | | | | |")
            remove_capture(cap)
            continue
        r["capture"] = capture_bytes(cap)
        r.update(trace_figures(cap))
        remove_capture(cap)
        minutes = r["wall"] / 60
        tb = r.get("trace_table_bytes")
        print(f"| {wname} | {knob}={work} | {r['wall']:.1f} | {human(r['capture'])} | "
              f"**{human(int(r['capture'] / minutes))}** | {human(tb)} | "
              f"**{human(int(tb / minutes)) if tb is not None else 'n/a'}** | {r['alloc_samples']} | "
              f"{r['stacks']} (pymalloc {r['pymalloc_stacks']}) | {r['dropped_allocs']}/{r['dropped_frees']} |")
        r["workload"], r["scaled"] = wname, f"{knob}={work}"
        out.append(r)
    sys.stdout.flush()
    return out


def report(wname, script_file, tools, runs, failed, took):
    plain = runs["plain"]
    print(f"\n### {script_file}: {len(plain)} counted rounds, {took:.0f} s in all; medians (min-max)\n")
    print("| tool | wall s | wall / plain | cpu / plain | target peak RSS MiB | RSS / plain | "
          "largest process MiB (wait4) | capture |")
    print("|---|---|---|---|---|---|---|---|")
    for t in tools:
        label = TOOLS[t][0]
        rs = runs[t]
        if t in failed and not rs:
            print(f"| {label} | {failed[t]} | | | | | | |")
            continue
        if not rs or not plain:
            print(f"| {label} | no counted run | | | | | | |")
            continue
        n = min(len(rs), len(plain))
        wall = med([r["wall"] for r in rs])
        rw = med([r["wall"] / p["wall"] for r, p in zip(rs[:n], plain[:n])])
        rc = med([r["cpu"] / p["cpu"] for r, p in zip(rs[:n], plain[:n])])
        peak = med([mib(r["peak"]) for r in rs])
        rp = med([r["peak"] / p["peak"] for r, p in zip(rs[:n], plain[:n])])
        big = med([mib(r["maxrss"]) for r in rs])
        caps = [r["capture"] for r in rs if r.get("capture") is not None]
        cap = human(int(statistics.median(caps))) if caps else "n/a"
        note = f" (failed later: {failed[t]})" if t in failed else ""
        print(f"| {label}{note} | {fmt(wall, 2)} | **{fmt(rw)}** | {fmt(rc)} | {fmt(peak, 1)} | "
              f"{fmt(rp)} | {fmt(big, 1)} | {cap} |")
    for t in ("memlens-run", "memlens-sampled", "memlens-all"):
        rs = runs.get(t) or []
        if not rs:
            continue
        minutes = statistics.median([r["wall"] for r in rs]) / 60
        rec = statistics.median([r["capture"] for r in rs if r.get("capture") is not None] or [0])
        line = f"  {TOOLS[t][0]}: recording {human(int(rec))} = {human(int(rec / minutes))}/minute of run"
        if t != "memlens-run":
            tb = [r["trace_table_bytes"] for r in rs if r.get("trace_table_bytes") is not None]
            if tb:
                line += f"; trace tables {human(int(statistics.median(tb)))} = " \
                        f"{human(int(statistics.median(tb) / minutes))}/minute"
            base = [r["capture"] for r in runs.get("memlens-run") or [] if r.get("capture") is not None]
            if base:
                extra = rec - statistics.median(base)
                line += f"; recording minus `run` without trace: {human(int(extra))} = " \
                        f"{human(int(extra / minutes))}/minute"
            nopym = sum(1 for r in rs if r.get("pymalloc_stacks") == 0)
            if nopym:
                line += f"  [{nopym} of {len(rs)} runs traced no pymalloc block]"
            last = rs[-1]
            line += (f"  [last run: {last.get('traces')} traced processes, samples "
                     f"{last.get('alloc_samples')}, stacks {last.get('stacks')} (pymalloc "
                     f"{last.get('pymalloc_stacks')}), dropped "
                     f"{last.get('dropped_allocs')}/{last.get('dropped_frees')}, table_full "
                     f"{last.get('table_full')}, unreadable stacks {last.get('unreadable_stacks')}, "
                     f"stacks lost {last.get('stacks_lost')}]")
        print(line)
    odd = [(t, r["targets"]) for t in tools for r in runs[t] if r["targets"] != 1]
    if odd:
        print("  more than one process ran the workload (the deepest was measured): "
              + ", ".join(sorted({f"{TOOLS[t][0]} x{n}" for t, n in odd})))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
