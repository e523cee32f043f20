//! The harness end to end on the hello-world lambda: a real `lambda_runtime` process against
//! the stub, cold start and callgrind, as `make bench` runs them.

use blapi_bench::events::{self, RunValues, WebhookSecrets};
use blapi_bench::measure::{self, Target};
use blapi_bench::stub::{Outcome, Stub};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

fn hello() -> Target {
    Target {
        function: "hello".into(),
        label: "hello".into(),
        binary: PathBuf::from(env!("CARGO_BIN_EXE_blapi-hello")),
        env: measure::lambda_env("hello", 128, &BTreeMap::new(), None),
    }
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("blapi-bench-test-{}", uuid::Uuid::new_v4()))
        .join(name)
}

#[test]
fn a_cold_start_hands_the_event_and_times_the_response() {
    let stub = Stub::start().unwrap();
    let template = include_str!("../../events/hello.json");
    let run = RunValues::fresh("bench");
    let event = events::render(template, &run, &WebhookSecrets::default()).unwrap();
    let log = scratch("hello.log");

    let sample = measure::cold_start(
        &stub,
        &hello(),
        event.clone(),
        &log,
        Duration::from_secs(60),
    )
    .unwrap();

    // The hello world echoes the event: the stub handed it out and recorded the answer.
    let Outcome::Response(body) = &sample.outcome else {
        panic!("not a response: {:?}", sample.outcome)
    };
    let echoed: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        echoed,
        serde_json::from_slice::<serde_json::Value>(&event).unwrap()
    );
    assert_eq!(echoed["id"], run.uuid.as_str());
    assert!(sample.init_ms <= sample.first_response_ms);
    assert!(sample.peak_rss_kb.is_some_and(|kb| kb > 0));

    // The stub serves the next cold start with a fresh generation.
    let again = measure::cold_start(
        &stub,
        &hello(),
        b"{\"n\":2}".to_vec(),
        &log,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(again.outcome, Outcome::Response(b"{\"n\":2}".to_vec()));
}

#[test]
fn a_process_that_exits_before_responding_is_reported_with_its_status() {
    let stub = Stub::start().unwrap();
    let mut target = hello();
    target.binary = PathBuf::from("/bin/false");
    let err = measure::cold_start(
        &stub,
        &target,
        b"{}".to_vec(),
        &scratch("false.log"),
        Duration::from_secs(30),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("exited with"), "{err}");
}

#[test]
fn callgrind_counts_the_instructions_until_the_first_next() {
    if measure::which("valgrind").is_none() {
        eprintln!("valgrind is not installed: nothing to count with");
        return;
    }
    let stub = Stub::start().unwrap();
    let out = scratch("hello.callgrind.out");
    let instructions = measure::init_instructions(
        &stub,
        &hello(),
        &out,
        &out.with_extension("log"),
        Duration::from_secs(300),
    )
    .unwrap();
    // A Rust binary runs at least its loader and runtime setup; callgrind wrote its totals.
    assert!(instructions > 10_000, "{instructions}");
    assert!(stub.observation().first_next.is_some());
}
