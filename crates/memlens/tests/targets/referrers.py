# A target whose instances of `Item` are held along known chains, in a module `leaky`:
#   leaky.CACHE (a list), leaky.REGISTRY["users"] (a dict value, then a list),
#   leaky.HOLDER.items (an instance attribute, then a list), leaky.QUEUE (a deque),
#   leaky.SLOTTED.held (a __slots__ member, then a list), and a local variable `mine` of
#   `worker()` on a second thread. It prints, as JSON, what it computes itself for each
#   chain (len and the sum of sys.getsizeof), the worker's thread ident, then READY, and
#   waits for a line on stdin. `leaky.Unused` is a class without instances. With `big`,
#   300,000 more Items in `leaky.BIG`.
import collections, json, sys, threading, types

SOURCE = '''
class Item:
    def __init__(self, n):
        self.n = n

class Holder:
    def __init__(self):
        self.items = []

class Unused:
    pass

class Slotted:
    __slots__ = ("held",)
    def __init__(self):
        self.held = []

CACHE = []
REGISTRY = {"users": [], "other": 1}
HOLDER = Holder()
SLOTTED = Slotted()
'''

leaky = types.ModuleType("leaky")
sys.modules["leaky"] = leaky
exec(SOURCE, leaky.__dict__)

for i in range(300):
    leaky.CACHE.append(leaky.Item(i))
for i in range(120):
    leaky.REGISTRY["users"].append(leaky.Item(i))
for i in range(70):
    leaky.HOLDER.items.append(leaky.Item(i))
leaky.QUEUE = collections.deque(leaky.Item(n) for n in range(9))
for i in range(5):
    leaky.SLOTTED.held.append(leaky.Item(i))
del i
if sys.argv[1:] == ["big"]:
    # many objects for the memory-cap test: 300,000 more Items behind one global
    leaky.BIG = [leaky.Item(n) for n in range(300000)]


def truth(items):
    return [len(items), sum(sys.getsizeof(o) for o in items)]


started = threading.Event()
stop = threading.Event()
facts = {}


def worker():
    mine = [leaky.Item(n) for n in range(40)]
    facts["local"] = truth(mine)
    facts["tid"] = threading.get_ident()
    started.set()
    stop.wait()


t = threading.Thread(target=worker, daemon=True)
t.start()
started.wait()
facts["cache"] = truth(leaky.CACHE)
facts["registry"] = truth(leaky.REGISTRY["users"])
facts["holder"] = truth(leaky.HOLDER.items)
facts["queue"] = truth(leaky.QUEUE)
facts["slotted"] = truth(leaky.SLOTTED.held)
print(json.dumps(facts), flush=True)
print("READY", flush=True)
sys.stdin.readline()
stop.set()
