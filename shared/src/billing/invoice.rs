//! Invoice composition (aggregate -> price -> prorate -> minimum -> credits).
//!
//! Composition is pure: given the subscriptions of a customer, their quantities per metric,
//! the price book and the credit balance, it yields an [`Invoice`] whose every line says its
//! quantity, unit price, tier, proration and amount. Fixed charges (no metric) and the plan
//! minimum are prorated by active days; usage is not (it is already what was used). Credits
//! are applied last, never below zero. The documents a customer receives are rendered from it
//! by [`super::document`] and [`super::pdf`].

use super::money::{Currency, Money, Quantity, Rate, format_minor, scale_amount};
use super::period::Period;
use super::pricebook::PriceBook;
use super::subscription::Subscription;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What kind of line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Fixed,
    Usage,
    Minimum,
    Credit,
}

/// Proration of a line: `active_days / period_days` of the full amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proration {
    pub active_days: i64,
    pub period_days: i64,
    /// The amount before proration (minor units).
    pub full_amount: i64,
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// Stable within the invoice (`l0`, `l1`, ...): part of the Stripe item's idempotency key.
    pub id: String,
    pub kind: LineKind,
    pub subscription: Option<String>,
    pub charge: Option<String>,
    pub metric: Option<String>,
    pub description: String,
    pub quantity: Quantity,
    pub unit_price: Option<Rate>,
    pub tier: Option<String>,
    pub proration: Option<Proration>,
    /// Minor units (negative for credits).
    pub amount: i64,
}

/// A composed invoice for (customer, period).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub customer: String,
    pub period: Period,
    pub currency: Currency,
    pub price_book_version: String,
    pub lines: Vec<InvoiceLine>,
    pub subtotal: i64,
    pub credit_applied: i64,
    pub total: i64,
}

/// A subscription with its aggregated usage for the period.
#[derive(Debug, Clone)]
pub struct SubscriptionUsage {
    pub subscription: Subscription,
    pub quantities: BTreeMap<String, Quantity>,
}

impl Invoice {
    /// The idempotency stem `(customer, period)` of this invoice.
    pub fn key(&self) -> String {
        invoice_key(&self.customer, self.period)
    }

    /// Lines worth sending to Stripe (non-zero amounts).
    pub fn billable_lines(&self) -> impl Iterator<Item = &InvoiceLine> {
        self.lines.iter().filter(|l| l.amount != 0)
    }

    pub fn money(&self, amount: i64) -> Money {
        Money::new(amount, self.currency.clone())
    }

    /// Re-applies credits with a (new) balance: removes any credit line and recomputes totals.
    pub fn with_credit(mut self, balance: Option<&Money>) -> Self {
        self.lines.retain(|l| l.kind != LineKind::Credit);
        let credit = match balance {
            Some(b) if b.currency == self.currency && b.amount > 0 && self.subtotal > 0 => {
                b.amount.min(self.subtotal)
            }
            _ => 0,
        };
        if credit > 0 {
            self.lines.push(InvoiceLine {
                id: format!("l{}", self.lines.len()),
                kind: LineKind::Credit,
                subscription: None,
                charge: None,
                metric: None,
                description: "Prepaid / promotional credit applied".into(),
                quantity: Quantity::from_int(1),
                unit_price: None,
                tier: None,
                proration: None,
                amount: -credit,
            });
        }
        self.credit_applied = credit;
        self.total = self.subtotal.saturating_sub(credit);
        self
    }
}

/// `(customer, period)` as one string, the stem of every idempotency key of the invoice.
pub fn invoice_key(customer: &str, period: Period) -> String {
    format!("{customer}:{period}")
}

