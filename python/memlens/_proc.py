"""The few /proc figures limit() reads itself, at the block's two ends: the calling process's
live descendants, each process's PSS (smaps_rollup, the file memlens reads for its PSS rounds)
and its VmHWM (status). Each read is of the kernel at that moment; a process that exits while
read is left out."""

import os


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _has_children_files():
    return os.path.exists("/proc/self/task/%d/children" % os.getpid())


def children_of(pid):
    """PIDs of the children of `pid`: every thread's `children` file (a child belongs to the
    thread that forked it)."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return []
    found = []
    for tid in tids:
        try:
            data = _read("/proc/%d/task/%s/children" % (pid, tid))
        except OSError:
            continue  # the thread has exited
        found.extend(int(x) for x in data.split())
    return found


def _children_by_scan():
    """{ppid: [pid, ...]} from every /proc/PID/stat (when `children` files are missing)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = _read("/proc/%s/stat" % name)
        except OSError:
            continue
        # The fields after the command's closing parenthesis: state, ppid, ...
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) > 1:
            table.setdefault(int(rest[1]), []).append(int(name))
    return table


def descendants(root, exclude=()):
    """Live descendants of `root` (not `root` itself), depth first, leaving out the PIDs of
    `exclude` and their own descendants (memlens's helpers)."""
    out = []
    # Without `children` files (CONFIG_PROC_CHILDREN off), one scan of every process's stat.
    table = None if _has_children_files() else _children_by_scan()
    stack = [root]
    while stack:
        pid = stack.pop()
        kids = children_of(pid) if table is None else table.get(pid, [])
        for kid in kids:
            if kid in exclude or kid in out:
                continue
            out.append(kid)
            stack.append(kid)
    return out


def _kib_field(data, key):
    for line in data.splitlines():
        if line.startswith(key):
            parts = line.split()
            if len(parts) >= 2:
                return int(parts[1]) * 1024
    return None


def pss(pid):
    """PSS of `pid` in bytes (smaps_rollup; the sum over smaps on kernels before 4.14), or
    None when the process is gone or unreadable."""
    try:
        return _kib_field(_read("/proc/%d/smaps_rollup" % pid), b"Pss:") or 0
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        data = _read("/proc/%d/smaps" % pid)
    except OSError:
        return None
    return sum(
        int(line.split()[1]) * 1024 for line in data.splitlines() if line.startswith(b"Pss:")
    )


def vm_hwm(pid):
    """VmHWM of `pid` in bytes (the kernel's high-water mark of its RSS), or None when gone
    (or a zombie, whose memory is already released)."""
    try:
        return _kib_field(_read("/proc/%d/status" % pid), b"VmHWM:")
    except OSError:
        return None


def cmdline(pid):
    """The command line of `pid`, arguments joined by spaces ("" when unreadable)."""
    try:
        data = _read("/proc/%d/cmdline" % pid)
    except OSError:
        return ""
    return " ".join(a.decode("utf-8", "replace") for a in data.split(b"\0") if a)


def reset_peak():
    """Resets this process's VmHWM to its current RSS (writes 5 to /proc/self/clear_refs,
    Linux 4.0+). Returns None, or why it could not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        return e.strerror or str(e)
    return None
