#!/usr/bin/env bash
# Packaging test: builds the memlens wheel from this checkout, installs it into a fresh
# virtualenv, and checks that the installed `memlens` runs: `--version`, then
# `snapshot --json` of a sleeping Python process whose JSON must parse and have totals.pss > 0,
# then `run --trace=all` of a program holding a 32 MiB bytearray, with no tracer library
# installed beside it (the binary carries it): the report must attribute those bytes to their
# line, and the private directory must be gone.
# Then the Python package of the same wheel (docs/python.md): `import memlens;
# memlens.snapshot()`, its unit tests (python/tests/unit, with pytest from PyPI), and the
# pytest plugin on a small project (python/tests/plugin_project): a test over its budget fails
# with memlens's explanation and one under it passes; --memlens-fail-on-increase writes its
# baseline when absent and fails when a test's peak grows past the threshold; --memlens
# prints the summary. The same wheel is also installed for ALSO_PYTHON (default: pyenv's
# CPython 3.8, the oldest the wheel accepts, when pyenv has it; "none" skips) and the Python
# checks run there too.
#
# usage: scripts/test-packaging.sh            (PYTHON=python3.x to choose the interpreter)
# Needs: a Rust toolchain, a Python 3.8+ with pip and venv, and PyPI access for maturin
# (the build requirement in pyproject.toml) and pytest. Exits non-zero on the first failure
# and removes its temporary directory and the sleeper process in every case.
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

# --- memlens run --trace: the tracer is carried inside the binary ----------------------------
step "memlens run --trace=all from the wheel (its tracer built into the binary)"
find "$TMP/venv" -name 'libmemlens_preload*' | grep -q . \
    && fail "the wheel installed a libmemlens_preload file: the test would not show the embedded one"
mkdir "$TMP/tracetmp"
printf 'held = bytearray(32 << 20)\nprint("traced ok")\n' > "$TMP/traced.py"
env -u MEMLENS_PRELOAD -u LD_PRELOAD TMPDIR="$TMP/tracetmp" memlens run -q --trace=all \
    -o "$TMP/traced.db" -- "$TMP/venv/bin/python" "$TMP/traced.py" > "$TMP/traced.out" \
    || fail "memlens run --trace exited with $?"
[ "$(cat "$TMP/traced.out")" = "traced ok" ] || fail "the traced program printed: $(cat "$TMP/traced.out")"
[ -z "$(ls -A "$TMP/tracetmp")" ] || fail "left in the temporary directory: $(ls -A "$TMP/tracetmp")"
memlens report --json "$TMP/traced.db" > "$TMP/traced.json" || fail "memlens report --json exited with $?"
"$PYTHON" - "$TMP/traced.json" "$TMP/traced.py" <<'PY' || fail "the traced run did not attribute the bytes held"
import json, sys
a = json.load(open(sys.argv[1]))["allocations"]
assert a is not None and a["mode"] == "all", a
held = 32 << 20
on = sum(l["bytes"] for l in a["at_peak"]["by_line"] if l["file"] == sys.argv[2] and l["line"] == 1)
assert held <= on <= held * 1.01, "%d bytes at the peak on line 1, held %d" % (on, held)
print("test-packaging: traced ok: %d bytes at the peak on %s:1 (held %d)" % (on, sys.argv[2], held),
      file=sys.stderr)
PY

# --- the Python package and the pytest plugin -----------------------------------------------
export PYTHONDONTWRITEBYTECODE=1 # nothing written into the checkout's test directories

# expect_rc WANT OUT CMD...: runs CMD with its output in OUT; fails unless it exits WANT.
expect_rc() {
    local want=$1 out=$2 rc=0
    shift 2
    "$@" >"$out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || { cat "$out" >&2; fail "expected exit $want, got $rc: $*"; }
}
# has OUT PATTERN: OUT must contain PATTERN (grep -E).
has() { grep -Eq -- "$2" "$1" || { cat "$1" >&2; fail "no '$2' in the output above"; }; }

