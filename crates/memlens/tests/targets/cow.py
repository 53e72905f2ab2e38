"""Forked workers with a known copy-on-write share (tests/it/sharing.rs).

Usage: cow.py memfd HEAP_MIB COPY_MIB WORKERS
         the parent maps HEAP_MIB of a memfd privately (ledger category shared-memory, nothing
         else of a plain Python falls there) and writes every page; each worker writes every
         page of the first COPY_MIB (page-aligned by construction: an mmap), so it holds
         HEAP_MIB - COPY_MIB shared with the parent and COPY_MIB copied.
       cow.py freeze|nofreeze OBJECTS WORKERS
         the parent builds OBJECTS small lists (python-heap), calls gc.freeze() or not, forks;
         each worker runs a full collection.
Prints "WORKERS pid ..." and READY once every worker has done its part; everyone exits when
stdin closes.
"""
import gc
import mmap
import os
import sys

PAGE = mmap.PAGESIZE
mode = sys.argv[1]
if mode == "memfd":
    heap = int(sys.argv[2]) << 20
    copy = int(sys.argv[3]) << 20
    workers = int(sys.argv[4])
    fd = os.memfd_create("memlens-cow")
    os.ftruncate(fd, heap)
    region = mmap.mmap(fd, heap, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)
    for i in range(0, heap, PAGE):
        region[i] = 1

    def work():
        for i in range(0, copy, PAGE):
            region[i] = 2
else:
    objects = int(sys.argv[2])
    workers = int(sys.argv[3])
    gc.disable()
    keep = [[i] for i in range(objects)]
    gc.collect()
    if mode == "freeze":
        gc.freeze()

    def work():
        gc.collect()

r, w = os.pipe()
pids = []
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        work()
        os.write(w, b"x")
        os.close(w)
        sys.stdin.read()
        os._exit(0)
    pids.append(pid)
os.close(w)
done = 0
while done < workers:
    got = os.read(r, workers)
    if not got:
        raise SystemExit("a worker exited early")
    done += len(got)
print("WORKERS " + " ".join(map(str, pids)), flush=True)
print("READY", flush=True)
sys.stdin.read()
for pid in pids:
    os.waitpid(pid, 0)
