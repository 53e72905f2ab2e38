"""w7: numpy arrays of several sizes built and dropped, beside an untouched np.zeros.

CPU-bound (~2-3 s plain CPython 3.11 on a 2-core VM, numpy import included), fixed work, so
any slowdown is the tool's. By construction:
  - `untouched`: np.zeros(256 MiB) made first and kept to the end, never written or read:
    allocated (calloc: lazily zero-filled pages), not resident;
  - each round builds and drops arrays of 1 KiB, 64 KiB, 1 MiB and 16 MiB (np.ones, then an
    expression making two temporaries of the same size), and every 4th round holds 32 arrays
    of 4 MiB (128 MiB written) at once, then drops them;
so the peak is while the 32 x 4 MiB are held (the churn's largest, 16 MiB x 3 at once, is
less): 128 MiB of written arrays beside the untouched 256 MiB, i.e. 384 MiB of arrays
allocated and 128 MiB of them resident, on top of the interpreter and numpy (~25 MiB; plain
max RSS ~154 MiB on CPython 3.11 with numpy 2.4).

Options (env): W7_ROUNDS=<n> rounds (default 40).
"""
import os

import numpy as np

KiB = 1 << 10
MiB = 1 << 20
ROUNDS = int(os.environ.get("W7_ROUNDS", "40"))
SIZES = [1 * KiB, 64 * KiB, 1 * MiB, 16 * MiB]


def churn(nbytes, reps):
    acc = 0.0
    for _ in range(reps):
        a = np.ones(nbytes // 8, dtype=np.float64)
        b = a * 2.0 + 1.0  # two temporaries of nbytes each
        acc += float(b[-1])
        del a, b
    return acc


def hold(count, nbytes):
    held = [np.full(nbytes // 8, i, dtype=np.float64) for i in range(count)]
    total = sum(float(x[0]) for x in held)
    del held
    return total


def main():
    untouched = np.zeros(256 * MiB // 8, dtype=np.float64)  # never touched
    acc = 0.0
    for r in range(ROUNDS):
        for size in SIZES:
            # about the same bytes per size: many small arrays, few large ones
            acc += churn(size, max(1, (4 * MiB) // size))
        if r % 4 == 3:
            acc += hold(32, 4 * MiB)
    print("w7 rounds=%d untouched=%d MiB check=%.1f" % (ROUNDS, untouched.nbytes // MiB, acc))


if __name__ == "__main__":
    main()
