#!/usr/bin/env bash
# `make bench`: build the measured binaries, run the functions' criterion benches, then measure
# and print the report (also target/bench/report.md and report.json).
#
#   bench/run.sh [blapi-bench options...]     e.g. bench/run.sh --runs 30
#
# Needs the local stack (moto) up: `make up`, or run it as `infra/stack.sh run bench/run.sh`.
# Environment:
#   BENCH_SKIP_BUILD=1           measure what is already built
#   BENCH_SKIP_CRITERION=1       do not run `cargo bench` (the report still reads old results)
#   BENCH_CRITERION_ARGS="..."   extra criterion arguments (e.g. "--warm-up-time 1 --measurement-time 3")
#   BENCH_COMPARE_PROFILE=NAME   also build webhook-intake and the hello world with this cargo
#                                profile (e.g. release-small) and report them side by side
#                                (a full rebuild of the dependencies with that profile: slow)
set -euo pipefail
cd "$(dirname "$0")/.."

FUNCTIONS=(webhook-intake usage-billing license-minting lead-enrichment customer-sync revenue-ops privacy-requests portal-api notifications)
packages=() bins=() benched=()
for f in "${FUNCTIONS[@]}"; do
  packages+=(-p "$f")
  bins+=(--bin "$f")
  if compgen -G "functions/$f/benches/*.rs" >/dev/null; then benched+=(-p "$f"); fi
done

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  # One cargo invocation, one feature resolution: the four functions and the hello-world
  # baseline with the same release profile. Only the bins (the runner is built below).
  cargo build --release "${packages[@]}" -p blapi-bench "${bins[@]}" --bin blapi-hello
  if [ -n "${BENCH_COMPARE_PROFILE:-}" ]; then
    cargo build --profile "$BENCH_COMPARE_PROFILE" -p webhook-intake -p blapi-bench \
      --bin webhook-intake --bin blapi-hello
  fi
fi

if [ "${BENCH_SKIP_CRITERION:-0}" != 1 ] && [ ${#benched[@]} -gt 0 ]; then
  # Bench targets only (`--bench '*'`): `cargo bench` would otherwise also build every lib and
  # bin in test mode with the release profile.
  # shellcheck disable=SC2086 # BENCH_CRITERION_ARGS is a list of words
  cargo bench "${benched[@]}" --bench '*' -- ${BENCH_CRITERION_ARGS:-}
fi

compare=()
if [ -n "${BENCH_COMPARE_PROFILE:-}" ]; then compare=(--compare "$BENCH_COMPARE_PROFILE"); fi

# The runner is not measured: the dev profile spares a release link of the AWS SDK.
cargo run --quiet -p blapi-bench --bin blapi-bench -- --repo . "${compare[@]}" "$@"
