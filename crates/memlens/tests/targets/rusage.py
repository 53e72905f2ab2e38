# Runs a command with its address space limited to RLIMIT_AS bytes (argv[1]), so a runaway
# cannot exhaust the host, and prints the child's peak RSS in KiB on stderr as `MAXRSS N`.
import resource, subprocess, sys

limit = int(sys.argv[1])


def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


r = subprocess.run(sys.argv[2:], preexec_fn=cap)
print("MAXRSS %d" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(r.returncode if r.returncode >= 0 else 128 - r.returncode)
