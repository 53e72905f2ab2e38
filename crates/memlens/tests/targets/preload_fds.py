"""memlens-preload test target: closes every descriptor above 2 (as daemons do), opens FILE,
which may get the tracer's old descriptor number, allocates 64 MiB in 1 MiB pieces so the
tracer has events to write, prints READY, keeps allocating (so the tracer has snapshots to
write) until a line arrives on stdin, and writes `mine` to FILE."""
import os
import select
import sys

os.closerange(3, 4096)
f = open(sys.argv[1], "w")
held = [bytearray(1 << 20) for _ in range(64)]
print("READY %d" % f.fileno(), flush=True)
while not select.select([sys.stdin], [], [], 0.001)[0]:
    bytearray(100000)
sys.stdin.readline()
f.write("mine\n")
f.close()
