//! `blapi-hello`: the first baseline of the cold-start ratios in the bench report.
//!
//! A hello-world Rust lambda (lambda_runtime + tokio, nothing else) built with the workspace's
//! release profile in the same `cargo build` as the functions, so that "function / hello-world"
//! isolates what our code and its dependencies add. It echoes the event back. The fair floor of
//! an SDK lambda is its sibling `blapi-hello-sdk`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
