# Census target with large containers built by append and insertion (item tables of 1 MiB and
# more, in their own mappings), so that the census must read them in full. Prints the ground
# truth of an in-target traversal (gc.get_referents from gc.get_objects() and sys.modules, plus
# dict keys and the constants and names of code objects) as JSON (unless given --no-truth), then
# blocks on stdin.
import array, collections, gc, io, sys

import census_truth

gc.disable()
strs = []
for i in range(100000):
    strs.append("memlens-str-%d" % i)
atomic_dicts = []
for i in range(120000):
    atomic_dicts.append({"n": i})
floats = []
for i in range(100000):
    floats.append(i / 3.0)
str_keyed = {}
for i in range(100000):
    str_keyed["memlens-key-%d" % i] = i * 0.25
int_keyed = {}
for i in range(80000):
    int_keyed[i * 7919] = "v%d" % i
big_set = set()
for i in range(100000):
    big_set.add("memlens-member-%d" % i)
tuples = []
for i in range(50000):
    tuples.append((i, "t%d" % i))
# objects whose sys.getsizeof counts memory outside the object's fixed part
blob = bytearray(8 << 20)
doubles = array.array("d", range(200000))
queue = collections.deque(range(100000))
ordered = collections.OrderedDict((i, i) for i in range(20000))
stream = io.BytesIO(b"x" * (1 << 20))
stream.write(b"y")


if "--no-truth" not in sys.argv:
    census_truth.print_truth(collect=False)
print("READY", flush=True)
sys.stdin.readline()