/// Composes the invoice. Errors: a plan with no price (`Invalid`), subscriptions in
/// different currencies (`Invalid`).
pub fn compose(
    customer: &str,
    period: Period,
    book: &PriceBook,
    subs: &[SubscriptionUsage],
    credit: Option<&Money>,
) -> Result<Invoice> {
    let mut lines: Vec<InvoiceLine> = Vec::new();
    let mut currency: Option<Currency> = None;
    let period_days = period.days();
    let mut ordered: Vec<&SubscriptionUsage> = subs.iter().collect();
    ordered.sort_by(|a, b| {
        a.subscription
            .subscription
            .cmp(&b.subscription.subscription)
    });
    for su in ordered {
        let sub = &su.subscription;
        let (plan_id, plan) = book.plan(&sub.plan).ok_or_else(|| {
            Error::Invalid(format!(
                "plan {} of subscription {} has no price",
                sub.plan, sub.subscription
            ))
        })?;
        match &currency {
            None => currency = Some(plan.currency.clone()),
            Some(c) if *c != plan.currency => {
                return Err(Error::Invalid(format!(
                    "customer {customer} has subscriptions in {c} and {}: one invoice per currency is not supported",
                    plan.currency
                )));
            }
            Some(_) => {}
        }
        let days = sub.active_days(period);
        let prorated = days < period_days;
        let first_line = lines.len();
        for charge in &plan.charges {
            let (qty, is_usage) = match &charge.metric {
                Some(m) => (
                    su.quantities.get(m).copied().unwrap_or(Quantity::ZERO),
                    true,
                ),
                None => (Quantity::from_int(sub.quantity.max(0)), false),
            };
            for piece in charge.model.price(qty) {
                let (amount, proration) = if !is_usage && prorated {
                    (
                        scale_amount(piece.amount, days, period_days),
                        Some(Proration {
                            active_days: days,
                            period_days,
                            full_amount: piece.amount,
                        }),
                    )
                } else {
                    (piece.amount, None)
                };
                lines.push(InvoiceLine {
                    id: format!("l{}", lines.len()),
                    kind: if is_usage {
                        LineKind::Usage
                    } else {
                        LineKind::Fixed
                    },
                    subscription: Some(sub.subscription.clone()),
                    charge: Some(charge.id.clone()),
                    metric: charge.metric.clone(),
                    description: format!("{} · {} ({plan_id})", charge.description, plan.name),
                    quantity: piece.quantity,
                    unit_price: piece.unit_price,
                    tier: piece.tier,
                    proration,
                    amount,
                });
            }
        }
        let sub_total = saturating_sum(lines[first_line..].iter().map(|l| l.amount));
        let minimum = if prorated {
            scale_amount(plan.minimum, days, period_days)
        } else {
            plan.minimum
        };
        if sub_total < minimum {
            lines.push(InvoiceLine {
                id: format!("l{}", lines.len()),
                kind: LineKind::Minimum,
                subscription: Some(sub.subscription.clone()),
                charge: None,
                metric: None,
                description: format!("Minimum charge top-up · {} ({plan_id})", plan.name),
                quantity: Quantity::from_int(1),
                unit_price: None,
                tier: Some(format!("minimum {}", format_minor(minimum, &plan.currency))),
                proration: prorated.then_some(Proration {
                    active_days: days,
                    period_days,
                    full_amount: plan.minimum,
                }),
                amount: minimum.saturating_sub(sub_total),
            });
        }
    }
    let currency = currency.ok_or_else(|| {
        Error::Invalid(format!(
            "customer {customer} has nothing billable in {period}"
        ))
    })?;
    let subtotal = saturating_sum(lines.iter().map(|l| l.amount));
    Ok(Invoice {
        customer: customer.to_owned(),
        period,
        currency,
        price_book_version: book.version.clone(),
        lines,
        subtotal,
        credit_applied: 0,
        total: subtotal,
    }
    .with_credit(credit))
}

/// A sum of line amounts that saturates instead of wrapping (an invoice near `i64::MAX` is
/// absurd, but it must not come out negative and be taken for a credit).
fn saturating_sum(amounts: impl Iterator<Item = i64>) -> i64 {
    amounts.fold(0, i64::saturating_add)
}

