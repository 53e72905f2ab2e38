"""Forked workers that copy a known part of their parent's memory step by step
(tests/it/sharing_over_time.rs).

Usage: cow_steps.py HEAP_MIB STEP_MIB WORKERS ZERO_MIB
  The parent maps HEAP_MIB of a memfd privately (ledger category shared-memory: nothing else
  of a plain Python falls there) and writes every page. It maps ZERO_MIB of anonymous memory
  privately, writes the first half and only reads the second half (the kernel's zero page).
  Then it forks WORKERS. Each line "step" on stdin makes every worker write every page of its
  next STEP_MIB of the memfd region (a copy each: page-aligned by construction).
  After the fork and after each step, once every worker is done, the parent reads its own and
  each worker's /proc/PID/pagemap over the region (the kernel's ground truth) and prints
  "TRUTH k pid:shared:copied ..." (bytes; k steps done), the first time followed by READY.
  Prints "PARENT pid" and "WORKERS pid ..." first. Everyone exits when stdin closes.
"""
import mmap
import os
import struct
import sys

PAGE = mmap.PAGESIZE
heap = int(sys.argv[1]) << 20
step = int(sys.argv[2]) << 20
workers = int(sys.argv[3])
zero = int(sys.argv[4]) << 20

fd = os.memfd_create("memlens-cow-steps")
os.ftruncate(fd, heap)
region = mmap.mmap(fd, heap, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
if hasattr(mmap, "MADV_NOHUGEPAGE"):
    region.madvise(mmap.MADV_NOHUGEPAGE)
for i in range(0, heap, PAGE):
    region[i] = 1
if zero:
    anon = mmap.mmap(-1, zero, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        anon.madvise(mmap.MADV_NOHUGEPAGE)
    total = 0
    for i in range(0, zero // 2, PAGE):
        anon[i] = 1
    for i in range(zero // 2, zero, PAGE):
        total += anon[i]
    assert total == 0


def region_start(pid):
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            if "/memfd:memlens-cow-steps" in line:
                return int(line.split("-")[0], 16)
    raise SystemExit("region not mapped in %d" % pid)


def frames(pid, start):
    with open("/proc/%d/pagemap" % pid, "rb") as f:
        f.seek(start // PAGE * 8)
        data = f.read(heap // PAGE * 8)
    out = []
    for (v,) in struct.iter_unpack("<Q", data):
        present = v >> 63
        frame = v & ((1 << 55) - 1)
        out.append(frame if present and frame else None)
    return out


def truth(pids):
    start = region_start(os.getpid())
    mine = frames(os.getpid(), start)
    parts = []
    for pid in pids:
        assert region_start(pid) == start
        shared = copied = 0
        for a, b in zip(mine, frames(pid, start)):
            if a is not None and b is not None:
                if a == b:
                    shared += PAGE
                else:
                    copied += PAGE
        parts.append("%d:%d:%d" % (pid, shared, copied))
    return " ".join(parts)


acks_r, acks_w = os.pipe()
pids, commands = [], []
for _ in range(workers):
    cmd_r, cmd_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(acks_r)
        os.close(cmd_w)
        done = 0
        while True:
            if not os.read(cmd_r, 1):
                os._exit(0)
            for i in range(done, min(done + step, heap), PAGE):
                region[i] = 2
            done += step
            os.write(acks_w, b"x")
    os.close(cmd_r)
    pids.append(pid)
    commands.append(cmd_w)
os.close(acks_w)
print("PARENT %d" % os.getpid(), flush=True)
print("WORKERS " + " ".join(map(str, pids)), flush=True)
print("TRUTH 0 " + truth(pids), flush=True)
print("READY", flush=True)
k = 0
for line in sys.stdin:
    if line.strip() != "step":
        continue
    for c in commands:
        os.write(c, b"s")
    got = 0
    while got < workers:
        b = os.read(acks_r, workers)
        if not b:
            raise SystemExit("a worker exited early")
        got += len(b)
    k += 1
    print("TRUTH %d %s" % (k, truth(pids)), flush=True)
for c in commands:
    os.close(c)
for pid in pids:
    os.waitpid(pid, 0)
