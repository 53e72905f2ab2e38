"""memlens-preload test target: allocates TOTAL bytes in pieces of 4 KiB-1 MiB (sizes from a
seeded generator), keeps every fourth piece, prints the truth (`TRUTH total=B kept=B`, the
bytes of the payloads: each bytes object adds a 33-byte header, counted too) and leaves through
os._exit (what it keeps is live in the tracer's `end` line). With TOTAL=0 it allocates nothing (the baseline)."""
import os
import random
import sys

TOTAL = int(sys.argv[1])
HEADER = sys.getsizeof(b"") # bytes object header + the trailing NUL
rng = random.Random(1234)
kept = []
total = kept_bytes = 0
i = 0
while total < TOTAL:
    n = rng.randint(4096, 1 << 20)
    b = bytes(n)
    total += n + HEADER
    if i % 4 == 0:
        kept.append(b)
        kept_bytes += n + HEADER
    del b
    i += 1
print("TRUTH total=%d kept=%d" % (total, kept_bytes), flush=True)
os._exit(0)
