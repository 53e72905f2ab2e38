# The ground truth of the census tests, computed inside the target: a traversal by
# gc.get_referents from gc.get_objects() and sys.modules, plus the keys of dicts (which
# gc.get_referents leaves out for str-keyed dicts) and the constants and names of code objects
# (which have no tp_traverse). Imported by the census targets (census.py, census_large.py); this
# module and its function are in sys.modules, so memlens and the truth both count them.
import gc, json, sys, types


def truth(collect):
    # gc.get_objects() leaves out the permanent generation, which memlens counts: move it back
    # to generation 2 so both see the same objects. (3.12's collector moves immortal tracked
    # objects there again; the test allows for what get_freeze_count() reports after this.)
    gc.unfreeze()
    if collect:
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



def print_truth(collect):
    """Prints the truth as one JSON line; `collect` runs a collection first."""
    counts, sizes = truth(collect)
    result = json.dumps({"counts": counts, "bytes": sizes, "frozen": gc.get_freeze_count()})
    del counts, sizes
    print(result)
