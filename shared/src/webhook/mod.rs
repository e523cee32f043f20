//! Webhook intake: signature schemes, envelope parsing, routing, the intake service and the
//! archiver.
//!
//! This is the front door for money events: a forged event must never get in, a real one must
//! never be lost. The rules live here, free of Lambda types; `functions/webhook-intake` only
//! translates a Function URL request into an [`Inbound`] and the [`Reply`] back, and an SQS
//! batch of the events queue into archiver [`archiver::Record`]s and the batch answer back.
//!
//! # Layout
//!
//! - [`signature`]: the failures both schemes share ([`SignatureError`]), tolerance checks.
//! - [`stripe_scheme`]: `Stripe-Signature` (`t=`, `v1=` hex HMAC over `"{t}.{body}"`, secret as
//!   raw bytes, several secrets, `v0` ignored).
//! - [`standard_scheme`]: Standard Webhooks (`webhook-id`/`-timestamp`/`-signature`, `v1,<base64>`
//!   over `"{id}.{t}.{body}"`, `whsec_` base64 secrets) for first-party sources.
//! - [`envelope`]: the verified body read just enough to route it (id, type, time), the
//!   events-queue message ([`envelope::Incoming`]) and the routed queues' message (the body
//!   embedded verbatim).
//! - [`routing`]: the table of which queue(s) each event type goes to.
//! - [`intake`]: the service: size limit -> base64 -> verify -> parse -> one `SendMessage` to
//!   the events queue -> reply; its one port is the [`crate::queue::QueueSender`].
//! - [`archiver`]: the events queue's consumer: a batch -> one gzip NDJSON archive object per
//!   event hour ([`crate::archive`]) -> `SendMessageBatch` to the routed queues -> the batch
//!   answer (failed records redelivered).
//! - [`recovery`]: Stripe's missed-event recovery through the intake's path.
//! - [`config`]: the typed configuration of both functions and the secrets' JSON shapes.

pub mod archiver;
pub mod config;
pub mod envelope;
pub mod intake;
pub mod recovery;
pub mod routing;
pub mod signature;
pub mod standard_scheme;
pub mod stripe_scheme;

pub use config::{ArchiverConfig, IntakeConfig, SourceSecrets, StripeSecrets, WebhookSecretIds};
/// webhook-intake's configuration (every function's domain names its own `Config`).
pub type Config = IntakeConfig;
pub use envelope::{Envelope, EnvelopeError, EventId, Incoming};
pub use intake::{Headers, Inbound, Intake, Outcome, Reply};
pub use routing::{Route, Routes, routes};
pub use signature::SignatureError;
pub use standard_scheme::{StandardHeaders, StandardSecret, StandardVerifier};
pub use stripe_scheme::StripeVerifier;

/// The source name reserved for Stripe (`POST /webhooks/stripe`).
pub const STRIPE: &str = "stripe";

/// A webhook source name: the `{source}` of `/webhooks/{source}`, part of the archive's
/// locators and of consumers' idempotency keys, so limited to `[a-z0-9_-]{1,32}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(String);

impl Source {
    /// `None` when `raw` is not a possible source name (it then cannot be configured either).
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 32
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is Stripe (verified with the Stripe scheme).
    pub fn is_stripe(&self) -> bool {
        self.0 == STRIPE
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names() {
        assert!(Source::parse("stripe").unwrap().is_stripe());
        assert!(!Source::parse("portal").unwrap().is_stripe());
        for bad in ["", "Portal", "a/b", "..", "x y", &"a".repeat(33)] {
            assert_eq!(Source::parse(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod intake_tests;
