//! The capabilities the billing services need, each a small trait, with in-memory fakes.
//!
//! Real adapters: [`super::dynamo`] (billing table) and [`super::stripe_api`] (Stripe).
//! The fakes keep the same semantics (dedupe, guarded updates, optimistic versions, pending
//! invoice items swept into the next invoice) and can inject failures, for the unit tests of
//! the bill state machine.

use super::aggregate::{Accumulator, Aggregation};
use super::dunning::Dunning;
use super::invoice::{Invoice, StripeRefs};
use super::money::{Money, Quantity};
use super::period::Period;
use super::subscription::Subscription;
use super::usage::{Rejection, Usage};
use crate::error::{Error, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// Shards of the subscription index: the plan step fans out one job per shard.
pub const SHARDS: u32 = 16;

/// The shard of a customer (FNV-1a): all of a customer's subscriptions share a shard.
pub fn shard_of(customer: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in customer.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % SHARDS
}

/// Usage storage: ingest side and billing side.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Records one usage, deduplicated by its id. `true` when new, `false` for a duplicate.
    async fn record(&self, usage: &Usage, aggregation: Aggregation) -> Result<bool>;
    /// Stores a refused record (the late / rejected list).
    async fn reject(&self, rejection: &Rejection) -> Result<()>;
    /// The period's quantity of each `(metric, aggregation)` of a subscription.
    async fn quantities(
        &self,
        customer: &str,
        subscription: &str,
        metrics: &[(String, Aggregation)],
        period: Period,
    ) -> Result<BTreeMap<String, Quantity>>;
    /// Whether the plan step closed `period` (its late records are refused).
    async fn is_closed(&self, period: Period) -> Result<bool>;
    /// Closes `period` for ingestion (idempotent).
    async fn close(&self, period: Period) -> Result<()>;
}

/// The local view of subscriptions.
#[async_trait]
pub trait SubscriptionView: Send + Sync {
    /// Stores `sub` unless a view at least as recent exists. `true` when stored.
    async fn upsert(&self, sub: &Subscription) -> Result<bool>;
    async fn get(&self, customer: &str, subscription: &str) -> Result<Option<Subscription>>;
    async fn for_customer(&self, customer: &str) -> Result<Vec<Subscription>>;
    /// One page of a shard's subscriptions and the cursor of the next page.
    async fn page(
        &self,
        shard: u32,
        cursor: Option<String>,
    ) -> Result<(Vec<Subscription>, Option<String>)>;
}

/// Where a bill run stands. Each step's Stripe id is recorded before the next starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillState {
    Planned,
    Credited,
    ItemsCreated,
    InvoiceCreated,
    Finalized,
    ArtifactsWritten,
    Done,
}

/// The billing-table record of one (customer, period) invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRecord {
    pub state: BillState,
    pub invoice: Invoice,
    pub refs: StripeRefs,
    /// Bill runs that worked on it (> 1 means a resume: look before creating).
    pub attempts: u32,
    /// Optimistic concurrency version.
    pub version: u64,
}

/// Invoice records.
#[async_trait]
pub trait InvoiceStore: Send + Sync {
    async fn load(&self, customer: &str, period: Period) -> Result<Option<InvoiceRecord>>;
    /// Creates the record; `false` when one exists already.
    async fn create(&self, rec: &InvoiceRecord) -> Result<bool>;
    /// Saves `rec` (version `rec.version`) if the stored version is `rec.version - 1`;
    /// otherwise [`Error::Conflict`].
    async fn save(&self, rec: &InvoiceRecord) -> Result<()>;
}

/// The outcome of a credit debit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Debit {
    Applied,
    /// This invoice's debit was applied before (a rerun).
    AlreadyApplied,
    /// The balance no longer covers it (spent elsewhere meanwhile).
    Insufficient,
}

/// Prepaid / promotional credit balances.
#[async_trait]
pub trait Credits: Send + Sync {
    async fn balance(&self, customer: &str) -> Result<Option<Money>>;
    /// Debits `amount` for `invoice_key`, at most once per key, never below zero.
    async fn debit(&self, customer: &str, invoice_key: &str, amount: &Money) -> Result<Debit>;
    /// Adds a grant, at most once per `grant_id`. `true` when added.
    async fn grant(&self, customer: &str, grant_id: &str, amount: &Money) -> Result<bool>;
}

