# The targets of the advice tests (crates/memlens/tests/it/advice.rs): a program whose waste is
# known by construction, and the same program with the advice applied, in one process.
#
#   advice.py KIND N
#
# prints READY with nothing built; on "build" builds the waste (N objects of KIND) and prints
# BUILT; on "apply" builds, beside it, what the advice says to build instead, and prints
# APPLIED; on "quit" exits. The test reads the process's RSS from the kernel at each step: the
# measured saving is (RSS after build - RSS before) - (RSS after apply - RSS after build).
# Kinds with "clean-" build the applied form only (no advice may be given for it).
#
# "fragment" builds N small objects and keeps one in 64: the others are freed but their
# arenas stay, pinned by the survivors; its "apply" drops the survivors too (the arenas go back
# to the system) and builds as many again, compactly: the measured saving is the RSS after
# build - the RSS after apply.
# "grow" allocates 32 MiB outside pymalloc and keeps it (apply leaves it): the recording's peak
# then comes after the build.
# "mark" runs a full collection and prints MARKED with the oldest generation's collections
# since start: a reading of the Python view that counts as many was taken after this command
# (memlens reads the collector before pymalloc), so it saw the heap as the commands before it
# left it (it/report_advice.rs).
import gc
import sys
from array import array

kind, n = sys.argv[1], int(sys.argv[2])


class Point:
    def __init__(self, i):
        self.x = 1
        self.y = 2
        self.z = 3
        self.label = None
        self.weight = 0.5


class SlottedPoint:
    __slots__ = ("x", "y", "z", "label", "weight")

    def __init__(self, i):
        self.x = 1
        self.y = 2
        self.z = 3
        self.label = None
        self.weight = 0.5


PREFIX = "a value held many times, " * 3


class Blob:
    __slots__ = ("v",)

    def __init__(self, v):
        self.v = v


def fragment():
    every = [Blob(None) for i in range(n)]
    kept = every[::64]
    del every
    return kept


def waste():
    if kind == "slots":
        return [Point(i) for i in range(n)]
    if kind == "floats":
        return [i + 0.5 for i in range(n)]
    if kind == "ints":
        return [i * 1000 + 1000 for i in range(n)]
    if kind == "fragment":
        return fragment()
    if kind == "strings":
        # 8 distinct values, each held in n / 8 equal but distinct str objects
        return ["".join((PREFIX, str(i % 8))) for i in range(n)]
    raise SystemExit("unknown kind " + kind)


def applied():
    base = kind[len("clean-"):] if kind.startswith("clean-") else kind
    if base == "slots":
        return [SlottedPoint(i) for i in range(n)]
    if base == "floats":
        return array("d", (i + 0.5 for i in range(n)))
    if base == "ints":
        return array("q", (i * 1000 + 1000 for i in range(n)))
    if base == "strings":
        canon = {}
        return [canon.setdefault(v, v) for v in ("".join((PREFIX, str(i % 8))) for i in range(n))]
    if base == "plain":
        return None
    if base == "fragment":
        # the compact form: as many survivors, allocated together
        return [Blob(None) for i in range(len(range(0, n, 64)))]
    raise SystemExit("unknown kind " + kind)


held = []
print("READY", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "build":
        held.append(applied() if kind.startswith("clean-") else waste())
        print("BUILT", flush=True)
    elif cmd == "apply":
        if kind == "fragment":
            held.clear()
        held.append(applied())
        print("APPLIED", flush=True)
    elif cmd == "grow":
        # 32 MiB outside pymalloc, touched: a peak after the build (it/report_advice.rs)
        ballast = bytearray(32 << 20)
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
        print("GROWN", flush=True)
    elif cmd == "mark":
        gc.collect()
        print("MARKED", gc.get_stats()[2]["collections"], flush=True)
    elif cmd == "quit":
        break
