//! Dunning: a customer's collection status from Stripe invoice events.
//!
//! `active` -> `past_due` (an invoice payment failed) -> `suspended` (still unpaid
//! `suspend_after_days` after its first failure, or after `suspend_after_attempts` attempts)
//! -> `active` again when every failed invoice is paid.
//!
//! Events arrive unordered and duplicated: the state keeps, per invoice, the facts with their
//! object timestamps (first failure, attempts, paid) and the status is *derived* from those
//! facts, so applying the same events in any order gives the same status. "Now" is the
//! newest event time seen, never the arrival time.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Collection status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    PastDue,
    Suspended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::PastDue => "past_due",
            Status::Suspended => "suspended",
        }
    }
}

/// What is known of one invoice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFacts {
    /// Earliest failure (unix seconds).
    pub first_failed_at: Option<i64>,
    pub attempts: i64,
    /// Paid is terminal: a late failure event cannot reopen it.
    pub paid_at: Option<i64>,
}

/// The dunning state of one customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dunning {
    pub status: Status,
    pub invoices: BTreeMap<String, InvoiceFacts>,
    /// The newest event time seen (unix seconds).
    pub as_of: i64,
}

/// When to suspend.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub suspend_after_days: i64,
    pub suspend_after_attempts: i64,
}

/// An invoice event reduced to what dunning needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceEvent {
    PaymentFailed {
        invoice: String,
        attempt_count: i64,
        at: i64,
    },
    Paid {
        invoice: String,
        at: i64,
    },
}

impl InvoiceEvent {
    /// From a Stripe event (`type`, `created`, `data.object`); `None` for other types.
    pub fn from_stripe(event_type: &str, event: &serde_json::Value) -> Option<(String, Self)> {
        let obj = event.pointer("/data/object")?;
        let invoice = obj.get("id")?.as_str()?.to_owned();
        let customer = obj.get("customer")?.as_str()?.to_owned();
        let created = event
            .get("created")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        let ev = match event_type {
            "invoice.payment_failed" => InvoiceEvent::PaymentFailed {
                invoice,
                attempt_count: obj
                    .get("attempt_count")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(1),
                at: created,
            },
            "invoice.paid" | "invoice.payment_succeeded" => InvoiceEvent::Paid {
                invoice,
                at: obj
                    .pointer("/status_transitions/paid_at")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(created),
            },
            _ => return None,
        };
        Some((customer, ev))
    }
}

impl Dunning {
    /// Applies an event; returns the previous status when the status changed.
    pub fn apply(&mut self, ev: &InvoiceEvent, policy: &Policy) -> Option<Status> {
        match ev {
            InvoiceEvent::PaymentFailed {
                invoice,
                attempt_count,
                at,
            } => {
                let f = self.invoices.entry(invoice.clone()).or_default();
                f.first_failed_at = Some(f.first_failed_at.map_or(*at, |x| x.min(*at)));
                f.attempts = f.attempts.max(*attempt_count);
                self.as_of = self.as_of.max(*at);
            }
            InvoiceEvent::Paid { invoice, at } => {
                let f = self.invoices.entry(invoice.clone()).or_default();
                f.paid_at = Some(f.paid_at.map_or(*at, |x| x.min(*at)));
                self.as_of = self.as_of.max(*at);
            }
        }
        let before = self.status;
        self.status = self.derive(policy);
        // Paid facts are kept: a late, older failure of a paid invoice must find it paid.
        (before != self.status).then_some(before)
    }

    fn derive(&self, policy: &Policy) -> Status {
        let open: Vec<&InvoiceFacts> = self
            .invoices
            .values()
            .filter(|f| f.paid_at.is_none() && f.first_failed_at.is_some())
            .collect();
        if open.is_empty() {
            return Status::Active;
        }
        let first = open
            .iter()
            .filter_map(|f| f.first_failed_at)
            .min()
            .unwrap_or(self.as_of);
        let attempts = open.iter().map(|f| f.attempts).max().unwrap_or(0);
        if self.as_of - first >= policy.suspend_after_days * 86_400
            || attempts >= policy.suspend_after_attempts
        {
            Status::Suspended
        } else {
            Status::PastDue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        suspend_after_days: 14,
        suspend_after_attempts: 4,
    };
    const DAY: i64 = 86_400;

    fn failed(inv: &str, n: i64, at: i64) -> InvoiceEvent {
        InvoiceEvent::PaymentFailed {
            invoice: inv.into(),
            attempt_count: n,
            at,
        }
    }
    fn paid(inv: &str, at: i64) -> InvoiceEvent {
        InvoiceEvent::Paid {
            invoice: inv.into(),
            at,
        }
    }

    #[test]
    fn lifecycle() {
        let mut d = Dunning::default();
        assert_eq!(d.apply(&failed("in_1", 1, 1000), &P), Some(Status::Active));
        assert_eq!(d.status, Status::PastDue);
        assert_eq!(d.apply(&failed("in_1", 2, 1000 + 3 * DAY), &P), None);
        assert_eq!(
            d.apply(&failed("in_1", 3, 1000 + 14 * DAY), &P),
            Some(Status::PastDue)
        );
        assert_eq!(d.status, Status::Suspended);
        assert_eq!(
            d.apply(&paid("in_1", 1000 + 15 * DAY), &P),
            Some(Status::Suspended)
        );
        assert_eq!(d.status, Status::Active);
    }

    #[test]
    fn attempts_suspend_too() {
        let mut d = Dunning::default();
        d.apply(&failed("in_1", 4, 1000), &P);
        assert_eq!(d.status, Status::Suspended);
    }

    #[test]
    fn order_does_not_matter() {
        let events = [
            failed("in_1", 1, 100),
            failed("in_1", 2, 100 + DAY),
            paid("in_1", 100 + 2 * DAY),
            failed("in_2", 1, 100 + 3 * DAY),
        ];
        let mut forward = Dunning::default();
        for e in &events {
            forward.apply(e, &P);
        }
        let mut backward = Dunning::default();
        for e in events.iter().rev() {
            backward.apply(e, &P);
        }
        assert_eq!(forward.status, Status::PastDue);
        assert_eq!(backward.status, Status::PastDue);
        // a late failure of a paid invoice does not reopen it
        let mut d = Dunning::default();
        d.apply(&paid("in_9", 500), &P);
        d.apply(&failed("in_9", 1, 400), &P);
        assert_eq!(d.status, Status::Active);
    }

    #[test]
    fn parses_stripe_events() {
        let ev = serde_json::json!({"id": "evt_1", "type": "invoice.payment_failed", "created": 1700000000,
            "data": {"object": {"id": "in_1", "customer": "cus_1", "attempt_count": 2}}});
        let (c, e) = InvoiceEvent::from_stripe("invoice.payment_failed", &ev).unwrap();
        assert_eq!(c, "cus_1");
        assert_eq!(e, failed("in_1", 2, 1700000000));
        assert!(InvoiceEvent::from_stripe("invoice.created", &ev).is_none());
    }
}
