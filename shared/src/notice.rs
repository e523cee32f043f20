//! The notification message: what every function puts on the notifications queue, and the one
//! way to send it.
//!
//! ```json
//! {"id": "license:lic_1:issued", "type": "license.issued", "customer": "cus_1", ...data}
//! ```
//!
//! - `id` is deterministic (a redelivery or a retry of the producer sends the same id), and the
//!   notifications function sends each id once.
//! - `type` names the template (see [`Kind`]).
//! - `customer` (a Stripe customer id) is the recipient, looked up at send time; or `to`, an
//!   address given by the producer (a privacy requester who may not be a customer). Internal
//!   kinds go to the operations address instead.
//! - Every other field is the template's data (flattened into the message). An amount is
//!   a [`crate::values::Money`] (`{"amount": <minor units>, "currency": "usd"}`); a date is
//!   `YYYY-MM-DD`, RFC 3339 or epoch seconds / milliseconds; a period is `YYYY-MM`. A value
//!   the template needs and the message lacks fails the message (never an empty blank); the
//!   billing kinds' `amount_due`, `pay_url`, `suspend_on` and `cancel_on` may be `null`
//!   (their sentence is left out).
//!
//! Links are never put in the message: the producer names the object (`file_key`,
//! `html_key`, `pdf_key`) and the notifications function signs a fresh, expiring link when it
//! sends, so a message that waited in the queue never carries a dead link.

use crate::error::{Error, Result};
use crate::queue::QueueSender;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Deterministic: sent once per id, whatever the redeliveries.
    pub id: String,
    /// The template (`license.issued`, `invoice.available`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The recipient customer (Stripe id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// An explicit recipient address (when there is no customer to look up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The template's values.
    #[serde(flatten)]
    pub data: Map<String, Value>,
}

impl Notification {
    /// A notification to a customer.
    pub fn to_customer(id: impl Into<String>, kind: Kind, customer: &str) -> Self {
        Self {
            id: id.into(),
            kind: kind.as_str().to_owned(),
            customer: Some(customer.to_owned()),
            to: None,
            data: Map::new(),
        }
    }

    /// A notification to an address given by the producer (a privacy requester who may not be
    /// a customer).
    pub fn to_address(id: impl Into<String>, kind: Kind, to: &str) -> Self {
        Self {
            id: id.into(),
            kind: kind.as_str().to_owned(),
            customer: None,
            to: Some(to.to_owned()),
            data: Map::new(),
        }
    }

    /// A notification with no recipient yet (an internal kind goes to the operations
    /// address; set `customer` or `to` for any other).
    pub fn new(id: impl Into<String>, kind: Kind) -> Self {
        Self {
            id: id.into(),
            kind: kind.as_str().to_owned(),
            customer: None,
            to: None,
            data: Map::new(),
        }
    }

    /// Adds one template value.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.data.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// The known kind, or an error naming the unknown one.
    pub fn known_kind(&self) -> Result<Kind> {
        Kind::parse(&self.kind)
            .ok_or_else(|| Error::Invalid(format!("unknown notification type {:?}", self.kind)))
    }

    /// Puts it on the notifications queue.
    pub async fn send(&self, queue: &dyn QueueSender, queue_url: &str) -> Result<()> {
        let body = serde_json::to_string(self).map_err(|e| Error::Invalid(e.to_string()))?;
        queue.send(queue_url, body).await
    }
}

