"""Target of it::trace_unmap's fork test: blocks a forked child inherits, freed after the
fork by the parent only, by the child only, or by both, and an inherited mapping the child
unmaps in part. Each process's own address space holds its copy of a block until that
process frees it, so the child's file must count as inherited (`inherited_bytes` on its site
lines) exactly what it still holds, and the parent's count as freed exactly what it freed.

  @pa   a bytearray the parent frees after the fork (the child keeps its copy);
  @pb   a bytearray the child frees (the parent keeps its own);
  @pc   a bytearray both free;
  @pm   an 8 MiB anonymous mapping (ctypes' libc mmap): the child unmaps its second half.

The child waits until the parent has freed its blocks (a pipe), frees its own, and leaves
with os._exit (its tracer's end line). Prints `TRUTH pa=B pb=B pc=B pm=B child_pid=P`
(sys.getsizeof of each bytearray, the mapping's size) and exits 0.
"""
import ctypes
import os
import sys
from _libc_maps import FAILED, libc

N = 8 << 20


def main():
    n = (3 << 20) + 1
    pa = bytearray(n)  # @pa
    n = (5 << 20) + 3
    pb = bytearray(n)  # @pb
    n = (7 << 20) + 5
    pc = bytearray(n)  # @pc
    m = libc.mmap(None, N, 3, 0x22, -1, 0)  # @pm
    if m is None or m == FAILED:
        sys.exit(2)
    sizes = (sys.getsizeof(pa), sys.getsizeof(pb), sys.getsizeof(pc))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # the parent has freed @pa and @pc
        del pb, pc
        if libc.munmap(m + N // 2, N // 2) != 0:
            os._exit(3)
        os._exit(0)
    os.close(r)
    del pa, pc
    os.write(w, b"x")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        sys.exit(4)
    print("TRUTH pa=%d pb=%d pc=%d pm=%d child_pid=%d" % (sizes + (N, pid)), flush=True)
    sys.stdout.flush()
    # @pb and the mapping stay held by the parent until it exits.
    assert len(pb) > 0


main()
