"""Peer for the full ledger: psutil's per-mapping breakdown of a whole process tree.

usage: psutil_maps.py ROOT_PID
Finds ROOT_PID and all its descendants, reads `memory_maps(grouped=False)` (every mapping
of /proc/PID/smaps) for each, and prints one JSON object: per process the mapping count and
the RSS/PSS/USS/swap sums in bytes, and the tree's PSS total.
"""
import json
import sys

import psutil


def main():
    root = psutil.Process(int(sys.argv[1]))
    out = {"processes": [], "pss": 0}
    for proc in [root] + root.children(recursive=True):
        try:
            maps = proc.memory_maps(grouped=False)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        row = {"pid": proc.pid, "mappings": len(maps),
               "rss": sum(m.rss for m in maps), "pss": sum(m.pss for m in maps),
               "uss": sum(m.private_clean + m.private_dirty for m in maps),
               "swap": sum(m.swap for m in maps)}
        out["processes"].append(row)
        out["pss"] += row["pss"]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
