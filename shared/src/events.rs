//! The events blapi's functions send each other (source `blapi`), on the same queues and in the
//! same [`EventMessage`] envelope as webhooks, so a consumer handles both alike. Each is
//! idempotent to receive: it carries the whole current fact, never a delta, and its id names
//! the fact, so a redelivery or a resend says the same thing again.
//!
//! | type | sent by | when |
//! |---|---|---|
//! | `license.issued`, `license.superseded`, `license.revoked` | license-minting | a license changed state |
//! | `invoice.finalized` | usage-billing | a usage invoice is complete (Stripe + artifacts) |
//! | `customer.standing` | usage-billing | dunning suspended a customer, or payment reinstated them |
//! | `workspace.suspend`, `workspace.resume` | license-minting | the product's provisioner must suspend or resume the customer's workspace |

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
    /// After credits, before tax: what revenue counts.
    pub total: Money,
    pub json_key: String,
    pub html_key: String,
    /// The tax Stripe added (absent from producers before tax was computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<Money>,
    /// What the customer owes: the total with tax, less any balance Stripe applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_due: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdf_key: Option<String>,
}

/// A customer's standing as dunning decided it: suspended for non-payment, or not. `seq`
/// grows with every change, so a consumer applies the newest whatever the arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerStanding {
    pub customer: String,
    pub suspended: bool,
    pub seq: u64,
    /// The unpaid (or just paid) invoice behind the change.
    pub invoice: String,
}

/// What the product's provisioner is told (queue `provisioning`): suspend or resume the
/// customer's workspaces. Carries ids only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceChange {
    pub customer: String,
    /// The standing change it follows (its `seq`).
    pub seq: u64,
    /// The licenses concerned (suspended ones, or the fresh ones on resume).
    pub licenses: Vec<String>,
    /// `non_payment`, `paid`.
    pub reason: String,
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
    #[serde(rename = "customer.standing")]
    CustomerStanding(CustomerStanding),
    #[serde(rename = "workspace.suspend")]
    WorkspaceSuspend(WorkspaceChange),
    #[serde(rename = "workspace.resume")]
    WorkspaceResume(WorkspaceChange),
}

impl Internal {
    /// The event type (`license.issued`, ...).
    pub fn event_type(&self) -> &'static str {
        match self {
            Internal::LicenseIssued(_) => "license.issued",
            Internal::LicenseSuperseded(_) => "license.superseded",
            Internal::LicenseRevoked(_) => "license.revoked",
            Internal::InvoiceFinalized(_) => "invoice.finalized",
            Internal::CustomerStanding(_) => "customer.standing",
            Internal::WorkspaceSuspend(_) => "workspace.suspend",
            Internal::WorkspaceResume(_) => "workspace.resume",
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
            Internal::CustomerStanding(c) => {
                format!("{}:{}:{}", self.event_type(), c.customer, c.seq)
            }
            Internal::WorkspaceSuspend(w) | Internal::WorkspaceResume(w) => {
                format!("{}:{}:{}", self.event_type(), w.customer, w.seq)
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
            Internal::CustomerStanding(c) => &c.customer,
            Internal::WorkspaceSuspend(w) | Internal::WorkspaceResume(w) => &w.customer,
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
            tax: Some(Money::new(1087, "usd".parse().unwrap())),
            amount_due: Some(Money::new(6807, "usd".parse().unwrap())),
            pdf_key: Some("invoices/cus_1/2026-10.pdf".into()),
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
