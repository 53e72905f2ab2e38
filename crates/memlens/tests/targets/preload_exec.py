"""memlens-preload test target: allocates 8 MiB, then replaces itself (os.execv, same PID) with
a Python that holds 10 bytearrays of 4 MiB, prints `EXECED pid` and exits normally."""
import os
import sys

first = [bytearray(1 << 20) for _ in range(8)]
code = (
    "import os; held = [bytearray(4 << 20) for _ in range(10)]; "
    "print('EXECED %d' % os.getpid(), flush=True)"
)
sys.stdout.flush()
os.execv(sys.executable, [sys.executable, "-c", code])
