"""Target of it::trace_unmap: anonymous mappings made through ctypes' libc at marked lines
(`# @NAME`), then unmapped in part: the traced live bytes of each line must follow exactly
what stays mapped. Every mapping is N = 8 MiB (sampled at the default mean of 512 KiB with
probability 1 - e^-16, and weighted N (1 + 1e-7)).

  @tail     N, its last quarter unmapped: 3N/4 stays;
  @hole     N, a quarter in its middle unmapped (two pieces), then its first quarter: N/2;
  @prefix   N, its first half unmapped: N/2;
  @reserve  3N, mapped over by three MAP_FIXED mappings of N (@span1, @span2, @span3):
            nothing of it stays; then one munmap from the middle of @span1 to the middle
            of @span3: N/2, 0 and N/2 stay;
  @grow     N, moved and grown to 2N by mremap(MREMAP_MAYMOVE) at @regrow (a realloc: the
            new mapping is @regrow's), then shrunk in place to N/2: @grow 0, @regrow N/2;
  @whole    N, unmapped whole: 0;
  @top      8N, the run's peak with all of the above as they then are, unmapped at once.

Nothing else is unmapped: what stays mapped at exit is what each line leaks. Prints
`TRUTH name=bytes ...` (what each line holds at the peak and at exit, by construction: the
same) and exits 0; any call that fails exits 2 with its errno.
"""
import ctypes
import os
import sys
from _libc_maps import FAILED, libc

N = 8 << 20
PROT = 0x1 | 0x2  # PROT_READ | PROT_WRITE
FLAGS = 0x02 | 0x20  # MAP_PRIVATE | MAP_ANONYMOUS
MAP_FIXED = 0x10
MREMAP_MAYMOVE = 1


def ok(p, what):
    if p is None or p == FAILED:
        sys.stderr.write("%s failed: errno %d\n" % (what, ctypes.get_errno()))
        sys.exit(2)
    return p


def unmap(p, n):
    if libc.munmap(p, n) != 0:
        sys.stderr.write("munmap failed: errno %d\n" % ctypes.get_errno())
        sys.exit(2)


def touch(p, n):
    """Writes one byte a page (so the kernel holds them)."""
    for off in range(0, n, 4096):
        ctypes.c_char.from_address(p + off).value = b"x"


def main():
    truth = {}
    q = N // 4

    a = ok(libc.mmap(None, N, PROT, FLAGS, -1, 0), "mmap")  # @tail
    unmap(a + 3 * q, q)
    truth["tail"] = 3 * q

    b = ok(libc.mmap(None, N, PROT, FLAGS, -1, 0), "mmap")  # @hole
    unmap(b + q, q)
    unmap(b, q)
    truth["hole"] = 2 * q

    c = ok(libc.mmap(None, N, PROT, FLAGS, -1, 0), "mmap")  # @prefix
    unmap(c, 2 * q)
    truth["prefix"] = 2 * q

    r = ok(libc.mmap(None, 3 * N, PROT, FLAGS, -1, 0), "mmap")  # @reserve
    ok(libc.mmap(r, N, PROT, FLAGS | MAP_FIXED, -1, 0), "mmap fixed")  # @span1
    ok(libc.mmap(r + N, N, PROT, FLAGS | MAP_FIXED, -1, 0), "mmap fixed")  # @span2
    ok(libc.mmap(r + 2 * N, N, PROT, FLAGS | MAP_FIXED, -1, 0), "mmap fixed")  # @span3
    unmap(r + 2 * q, 2 * N)
    truth["reserve"] = 0
    truth["span1"] = 2 * q
    truth["span2"] = 0
    truth["span3"] = 2 * q

    e = ok(libc.mmap(None, N, PROT, FLAGS, -1, 0), "mmap")  # @grow
    touch(e, N)
    e = ok(libc.mremap(e, N, 2 * N, MREMAP_MAYMOVE), "mremap")  # @regrow
    e2 = ok(libc.mremap(e, 2 * N, 2 * q, 0), "mremap")
    if e2 != e:
        sys.stderr.write("a shrink moved the mapping\n")
        sys.exit(2)
    truth["grow"] = 0
    truth["regrow"] = 2 * q

    f = ok(libc.mmap(None, N, PROT, FLAGS, -1, 0), "mmap")  # @whole
    unmap(f, N)
    truth["whole"] = 0

    t = ok(libc.mmap(None, 8 * N, PROT, FLAGS, -1, 0), "mmap")  # @top
    unmap(t, 8 * N)
    truth["top"] = 8 * N

    sys.stdout.write("TRUTH " + " ".join("%s=%d" % kv for kv in sorted(truth.items())) + "\n")
    sys.stdout.flush()


main()
