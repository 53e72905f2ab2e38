"""memlens-preload test target for the tracer's per-thread stack cache: allocations by
construction whose stacks differ from the previous allocation's only in ways a cache keyed
on the wrong thing would miss. Each site allocates bytearrays of a size of its own (the
buffer, over 512 bytes, is one malloc of the size plus a constant of the interpreter's
bytearray) at a line marked `# @NAME` (the test finds
the line numbers in this file); the test knows each site's count and size from the table it
reads from this script's `SIZES`/`N` lines, and compares them with the trace's `malloc`
stacks, which must hold exactly count x (size + that constant) bytes in `all` mode.

- `alt_a` / `alt_b`: two functions called in turn from one line of `main` (the callee's
  frame reused at the same address with another code object);
- `twice`: one function called from two lines of `main` in turn (the same frame, code and
  position; only the caller's position differs);
- `rec`: recursion to depth 3, allocating on the way down and on the way back (the same
  frame addresses, code and line; only the depth differs), a size per depth;
- `gen`: a generator allocating at two places between its yields, resumed from one line;
- `dyn`: code objects made, run and freed in turn from one compiled function, with another
  first line and constant (a new code object often at the address of the one just freed);
- `thread_a` / `thread_b`: two threads handing a semaphore back and forth, so their
  allocations alternate.

It prints `DONE reused=R` (how many `dyn` code objects had the previous one's address) and
exits 0.
"""
import threading
import types

N = 150
SIZES = {  # site: bytes
    "alt_a": 10000, "alt_b": 10200,
    "twice": 10400,
    "rec0": 10600, "rec1": 10800, "rec2": 11000, "rec3": 11200,
    "gen1": 11400, "gen2": 11600,
    "dyn1": 11800, "dyn2": 12000,
    "thread_a": 12200, "thread_b": 12400,
}


def alt_a():
    x = bytearray(SIZES["alt_a"])  # @alt_a
    return len(x)


def alt_b():
    x = bytearray(SIZES["alt_b"])  # @alt_b
    return len(x)


def twice():
    x = bytearray(SIZES["twice"])  # @twice
    return len(x)


REC = [SIZES["rec0"], SIZES["rec1"], SIZES["rec2"], SIZES["rec3"]]


def rec(d):
    # Each depth allocates twice: once before the deeper call, once after it returns.
    x = bytearray(REC[d] // 2)  # @rec_down
    if d < 3:
        rec(d + 1)  # @rec_call
    y = bytearray(REC[d] - REC[d] // 2)  # @rec_up
    return len(x) + len(y)


def gen():
    while True:
        x = bytearray(SIZES["gen1"])  # @gen1
        yield len(x)
        y = bytearray(SIZES["gen2"])  # @gen2
        yield len(y)


DYN = "def dyn():\n    x = bytearray(%d)\n    return len(x)\n" % SIZES["dyn1"]


def dyn_code(k, proto):
    """`dyn` from line 1 allocating dyn1 bytes (k=0), or from line 4 allocating dyn2 (k=1): a
    new code object each time, often where the previous one was freed (the same size)."""
    if k == 0:
        return proto.replace(co_firstlineno=1)
    consts = tuple(SIZES["dyn2"] if c == SIZES["dyn1"] else c for c in proto.co_consts)
    return proto.replace(co_firstlineno=4, co_consts=consts)


def thread_a(mine, theirs):
    for _ in range(N):
        mine.acquire()
        x = bytearray(SIZES["thread_a"])  # @thread_a
        del x
        theirs.release()


def thread_b(mine, theirs):
    for _ in range(N):
        mine.acquire()
        x = bytearray(SIZES["thread_b"])  # @thread_b
        del x
        theirs.release()


def main():
    for f in (alt_a, alt_b) * N:
        f()  # @main_alt
    for _ in range(N):
        twice()  # @main_twice1
        twice()  # @main_twice2
    for _ in range(N):
        rec(0)  # @main_rec
    g = gen()
    for _ in range(2 * N):
        next(g)  # @main_gen
    ns = {}
    exec(compile(DYN, "<dyn>", "exec"), ns)
    proto = ns.pop("dyn").__code__
    reused, last = 0, None
    for i in range(2 * N):
        f = types.FunctionType(dyn_code(i % 2, proto), globals())
        reused += id(f.__code__) == last
        last = id(f.__code__)
        f()  # @main_dyn
        del f
    a, b = threading.Semaphore(1), threading.Semaphore(0)
    ts = [threading.Thread(target=thread_a, args=(a, b)),
          threading.Thread(target=thread_b, args=(b, a))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("DONE reused=%d" % reused, flush=True)


main()
