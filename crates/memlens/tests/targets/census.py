# Census target: builds known objects, computes the ground truth in-process (a traversal by
# gc.get_referents from gc.get_objects() and sys.modules, plus the constants and names of code
# objects, which have no tp_traverse, and the keys of dicts, which gc.get_referents leaves out
# for str-keyed dicts), prints it as JSON, then blocks on stdin.
import gc, json, sys, types


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


def truth():
    # gc.get_objects() leaves out the permanent generation, which memlens counts: move it back
    # to generation 2 so both see the same objects. (3.12's collector moves immortal tracked
    # objects there again; the test allows for what get_freeze_count() reports after this.)
    gc.unfreeze()
    gc.collect()
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


gc.disable()
counts, sizes = truth()
result = json.dumps({"counts": counts, "bytes": sizes, "frozen": gc.get_freeze_count()})
del counts, sizes
print(result)
print("READY", flush=True)
sys.stdin.readline()
