"""memlens-preload test target: closes every descriptor above 2 (as daemons do), opens FILE,
which may get the tracer's old descriptor number, allocates 64 MiB in 1 MiB pieces so the
tracer has events to write, then waits for the READY line it prints to be read and a line on
stdin, and writes `mine` to FILE."""
import os
import sys

os.closerange(3, 4096)
f = open(sys.argv[1], "w")
held = [bytearray(1 << 20) for _ in range(64)]
print("READY %d" % f.fileno(), flush=True)
sys.stdin.readline()
f.write("mine\n")
f.close()
