//! The capabilities the billing services need, each a small trait, and the records they
//! exchange.
//!
//! Adapters: [`super::dynamo::DynamoBilling`] (billing table) implements every storage port;
//! [`super::memory::MemoryBilling`] is its in-memory fake. [`Invoicing`] is implemented once,
//! in [`super::invoicing`], for every [`crate::stripe::StripeInvoices`] (the HTTP client and
//! [`crate::stripe::MemoryStripe`]).

use super::aggregate::{Aggregation, MetricUsage};
use super::document::Issued;
use super::dunning::Dunning;
use super::invoice::{Invoice, StripeRefs};
use super::money::Money;
use super::money::Quantity;
use super::period::Period;
use super::subscription::Subscription;
use super::usage::{Rejection, Usage};
use crate::error::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

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

/// One usage record as stored: what billing aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUsage {
    pub id: String,
    pub metric: String,
    /// The record's own time, milliseconds since the epoch.
    pub ts_ms: i64,
    pub value: Quantity,
    pub installation: Option<String>,
}

impl From<&Usage> for StoredUsage {
    fn from(u: &Usage) -> Self {
        Self {
            id: u.id.clone(),
            metric: u.metric.clone(),
            ts_ms: u.timestamp.timestamp_millis(),
            value: u.value,
            installation: u.installation.clone(),
        }
    }
}

/// Usage storage: ingest side and billing side.
///
/// Every record is stored under its own key — (customer, subscription, period of its
/// timestamp, record id) — by a plain write: no condition, no transaction, one write unit. A
/// duplicate overwrites itself, so dedupe by id is exact without a read, and aggregation
/// happens at billing time from the period's records ([`super::aggregate::usage_of`]), the
/// same code for every store.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Writes `records` (in batches). No write starts after `not_after` (the ingest's write
    /// window, see [`super::usage::IngestPolicy::write_window`]): the records not written by
    /// then are returned, unwritten, for the caller to re-check the period first.
    async fn put_records(
        &self,
        records: &[Usage],
        not_after: Option<Instant>,
    ) -> Result<Vec<Usage>>;
    /// Which of `records` are stored already (by key: a redelivery of a record written
    /// before its period closed is a duplicate, not a late record). One flag per record.
    async fn stored(&self, records: &[Usage]) -> Result<Vec<bool>>;
    /// Stores refused records (the late / rejected lists), in batches.
    async fn reject(&self, rejections: &[Rejection]) -> Result<()>;
    /// Every stored record of `subscription` whose timestamp falls in `period` (a strongly
    /// consistent read).
    async fn records(
        &self,
        customer: &str,
        subscription: &str,
        period: Period,
    ) -> Result<Vec<StoredUsage>>;
    /// When the plan step closed `period`, if it did (its late records are refused).
    async fn closed_at(&self, period: Period) -> Result<Option<DateTime<Utc>>>;
    /// Closes `period` for ingestion as of `at` (idempotent: an earlier close keeps its
    /// time). Returns the close time in force.
    async fn close(&self, period: Period, at: DateTime<Utc>) -> Result<DateTime<Utc>>;

    /// Whether `period` is closed.
    async fn is_closed(&self, period: Period) -> Result<bool> {
        Ok(self.closed_at(period).await?.is_some())
    }

    /// What is stored of each `(metric, aggregation)` of a subscription for `period` (every
    /// metric asked for has an entry); [`super::aggregate::quantities`] computes the numbers.
    /// A time-weighted metric also reads the month before, for the level it starts from.
    async fn usage(
        &self,
        customer: &str,
        subscription: &str,
        metrics: &[(String, Aggregation)],
        period: Period,
    ) -> Result<BTreeMap<String, MetricUsage>> {
        let records = self.records(customer, subscription, period).await?;
        let before = if metrics.iter().any(|(_, a)| *a == Aggregation::WeightedSum) {
            self.records(customer, subscription, period.prev()).await?
        } else {
            Vec::new()
        };
        Ok(super::aggregate::usage_of(metrics, &records, &before))
    }
}

/// One metric's usage of one day (UTC), from the daily aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUsage {
    pub date: chrono::NaiveDate,
    pub metric: String,
    pub count: u64,
    /// Sum and max in millionths.
    pub sum: i128,
    pub max: Option<i64>,
}

