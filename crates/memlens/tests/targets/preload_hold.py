"""memlens-preload test target: holds N buffers of SIZE bytes (allocated by construction),
frees every other one, prints DONE and leaves through os._exit (no finalisation frees them:
the tracer's `end` line shows them live). N=0 is the same program allocating nothing (the
interpreter's baseline).
KIND (argv[3], default bytearray): `bytearray` (malloc), `mmap` (anonymous mmap.mmap, munmap
when freed), `numpy` (np.ones, float64: SIZE bytes each; numpy is imported in the baseline
too)."""
import os
import sys

N = int(sys.argv[1])
SIZE = int(sys.argv[2])
KIND = sys.argv[3] if len(sys.argv) > 3 else "bytearray"
if KIND == "bytearray":
    make = lambda: bytearray(SIZE)
elif KIND == "mmap":
    import mmap

    def make():
        m = mmap.mmap(-1, SIZE)
        m[0] = 1
        return m
elif KIND == "numpy":
    import numpy as np

    make = lambda: np.ones(SIZE // 8)
else:
    sys.exit("unknown kind " + KIND)
held = [make() for _ in range(N)]
del held[::2]
print("DONE", flush=True)
os._exit(0)
