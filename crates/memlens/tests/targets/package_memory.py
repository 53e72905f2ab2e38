# Package-memory target: imports a few stdlib modules and two packages it writes into a
# temporary site-packages folder (one installed as the distribution "memlens_fake_dist", with a
# mapped ".so" file, one bare), then prints as JSON the ground truth of "memory per Python
# package": for each package, the sys.getsizeof sums of the code objects, functions, classes
# (heap types) and modules (with their __dict__) reached from gc.get_objects() and sys.modules
# through gc.get_referents (plus dict keys and code constants, as the census follows them),
# attributed by the rules of crates/memlens-ledger/src/packages.rs. Then READY; then it blocks
# on stdin (nothing changes while memlens reads it) and removes its folder when told to go on.
# Run with -S: no site-packages but ours, so the distributions are known.
import gc
import json
import mmap
import os
import shutil
import sys
import tempfile
import types
import email.parser  # noqa: F401  (a stdlib package)
import collections  # noqa: F401
import textwrap

gc.disable()
tmp = tempfile.mkdtemp(prefix="memlens-pkgmem-")
site = os.path.join(tmp, "lib", "site-packages")
alpha = os.path.join(site, "mlpkg_alpha")
os.makedirs(alpha)
os.makedirs(os.path.join(site, "memlens_fake_dist-1.0.dist-info"))
with open(os.path.join(site, "memlens_fake_dist-1.0.dist-info", "top_level.txt"), "w") as f:
    f.write("mlpkg_alpha\n")
with open(os.path.join(alpha, "__init__.py"), "w") as f:
    f.write("from .core import *\nVERSION = '1.0'\n")
body = "\n".join(
    textwrap.dedent(
        """
        class Model%d:
            '''A class with methods.'''
            scale = %d

            def __init__(self, x):
                self.x = x

            def value(self):
                return self.x * self.scale

            @property
            def double(self):
                return [v * 2 for v in range(self.x)]


        def helper%d(a, b=%d):
            def inner(c):
                return a + b + c
            return inner
        """
        % (i, i, i, i)
    )
    for i in range(40)
)
with open(os.path.join(alpha, "core.py"), "w") as f:
    f.write(body + "\nhandlers = [helper%d(1) for %s in range(40)]\n" % (0, "_"))
with open(os.path.join(site, "mlpkg_beta.py"), "w") as f:
    f.write(
        "import collections\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "def f(n):\n    return lambda: n\n"
        "funcs = [f(i) for i in range(200)]\n"
        "class Base:\n    pass\n"
        "subclasses = [type('Sub%d' % i, (Base,), {}) for i in range(30)]\n"
    )
# a ".so" of the distribution, mapped (the ledger sorts it by its name into extensions)
so = os.path.join(alpha, "_speedups.cpython-3x-x86_64-linux-gnu.so")
with open(so, "wb") as f:
    f.write(b"\x7fELF" + b"\x01" * (64 * 1024 - 4))
so_file = open(so, "rb")
so_map = mmap.mmap(so_file.fileno(), 0, prot=mmap.PROT_READ)
so_touched = sum(so_map[i] for i in range(0, len(so_map), 4096))
sys.path.insert(0, site)
import mlpkg_alpha  # noqa: E402
import mlpkg_beta  # noqa: E402

# objects of the program itself
def program_function():
    return 1


class ProgramClass:
    pass


# --many-names N: N functions, each with its own made-up module name (not in sys.modules), to
# pass memlens's bound on distinct names
many = []
if "--many-names" in sys.argv:
    template = (lambda: None).__code__
    for i in range(int(sys.argv[sys.argv.index("--many-names") + 1])):
        many.append(types.FunctionType(template, {"__name__": "mlfake_%d" % i}))
exec_globals = {}
exec("def made_by_exec():\n    return 2\n", exec_globals)  # a function without __module__
result = None


def dist_of(top):
    for entry in os.listdir(site):
        if entry.endswith(".dist-info"):
            try:
                with open(os.path.join(site, entry, "top_level.txt")) as f:
                    tops = [line.strip() for line in f if line.strip()]
            except OSError:
                continue
            if top in tops:
                return entry[: -len(".dist-info")].rsplit("-", 1)[0]
    return top


