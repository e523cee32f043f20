//! # blapi-bench — the performance harness behind `make bench`
//!
//! Lambda bills memory × duration (init included) and users feel cold starts: this crate
//! measures what the functions cost to start and run, side by side with two hello-world Rust
//! lambdas built with the same profile in the same cargo invocation (`hello`: no AWS SDK;
//! `hello-sdk`: the functions' SDK setup, one client, one call — the fair floor), and prints the
//! budgets of issue 8 and the targets of "Scale and cost" as pass / falls-short lines. It builds nothing: `bench/run.sh` builds the release binaries and runs the criterion
//! benches first.
//!
//! # Layout
//!
//! - [`stub`]: the Lambda Runtime API on loopback; time-stamps the first `/next` and the first
//!   response of each cold start.
//! - [`measure`]: execs a binary against the stub (cold start: wall clock, peak RSS) or under
//!   callgrind (instructions until the first `/next`).
//! - [`events`]: renders `bench/events/<function>.json` with a fresh id and a valid signature
//!   per run (the functions deduplicate, so a replayed event would time the duplicate path).
//! - [`env`]: each function's environment pointed at the local stack.
//! - [`callgrind`], [`criterion`], [`stats`]: reading callgrind totals and criterion medians;
//!   median and p90.
//! - [`cost`]: the cost model, with the handlers' call counts as documented constants.
//! - [`report`]: budgets, Markdown and JSON.
//!
//! The binary: `blapi-bench` (the runner, `src/main.rs`). The baselines `blapi-hello` and
//! `blapi-hello-sdk` are the package `blapi-bench-hello` (`bench/hello`), so that the runner's
//! tooling dependencies stay out of the functions' feature resolution.

pub mod callgrind;
pub mod cost;
pub mod criterion;
pub mod env;
pub mod events;
pub mod measure;
pub mod report;
pub mod stats;
pub mod stub;
