//! # webhook-intake
//!
//! The front door for money events. Triggered by its Lambda Function URL (payload format 2.0)
//! on `POST /webhooks/stripe` (Stripe-signed) and `POST /webhooks/{source}` (Standard Webhooks,
//! first-party sources such as `portal` and `telemetry`). It writes the raw event to S3
//! (`raw/{source}/{yyyy}/{mm}/{dd}/{id}.json`), one message per routed SQS queue, and one
//! idempotency-ledger entry per (source, event id). The rules live in [`blapi::webhook`].
//!
//! # Layout
//!
//! - `main.rs`: wiring only (telemetry, `Config::from_env`, [`Ports::connect`], [`App::new`],
//!   `lambda_runtime::run`).
//! - [`handler`]: [`App`], which translates a `LambdaFunctionUrlRequest` into a
//!   [`blapi::webhook::Inbound`] and the intake's [`blapi::webhook::Reply`] into a
//!   `LambdaFunctionUrlResponse`.
//! - [`samples`]: builds Function URL events (for `events/webhook-intake/`, tests and benches).

pub mod handler;
pub mod samples;

pub use handler::{App, Ports};
