//! Collections: invoice and payment-method events into the dunning state, the daily sweep that
//! walks the ladder, and the effects those changes imply (see [`super::dunning`] for the
//! rules and the outbox).
//!
//! Every change goes the same way: load the customer's state, apply the change, save it with
//! its effects in the outbox (a conditional write: a concurrent change makes this one start
//! over on the fresh state), then carry the effects out and remove them (see [`Billing::flush`]).
//! So an effect is never lost (it is stored before it is attempted) and a change made on a
//! stale state is never stored (the write is conditional).

use super::dunning::{Dunning, Effect, InvoiceEvent};
use super::service::Billing;
use crate::error::{Error, Result};
use crate::events::{CustomerStanding, Internal};
use crate::telemetry::Tally;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// How many attempts a change makes against concurrent writers.
const ROUNDS: usize = 6;
/// Customers handled at once by the sweep.
const SWEEP_CONCURRENCY: usize = 8;

/// The payment-method events: each makes billing read the customer's default card again.
pub const PAYMENT_METHOD_EVENTS: [&str; 5] = [
    "payment_method.attached",
    "payment_method.detached",
    "payment_method.updated",
    "setup_intent.succeeded",
    "customer.source.expiring",
];

/// One customer's turn in a sweep: the ladder steps taken and the effects carried out.
type SweptCustomer = (Vec<String>, usize);

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Customers the index said were due.
    pub due: usize,
    /// Ladder steps taken, by action (`remind`, `suspend`, `cancel`).
    pub steps: BTreeMap<String, usize>,
    /// Effects carried out (notices, standing changes, cancellations).
    pub effects: usize,
    /// Customers whose turn failed (retried by the next sweep: their `next_at` stays due).
    pub failed: usize,
}

