#!/usr/bin/env bash
# Sets up the benchmarks: bench/.venv with psutil and memory_profiler (the peers the benches
# time), the allocation tracers trace_overhead.py compares with (memray, filprofiler, scalene)
# and numpy (its numpy workload), and Debian's smem (installed with apt-get if missing; needs
# root or sudo). Safe to run again.
# usage: bench/setup.sh            (PYTHON=python3.x to choose the venv's interpreter: one for
#                                   which memray, filprofiler and scalene have wheels; 3.11
#                                   and 3.12 do on x86_64 Linux)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating bench/.venv with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade psutil memory_profiler
echo "setup: psutil $(.venv/bin/python -c 'import psutil; print(psutil.__version__)') in bench/.venv"
# trace_overhead.py's peers. Wheels only: a peer without one for this interpreter is said and
# left out (the bench shows it as missing), the others are still installed.
for pkg in numpy memray filprofiler scalene; do
    if .venv/bin/python -m pip install -q --disable-pip-version-check --only-binary :all: --upgrade "$pkg"; then
        echo "setup: $pkg $(.venv/bin/python -m pip show "$pkg" 2>/dev/null | sed -n 's/^Version: //p') in bench/.venv"
    else
        echo "setup: $pkg has no wheel for $(.venv/bin/python -V 2>&1) here: left out (trace_overhead.py shows it as missing)" >&2
    fi
done

if ! command -v smem >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    command -v apt-get >/dev/null 2>&1 \
        || { echo "setup: smem is missing and there is no apt-get; install smem by hand" >&2; exit 1; }
    echo "setup: installing smem with apt-get"
    $SUDO apt-get update -qq
    # smem only recommends matplotlib (for its charts); the benches do not need it.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends smem
fi
echo "setup: $(command -v smem) ($(dpkg-query -W -f '${Version}' smem 2>/dev/null || echo 'version unknown'))"
