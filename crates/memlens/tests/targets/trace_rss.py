"""A small allocation-heavy program (bench/workloads/w6_alloc_heavy.py's loop, in a few
functions, plus bytearrays from C malloc): ITERS iterations of many small short-lived objects.
Then it says `READY <pid>` and waits for a line on stdin, and exits 0. Used to measure the
sampled tracer's own resident memory against the kernel (the same program run plain is the
baseline)."""
import os
import sys


def small(i):
    d = {"k": i, "v": (i, i + 1)}
    t = (d, [i, i * 2], str(i))
    return len(t[2]) + d["v"][1] - i


def medium(i):
    # C malloc (over pymalloc's 512 bytes): their frees go through the tracer's filter.
    b = bytearray(600 + i % 1000)
    return len(b)


def main():
    iters = int(sys.argv[1])
    acc = 0
    for i in range(iters):
        acc += small(i)
        if i % 8 == 0:
            acc += medium(i)
    print("READY", os.getpid(), acc, flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()
