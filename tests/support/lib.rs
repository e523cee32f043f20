//! Support for blapi's cross-function tests: the provisioned local stack and clients on it.
//!
//! # Layout
//! - [`clients`]: AWS clients pointed at a stack's emulator.

pub use blapi_infra::LocalStack;
pub use blapi_infra::testing::{fresh_stack, random_prefix, stack};

/// AWS clients for `stack`, built in the caller's runtime.
pub async fn clients(stack: &LocalStack) -> blapi::aws::Clients {
    blapi::aws::Clients::new(&stack.sdk_config().await)
}
