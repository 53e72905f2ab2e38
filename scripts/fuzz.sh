#!/usr/bin/env bash
# Builds the cargo-fuzz targets of fuzz/ and runs each for a short time on its seed corpus
# (fuzz/README.md). Fails on any crash, failed property, hang (-timeout), allocation above
# -malloc_limit_mb or memory above -rss_limit_mb, and prints the input that did it in base64.
# Then replays the reproducer of every known finding in code owned elsewhere
# (fuzz/src/known.rs) and says which still reproduce (informational).
#
#   scripts/fuzz.sh                   every target, MEMLENS_FUZZ_SECONDS (default 25) each
#   MEMLENS_FUZZ_FIXED=1 scripts/fuzz.sh   the same run on every machine (CI's, through
#                                     scripts/test.sh): a fresh corpus of the seeds alone, seed 1
#                                     for the mutations, a fixed number of inputs per target
#                                     (fixed_runs below: about 10-20 s each here); a finding is
#                                     then reproduced by the same command anywhere
#   scripts/fuzz.sh objects procfs    only these
#   scripts/fuzz.sh --strict [...]    no gates around known findings, and overflow checks in
#                                     memlens-cpython too (a separate build in fuzz/target-strict)
#
# Needs a nightly toolchain (installed with rustup when missing) and cargo-fuzz (installed from
# crates.io when missing). Corpora grow in fuzz/corpus/TARGET (git-ignored); crashes land in
# fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${MEMLENS_FUZZ_SECONDS:-25}"
strict=0
if [ "${1:-}" = --strict ]; then
  strict=1
  shift
fi
all=(procfs discovery objects interpreter recording trace)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

opts=()
if [ "$strict" = 1 ]; then
  export MEMLENS_FUZZ_STRICT=1
  export RUSTFLAGS="${RUSTFLAGS:-} -Coverflow-checks=on"
  opts=(--target-dir fuzz/target-strict)
fi
limits=(-timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=256)
# What a failed run says first: a panic's place, the allocation, the hang.
cause='panicked at [^ ]+|out-of-memory \(malloc\([0-9]+\)\)|AddressSanitizer: out of memory|timeout after [0-9]+ seconds'

# cargo-fuzz has no --locked: check fuzz/Cargo.lock is current (and fetch) first.
cargo +nightly fetch --manifest-path fuzz/Cargo.toml --locked
# The harness's own tests first: the seed heaps decode as built, every finding has its
# reproducer (a broken harness fuzzes nothing it claims to).
cargo +nightly test --manifest-path fuzz/Cargo.toml --lib --locked --quiet
cargo +nightly fuzz build "${opts[@]}"

declare -A fixed_runs=([procfs]=300000 [discovery]=300000 [objects]=200000 [interpreter]=100000
  [recording]=1500 [trace]=100000)
failed=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  how=(-max_total_time="$seconds")
  if [ "${MEMLENS_FUZZ_FIXED:-0}" = 1 ]; then
    corpus="fuzz/corpus-fixed/$t"
    rm -rf "$corpus"
    how=(-seed=1 -runs="${fixed_runs[$t]}")
  fi
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  # Each target writes its own seeds (from the fixtures and the layouts) and exits.
  MEMLENS_FUZZ_SEEDS="$corpus" cargo +nightly fuzz run "${opts[@]}" "$t" -- -runs=0 2>&1 | tail -1
  stamp="fuzz/artifacts/$t.started"
  touch "$stamp"
  log="fuzz/artifacts/$t.log"
  printf '== fuzz %s: %s\n' "$t" "${how[*]}"
  extra=()
  [ ! -f "fuzz/dicts/$t.dict" ] || extra=(-dict="fuzz/dicts/$t.dict")
  if cargo +nightly fuzz run "${opts[@]}" "$t" "$corpus" -- "${how[@]}" \
      "${limits[@]}" "${extra[@]}" -print_final_stats=1 -close_fd_mask=1 >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|cov: ' "$log" | tail -3
  else
    failed+=("$t")
    grep -E -A12 "$cause|ERROR: libFuzzer" "$log" | head -40
    for a in $(find "fuzz/artifacts/$t" -type f -newer "$stamp"); do
      printf 'failing input %s (base64): %s\n' "$a" "$(base64 -w0 "$a")"
    done
  fi
done

# Known findings: the runs above step around them; replay each reproducer with the gates off.
# Those named overflow-* need overflow checks in memlens-cpython: only --strict replays them.
for t in "${targets[@]}"; do
  dir="fuzz/artifacts/known/$t"
  rm -rf "$dir"
  MEMLENS_FUZZ_KNOWN="$dir" cargo +nightly fuzz run "${opts[@]}" "$t" -- -runs=0 >/dev/null 2>&1 || true
  for f in "$dir"/*; do
    [ -e "$f" ] || continue
    id=$(basename "$f")
    case "$id" in *.log) continue ;; esac
    if [ "$strict" = 0 ] && [ "${id#overflow-}" != "$id" ]; then
      printf 'known finding %s (%s): replayed by scripts/fuzz.sh --strict only\n' "$id" "$t"
      continue
    fi
    if MEMLENS_FUZZ_STRICT=1 cargo +nightly fuzz run "${opts[@]}" "$t" "$f" -- "${limits[@]}" \
        >"$f.log" 2>&1; then
      printf 'known finding %s (%s): no longer reproduces; remove it from fuzz/src/known.rs\n' \
        "$id" "$t"
    else
      printf 'known finding %s (%s): still reproduces (%s)\n' "$id" "$t" \
        "$(grep -m1 -oE "$cause" "$f.log" || echo crash)"
    fi
  done
done

if [ ${#failed[@]} -gt 0 ]; then
  printf 'fuzz targets that failed: %s\n' "${failed[*]}" >&2
  exit 1
fi
