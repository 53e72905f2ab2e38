# Package-import target (the `package-import` advice, docs/advice.md).
#
#   package_import.py generate SITE N   writes into SITE a package `mlgen_heavy` of N classes
#       (3 methods each) and N functions, and a package `mlgen_small` of a few functions, and
#       compiles both (this environment may set PYTHONDONTWRITEBYTECODE: without .pyc files an
#       import would also leave the compiler's garbage behind)
#   package_import.py run SITE WHAT     imports the same standard library modules, then
#       `mlgen_heavy` (WHAT=heavy), `mlgen_small` (WHAT=small) or nothing (WHAT=none); prints
#       READY and blocks on stdin. The measured cost of importing mlgen_heavy is the RSS of the
#       heavy run less that of the none run (the kernel's figures, read by the test).
# Run with -S: no site-packages but SITE.
import compileall
import gc
import os
import sys
import textwrap

import collections  # noqa: F401  (the same standard library in every run)
import json  # noqa: F401
import re  # noqa: F401

CLASS = '''
class Model{i}(object):
    """Model number {i}."""
    kind = "model-{i}"

    def __init__(self, x, y={i}):
        self.x = x
        self.y = y

    def total(self):
        return self.x + self.y + {i}

    def describe(self):
        return "Model{i}(%r, %r)" % (self.x, self.y)
'''

FUNCTION = '''
def helper{i}(a, b={i}, *args, key="k{i}", **kw):
    """Helper number {i}."""
    c = a * b + len(args)
    for v in (1, 2, 3, {i}):
        c += v
    return c, key, kw
'''


def generate(site, n):
    heavy = os.path.join(site, "mlgen_heavy")
    os.makedirs(heavy)
    with open(os.path.join(heavy, "__init__.py"), "w") as f:
        f.write("from .models import *\nfrom .funcs import *\n")
    with open(os.path.join(heavy, "models.py"), "w") as f:
        f.write("".join(textwrap.dedent(CLASS.format(i=i)) for i in range(n)))
    with open(os.path.join(heavy, "funcs.py"), "w") as f:
        f.write("".join(textwrap.dedent(FUNCTION.format(i=i)) for i in range(n)))
    small = os.path.join(site, "mlgen_small")
    os.makedirs(small)
    with open(os.path.join(small, "__init__.py"), "w") as f:
        f.write("".join(textwrap.dedent(FUNCTION.format(i=i)) for i in range(20)))
    for d in (heavy, small):
        if not compileall.compile_dir(d, quiet=1):
            sys.exit("compileall failed")


def run(site, what):
    sys.path.insert(0, site)
    if what == "heavy":
        import mlgen_heavy  # noqa: F401
    elif what == "small":
        import mlgen_small  # noqa: F401
    elif what != "none":
        sys.exit("run SITE heavy|small|none")
    gc.collect()
    print("READY", flush=True)
    sys.stdin.readline()


if sys.argv[1] == "generate":
    generate(sys.argv[2], int(sys.argv[3]))
else:
    run(sys.argv[2], sys.argv[3])
