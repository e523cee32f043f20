//! # webhook-intake
//!
//! The front door for money events, and their archive. One binary serves three Lambda
//! functions of template.yaml (the same `CodeUri`, one role each), dispatching on the event's
//! shape:
//!
//! - **intake** (`WebhookIntakeFunction`), its Function URL (payload format 2.0): `POST
//!   /webhooks/stripe` (Stripe-signed) and `POST /webhooks/{source}` (Standard Webhooks,
//!   first-party sources such as `portal` and `telemetry`). Size limit -> verify -> parse ->
//!   one `SendMessage` of the event to the events queue -> 200. No DynamoDB, no S3 (bar the
//!   claim check of a body over the SQS limit).
//! - **archiver** (`WebhookArchiverFunction`), the events queue's SQS batches (up to 500, a
//!   batching window): one gzip NDJSON object per batch and event hour under
//!   `archive/batch/...`, then one message per routed queue (`SendMessageBatch` by 10), then
//!   the batch answer (failed records redelivered).
//! - **archive maintenance** (`WebhookArchiveMaintenanceFunction`), schedules only: the hourly
//!   seal (`{"action": "seal"}`: an hour's batch objects merged into one object, each event
//!   once, with a manifest of keyed subject hashes) and the daily Stripe missed-event recovery
//!   (`{"action": "recover_stripe"}`).
//!
//! The rules live in [`blapi::webhook`] and [`blapi::archive`].
//!
//! # Layout
//!
//! - `main.rs`: wiring only (telemetry, `Config::from_env`, [`Ports::connect`], [`App::new`],
//!   `lambda_runtime::run`).
//! - [`handler`]: [`App`], which translates a `LambdaFunctionUrlRequest` into a
//!   [`blapi::webhook::Inbound`] and the intake's [`blapi::webhook::Reply`] into a
//!   `LambdaFunctionUrlResponse`, an `SqsEvent` into archiver records and the batch answer
//!   back, and the two actions into their reports.
//! - [`samples`]: builds Function URL events (for `events/webhook-intake/`, tests and benches).

pub mod handler;
pub mod samples;

pub use handler::{App, Ports};
