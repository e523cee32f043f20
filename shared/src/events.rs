//! The events blapi's functions send each other (source `blapi`), on the same queues and in the
//! same [`EventMessage`] envelope as webhooks, so a consumer handles both alike. Each is
//! idempotent to receive: it carries the whole current fact, never a delta, and its id names
//! the fact, so a redelivery or a resend says the same thing again.
//!
//! | type | sent by | when |
//! |---|---|---|
//! | `license.issued`, `license.superseded`, `license.revoked` | license-minting | a license changed state |
//! | `invoice.finalized` | usage-billing | a usage invoice is complete (Stripe + artifacts) |

use crate::queue::EventMessage;
use crate::values::Money;
use serde::{Deserialize, Serialize};

/// The source name of internal events.
pub const SOURCE: &str = "blapi";

/// A license as customer sync needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseChanged {
    pub customer: String,
    pub subscription: String,
    pub license_id: String,
    pub kid: String,
    pub seats: u32,
    pub sku: String,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
    pub file_key: String,
}

/// A finished usage invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFinalized {
    pub customer: String,
    /// The Stripe invoice (none for a zero invoice that was never sent to Stripe).
    pub invoice: Option<String>,
    /// `YYYY-MM`.
    pub period: String,
    /// When the period ended (seconds since the epoch): how this invoice orders against
    /// Stripe's invoices (their `created`), so a consumer never parses the period itself.
    pub period_end: i64,
    pub total: Money,
    pub json_key: String,
    pub html_key: String,
}

/// An internal event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Internal {
    #[serde(rename = "license.issued")]
    LicenseIssued(LicenseChanged),
    #[serde(rename = "license.superseded")]
    LicenseSuperseded(LicenseChanged),
    #[serde(rename = "license.revoked")]
    LicenseRevoked(LicenseChanged),
    #[serde(rename = "invoice.finalized")]
    InvoiceFinalized(InvoiceFinalized),
}

impl Internal {
    /// The event type (`license.issued`, ...).
    pub fn event_type(&self) -> &'static str {
        match self {
            Internal::LicenseIssued(_) => "license.issued",
            Internal::LicenseSuperseded(_) => "license.superseded",
            Internal::LicenseRevoked(_) => "license.revoked",
            Internal::InvoiceFinalized(_) => "invoice.finalized",
        }
    }

    /// The id naming the fact: the same fact sent twice has the same id.
    pub fn id(&self) -> String {
        match self {
            Internal::LicenseIssued(l)
            | Internal::LicenseSuperseded(l)
            | Internal::LicenseRevoked(l) => format!("{}:{}", self.event_type(), l.license_id),
            Internal::InvoiceFinalized(i) => {
                format!("{}:{}:{}", self.event_type(), i.customer, i.period)
            }
        }
    }

    /// The Stripe customer it is about.
    pub fn customer(&self) -> &str {
        match self {
            Internal::LicenseIssued(l)
            | Internal::LicenseSuperseded(l)
            | Internal::LicenseRevoked(l) => &l.customer,
            Internal::InvoiceFinalized(i) => &i.customer,
        }
    }

    /// The queue message carrying it.
    pub fn message(&self, now: chrono::DateTime<chrono::Utc>) -> EventMessage {
        EventMessage {
            id: self.id(),
            source: SOURCE.into(),
            event_type: self.event_type().into(),
            received_at: now,
            raw_key: String::new(),
            event: serde_json::to_value(self).unwrap_or_default(),
        }
    }

    /// The internal event a message carries, if it is one.
    pub fn from_message(msg: &EventMessage) -> Option<Result<Self, serde_json::Error>> {
        (msg.source == SOURCE).then(|| serde_json::from_value(msg.event.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_names_its_fact() {
        let e = Internal::InvoiceFinalized(InvoiceFinalized {
            customer: "cus_1".into(),
            invoice: Some("in_1".into()),
            period: "2026-10".into(),
            period_end: 1_793_491_200,
            total: Money::new(5720, "usd".parse().unwrap()),
            json_key: "invoices/cus_1/2026-10.json".into(),
            html_key: "invoices/cus_1/2026-10.html".into(),
        });
        let msg = e.message(chrono::Utc::now());
        assert_eq!(msg.id, "invoice.finalized:cus_1:2026-10");
        assert_eq!(
            (msg.source.as_str(), msg.event_type.as_str()),
            ("blapi", "invoice.finalized")
        );
        let text = serde_json::to_string(&msg).unwrap();
        let back: EventMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(Internal::from_message(&back).unwrap().unwrap(), e);
        let mut stripe = back.clone();
        stripe.source = "stripe".into();
        assert!(
            Internal::from_message(&stripe).is_none(),
            "only source blapi"
        );
    }
}
