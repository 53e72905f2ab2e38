"""memlens.limit(): the block's peak and growth against sizes known by construction and the
kernel's own figures (VmHWM read by the block itself, a child's VmHWM read by the child)."""

import gc
import glob
import os
import subprocess
import sys
import tempfile

import pytest

import memlens
from memlens import _proc

MiB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def collected():
    # pytest.raises keeps the test's frame (and what it held) in a reference cycle: freed
    # here, so that each test starts with only what the process holds anyway.
    gc.collect()


def touched(n_mib):
    """n_mib MiB of memory written (resident), by construction."""
    return b"\x01" * (n_mib * MiB)


def own_hwm():
    return _proc.vm_hwm(os.getpid())


def limit_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "memlens-limit-*")))


def test_over_the_peak_budget_raises_with_memlens_explanation():
    with pytest.raises(memlens.MemoryBudgetExceeded) as e:
        with memlens.limit(max_peak="100MiB"):
            data = touched(200)
            hwm = own_hwm()
    exc = e.value
    m = exc.measurement
    assert hwm >= 200 * MiB
    assert (exc.budget, exc.limit, exc.value, exc.exit_code) == ("max_peak", 100 * MiB, m.peak, 7)
    assert isinstance(exc, memlens.MemlensError)
    # The kernel's high-water mark of this process, reset at the block's start: the peak.
    assert m.peak_source == "vm_hwm" and m.peak_pid == os.getpid()
    assert hwm <= m.peak <= hwm + 16 * MiB
    text = str(exc)
    assert "the peak, %s, is over the budget max_peak=100 MiB" % memlens.format_size(m.peak) in text
    assert "VmHWM of pid %d" % os.getpid() in text
    assert "breakdown" in text
    assert len(data) == 200 * MiB


def test_under_budget_measures_peak_and_growth():
    with memlens.limit(max_peak="8GiB") as lim:
        kept = touched(64)
    m = lim.measurement
    assert m.peak >= 64 * MiB
    # 64 MiB written and still held at the end: the tree's PSS grew by that much.
    assert 60 * MiB <= m.growth <= 72 * MiB, m.describe()
    assert m.end_pss - m.start_pss == m.growth
    assert m.report["mode"] == "record" and m.report["complete"] is True
    assert len(kept) == 64 * MiB


def test_over_the_growth_budget_raises():
    keep = []
    with pytest.raises(memlens.MemoryBudgetExceeded) as e:
        with memlens.limit(max_growth="32MiB"):
            keep.append(touched(64))
    assert e.value.budget == "max_growth"
    assert 60 * MiB <= e.value.value <= 72 * MiB
    assert "the growth, +" in str(e.value) and "max_growth=32.0 MiB" in str(e.value)
    assert "pid %d" % os.getpid() in str(e.value)


def test_a_child_process_counts():
    # This process stays far below the budget; its child holds 150 MiB.
    with pytest.raises(memlens.MemoryBudgetExceeded) as e:
        with memlens.limit(max_peak="120MiB"):
            child = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "child_alloc.py"), "150"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            child_hwm = int(child.stdout.readline())
            own = own_hwm()
    child.stdin.close()
    child.wait()
    m = e.value.measurement
    assert own < 120 * MiB
    assert child_hwm >= 150 * MiB
    # The tree's peak is at least the child's own high-water mark (the tree's PSS, this
    # process's included, may be above it), and the child is in the explanation.
    assert m.peak >= child_hwm
    (recorded,) = [p for p in m.processes if p["pid"] == child.pid]
    assert recorded["vm_hwm"] >= child_hwm
    assert "pid %s" % child.pid in str(e.value)


@pytest.mark.parametrize("reset", [True, False])
def test_a_high_water_mark_from_before_the_block_is_not_its_peak(reset):
    data = touched(300)
    del data
    assert own_hwm() >= 300 * MiB
    with memlens.limit(reset_peak=reset) as lim:
        small = touched(4)
    m = lim.measurement
    assert m.peak < 200 * MiB, m.describe()
    assert len(small) == 4 * MiB
    if reset:
        assert own_hwm() < 300 * MiB  # the documented side effect
    else:
        assert own_hwm() >= 300 * MiB
        assert m.peak_source == "pss"


def test_decorator_records_each_call():
    @memlens.limit(max_peak="8GiB")
    def allocate(n):
        return len(touched(n))

    assert allocate(1) == MiB
    assert allocate(2) == 2 * MiB

    @memlens.limit(max_peak="100MiB")
    def too_much():
        return len(touched(200))

    with pytest.raises(memlens.MemoryBudgetExceeded):
        too_much()


def test_the_block_exception_wins_and_nothing_is_left_behind():
    before = limit_dirs()
    with pytest.raises(ZeroDivisionError):
        with memlens.limit(max_peak="1B"):
            1 / 0
    with memlens.limit():
        pass
    assert limit_dirs() == before


def test_a_kept_recording_reads_back(tmp_path):
    path = tmp_path / "block.db"
    with memlens.limit(recording=str(path)) as lim:
        touched(8)
    assert path.is_file()
    report = memlens._binary.run_json(["report", str(path), "--json"])
    assert report["peak"]["pss"] == lim.measurement.pss_peak


def test_an_existing_recording_path_is_refused(tmp_path):
    path = tmp_path / "taken.db"
    path.write_text("not mine")
    with pytest.raises(memlens.OutputError) as e:
        with memlens.limit(recording=str(path)):
            pass
    assert e.value.exit_code == 8
    assert path.read_text() == "not mine"
