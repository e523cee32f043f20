//! The local view of a subscription, kept from `customer.subscription.*` events.
//!
//! Events arrive unordered: a view is replaced only by an event at least as recent (the Stripe
//! event's `created`), never by arrival order. The plan step enumerates these views.

use super::money::Currency;
use super::period::Period;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What billing needs to know about a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub customer: String,
    pub subscription: String,
    /// Price book plan id or a Stripe price / plan id (resolved through the price book).
    pub plan: String,
    /// Seats; prices the fixed charges.
    pub quantity: i64,
    pub status: String,
    #[serde(default)]
    pub currency: Option<Currency>,
    /// Start (unix seconds).
    pub start: i64,
    /// End (unix seconds) when it ended or was canceled.
    #[serde(default)]
    pub end: Option<i64>,
    /// `created` of the event this view came from (unix seconds): the ordering key.
    pub updated_at: i64,
}

const DAY: i64 = 86_400;

/// Statuses after which a subscription never changes again.
fn is_terminal(status: &str) -> bool {
    matches!(status, "canceled" | "incomplete_expired")
}

impl Subscription {
    /// The lifecycle phase of the status: `0` incomplete (awaiting the first payment), `1`
    /// live (`active`, `trialing`, `past_due`, `unpaid`, `paused`, ...), `2` terminal
    /// (`canceled`, `incomplete_expired`). A Stripe subscription never goes back a phase: an
    /// incomplete one becomes live or expires, and a cancelled one stays cancelled for good
    /// (a new subscription gets a new id). So a view of a later phase is newer than any view
    /// of an earlier one whatever their timestamps: this is what makes a `deleted` event win
    /// over an `updated` of the same second (Stripe sends them within one second, in either
    /// order, and `created` has whole-second resolution), and what keeps a late or redelivered
    /// `updated` from resurrecting a cancelled subscription and billing it again.
    pub fn precedence(&self) -> u8 {
        match self.status.as_str() {
            "incomplete" => 0,
            s if is_terminal(s) => 2,
            _ => 1,
        }
    }

    /// Whether the view is final (cancelled or expired): no later event changes it back.
    pub fn is_terminal(&self) -> bool {
        is_terminal(&self.status)
    }

    /// The ordering key of views: the phase ([`Subscription::precedence`]), then the event's
    /// second. A view replaces the stored one when its key is at least as large. Two views
    /// of the same phase and second (two `updated` events in one second) remain ordered by
    /// arrival: Stripe event ids are random, not ordered, so nothing in the event orders them.
    pub fn order_key(&self) -> (u8, i64) {
        (self.precedence(), self.updated_at)
    }

    /// Makes the view terminal: what a `customer.subscription.deleted` event says whatever
    /// its object's status reads. The end is the cancellation if the view has one, else the
    /// event's second.
    pub fn mark_deleted(&mut self) {
        if !self.is_terminal() {
            self.status = "canceled".into();
        }
        if self.end.is_none() {
            self.end = Some(self.updated_at);
        }
    }