/// Dunning states with optimistic versions.
#[async_trait]
pub trait DunningStore: Send + Sync {
    async fn load(&self, customer: &str) -> Result<(Dunning, u64)>;
    /// Saves if the stored version is still `version`, else [`Error::Conflict`].
    async fn save(&self, customer: &str, state: &Dunning, version: u64) -> Result<()>;
}

/// A Stripe invoice as far as billing cares.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct StripeInvoice {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub total: Option<i64>,
}

/// An invoice item to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRequest {
    pub customer: String,
    pub amount: Money,
    pub description: String,
    /// `{invoice key}:{line id}`: found again by metadata after a crash.
    pub key: String,
    pub period: Period,
}

/// Outcome of finalize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finalized {
    Done,
    /// The API has no finalize endpoint (localstripe): the invoice stays a draft.
    Unsupported,
}

/// Stripe invoicing.
#[async_trait]
pub trait Invoicing: Send + Sync {
    async fn create_item(&self, item: &ItemRequest, idempotency_key: &str) -> Result<String>;
    /// A pending item of `customer` whose metadata key is `key`.
    async fn find_item(&self, customer: &str, key: &str) -> Result<Option<String>>;
    /// Creates an invoice collecting the customer's pending items.
    async fn create_invoice(
        &self,
        customer: &str,
        key: &str,
        description: &str,
        idempotency_key: &str,
    ) -> Result<StripeInvoice>;
    /// An invoice of `customer` carrying `key` (metadata or description).
    async fn find_invoice(&self, customer: &str, key: &str) -> Result<Option<StripeInvoice>>;
    async fn finalize(&self, invoice_id: &str, idempotency_key: &str) -> Result<Finalized>;
}

