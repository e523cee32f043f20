//! The billing services: ingest usage, plan a period, bill one customer, apply Stripe
//! billing events, grant credits. They depend only on ports, so the same code runs on the
//! real adapters (Lambda) and the fakes (unit tests).
//!
//! # Bill: a resumable state machine, exactly once
//! The record of (customer, period) in the billing table moves
//! `PLANNED -> CREDITED -> INVOICE_CREATED -> ITEMS_CREATED -> FINALIZED -> ARTIFACTS_WRITTEN
//! -> DONE`, saved after every step with the Stripe ids obtained so far (one save per invoice
//! item). The invoice is created first, empty (`pending_invoice_items_behavior=exclude`,
//! `auto_advance=false`), and each item is attached to it (`invoice=`): an invoice never sweeps
//! up other pending items of the customer, and a run resumed after Stripe's 24-hour
//! idempotency window cannot bill an item twice by collecting a stray one. A fresh run makes
//! `2 + lines` Stripe calls (invoice, items, finalize), plus the card look-up of the
//! announce step. A run is serialised by a ledger lease on `billing:{customer}:{period}` (completed
//! for ever once DONE). A rerun loads the record and continues where it stopped. Because a
//! crash can fall *between* a Stripe POST and the save of its id, a resumed run first looks
//! the object up by its metadata key (`{customer}:{period}:{line}`) before creating it; the
//! `Idempotency-Key` of every POST (`{customer}:{period}:{step}`) covers the same window on
//! real Stripe within 24 h, the lookup covers it after (and on localstripe, which ignores
//! keys). Credits are debited once per invoice key by a conditional update.
//!
//! # Tax
//! With Stripe Tax on ([`super::document::Issuing::automatic_tax`]) items are sent before tax
//! (`tax_behavior=exclusive`), the invoice asks for `automatic_tax`, and a credit becomes a
//! one-off coupon (Stripe Tax refuses negative items). What Stripe says of the finalized
//! invoice (tax per line and per rate, number, customer snapshot) is kept in the record, so the
//! documents are the same bytes on a rerun. A customer without an address Stripe Tax can use
//! stops the run at ITEMS_CREATED ([`BillOutcome::TaxAddressRequired`]): the invoice stays a
//! draft, the customer is asked once for an address, and a rerun finalizes the same invoice
//! (with a fresh finalize idempotency key, since Stripe replays a refusal for 24 h).

use super::aggregate::{self, Aggregation};
use super::document::{Document, Issuing, render_html, render_json};
use super::dunning::{self, InvoiceEvent};
use super::invoice::{self, Invoice, StripeRefs, SubscriptionUsage, invoice_key};
use super::money::{Currency, Money};
use super::period::Period;
use super::ports::{
    BillState, Credits, Debit, DunningStore, Finalized, InvoiceOptions, InvoiceRecord,
    InvoiceStore, Invoicing, ItemRequest, SHARDS, SubscriptionView, UsageStore,
};
use super::pricebook::PriceBook;
use super::subscription::Subscription;
use super::usage::{IngestPolicy, RawUsage, RejectReason, Rejection, Usage, parse};
use crate::error::{Error, Result};
use crate::events::{Internal, InvoiceFinalized};
use crate::ledger::{Claim, ClaimOptions, Ledger, payload_hash};
use crate::notice::{Kind, Notification};
use crate::queue::{EventMessage, QueueSender};
use crate::storage::ObjectStore;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// A message on the billing-jobs queue, or a direct invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Job {
    /// Close a period and fan out one `plan_shard` job per shard. Without `period`: the
    /// month before now (the monthly schedule).
    Plan {
        #[serde(default)]
        period: Option<Period>,
        /// Close a period that has not ended yet (an operator's explicit choice: a final bill
        /// at contract end, or a demo). Its later usage is then refused into the rejected
        /// list, never silently dropped.
        #[serde(default)]
        close_early: bool,
    },
    /// Enqueue a `bill` job for each billable customer of one shard.
    PlanShard { period: Period, shard: u32 },
    /// Bill one customer for one period.
    Bill { customer: String, period: Period },
    /// The daily dunning sweep: ladder steps and card notices due now. `at` stands in for
    /// "now" (an operator replaying a missed day, or a test's clock).
    SweepDunning {
        #[serde(default)]
        at: Option<DateTime<Utc>>,
    },
    /// Add prepaid / promotional credit, once per `grant_id`.
    GrantCredit {
        customer: String,
        grant_id: String,
        amount: i64,
        currency: Currency,
    },
}

/// Settings of the services.
#[derive(Debug, Clone)]
pub struct BillingConfig {
    pub jobs_queue_url: String,
    pub notifications_queue_url: String,
    pub ingest: IngestPolicy,
    pub dunning: dunning::Policy,
    /// How long a bill run may hold its (customer, period) lease.
    pub lease: Duration,
    /// Where finished invoices are announced (customer sync), if anywhere.
    pub customer_events_queue_url: Option<String>,
    /// Where a customer's standing goes to licensing (suspension, reinstatement), if anywhere.
    pub license_requests_queue_url: Option<String>,
    /// Stripe Tax on usage invoices, and the seller the documents name.
    pub issuing: Issuing,
}

