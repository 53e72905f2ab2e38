"""The memlens pytest plugin (entry point `pytest11`, loaded when the memlens wheel is
installed): memory budgets per test, a table of the largest peaks, and regressions against a
stored baseline. docs/python.md has the options and what each figure is.

- `@pytest.mark.memlens(max_peak="200MiB", max_growth="10MiB")`: the test's call is run under
  memlens.limit(); going over a budget fails the test with memlens's explanation.
- `--memlens`: every test is measured; the terminal summary lists the largest peaks.
- `--memlens-fail-on-increase`: every test is measured and compared with the baseline file
  (`--memlens-baseline PATH`, default `.memlens-baseline.json` in the rootdir); a test whose
  peak grew by more than `--memlens-threshold` (default 10%, or a size such as 16MiB) fails.
  When the file does not exist it is written at the end of the run (and nothing fails);
  `--memlens-update-baseline` rewrites it with this run's figures.

Only the test's call is measured (fixtures' setup and teardown are not). Under pytest-xdist
each worker measures its tests and compares them with the baseline, but no worker writes the
baseline (each holds part of the tests) and the summary table is not shown.
"""

import json
import os

import pytest

from ._binary import find_binary
from ._errors import MemlensError
from ._limit import limit
from ._text import escape, format_delta, format_size, parse_size

BASELINE_NAME = ".memlens-baseline.json"
BASELINE_FORMAT = 1


def pytest_addoption(parser):
    group = parser.getgroup("memlens", "memory of each test, measured by memlens")
    group.addoption(
        "--memlens",
        action="store_true",
        default=False,
        help="measure every test's memory (its process tree, children included) with memlens "
        "and list the largest peaks at the end",
    )
    group.addoption(
        "--memlens-top",
        type=int,
        default=10,
        metavar="N",
        help="tests listed in memlens's summary (default 10; 0 for all)",
    )
    group.addoption(
        "--memlens-fail-on-increase",
        action="store_true",
        default=False,
        help="fail a test whose peak grew by more than --memlens-threshold over the baseline "
        "file; the file is written when it does not exist",
    )
    group.addoption(
        "--memlens-baseline",
        default=None,
        metavar="PATH",
        help="the baseline file (default: %s in the rootdir)" % BASELINE_NAME,
    )
    group.addoption(
        "--memlens-threshold",
        default="10%",
        metavar="PCT|SIZE",
        help="how much a peak may grow over its baseline before the test fails: a percentage "
        "of the baseline peak (10%%, the default) or a size (16MiB)",
    )
    group.addoption(
        "--memlens-update-baseline",
        action="store_true",
        default=False,
        help="write this run's peaks to the baseline file, replacing it",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "memlens(max_peak=None, max_growth=None): fail the test when its process tree's peak "
        "(memlens) is over max_peak, or its PSS grew by more than max_growth over the call "
        '(sizes such as "200MiB")',
    )
    config.pluginmanager.register(MemlensPlugin(config), "memlens-plugin")


def parse_threshold(text):
    """("pct", fraction) or ("bytes", n) from "10%" or "16MiB"."""
    t = str(text).strip()
    if t.endswith("%"):
        try:
            pct = float(t[:-1])
        except ValueError:
            pct = -1.0
        if not (0 <= pct <= 10000):
            raise ValueError("not a threshold: a percentage from 0% to 10000%, or a size")
        return ("pct", pct / 100.0)
    return ("bytes", parse_size(t))


def threshold_bytes(threshold, base_peak):
    kind, value = threshold
    return int(base_peak * value) if kind == "pct" else value


