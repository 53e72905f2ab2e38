# Sizes target: builds objects of every type whose __sizeof__ is not the generic formula, in
# many sizes and states, and prints for each one JSON line with id(o), type(o).__name__ and
# sys.getsizeof(o) (numpy arrays: also nbytes and OWNDATA), then READY, then blocks on stdin.
# Nothing runs after READY, so nothing the lines describe changes while memlens reads them.
import array
import collections
import gc
import io
import json
import sys

gc.disable()
objs = []  # (case, object); kept alive until the end
unmodelled = []  # types whose __sizeof__ memlens does not model


def add(case, o):
    objs.append((case, o))


# bytearray: empty, small, grown by appends (overallocated), 8 MiB, shrunk from the front
add("bytearray-empty", bytearray())
add("bytearray-small", bytearray(b"abc"))
grown = bytearray()
for i in range(1000):
    grown.append(i % 256)
add("bytearray-appended", grown)
add("bytearray-8MiB", bytearray(8 << 20))
front = bytearray(b"x" * 100)
del front[:60]
add("bytearray-front-deleted", front)

# bytes, tuple: the generic formula
for n in (0, 1, 7, 1000):
    add("bytes-%d" % n, bytes(n))
add("tuple-empty", ())
add("tuple-1", (1,))
add("tuple-100", tuple(range(100)))

# str of each kind, with and without a UTF-8 cache
add("str-empty", "")
add("str-ascii", "hello world")
add("str-ascii-long", "x" * 5000)
add("str-latin1", "h\xe9llo w\xf6rld")
add("str-ucs2", "\u03b1\u03b2\u03b3" * 10)
add("str-ucs4", "\U0001f600 smile")
for i, s in enumerate(("caf\xe9-%d" % 1, "\u03b1\u03b2-%d" % 2, "\U0001f600-%d" % 3)):
    # a type's name is converted to UTF-8 once and cached in the str
    s = "".join(list(s))
    type(s, (), {})
    add("str-utf8-cached-%d" % i, s)
    unc = "".join(list(s))
    add("str-no-utf8-%d" % i, unc)


class S(str):
    pass


add("str-subclass", S("subclass h\xe9llo"))

# int and bool
for i, v in enumerate((0, 1, -1, 2 ** 30, 2 ** 60, -(2 ** 100), 10 ** 300)):
    add("int-%d" % i, v)
add("bool-true", True)
add("bool-false", False)


class I(int):
    pass


add("int-subclass", I(12345678901234567890))

# list: empty, literal, appended (overallocated), popped
add("list-empty", [])
add("list-literal", [1, 2, 3])
appended = []
for i in range(1000):
    appended.append(i)
add("list-appended", appended)
popped = list(range(100))
for _ in range(90):
    popped.pop()
add("list-popped", popped)


class L(list):
    pass


add("list-subclass", L(range(10)))

# dict: empty, str keys, other keys, large, after deletions, split (instance) and combined
add("dict-empty", {})
add("dict-str", {"a": 1, "b": 2})
add("dict-int", {1: 2, 3: 4})
add("dict-large-str", {"k%d" % i: i for i in range(10000)})
add("dict-large-int", {i: i for i in range(10000)})
deleted = {i: i for i in range(100)}
for i in range(90):
    del deleted[i]
add("dict-deleted", deleted)


class Point:
    def __init__(self, i):
        self.x = i
        self.y = i
        self.z = i


points = [Point(i) for i in range(10)]
add("dict-split", points[0].__dict__)
p2 = points[1]
p2.extra = 1
add("dict-split-extended", p2.__dict__)
p3 = points[2]
p3.__dict__[5] = 5  # a non-str key: no longer shared
add("dict-unshared", p3.__dict__)
add("dict-copy", dict(points[3].__dict__))
add("instance-plain", points[4])
add("dict-fromkeys", dict.fromkeys(range(50)))
add("defaultdict", collections.defaultdict(list, {1: [2]}))
add("counter", collections.Counter("abracadabra"))

# OrderedDict
add("odict-empty", collections.OrderedDict())
add("odict-small", collections.OrderedDict(a=1, b=2))
big = collections.OrderedDict((i, i) for i in range(1000))
add("odict-large", big)
od_del = collections.OrderedDict((i, i) for i in range(100))
for i in range(95):
    del od_del[i]
add("odict-deleted", od_del)

# set, frozenset: small table, resized, after removals
add("set-empty", set())
add("set-small", {1, 2, 3})
add("set-large", set(range(1000)))
shrunk = set(range(100))
for i in range(95):
    shrunk.discard(i)
add("set-removed", shrunk)
add("frozenset-empty", frozenset())
add("frozenset-small", frozenset("abc"))
add("frozenset-large", frozenset(range(300)))

# array.array of several typecodes, appended
add("array-empty", array.array("b"))
add("array-double", array.array("d", range(1000)))
arr = array.array("i")
for i in range(777):
    arr.append(i)
add("array-appended", arr)
add("array-q", array.array("q", [1, 2, 3]))

# io.BytesIO: empty, sharing its initial value, written (own buffer), shared by getvalue()
add("bytesio-empty", io.BytesIO())
initial = b"y" * 1000
add("bytesio-shared-initial", io.BytesIO(initial))
written = io.BytesIO()
written.write(b"z" * 5000)
add("bytesio-written", written)
got = io.BytesIO()
got.write(b"w" * 100)
value = got.getvalue()
add("bytesio-getvalue-shared", got)

# deque: empty, one block, several blocks, after popleft, bounded
add("deque-empty", collections.deque())
add("deque-small", collections.deque(range(10)))
add("deque-blocks", collections.deque(range(1000)))
dl = collections.deque(range(300))
for _ in range(70):
    dl.popleft()
