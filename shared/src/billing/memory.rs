//! The in-memory fake of every billing storage port ([`MemoryBilling`]), with the same
//! semantics as [`super::dynamo::DynamoBilling`] (one record per key, a duplicate overwriting
//! itself; guarded updates, optimistic versions; the write window of `put_records`) and failure injection, for the unit tests of
//! the bill state machine. It returns stored records; the numbers are computed by
//! [`super::aggregate`], as for DynamoDB.

use super::dunning::Dunning;
use super::money::Money;
use super::period::Period;
use super::ports::{
    BillState, Credits, Debit, DunningStore, InvoiceRecord, InvoiceStore, StoredUsage,
    SubscriptionView, UsageStore, shard_of,
};
use super::subscription::Subscription;
use super::usage::{Rejection, Usage};
use crate::error::{Error, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct MemState {
    /// Usage records by (customer, subscription, period) -> record id.
    usage: HashMap<(String, String, Period), BTreeMap<String, StoredUsage>>,
    rejected: Vec<Rejection>,
    closed: HashMap<Period, DateTime<Utc>>,
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
impl UsageStore for MemoryBilling {
    async fn put_records(
        &self,
        records: &[Usage],
        not_after: Option<Instant>,
    ) -> Result<Vec<Usage>> {
        if not_after.is_some_and(|t| Instant::now() >= t) {
            return Ok(records.to_vec());
        }
        let mut s = lock(&self.state);
        for u in records {
            s.usage
                .entry((u.customer.clone(), u.subscription.clone(), u.period()))
                .or_default()
                .insert(u.id.clone(), StoredUsage::from(u));
        }
        Ok(Vec::new())
    }

    async fn stored(&self, records: &[Usage]) -> Result<Vec<bool>> {
        let s = lock(&self.state);
        Ok(records
            .iter()
            .map(|u| {
                s.usage
                    .get(&(u.customer.clone(), u.subscription.clone(), u.period()))
                    .is_some_and(|m| m.contains_key(&u.id))
            })
            .collect())
    }

    async fn reject(&self, rejections: &[Rejection]) -> Result<()> {
        lock(&self.state)
            .rejected
            .extend(rejections.iter().cloned());
        Ok(())
    }

    async fn records(
        &self,
        customer: &str,
        subscription: &str,
        period: Period,
    ) -> Result<Vec<StoredUsage>> {
        Ok(lock(&self.state)
            .usage
            .get(&(customer.to_owned(), subscription.to_owned(), period))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn closed_at(&self, period: Period) -> Result<Option<DateTime<Utc>>> {
        Ok(lock(&self.state).closed.get(&period).copied())
    }

    async fn close(&self, period: Period, at: DateTime<Utc>) -> Result<DateTime<Utc>> {
        Ok(*lock(&self.state).closed.entry(period).or_insert(at))
    }
}

#[async_trait]
impl SubscriptionView for MemoryBilling {
    async fn upsert(&self, sub: &Subscription) -> Result<bool> {
        let mut s = lock(&self.state);
        let key = (sub.customer.clone(), sub.subscription.clone());
        // The rule of `Subscription::order_key`: a later phase, else a later second, else
        // the last applied (the DynamoDB adapter's condition says the same).
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

/// A usage store whose writes wait before they start, per record id: an ingest held between
/// its check of the period and its write (the period-close race, in tests of any store).
pub struct HeldWrites {
    inner: std::sync::Arc<dyn UsageStore>,
    hold: HashMap<String, std::time::Duration>,
}

impl HeldWrites {
    /// `hold`: how long the write of each record id waits (absent: no wait).
    pub fn new(
        inner: std::sync::Arc<dyn UsageStore>,
        hold: HashMap<String, std::time::Duration>,
    ) -> Self {
        Self { inner, hold }
    }
}

#[async_trait]
impl UsageStore for HeldWrites {
    async fn put_records(
        &self,
        records: &[Usage],
        not_after: Option<Instant>,
    ) -> Result<Vec<Usage>> {
        let wait = records.iter().filter_map(|r| self.hold.get(&r.id)).max();
        if let Some(w) = wait {
            tokio::time::sleep(*w).await;
        }
        self.inner.put_records(records, not_after).await
    }
    async fn stored(&self, records: &[Usage]) -> Result<Vec<bool>> {
        self.inner.stored(records).await
    }
    async fn reject(&self, rejections: &[Rejection]) -> Result<()> {
        self.inner.reject(rejections).await
    }
    async fn records(&self, c: &str, s: &str, p: Period) -> Result<Vec<StoredUsage>> {
        self.inner.records(c, s, p).await
    }
    async fn closed_at(&self, p: Period) -> Result<Option<DateTime<Utc>>> {
        self.inner.closed_at(p).await
    }
    async fn close(&self, p: Period, at: DateTime<Utc>) -> Result<DateTime<Utc>> {
        self.inner.close(p, at).await
    }
}
