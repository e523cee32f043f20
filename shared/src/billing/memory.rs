//! The in-memory fake of every billing storage port ([`MemoryBilling`]), with the same
//! semantics as [`super::dynamo::DynamoBilling`] (dedupe by record id, daily partials and
//! points, guarded updates, optimistic versions) and failure injection, for the unit tests of
//! the bill state machine. It returns stored records; the numbers are computed by
//! [`super::aggregate`], as for DynamoDB.

use super::aggregate::{Aggregation, MetricUsage, Partial, Point};
use super::dunning::Dunning;
use super::money::Money;
use super::period::Period;
use super::ports::{
    BillState, Credits, DailyUsage, Debit, DunningStore, InvoiceRecord, InvoiceStore,
    SubscriptionView, UsageHistory, UsageStore, shard_of,
};
use super::subscription::Subscription;
use super::usage::{Rejection, Usage};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct MemState {
    usage_ids: HashSet<String>,
    /// Merged partials by (customer, subscription, `{period}#{metric}`).
    partials: HashMap<(String, String, String), Partial>,
    /// Points (latest, weighted sum) by (customer, subscription, metric), any period.
    points: HashMap<(String, String, String), Vec<Point>>,
    /// Aggregated records by (customer, subscription) -> (day, metric).
    daily: HashMap<(String, String), BTreeMap<(chrono::NaiveDate, String), Partial>>,
    rejected: Vec<Rejection>,
    closed: HashSet<Period>,
    subs: BTreeMap<(String, String), Subscription>,
    invoices: HashMap<(String, Period), InvoiceRecord>,
    credits: HashMap<String, (Money, HashSet<String>)>,
    dunning: HashMap<String, (Dunning, u64)>,
}

/// In-memory billing table: usage, subscriptions, invoices, credits, dunning.
#[derive(Default)]
pub struct MemoryBilling {
    state: Mutex<MemState>,
    /// Saving an invoice record into this state fails once (a simulated crash).
    fail_save_into: Mutex<Option<BillState>>,
}

impl MemoryBilling {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next save into `state` fail with a retryable error.
    pub fn fail_next_save_into(&self, state: BillState) {
        *lock(&self.fail_save_into) = Some(state);
    }

    /// Refused records so far.
    pub fn rejected(&self) -> Vec<Rejection> {
        lock(&self.state).rejected.clone()
    }

    /// Credit balance (minor units) of a customer.
    pub fn credit_balance(&self, customer: &str) -> i64 {
        lock(&self.state)
            .credits
            .get(customer)
            .map_or(0, |(m, _)| m.amount)
    }
}

#[async_trait]
impl UsageHistory for MemoryBilling {
    async fn daily(
        &self,
        customer: &str,
        subscription: &str,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<DailyUsage>> {
        let s = lock(&self.state);
        let Some(days) = s.daily.get(&(customer.to_owned(), subscription.to_owned())) else {
            return Ok(Vec::new());
        };
        Ok(days
            .iter()
            .filter(|((d, _), _)| *d >= from && *d <= to)
            .map(|((date, metric), p)| DailyUsage {
                date: *date,
                metric: metric.clone(),
                count: p.count,
                sum: p.sum,
                max: p.max,
            })
            .collect())
    }
}

#[async_trait]
impl UsageStore for MemoryBilling {
    async fn record(&self, u: &Usage, aggregation: Aggregation) -> Result<bool> {
        let mut s = lock(&self.state);
        if !s.usage_ids.insert(u.id.clone()) {
            return Ok(false);
        }
        if aggregation.needs_points() {
            s.points
                .entry((u.customer.clone(), u.subscription.clone(), u.metric.clone()))
                .or_default()
                .push(Point {
                    ts_ms: u.timestamp.timestamp_millis(),
                    value: u.value,
                });
        } else {
            s.daily
                .entry((u.customer.clone(), u.subscription.clone()))
                .or_default()
                .entry((u.timestamp.date_naive(), u.metric.clone()))
                .or_default()
                .add(u.value, None, false);
            s.partials
                .entry((
                    u.customer.clone(),
                    u.subscription.clone(),
                    format!("{}#{}", u.period(), u.metric),
                ))
                .or_default()
                .add(
                    u.value,
                    u.installation.as_deref(),
                    aggregation == Aggregation::UniqueCount,
                );
        }
        Ok(true)
    }

