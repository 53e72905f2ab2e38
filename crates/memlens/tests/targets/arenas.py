# The target of the malloc-arenas and thread tests (crates/memlens/tests/it/advice_threads.rs).
#
#   arenas.py KIND N
#
# starts N threads and prints READY once each has done its work and waits; quits on a line on
# stdin. KIND:
#   churn: each thread allocates 16 MiB through malloc from its own glibc arena (4,096
#          bytearrays of 4,000 bytes: larger than pymalloc's 512-byte limit) and keeps one
#          in 32; the rest is freed but stays in its arena, pinned by the survivors. Run with
#          MALLOC_ARENA_MAX=2 in the environment it is the applied form of the advice.
#   idle:  each thread only waits.
import sys
import threading

kind, n = sys.argv[1], int(sys.argv[2])
stop = threading.Event()
done = threading.Semaphore(0)
kept = []


def churn():
    blocks = [bytearray(4000) for _ in range(4096)]
    kept.append(blocks[::32])
    del blocks
    done.release()
    stop.wait()


def idle():
    done.release()
    stop.wait()


if kind not in ("churn", "idle"):
    raise SystemExit("unknown kind " + kind)
threads = [threading.Thread(target=churn if kind == "churn" else idle, daemon=True) for _ in range(n)]
for t in threads:
    t.start()
for t in threads:
    done.acquire()
print("READY", flush=True)
sys.stdin.readline()
