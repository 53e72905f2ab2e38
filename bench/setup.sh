#!/usr/bin/env bash
# Sets up the benchmarks: bench/.venv with psutil (the peer the benches time), and Debian's
# smem (installed with apt-get if missing; needs root or sudo). Safe to run again.
# usage: bench/setup.sh            (PYTHON=python3.x to choose the venv's interpreter)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating bench/.venv with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade psutil
echo "setup: psutil $(.venv/bin/python -c 'import psutil; print(psutil.__version__)') in bench/.venv"

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
