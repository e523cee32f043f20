//! Support for blapi's cross-function tests and the demo: the provisioned local stack, the
//! functions running under `cargo lambda watch` with the event-source mapper, and the
//! business scenario played through them.
//!
//! # Layout
//! - [`clients`]: AWS clients pointed at a stack's emulator.
//! - [`faults`]: a fault-injecting proxy in front of an emulator, and a retrying webhook relay.
//! - [`harness`]: starts `cargo lambda watch` with a stack's environment, and the mapper.
//! - [`scenario`]: the end-to-end business scenario (`make demo`, `tests/e2e.rs`).

pub mod accounting;
pub mod faults;
pub mod harness;
pub mod scenario;

pub use blapi_infra::LocalStack;
pub use blapi_infra::testing::{fresh_stack, random_prefix, stack};

/// AWS clients for `stack`, built in the caller's runtime.
pub async fn clients(stack: &LocalStack) -> blapi::aws::Clients {
    blapi::aws::Clients::new(&stack.sdk_config().await)
}

/// The localstripe base URL (`LOCALSTRIPE_URL`, as the Makefile exports it).
pub fn localstripe_url() -> String {
    std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".to_owned())
}
