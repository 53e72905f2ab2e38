"""Finding and running the `memlens` executable.

The binary is looked up in this order: the MEMLENS_BIN environment variable when it is set
(it must name an executable file); the scripts directory of the running Python's environment
(where `pip install` puts the wheel's `memlens`: the virtualenv's `bin/`, then the user scheme's);
then PATH.

Reading the calling process itself: memlens attaches to its target with ptrace to pause it for
a consistent read. Under Yama's ptrace_scope 1 ("restricted", /proc/sys/kernel/yama/ptrace_scope)
a process may be traced only by its ancestors or by a tracer it names with
prctl(PR_SET_PTRACER); memlens run as a child of the process it reads is neither, so the
package starts it held behind a one-line gate (/bin/sh reading its stdin, then exec: the PID
stays memlens's), names it with PR_SET_PTRACER, then lets it run. The kernel drops the
permission when that memlens exits. Without Yama (the file is absent), or with ptrace_scope 0,
the ordinary rule (same user) already lets a child read its parent and nothing is done; with
ptrace_scope 2 or 3 only a privileged tracer may attach and memlens says so (exit 4).
"""

import ctypes
import json
import os
import shutil
import subprocess
import sysconfig

from ._errors import BinaryNotFound, MemlensError, error_for

ENV_VAR = "MEMLENS_BIN"
YAMA_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"
PR_SET_PTRACER = 0x59616D61  # "Yama", linux/prctl.h
_GATE = 'read -r _ || exit 125; exec "$@" </dev/null'


def _is_executable(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _scripts_dirs():
    dirs = []
    try:
        dirs.append(sysconfig.get_path("scripts"))
    except (KeyError, ValueError):
        pass
    try:
        dirs.append(sysconfig.get_path("scripts", os.name + "_user"))
    except (KeyError, ValueError):
        pass
    return [d for d in dirs if d]


def find_binary():
    """The path of the memlens executable this package runs (see the module's doc)."""
    override = os.environ.get(ENV_VAR)
    if override:
        if _is_executable(override):
            return override
        raise BinaryNotFound(
            "%s is set to %r, which is not an executable file" % (ENV_VAR, override)
        )
    for d in _scripts_dirs():
        candidate = os.path.join(d, "memlens")
        if _is_executable(candidate):
            return candidate
    found = shutil.which("memlens")
    if found:
        return found
    raise BinaryNotFound(
        "the memlens executable was not found in this environment's scripts directory (%s) "
        "nor on PATH; install the memlens wheel (pip install memlens) or set %s"
        % (", ".join(_scripts_dirs()) or "unknown", ENV_VAR)
    )


def yama_ptrace_scope():
    """Yama's ptrace_scope (0-3), or None when the kernel has no Yama (the file is absent)."""
    try:
        with open(YAMA_SCOPE) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def allow_ptrace_by(pid):
    """prctl(PR_SET_PTRACER, pid): lets `pid` (and its descendants) ptrace this process under
    Yama's restricted mode. Returns None, or why it failed (errno's text)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError) as e:
        return "prctl is not available: %s" % e
    prctl.restype = ctypes.c_int
    zero = ctypes.c_ulong(0)
    rc = prctl(ctypes.c_int(PR_SET_PTRACER), ctypes.c_ulong(pid), zero, zero, zero)
    if rc != 0:
        return os.strerror(ctypes.get_errno())
    return None


def spawn(argv, reads_self, **popen_kwargs):
    """Starts `argv` (a memlens command line). When it will ptrace this process
    (`reads_self`) under Yama's restricted mode, it starts held and is let go once it may.

    Returns (Popen, note): note says why the permission could not be given, else None.
    """
    if not reads_self or yama_ptrace_scope() != 1:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, **popen_kwargs), None
    proc = subprocess.Popen(
        ["/bin/sh", "-c", _GATE, "memlens-gate"] + list(argv),
        stdin=subprocess.PIPE,
        **popen_kwargs
    )
    # The shell execs memlens: its PID is proc.pid, the tracer named here.
    note = allow_ptrace_by(proc.pid)
    try:
        proc.stdin.write(b"go\n")
        proc.stdin.close()
    except OSError:
        pass  # the shell is gone: its exit status says why
    proc.stdin = None  # closed: communicate() must not touch it
    if note is not None:
        note = "prctl(PR_SET_PTRACER, %d) failed: %s" % (proc.pid, note)
    return proc, note


def run_json(args, reads_self=False):
    """Runs `memlens ARGS` and returns its stdout parsed as JSON, or raises the MemlensError
    its exit code names, with memlens's message."""
    argv = [find_binary()] + [str(a) for a in args]
    proc, note = spawn(argv, reads_self, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    text = err.decode("utf-8", "replace")
    if proc.returncode != 0:
        e = error_for(proc.returncode, text, argv)
        if note is not None:
            e.message += "\n(%s)" % note
        raise e
    try:
        return json.loads(out.decode("utf-8", "replace"))
    except ValueError as e:
        raise MemlensError(
            "memlens printed output that is not JSON (%s): %r" % (e, out[:200]),
            exit_code=0,
            command=argv,
        )
