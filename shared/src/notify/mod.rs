//! # Notifications: customer e-mail, each sent once
//!
//! What the notifications function runs: every message on the notifications queue is a
//! [`crate::notice::Notification`] (one definition, every producer uses it). For each one,
//! [`Notifier::deliver`]:
//!
//! 1. refuses an unknown `type` (a clear, non-retryable error naming it; the message fails
//!    alone and reaches the DLQ after its retries, like any invalid message);
//! 2. claims `notify#{id}` in the idempotency ledger: an id already sent is a duplicate
//!    (acknowledged, not sent again), one being sent by a concurrent delivery is retried later;
//! 3. finds the recipient: the operations address for internal kinds, else `to`, else the
//!    customer's e-mail read from Stripe at send time (a customer deleted or without an
//!    address fails alone, naming the customer id, never an address);
//! 4. skips non-transactional kinds for a person who opted out (their subject's recorded
//!    choice in the subject index);
//! 5. signs fresh, expiring links to the objects the message names (`file_key`, `html_key`,
//!    `pdf_key`, `bundle_key`; each only under its own prefix);
//! 6. renders the kind's templates ([`render`]: `templates/notifications/<type>.subject.txt`,
//!    `.txt`, `.html`, compiled into the binary; HTML auto-escaped, an undefined value is an
//!    error) and sends through the [`Mailer`], retrying throttling with backoff; still
//!    throttled, the error is retryable and SQS redelivers the message.
//!
//! Nothing personal is logged: the notification id, its type and the customer id only.
//!
//! # Ports and adapters
//!
//! | port | what for | adapter (Lambda) | fake (tests) |
//! |---|---|---|---|
//! | [`Mailer`] | send one rendered e-mail | `SesMailer` (SES v2, in `functions/notifications`) | [`MemoryMailer`] |
//! | [`crate::ledger::Ledger`] | each id sent once | [`crate::ledger::DynamoLedger`] (`LEDGER_TABLE`) | [`crate::ledger::MemoryLedger`] |
//! | [`crate::stripe::StripeReads`] | the customer's address and name | [`crate::stripe::StripeClient`] | [`crate::stripe::MemoryStripe`] |
//! | [`crate::subjects::Subjects`] | opt-out choices | the PrivacyTable and the subject key | [`crate::subjects::Subjects::for_tests`] |
//! | [`crate::storage::ObjectStore`] | pre-signed links | [`crate::storage::S3Store`] (`ARTIFACTS_BUCKET`) | [`crate::storage::MemoryStore`] |
//!
//! Configuration: [`Config::from_env`] (see [`config`]).

pub mod config;
pub mod mailer;
pub mod render;
pub mod service;

pub use config::Config;
pub use mailer::{Mail, Mailer, MemoryMailer};
pub use render::{Rendered, Templates};
pub use service::{Notifier, Outcome, Ports, Settings};

#[cfg(test)]
mod tests;