impl Billing {
    /// Applies `change` to the customer's dunning state (`true` when it changed something),
    /// stores it, then carries out its effects (and any left by an earlier crash). Returns
    /// whether the state changed and how many effects were carried out.
    pub async fn collect(
        &self,
        customer: &str,
        mut change: impl FnMut(&mut Dunning) -> bool + Send,
    ) -> Result<(bool, usize)> {
        let mut changed = false;
        for round in 0..=ROUNDS {
            if round == ROUNDS {
                return Err(Error::InProgress(format!(
                    "dunning state of {customer} is contended"
                )));
            }
            let (mut state, version) = self.ports.dunning.load(customer).await?;
            if !change(&mut state) {
                break;
            }
            state.next_at = state.next_action_at(&self.config.dunning);
            match self.ports.dunning.save(customer, &state, version).await {
                Ok(()) => {
                    changed = true;
                    break;
                }
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        let effects = self.flush(customer).await?;
        Ok((changed, effects))
    }

    /// Carries out the effects waiting in the customer's outbox, then removes them. Each has a
    /// deterministic id, so one carried out twice (a crash before the removal) is harmless.
    /// Returns how many were carried out.
    pub async fn flush(&self, customer: &str) -> Result<usize> {
        let (state, _) = self.ports.dunning.load(customer).await?;
        if state.outbox.is_empty() {
            return Ok(0);
        }
        let mut done = HashSet::new();
        for effect in &state.outbox {
            self.perform(customer, effect).await?;
            done.insert(effect.id(customer));
        }
        for _ in 0..ROUNDS {
            let (mut fresh, version) = self.ports.dunning.load(customer).await?;
            let before = fresh.outbox.len();
            fresh.outbox.retain(|e| !done.contains(&e.id(customer)));
            if fresh.outbox.len() == before {
                return Ok(done.len());
            }
            fresh.next_at = fresh.next_action_at(&self.config.dunning);
            match self.ports.dunning.save(customer, &fresh, version).await {
                Ok(()) => return Ok(done.len()),
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        // The effects were carried out; only their removal lost the race. The next change
        // or sweep removes them (carrying them out again is harmless).
        Ok(done.len())
    }

    async fn perform(&self, customer: &str, effect: &Effect) -> Result<()> {
        match effect {
            Effect::Notify { notification } => {
                notification
                    .send(
                        self.ports.queue.as_ref(),
                        &self.config.notifications_queue_url,
                    )
                    .await
            }
            Effect::Standing {
                suspended,
                seq,
                invoice,
            } => {
                tracing::info!(customer_id = %customer, suspended, seq, "customer standing changed");
                let Some(url) = &self.config.license_requests_queue_url else {
                    tracing::warn!(customer_id = %customer, "no license-requests queue configured: the license standing is not sent");
                    return Ok(());
                };
                let event = Internal::CustomerStanding(CustomerStanding {
                    customer: customer.to_owned(),
                    suspended: *suspended,
                    seq: *seq,
                    invoice: invoice.clone(),
                });
                let body = serde_json::to_string(&event.message(Utc::now()))
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                self.ports.queue.send(url, body).await
            }
            Effect::Cancel { subscription, .. } => {
                match self
                    .ports
                    .collections
                    .cancel_subscription(subscription)
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(customer_id = %customer, subscription_id = %subscription, "subscription cancelled for non-payment");
                        Ok(())
                    }
                    Err(Error::NotFound(_)) => {
                        tracing::warn!(customer_id = %customer, subscription_id = %subscription, "subscription to cancel is unknown to Stripe; nothing to cancel");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// An invoice event (`invoice.payment_failed`, `invoice.paid`, ...).
    pub async fn apply_invoice_event(&self, customer: &str, ev: &InvoiceEvent) -> Result<()> {
        let before_status = std::sync::Mutex::new(None);
        self.collect(customer, |d| {
            let before = d.clone();
            let moved = d.apply(customer, ev);
            if let Ok(mut b) = before_status.lock() {
                *b = moved.map(|m| (m, d.status));
            }
            *d != before
        })
        .await?;
        if let Ok(Some((from, to))) = before_status.lock().map(|b| *b) {
            tracing::info!(customer_id = %customer, from = from.as_str(), to = to.as_str(), "dunning status changed");
        }
        Ok(())
    }

    /// A payment-method event: reads the customer's default card again (the event's copy may
    /// be stale or out of order) and keeps it with the event's time. `Ok(false)` when Stripe
    /// does not know the customer (nothing to keep; the event is acknowledged).
    pub async fn refresh_payment_method(&self, customer: &str, at: i64) -> Result<bool> {
        let card = match self.ports.collections.card(customer).await {
            Ok(card) => card,
            Err(Error::NotFound(_)) => {
                tracing::warn!(customer_id = %customer, "payment-method event for a customer Stripe does not know; ignored");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        Ok(self
            .collect(customer, |d| d.set_payment_method(card.clone(), at))
            .await?
            .0)
    }

    /// After an invoice was issued: with no usable payment method on file, dunning starts at
    /// once (the customer is told, and the ladder runs from now). What is on file is known
    /// from the customer and payment-method events (no Stripe call here: a bill run costs
    /// the same calls whatever the card); a customer never seen counts as able to pay, and
    /// Stripe's own failed attempt then starts dunning. `true` when dunning started.
    pub async fn invoice_issued(
        &self,
        customer: &str,
        invoice: &str,
        amount_due: crate::values::Money,
        pay_url: Option<String>,
        now: i64,
    ) -> Result<bool> {
        if amount_due.amount <= 0 {
            return Ok(false);
        }
        let (state, _) = self.ports.dunning.load(customer).await?;
        if state.has_usable_method(now) {
            return Ok(false);
        }
        tracing::warn!(customer_id = %customer, invoice = %invoice, "invoice issued with no usable payment method: dunning starts now");
        Ok(self
            .collect(customer, |d| {
                d.issued_without_method(customer, invoice, amount_due.clone(), pay_url.clone(), now)
            })
            .await?
            .0)
    }

    /// The daily sweep: every customer with a ladder step or a card notice due at `now` takes
    /// it (each once), and every outbox left by a crash is carried out.
    pub async fn sweep_dunning(&self, now: DateTime<Utc>, tally: &Tally) -> Result<SweepReport> {
        let at = now.timestamp();
        let due = self.ports.dunning.due(at).await?;
        let mut report = SweepReport {
            due: due.len(),
            ..SweepReport::default()
        };
        let results: Vec<(String, Result<SweptCustomer>)> =
            futures::stream::iter(due.into_iter().map(|customer| async move {
                let r = self.sweep_one(&customer, at).await;
                (customer, r)
            }))
            .buffer_unordered(SWEEP_CONCURRENCY)
            .collect()
            .await;
        for (customer, r) in results {
            match r {
                Ok((steps, effects)) => {
                    report.effects += effects;
                    for s in steps {
                        let action = s.rsplit(':').next().unwrap_or_default().to_owned();
                        *report.steps.entry(action).or_default() += 1;
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(customer_id = %customer, error = %e.chain(), retryable = e.is_retryable(), "dunning sweep failed for a customer");
                }
            }
        }
        tally.count("DunningDue", report.due as u64);
        for (action, n) in &report.steps {
            let name = match action.as_str() {
                "remind" => "DunningReminders",
                "suspend" => "DunningSuspensions",
                _ => "DunningCancellations",
            };
            tally.count(name, *n as u64);
        }
        tally.count("DunningSweepFailures", report.failed as u64);
        tracing::info!(due = report.due, effects = report.effects, failed = report.failed, steps = ?report.steps, "dunning sweep done");
        Ok(report)
    }

    async fn sweep_one(&self, customer: &str, at: i64) -> Result<SweptCustomer> {
        let subscriptions: Vec<String> = self
            .ports
            .subs
            .for_customer(customer)
            .await?
            .into_iter()
            .filter(|s| !matches!(s.status.as_str(), "canceled" | "incomplete_expired"))
            .map(|s| s.subscription)
            .collect();
        let steps = std::sync::Mutex::new(Vec::new());
        let policy = &self.config.dunning;
        let (_, effects) = self
            .collect(customer, |d| {
                let snapshot = d.clone();
                let taken = d.advance(customer, policy, &subscriptions, at);
                if let Ok(mut s) = steps.lock() {
                    *s = taken;
                }
                // A stale schedule (say, the ladder was reconfigured) is rewritten too, so the
                // customer does not come up due every day for nothing.
                *d != snapshot || d.next_action_at(policy) != snapshot.next_at
            })
            .await?;
        let steps = steps.into_inner().unwrap_or_default();
        Ok((steps, effects))
    }
}
