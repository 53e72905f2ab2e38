"""memlens-preload test target: makes TOTAL bytes of small objects (bytes of 41-512 bytes, and
lists grown one append at a time, whose item arrays pymalloc reallocates), keeps every fourth
and frees the rest. Prints `READY kept=B blocks=N`: B the bytes of the kept objects by
sys.getsizeof (every one a pymalloc request, at most 512 bytes: getsizeof includes the GC
header a list is allocated with), N the change of sys.getallocatedblocks() over the whole
(pymalloc's own count of its blocks in use, raw blocks it passed to malloc included). Leaves
through os._exit, with the kept objects live."""
import os
import random
import sys

TOTAL = int(sys.argv[1])
rng = random.Random(4321)
blocks0 = sys.getallocatedblocks()
kept = []
made = 0
kept_bytes = 0
i = 0
while made < TOTAL:
    if i % 8 == 7:
        x = []
        for k in range(rng.randint(1, 40)):
            x.append(k)
    else:
        x = bytes(rng.randint(8, 512 - 33))
    size = sys.getsizeof(x)
    assert size <= 512, size
    made += size
    if i % 4 == 0:
        kept.append(x)
        kept_bytes += size
    del x
    i += 1
blocks = sys.getallocatedblocks() - blocks0
print("READY kept=%d blocks=%d" % (kept_bytes, blocks), flush=True)
os._exit(0)
