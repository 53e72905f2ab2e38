"""memlens.limit(): records the calling process's tree while a block runs, with
`memlens record <own pid>` as a helper process, and checks the block's peak and growth against
budgets. What each figure is: docs/python.md."""

import functools
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import warnings

from . import _proc
from ._binary import find_binary, spawn
from ._errors import MemlensError, MemoryBudgetExceeded, error_for
from ._text import escape, format_delta, format_size, parse_size

# `memlens record` prints this line on stderr once its signal handlers are in place and the
# tree is followed (crates/memlens/src/commands/record.rs): from then on SIGINT stops it
# cleanly, with the recording finished and the report printed.
READY_PREFIX = "memlens: recording pid "
RECORDING_NAME = "block.db"
# SQLite's companions of a recording (memlens leaves none after a clean finish).
_COMPANIONS = ("", "-wal", "-shm", "-journal")
_BREAKDOWN_ROWS = 5


class _Recorder(object):
    """`memlens record PID -o PATH --json`, started held until it may ptrace this process,
    its stderr and stdout drained by two threads (stdout carries the report at the end)."""

    def __init__(self, pid, path, extra_args):
        self.argv = [find_binary(), "record", str(pid), "-o", path, "--json"] + extra_args
        self.proc, self.note = spawn(
            self.argv, True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines = []
        self.out = []
        self.ready = False
        self._event = threading.Event()
        self._threads = [
            threading.Thread(target=self._drain_stderr, name="memlens-record-stderr"),
            threading.Thread(target=self._drain_stdout, name="memlens-record-stdout"),
        ]
        for t in self._threads:
            t.daemon = True
            t.start()

    @property
    def pid(self):
        return self.proc.pid

    def _drain_stderr(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if not self.ready and line.startswith(READY_PREFIX):
                self.ready = True
                self._event.set()
        self._event.set()  # end of stderr: memlens has exited

    def _drain_stdout(self):
        for chunk in iter(lambda: self.proc.stdout.read(65536), b""):
            self.out.append(chunk)

    def _failed(self, rc):
        self._join()
        e = error_for(rc, "\n".join(self.lines), self.argv)
        if self.note is not None:
            e.message += "\n(%s)" % self.note
        return e

    def _join(self):
        for t in self._threads:
            t.join()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def wait_ready(self, timeout):
        """Waits for the READY line (an event, bounded by `timeout` seconds)."""
        if not self._event.wait(timeout):
            self.kill()
            raise MemlensError(
                "memlens record did not start following the tree within %g s" % timeout,
                command=self.argv,
            )
        if not self.ready:
            raise self._failed(self.proc.wait())

    def stop(self, timeout):
        """SIGINT (memlens's Ctrl-C), then the report it prints (dict)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise MemlensError(
                "memlens record did not finish within %g s of SIGINT; it was killed" % timeout,
                command=self.argv,
            )
        if rc != 0:
            raise self._failed(rc)
        self._join()
        out = b"".join(self.out)
        try:
            return json.loads(out.decode("utf-8", "replace"))
        except ValueError as e:
            raise MemlensError(
                "memlens record printed a report that is not JSON (%s)" % e,
                exit_code=0,
                command=self.argv,
            )

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._join()


class Measurement(object):
    """The figures of one block (sizes in bytes). See docs/python.md.

    peak: the block's peak (the largest of each process's VmHWM reached during the block and
      the tree's PSS read by memlens); peak_source: "vm_hwm" or "pss"; peak_pid and
      peak_cmdline: the process whose VmHWM it is (None for a PSS peak).
    pss_peak: the highest PSS of the whole tree memlens read (None if never read), pss_reads
      how many times it read every process's PSS at one moment.
    start_pss, end_pss, growth: the tree's PSS at the block's start and end, read from
      /proc/PID/smaps_rollup, and end minus start; start_processes, end_processes: {pid: PSS}.
    breakdown: [(category, PSS)] of memlens's ledger nearest its peak, largest first;
      breakdown_note: memlens's words about that ledger (at the peak or how far from it).
    processes: the report's processes (pid, cmdline, vm_hwm, peak_pss, ...).
    findings: memlens's findings at that ledger; notes: what else a reader should know.
    report: the whole `memlens record --json` report.
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def describe(self):
        """The figures in words, one per line (what a failure shows)."""
        lines = []
        if self.peak_source == "vm_hwm":
            lines.append(
                "peak: %s, the VmHWM of pid %d (%s): the kernel's exact high-water mark of its "
                "resident memory, reached during the block"
                % (format_size(self.peak), self.peak_pid, escape(self.peak_cmdline or ""))
            )
        else:
            lines.append(
                "peak: %s, the tree's PSS read by memlens for every process at one moment "
                "(%d reads: sampled, a moment between reads can be missed)"
                % (format_size(self.peak), self.pss_reads)
            )
        if self.pss_peak is not None:
            lines.append(
                "tree PSS: highest read %s (%d reads)"
                % (format_size(self.pss_peak), self.pss_reads)
            )
        lines.append(
            "growth: %s (tree PSS %s at the start, %s at the end)"
            % (format_delta(self.growth), format_size(self.start_pss), format_size(self.end_pss))
        )
        if self.breakdown:
            lines.append("memlens's ledger nearest the peak (%s):" % self.breakdown_note)
            for category, pss in self.breakdown[:_BREAKDOWN_ROWS]:
                lines.append("  %-18s %10s" % (category, format_size(pss)))
        elif self.breakdown_note:
            lines.append("memlens's breakdown: %s" % self.breakdown_note)
        if len(self.processes) > 1:
            lines.append("processes:")
            for p in self.processes:
                lines.append(
                    "  pid %-7s VmHWM %10s  peak PSS %10s  %s"
                    % (
                        p.get("pid"),
                        format_size(p.get("vm_hwm")),
                        format_size(p.get("peak_pss")),
                        escape(p.get("cmdline") or p.get("name") or ""),
                    )
                )
        for f in self.findings:
            lines.append("- " + escape(f))
        for n in self.notes:
            lines.append("note: " + n)
        return "\n".join(lines)


class limit(object):
    """Context manager and decorator: records the calling process and its children (the
    tree) while the block runs and raises MemoryBudgetExceeded when the block's peak is over
    `max_peak` or its growth over `max_growth` (sizes as memlens reads them: "200MiB", "1.5G",
    an int of bytes). Without budgets it only measures: `.measurement` holds the figures
    after the block.

    interval, cpu_budget: memlens record's --interval and --cpu-budget (strings as memlens
    reads them); python=False: --no-python (no Python view, no pauses of this process).
    reset_peak (default True): reset this process's VmHWM at the start (clear_refs), so that
    its exact high-water mark covers the block alone; this also lowers what the process's own
    ru_maxrss reports afterwards. recording=PATH keeps the recording there (a path memlens may
    create: it must not exist); by default it goes to a temporary directory that is removed.
    timeout: seconds to wait for memlens record to start, and to finish once stopped.
    """

    def __init__(
        self,
        max_peak=None,
        max_growth=None,
        interval=None,
        cpu_budget=None,
        python=True,
        reset_peak=True,
        recording=None,
        timeout=60.0,
    ):
        self._kwargs = dict(
            max_peak=max_peak,
            max_growth=max_growth,
            interval=interval,
            cpu_budget=cpu_budget,
            python=python,
            reset_peak=reset_peak,
            recording=recording,
            timeout=timeout,
        )
        self.max_peak = None if max_peak is None else parse_size(max_peak)
        self.max_growth = None if max_growth is None else parse_size(max_growth)
        self.extra_args = []
        if interval is not None:
            self.extra_args += ["--interval", str(interval)]
        if cpu_budget is not None:
            self.extra_args += ["--cpu-budget", str(cpu_budget)]
        if not python:
            self.extra_args.append("--no-python")
        self.reset_peak = reset_peak
        self.recording = recording
        self.timeout = timeout
        self.measurement = None
        self._rec = None

    # -- decorator ------------------------------------------------------------------------
    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with limit(**self._kwargs):
                return func(*args, **kwargs)

        return wrapper

    # -- context manager ------------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            # The block's own exception goes on; a failure to measure is only a warning then.
            try:
                self.stop()
            except MemlensError as e:
                warnings.warn("memlens.limit: %s" % e, RuntimeWarning)
            return False
        self.stop()
        self.check()
        return False

    # -- the steps, for callers that cannot use a with-block (the pytest plugin) ------------
    def start(self):
        """Starts recording (returns when memlens record follows the tree)."""
        if self._rec is not None:
            raise RuntimeError("this memlens.limit is already running")
        self.measurement = None
        self._pid = os.getpid()
        self._notes = []
        self._whole_life = set()
        if self.reset_peak:
            why = _proc.reset_peak()
            if why is None:
                self._whole_life.add(self._pid)
            else:
                self._notes.append(
                    "the VmHWM of pid %d could not be reset (%s): it counts only where it rose "
                    "during the block" % (self._pid, why)
                )
        self._tmpdir = None
        if self.recording is not None:
            path = os.path.abspath(self.recording)
        else:
            self._tmpdir = tempfile.mkdtemp(prefix="memlens-limit-")
            path = os.path.join(self._tmpdir, RECORDING_NAME)
        self._path = path
        try:
            self._rec = _Recorder(self._pid, path, self.extra_args)
            self._rec.wait_ready(self.timeout)
        except BaseException:
            self._rec = None
            self._cleanup()
            raise
        if self._rec.note is not None:
            self._notes.append(self._rec.note)
        # The block starts now: the tree's figures at its start (memlens's helper left out).
        helper = {self._rec.pid}
        pids = [self._pid] + _proc.descendants(self._pid, exclude=helper)
        self._start_hwm = dict((p, _proc.vm_hwm(p)) for p in pids)
        self._start_pss = dict((p, _proc.pss(p)) for p in pids)
        self._t0 = time.monotonic()
        return self

    def stop(self):
        """Stops recording and computes the measurement (returns it)."""
        rec = self._rec
        if rec is None:
            raise RuntimeError("this memlens.limit is not running")
        self._rec = None
        try:
            duration = time.monotonic() - self._t0
            pids = [self._pid] + _proc.descendants(self._pid, exclude={rec.pid})
            end_pss = dict((p, _proc.pss(p)) for p in pids)
            report = rec.stop(self.timeout)
        except BaseException:
            if rec.proc.poll() is None:
                rec.kill()
            self._cleanup()
            raise
        self._cleanup()
        self.measurement = self._measure(report, end_pss, duration, rec.pid)
        return self.measurement

    def check(self):
        """Raises MemoryBudgetExceeded when a budget is exceeded (after stop)."""
        v = self.violation()
        if v is not None:
            raise v

    def violation(self):
        """The MemoryBudgetExceeded to raise, or None."""
        m = self.measurement
        if m is None:
            return None
        if self.max_peak is not None and m.peak > self.max_peak:
            head = "memlens: the peak, %s, is over the budget max_peak=%s (by %s)" % (
                format_size(m.peak),
                format_size(self.max_peak),
                format_size(m.peak - self.max_peak),
            )
            return MemoryBudgetExceeded(
                head + "\n" + m.describe(), m, "max_peak", self.max_peak, m.peak
            )
        if self.max_growth is not None and m.growth > self.max_growth:
            head = "memlens: the growth, %s, is over the budget max_growth=%s (by %s)" % (
                format_delta(m.growth),
                format_size(self.max_growth),
                format_size(m.growth - self.max_growth),
            )
            changes = []
            for pid in sorted(set(m.start_processes) | set(m.end_processes)):
                a = m.start_processes.get(pid) or 0
                b = m.end_processes.get(pid) or 0
                if a != b:
                    changes.append((b - a, pid, a, b))
            lines = [head, m.describe(), "tree PSS by process (start -> end):"]
            for d, pid, a, b in sorted(changes, reverse=True)[:_BREAKDOWN_ROWS]:
                lines.append(
                    "  pid %-7d %s (%s -> %s)  %s"
                    % (
                        pid,
                        format_delta(d),
                        format_size(a),
                        format_size(b),
                        escape(_proc.cmdline(pid)),
                    )
                )
            return MemoryBudgetExceeded(
                "\n".join(lines), m, "max_growth", self.max_growth, m.growth
            )
        return None

    # -- internals -------------------------------------------------------------------------
    def _cleanup(self):
        """Removes the temporary directory and the recording files memlens made in it, and
        nothing else: anything else found there is left, with a warning."""
        if self._tmpdir is None:
            return
        for suffix in _COMPANIONS:
            try:
                os.unlink(os.path.join(self._tmpdir, RECORDING_NAME + suffix))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self._tmpdir)
        except OSError as e:
            warnings.warn(
                "memlens.limit: left %s in place (%s)" % (self._tmpdir, e.strerror),
                RuntimeWarning,
            )
        self._tmpdir = None

    def _measure(self, report, end_pss, duration, helper):
        notes = list(self._notes)
        processes = []
        counted = []
        for p in report.get("processes") or []:
            pid = p.get("pid")
            if pid == helper:
                notes.append(
                    "this memlens records itself as part of the tree (an older memlens): its "
                    "own memory is in the PSS figures"
                )
                continue
            processes.append(p)
            hwm = p.get("vm_hwm") or 0
            if pid in self._whole_life or pid not in self._start_hwm:
                counted.append(p)  # its high-water mark covers the block alone
            elif self._start_hwm[pid] is not None and hwm > self._start_hwm[pid]:
                counted.append(p)  # it rose during the block: reached then
        peak_info = report.get("peak") or {}
        pss_peak = peak_info.get("pss")
        best = max(counted, key=lambda p: p.get("vm_hwm") or 0) if counted else None
        if best is not None and (best.get("vm_hwm") or 0) >= (pss_peak or 0):
            peak, source = best.get("vm_hwm") or 0, "vm_hwm"
            peak_pid, peak_cmdline = best.get("pid"), best.get("cmdline") or best.get("name")
        elif pss_peak is not None:
            peak, source, peak_pid, peak_cmdline = pss_peak, "pss", None, None
        else:
            raise MemlensError(
                "the recording holds no figure of the block: memlens never read the tree's "
                "PSS and no process's high-water mark rose during it"
            )
        for w in report.get("warnings") or []:
            notes.append("memlens: " + escape(w))
        if peak_info.get("bytes") is not None and peak_info["bytes"] > peak:
            notes.append(
                "memlens's own peak of the recording, %s, is a high-water mark reached before "
                "the block; the breakdown is memlens's ledger nearest that figure"
                % format_size(peak_info["bytes"])
            )
        ledger = report.get("ledger_at_peak")
        bd = report.get("breakdown")
        sums = {}
        findings = []
        if ledger:
            for proc in ledger.get("processes") or []:
                for row in proc.get("ledger") or []:
                    sums[row["category"]] = sums.get(row["category"], 0) + (row.get("pss") or 0)
            findings = list(ledger.get("findings") or [])
        breakdown = sorted(sums.items(), key=lambda kv: -kv[1])
        if bd:
            note = bd.get("note") or (
                "ledger at %.2f s, %s"
                % (
                    bd.get("t_seconds") or 0,
                    "at the peak" if bd.get("at_peak") else "not at the peak",
                )
            )
        else:
            note = "no ledger was taken" if not ledger else ""
        start_total = sum(v for v in self._start_pss.values() if v)
        end_total = sum(v for v in end_pss.values() if v)
        return Measurement(
            peak=peak,
            peak_source=source,
            peak_pid=peak_pid,
            peak_cmdline=peak_cmdline,
            pss_peak=pss_peak,
            pss_reads=peak_info.get("pss_reads") or 0,
            start_pss=start_total,
            end_pss=end_total,
            growth=end_total - start_total,
            start_processes=dict(self._start_pss),
            end_processes=end_pss,
            duration=duration,
            breakdown=breakdown,
            breakdown_note=note,
            processes=processes,
            findings=findings,
            notes=notes,
            report=report,
        )
