"""A 16-process tree for `memlens record`: the parent forks 15 workers; three of them hold
1 GiB, 1 GiB and 1.5 GiB of touched 4 KiB pages (bytes objects), the others 16-64 MiB. While
recorded, every process keeps changing a little: it rewrites a slice of its memory every 50 ms
(so RSS and PSS stay as they are, but the counters are live). Prints READY when all are
allocated, and exits when its stdin closes.
"""
import os
import sys
import time

SIZES_MIB = [1024, 1024, 1536] + [16, 24, 32, 48, 64] * 2 + [16, 32]  # 15 workers


def hold(mib, ready_fd):
    block = bytearray(mib << 20)
    for off in range(0, len(block), 4096):  # touch every page: 4 KiB pages, all resident
        block[off] = 1
    os.write(ready_fd, b"x")
    os.close(ready_fd)
    step = 1 << 20
    off = 0
    while True:
        block[off:off + 4096] = b"\x02" * 4096
        off = (off + step) % len(block)
        time.sleep(0.05)


def main():
    r, w = os.pipe()
    pids = []
    for mib in SIZES_MIB:
        pid = os.fork()
        if pid == 0:
            os.close(r)
            hold(mib, w)
            os._exit(0)
        pids.append(pid)
    os.close(w)
    got = 0
    while got < len(pids):
        got += len(os.read(r, 64))
    print("PIDS", os.getpid(), *pids, flush=True)
    print("READY", flush=True)
    sys.stdin.read()
    for p in pids:
        os.kill(p, 9)
        os.waitpid(p, 0)


if __name__ == "__main__":
    main()
