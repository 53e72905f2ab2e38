"""Peer for `memlens ps`: a psutil `memory_full_info()` loop over the host's Python processes.

usage: psutil_totals.py
A process counts as Python when its name or executable's base name starts with "python".
Prints one JSON object mapping each PID to its RSS/PSS/USS/swap in bytes (psutil reads
/proc/PID/smaps_rollup for these when the kernel has it).
"""
import json
import os
import sys

import psutil


def is_python(info):
    names = (info.get("name") or "", os.path.basename(info.get("exe") or ""))
    return any(n.startswith("python") for n in names)


def main():
    out = {}
    for proc in psutil.process_iter(["name", "exe"]):
        if not is_python(proc.info):
            continue
        try:
            m = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[proc.pid] = {"rss": m.rss, "pss": m.pss, "uss": m.uss, "swap": m.swap}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
