"""memlens-preload test target: 8 threads start together (a barrier) and each allocates and
drops PER bytearrays of 64 KiB; prints `TRUTH count=C bytes=B` and exits normally."""
import sys
import threading

PER = int(sys.argv[1])
SIZE = 64 * 1024
barrier = threading.Barrier(8)


def work():
    barrier.wait()
    for _ in range(PER):
        b = bytearray(SIZE)
        del b


ts = [threading.Thread(target=work) for _ in range(8)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("TRUTH count=%d bytes=%d" % (8 * PER, 8 * PER * SIZE), flush=True)
