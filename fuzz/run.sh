#!/usr/bin/env bash
# Builds every fuzz target (nightly, cargo-fuzz) and runs each for FUZZ_SECONDS, one after the
# other, on a corpus seeded from events/ (fuzz/seed.py); prints one line per target and exits
# non-zero when any target found a crash (its input is kept in fuzz/artifacts/<target>/).
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   the targets to run, space-separated (default: all)
#   FUZZ_SANITIZER sanitizer for the build (default none: blapi forbids unsafe code, and
#                  without AddressSanitizer the build is shorter and runs are faster;
#                  `address` for a run over dependencies' unsafe code)
#   FUZZ_PROFILE   release (default: optimised, as fuzzing should be) or dev (unoptimised:
#                  a much shorter cold build, for the CI smoke run)
#   FUZZ_ARGS      extra libFuzzer flags for every run (e.g. -runs=10000000)
#
# cargo-fuzz is installed into .venv/ when missing (like the other dev tools).
set -euo pipefail

cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
SANITIZER=${FUZZ_SANITIZER:-none}
build_flags=(--sanitizer "$SANITIZER")
case ${FUZZ_PROFILE:-release} in
  release) ;;
  dev) build_flags+=(--dev) ;;
  *) echo "fuzz: FUZZ_PROFILE is release or dev" >&2; exit 2 ;;
esac
CARGO_FUZZ_VERSION=0.13.2
export PATH="$ROOT/.venv/bin:$PATH"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly --profile minimal)" >&2
  exit 2
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into .venv/"
  (cd "$ROOT" && cargo install --locked --quiet --root .venv cargo-fuzz --version "$CARGO_FUZZ_VERSION")
fi

all_targets=$(cargo +nightly fuzz list)
targets=${FUZZ_TARGETS:-$all_targets}
for t in $targets; do
  grep -qx "$t" <<<"$all_targets" || { echo "fuzz: no target $t (have: $(echo $all_targets))" >&2; exit 2; }
done

echo "== seeding fuzz/corpus/ from events/"
# shellcheck disable=SC2086
python3 seed.py $targets

echo "== building the fuzz targets (nightly, ${FUZZ_PROFILE:-release}, sanitizer $SANITIZER)"
build_started=$(date +%s)
cargo +nightly fuzz build "${build_flags[@]}"
echo "   built in $(( $(date +%s) - build_started )) s"

mkdir -p target/logs
summary=()
failed=0
for t in $targets; do
  mkdir -p "artifacts/$t" "corpus/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  log="target/logs/$t.log"
  echo "== $t: ${SECONDS_PER_TARGET} s"
  started=$(date +%s)
  status=0
  # shellcheck disable=SC2086
  cargo +nightly fuzz run "${build_flags[@]}" "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -print_final_stats=1 ${FUZZ_ARGS:-} \
    >"$log" 2>&1 || status=$?
  took=$(( $(date +%s) - started ))
  runs=$(awk -F': *' '/^stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
  rate=$(awk -F': *' '/^stat::average_exec_per_sec/ {print $2}' "$log" | tail -1)
  if [ -z "$runs" ]; then
    # A crash ends the run before the final stats: take libFuzzer's last status line.
    runs=$(grep -Eo '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    rate=$(grep -Eo 'exec/s: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+')
  fi
  crashes=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
  corpus=$(find "corpus/$t" -type f | wc -l)
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    echo "   FAILED (exit $status); log: fuzz/$log"
    grep -E "panicked at|^Test unit written|SUMMARY" "$log" | head -5 | sed 's/^/   /'
  fi
  summary+=("$(printf '%-18s %12s %9s %7s %7s %6s' "$t" "${runs:-?}" "${rate:-?}" "$crashes" "$corpus" "$took")")
done

echo
printf '%-18s %12s %9s %7s %7s %6s\n' target executions exec/s crashes corpus secs
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzz: crash found; reproduce with: cd fuzz && cargo +nightly fuzz run ${build_flags[*]} <target> artifacts/<target>/<file>" >&2
  exit 1
fi