/// The ports the services use (usage-billing connects them; tests use the fakes).
#[derive(Clone)]
pub struct Ports {
    pub usage: Arc<dyn UsageStore>,
    pub subs: Arc<dyn SubscriptionView>,
    pub invoices: Arc<dyn InvoiceStore>,
    pub credits: Arc<dyn Credits>,
    pub dunning: Arc<dyn DunningStore>,
    pub stripe: Arc<dyn Invoicing>,
    /// The card on file and cancellations (the same Stripe client, another capability).
    pub collections: Arc<dyn super::ports::Collections>,
    pub artifacts: Arc<dyn ObjectStore>,
    pub ledger: Arc<dyn Ledger>,
    pub queue: Arc<dyn QueueSender>,
    pub book: Arc<PriceBook>,
}

/// The billing services: their ports and settings.
#[derive(Clone)]
pub struct Billing {
    pub ports: Ports,
    pub config: BillingConfig,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<Rejection>,
}

/// What a bill run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillOutcome {
    /// Invoice completed now (possibly resuming an earlier run).
    Invoiced {
        stripe_invoice: Option<String>,
        total: i64,
        resumed: bool,
    },
    /// Done before: nothing happened.
    AlreadyBilled,
    /// No billable subscription in the period.
    NothingToBill,
    /// Stripe Tax cannot tax the customer's address: the invoice is not finalized (a draft in
    /// Stripe), the customer was asked for an address, and a rerun once it is fixed finalizes
    /// the same invoice.
    TaxAddressRequired { stripe_invoice: Option<String> },
}

/// Where an invoice's documents are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactKeys {
    /// The composition of record, what Stripe holds, and the document as data.
    pub json: String,
    /// The document as a printable page.
    pub html: String,
    /// The document as a PDF.
    pub pdf: String,
}

/// The artifact keys of an invoice.
pub fn artifact_keys(customer: &str, period: Period) -> ArtifactKeys {
    let stem = format!("invoices/{customer}/{period}");
    ArtifactKeys {
        json: format!("{stem}.json"),
        html: format!("{stem}.html"),
        pdf: format!("{stem}.pdf"),
    }
}

/// The invoice of (`customer`, `period`) as the stores hold it now: the customer's billable
/// subscriptions, their usage aggregated and priced by the price book, the credit balance
/// applied. `None` when nothing is billable. The one pricing path: a bill run invoices what
/// this returns, and the portal's usage to date shows it.
pub async fn compose_invoice(
    usage: &dyn UsageStore,
    subs: &dyn SubscriptionView,
    credits: &dyn Credits,
    book: &PriceBook,
    customer: &str,
    period: Period,
) -> Result<Option<Invoice>> {
    let subs: Vec<Subscription> = subs
        .for_customer(customer)
        .await?
        .into_iter()
        .filter(|s| s.billable_in(period))
        .collect();
    if subs.is_empty() {
        return Ok(None);
    }
    let mut with_usage = Vec::with_capacity(subs.len());
    for s in subs {
        let (_, plan) = book.plan(&s.plan).ok_or_else(|| {
            Error::Invalid(format!(
                "plan {} of subscription {} has no price",
                s.plan, s.subscription
            ))
        })?;
        let metrics: Vec<(String, Aggregation)> = plan
            .charges
            .iter()
            .filter_map(|c| Some((c.metric.clone()?, c.aggregation?)))
            .collect();
        let records = usage
            .usage(customer, &s.subscription, &metrics, period)
            .await?;
        let quantities = aggregate::quantities(&metrics, records, period);
        with_usage.push(SubscriptionUsage {
            subscription: s,
            quantities,
        });
    }
    let credit = credits.balance(customer).await?;
    invoice::compose(customer, period, book, &with_usage, credit.as_ref()).map(Some)
}

impl Billing {
    // ----------------------------------------------------------------------------- ingest