/// Every notification type, with its template and audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A license was issued (data: `license_id`, `sku`, `seats`, `expires_at`, `file_key`).
    LicenseIssued,
    /// A usage invoice is ready (data: `period`, `number`, `total`, `amount_due`, `html_key`,
    /// `pdf_key`, `pay_url`).
    InvoiceAvailable,
    /// An invoice could not be finalized: tax needs the customer's address (data: `period`).
    TaxAddressRequired,
    /// A payment failed (data: `invoice`, `amount_due`, `attempt`, `pay_url`).
    PaymentFailed,
    /// A dunning reminder (data: `invoice`, `day`, `amount_due`, `pay_url`, `suspend_on`).
    DunningReminder,
    /// Service suspended for non-payment (data: `invoice`, `amount_due`, `pay_url`,
    /// `cancel_on`).
    Suspended,
    /// Payment received, service restored (data: `invoice`).
    Reinstated,
    /// Subscription cancelled for non-payment (data: `subscriptions` (a list) or one
    /// `subscription`, `invoice`).
    CancelledForNonPayment,
    /// The card on file expires soon (data: `brand`, `last4`, `exp_month`, `exp_year`,
    /// `days`).
    CardExpiring,
    /// No usable payment method while an invoice is due (data: `invoice`, `amount_due`).
    PaymentMethodMissing,
    /// A privacy request was completed (to: the requester; data: `request_id`,
    /// `request_kind`, `status`; an access bundle's link is signed at send time from
    /// `bundle_key`).
    PrivacyCompleted,
    /// Internal: a privacy request is due soon or overdue (to operations; data: `request_id`,
    /// `request_kind`, `status`, `urgency` (`due_soon` | `overdue`), `due`, `date`).
    PrivacyDeadline,
    /// Internal: a customer's health band changed (to operations / the account owner; data:
    /// `warning`, `owner`, `score`, `band`, `reasons`, `date`; `customer` names the customer).
    CustomerHealth,
    /// Marketing: product news (data: `headline`, `summary`, optional `url`). Not
    /// transactional: never sent to a person who opted out.
    ProductNews,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::LicenseIssued,
        Kind::InvoiceAvailable,
        Kind::TaxAddressRequired,
        Kind::PaymentFailed,
        Kind::DunningReminder,
        Kind::Suspended,
        Kind::Reinstated,
        Kind::CancelledForNonPayment,
        Kind::CardExpiring,
        Kind::PaymentMethodMissing,
        Kind::PrivacyCompleted,
        Kind::PrivacyDeadline,
        Kind::CustomerHealth,
        Kind::ProductNews,
    ];

    /// The `type` on the wire (and the template's file name).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::LicenseIssued => "license.issued",
            Kind::InvoiceAvailable => "invoice.available",
            Kind::TaxAddressRequired => "invoice.tax_address_required",
            Kind::PaymentFailed => "billing.payment_failed",
            Kind::DunningReminder => "billing.dunning_reminder",
            Kind::Suspended => "billing.suspended",
            Kind::Reinstated => "billing.reinstated",
            Kind::CancelledForNonPayment => "billing.cancelled",
            Kind::CardExpiring => "billing.card_expiring",
            Kind::PaymentMethodMissing => "billing.payment_method_missing",
            Kind::PrivacyCompleted => "privacy.request.completed",
            Kind::PrivacyDeadline => "privacy.request.deadline",
            Kind::CustomerHealth => "customer.health",
            Kind::ProductNews => "marketing.product_news",
        }
    }

    /// From the wire. Older producers' sub-types (`customer.health.at_risk`,
    /// `privacy.request.overdue`) map to their kind.
    pub fn parse(s: &str) -> Option<Kind> {
        if let Some(k) = Kind::ALL.into_iter().find(|k| k.as_str() == s) {
            return Some(k);
        }
        match s {
            "privacy.request.due_soon" | "privacy.request.overdue" => Some(Kind::PrivacyDeadline),
            _ if s.starts_with("customer.health.") => Some(Kind::CustomerHealth),
            _ => None,
        }
    }

    /// Transactional mail is sent whatever the person's marketing choice; the rest is not sent
    /// to a person who opted out.
    pub fn transactional(self) -> bool {
        !matches!(self, Kind::CustomerHealth | Kind::ProductNews)
    }

    /// Internal kinds go to the operations address, never to a customer.
    pub fn internal(self) -> bool {
        matches!(self, Kind::PrivacyDeadline | Kind::CustomerHealth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_flattened_data() {
        let n = Notification::to_customer("license:lic_1:issued", Kind::LicenseIssued, "cus_1")
            .with("license_id", "lic_1")
            .with("seats", 25);
        let s = serde_json::to_value(&n).unwrap();
        assert_eq!(s["type"], "license.issued");
        assert_eq!(s["seats"], 25);
        assert!(s.get("to").is_none());
        let back: Notification = serde_json::from_value(s).unwrap();
        assert_eq!(back, n);
        assert_eq!(back.known_kind().unwrap(), Kind::LicenseIssued);
    }

    #[test]
    fn every_kind_parses_from_its_name_and_unknown_is_refused() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            Kind::parse("privacy.request.overdue"),
            Some(Kind::PrivacyDeadline)
        );
        assert_eq!(
            Kind::parse("customer.health.at_risk"),
            Some(Kind::CustomerHealth)
        );
        let n: Notification =
            serde_json::from_value(serde_json::json!({"id": "x", "type": "nope"})).unwrap();
        assert!(n.known_kind().unwrap_err().to_string().contains("nope"));
    }
}