class MemlensPlugin(object):
    def __init__(self, config):
        self.config = config
        opt = config.option
        self.measure_all = (
            opt.memlens or opt.memlens_fail_on_increase or opt.memlens_update_baseline
        )
        if self.measure_all:
            try:
                find_binary()
            except MemlensError as e:
                raise pytest.UsageError("--memlens: %s" % e)
        self.top = opt.memlens_top
        self.results = {}  # nodeid -> Measurement
        self.failures = {}  # nodeid -> explanation
        self.errors = {}  # nodeid -> why it could not be measured
        self.baseline = None
        self.write_baseline = False
        self.baseline_written = None
        self.compare = opt.memlens_fail_on_increase
        try:
            self.threshold = parse_threshold(opt.memlens_threshold)
        except ValueError as e:
            raise pytest.UsageError("--memlens-threshold %s: %s" % (opt.memlens_threshold, e))
        path = opt.memlens_baseline or os.path.join(str(config.rootdir), BASELINE_NAME)
        self.baseline_path = os.path.abspath(path)
        self.worker = getattr(config, "workerinput", None) is not None  # pytest-xdist
        if opt.memlens_fail_on_increase or opt.memlens_update_baseline:
            if os.path.exists(self.baseline_path) and not opt.memlens_update_baseline:
                self.baseline = self._load(self.baseline_path)
            else:
                self.write_baseline = not self.worker

    @staticmethod
    def _load(path):
        try:
            with open(path) as f:
                data = json.load(f)
            tests = data["tests"]
            if data.get("memlens_baseline") != BASELINE_FORMAT or not isinstance(tests, dict):
                raise ValueError("not a memlens baseline of format %d" % BASELINE_FORMAT)
            return dict((k, int(v["peak"])) for k, v in tests.items())
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise pytest.UsageError("--memlens-baseline %s: cannot be read: %s" % (path, e))

    def _budgets(self, item):
        marker = item.get_closest_marker("memlens")
        if marker is None:
            return None
        if marker.args:
            raise ValueError("the memlens marker takes keywords only (max_peak=, max_growth=)")
        unknown = set(marker.kwargs) - {"max_peak", "max_growth"}
        if unknown:
            raise ValueError("unknown memlens marker keyword(s): %s" % ", ".join(sorted(unknown)))
        return marker.kwargs

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        lim = None
        try:
            budgets = self._budgets(item)
            if budgets is not None or self.measure_all:
                lim = limit(**(budgets or {}))
                lim.start()
        except (ValueError, MemlensError) as e:
            self.failures[item.nodeid] = "memlens: %s" % e
            lim = None
        yield
        if lim is None:
            return
        try:
            m = lim.stop()
        except MemlensError as e:
            self.failures[item.nodeid] = "memlens: the test could not be measured: %s" % e
            return
        self.results[item.nodeid] = m
        v = lim.violation()
        text = v.message if v is not None else None
        if text is None and self.compare and self.baseline is not None:
            text = self._increase(item.nodeid, m)
        if text is not None:
            self.failures[item.nodeid] = text

    def _increase(self, nodeid, m):
        base = self.baseline.get(nodeid)
        if base is None:
            return None
        allowed = threshold_bytes(self.threshold, base)
        if m.peak <= base + allowed:
            return None
        return (
            "memlens: the peak, %s, grew by %s over the baseline's %s (%s), more than the "
            "threshold %s (--memlens-threshold %s)\n%s"
            % (
                format_size(m.peak),
                format_delta(m.peak - base),
                format_size(base),
                escape(self.baseline_path),
                format_size(allowed),
                self.config.option.memlens_threshold,
                m.describe(),
            )
        )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if call.when != "call":
            return
        text = self.failures.pop(item.nodeid, None)
        if text is None:
            return
        report = outcome.get_result()
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
        else:
            # The test failed on its own: memlens's finding goes beside its error.
            report.sections.append(("memlens", text))

    def pytest_sessionfinish(self, session):
        if self.write_baseline and self.results:
            tests = dict(
                (nodeid, {"peak": m.peak, "growth": m.growth})
                for nodeid, m in sorted(self.results.items())
            )
            data = {"memlens_baseline": BASELINE_FORMAT, "tests": tests}
            tmp = "%s.%d.tmp" % (self.baseline_path, os.getpid())
            # Created exclusively (never through a link or over another file), then renamed.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.baseline_path)
            self.baseline_written = len(tests)

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        if not self.results and self.baseline_written is None:
            return
        rows = sorted(self.results.items(), key=lambda kv: -kv[1].peak)
        shown = rows if self.top <= 0 else rows[: self.top]
        tr.write_sep(
            "=",
            "memlens: largest peaks (%d of %d tests measured)" % (len(shown), len(rows)),
        )
        compare = self.baseline is not None
        head = "%10s %11s %7s" % ("peak", "growth", "source")
        if compare:
            head += " %10s %11s" % ("baseline", "change")
        tr.write_line(head + "  test")
        for nodeid, m in shown:
            line = "%10s %11s %7s" % (
                format_size(m.peak),
                format_delta(m.growth),
                "vm_hwm" if m.peak_source == "vm_hwm" else "pss",
            )
            if compare:
                base = self.baseline.get(nodeid)
                line += " %10s %11s" % (
                    format_size(base) if base is not None else "none",
                    format_delta(m.peak - base) if base is not None else "",
                )
            tr.write_line(line + "  " + escape(nodeid))
        tr.write_line(
            "peak: the tree's peak during the test's call (VmHWM reached then, or PSS read by "
            "memlens); growth: the tree's PSS at the end minus at the start"
        )
        if self.baseline_written is not None:
            tr.write_line(
                "memlens: wrote the baseline %s (%d tests)"
                % (escape(self.baseline_path), self.baseline_written)
            )
