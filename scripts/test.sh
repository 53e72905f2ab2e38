#!/usr/bin/env bash
# The one command that runs every memlens test on a fresh machine (README, "Quick start").
# It installs what the tests need (Debian packages, then PyPI packages into a private venv),
# checks formatting and lints, runs the whole Rust test suite against the installed CPythons,
# and checks the pip packaging. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: util-linux's setpriv (unprivileged-user tests), chromium (HTML report test),
# sqlite3 (recordings are read back with the shell in tests); for the CPython layout tables:
# patchelf (sid's interpreters run with sid's loader), gdb (private structs from DWARF) and
# the aarch64 cross compiler (the aarch64 tables).
need=()
command -v setpriv >/dev/null || need+=(util-linux)
command -v chromium >/dev/null || need+=(chromium)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v patchelf >/dev/null || need+=(patchelf)
command -v gdb >/dev/null || need+=(gdb)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v promtool >/dev/null || need+=(prometheus) # memlens serve: a real scraper, promtool
command -v tmux >/dev/null || need+=(tmux)         # memlens top: a real terminal
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

log "interpreters beyond pyenv: CPython 3.14 and 3.15 from Debian sid, numpy (scripts/test-pythons.sh)"
bash scripts/test-pythons.sh >/dev/null

log "layout tables: regenerated in memory, equal to the checked-in ones"
python3 scripts/gen_layouts.py --check

log "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests (pyenv CPython 3.8-3.13, /usr/bin/python3.11, sid's 3.14 and 3.15, numpy; a missing one fails under CI)"
export CI="${CI:-true}"
cargo test --workspace --locked

log "packaging: wheel built with maturin, installed in a fresh virtualenv"
bash scripts/test-packaging.sh

# --- fuzzing (issue 8 item 12; fuzz/README.md) --------------------------------------------------
# Builds the cargo-fuzz targets (nightly Rust; cargo-fuzz is installed when missing) and runs each
# on its seeds, deterministically (seed 1, a fixed number of inputs: the same run on every
# machine, so what fails here fails the same way for whoever runs it): any crash, failed property,
# hang or oversized allocation fails the run. Longer, random fuzzing: scripts/fuzz.sh alone.
# MEMLENS_FUZZ_SECONDS=0 skips it (local iterations only).
if [ "${MEMLENS_FUZZ_SECONDS:-25}" != 0 ]; then
  log "fuzzing: the parsers of /proc, ELF, CPython memory and recordings (fixed seed and inputs)"
  MEMLENS_FUZZ_FIXED=1 bash scripts/fuzz.sh
fi
# --- end of fuzzing ------------------------------------------------------------------------------
