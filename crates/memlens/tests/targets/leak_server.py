# A "server" that handles requests read from stdin: `requests N` handles N requests (each
# takes about 10 ms of work and keeps a 256 KiB session), then prints `DONE N`; `quit` ends.
# Mode `leak` (argv[1]) keeps every session: memory grows by a fixed amount per request.
# Mode `plateau` keeps the last 100 only (a bounded cache): it grows, then stops.
import sys, time

MODE = sys.argv[1]
PER = 256 * 1024
KEEP = 100


class Session:
    def __init__(self, i):
        self.blob = b"x" * PER
        self.i = i


SESSIONS = []


def handle(i):
    time.sleep(0.01)  # the request's work
    SESSIONS.append(Session(i))
    if MODE == "plateau" and len(SESSIONS) > KEEP:
        SESSIONS.pop(0)


print("READY", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
        break
    if cmd[0] == "requests":
        for i in range(int(cmd[1])):
            handle(i)
        print("DONE", cmd[1], flush=True)