    async fn reject(&self, r: &Rejection) -> Result<()> {
        lock(&self.state).rejected.push(r.clone());
        Ok(())
    }

    async fn usage(
        &self,
        customer: &str,
        subscription: &str,
        metrics: &[(String, Aggregation)],
        period: Period,
    ) -> Result<BTreeMap<String, MetricUsage>> {
        let s = lock(&self.state);
        let (start, end) = (
            period.start().timestamp_millis(),
            period.end().timestamp_millis(),
        );
        Ok(metrics
            .iter()
            .map(|(m, agg)| {
                let key = |k: String| (customer.to_owned(), subscription.to_owned(), k);
                let mut u = MetricUsage::default();
                if agg.needs_points() {
                    let all = s.points.get(&key(m.clone())).cloned().unwrap_or_default();
                    u.points = all
                        .iter()
                        .copied()
                        .filter(|p| p.ts_ms >= start && p.ts_ms < end)
                        .collect();
                    if *agg == Aggregation::WeightedSum {
                        u.carry_in = all
                            .iter()
                            .filter(|p| p.ts_ms < start)
                            .max()
                            .map(|p| p.value);
                    }
                } else if let Some(p) = s.partials.get(&key(format!("{period}#{m}"))) {
                    u.partial = p.clone();
                }
                (m.clone(), u)
            })
            .collect())
    }

    async fn is_closed(&self, period: Period) -> Result<bool> {
        Ok(lock(&self.state).closed.contains(&period))
    }

    async fn close(&self, period: Period) -> Result<()> {
        lock(&self.state).closed.insert(period);
        Ok(())
    }
}

#[async_trait]
impl SubscriptionView for MemoryBilling {
    async fn upsert(&self, sub: &Subscription) -> Result<bool> {
        let mut s = lock(&self.state);
        let key = (sub.customer.clone(), sub.subscription.clone());
        if s.subs
            .get(&key)
            .is_some_and(|old| old.order_key() > sub.order_key())
        {
            return Ok(false);
        }
        s.subs.insert(key, sub.clone());
        Ok(true)
    }

    async fn get(&self, customer: &str, subscription: &str) -> Result<Option<Subscription>> {
        Ok(lock(&self.state)
            .subs
            .get(&(customer.to_owned(), subscription.to_owned()))
            .cloned())
    }

    async fn for_customer(&self, customer: &str) -> Result<Vec<Subscription>> {
        Ok(lock(&self.state)
            .subs
            .values()
            .filter(|s| s.customer == customer)
            .cloned()
            .collect())
    }

    async fn page(
        &self,
        shard: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Subscription>, Option<String>)> {
        const PAGE: usize = 2;
        let s = lock(&self.state);
        let mut all: Vec<&Subscription> = s
            .subs
            .values()
            .filter(|x| shard_of(&x.customer) == shard)
            .collect();
        all.sort_by_key(|x| format!("{}#{}", x.customer, x.subscription));
        let start = cursor.and_then(|c| c.parse::<usize>().ok()).unwrap_or(0);
        let page: Vec<Subscription> = all
            .iter()
            .skip(start)
            .take(PAGE)
            .map(|x| (*x).clone())
            .collect();
        let next = (start + PAGE < all.len()).then(|| (start + PAGE).to_string());
        Ok((page, next))
    }
}

#[async_trait]
impl InvoiceStore for MemoryBilling {
    async fn load(&self, customer: &str, period: Period) -> Result<Option<InvoiceRecord>> {
        Ok(lock(&self.state)
            .invoices
            .get(&(customer.to_owned(), period))
            .cloned())
    }

