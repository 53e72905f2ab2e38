"""Target of it::trace_unmap's sampled test: many small anonymous mappings (ctypes' libc),
each cut or resized, so that a sampled trace's figures are estimates over thousands of
samples: K mappings of S = 64 KiB (sampled at the default mean of 512 KiB with probability
1 - e^-1/8, about 0.12) at each marked line:

  @stail    its second half unmapped: S/2 stays;
  @shole    the middle half unmapped (a hole: two pieces of S/4): S/2 stays;
  @sgrow    moved and grown to 2S by mremap(MREMAP_MAYMOVE) at @sregrow: 2S at @sregrow.

All stay mapped at exit. Prints `TRUTH stail=B shole=B sgrow=0 sregrow=B` (what each line
holds at exit, by construction) and exits 0; a call that fails exits 2.
"""
import ctypes
import sys
from _libc_maps import FAILED, libc

K = 4000
S = 64 << 10


def ok(p):
    if p is None or p == FAILED:
        sys.stderr.write("failed: errno %d\n" % ctypes.get_errno())
        sys.exit(2)
    return p


def main():
    for _ in range(K):
        a = ok(libc.mmap(None, S, 3, 0x22, -1, 0))  # @stail
        if libc.munmap(a + S // 2, S // 2) != 0:
            sys.exit(2)
        b = ok(libc.mmap(None, S, 3, 0x22, -1, 0))  # @shole
        if libc.munmap(b + S // 4, S // 2) != 0:
            sys.exit(2)
        c = ok(libc.mmap(None, S, 3, 0x22, -1, 0))  # @sgrow
        ok(libc.mremap(c, S, 2 * S, 1))  # @sregrow
    print("TRUTH stail=%d shole=%d sgrow=0 sregrow=%d" % (K * S // 2, K * S // 2, 2 * K * S),
          flush=True)


main()
