# GC / pymalloc / modules target: sets known thresholds, makes the collector run, freezes
# objects, reads sys._debugmallocstats(), prints the ground truth as JSON, then blocks.
import gc, json, os, re, sys, tempfile

gc.set_threshold(777, 11, 13)
junk = [[i] for i in range(5000)]
del junk
gc.collect(0)
gc.collect(1)
keep = [{"a": [i]} for i in range(3000)]
gc.freeze()
more = [[i] for i in range(123)]
big = [str(i) * 3 for i in range(100000)]
# leave free blocks and empty pools in the arenas, so that the few allocations made after
# sys._debugmallocstats() below do not need a new arena
del big[50000:70000]
del big[::3]

modules = sorted(sys.modules)
stats = [[s["collections"], s["collected"], s["uncollectable"]] for s in gc.get_stats()]
frozen = gc.get_freeze_count()
threshold = gc.get_threshold()
fd, path = tempfile.mkstemp()
saved = os.dup(2)
os.dup2(fd, 2)
sys._debugmallocstats()
os.dup2(saved, 2)
os.close(saved)
os.close(fd)
with open(path) as f:
    text = f.read()
os.unlink(path)


def figure(label):
    m = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", text)
    return int(m.group(1).replace(",", ""))


arenas = figure("# arenas allocated current")
blocks = figure("# bytes in allocated blocks")
# gc.get_count() moves with every container allocated and freed (and 3.8-3.10 keep a "zombie"
# frame per code object after its first call): print everything else first, which warms up
# every path used below, then read the count into ints and print it the same way.
sys.stdout.write(json.dumps({"arenas": arenas, "blocks": blocks, "modules": modules,
                             "stats": stats, "frozen": frozen, "threshold": threshold}) + "\n")
sys.stdout.flush()
text = None
c0, c1, c2 = gc.get_count()
sys.stdout.write("COUNT %d %d %d\nREADY\n" % (c0, c1, c2))
sys.stdout.flush()
os.read(0, 1)  # block; unlike sys.stdin.readline() it keeps no new container alive
