//! What a message on `customer-events` asks customer sync to do. Stripe events are reduced to
//! "which customer, which subscription, what happened"; the objects themselves are read again
//! from Stripe by the service, because events arrive unordered and more than once.

use crate::error::{Error, Result};
use crate::events::Internal;
use crate::queue::EventMessage;
use crate::stripe::subscription_of;
use serde_json::Value;

/// What happened, as far as the CRM is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A purchase, a customer or subscription change: re-read and write what changed.
    Refresh,
    /// An invoice was paid: it may be the last invoice to show.
    InvoicePaid {
        invoice_id: String,
        total: i64,
        currency: String,
        created: i64,
    },
    /// Money came back: flag the account (and the subscription's opportunity).
    Refunded { charge: String },
    /// A payment is disputed: the same.
    Disputed { charge: String },
    /// A license changed (license-minting).
    License(Internal),
    /// A usage invoice was finalized (usage-billing).
    InvoiceFinalized(Internal),
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The Stripe customer; `None` when only the charge names it (disputes).
    pub customer: Option<String>,
    pub subscription: Option<String>,
    pub change: Change,
}

/// Why a message needs no work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

/// The trigger of a message, `Ok(Err(Skip))` when there is nothing to do, `Err` when it is
/// malformed (a permanent failure: it goes to the DLQ).
pub fn trigger(msg: &EventMessage) -> Result<std::result::Result<Trigger, Skip>> {
    if let Some(internal) = Internal::from_message(msg) {
        let internal = internal
            .map_err(|e| Error::Invalid(format!("internal event {} is malformed: {e}", msg.id)))?;
        let customer = Some(internal.customer().to_owned());
        return Ok(Ok(match &internal {
            Internal::InvoiceFinalized(_) => Trigger {
                customer,
                subscription: None,
                change: Change::InvoiceFinalized(internal.clone()),
            },
            Internal::LicenseIssued(l)
            | Internal::LicenseSuperseded(l)
            | Internal::LicenseRevoked(l) => Trigger {
                customer,
                subscription: Some(l.subscription.clone()),
                change: Change::License(internal.clone()),
            },
            Internal::CustomerStanding(_)
            | Internal::WorkspaceSuspend(_)
            | Internal::WorkspaceResume(_) => {
                return Ok(Err(Skip(format!(
                    "{} is not customer sync's",
                    internal.event_type()
                ))));
            }
        }));
    }
    if msg.source != "stripe" {
        return Ok(Err(Skip(format!(
            "source {} is not customer sync's",
            msg.source
        ))));
    }
    let object = msg
        .event
        .pointer("/data/object")
        .ok_or_else(|| Error::Invalid(format!("event {} has no data.object", msg.id)))?;
    let str_of = |v: &Value| {
        v.as_str()
            .or_else(|| v["id"].as_str())
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    };
    let customer_field = str_of(&object["customer"]);
    let t = msg.event_type.as_str();
    let (customer, change) = match t {
        "customer.created" | "customer.updated" => (str_of(&object["id"]), Change::Refresh),
        "checkout.session.completed" | "invoice.payment_failed" => {
            (customer_field, Change::Refresh)
        }
        _ if t.starts_with("customer.subscription.") => (customer_field, Change::Refresh),
        // localstripe sends `invoice.payment_succeeded` where Stripe sends both.
        "invoice.paid" | "invoice.payment_succeeded" => {
            let invoice_id = str_of(&object["id"])
                .ok_or_else(|| Error::Invalid(format!("invoice event {} has no id", msg.id)))?;
            (
                customer_field,
                Change::InvoicePaid {
                    invoice_id,
                    // Before tax (revenue excludes it); localstripe has no such field.
                    total: object["total_excluding_tax"]
                        .as_i64()
                        .or_else(|| object["total"].as_i64())
                        .or_else(|| object["amount_paid"].as_i64())
                        .unwrap_or(0),
                    currency: object["currency"].as_str().unwrap_or("usd").to_owned(),
                    created: object["created"]
                        .as_i64()
                        .or_else(|| msg.event["created"].as_i64())
                        .unwrap_or(0),
                },
            )
        }
        "charge.refunded" => {
            let charge = str_of(&object["id"])
                .ok_or_else(|| Error::Invalid(format!("charge event {} has no id", msg.id)))?;
            (customer_field, Change::Refunded { charge })
        }
        "charge.dispute.created" => {
            let charge = str_of(&object["charge"]).ok_or_else(|| {
                Error::Invalid(format!("dispute event {} names no charge", msg.id))
            })?;
            (None, Change::Disputed { charge })
        }
        other => return Ok(Err(Skip(format!("{other} is not customer sync's")))),
    };
    let needs_customer = !matches!(change, Change::Disputed { .. });
    if needs_customer && customer.is_none() {
        return Ok(Err(Skip(format!(
            "{t} {} names no customer (a guest checkout?)",
            msg.id
        ))));
    }
    if let Some(c) = &customer
        && !(c.starts_with("cus_") && c.len() <= 255)
    {
        return Err(Error::Invalid(format!(
            "event {} names {c:?}, not a Stripe customer",
            msg.id
        )));
    }
    Ok(Ok(Trigger {
        customer,
        subscription: subscription_of(&msg.event),
        change,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(t: &str, object: Value) -> EventMessage {
        EventMessage {
            id: "evt_1".into(),
            source: "stripe".into(),
            event_type: t.into(),
            received_at: chrono::Utc::now(),
            raw_key: "raw/x".into(),
            event: json!({"id": "evt_1", "type": t, "created": 7, "data": {"object": object}}),
        }
    }

    #[test]
    fn each_stripe_event_names_its_customer_and_subscription() {
        let t = trigger(&msg("checkout.session.completed", json!({"object": "checkout.session", "id": "cs_1", "customer": "cus_1", "subscription": "sub_1"}))).unwrap().unwrap();
        assert_eq!(
            (t.customer.as_deref(), t.subscription.as_deref()),
            (Some("cus_1"), Some("sub_1"))
        );
        let t = trigger(&msg(
            "customer.updated",
            json!({"object": "customer", "id": "cus_2"}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(t.customer.as_deref(), Some("cus_2"));
        let t = trigger(&msg(
            "customer.subscription.deleted",
            json!({"object": "subscription", "id": "sub_3", "customer": "cus_3"}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (t.customer.as_deref(), t.subscription.as_deref()),
            (Some("cus_3"), Some("sub_3"))
        );
        let t = trigger(&msg("invoice.paid", json!({"object": "invoice", "id": "in_1", "customer": "cus_4", "subscription": "sub_4", "total": 500, "currency": "eur"}))).unwrap().unwrap();
        assert!(
            matches!(
                t.change,
                Change::InvoicePaid {
                    total: 500,
                    created: 7,
                    ..
                }
            ),
            "{t:?}"
        );
        let t = trigger(&msg(
            "charge.dispute.created",
            json!({"object": "dispute", "id": "dp_1", "charge": "ch_1"}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            t.change,
            Change::Disputed {
                charge: "ch_1".into()
            }
        );
        assert_eq!(t.customer, None, "the charge names the customer");
    }

    #[test]
    fn a_payment_succeeded_is_a_paid_invoice() {
        let t = trigger(&msg(
            "invoice.payment_succeeded",
            json!({"object": "invoice", "id": "in_2", "customer": "cus_4", "total": 0, "currency": "usd"}),
        ))
        .unwrap()
        .unwrap();
        assert!(
            matches!(t.change, Change::InvoicePaid { total: 0, .. }),
            "{t:?}"
        );
        assert_eq!(t.subscription, None, "a one-off invoice");
    }

    #[test]
    fn a_paid_invoice_counts_its_total_before_tax() {
        let t = trigger(&msg(
            "invoice.paid",
            json!({"object": "invoice", "id": "in_3", "customer": "cus_4", "total": 11_900,
                "total_excluding_tax": 10_000, "tax": 1_900, "currency": "eur"}),
        ))
        .unwrap()
        .unwrap();
        assert!(
            matches!(t.change, Change::InvoicePaid { total: 10_000, .. }),
            "{t:?}"
        );
    }

    #[test]
    fn guests_foreign_types_and_bad_ids() {
        assert!(
            trigger(&msg(
                "checkout.session.completed",
                json!({"id": "cs_1", "customer": null})
            ))
            .unwrap()
            .is_err()
        );
        assert!(
            trigger(&msg("plan.created", json!({"id": "plan_1"})))
                .unwrap()
                .is_err()
        );
        assert!(matches!(
            trigger(&msg("customer.updated", json!({"id": "../admin"}))),
            Err(Error::Invalid(_))
        ));
        let mut m = msg("customer.updated", json!({"id": "cus_1"}));
        m.event = json!({"type": "customer.updated"});
        assert!(matches!(trigger(&m), Err(Error::Invalid(_))));
        m.source = "portal".into();
        assert!(trigger(&m).unwrap().is_err(), "not ours");
    }
}
