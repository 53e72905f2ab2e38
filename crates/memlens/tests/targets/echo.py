# A target that answers each line on stdin, to show it still runs after memlens was killed.
import sys

data = [{"k": [i, str(i)]} for i in range(200000)]
print("READY", flush=True)
for line in sys.stdin:
    print("echo " + line.strip(), flush=True)
