"""A child for test_limit: holds ARGV[1] MiB of touched memory, prints its own VmHWM (the
kernel's, in bytes) once it holds it, and exits when its stdin closes."""

import sys

data = b"\x01" * (int(sys.argv[1]) << 20)
with open("/proc/self/status") as f:
    hwm = [int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")][0]
print(hwm, flush=True)
sys.stdin.read()
assert len(data)
