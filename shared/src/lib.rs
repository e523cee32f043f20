//! # blapi — the common crate
//!
//! Every business rule of blapi lives here, free of Lambda types, so it can be tested without
//! AWS. The functions in `functions/` only translate events into calls of this crate.
//!
//! # Layout
//!
//! Layers, each using only those below it (checked by `shared/tests/layering.rs`):
//! functions -> domains -> external systems -> plumbing.
//!
//! Plumbing (used by every function):
//! - [`config`]: typed configuration read once from the environment; [`config::Secret`] never prints.
//! - [`aws`]: one `SdkConfig` per cold start, the clients, DynamoDB attribute helpers.
//! - [`secrets`]: secret values fetched once from AWS Secrets Manager.
//! - [`error`]: the crate's error type, each variant deliberately retryable or not.
//! - [`telemetry`]: JSON logs (`tracing`), CloudWatch EMF metrics, the outcome [`telemetry::Tally`].
//! - [`http`]: the one way to build an outgoing HTTP client and the one retry loop for it.
//! - [`tls`]: the compiled-in trust stores (no system certificate store read at cold start).
//! - [`retry`]: exponential backoff with jitter for outgoing HTTP calls.
//! - [`deadline`]: the invocation's deadline, which batches and retries respect.
//! - [`ledger`]: the idempotency ledger (claim / complete / release with a lease).
//! - [`notice`]: the notification message every function sends to the notifications queue.
//! - [`storage`]: the object-store port (S3 adapter, in-memory fake).
//! - [`archive`]: the event archive (gzip NDJSON objects of many events; seal, read, erase).
//! - [`queue`]: queue messages, the SQS sender with claim check, partial batch responses.
//! - [`values`]: parsed values that cross module boundaries ([`values::Country`]).
//!
//! External systems (know no domain):
//! - [`stripe`]: the Stripe client, typed objects, paging, capability ports, one fake.
//! - [`crm`]: the CRM port, Salesforce, the built-in sink, the fake.
//!
//! Business domains (one per function; each `mod.rs` lists its ports and adapters, and its
//! `Config`):
//! - [`webhook`]: signature schemes, intake routing and the archiver (webhook-intake).
//! - [`billing`]: usage, pricing, invoicing, dunning (usage-billing).
//! - [`licensing`]: license format, signing, minting and revocation (license-minting).
//! - [`leads`]: normalising, enriching, scoring, routing and upserting leads (lead-enrichment).
//! - [`notify`]: customer e-mail from the notifications queue, each id once (notifications).
//!
//! Every function is wired the same way: `Config::from_env` (its domain's), `Ports::connect`
//! (the real adapters, or fakes in tests), `App::new(config, ports)`, `App::handle`, and one
//! `Tally` of outcomes per invocation.

pub mod archive;
pub mod aws;
pub mod billing;
pub mod config;
pub mod crm;
pub mod customers;
pub mod deadline;
pub mod error;
pub mod events;
pub mod http;
pub mod leads;
pub mod ledger;
pub mod licensing;
pub mod notice;
pub mod notify;
pub mod portal;
pub mod privacy;
pub mod queue;
pub mod retry;
pub mod revenue;
pub mod secrets;
pub mod storage;
pub mod stripe;
pub mod subjects;
pub mod telemetry;
pub mod tls;
pub mod values;
pub mod webhook;

pub use error::{Error, Result};
