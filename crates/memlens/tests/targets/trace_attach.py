# The target of it/trace_attach.rs (`memlens record PID --trace`, PEP 768, CPython 3.14+).
# After READY it polls stdin every 10 ms, running Python code between polls, so a PEP 768
# request is taken within about 10 ms. Commands, one a line:
#   alloc   keeps N bytearrays of 1000 bytes (line @bytearrays) and N strings of 32 characters
#           (line @strings), then prints "ALLOCATED <bytes> <bytes>": sys.getsizeof of each
#           object and of the list holding them, per line (the truth the test compares with)
#   block   blocks in a read of stdin (no Python code runs) until the next line, then prints
#           "UNBLOCKED"
#   modules prints "ctypes <True|False>": whether ctypes was imported (memlens's script does)
#   tracemalloc  starts tracemalloc (which installs its allocator over whatever is there) and
#           prints "TRACEMALLOC"
#   churn   allocates and frees 20,000 small objects and bytearrays, then stops tracemalloc if
#           it runs, and prints "CHURNED <n>" (n: what is left of them, 0)
#   echo X  prints X
#   exit    prints BYE and exits 0
import select, sys

N = 20000
keep = []


def alloc():
    b = [bytearray(1000) for _ in range(N)]  # @bytearrays
    s = [("%08d" % i) * 4 for i in range(N)]  # @strings
    keep.append((b, s))
    return (sum(map(sys.getsizeof, b)) + sys.getsizeof(b),
            sum(map(sys.getsizeof, s)) + sys.getsizeof(s))


print("READY", flush=True)
while True:
    r, _, _ = select.select([sys.stdin], [], [], 0.01)
    if not r:
        continue
    cmd = sys.stdin.readline()
    if cmd == "" or cmd.strip() == "exit":
        print("BYE", flush=True)
        break
    cmd = cmd.strip()
    if cmd == "alloc":
        a, b = alloc()
        print("ALLOCATED", a, b, flush=True)
    elif cmd == "block":
        sys.stdin.readline()
        print("UNBLOCKED", flush=True)
    elif cmd == "modules":
        print("ctypes", "ctypes" in sys.modules, flush=True)
    elif cmd == "tracemalloc":
        import tracemalloc
        tracemalloc.start()
        print("TRACEMALLOC", flush=True)
    elif cmd == "churn":
        junk = [(str(i), bytearray(600)) for i in range(20000)]
        del junk
        if "tracemalloc" in sys.modules and sys.modules["tracemalloc"].is_tracing():
            sys.modules["tracemalloc"].stop()
        print("CHURNED", 0, flush=True)
    elif cmd.startswith("echo "):
        print(cmd[5:], flush=True)
