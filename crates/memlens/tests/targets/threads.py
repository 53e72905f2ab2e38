# Threads target: two workers block in a known function; the main thread reports
# threading.enumerate() and sys._current_frames() once everyone is blocked, then blocks at the
# same line (report and readline share one line, so the reported line stays true).
import json, sys, threading, time

held = threading.Lock()
held.acquire()


def worker_inner():
    held.acquire()


def worker(n):
    worker_inner()


threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(2)]
for t in threads:
    t.start()


def frames_of(f):
    out = []
    while f is not None:
        out.append([f.f_code.co_name, f.f_code.co_filename, f.f_lineno])
        f = f.f_back
    return out


def blocked():
    cur = sys._current_frames()
    return all(t.ident in cur and cur[t.ident].f_code.co_name == "worker_inner" for t in threads)


while not blocked():
    time.sleep(0.01)


def report(caller):
    cur = sys._current_frames()
    res = {"threads": [[t.ident, t.native_id] for t in threading.enumerate()], "frames": {}}
    for t in threads:
        res["frames"][str(t.ident)] = frames_of(cur[t.ident])
    res["frames"][str(threading.get_ident())] = frames_of(caller)
    print(json.dumps(res))


def block():
    # One line on purpose: the frame's line is the same in report() and while blocked. READY
    # comes after report() returned, so a reader never catches report() still on the stack.
    report(sys._getframe()); print("READY", flush=True); sys.stdin.readline()  # noqa: E702


block()
