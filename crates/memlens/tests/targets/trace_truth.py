"""Target of it::trace_truth (`memlens run --trace` end to end): allocations by construction at
lines marked `# @NAME` (the test finds the line numbers in this file), and the ground truth
written by the target itself to the JSON file named by argv[1]: per site, the bytes alive at
the peak and at exit, allocated and freed (sums of `sys.getsizeof`, `nbytes` or mapping sizes),
the untouched bytes as the kernel sees them (`/proc/self/smaps`, `/proc/self/pagemap`), the
forked worker's pid and the spike's lifetimes.

Order of events (the peak is the spike: every held site plus one spike buffer):
  1. a forked worker (`child_work`, called from `child_main`) holds 3 x 6 MiB, waits for its
     tracer's next snapshot, tells the parent, and stays until the parent's peak is recorded;
  2. 4 threads (`worker` <- Thread.run) hold a 3 MiB bytearray each;
  3. small objects (a tuple of a short str and a short bytes per element: pymalloc blocks;
     argv[2] elements, 680,000 for about 100 MiB) in a list made on its own line (not
     ints: a medium int's block is sizeof(PyLongObject), 4 bytes over its sys.getsizeof, on
     3.11+);
  4. 8 bytearrays of 4 MiB; an anonymous mmap of 24 MiB with every page written; an anonymous
     mmap of 128 MiB never touched; with argv[3] `numpy` (imported first): 6 arrays of 4 MiB
     (np.empty, then filled) and a 256 MiB np.zeros never written;
  5. a leak: 5 bytearrays of 2 MiB, kept to the end;
  6. a temporary spike: 30 bytearrays of 4 MiB, each freed at once;
  7. under the tracer, it waits for its next snapshot (so the peak block is written while the
     worker lives), lets the worker go (it leaves by os._exit, its 18 MiB held), frees the
     bytearrays, the touched mmap and the numpy arrays, prints, writes the truth and leaves by
     os._exit(3) with the rest held (the leak, the small objects, the threads' buffers, the
     untouched mappings).
The same program without the tracer prints the same bytes and exits 3 (what it waits for
under the tracer it skips).
"""
import json
import mmap
import os
import sys
import threading
import time

from _trace_wait import TRACE, next_snapshot, own_trace