/// Usage read back by day, for reporting (revenue-ops' health and telemetry): every metric's
/// count, sum and max per day, folded from the stored records of the months touched.
#[async_trait]
pub trait UsageHistory: Send + Sync {
    /// Every metric's days of `subscription` from `from` to `to` inclusive.
    async fn daily(
        &self,
        customer: &str,
        subscription: &str,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<DailyUsage>>;
}

#[async_trait]
impl<T: UsageStore + ?Sized> UsageHistory for T {
    async fn daily(
        &self,
        customer: &str,
        subscription: &str,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<DailyUsage>> {
        let mut records = Vec::new();
        let mut month = Period::of(from.and_time(chrono::NaiveTime::MIN).and_utc());
        while month.first_day() <= to {
            records.extend(self.records(customer, subscription, month).await?);
            month = month.next();
        }
        Ok(super::aggregate::daily_of(&records, from, to))
    }
}

/// The local view of subscriptions.
#[async_trait]
pub trait SubscriptionView: Send + Sync {
    /// Stores `sub` unless the stored view is newer by [`Subscription::order_key`] (a later
    /// phase, or the same phase and a later second): a cancelled view is never replaced by a
    /// live one, a live one never by an incomplete one. `true` when stored.
    async fn upsert(&self, sub: &Subscription) -> Result<bool>;
    async fn get(&self, customer: &str, subscription: &str) -> Result<Option<Subscription>>;
    /// The views of many `(customer, subscription)` keys at once (the ingest's look-ups; a
    /// batched read where the store has one). Unknown keys are absent.
    async fn get_many(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), Subscription>> {
        let mut out = HashMap::new();
        for (c, s) in keys {
            if let Some(sub) = self.get(c, s).await? {
                out.insert((c.clone(), s.clone()), sub);
            }
        }
        Ok(out)
    }
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
    /// The (empty, draft) Stripe invoice exists; its items are being attached.
    InvoiceCreated,
    ItemsCreated,
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
    /// Every invoice record of `customer`, newest period first (one Query).
    async fn for_customer(&self, customer: &str) -> Result<Vec<InvoiceRecord>>;
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
    /// Saves if the stored version is still `version`, else [`Error::Conflict`]. The state's
    /// [`Dunning::next_at`] is indexed: [`DunningStore::due`] finds it.
    async fn save(&self, customer: &str, state: &Dunning, version: u64) -> Result<()>;
    /// The customers whose `next_at` is at or before `now` (unix seconds): the daily sweep's
    /// work, read from an index of only those customers (never a scan of every customer).
    async fn due(&self, now: i64) -> Result<Vec<String>>;
}

/// What collections needs of the payment provider.
#[async_trait]
pub trait Collections: Send + Sync {
    /// The customer's default card; `None` when there is no usable default payment method.
    async fn card(&self, customer: &str) -> Result<Option<crate::stripe::Card>>;
    /// Cancels a subscription now (idempotent: an already cancelled one is fine).
    async fn cancel_subscription(&self, id: &str) -> Result<()>;
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
    /// The draft invoice the item is a line of (created first: items are never left pending).
    pub invoice: String,
    pub amount: Money,
    pub description: String,
    /// `{invoice key}:{line id}`: found again by metadata after a crash.
    pub key: String,
    pub period: Period,
    /// Stripe Tax computes the tax: the amount is before tax (`tax_behavior=exclusive`).
    pub taxed: bool,
}

/// How an invoice is created beyond its items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoiceOptions {
    /// The invoice's currency (lower-case ISO 4217): it is created before its items.
    pub currency: String,
    /// Stripe Tax computes the tax (`automatic_tax[enabled]=true`).
    pub automatic_tax: bool,
    /// The coupon that takes the invoice's credit off (see [`Invoicing::credit_coupon`]).
    pub coupon: Option<String>,
}

/// Outcome of finalize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finalized {
    /// Finalized (now or by an earlier run): what Stripe says of the invoice.
    Done(Box<Issued>),
    /// The API has no finalize endpoint: the invoice stays a draft.
    Unsupported,
    /// Stripe Tax cannot place the customer (no usable address): Stripe refused to finalize
    /// (`customer_tax_location_invalid`, or `automatic_tax.status` `requires_location_inputs`)
    /// and the invoice stays a draft until the address is fixed.
    TaxLocationRequired,
}

/// Stripe invoicing.
#[async_trait]
pub trait Invoicing: Send + Sync {
    /// Creates an item on its (draft) invoice. Returns the item id.
    async fn create_item(&self, item: &ItemRequest, idempotency_key: &str) -> Result<String>;
    /// The items already on `invoice`, by their metadata key (one read, for a resumed run).
    async fn items_on(&self, invoice: &str) -> Result<BTreeMap<String, String>>;
    /// Creates an empty draft invoice (the customer's other pending items excluded) that the
    /// items are then attached to.
    async fn create_invoice(
        &self,
        customer: &str,
        key: &str,
        description: &str,
        options: &InvoiceOptions,
        idempotency_key: &str,
    ) -> Result<StripeInvoice>;
    /// The coupon taking `credit` off the invoice `key` (an invoice Stripe Tax computes
    /// refuses negative items, so a credit is a discount there, taxed accordingly). Its id is
    /// derived from `key`; a resumed run finds the one it made. Returns the id.
    async fn credit_coupon(&self, key: &str, credit: &Money, resuming: bool) -> Result<String>;
    /// An invoice of `customer` carrying `key` (metadata or description).
    async fn find_invoice(&self, customer: &str, key: &str) -> Result<Option<StripeInvoice>>;
    async fn finalize(&self, invoice_id: &str, idempotency_key: &str) -> Result<Finalized>;
}
