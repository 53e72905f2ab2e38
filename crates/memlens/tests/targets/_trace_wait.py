"""Waiting for the tracer's next snapshot, for the targets run under `memlens run --trace`
(trace_fork.py, trace_truth.py import it from their own directory, sys.path[0]).

TRACE is MEMLENS_TRACE_OUT, the root process's trace file (None without the tracer: then
there is nothing to wait for); a forked process writes its own, `TRACE.PID` (own_trace()).
"""
import os
import sys
import time

TRACE = os.environ.get("MEMLENS_TRACE_OUT")


def own_trace():
    """The trace file of this forked process (None without the tracer)."""
    return "%s.%d" % (TRACE, os.getpid()) if TRACE else None


def snaps(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.startswith(b"snap "))
    except FileNotFoundError:
        return 0


def next_snapshot(path, poke=4096):
    """Under the tracer (`path` not None): returns once it appended a `snap` line to `path`
    after this call (it writes them from allocating hooks, once a period: a temporary of
    `poke` bytes is allocated meanwhile; sampled, one large enough to be sampled often)."""
    if path is None:
        return
    n0 = snaps(path)
    deadline = time.monotonic() + 120
    while snaps(path) <= n0:
        if time.monotonic() > deadline:
            sys.stderr.write("no tracer snapshot in 120 s: %s\n" % path)
            os._exit(90)
        bytearray(poke)
        time.sleep(0.002)
