//! # blapi — the common crate
//!
//! Every business rule of blapi lives here, free of Lambda types, so it can be tested without
//! AWS. The functions in `functions/` only translate events into calls of this crate.
//!
//! # Layout
//!
//! Plumbing (used by every function):
//! - [`config`]: typed configuration read once from the environment; [`config::Secret`] never prints.
//! - [`aws`]: one `SdkConfig` per cold start and the clients built from it.
//! - [`secrets`]: secret values fetched once from AWS Secrets Manager.
//! - [`error`]: the crate's error type, each variant deliberately retryable or not.
//! - [`telemetry`]: JSON logs (`tracing`) and CloudWatch EMF metrics.
//! - [`http`]: the one way to build an outgoing HTTP client (rustls, timeouts).
//! - [`tls`]: the compiled-in trust stores (no system certificate store read at cold start).
//! - [`retry`]: exponential backoff with jitter for outgoing HTTP calls.
//! - [`ledger`]: the idempotency ledger (claim / complete / release with a lease).
//! - [`storage`]: the object-store port (S3 adapter, in-memory fake).
//! - [`queue`]: queue messages, the SQS sender with claim check, partial batch responses.
//! - [`stripe`]: the Stripe HTTP client (injected base URL, retries, `Idempotency-Key`).
//!
//! Business domains (one per function, each with its ports and rules):
//! - [`webhook`]: signature schemes and intake routing (webhook-intake).
//! - [`billing`]: usage, pricing, invoicing, dunning (usage-billing).
//! - [`licensing`]: license format, signing, minting and revocation (license-minting).
//! - [`leads`] and [`crm`]: normalising, enriching, scoring, routing and upserting leads
//!   (lead-enrichment).

pub mod aws;
pub mod billing;
pub mod config;
pub mod crm;
pub mod error;
pub mod http;
pub mod leads;
pub mod ledger;
pub mod licensing;
pub mod queue;
pub mod retry;
pub mod secrets;
pub mod storage;
pub mod stripe;
pub mod telemetry;
pub mod tls;
pub mod webhook;

pub use error::{Error, Result};
