"""memlens from Python: the memlens binary installed with this package, called as a program.

    import memlens
    memlens.snapshot()              # the ledger of this process, as `memlens snapshot --json`
    memlens.census(pid)             # objects by type, as `memlens census --json`
    with memlens.limit(max_peak="200MiB"):
        ...                         # raises MemoryBudgetExceeded when the tree goes over

Every function runs the `memlens` executable (memlens.find_binary(): MEMLENS_BIN, this
environment's scripts directory, then PATH) and returns the JSON it prints (docs/json.md) as
dicts; a failure raises MemlensError carrying memlens's exit code and message. The API, what
each figure is, and the pytest plugin: docs/python.md.
"""

import os

from ._binary import find_binary, run_json, yama_ptrace_scope
from ._errors import (
    EXIT_CODES,
    AccessDenied,
    BinaryNotFound,
    InconsistentRead,
    MemlensError,
    MemoryBudgetExceeded,
    NoSuchProcess,
    OutputError,
    RecordingError,
    Unsupported,
    UsageError,
)
from ._limit import Measurement, limit
from ._text import format_size, parse_size

__all__ = [
    "snapshot",
    "census",
    "limit",
    "Measurement",
    "find_binary",
    "parse_size",
    "format_size",
    "yama_ptrace_scope",
    "EXIT_CODES",
    "MemlensError",
    "MemoryBudgetExceeded",
    "BinaryNotFound",
    "UsageError",
    "NoSuchProcess",
    "AccessDenied",
    "Unsupported",
    "RecordingError",
    "OutputError",
    "InconsistentRead",
]


def _target(pid):
    if pid is None:
        return os.getpid()
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError("pid must be a positive int or None (this process), not %r" % (pid,))
    return pid


def snapshot(pid=None, tree=False, packages=False, nonblocking=False, sharing=True):
    """`memlens snapshot PID --json` as a dict (docs/json.md, "snapshot").

    pid=None reads the calling process itself. tree: the process and its descendants
    (--tree); packages: memory per Python package (--packages, takes a census); nonblocking:
    never pause the target (--nonblocking, figures may be inexact); sharing=False:
    --no-sharing.
    """
    target = _target(pid)
    args = ["snapshot", target, "--json"]
    if tree:
        args.append("--tree")
    if packages:
        args.append("--packages")
    if nonblocking:
        args.append("--nonblocking")
    if not sharing:
        args.append("--no-sharing")
    return run_json(args, reads_self=target == os.getpid())


def census(pid=None, top=20, growth=None, nonblocking=False, max_memory=None):
    """`memlens census PID --json` as a dict (docs/json.md, "census").

    pid=None reads the calling process itself (it is paused while memlens copies its memory,
    which is fine: this call is waiting). top: rows kept (0 for all); growth: a duration as
    memlens reads it ("10s", or a number of seconds) between two censuses; nonblocking: never
    pause it; max_memory: memlens's own memory cap (a size, "256MiB").
    """
    target = _target(pid)
    args = ["census", target, "--json", "--top", int(top)]
    if growth is not None:
        args += ["--growth", growth if isinstance(growth, str) else "%gs" % growth]
    if nonblocking:
        args.append("--nonblocking")
    if max_memory is not None:
        args += ["--max-memory", "%d" % parse_size(max_memory)]
    return run_json(args, reads_self=target == os.getpid())
