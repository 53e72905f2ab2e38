# Stacks target: N named threads block in a known function; the main thread recurses DEPTH
# calls deep and reports, from inside, the names and idents of every thread and the length of
# its own frame chain, then blocks reading stdin.
# usage: stacks.py THREADS DEPTH
import json, sys, threading

n, depth = int(sys.argv[1]), int(sys.argv[2])
sys.setrecursionlimit(depth + 1000)
threading.stack_size(256 * 1024)
go = threading.Event()
started = threading.Barrier(n + 1)


def parked():
    started.wait()
    go.wait()


names = ["w\u00e9rker-%d" % i if i % 3 else "<b>\x1b[31m-%d" % i for i in range(n)]
threads = [threading.Thread(target=parked, name=name, daemon=True) for name in names]
for t in threads:
    t.start()
started.wait()


def down(k):
    if k:
        return down(k - 1)
    f, chain = sys._getframe(), 0
    while f is not None:
        chain += 1
        f = f.f_back
    me = threading.current_thread()
    print(json.dumps({"names": {str(t.ident): t.name for t in threading.enumerate()},
                      "main": me.ident, "chain": chain, "native": me.native_id}))
    print("READY", flush=True)
    sys.stdin.readline()


down(depth)
