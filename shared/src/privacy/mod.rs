//! # Privacy requests (GDPR and CCPA)
//!
//! What the privacy-requests function runs:
//! - [`deadline`]: when a request is due, by jurisdiction, with its one extension, and how
//!   urgent it is on a given day.
//! - [`request`]: a request's record: kind, jurisdiction, the subject (a keyed hash, never the
//!   address), status, and an append-only audit trail of what each system found, exported,
//!   erased or kept (with the legal basis of anything kept).
//! - [`store`]: where requests are kept (one open request per person and kind).
//! - [`connectors`]: one per system holding personal data (find, export, erase or keep with
//!   a basis, opt-out), and the sweeps (queues at rest, claim-checked bodies, the event
//!   archive by the keyed subject hashes it carries).
//! - [`service`]: submit, process (resumable), extend, and the daily sweep of deadlines.
//!
//! The subject index and the tombstones live in [`crate::subjects`]: lead-enrichment and
//! customer-sync write the index before any personal data, and refuse to write an erased person
//! again. The event archive is not indexed per event: its lines and manifests carry the keyed
//! subject hashes ([`crate::archive`]).

pub mod config;
pub mod connectors;
pub mod deadline;
pub mod input;
pub mod request;
pub mod service;
pub mod store;

pub use config::Config;
pub use deadline::{Jurisdiction, Urgency, due_date, urgency};
pub use request::{AuditEntry, PrivacyRequest, RequestKind, RequestStatus};
pub use service::{Ports, PrivacyService, Submission};
pub use store::{DynamoRequests, MemoryRequests, RequestStore};

#[cfg(test)]
mod tests;
