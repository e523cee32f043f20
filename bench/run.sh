#!/usr/bin/env bash
# `make bench`: run the functions' criterion benches, build the measured binaries, then measure
# and print the report (also target/bench/report.md and report.json).
#
#   bench/run.sh [blapi-bench options...]     e.g. bench/run.sh --runs 30
#
# Needs the local stack (moto) up: `make up`, or run it as `infra/stack.sh run bench/run.sh`.
# Environment:
#   BENCH_SKIP_BUILD=1           measure what is already built
#   BENCH_SKIP_CRITERION=1       do not run `cargo bench` (the report still reads old results)
#   BENCH_CRITERION_ARGS="..."   extra criterion arguments (e.g. "--warm-up-time 1 --measurement-time 3")
#   BENCH_COMPARE_PROFILE=NAME   also build webhook-intake and the hello worlds with this cargo
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

if [ "${BENCH_SKIP_CRITERION:-0}" != 1 ] && [ ${#benched[@]} -gt 0 ]; then
  # Bench targets only (`--bench '*'`): `cargo bench` would otherwise also build every lib and
  # bin in test mode with the release profile. First: it also builds each benched package's
  # bins (for its benches) with the dev-dependencies' features into target/release, which the
  # build below then replaces with the binaries as deployed.
  # shellcheck disable=SC2086 # BENCH_CRITERION_ARGS is a list of words
  cargo bench "${benched[@]}" --bench '*' -- ${BENCH_CRITERION_ARGS:-}
fi

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  # One cargo invocation, one feature resolution: the functions and the two hello-world
  # baselines (blapi-hello: no SDK; blapi-hello-sdk: one SDK client, one call) with the same
  # release profile. The baselines are a package of their own (bench/hello): the runner's
  # tooling dependencies stay out of this resolution, as they are out of a function's
  # deployed build (`cargo lambda build` in its own directory). The runner is built below.
  cargo build --release "${packages[@]}" -p blapi-bench-hello "${bins[@]}" \
    --bin blapi-hello --bin blapi-hello-sdk
  if [ -n "${BENCH_COMPARE_PROFILE:-}" ]; then
    cargo build --profile "$BENCH_COMPARE_PROFILE" -p webhook-intake -p blapi-bench-hello \
      --bin webhook-intake --bin blapi-hello --bin blapi-hello-sdk
  fi
fi

compare=()
if [ -n "${BENCH_COMPARE_PROFILE:-}" ]; then compare=(--compare "$BENCH_COMPARE_PROFILE"); fi

# The runner is not measured: the dev profile spares a release link of the AWS SDK.
cargo run --quiet -p blapi-bench --bin blapi-bench -- --repo . "${compare[@]}" "$@"