/// What Stripe holds of an invoice: the ids recorded with it, and what Stripe said of it when it
/// was finalized (shown on the artifacts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeRefs {
    pub invoice: Option<String>,
    pub items: BTreeMap<String, String>,
    pub finalized: bool,
    /// The coupon carrying the credit, when Stripe Tax computes the invoice (negative items
    /// are refused there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
    /// Stripe's amounts, tax, number and customer snapshot, from finalization on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<super::document::Issued>,
    /// Finalizations Stripe refused for want of a usable customer address (each retry after
    /// one uses a fresh idempotency key; the customer is told once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tax_location_refusals: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn book() -> PriceBook {
        PriceBook::embedded().unwrap()
    }

    fn sub(plan: &str, qty: i64, start: &str, end: Option<&str>) -> Subscription {
        let t = |s: &str| s.parse::<DateTime<chrono::Utc>>().unwrap().timestamp();
        Subscription {
            customer: "cus_1".into(),
            subscription: format!("sub_{plan}"),
            plan: plan.into(),
            quantity: qty,
            status: "active".into(),
            currency: None,
            start: t(start),
            end: end.map(t),
            updated_at: 0,
        }
    }

    fn usage(s: Subscription, q: &[(&str, i64)]) -> SubscriptionUsage {
        SubscriptionUsage {
            subscription: s,
            quantities: q
                .iter()
                .map(|(m, v)| ((*m).to_owned(), Quantity::from_int(*v)))
                .collect(),
        }
    }

    fn period() -> Period {
        "2026-10".parse().unwrap()
    }

    #[test]
    fn full_month_pro_plan_hand_computed() {
        // seats 3 × 15.00 = 4500; api 25 000 -> 3 packages × 900 = 2700; builds 10 × 2 = 20;
        // peak 4 × 300 = 1200; capacity 7 × 100 = 700 -> 9120
        let s = usage(
            sub("cloud-pro", 3, "2026-01-01T00:00:00Z", None),
            &[
                ("api_calls", 25_000),
                ("builds", 10),
                ("peak_nodes", 4),
                ("capacity", 7),
            ],
        );
        let inv = compose("cus_1", period(), &book(), &[s], None).unwrap();
        let amounts: Vec<i64> = inv.lines.iter().map(|l| l.amount).collect();
        assert_eq!(amounts, vec![4500, 2700, 20, 1200, 700]);
        assert_eq!(
            (inv.subtotal, inv.credit_applied, inv.total),
            (9120, 0, 9120)
        );
        assert!(inv.lines.iter().all(|l| l.proration.is_none()));
        assert_eq!(inv.currency.as_str(), "usd");
    }

    #[test]
    fn proration_one_day_and_thirty_one_days() {
        // starter platform fee 2900 prorated: 1 day -> 2900/31 = 93.5 -> 94 (even);
        // minimum 1000 × 1/31 = 32.26 -> 32 < 94: no top-up
        let one = usage(sub("cloud-starter", 1, "2026-10-31T08:00:00Z", None), &[]);
        let inv = compose("cus_1", period(), &book(), &[one], None).unwrap();
        let fee = &inv.lines[0];
        assert_eq!(fee.amount, 94);
        assert_eq!(
            fee.proration,
            Some(Proration {
                active_days: 1,
                period_days: 31,
                full_amount: 2900
            })
        );
        assert_eq!(inv.total, 94);
        let full = usage(sub("cloud-starter", 1, "2026-10-01T00:00:00Z", None), &[]);
        let inv = compose("cus_1", period(), &book(), &[full], None).unwrap();
        assert_eq!(inv.lines[0].amount, 2900);
        assert_eq!(inv.lines[0].proration, None);
    }

    #[test]
    fn usage_is_not_prorated_and_minimum_tops_up() {
        // pro, 0 seats, 15 days (Oct 1..15 ended 16th 00:00): only builds 5 × 2 = 10; pro has no minimum
        let s = usage(
            sub(
                "cloud-pro",
                0,
                "2026-10-01T00:00:00Z",
                Some("2026-10-16T00:00:00Z"),
            ),
            &[("builds", 5)],
        );
        let inv = compose("cus_1", period(), &book(), &[s], None).unwrap();
        assert_eq!(inv.total, 10);
        let b = inv
            .lines
            .iter()
            .find(|l| l.metric.as_deref() == Some("builds"))
            .unwrap();
        assert!(b.proration.is_none());
        // starter with a custom book: flat fee 0, minimum 1000 -> top-up line of 1000 - usage
        let mut bk = book();
        let plan = bk.plans.get_mut("cloud-starter").unwrap();
        plan.charges.retain(|c| c.metric.is_some());
        let s = usage(
            sub("cloud-starter", 1, "2026-01-01T00:00:00Z", None),
            &[("api_calls", 1002)],
        );
        let inv = compose("cus_1", period(), &bk, &[s], None).unwrap();
        let min = inv.lines.last().unwrap();
        assert_eq!(min.kind, LineKind::Minimum);
        assert_eq!(min.amount, 999); // api 2 × 0.5 = 1
        assert_eq!(inv.total, 1000);
    }

    #[test]
    fn credits_never_go_below_zero() {
        let usd: Currency = "usd".parse().unwrap();
        let s = || usage(sub("cloud-pro", 1, "2026-01-01T00:00:00Z", None), &[]);
        // 1500 due; credit 10 000 -> 1500 applied, total 0
        let inv = compose(
            "cus_1",
            period(),
            &book(),
            &[s()],
            Some(&Money::new(10_000, usd.clone())),
        )
        .unwrap();
        assert_eq!(
            (inv.subtotal, inv.credit_applied, inv.total),
            (1500, 1500, 0)
        );
        assert_eq!(inv.lines.last().unwrap().amount, -1500);
        // smaller credit
        let inv = compose(
            "cus_1",
            period(),
            &book(),
            &[s()],
            Some(&Money::new(400, usd)),
        )
        .unwrap();
        assert_eq!((inv.credit_applied, inv.total), (400, 1100));
        // other currency: ignored
        let inv = compose(
            "cus_1",
            period(),
            &book(),
            &[s()],
            Some(&Money::new(400, "eur".parse().unwrap())),
        )
        .unwrap();
        assert_eq!(inv.credit_applied, 0);
    }

    #[test]
    fn a_plan_without_price_is_refused() {
        let s = usage(sub("gold-plated", 1, "2026-01-01T00:00:00Z", None), &[]);
        let e = compose("cus_1", period(), &book(), &[s], None).unwrap_err();
        assert!(e.to_string().contains("has no price"), "{e}");
        assert!(!e.is_retryable());
    }
}

#[cfg(test)]
mod props_tests;
