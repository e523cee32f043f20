//! # Privacy requests (GDPR and CCPA): the rules
//!
//! What the privacy-requests function will run on. Built so far:
//! - [`deadline`]: when a request is due, by jurisdiction, with its one extension, and how
//!   urgent it is on a given day.
//! - [`request`]: a request's record: kind, jurisdiction, the subject (a keyed hash, never the
//!   address), status, and an append-only audit trail of what each system found, exported,
//!   erased or kept (with the legal basis of anything kept).
//!
//! The subject index and the tombstones live in [`crate::subjects`]: lead-enrichment and
//! customer-sync write the index before any personal data and refuse to write an erased
//! person again.

pub mod deadline;
pub mod request;

pub use deadline::{Jurisdiction, Urgency, due_date, urgency};
pub use request::{AuditEntry, PrivacyRequest, RequestKind, RequestStatus};