    /// Builds the view from a Stripe subscription object and its event's `created`.
    pub fn from_stripe(obj: &serde_json::Value, event_created: i64) -> Result<Self> {
        let s = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let i = |k: &str| obj.get(k).and_then(serde_json::Value::as_i64);
        let id = s("id").ok_or_else(|| Error::Invalid("subscription without id".into()))?;
        let customer = s("customer")
            .ok_or_else(|| Error::Invalid(format!("subscription {id} without customer")))?;
        let item = obj.pointer("/items/data/0");
        let plan = obj
            .pointer("/metadata/blapi_plan")
            .and_then(|v| v.as_str())
            .or_else(|| {
                item.and_then(|it| it.pointer("/price/lookup_key"))
                    .and_then(|v| v.as_str())
            })
            .or_else(|| {
                item.and_then(|it| it.pointer("/price/id"))
                    .and_then(|v| v.as_str())
            })
            .or_else(|| {
                item.and_then(|it| it.pointer("/plan/id"))
                    .and_then(|v| v.as_str())
            })
            .or_else(|| obj.pointer("/plan/id").and_then(|v| v.as_str()))
            .ok_or_else(|| Error::Invalid(format!("subscription {id} has no plan")))?
            .to_owned();
        let quantity = item
            .and_then(|it| it.get("quantity"))
            .and_then(serde_json::Value::as_i64)
            .or_else(|| i("quantity"))
            .unwrap_or(1);
        let currency = s("currency")
            .or_else(|| {
                item.and_then(|it| it.pointer("/price/currency"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .or_else(|| {
                item.and_then(|it| it.pointer("/plan/currency"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .and_then(|c| c.parse().ok());
        let status = s("status").unwrap_or_else(|| "active".into());
        let start = i("start_date")
            .or_else(|| i("created"))
            .unwrap_or(event_created);
        let end = i("ended_at").or_else(|| {
            if status == "canceled" {
                i("canceled_at").or(Some(event_created))
            } else {
                None
            }
        });
        Ok(Self {
            customer,
            subscription: id,
            plan,
            quantity,
            status,
            currency,
            start,
            end,
            updated_at: event_created,
        })
    }

    /// Days of `period` the subscription was active: the start day counts whole, a partial
    /// last day counts whole, a subscription ending exactly at midnight does not use that day.
    pub fn active_days(&self, period: Period) -> i64 {
        let ps = period.start().timestamp();
        let pe = period.end().timestamp();
        let from = self.start.max(ps);
        let to = self.end.unwrap_or(pe).min(pe);
        if to <= from {
            return 0;
        }
        let from_day = from - (from - ps).rem_euclid(DAY);
        (to - from_day + DAY - 1) / DAY
    }

    /// Whether the subscription is billed for `period` (active some of it, not incomplete).
    pub fn billable_in(&self, period: Period) -> bool {
        !matches!(self.status.as_str(), "incomplete" | "incomplete_expired")
            && self.active_days(period) > 0
    }

    /// When the view's data was current.
    pub fn updated(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.updated_at, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(start: &str, end: Option<&str>) -> Subscription {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap().timestamp();
        Subscription {
            customer: "cus_1".into(),
            subscription: "sub_1".into(),
            plan: "cloud-pro".into(),
            quantity: 1,
            status: "active".into(),
            currency: None,
            start: t(start),
            end: end.map(t),
            updated_at: 0,
        }
    }

    #[test]
    fn active_days_table() {
        let p: Period = "2026-10".parse().unwrap();
        let table = [
            (sub("2026-01-01T00:00:00Z", None), 31),
            (sub("2026-10-31T12:00:00Z", None), 1),
            (sub("2026-10-01T00:00:00Z", Some("2026-10-02T00:00:00Z")), 1),
            (sub("2026-10-15T10:00:00Z", Some("2026-10-20T00:00:01Z")), 6),
            (sub("2026-09-01T00:00:00Z", Some("2026-10-01T00:00:00Z")), 0),
            (sub("2026-11-01T00:00:00Z", None), 0),
        ];
        for (s, want) in table {
            assert_eq!(s.active_days(p), want, "{s:?}");
            assert_eq!(s.billable_in(p), want > 0);
        }
    }

    #[test]
    fn the_phase_orders_views_before_time() {
        let view = |status: &str, at: i64| Subscription {
            status: status.into(),
            updated_at: at,
            ..sub("2026-01-01T00:00:00Z", None)
        };
        // (stored, incoming, replaces)
        let table = [
            (view("canceled", 100), view("active", 100), false),
            (view("canceled", 100), view("active", 101), false),
            (view("canceled", 100), view("past_due", i64::MAX), false),
            (
                view("incomplete_expired", 100),
                view("incomplete", 200),
                false,
            ),
            (view("active", 100), view("canceled", 100), true),
            (view("active", 200), view("canceled", 100), true),
            (view("canceled", 100), view("canceled", 101), true),
            (view("canceled", 101), view("canceled", 100), false),
            (view("incomplete", 100), view("active", 100), true),
            (view("active", 100), view("incomplete", 100), false),
            (view("active", 100), view("past_due", 101), true),
            (view("past_due", 101), view("active", 100), false),
            (view("active", 100), view("past_due", 100), true),
        ];
        for (stored, incoming, replaces) in table {
            assert_eq!(
                incoming.order_key() >= stored.order_key(),
                replaces,
                "{} @{} then {} @{}",
                stored.status,
                stored.updated_at,
                incoming.status,
                incoming.updated_at
            );
        }
        let mut deleted = view("active", 100);
        deleted.mark_deleted();
        assert_eq!(
            (deleted.status.as_str(), deleted.end),
            ("canceled", Some(100))
        );
        assert!(deleted.is_terminal());
    }

    #[test]
    fn from_stripe_object() {
        let obj = serde_json::json!({
            "id": "sub_1", "customer": "cus_1", "status": "canceled", "start_date": 1790000000,
            "canceled_at": 1791000000, "items": {"data": [{"quantity": 3, "plan": {"id": "plan_cloud_pro", "currency": "usd"}}]}
        });
        let s = Subscription::from_stripe(&obj, 1791000005).unwrap();
        assert_eq!(s.plan, "plan_cloud_pro");
        assert_eq!(s.quantity, 3);
        assert_eq!(s.end, Some(1791000000));
        assert_eq!(s.currency.as_ref().map(|c| c.as_str()), Some("usd"));
        assert!(Subscription::from_stripe(&serde_json::json!({"id": "sub_2"}), 1).is_err());
    }
}
