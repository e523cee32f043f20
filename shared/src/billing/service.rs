//! The billing services: ingest usage, plan a period, bill one customer, apply Stripe
//! billing events, grant credits. They depend only on ports, so the same code runs on the
//! real adapters (Lambda) and the fakes (unit tests).
//!
//! # Bill: a resumable state machine, exactly once
//! The record of (customer, period) in the billing table moves
//! `PLANNED -> CREDITED -> ITEMS_CREATED -> INVOICE_CREATED -> FINALIZED -> ARTIFACTS_WRITTEN
//! -> DONE`, saved after every step with the Stripe ids obtained so far (one save per invoice
//! item). A run is serialised by a ledger lease on `billing:{customer}:{period}` (completed
//! for ever once DONE). A rerun loads the record and continues where it stopped. Because a
//! crash can fall *between* a Stripe POST and the save of its id, a resumed run first looks
//! the object up by its metadata key (`{customer}:{period}:{line}`) before creating it; the
//! `Idempotency-Key` of every POST (`{customer}:{period}:{step}`) covers the same window on
//! real Stripe within 24 h, the lookup covers it after (and on localstripe, which ignores
//! keys). Credits are debited once per invoice key by a conditional update.

use super::aggregate::{self, Aggregation};
use super::dunning::{self, InvoiceEvent, Status};
use super::invoice::{self, Invoice, StripeRefs, SubscriptionUsage, invoice_key};
use super::money::{Currency, Money};
use super::period::Period;
use super::ports::{
    BillState, Credits, Debit, DunningStore, Finalized, InvoiceRecord, InvoiceStore, Invoicing,
    ItemRequest, SHARDS, SubscriptionView, UsageStore,
};
use super::pricebook::PriceBook;
use super::subscription::Subscription;
use super::usage::{IngestPolicy, RawUsage, RejectReason, Rejection, parse};
use crate::error::{Error, Result};
use crate::events::{Internal, InvoiceFinalized};
use crate::ledger::{Claim, ClaimOptions, Ledger, payload_hash};
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
}

