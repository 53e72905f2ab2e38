#!/usr/bin/env python3
"""A small program whose memory has every factor memlens explains.

    memlens run -- python3 examples/demo.py

It builds, in order, and holds until the end:
  1. many small objects: 300,000 small dicts with a str each (python-heap),
  2. a large native buffer: a 96 MiB bytearray, every page touched (native-heap),
  3. a memory-mapped file: a 32 MiB temporary file, mapped and read (mapped-files),
  4. two forked workers: they share the parent's pages, then each reads half of
     the dicts (reference counts are written, so those pages get copied) and
     allocates 16 MiB of its own,
  5. four threads, each with its own stack, doing a little work while the workers run.
Then it waits for the workers, removes the temporary file and exits 0.
Standard library only; any CPython 3.8 or newer on Linux. Runs in about 3-4 seconds
(`--hold SECONDS` keeps everything alive longer, e.g. to try `memlens snapshot --tree PID`).
"""
import argparse
import mmap
import os
import sys
import tempfile
import threading
import time

MiB = 1024 * 1024
PAGE = mmap.PAGESIZE
N_OBJECTS = 300000
BUFFER_BYTES = 96 * MiB
MAPPED_BYTES = 32 * MiB
WORKER_PRIVATE_BYTES = 16 * MiB
N_THREADS = 4
N_WORKERS = 2


def say(msg):
    print("demo[%d]: %s" % (os.getpid(), msg), flush=True)


def touch(buf, value=1):
    """Writes one byte per page, so the kernel makes every page resident."""
    for off in range(0, len(buf), PAGE):
        buf[off] = value


def make_objects(n):
    return [{"id": i, "name": "user-%07d" % i} for i in range(n)]


def make_mapped_file(size):
    """Creates a temporary file of `size` bytes, maps it read-only and reads every page."""
    fd, path = tempfile.mkstemp(prefix="memlens-demo-", suffix=".bin")
    chunk = b"m" * MiB
    with os.fdopen(fd, "wb") as f:
        for _ in range(size // MiB):
            f.write(chunk)
    f = open(path, "rb")
    mapped = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
    checksum = sum(mapped[off] for off in range(0, size, PAGE))
    return path, f, mapped, checksum


def worker(index, objects, hold):
    """Runs in a forked child: un-shares some of the parent's pages, adds its own, waits."""
    half = len(objects) // N_WORKERS
    part = objects[index * half:(index + 1) * half]
    total = sum(d["id"] for d in part)  # reference counts change: copy-on-write
    private = bytearray(WORKER_PRIVATE_BYTES)
    touch(private, index + 1)
    say("worker %d: read %d shared dicts (id sum %d), touched %d MiB of its own"
        % (index, len(part), total, WORKER_PRIVATE_BYTES // MiB))
    time.sleep(hold)
    return 0


def fork_worker(index, objects, hold):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = worker(index, objects, hold)
        finally:
            os._exit(code)  # never run the parent's cleanup in the child
    return pid


def thread_body(index, stop):
    """A little steady work per thread: a private list, re-summed until told to stop."""
    data = list(range(index * 10000, (index + 1) * 10000))
    rounds = 0
    while not stop.wait(0.05):
        rounds += sum(data) & 1
    return rounds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hold", type=float, default=2.5,
                    help="seconds the workers and threads stay alive (default 2.5)")
    args = ap.parse_args()
    started = time.monotonic()
    say("python %s, pid %d" % (sys.version.split()[0], os.getpid()))

    objects = make_objects(N_OBJECTS)
    say("built %d small dicts" % len(objects))

    buffer = bytearray(BUFFER_BYTES)
    touch(buffer)
    say("touched a %d MiB bytearray" % (BUFFER_BYTES // MiB))

    path, mapped_file, mapped, checksum = make_mapped_file(MAPPED_BYTES)
    exit_code = 0
    try:
        say("mapped and read a %d MiB file (%s, checksum %d)"
            % (MAPPED_BYTES // MiB, path, checksum))

        # Fork before starting threads: forking a multi-threaded process is unsafe.
        workers = [fork_worker(i, objects, args.hold) for i in range(N_WORKERS)]
        say("forked %d workers: %s" % (N_WORKERS, ", ".join(str(p) for p in workers)))

        stop = threading.Event()
        threads = [threading.Thread(target=thread_body, args=(i, stop), name="demo-%d" % i)
                   for i in range(N_THREADS)]
        for t in threads:
            t.start()
        say("started %d threads" % N_THREADS)

        for pid in workers:
            _, status = os.waitpid(pid, 0)
            if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                say("worker %d failed (wait status %d)" % (pid, status))
                exit_code = 1
        stop.set()
        for t in threads:
            t.join()
        say("workers and threads finished")
    finally:
        mapped.close()
        mapped_file.close()
        os.unlink(path)
    say("done in %.1f s, holding %d objects and %d MiB of buffer until exit"
        % (time.monotonic() - started, len(objects), len(buffer) // MiB))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