python_checks() { # VENV: a virtualenv with the wheel installed
    local venv=$1 py=$1/bin/python out=$TMP/out
    local label
    label=$("$py" -c 'import platform; print(platform.python_version())')
    step "[$label] python -c 'import memlens; print(memlens.snapshot())'"
    "$py" -c "import memlens; print(memlens.snapshot())" >"$out" || fail "memlens.snapshot() failed"
    has "$out" "'root': [0-9]+"
    "$py" - "$venv" <<'PY' || fail "the package is not the wheel's, or does not find the wheel's binary"
import os, sys, sysconfig
import memlens
venv = os.path.realpath(sys.argv[1])
assert os.path.realpath(memlens.__file__).startswith(venv), memlens.__file__
assert memlens.find_binary() == os.path.join(sysconfig.get_path("scripts"), "memlens")
snap = memlens.snapshot()
assert snap["root"] == os.getpid() and snap["totals"]["pss"] > 0, snap["totals"]
PY

    step "[$label] installing pytest from PyPI"
    "$venv/bin/pip" install -q pytest || fail "pip install pytest failed"

    step "[$label] python/tests/unit (size parsing, errors, snapshot, census, limit)"
    (cd "$ROOT/python/tests/unit" && "$py" -m pytest -q -p no:cacheprovider .) \
        || fail "the Python unit tests failed"

    local proj=$ROOT/python/tests/plugin_project
    step "[$label] plugin: @pytest.mark.memlens budgets"
    expect_rc 1 "$out" env -C "$proj" "$py" -m pytest -v -p no:cacheprovider test_budgets.py
    has "$out" "test_budgets.py::test_over_peak_budget FAILED"
    has "$out" "test_budgets.py::test_under_peak_budget PASSED"
    has "$out" "test_budgets.py::test_over_growth_budget FAILED"
    has "$out" "test_budgets.py::test_under_growth_budget PASSED"
    has "$out" "test_budgets.py::test_not_measured PASSED"
    has "$out" "memlens: the peak, [0-9.]+ MiB, is over the budget max_peak=100 MiB"
    has "$out" "peak: [0-9.]+ MiB, the VmHWM of pid [0-9]+"
    has "$out" "memlens: the growth, \+[0-9.]+ MiB, is over the budget max_growth=16.0 MiB"
    has "$out" "breakdown"
    has "$out" "2 failed, 3 passed"

    local base=$TMP/baseline-$label.json
    step "[$label] plugin: --memlens-fail-on-increase (the baseline is written when absent)"
    local inc=(-m pytest -v -p no:cacheprovider --memlens-fail-on-increase
        --memlens-baseline "$base" --memlens-threshold 32MiB test_increase.py)
    expect_rc 0 "$out" env -C "$proj" MEMLENS_TEST_ALLOC_MIB=8 "$py" "${inc[@]}"
    has "$out" "memlens: wrote the baseline"
    [ -f "$base" ] || fail "no baseline written at $base"
    "$py" -c 'import json, sys; t = json.load(open(sys.argv[1]))["tests"]; assert t["test_increase.py::test_allocates"]["peak"] > 8 << 20, t' "$base" \
        || fail "the baseline does not hold the test's peak"
    cp "$base" "$TMP/baseline-before"
    expect_rc 0 "$out" env -C "$proj" MEMLENS_TEST_ALLOC_MIB=8 "$py" "${inc[@]}"
    has "$out" "test_increase.py::test_allocates PASSED"
    expect_rc 1 "$out" env -C "$proj" MEMLENS_TEST_ALLOC_MIB=128 "$py" "${inc[@]}"
    has "$out" "test_increase.py::test_allocates FAILED"
    has "$out" "memlens: the peak, [0-9.]+ MiB, grew by \+[0-9.]+ MiB over the baseline's"
    cmp -s "$base" "$TMP/baseline-before" || fail "an existing baseline was changed"

    step "[$label] plugin: --memlens summary"
    expect_rc 0 "$out" env -C "$proj" "$py" -m pytest -p no:cacheprovider --memlens test_increase.py
    has "$out" "memlens: largest peaks \(1 of 1 tests measured\)"
    has "$out" "test_increase.py::test_allocates"
}

python_checks "$TMP/venv"

if [ -z "${ALSO_PYTHON:-}" ] && command -v pyenv >/dev/null; then
    ALSO_PYTHON=$(pyenv prefix 3.8.18 2>/dev/null || pyenv prefix 3.8 2>/dev/null || true)
    [ -n "$ALSO_PYTHON" ] && ALSO_PYTHON=$ALSO_PYTHON/bin/python3
fi
if [ -n "${ALSO_PYTHON:-}" ] && [ "$ALSO_PYTHON" != none ]; then
    step "installing the same wheel for $("$ALSO_PYTHON" -V 2>&1)"
    "$ALSO_PYTHON" -m venv "$TMP/venv-also" || fail "could not create a virtualenv with $ALSO_PYTHON"
    "$TMP/venv-also/bin/pip" install -q --no-index "${WHEELS[0]}" || fail "pip install of the wheel failed"
    python_checks "$TMP/venv-also"
fi

step "all checks passed"
