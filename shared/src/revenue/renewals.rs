//! Renewal opportunities: one per (subscription, next term), opened when the term's end comes
//! within the renewal window, kept up to date (seats, value), closed `Closed Won` when the
//! next term is paid and `Closed Lost` when the subscription is cancelled. Pure rules.
//!
//! The CRM record is shared with customer-sync, which writes each term's opportunity from
//! Stripe's events under the same key: revenue-ops writes the renewal while it is open and
//! when it is lost (including a cancellation set for the term's end, which Stripe reports
//! as still active); the won renewal is customer-sync's won term.

use super::metrics::{DAY, MetricsEngine, is_paying};
use crate::crm::OpportunityStage;
use crate::customers::state::{CustomerState, Term, ValuePoint};
use crate::values::Money;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many days before a term ends its renewal opens, by billing interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalWindows {
    /// By Stripe interval (`year`, `month`, `week`, `day`).
    pub days: BTreeMap<String, u32>,
    /// For an interval not listed.
    pub default_days: u32,
}

impl Default for RenewalWindows {
    /// 90 days for yearly terms, 30 for monthly (and anything else).
    fn default() -> Self {
        Self {
            days: [("year".to_owned(), 90), ("month".to_owned(), 30)].into(),
            default_days: 30,
        }
    }
}

impl RenewalWindows {
    pub fn for_interval(&self, interval: Option<&str>) -> u32 {
        interval
            .and_then(|i| self.days.get(i))
            .copied()
            .unwrap_or(self.default_days)
    }
}

/// A renewal opportunity as revenue-ops tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    /// `{subscription}:{term end, YYYY-MM-DD}`: the CRM external id. It is the key
    /// customer-sync gives the opportunity of the term starting then, so the renewal and the
    /// won (or lost) next term are one CRM record, never two.
    pub key: String,
    pub subscription: String,
    /// End of the term being renewed (seconds): the close date.
    pub term_end: i64,
    pub stage: OpportunityStage,
    /// The subscription's current annualised value (12 × MRR, after recurring discounts).
    pub amount: Option<Money>,
    pub seats: Option<u32>,
    pub sku: Option<String>,
    pub loss_reason: Option<String>,
}

impl Renewal {
    /// `YYYY-MM-DD` of the term end.
    pub fn close_date(&self) -> String {
        date_of(self.term_end)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }
}

/// The UTC date of seconds since the epoch.
pub fn date_of(secs: i64) -> Option<NaiveDate> {
    chrono::DateTime::from_timestamp(secs, 0).map(|d| d.date_naive())
}

/// Whole days of the term left after `date` (0 = it ends within the next day; negative =
/// it has ended).
pub fn days_until(date: NaiveDate, term_end: i64) -> Option<i64> {
    Some((term_end - super::metrics::end_of(date)).div_euclid(DAY))
}

fn key(subscription: &str, term_end: i64) -> String {
    let end = date_of(term_end)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    format!("{subscription}:{end}")
}

fn annualised(point: &ValuePoint) -> Option<Money> {
    point
        .mrr
        .as_ref()
        .map(|m| Money::new(m.amount.saturating_mul(12), m.currency.clone()))
}

/// The renewal open at `date` for a subscription in the state `point`: a paying
/// subscription, not set to cancel, whose term ends within its window (0 to N days ahead,
/// both included).
pub fn renewal_at(
    windows: &RenewalWindows,
    subscription: &str,
    term: &Term,
    point: &ValuePoint,
    date: NaiveDate,
) -> Option<Renewal> {
    if !is_paying(&point.status) || point.cancel_at_period_end {
        return None;
    }
    let days = days_until(date, point.term_end)?;
    let window = i64::from(windows.for_interval(term.interval.as_deref()));
    (0..=window).contains(&days).then(|| Renewal {
        key: key(subscription, point.term_end),
        subscription: subscription.to_owned(),
        term_end: point.term_end,
        stage: OpportunityStage::Open,
        amount: annualised(point),
        seats: point.seats,
        sku: term.sku.clone(),
        loss_reason: None,
    })
}

/// Brings every tracked renewal of a customer up to date at `date` and opens the new ones.
/// `tracked`: the renewals known so far, by key. Returns the renewals as they should now
/// stand (closed ones are kept: a closed renewal is never reopened).
pub fn update(
    engine: &MetricsEngine,
    state: &CustomerState,
    tracked: &BTreeMap<String, Renewal>,
    date: NaiveDate,
) -> BTreeMap<String, Renewal> {
    let mut out = tracked.clone();
    for (id, term) in &state.subscriptions {
        let point = engine.valued(
            term,
            term.point(term.history.last().map_or(term.start, |p| p.at)),
        );
        // Open (or refresh) the renewal of the current term.
        if let Some(r) = renewal_at(&engine.windows, id, term, &point, date) {
            match out.get_mut(&r.key) {
                Some(existing) if existing.stage == OpportunityStage::Open => {
                    existing.amount = r.amount;
                    existing.seats = r.seats;
                    existing.sku = r.sku;
                }
                Some(_) => {}
                None => {
                    out.insert(r.key.clone(), r);
                }
            }
        }
        // Close the open renewals of this subscription.
        for r in out
            .values_mut()
            .filter(|r| r.subscription == *id && r.stage == OpportunityStage::Open)
        {
            if matches!(term.status.as_str(), "canceled" | "incomplete_expired")
                || term.cancel_at_period_end
            {
                r.stage = OpportunityStage::ClosedLost;
                r.loss_reason = Some(
                    term.cancel_reason
                        .clone()
                        .unwrap_or_else(|| "cancellation_requested".into()),
                );
            } else if term.end > r.term_end
                && term.status == "active"
                && renewal_paid(state, r.term_end)
            {
                r.stage = OpportunityStage::ClosedWon;
            }
        }
    }
    out
}

/// Whether an invoice was paid at or after the renewed term's end (a day's leeway: Stripe
/// creates the renewal invoice about when the term rolls over).
fn renewal_paid(state: &CustomerState, term_end: i64) -> bool {
    state
        .last_invoice
        .as_ref()
        .is_some_and(|i| i.at >= term_end - DAY)
}
