# Census target with large containers built by append and insertion (item tables of 1 MiB and
# more, in their own mappings), so that the census must read them in full. Prints the ground
# truth of an in-target traversal (gc.get_referents from gc.get_objects() and sys.modules, plus
# dict keys and the constants and names of code objects) as JSON (unless given --no-truth), then
# blocks on stdin.
import array, collections, gc, io, json, sys, types

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


def truth():
    gc.unfreeze()
    roots = gc.get_objects()
    stack = list(roots)
    stack.append(sys.modules)
    seen = set()
    counts = {}
    sizes = {}
    code_type = types.CodeType
    skip = {id(roots), id(stack), id(seen), id(counts), id(sizes), id(sys._getframe())}
    while stack:
        o = stack.pop()
        i = id(o)
        if i in seen or i in skip:
            continue
        seen.add(i)
        name = type(o).__name__
        counts[name] = counts.get(name, 0) + 1
        sizes[name] = sizes.get(name, 0) + sys.getsizeof(o)
        stack.extend(gc.get_referents(o))
        if isinstance(o, dict):
            stack.extend(o.keys())
        if type(o) is code_type:
            stack.extend((o.co_consts, o.co_names, o.co_filename, o.co_name))
            if sys.version_info >= (3, 11):
                stack.append(o.co_qualname)
    return counts, sizes


if "--no-truth" not in sys.argv:
    counts, sizes = truth()
    result = json.dumps({"counts": counts, "bytes": sizes, "frozen": gc.get_freeze_count()})
    del counts, sizes
    print(result)
print("READY", flush=True)
sys.stdin.readline()
