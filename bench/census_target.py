"""Benchmark target: about two million reachable objects, and a heartbeat thread that measures
the longest time the process was kept from running (by a ptrace pause, or by in-process tools
holding the GIL). Commands on stdin, one per line: `reset`, `pause` (prints the longest gap
since reset, in ms), `objgraph`, `pympler` (each runs the tool in-process and prints seconds),
`count` (prints the number of objects reachable by gc.get_referents), `quit`."""
import gc
import sys
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000


class Record:
    def __init__(self, i):
        self.id = i
        self.name = "record-%d" % i
        self.tags = (i % 7, "t")


def build(n):
    # per 10 units: 1 Record (+ its str, its tuple, its int), 2 dicts, 2 lists, 1 float,
    # 1 bytes, 1 str: about 10 objects, most of them pymalloc-sized
    out = []
    for i in range(n // 10):
        out.append(Record(i))
        out.append({"k": i, "v": [i, i + 1]})
        out.append(i * 0.5)
        out.append(b"x" * (i % 40))
        out.append("s%d" % i)
    return out


data = build(N)
gap = [0.0]


def heartbeat():
    last = time.perf_counter()
    while True:
        time.sleep(0.001)
        now = time.perf_counter()
        if now - last > gap[0]:
            gap[0] = now - last
        last = now


threading.Thread(target=heartbeat, daemon=True).start()
print("READY", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "reset":
        gap[0] = 0.0
        print("ok", flush=True)
    elif cmd == "pause":
        print("%.3f" % (gap[0] * 1000), flush=True)
    elif cmd == "objgraph":
        import io
        import contextlib
        import objgraph
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            objgraph.show_most_common_types(limit=20)
        print("%.3f" % (time.perf_counter() - t), flush=True)
    elif cmd == "pympler":
        from pympler import muppy, summary
        t = time.perf_counter()
        summary.summarize(muppy.get_objects())
        print("%.3f" % (time.perf_counter() - t), flush=True)
    elif cmd == "count":
        seen = set()
        stack = gc.get_objects() + [sys.modules]
        while stack:
            o = stack.pop()
            if id(o) in seen:
                continue
            seen.add(id(o))
            stack.extend(gc.get_referents(o))
        print(len(seen), flush=True)
        del seen, stack
    elif cmd == "quit":
        break
