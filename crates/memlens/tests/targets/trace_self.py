"""Holds N bytearrays of SIZE bytes (glibc malloc, one traced block each), says
`READY <pid>` and waits for a line on stdin, then exits 0. Used to measure the tracer's own
memory against the kernel: the same program run plain is the baseline."""
import os
import sys

n, size = int(sys.argv[1]), int(sys.argv[2])
held = [bytearray(size) for _ in range(n)]
print("READY", os.getpid(), flush=True)
sys.stdin.readline()