/// The artifact keys of an invoice.
pub fn artifact_keys(customer: &str, period: Period) -> (String, String) {
    (
        format!("invoices/{customer}/{period}.json"),
        format!("invoices/{customer}/{period}.html"),
    )
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
    pub async fn ingest(
        &self,
        records: &[serde_json::Value],
        now: DateTime<Utc>,
    ) -> Result<IngestReport> {
        let mut report = IngestReport::default();
        let mut closed: HashMap<Period, bool> = HashMap::new();
        let mut subs: HashMap<(String, String), Option<Subscription>> = HashMap::new();
        for value in records {
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
                    let rej = Rejection {
                        record_id: field("id"),
                        customer: field("customer"),
                        reason: RejectReason::Malformed,
                        record: value.clone(),
                    };
                    self.refuse(rej, &mut report).await?;
                    continue;
                }
            };
            let usage = match parse(&raw, now, &self.config.ingest) {
                Ok(u) => u,
                Err(reason) => {
                    self.refuse(Rejection::new(&raw, reason), &mut report)
                        .await?;
                    continue;
                }
            };
            let period = usage.period();
            let is_closed = match closed.get(&period) {
                Some(c) => *c,
                None => {
                    let c = self.ports.usage.is_closed(period).await?;
                    closed.insert(period, c);
                    c
                }
            };
            if is_closed {
                self.refuse(
                    Rejection::new(&raw, RejectReason::PeriodClosed),
                    &mut report,
                )
                .await?;
                continue;
            }
            let key = (usage.customer.clone(), usage.subscription.clone());
            let sub = match subs.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let s = self.ports.subs.get(&key.0, &key.1).await?;
                    subs.insert(key, s.clone());
                    s
                }
            };
            let Some(sub) = sub else {
                self.refuse(
                    Rejection::new(&raw, RejectReason::UnknownCustomer),
                    &mut report,
                )
                .await?;
                continue;
            };
            let agg = self
                .ports
                .book
                .plan(&sub.plan)
                .and_then(|(_, p)| p.charge_for(&usage.metric))
                .and_then(|c| c.aggregation);
            let Some(agg) = agg else {
                self.refuse(
                    Rejection::new(&raw, RejectReason::UnknownMetric),
                    &mut report,
                )
                .await?;
                continue;
            };
            if self.ports.usage.record(&usage, agg).await? {
                report.accepted += 1;
            } else {
                report.duplicates += 1;
            }
        }
        Ok(report)
    }

    async fn refuse(&self, rej: Rejection, report: &mut IngestReport) -> Result<()> {
        tracing::warn!(
            record_id = %rej.record_id,
            customer_id = %rej.customer,
            reason = ?rej.reason,
            list = rej.reason.list(),
            "usage record refused"
        );
        self.ports.usage.reject(&rej).await?;
        report.rejected.push(rej);
        Ok(())
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
        self.ports.usage.close(period).await?;
        let jobs = (0..SHARDS)
            .map(|shard| serde_json::to_string(&Job::PlanShard { period, shard }))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let n = jobs.len();
        self.ports
            .queue
            .send_all(&self.config.jobs_queue_url, jobs)
            .await?;
        tracing::info!(%period, shards = n, "period closed; plan fanned out");
        Ok(n)
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
            Ok(BillOutcome::NothingToBill) => {
                // Not completed: a subscription view that arrives late can still be billed.
                self.ports.ledger.release(&lease).await?;
                Ok(BillOutcome::NothingToBill)
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
                BillState::Credited => self.create_items(&run, &mut rec).await?,
                BillState::ItemsCreated => self.create_invoice(&run, &mut rec).await?,
                BillState::InvoiceCreated => self.finalize(&mut rec, &run).await?,
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

    /// CREDITED: one Stripe invoice item per billable line, each id saved as it comes. A
    /// resumed run looks an item up by its key before creating it.
    async fn create_items(&self, run: &Run<'_>, rec: &mut InvoiceRecord) -> Result<BillState> {
        let lines: Vec<_> = rec.invoice.billable_lines().cloned().collect();
        for line in lines {
            if rec.refs.items.contains_key(&line.id) {
                continue;
            }
            let item_key = format!("{}:{}", run.key, line.id);
            let found = if run.resuming {
                self.ports.stripe.find_item(run.customer, &item_key).await?
            } else {
                None
            };
            let id = match found {
                Some(id) => id,
                None => {
                    let req = ItemRequest {
                        customer: run.customer.to_owned(),
                        amount: rec.invoice.money(line.amount),
                        description: line_description(&line),
                        key: item_key.clone(),
                        period: run.period,
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

    /// ITEMS_CREATED: the Stripe invoice collecting the items (looked up first on a resume).
    /// With no item there is nothing to charge: straight to FINALIZED, the artifacts still
    /// explain the zero invoice.
    async fn create_invoice(&self, run: &Run<'_>, rec: &mut InvoiceRecord) -> Result<BillState> {
        if rec.refs.items.is_empty() {
            return Ok(BillState::Finalized);
        }
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
                let description = format!("Usage {} · ref {}", run.period, run.key);
                self.ports
                    .stripe
                    .create_invoice(
                        run.customer,
                        &run.key,
                        &description,
                        &format!("blapi:{}:invoice", run.key),
                    )
                    .await?
            }
        };
        let expected: i64 = rec.invoice.billable_lines().map(|l| l.amount).sum();
        if inv.total.is_some_and(|t| t != expected.max(0)) {
            tracing::warn!(customer_id = %run.customer, period = %run.period, stripe_total = ?inv.total, expected, "Stripe invoice total differs (other pending items?)");
        }
        rec.refs.invoice = Some(inv.id);
        Ok(BillState::InvoiceCreated)
    }

    /// INVOICE_CREATED: finalize (an API without the endpoint leaves a draft, said in the log).
    async fn finalize(&self, rec: &mut InvoiceRecord, run: &Run<'_>) -> Result<BillState> {
        let id = rec.refs.invoice.clone().unwrap_or_default();
        let done = self
            .ports
            .stripe
            .finalize(&id, &format!("blapi:{}:finalize", run.key))
            .await?;
        rec.refs.finalized = done == Finalized::Done;
        if done == Finalized::Unsupported {
            tracing::warn!(invoice = %id, "Stripe API has no finalize endpoint; invoice left as draft");
        }
        Ok(BillState::Finalized)
    }

    /// ARTIFACTS_WRITTEN: tells customer sync the invoice is final (its id and total go on the
    /// account). A step of its own, so a failed send is retried by the next run, never lost.
    async fn announce(&self, run: &Run<'_>, rec: &InvoiceRecord) -> Result<BillState> {
        if let Some(url) = &self.config.customer_events_queue_url {
            let (json_key, html_key) = artifact_keys(run.customer, run.period);
            let event = Internal::InvoiceFinalized(InvoiceFinalized {
                customer: run.customer.to_owned(),
                invoice: rec.refs.invoice.clone(),
                period: run.period.to_string(),
                period_end: run.period.end().timestamp(),
                total: rec.invoice.money(rec.invoice.total),
                json_key,
                html_key,
            });
            let body = serde_json::to_string(&event.message(Utc::now()))
                .map_err(|e| Error::Invalid(e.to_string()))?;
            self.ports.queue.send(url, body).await?;
        }
        Ok(BillState::Done)
    }

    /// FINALIZED: the JSON and HTML artifacts (same bytes on a rerun).
    async fn write_artifacts(&self, run: &Run<'_>, rec: &InvoiceRecord) -> Result<BillState> {
        let (json_key, html_key) = artifact_keys(run.customer, run.period);
        self.ports
            .artifacts
            .put(
                &json_key,
                invoice::render_json(&rec.invoice, &rec.refs),
                "application/json",
            )
            .await?;
        self.ports
            .artifacts
            .put(
                &html_key,
                invoice::render_html(&rec.invoice, &rec.refs),
                "text/html; charset=utf-8",
            )
            .await?;
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
            let sub = Subscription::from_stripe(obj, created)?;
            let stored = self.ports.subs.upsert(&sub).await?;
            tracing::info!(event_id = %msg.id, customer_id = %sub.customer, subscription = %sub.subscription, stored, "subscription view updated");
            return Ok(true);
        }
        let Some((customer, iev)) = InvoiceEvent::from_stripe(t, ev) else {
            return Ok(false);
        };
        for _ in 0..5 {
            let (mut state, version) = self.ports.dunning.load(&customer).await?;
            let before = state.clone();
            let changed = state.apply(&iev, &self.config.dunning);
            if state == before {
                return Ok(true);
            }
            if let Some(previous) = changed {
                self.notify(&customer, previous, state.status, state.as_of, &iev)
                    .await?;
            }
            match self.ports.dunning.save(&customer, &state, version).await {
                Ok(()) => return Ok(true),
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::InProgress(format!(
            "dunning state of {customer} is contended"
        )))
    }

    async fn notify(
        &self,
        customer: &str,
        previous: Status,
        status: Status,
        as_of: i64,
        ev: &InvoiceEvent,
    ) -> Result<()> {
        let invoice = match ev {
            InvoiceEvent::PaymentFailed { invoice, .. } | InvoiceEvent::Paid { invoice, .. } => {
                invoice
            }
        };
        let body = serde_json::json!({
            // Deterministic: a redelivery sends the same id, the mailer dedupes on it.
            "id": format!("dunning:{customer}:{}:{as_of}", status.as_str()),
            "type": format!("billing.customer.{}", status.as_str()),
            "customer": customer,
            "previous_status": previous.as_str(),
            "status": status.as_str(),
            "invoice": invoice,
            "at": as_of,
        });
        tracing::info!(customer_id = %customer, from = previous.as_str(), to = status.as_str(), "dunning status changed");
        self.ports
            .queue
            .send(&self.config.notifications_queue_url, body.to_string())
            .await
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
mod tests;
