# A target whose memory grows by about 1 MB/s: one list that gains a new 1 KiB str every
# millisecond (the list stays one object; its item table and the strs grow).
import sys, threading, time

grown = []


def grow():
    i = 0
    while True:
        grown.append(("%08d" % i) * 128)
        i += 1
        time.sleep(0.001)


threading.Thread(target=grow, daemon=True).start()
print("READY", flush=True)
sys.stdin.readline()