def anon_rw():
    """[(lo, hi)] of the unnamed private anonymous read-write mappings (/proc/self/maps)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            head = line.split()
            if len(head) == 5 and head[1].startswith("rw") and head[1][3] == "p":
                out.append(tuple(int(x, 16) for x in head[0].split("-")))
    return out


def minus(ranges, cut):
    """The parts of the sorted, disjoint [lo, hi) `ranges` outside every range of `cut`."""
    out = []
    for lo, hi in ranges:
        for clo, chi in sorted(cut):
            if chi <= lo or clo >= hi:
                continue
            if clo > lo:
                out.append((lo, clo))
            lo = max(lo, chi)
            if lo >= hi:
                break
        if lo < hi:
            out.append((lo, hi))
    return out


def threads():
    return len(os.listdir("/proc/self/task"))


# numpy's import maps memory it never touches (OpenBLAS's buffer: 32 MiB with numpy 2.5),
# which the tracer rightly counts as untouched: the kernel's truth for it is the not-resident
# pages of the anonymous memory new after the import (measured when the rest of the truth is,
# `import_not_resident`). A thread's stack is mapped by glibc's own mmap (no interposer sees
# it: not traced) and the kernel cannot tell it from a program's mapping, so BLAS is asked for
# no threads of its own, and the import must start none (else its 8 MiB stack, untouched,
# would pass for the program's).
os.environ["OPENBLAS_NUM_THREADS"] = "1"
before = anon_rw()
threads_before = threads()
if sys.argv[3:] == ["numpy"]:
    import numpy as np
else:
    np = None
if threads() != threads_before:
    sys.stderr.write("numpy's import started threads: %d -> %d\n" % (threads_before, threads()))
    os._exit(91)
imported = minus(anon_rw(), before)

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
SMALL_N = int(sys.argv[2])
SPIKE_N, SPIKE = 30, 4 * MIB
TEMP_NS = 10_000_000  # the tracer's temp_ns (docs/trace-format.md)
COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)  # the tracer's clock
# what next_snapshot allocates while it waits: sampled at 512 KiB, often enough to write
# a snapshot soon
POKE = 256 << 10

truth = {"sites": {}, "numpy": np is not None}


def site(name, count, peak=0, end=0, allocated=0, freed=0):
    """A site's figures; `count`: its allocations alive at the peak, each of about
    `peak / count` bytes with at most one small Python object beside it (0: small objects,
    thousands of pymalloc blocks)."""
    truth["sites"][name] = {
        "count": count, "peak": peak, "end": end, "allocated": allocated, "freed": freed
    }


def child_work(held):
    for i in range(3):
        held[i] = bytearray(6 * MIB)  # @child


def child_main(w, r):
    held = [None] * 3
    child_work(held)  # @child_main
    next_snapshot(own_trace(), POKE)
    os.write(w, b"%d" % sum(sys.getsizeof(x) for x in held))
    os.read(r, 1)
    os._exit(0)


def worker(out, i):
    out[i] = bytearray(3 * MIB)  # @thread


def small_objects():
    held = [None] * SMALL_N  # @small_list
    for i in range(SMALL_N):
        held[i] = (str(i), b"%020d" % i)  # @small
    return held


def mapping_rss(size, name):
    """Rss of the one mapping of exactly `size` bytes named `name` in /proc/self/smaps."""
    found = []
    cur = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                cur = (hi - lo == size and name in line)
            elif cur and head[0] == "Rss:":
                found.append(int(head[1]) * 1024)
    assert len(found) == 1, (size, name, found)
    return found[0]


def not_resident(addr, size):
    """Bytes of the page-aligned inner range of [addr, addr+size) with no present page
    (/proc/self/pagemap bit 63), as the tracer measures an allocation with mincore."""
    lo = (addr + PAGE - 1) // PAGE
    hi = (addr + size) // PAGE
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(lo * 8)
        data = f.read((hi - lo) * 8)
    present = sum(1 for k in range(0, len(data), 8) if data[k + 7] & 0x80)
    return (hi - lo - present) * PAGE


def main(truth_path):
    sys.stdout.write("trace_truth start\n")
    sys.stdout.flush()
    # 1. the forked worker, before any thread (3.12+ warns at fork with threads)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        child_main(w1, r2)  # @main_child
    b = int(os.read(r1, 64))
    truth["child_pid"] = pid
    truth["pid"] = os.getpid()
    site("child", 3, peak=b, end=b, allocated=b)

    # 2. threads
    from_threads = [None] * 4
    threads = [threading.Thread(target=worker, args=(from_threads, i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b = sum(sys.getsizeof(x) for x in from_threads)
    site("thread", 4, peak=b, end=b, allocated=b)

    # 3. small objects
    held = small_objects()  # @main_small
    b = sum(sys.getsizeof(t) + sys.getsizeof(t[0]) + sys.getsizeof(t[1]) for t in held)
    site("small", 0, peak=b, end=b, allocated=b)
    b = sys.getsizeof(held)
    site("small_list", 1, peak=b, end=b, allocated=b)
    sys.stdout.write("small objects: %d\n" % len(held))

    # 4. large buffers, mappings, numpy
    arrays = [None] * 8
    for i in range(8):
        arrays[i] = bytearray(4 * MIB)  # @bytearray
    b = sum(sys.getsizeof(x) for x in arrays)
    site("bytearray", 8, peak=b, end=0, allocated=b, freed=b)
    touched = mmap.mmap(-1, 24 * MIB)  # @mmap
    for off in range(0, 24 * MIB, PAGE):
        touched[off] = 1
    site("mmap", 1, peak=24 * MIB, end=0, allocated=24 * MIB, freed=24 * MIB)
    untouched = mmap.mmap(-1, 128 * MIB)  # @untouched
    site("untouched", 1, peak=128 * MIB, end=128 * MIB, allocated=128 * MIB)
    numpy_arrays = []
    zeros = None
    if np is not None:
        numpy_arrays = [None] * 6
        for i in range(6):
            numpy_arrays[i] = np.empty(MIB // 2)  # @numpy
            numpy_arrays[i].fill(1.0)
        b = sum(a.nbytes for a in numpy_arrays)
        site("numpy", 6, peak=b, end=0, allocated=b, freed=b)
        zeros = np.zeros(32 * MIB)  # @np_untouched
        site("np_untouched", 1, peak=zeros.nbytes, end=zeros.nbytes, allocated=zeros.nbytes)

    # 5. the leak
    leaked = [None] * 5
    for i in range(5):
        leaked[i] = bytearray(2 * MIB)  # @leak
    b = sum(sys.getsizeof(x) for x in leaked)
    site("leak", 5, peak=b, end=b, allocated=b)

    # the kernel's view of the untouched memory (never written since: it stays so)
    untouched_truth = 128 * MIB - mapping_rss(128 * MIB, "/dev/zero")
    if zeros is not None:
        addr = zeros.__array_interface__["data"][0]
        untouched_truth += not_resident(addr, zeros.nbytes)
    truth["untouched_not_resident"] = untouched_truth
    # numpy's import's anonymous memory still mapped (later mappings at its addresses: only
    # np.zeros is untouched, and counted above), pages not present
    still = minus(imported, minus(imported, anon_rw()))
    if zeros is not None:
        still = minus(still, [(addr // PAGE * PAGE, -(-(addr + zeros.nbytes) // PAGE) * PAGE)])
    truth["import_not_resident"] = sum(not_resident(lo, hi - lo) for lo, hi in still)
    truth["touched_mmap_rss"] = mapping_rss(24 * MIB, "/dev/zero")

    # 6. the spike: each buffer freed at once; lifetimes on the tracer's clock
    lifetimes = [0] * SPIKE_N
    one = 0
    for k in range(SPIKE_N):
        t0 = time.clock_gettime_ns(COARSE)
        one = sys.getsizeof(bytearray(SPIKE))  # @spike
        lifetimes[k] = time.clock_gettime_ns(COARSE) - t0
    site("spike", 1, peak=one, end=0, allocated=SPIKE_N * one, freed=SPIKE_N * one)
    # the tracer's stamps of a buffer lie between t0 and the reading after its free
    truth["spike_lifetimes_ns"] = lifetimes
    truth["spike_one"] = one
    truth["temp_ns"] = TEMP_NS

    # 7. the peak recorded while the worker lives; then the worker goes and buffers are freed
    next_snapshot(TRACE, POKE)
    os.write(w2, b"x")
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    del arrays, numpy_arrays
    touched.close()
    del touched
    sys.stdout.write("spike: %d x %d bytes\n" % (SPIKE_N, one))
    sys.stdout.write("DONE\n")
    sys.stdout.flush()
    sys.stderr.write("trace_truth: to stderr, then exit status 3\n")
    sys.stderr.flush()
    with open(truth_path, "w") as f:
        json.dump(truth, f)
    os._exit(3)


main(sys.argv[1])
