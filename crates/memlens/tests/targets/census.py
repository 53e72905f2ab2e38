# Census target: builds known objects, computes the ground truth in-process (a traversal by
# gc.get_referents from gc.get_objects() and sys.modules, plus the constants and names of code
# objects, which have no tp_traverse, and the keys of dicts, which gc.get_referents leaves out
# for str-keyed dicts), prints it as JSON, then blocks on stdin.
import gc, sys

import census_truth


class MemlensTestThing:
    __slots__ = ("a", "b")


class MemlensPlain:
    pass


things = []
for i in range(3000):
    t = MemlensTestThing()
    t.a = "thing-%d" % i
    t.b = (i, i + 0.5)
    things.append(t)
plains = []
for i in range(2000):
    p = MemlensPlain()
    p.x = i * 1000
    p.name = "plain-%d" % i
    plains.append(p)
atomic_dicts = [{i: str(i)} for i in range(500)]
blobs = [bytes([i % 256]) * (i % 50) for i in range(700)]
floats = [i / 7 for i in range(900)]
nested = {"k%d" % i: [i, (i, "v%d" % i)] for i in range(400)}
str_keyed = {"memlens-key-%d" % i: i for i in range(5000)}


gc.disable()
census_truth.print_truth(collect=True)
print("READY", flush=True)
sys.stdin.readline()
