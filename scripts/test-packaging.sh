#!/usr/bin/env bash
# Packaging test: builds the memlens wheel from this checkout, installs it into a fresh
# virtualenv, and checks that the installed `memlens` runs: `--version`, then
# `snapshot --json` of a sleeping Python process whose JSON must parse and have totals.pss > 0.
#
# usage: scripts/test-packaging.sh            (PYTHON=python3.x to choose the interpreter)
# Needs: a Rust toolchain, a Python 3.8+ with pip and venv, and PyPI access for maturin
# (the build requirement in pyproject.toml). Exits non-zero on the first failure and
# removes its temporary directory and the sleeper process in every case.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
TMP=$(mktemp -d "${TMPDIR:-/tmp}/memlens-packaging.XXXXXX")
SLEEPER=""

cleanup() {
    if [ -n "$SLEEPER" ]; then
        kill "$SLEEPER" 2>/dev/null || true
        wait "$SLEEPER" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

step() { printf 'test-packaging: %s\n' "$*" >&2; }
fail() { printf 'test-packaging: FAILED: %s\n' "$*" >&2; exit 1; }

step "building the wheel with $("$PYTHON" -V 2>&1) (pip wheel, maturin backend)"
"$PYTHON" -m pip wheel --no-deps -q "$ROOT" -w "$TMP/wheels" || fail "pip wheel failed"
WHEELS=("$TMP"/wheels/memlens-*.whl)
[ -f "${WHEELS[0]}" ] || fail "no memlens wheel in $TMP/wheels"
step "built $(basename "${WHEELS[0]}")"

step "installing it into a fresh virtualenv"
"$PYTHON" -m venv "$TMP/venv" || fail "could not create a virtualenv"
"$TMP/venv/bin/pip" install -q --no-index "${WHEELS[0]}" || fail "pip install of the wheel failed"
# Run the installed command by name, as a user would: it must be on the venv's PATH.
export PATH="$TMP/venv/bin:$PATH"
[ "$(command -v memlens)" = "$TMP/venv/bin/memlens" ] || fail "memlens is not on the virtualenv's PATH"

VERSION=$(memlens --version) || fail "memlens --version exited with $?"
case "$VERSION" in
    "memlens "[0-9]*) step "memlens --version: $VERSION" ;;
    *) fail "unexpected memlens --version output: $VERSION" ;;
esac

step "starting a sleeping Python process to snapshot"
"$PYTHON" -c 'import sys, time; open(sys.argv[1], "w").close(); time.sleep(600)' "$TMP/ready" &
SLEEPER=$!
for _ in $(seq 100); do
    [ -e "$TMP/ready" ] && break
    kill -0 "$SLEEPER" 2>/dev/null || fail "the sleeper exited early"
    sleep 0.1
done
[ -e "$TMP/ready" ] || fail "the sleeper did not start within 10 s"

step "memlens snapshot --json $SLEEPER"
memlens snapshot --json "$SLEEPER" > "$TMP/snapshot.json" \
    || fail "memlens snapshot --json $SLEEPER exited with $?"
"$PYTHON" - "$TMP/snapshot.json" "$SLEEPER" <<'PY' || fail "the snapshot JSON does not meet the contract"
import json, sys
with open(sys.argv[1]) as f:
    snap = json.load(f)
pid = int(sys.argv[2])
pss = snap["totals"]["pss"]
assert isinstance(pss, int) and pss > 0, "totals.pss should be a positive integer, got %r" % (pss,)
pids = [p["pid"] for p in snap["processes"]]
assert pids == [pid], "processes should be just the sleeper %d, got %r" % (pid, pids)
print("test-packaging: snapshot ok: totals.pss %d bytes, rss %d bytes"
      % (pss, snap["totals"]["rss"]), file=sys.stderr)
PY

step "all checks passed"
