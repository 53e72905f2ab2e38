"""memlens-preload test target: prints a deterministic mix of computed lines (dicts, lists,
strings, a sort, a json round trip) and exits with status 3."""
import json
import sys

d = {str(i): [i, i * i, "x" * (i % 50)] for i in range(20000)}
s = sorted(d, key=lambda k: (len(d[k][2]), k))
print(len(d), s[:5], s[-5:])
print(json.dumps({k: d[k] for k in s[:50]}, sort_keys=True)[:400])
blob = b"".join(bytes([i % 256]) * 1000 for i in range(3000))
print(len(blob), sum(blob[::997]))
sys.stderr.write("to stderr\n")
sys.exit(3)