add("deque-popleft", dl)
add("deque-maxlen", collections.deque(range(100), maxlen=50))


# code objects: plain, with cells, hot (3.8-3.10 opcache), nested
def plain(a, b):
    return a + b


def with_cell(x):
    def inner():
        return x

    return inner


def hot(n):
    t = 0
    for i in range(n):
        t += len(str(i))
    return t


for _ in range(2000):
    hot(3)
add("code-plain", plain.__code__)
add("code-cell", with_cell.__code__)
add("code-hot", hot.__code__)
add("code-inner", with_cell(1).__code__)
add("code-module", compile("x = 1\ny = [x]\n", "<m>", "exec"))

# co_extra (what debuggers attach to code objects through PEP 523's API), and before 3.12 the
# wchar_t copy of a str (PyUnicode_AsUnicode), both through ctypes
import ctypes

api = ctypes.pythonapi
request = getattr(api, "PyUnstable_Eval_RequestCodeExtraIndex", None) or getattr(
    api, "_PyEval_RequestCodeExtraIndex")
request.restype = ctypes.c_ssize_t
request.argtypes = [ctypes.c_void_p]
set_extra = getattr(api, "PyUnstable_Code_SetExtra", None) or getattr(api, "_PyCode_SetExtra")
set_extra.restype = ctypes.c_int
set_extra.argtypes = [ctypes.py_object, ctypes.c_ssize_t, ctypes.c_void_p]
request(None)
index = request(None)


def with_extra():
    pass


assert set_extra(with_extra.__code__, index, 1234) == 0
add("code-extra", with_extra.__code__)
if sys.version_info < (3, 12):
    as_unicode = api.PyUnicode_AsUnicode
    as_unicode.restype = ctypes.c_void_p
    as_unicode.argtypes = [ctypes.py_object]
    for i, s in enumerate(("ab" + "c", "h\xe9" + "x", "\u03b1" + "b", "\U0001f600" + "x")):
        as_unicode(s)
        add("str-wstr-%d" % i, s)

# frames: the running module frame, a finished frame (kept by a traceback)
add("frame-running", sys._getframe())


def fails(a, b=2):
    c = a + b
    raise ValueError(c)


try:
    fails(1)
except ValueError as e:
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    add("frame-finished", tb.tb_frame)
    del e


# generators, coroutines, async generators: fresh, started, finished
def gen(n):
    x = 0
    for i in range(n):
        x += i
        yield x


add("gen-fresh", gen(3))
started = gen(3)
next(started)
add("gen-started", started)
done = gen(1)
list(done)
add("gen-finished", done)


async def coro():
    return 1


c = coro()
add("coroutine", c)


async def agen():
    yield 1


add("async-generator", agen())

# modules, types (static, heap with and without cached keys, metaclass instances)
add("module-sys", sys)
add("module-json", json)
add("module-array", array)
add("type-static-int", int)
add("type-static-type", type)
add("type-heap-point", Point)


class Empty:
    pass


add("type-heap-empty", Empty)


class Meta(type):
    pass


class WithMeta(metaclass=Meta):
    a = 1


add("type-metaclass-instance", WithMeta)
add("type-subclass-of-deque", type("DequeSub", (collections.deque,), {}))


class D(collections.deque):
    pass


add("deque-subclass", D(range(200)))


class BA(bytearray):
    pass


add("bytearray-subclass", BA(b"q" * 300))

# generic objects
for case, o in (("float", 1.5), ("complex", 1j), ("object", object()), ("none", None),
                ("range", range(10)), ("slice", slice(1, 2)), ("function", plain),
                ("memoryview", memoryview(b"abc")), ("cell", with_cell(1).__closure__[0])):
    add(case, o)


class Slots:
    __slots__ = ("a", "b")


add("instance-slots", Slots())

# types memlens does not model: only their type's classification is checked
import decimal

unmodelled.append(("decimal", decimal.Decimal("1.25")))
unmodelled.append(("buffered-reader", io.BufferedReader(io.BytesIO(b"abc"))))


class OwnSizeof:
    def __sizeof__(self):
        return 12345


unmodelled.append(("own-sizeof", OwnSizeof()))

try:
    import numpy as np
except ImportError:
    np = None
if np is not None:
    owned = np.arange(1000, dtype=np.int64)
    add("ndarray-owned", owned)
    add("ndarray-view-slice", owned[::2])
    add("ndarray-view-reshape", owned.reshape(10, 100))
    add("ndarray-2d", np.zeros((100, 50)))
    add("ndarray-0d", np.array(5.0))
    add("ndarray-empty", np.empty((0, 3)))
    add("ndarray-float16", np.ones(33, dtype=np.float16))
    add("ndarray-str", np.array(["a", "bcd"], dtype="U10"))
    add("ndarray-object", np.array([1, "x", None], dtype=object))
    add("ndarray-struct", np.zeros(7, dtype=[("a", "i4"), ("b", "f8")]))
    add("ndarray-frombuffer", np.frombuffer(bytearray(64), dtype=np.uint8))

    class MyArr(np.ndarray):
        pass

    add("ndarray-subclass", np.arange(10).view(MyArr))

for case, o in objs:
    line = {"case": case, "id": id(o), "type": type(o).__name__, "size": sys.getsizeof(o)}
    if np is not None and isinstance(o, np.ndarray):
        line["nbytes"] = int(o.nbytes)
        line["owndata"] = bool(o.flags.owndata)
    print(json.dumps(line))
for case, o in unmodelled:
    print(json.dumps({"case": case, "id": id(o), "type": type(o).__name__, "unmodelled": True}))
print("READY", flush=True)
sys.stdin.readline()