    /// Ingests raw records (JSON values, so one malformed record is refused alone).
    ///
    /// Lookup-free checks first, then the subscriptions of the batch in one batched read, then
    /// each period's records written in batches under the write window of
    /// [`IngestPolicy`](super::usage::IngestPolicy): the period's close marker is read, and
    /// writes start only within `write_window` of that read; what was not written by then is
    /// checked again (and listed as late once the period is closed). Refused records are
    /// stored in one batch at the end. Duplicates within the call are counted; a duplicate
    /// of an earlier call overwrites itself and counts as accepted.
    pub async fn ingest(
        &self,
        records: &[serde_json::Value],
        now: DateTime<Utc>,
    ) -> Result<IngestReport> {
        let mut report = IngestReport::default();
        let mut refused: Vec<(usize, Rejection)> = Vec::new();
        let mut valid: Vec<(usize, RawUsage, Usage)> = Vec::with_capacity(records.len());
        for (at, value) in records.iter().enumerate() {
            let raw = match serde_json::from_value::<RawUsage>(value.clone()) {
                Ok(r) => r,
                Err(_) => {
                    let field = |k: &str| {
                        value
                            .get(k)
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    refused.push((
                        at,
                        Rejection {
                            record_id: field("id"),
                            customer: field("customer"),
                            reason: RejectReason::Malformed,
                            record: value.clone(),
                        },
                    ));
                    continue;
                }
            };
            match parse(&raw, now, &self.config.ingest) {
                Ok(u) => valid.push((at, raw, u)),
                Err(reason) => refused.push((at, Rejection::new(&raw, reason))),
            }
        }
        // The subscriptions named, in one batched read.
        let keys: Vec<(String, String)> = valid
            .iter()
            .map(|(_, _, u)| (u.customer.clone(), u.subscription.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let subs = if keys.is_empty() {
            HashMap::new()
        } else {
            self.ports.subs.get_many(&keys).await?
        };
        // Per period, in order: (raw, usage) of the records to write, duplicates dropped.
        let mut by_period: BTreeMap<Period, Vec<(usize, RawUsage, Usage)>> = BTreeMap::new();
        let mut seen: HashSet<(String, String, Period, String)> = HashSet::new();
        for (at, raw, usage) in valid {
            let key = (usage.customer.clone(), usage.subscription.clone());
            let Some(sub) = subs.get(&key) else {
                refused.push((at, Rejection::new(&raw, RejectReason::UnknownCustomer)));
                continue;
            };
            let priced = self
                .ports
                .book
                .plan(&sub.plan)
                .and_then(|(_, p)| p.charge_for(&usage.metric))
                .and_then(|c| c.aggregation)
                .is_some();
            if !priced {
                refused.push((at, Rejection::new(&raw, RejectReason::UnknownMetric)));
                continue;
            }
            if !seen.insert((key.0, key.1, usage.period(), usage.id.clone())) {
                report.duplicates += 1;
                continue;
            }
            by_period
                .entry(usage.period())
                .or_default()
                .push((at, raw, usage));
        }
        let window = self
            .config
            .ingest
            .write_window
            .to_std()
            .unwrap_or(std::time::Duration::ZERO);
        for (period, mut pending) in by_period {
            while !pending.is_empty() {
                // The window opens before the read: a write can only be later than the read.
                let opened = std::time::Instant::now();
                if self.ports.usage.is_closed(period).await? {
                    // Late, unless stored before the close (a redelivery: a duplicate).
                    let usages: Vec<Usage> = pending.iter().map(|(_, _, u)| u.clone()).collect();
                    let stored = self.ports.usage.stored(&usages).await?;
                    for ((at, raw, _), stored) in pending.iter().zip(stored) {
                        if stored {
                            report.duplicates += 1;
                        } else {
                            refused.push((*at, Rejection::new(raw, RejectReason::PeriodClosed)));
                        }
                    }
                    break;
                }
                let usages: Vec<Usage> = pending.iter().map(|(_, _, u)| u.clone()).collect();
                let unwritten = self
                    .ports
                    .usage
                    .put_records(&usages, Some(opened + window))
                    .await?;
                report.accepted += (usages.len() - unwritten.len()) as u64;
                if !unwritten.is_empty() {
                    tracing::info!(%period, unwritten = unwritten.len(), "write window passed; checking the period again");
                }
                let left: HashSet<(String, String)> = unwritten
                    .iter()
                    .map(|u| (u.customer.clone(), u.id.clone()))
                    .collect();
                pending.retain(|(_, _, u)| left.contains(&(u.customer.clone(), u.id.clone())));
            }
        }
        refused.sort_by_key(|(at, _)| *at);
        let refused: Vec<Rejection> = refused.into_iter().map(|(_, r)| r).collect();
        if !refused.is_empty() {
            for rej in &refused {
                tracing::warn!(
                    record_id = %rej.record_id,
                    customer_id = %rej.customer,
                    reason = ?rej.reason,
                    list = rej.reason.list(),
                    "usage record refused"
                );
            }
            self.ports.usage.reject(&refused).await?;
        }
        report.rejected = refused;
        Ok(report)
    }

    // ------------------------------------------------------------------------------- plan

    /// Closes `period` and enqueues one `plan_shard` job per shard. Returns the jobs sent.
    /// A period that has not ended at `now` is refused (closing it would refuse its usage).
    pub async fn plan(&self, period: Period, now: DateTime<Utc>) -> Result<usize> {
        if period.end() > now {
            return Err(Error::Invalid(format!(
                "period {period} has not ended yet (pass \"close_early\": true to close it now)"
            )));
        }
        self.plan_closing_early(period).await
    }

    /// Closes `period` now, even before its end, and fans out its plan (see [`Job::Plan`]).
    pub async fn plan_closing_early(&self, period: Period) -> Result<usize> {
        let closed_at = self.ports.usage.close(period, Utc::now()).await?;
        let jobs = (0..SHARDS)
            .map(|shard| serde_json::to_string(&Job::PlanShard { period, shard }))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let n = jobs.len();
        // The bill jobs come after the settle time (see `IngestPolicy`): delay the shards.
        let wait = (closed_at + self.config.ingest.settle - Utc::now())
            .to_std()
            .unwrap_or(std::time::Duration::ZERO);
        self.ports
            .queue
            .send_all_delayed(&self.config.jobs_queue_url, jobs, wait)
            .await?;
        tracing::info!(%period, shards = n, %closed_at, delay_s = wait.as_secs(), "period closed; plan fanned out");
        Ok(n)
    }

    /// The settle rule of a bill run: the period is closed (a bill run of an open period
    /// closes it, logged) and `settle` has passed since, else "in progress" (retried later).
    async fn settled(&self, period: Period) -> Result<()> {
        let closed_at = match self.ports.usage.closed_at(period).await? {
            Some(t) => t,
            None => {
                tracing::warn!(%period, "a bill run closes the period it bills: its later usage is late");
                self.ports.usage.close(period, Utc::now()).await?
            }
        };
        let ready = closed_at + self.config.ingest.settle;
        if Utc::now() < ready {
            return Err(Error::InProgress(format!(
                "period {period} closed at {closed_at}: usage settles until {ready}"
            )));
        }
        Ok(())
    }

    /// Enqueues a `bill` job for each customer of `shard` with a subscription billable in
    /// `period`, page by page (batches of 10). Returns the jobs sent.
    pub async fn plan_shard(&self, period: Period, shard: u32) -> Result<usize> {
        if shard >= SHARDS {
            return Err(Error::Invalid(format!(
                "shard {shard} out of range 0..{SHARDS}"
            )));
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut cursor = None;
        let mut sent = 0usize;
        let mut scanned = 0usize;
        loop {
            let (page, next) = self.ports.subs.page(shard, cursor).await?;
            scanned += page.len();
            let mut jobs = Vec::new();
            for s in page {
                if s.billable_in(period) && seen.insert(s.customer.clone()) {
                    let job = Job::Bill {
                        customer: s.customer,
                        period,
                    };
                    jobs.push(
                        serde_json::to_string(&job).map_err(|e| Error::Invalid(e.to_string()))?,
                    );
                }
            }
            sent += jobs.len();
            if !jobs.is_empty() {
                self.ports
                    .queue
                    .send_all(&self.config.jobs_queue_url, jobs)
                    .await?;
            }
            tracing::info!(%period, shard, scanned, jobs_sent = sent, "plan progress");
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(sent)
    }

    // ------------------------------------------------------------------------------- bill

    /// Bills `customer` for `period`, exactly once (see the module docs).
    pub async fn bill(&self, customer: &str, period: Period) -> Result<BillOutcome> {
        let key = format!("billing:{}", invoice_key(customer, period));
        let opts = ClaimOptions {
            lease: self.config.lease,
            retain: None,
        };
        let lease = match self
            .ports
            .ledger
            .claim(&key, &payload_hash(key.as_bytes()), opts)
            .await?
        {
            Claim::Completed { .. } => {
                tracing::info!(customer_id = %customer, %period, "already billed; skipped");
                return Ok(BillOutcome::AlreadyBilled);
            }
            Claim::InProgress { .. } => {
                return Err(Error::InProgress(format!(
                    "bill run of {customer} {period} holds the lease"
                )));
            }
            Claim::Acquired(lease) => lease,
        };
        match self.run_bill(customer, period).await {
            Ok(outcome @ (BillOutcome::NothingToBill | BillOutcome::TaxAddressRequired { .. })) => {
                // Not completed: a subscription view that arrives late can still be billed, and
                // an invoice waiting for an address is finalized by a later run.
                self.ports.ledger.release(&lease).await?;
                Ok(outcome)
            }
            Ok(outcome) => {
                let result = match &outcome {
                    BillOutcome::Invoiced { stripe_invoice, .. } => {
                        stripe_invoice.clone().unwrap_or_else(|| "none".into())
                    }
                    _ => "nothing".into(),
                };
                self.ports
                    .ledger
                    .complete(&lease, Some(&result), opts)
                    .await?;
                Ok(outcome)
            }
            Err(e) => {
                if let Err(re) = self.ports.ledger.release(&lease).await {
                    tracing::warn!(error = %re.chain(), "could not release the bill lease; it will expire");
                }
                Err(e)
            }
        }
    }

    async fn compose(&self, customer: &str, period: Period) -> Result<Option<Invoice>> {
        let p = &self.ports;
        compose_invoice(
            p.usage.as_ref(),
            p.subs.as_ref(),
            p.credits.as_ref(),
            &p.book,
            customer,
            period,
        )
        .await
    }

    async fn advance(&self, rec: &mut InvoiceRecord, to: BillState) -> Result<()> {
        let mut next = rec.clone();
        next.state = to;
        next.version += 1;
        self.ports.invoices.save(&next).await?;
        *rec = next;
        tracing::info!(customer_id = %rec.invoice.customer, period = %rec.invoice.period, state = ?to, "bill step done");
        Ok(())
    }

    async fn save(&self, rec: &mut InvoiceRecord) -> Result<()> {
        let mut next = rec.clone();
        next.version += 1;
        self.ports.invoices.save(&next).await?;
        *rec = next;
        Ok(())
    }

    /// The bill state machine: one step per state, each saving the record before the next.
    async fn run_bill(&self, customer: &str, period: Period) -> Result<BillOutcome> {
        let Some(mut rec) = self.open_record(customer, period).await? else {
            tracing::info!(customer_id = %customer, %period, "nothing billable");
            return Ok(BillOutcome::NothingToBill);
        };
        if rec.state == BillState::Done {
            return Ok(BillOutcome::AlreadyBilled);
        }
        rec.attempts += 1;
        self.save(&mut rec).await?;
        let run = Run {
            customer,
            period,
            key: invoice_key(customer, period),
            resuming: rec.attempts > 1,
        };
        if run.resuming {
            tracing::info!(customer_id = %customer, %period, state = ?rec.state, attempts = rec.attempts, "resuming bill run");
        }
        loop {
            let next = match rec.state {
                BillState::Planned => self.debit_credit(&run, &mut rec).await?,
                BillState::Credited => match self.create_invoice(&run, &mut rec).await? {
                    Some(next) => next,
                    None => {
                        return Ok(BillOutcome::TaxAddressRequired {
                            stripe_invoice: None,
                        });
                    }
                },
                BillState::InvoiceCreated => self.create_items(&run, &mut rec).await?,
                BillState::ItemsCreated => match self.finalize(&mut rec, &run).await? {
                    Some(next) => next,
                    None => {
                        return Ok(BillOutcome::TaxAddressRequired {
                            stripe_invoice: rec.refs.invoice.clone(),
                        });
                    }
                },
                BillState::Finalized => self.write_artifacts(&run, &rec).await?,
                BillState::ArtifactsWritten => self.announce(&run, &rec).await?,
                BillState::Done => {
                    tracing::info!(customer_id = %customer, %period, total = rec.invoice.total, stripe_invoice = ?rec.refs.invoice, "invoice done");
                    return Ok(BillOutcome::Invoiced {
                        stripe_invoice: rec.refs.invoice.clone(),
                        total: rec.invoice.total,
                        resumed: run.resuming,
                    });
                }
            };
            self.advance(&mut rec, next).await?;
        }
    }

    /// The stored record of (customer, period), or a new PLANNED one composed now; `None`
    /// when there is nothing to bill.
    async fn open_record(&self, customer: &str, period: Period) -> Result<Option<InvoiceRecord>> {
        if let Some(rec) = self.ports.invoices.load(customer, period).await? {
            return Ok(Some(rec));
        }
        // Composed from usage only once nothing can still be written to the period.
        self.settled(period).await?;
        let Some(invoice) = self.compose(customer, period).await? else {
            return Ok(None);
        };
        let rec = InvoiceRecord {
            state: BillState::Planned,
            invoice,
            refs: StripeRefs::default(),
            attempts: 0,
            version: 1,
        };
        if self.ports.invoices.create(&rec).await? {
            return Ok(Some(rec));
        }
        // Another run created it meanwhile: continue from its record.
        self.ports
            .invoices
            .load(customer, period)
            .await?
            .ok_or_else(|| Error::InProgress("invoice record vanished".into()))
            .map(Some)
    }

    /// PLANNED: debit the credit the invoice applies, once per invoice key. When the balance
    /// changed meanwhile the invoice is recomposed with what is left (a few rounds at most).
    async fn debit_credit(&self, run: &Run<'_>, rec: &mut InvoiceRecord) -> Result<BillState> {
        for _ in 0..=3 {
            let credit = rec.invoice.credit_applied;
            if credit <= 0 {
                return Ok(BillState::Credited);
            }
            let debit = self
                .ports
                .credits
                .debit(run.customer, &run.key, &rec.invoice.money(credit))
                .await?;
            if debit != Debit::Insufficient {
                return Ok(BillState::Credited);
            }
            let balance = self.ports.credits.balance(run.customer).await?;
            rec.invoice = rec.invoice.clone().with_credit(balance.as_ref());
            self.save(rec).await?;
        }
        Err(Error::InProgress(format!(
            "credit balance of {} keeps changing",
            run.customer
        )))
    }

    /// The lines that become Stripe invoice items.
    fn item_lines(&self, rec: &InvoiceRecord) -> Vec<invoice::InvoiceLine> {
        let taxed = self.config.issuing.automatic_tax;
        rec.invoice
            .billable_lines()
            // Under Stripe Tax the credit is a coupon on the invoice, not a negative item.
            .filter(|l| !(taxed && l.kind == invoice::LineKind::Credit))
            .cloned()
            .collect()
    }

    /// CREDITED: the Stripe invoice, created empty (the customer's other pending items are
    /// excluded, so nothing unrelated is ever swept in) and looked up first on a resume. With
    /// no line there is nothing to charge: straight to FINALIZED, the artifacts still explain
    /// the zero invoice. `None`: Stripe Tax refused the customer's address.
    async fn create_invoice(
        &self,
        run: &Run<'_>,
        rec: &mut InvoiceRecord,
    ) -> Result<Option<BillState>> {
        if self.item_lines(rec).is_empty() {
            return Ok(Some(BillState::Finalized));
        }
        let taxed = self.config.issuing.automatic_tax;
        let found = if run.resuming {
            self.ports
                .stripe
                .find_invoice(run.customer, &run.key)
                .await?
        } else {
            None
        };
        let inv = match found {
            Some(i) => i,
            None => {
                let credit = rec.invoice.credit_applied;
                if taxed && credit > 0 && rec.refs.coupon.is_none() {
                    let money = rec.invoice.money(credit);
                    let id = self
                        .ports
                        .stripe
                        .credit_coupon(&run.key, &money, run.resuming)
                        .await?;
                    rec.refs.coupon = Some(id);
                    self.save(rec).await?;
                }
                let description = format!("Usage {} · ref {}", run.period, run.key);
                let options = InvoiceOptions {
                    currency: rec.invoice.currency.as_str().to_owned(),
                    automatic_tax: taxed,
                    coupon: rec.refs.coupon.clone(),
                };
                let created = self
                    .ports
                    .stripe
                    .create_invoice(
                        run.customer,
                        &run.key,
                        &description,
                        &options,
                        &attempt_key(&format!("blapi:{}:invoice", run.key), rec),
                    )
                    .await;
                match created {
                    Err(e) if crate::stripe::is_tax_location_error(&e) => {
                        self.tax_address_required(run, rec, &e.chain()).await?;
                        return Ok(None);
                    }
                    other => other?,
                }
            }
        };
        rec.refs.invoice = Some(inv.id);
        Ok(Some(BillState::InvoiceCreated))
    }

    /// INVOICE_CREATED: one Stripe invoice item per billable line, attached to the invoice,
    /// each id saved as it comes. A resumed run first reads the items already on the invoice
    /// (one call), so an item created by a run that crashed before saving is not made twice.
    async fn create_items(&self, run: &Run<'_>, rec: &mut InvoiceRecord) -> Result<BillState> {
        let taxed = self.config.issuing.automatic_tax;
        let invoice_id = rec
            .refs
            .invoice
            .clone()
            .ok_or_else(|| Error::Invalid(format!("invoice {} has no Stripe id", run.key)))?;
        let lines = self.item_lines(rec);
        let mut on_invoice =
            if run.resuming && lines.iter().any(|l| !rec.refs.items.contains_key(&l.id)) {
                self.ports.stripe.items_on(&invoice_id).await?
            } else {
                BTreeMap::new()
            };
        for line in lines {
            if rec.refs.items.contains_key(&line.id) {
                continue;
            }
            let item_key = format!("{}:{}", run.key, line.id);
            let id = match on_invoice.remove(&item_key) {
                Some(id) => id,
                None => {
                    let req = ItemRequest {
                        customer: run.customer.to_owned(),
                        invoice: invoice_id.clone(),
                        amount: rec.invoice.money(line.amount),
                        description: line_description(&line),
                        key: item_key.clone(),
                        period: run.period,
                        taxed,
                    };
                    self.ports
                        .stripe
                        .create_item(&req, &format!("blapi:{item_key}:item"))
                        .await?
                }
            };
            rec.refs.items.insert(line.id.clone(), id);
            self.save(rec).await?;
        }
        Ok(BillState::ItemsCreated)
    }

    /// Stripe Tax cannot place the customer: the invoice stays as it is, the customer is asked
    /// for an address (once: the notification's id is the invoice's, and it is sent only on
    /// the first refusal), and the refusal is counted in the record (the next attempt's
    /// idempotency keys differ from the refused one's).
    async fn tax_address_required(
        &self,
        run: &Run<'_>,
        rec: &mut InvoiceRecord,
        why: &str,
    ) -> Result<()> {
        tracing::warn!(customer_id = %run.customer, period = %run.period, stripe_invoice = ?rec.refs.invoice, refusals = rec.refs.tax_location_refusals + 1, reason = %why, "Stripe Tax needs the customer's address; invoice not finalized");
        if rec.refs.tax_location_refusals == 0 {
            Notification::to_customer(
                format!(
                    "invoice:{}:{}:tax_address_required",
                    run.customer, run.period
                ),
                Kind::TaxAddressRequired,
                run.customer,
            )
            .with("period", run.period.to_string())
            .send(
                self.ports.queue.as_ref(),
                &self.config.notifications_queue_url,
            )
            .await?;
        }
        rec.refs.tax_location_refusals += 1;
        self.save(rec).await
    }

    /// ITEMS_CREATED: finalize, and keep what Stripe says of the invoice (amounts, tax,
    /// number, customer). An API without the endpoint leaves a draft, said in the log. `None`:
    /// Stripe Tax refused the customer's address (see [`BillOutcome::TaxAddressRequired`]).
    async fn finalize(&self, rec: &mut InvoiceRecord, run: &Run<'_>) -> Result<Option<BillState>> {
        let id = rec.refs.invoice.clone().unwrap_or_default();
        let key = attempt_key(&format!("blapi:{}:finalize", run.key), rec);
        match self.ports.stripe.finalize(&id, &key).await? {
            Finalized::Done(issued) => {
                let stripe_net = issued.total_excluding_tax;
                if stripe_net.is_some_and(|t| t != rec.invoice.total.max(0)) {
                    tracing::warn!(customer_id = %run.customer, period = %run.period, stripe_total_excluding_tax = ?stripe_net, expected = rec.invoice.total, "Stripe invoice total differs (other pending items?)");
                }
                rec.refs.finalized = true;
                rec.refs.issued = Some(*issued);
            }
            Finalized::Unsupported => {
                rec.refs.finalized = false;
                tracing::warn!(invoice = %id, "Stripe API has no finalize endpoint; invoice left as draft");
            }
            Finalized::TaxLocationRequired => {
                self.tax_address_required(run, rec, "automatic tax requires location inputs")
                    .await?;
                return Ok(None);
            }
        }
        Ok(Some(BillState::Finalized))
    }

    /// ARTIFACTS_WRITTEN: tells customer sync the invoice is final (its id and total go on the
    /// account). A step of its own, so a failed send is retried by the next run, never lost.
    async fn announce(&self, run: &Run<'_>, rec: &InvoiceRecord) -> Result<BillState> {
        let keys = artifact_keys(run.customer, run.period);
        let doc = Document::new(&rec.invoice, &rec.refs, &self.config.issuing.seller);
        let money = |amount: i64| rec.invoice.money(amount);
        if let Some(invoice) = &rec.refs.invoice
            && rec.refs.finalized
        {
            // No usable payment method: dunning starts now, not after a failed charge. What is
            // due is Stripe's amount due (tax included), payable on Stripe's page.
            self.invoice_issued(
                run.customer,
                invoice,
                money(doc.amount_due),
                doc.pay_url.clone(),
                Utc::now().timestamp(),
            )
            .await?;
        }
        if let Some(url) = &self.config.customer_events_queue_url {
            let event = Internal::InvoiceFinalized(InvoiceFinalized {
                customer: run.customer.to_owned(),
                invoice: rec.refs.invoice.clone(),
                period: run.period.to_string(),
                period_end: run.period.end().timestamp(),
                // Before tax: what revenue counts.
                total: money(doc.total_excluding_tax),
                json_key: keys.json.clone(),
                html_key: keys.html.clone(),
                tax: Some(money(doc.tax)),
                amount_due: Some(money(doc.amount_due)),
                pdf_key: Some(keys.pdf.clone()),
            });
            let body = serde_json::to_string(&event.message(Utc::now()))
                .map_err(|e| Error::Invalid(e.to_string()))?;
            self.ports.queue.send(url, body).await?;
        }
        // The customer's mail: the documents are named, the notifications function signs the
        // links when it sends. Once per invoice (the id is the invoice's).
        Notification::to_customer(
            format!("invoice:{}:{}:available", run.customer, run.period),
            Kind::InvoiceAvailable,
            run.customer,
        )
        .with("period", run.period.to_string())
        .with("number", &doc.number)
        .with("total", money(doc.total))
        .with("amount_due", money(doc.amount_due))
        .with("html_key", &keys.html)
        .with("pdf_key", &keys.pdf)
        .with("pay_url", &doc.pay_url)
        .send(
            self.ports.queue.as_ref(),
            &self.config.notifications_queue_url,
        )
        .await?;
        Ok(BillState::Done)
    }

    /// FINALIZED: the HTML, PDF and JSON artifacts (same bytes on a rerun: they are made from
    /// the record alone). The JSON goes last: once it is there, so are the documents it links
    /// (a write that fails between them is redone by the job's retry, and until then no reader
    /// finds a JSON whose HTML is missing).
    async fn write_artifacts(&self, run: &Run<'_>, rec: &InvoiceRecord) -> Result<BillState> {
        let keys = artifact_keys(run.customer, run.period);
        let doc = Document::new(&rec.invoice, &rec.refs, &self.config.issuing.seller);
        let documents = [
            (&keys.html, render_html(&doc), "text/html; charset=utf-8"),
            (&keys.pdf, super::pdf::render_pdf(&doc), "application/pdf"),
            (
                &keys.json,
                render_json(&rec.invoice, &rec.refs, &doc),
                "application/json",
            ),
        ];
        for (key, bytes, content_type) in documents {
            self.ports.artifacts.put(key, bytes, content_type).await?;
        }
        Ok(BillState::ArtifactsWritten)
    }

    // ----------------------------------------------------------------- billing events

    /// Applies one Stripe event from billing-events. `Ok(false)` for types not handled here.
    pub async fn apply_event(&self, msg: &EventMessage) -> Result<bool> {
        let ev = &msg.event;
        let created = ev
            .get("created")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or_else(|| msg.received_at.timestamp());
        let t = msg.event_type.as_str();
        if t.starts_with("customer.subscription.") {
            let obj = ev
                .pointer("/data/object")
                .ok_or_else(|| Error::Invalid(format!("event {} has no data.object", msg.id)))?;
            let mut sub = Subscription::from_stripe(obj, created)?;
            if t == "customer.subscription.deleted" {
                sub.mark_deleted();
            }
            let stored = self.ports.subs.upsert(&sub).await?;
            tracing::info!(event_id = %msg.id, customer_id = %sub.customer, subscription = %sub.subscription, stored, "subscription view updated");
            return Ok(true);
        }
        let customer_event = matches!(t, "customer.created" | "customer.updated");
        if super::collection::PAYMENT_METHOD_EVENTS.contains(&t) || customer_event {
            let obj = ev
                .pointer("/data/object")
                .ok_or_else(|| Error::Invalid(format!("event {} has no data.object", msg.id)))?;
            // `customer` on the object; a detached method keeps it in `previous_attributes`;
            // `customer.created|updated` is the customer itself.
            let customer = if customer_event {
                obj.get("id").and_then(serde_json::Value::as_str)
            } else {
                obj.get("customer")
                    .and_then(serde_json::Value::as_str)
                    .or_else(|| {
                        ev.pointer("/data/previous_attributes/customer")
                            .and_then(serde_json::Value::as_str)
                    })
            };
            let Some(customer) = customer else {
                tracing::info!(event_id = %msg.id, event_type = t, "payment-method event names no customer; ignored");
                return Ok(false);
            };
            if !customer.starts_with("cus_") {
                return Err(Error::Invalid(format!(
                    "event {}: {customer:?} is not a customer id",
                    msg.id
                )));
            }
            return self.refresh_payment_method(customer, created).await;
        }
        let Some((customer, iev)) = InvoiceEvent::from_stripe(t, ev) else {
            return Ok(false);
        };
        self.apply_invoice_event(&customer, &iev).await?;
        Ok(true)
    }

    // ------------------------------------------------------------------------ credits

    /// Grants credit once per `grant_id`.
    pub async fn grant_credit(
        &self,
        customer: &str,
        grant_id: &str,
        amount: Money,
    ) -> Result<bool> {
        if amount.amount <= 0 {
            return Err(Error::Invalid("a credit grant must be positive".into()));
        }
        self.ports.credits.grant(customer, grant_id, &amount).await
    }

    /// Counts of the period's invoices per state (progress report).
    pub fn summarize(outcomes: &[BillOutcome]) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for o in outcomes {
            let k = match o {
                BillOutcome::Invoiced { .. } => "invoiced",
                BillOutcome::AlreadyBilled => "skipped_already_billed",
                BillOutcome::NothingToBill => "nothing_to_bill",
                BillOutcome::TaxAddressRequired { .. } => "tax_address_required",
            };
            *m.entry(k).or_insert(0) += 1;
        }
        m
    }
}

/// One bill run: whose invoice, and whether an earlier run may have left Stripe objects.
struct Run<'a> {
    customer: &'a str,
    period: Period,
    /// The invoice key `{customer}:{period}`.
    key: String,
    resuming: bool,
}

/// `base`, or `base:{n}` after `n` refusals for want of an address: Stripe replays an
/// idempotency key's first answer (the refusal) for 24 h, so a retry once the address is fixed
/// needs a key of its own. Finalizing and creating look before acting, so a new key never
/// makes a second invoice.
fn attempt_key(base: &str, rec: &InvoiceRecord) -> String {
    match rec.refs.tax_location_refusals {
        0 => base.to_owned(),
        n => format!("{base}:{n}"),
    }
}

fn line_description(line: &invoice::InvoiceLine) -> String {
    let mut d = line.description.clone();
    d.push_str(&format!(" · qty {}", line.quantity));
    if let Some(p) = line.unit_price {
        d.push_str(&format!(" @ {p}"));
    }
    if let Some(t) = &line.tier {
        d.push_str(&format!(" · {t}"));
    }
    if let Some(p) = line.proration {
        d.push_str(&format!(
            " · prorated {}/{} days",
            p.active_days, p.period_days
        ));
    }
    d
}

#[cfg(test)]
mod race_tests;
#[cfg(test)]
mod tax_tests;
#[cfg(test)]
mod tests;
