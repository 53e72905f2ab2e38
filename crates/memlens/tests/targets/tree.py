# Forked-tree target: the parent builds shared objects and forks workers; worker i frees some
# shared objects (their pools' headers are written, so those pages are copied) and allocates
# i * 40000 of its own. Each worker reads its own sys._debugmallocstats(), sends it to the
# parent and blocks; the parent prints every worker's figures as JSON, then READY, and blocks.
# usage: tree.py WORKERS
import json, os, re, sys, tempfile

workers = int(sys.argv[1])
shared = [str(i) * 4 for i in range(150000)]
shared_lists = [[i] for i in range(30000)]


def mallocstats():
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

    return figure("# arenas allocated current"), figure("# bytes in allocated blocks")


report_r, report_w = os.pipe()
life_r, life_w = os.pipe()
pids = []
for i in range(workers):
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        os.close(life_w)
        del shared[i::5]
        own = [(j, str(j)) for j in range(i * 40000)]
        # leave free blocks in the arenas, so that what runs after the figures are read
        # needs no new arena
        spare = [str(j) * 3 for j in range(20000)]
        del spare[::2]
        arenas, blocks = mallocstats()
        os.write(report_w, (json.dumps({"pid": os.getpid(), "arenas": arenas, "blocks": blocks}) + "\n").encode())
        os.read(life_r, 1)
        os._exit(0)
    pids.append(pid)
os.close(report_w)
reports = []
with os.fdopen(report_r) as f:
    for _ in range(workers):
        reports.append(json.loads(f.readline()))
arenas, blocks = mallocstats()
reports.append({"pid": os.getpid(), "arenas": arenas, "blocks": blocks})
print(json.dumps(reports))
print("READY", flush=True)
sys.stdin.readline()
