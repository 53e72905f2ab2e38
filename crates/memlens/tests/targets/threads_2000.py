# 2,000 threads blocked on an event, a window of about eight seconds the program times itself
# (READY ... DONE), then an exit when a line comes on stdin. Used by the CPU-budget test
# (it::recorder_truth) and bench/peak_breakdown.py.
import sys, threading, time

threading.stack_size(256 << 10)
go = threading.Event()
threads = [threading.Thread(target=go.wait) for _ in range(2000)]
for t in threads:
    t.start()
print("READY", flush=True)
time.sleep(8)
print("DONE", flush=True)
sys.stdin.readline()
go.set()
