"""memlens-preload test target: forks; the child holds 20 bytearrays of 4 MiB, prints
`CHILD pid`, and exits through the interpreter's normal shutdown (SystemExit); the parent
waits for it and exits with its status."""
import os
import sys

pid = os.fork()
if pid == 0:
    held = [bytearray(4 << 20) for _ in range(20)]
    print("CHILD %d" % os.getpid(), flush=True)
    sys.exit(0)
_, status = os.waitpid(pid, 0)
print("PARENT %d" % os.getpid(), flush=True)
sys.exit(os.WEXITSTATUS(status))