    async fn create(&self, rec: &InvoiceRecord) -> Result<bool> {
        let mut s = lock(&self.state);
        let key = (rec.invoice.customer.clone(), rec.invoice.period);
        if s.invoices.contains_key(&key) {
            return Ok(false);
        }
        s.invoices.insert(key, rec.clone());
        Ok(true)
    }

    async fn for_customer(&self, customer: &str) -> Result<Vec<InvoiceRecord>> {
        let mut out: Vec<InvoiceRecord> = lock(&self.state)
            .invoices
            .iter()
            .filter(|((c, _), _)| c == customer)
            .map(|(_, r)| r.clone())
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.invoice.period));
        Ok(out)
    }

    async fn save(&self, rec: &InvoiceRecord) -> Result<()> {
        {
            let mut f = lock(&self.fail_save_into);
            if *f == Some(rec.state) {
                *f = None;
                return Err(Error::dependency(
                    "dynamodb",
                    true,
                    "simulated crash before saving the state",
                ));
            }
        }
        let mut s = lock(&self.state);
        let key = (rec.invoice.customer.clone(), rec.invoice.period);
        match s.invoices.get(&key) {
            Some(old) if old.version + 1 == rec.version => {
                s.invoices.insert(key, rec.clone());
                Ok(())
            }
            _ => Err(Error::Conflict(format!(
                "invoice record {key:?} changed meanwhile"
            ))),
        }
    }
}

#[async_trait]
impl Credits for MemoryBilling {
    async fn balance(&self, customer: &str) -> Result<Option<Money>> {
        Ok(lock(&self.state)
            .credits
            .get(customer)
            .map(|(m, _)| m.clone()))
    }

    async fn debit(&self, customer: &str, invoice_key: &str, amount: &Money) -> Result<Debit> {
        let mut s = lock(&self.state);
        let Some((bal, applied)) = s.credits.get_mut(customer) else {
            return Ok(Debit::Insufficient);
        };
        let tag = format!("debit:{invoice_key}");
        if applied.contains(&tag) {
            return Ok(Debit::AlreadyApplied);
        }
        if bal.currency != amount.currency || bal.amount < amount.amount {
            return Ok(Debit::Insufficient);
        }
        bal.amount -= amount.amount;
        applied.insert(tag);
        Ok(Debit::Applied)
    }

    async fn grant(&self, customer: &str, grant_id: &str, amount: &Money) -> Result<bool> {
        let mut s = lock(&self.state);
        let entry = s
            .credits
            .entry(customer.to_owned())
            .or_insert_with(|| (Money::new(0, amount.currency.clone()), HashSet::new()));
        if entry.0.currency != amount.currency {
            return Err(Error::Invalid(format!(
                "credit balance of {customer} is in {}",
                entry.0.currency
            )));
        }
        let tag = format!("grant:{grant_id}");
        if !entry.1.insert(tag) {
            return Ok(false);
        }
        entry.0.amount += amount.amount;
        Ok(true)
    }
}

#[async_trait]
impl DunningStore for MemoryBilling {
    async fn load(&self, customer: &str) -> Result<(Dunning, u64)> {
        Ok(lock(&self.state)
            .dunning
            .get(customer)
            .cloned()
            .unwrap_or_default())
    }

    async fn save(&self, customer: &str, state: &Dunning, version: u64) -> Result<()> {
        let mut s = lock(&self.state);
        let current = s.dunning.get(customer).map_or(0, |(_, v)| *v);
        if current != version {
            return Err(Error::Conflict(format!(
                "dunning state of {customer} changed meanwhile"
            )));
        }
        s.dunning
            .insert(customer.to_owned(), (state.clone(), version + 1));
        Ok(())
    }

    async fn due(&self, now: i64) -> Result<Vec<String>> {
        let s = lock(&self.state);
        let mut due: Vec<(i64, String)> = s
            .dunning
            .iter()
            .filter_map(|(c, (d, _))| d.next_at.filter(|t| *t <= now).map(|t| (t, c.clone())))
            .collect();
        due.sort();
        Ok(due.into_iter().map(|(_, c)| c).collect())
    }
}
