"""memlens-preload test target: holds N bytearrays of SIZE bytes (allocated by construction),
prints READY, waits for a line on stdin, frees every other one, prints READY, waits for a
line, exits. N=0 is the same program allocating nothing (the interpreter's baseline)."""
import sys

N = int(sys.argv[1])
SIZE = int(sys.argv[2])
held = [bytearray(SIZE) for _ in range(N)]
print("READY", flush=True)
sys.stdin.readline()
del held[::2]
print("READY", flush=True)
sys.stdin.readline()