def package_of_file(path, stdlib_dir):
    if path.startswith("<frozen "):
        return "stdlib"
    for marker in ("/site-packages/", "/dist-packages/"):
        i = path.rfind(marker)
        if i >= 0:
            rest = path[i + len(marker):]
            first = rest.split("/")[0]
            if first.endswith(".libs"):
                top = first[: -len(".libs")]
            elif first == rest:
                top = first.split(".")[0]
            else:
                top = first
            return dist_of(top)
    if "/lib-dynload/" in path:
        return "stdlib"
    if stdlib_dir is not None and path.startswith(stdlib_dir + "/"):
        return "stdlib"
    return "(program)"


memo = {}


def package_of_module(name, files, stdlib_dir):
    # memoized: few calls, so that no stdlib helper crosses 3.8-3.10's LOAD_GLOBAL cache
    # threshold (which code.__sizeof__ counts) in the middle of the counted run
    if name not in memo:
        memo[name] = package_of_module_uncached(name, files, stdlib_dir)
    return memo[name]


def package_of_module_uncached(name, files, stdlib_dir):
    if name == "__main__" or name.startswith("__main__."):
        return "(program)"
    parts = name.split(".")
    for n in range(1, len(parts) + 1):
        f = files.get(".".join(parts[:n]))
        if f is not None:
            return package_of_file(f, stdlib_dir)
    if name not in files and name not in modules_without_file:
        top = parts[0]
        if stdlib_dir is not None and top and "/" not in top and not top.startswith("."):
            base = os.path.join(stdlib_dir)
            if os.path.isfile(os.path.join(base, top + ".py")) or os.path.isdir(
                os.path.join(base, top)
            ):
                return "stdlib"
        return "(unknown)"
    below = [(n, f) for n, f in files.items() if n.startswith(name + ".")]
    if below:
        return package_of_file(min(below)[1], stdlib_dir)
    return "stdlib"


modules_without_file = set()


def truth():
    gc.unfreeze()
    files = {}
    for n, m in list(sys.modules.items()):
        if type(n) is str and isinstance(m, types.ModuleType):
            f = m.__dict__.get("__file__")
            if type(f) is str:
                files[n] = f
            else:
                modules_without_file.add(n)
    if "os" in files:
        stdlib_dir = files["os"].rsplit("/", 1)[0]
    else:
        stdlib_dir = files["encodings"].rsplit("/", 1)[0].rsplit("/", 1)[0]
    roots = gc.get_objects()
    stack = list(roots)
    stack.append(sys.modules)
    seen = set()
    out = {}
    skip = {id(roots), id(stack), id(seen), id(out), id(files), id(sys._getframe())}
    code_type = types.CodeType
    function_type = types.FunctionType
    while stack:
        o = stack.pop()
        i = id(o)
        if i in seen or i in skip:
            continue
        seen.add(i)
        stack.extend(gc.get_referents(o))
        if isinstance(o, dict):
            stack.extend(o.keys())
        t = type(o)
        if t is code_type:
            stack.extend((o.co_consts, o.co_names, o.co_filename, o.co_name))
            if sys.version_info >= (3, 11):
                stack.append(o.co_qualname)
            kind, size = "code", sys.getsizeof(o)
            name = o.co_filename
            pkg = package_of_file(name, stdlib_dir) if type(name) is str else "(unknown)"
        elif t is function_type:
            kind, size = "functions", sys.getsizeof(o)
            name = o.__module__
            pkg = package_of_module(name, files, stdlib_dir) if type(name) is str else "(unknown)"
        elif isinstance(o, type) and o.__flags__ & (1 << 9):
            kind, size = "classes", sys.getsizeof(o)
            name = o.__dict__.get("__module__")
            pkg = package_of_module(name, files, stdlib_dir) if type(name) is str else "(unknown)"
        elif isinstance(o, types.ModuleType):
            kind, size = "modules", sys.getsizeof(o) + sys.getsizeof(o.__dict__)
            name = o.__dict__.get("__name__")
            pkg = package_of_module(name, files, stdlib_dir) if type(name) is str else "(unknown)"
        else:
            continue
        p = out.setdefault(pkg, {})
        c = p.setdefault(kind, [0, 0])
        c[0] += 1
        c[1] += size
    return out


def finish():
    gc.collect()
    # once to warm up: on 3.8-3.10 a function called often enough gets a LOAD_GLOBAL cache,
    # which code.__sizeof__ counts; the helpers above would grow during the counted run
    truth()
    modules_without_file.clear()
    memo.clear()
    print(json.dumps({"packages": truth(), "so_pages": so_touched > 0}), flush=True)
    print("READY", flush=True)
    sys.stdin.readline()
    so_map.close()
    so_file.close()
    shutil.rmtree(tmp)


finish()