// ------------------------------------------------------------------------------------ fakes

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct MemState {
    usage_ids: HashSet<String>,
    usage: HashMap<(String, String, String), Accumulator>,
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
impl UsageStore for MemoryBilling {
    async fn record(&self, u: &Usage, aggregation: Aggregation) -> Result<bool> {
        let mut s = lock(&self.state);
        if !s.usage_ids.insert(u.id.clone()) {
            return Ok(false);
        }
        s.usage
            .entry((
                u.customer.clone(),
                u.subscription.clone(),
                format!("{}#{}", u.period(), u.metric),
            ))
            .or_insert_with(|| Accumulator::new(aggregation))
            .add(
                u.timestamp.timestamp_millis(),
                u.value,
                u.installation.as_deref(),
            );
        Ok(true)
    }

    async fn reject(&self, r: &Rejection) -> Result<()> {
        lock(&self.state).rejected.push(r.clone());
        Ok(())
    }

    async fn quantities(
        &self,
        customer: &str,
        subscription: &str,
        metrics: &[(String, Aggregation)],
        period: Period,
    ) -> Result<BTreeMap<String, Quantity>> {
        let s = lock(&self.state);
        Ok(metrics
            .iter()
            .map(|(m, _)| {
                let q = s
                    .usage
                    .get(&(
                        customer.to_owned(),
                        subscription.to_owned(),
                        format!("{period}#{m}"),
                    ))
                    .map_or(Quantity::ZERO, |a| a.quantity(period));
                (m.clone(), q)
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
            .is_some_and(|old| old.updated_at > sub.updated_at)
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
}

/// A Stripe operation, for failure injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeOp {
    CreateItem,
    CreateInvoice,
    Finalize,
}

#[derive(Debug, Clone)]
struct FakeItem {
    id: String,
    customer: String,
    amount: i64,
    key: String,
    invoice: Option<String>,
}

#[derive(Debug, Clone)]
struct FakeInvoice {
    id: String,
    customer: String,
    key: String,
    total: i64,
    finalized: bool,
}

#[derive(Default)]
struct StripeState {
    items: Vec<FakeItem>,
    invoices: Vec<FakeInvoice>,
    /// The op that "crashes" after doing its work (the response is lost).
    crash_after: Option<StripeOp>,
    calls: u64,
}

/// In-memory Stripe: pending items are swept into the next invoice (Stripe's and
/// localstripe's behaviour); ignores idempotency keys (like localstripe).
#[derive(Default)]
pub struct MemoryStripe {
    state: Mutex<StripeState>,
}

impl MemoryStripe {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `op` performs its side effect, then fails (as if the response was lost).
    pub fn crash_after(&self, op: StripeOp) {
        lock(&self.state).crash_after = Some(op);
    }

    /// Invoices of a customer: (id, total, finalized, item count).
    pub fn invoices(&self, customer: &str) -> Vec<(String, i64, bool, usize)> {
        let s = lock(&self.state);
        s.invoices
            .iter()
            .filter(|i| i.customer == customer)
            .map(|i| {
                let n = s
                    .items
                    .iter()
                    .filter(|it| it.invoice.as_deref() == Some(&i.id))
                    .count();
                (i.id.clone(), i.total, i.finalized, n)
            })
            .collect()
    }

    /// Items created in all (attached or pending).
    pub fn item_count(&self) -> usize {
        lock(&self.state).items.len()
    }

    pub fn calls(&self) -> u64 {
        lock(&self.state).calls
    }

    fn crash(s: &mut StripeState, op: StripeOp) -> Result<()> {
        if s.crash_after == Some(op) {
            s.crash_after = None;
            return Err(Error::dependency(
                "stripe",
                true,
                "simulated crash after the request",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Invoicing for MemoryStripe {
    async fn create_item(&self, item: &ItemRequest, _idem: &str) -> Result<String> {
        let mut s = lock(&self.state);
        s.calls += 1;
        let id = format!("ii_{}", s.items.len() + 1);
        s.items.push(FakeItem {
            id: id.clone(),
            customer: item.customer.clone(),
            amount: item.amount.amount,
            key: item.key.clone(),
            invoice: None,
        });
        Self::crash(&mut s, StripeOp::CreateItem)?;
        Ok(id)
    }

    async fn find_item(&self, customer: &str, key: &str) -> Result<Option<String>> {
        let mut s = lock(&self.state);
        s.calls += 1;
        Ok(s.items
            .iter()
            .find(|i| i.customer == customer && i.key == key && i.invoice.is_none())
            .map(|i| i.id.clone()))
    }

    async fn create_invoice(
        &self,
        customer: &str,
        key: &str,
        _d: &str,
        _idem: &str,
    ) -> Result<StripeInvoice> {
        let mut s = lock(&self.state);
        s.calls += 1;
        let id = format!("in_{}", s.invoices.len() + 1);
        let mut total = 0;
        for it in s
            .items
            .iter_mut()
            .filter(|i| i.customer == customer && i.invoice.is_none())
        {
            it.invoice = Some(id.clone());
            total += it.amount;
        }
        s.invoices.push(FakeInvoice {
            id: id.clone(),
            customer: customer.to_owned(),
            key: key.to_owned(),
            total,
            finalized: false,
        });
        Self::crash(&mut s, StripeOp::CreateInvoice)?;
        Ok(StripeInvoice {
            id,
            status: Some("draft".into()),
            total: Some(total),
        })
    }

    async fn find_invoice(&self, customer: &str, key: &str) -> Result<Option<StripeInvoice>> {
        let mut s = lock(&self.state);
        s.calls += 1;
        Ok(s.invoices
            .iter()
            .find(|i| i.customer == customer && i.key == key)
            .map(|i| StripeInvoice {
                id: i.id.clone(),
                status: Some(if i.finalized { "open" } else { "draft" }.into()),
                total: Some(i.total),
            }))
    }

    async fn finalize(&self, invoice_id: &str, _idem: &str) -> Result<Finalized> {
        let mut s = lock(&self.state);
        s.calls += 1;
        let inv = s
            .invoices
            .iter_mut()
            .find(|i| i.id == invoice_id)
            .ok_or_else(|| Error::NotFound(format!("invoice {invoice_id}")))?;
        inv.finalized = true;
        Self::crash(&mut s, StripeOp::Finalize)?;
        Ok(Finalized::Done)
    }
}
