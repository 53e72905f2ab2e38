"""memlens.snapshot() and memlens.census() of the calling process itself, against what the
kernel and the interpreter say."""

import json
import os
import platform
import subprocess
import sys

import memlens
from memlens import _binary, _proc


class CensusMarker(object):
    pass


def test_snapshot_of_this_process():
    before = _proc.pss(os.getpid())
    snap = memlens.snapshot()
    after = _proc.pss(os.getpid())
    assert snap["root"] == os.getpid()
    (proc,) = snap["processes"]
    assert proc["pid"] == os.getpid()
    assert proc["ppid"] == os.getppid()
    # The ledger's rows add up to the process's totals, and its PSS is the kernel's (read
    # around the call: the process itself changes a little meanwhile).
    assert sum(row["pss"] for row in proc["ledger"]) == proc["totals"]["pss"]
    low, high = min(before, after), max(before, after)
    assert low * 0.9 <= proc["totals"]["pss"] <= high * 1.1, (low, proc["totals"], high)
    # The Python view of this interpreter was read from outside.
    assert proc["python"]["version"] == platform.python_version()


def test_snapshot_of_a_tree_leaves_memlens_itself_out():
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == b"ready\n"
        snap = memlens.snapshot(tree=True)
    finally:
        child.stdin.close()
        child.wait()
    pids = sorted(p["pid"] for p in snap["processes"])
    assert pids == sorted([os.getpid(), child.pid]), snap["processes"]
    assert snap["totals"]["pss"] == sum(p["totals"]["pss"] for p in snap["processes"])


def test_census_of_this_process_counts_instances_by_construction():
    held = [CensusMarker() for _ in range(50000)]
    report = memlens.census(top=0)
    rows = dict((t["type"], t) for t in report["types"])
    assert rows["CensusMarker"]["count"] == len(held)
    assert rows["CensusMarker"]["bytes"] == len(held) * sys.getsizeof(held[0])
    assert report["objects"] >= len(held)


def test_ptrace_permission_where_yama_is():
    scope = memlens.yama_ptrace_scope()
    why = _binary.allow_ptrace_by(os.getpid())
    if scope is None:
        # No Yama: the kernel has no PR_SET_PTRACER (EINVAL); none is needed.
        assert why is not None
    else:
        assert why is None


def test_the_gated_start_runs_memlens_under_its_own_pid(monkeypatch):
    # Yama's restricted mode is pretended: memlens starts behind the gate, is named with
    # PR_SET_PTRACER (which fails with EINVAL on a kernel without Yama, and says so), then
    # runs as the same PID and reads this process.
    monkeypatch.setattr(_binary, "yama_ptrace_scope", lambda: 1)
    argv = [memlens.find_binary(), "snapshot", str(os.getpid()), "--json"]
    proc, note = _binary.spawn(argv, True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out.decode())["root"] == os.getpid()
    if memlens.yama_ptrace_scope() is None:
        assert "PR_SET_PTRACER" in note
    else:
        assert note is None
