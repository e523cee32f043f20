//! Dunning: a customer's collection status, the ladder it walks while an invoice is unpaid,
//! and the card on file.
//!
//! `active` -> `past_due` (an invoice payment failed, or an invoice was issued with no usable
//! payment method) -> `suspended` (the ladder's suspend step) -> `active` again when every
//! failed invoice is paid.
//!
//! # Facts, not arrival order
//! Events arrive unordered and duplicated: the state keeps, per invoice, the facts with their
//! object timestamps (first failure, attempts, paid) and the status is *derived* from those
//! facts and the ladder steps taken, so applying the same events in any order gives the same
//! status. A paid invoice stays paid: a late failure event cannot reopen it.
//!
//! # The ladder
//! A configurable list of `(day, action)` steps ([`Ladder`], default
//! `1:remind,3:remind,7:remind,14:suspend,30:cancel`), counted from the oldest unpaid invoice's
//! first failure — the invoice's own dates, never the sweep's run times. Each step is taken
//! once per invoice: the step's key (`{invoice}:{day}:{action}`) is recorded in the state
//! together with the effects it implies. A sweep that was down for days takes every missed
//! step at once but sends only the latest reminder (the earlier ones are recorded as skipped).
//!
//! # Effects: an outbox in the state
//! A status change's consequences (a notice, the license standing, a cancellation) are pushed
//! onto [`Dunning::outbox`] in the same conditional write that changes the status, then carried
//! out and removed. A crash between the two leaves them in the outbox, and the next event or
//! sweep carries them out; each has a deterministic id, so carrying one out twice is harmless.
//! Every change of the suspended/active standing carries the state's [`Dunning::seq`] at that
//! change, so licensing applies the newest standing whatever order the messages arrive in: a
//! payment that lands while the suspension is being applied always ends with the customer
//! active.

use crate::error::{Error, Result};
use crate::notice::{Kind, Notification};
use crate::stripe::Card;
use crate::values::{Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const DAY: i64 = 86_400;

/// Collection status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    PastDue,
    Suspended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::PastDue => "past_due",
            Status::Suspended => "suspended",
        }
    }
}

/// What is known of one invoice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFacts {
    /// Earliest failure (unix seconds), or the moment it was issued with no usable payment
    /// method.
    pub first_failed_at: Option<i64>,
    pub attempts: i64,
    /// Paid is terminal: a late failure event cannot reopen it.
    pub paid_at: Option<i64>,
    /// What is owed, as Stripe last said.
    #[serde(default)]
    pub amount_due: Option<Money>,
    /// Stripe's hosted invoice page (where the customer pays).
    #[serde(default)]
    pub pay_url: Option<String>,
    /// The subscription the invoice bills, if any (the one cancelled at the end of the ladder).
    #[serde(default)]
    pub subscription: Option<String>,
}

impl InvoiceFacts {
    fn open(&self) -> bool {
        self.paid_at.is_none() && self.first_failed_at.is_some()
    }
}

/// What a ladder step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A reminder to pay.
    Remind,
    /// Suspend: the license is suspended and the workspace too.
    Suspend,
    /// Cancel the invoice's subscription (or the customer's subscriptions).
    Cancel,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Remind => "remind",
            Action::Suspend => "suspend",
            Action::Cancel => "cancel",
        }
    }
}

/// One step: `day` days after the first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub day: i64,
    pub action: Action,
}

/// The ladder, ordered by day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder(Vec<Step>);

/// The default ladder.
pub const DEFAULT_LADDER: &str = "1:remind,3:remind,7:remind,14:suspend,30:cancel";

impl Ladder {
    /// Parses `day:action,...` (`remind`, `suspend`, `cancel`). Days are 0..=365, strictly
    /// increasing; at most one suspend and one cancel, the cancel after the suspend.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: String| Error::Invalid(format!("dunning ladder {s:?}: {why}"));
        let mut steps = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (day, action) = part
                .split_once(':')
                .ok_or_else(|| bad(format!("{part:?} is not day:action")))?;
            let day: i64 = day
                .trim()
                .parse()
                .map_err(|_| bad(format!("{day:?} is not a day number")))?;
            if !(0..=365).contains(&day) {
                return Err(bad(format!("day {day} is outside 0..=365")));
            }
            let action = match action.trim() {
                "remind" => Action::Remind,
                "suspend" => Action::Suspend,
                "cancel" => Action::Cancel,
                other => {
                    return Err(bad(format!(
                        "{other:?} is not one of remind, suspend, cancel"
                    )));
                }
            };
            if steps.last().is_some_and(|l: &Step| l.day >= day) {
                return Err(bad("days must increase".into()));
            }
            steps.push(Step { day, action });
        }
        let count = |a| steps.iter().filter(|s| s.action == a).count();
        if count(Action::Suspend) > 1 || count(Action::Cancel) > 1 {
            return Err(bad("at most one suspend and one cancel".into()));
        }
        let pos = |a| steps.iter().position(|s| s.action == a);
        if let (Some(s), Some(c)) = (pos(Action::Suspend), pos(Action::Cancel))
            && c < s
        {
            return Err(bad("cancel must come after suspend".into()));
        }
        if steps.is_empty() {
            return Err(bad("no steps".into()));
        }
        Ok(Self(steps))
    }

    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    /// The day of the suspend step, if any.
    pub fn suspend_day(&self) -> Option<i64> {
        self.0
            .iter()
            .find(|s| s.action == Action::Suspend)
            .map(|s| s.day)
    }

    /// The day of the cancel step, if any.
    pub fn cancel_day(&self) -> Option<i64> {
        self.0
            .iter()
            .find(|s| s.action == Action::Cancel)
            .map(|s| s.day)
    }
}

impl Default for Ladder {
    fn default() -> Self {
        Self::parse(DEFAULT_LADDER).unwrap_or_else(|_| Self(Vec::new()))
    }
}

/// The dunning policy: the ladder and the card-expiry notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub ladder: Ladder,
    /// Days before a card's expiry at which the customer is told (default 30 and 7).
    pub card_notice_days: Vec<i64>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            ladder: Ladder::default(),
            card_notice_days: vec![30, 7],
        }
    }
}

/// The customer's default payment method as last read from Stripe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    /// `None`: no usable default payment method.
    pub card: Option<Card>,
    /// When it was read (unix seconds): an older read never replaces a newer one.
    pub read_at: i64,
}

/// The first instant after a card's expiry month (unix seconds, UTC).
pub fn card_expires_at(card: &Card) -> Option<i64> {
    let (y, m) = if card.exp_month >= 12 {
        (i32::try_from(card.exp_year).ok()? + 1, 1)
    } else {
        (i32::try_from(card.exp_year).ok()?, card.exp_month + 1)
    };
    chrono::NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
}

/// A side effect of a change, carried out after the change is stored (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// A customer notice.
    Notify { notification: Notification },
    /// The customer's license standing changed (licensing suspends or reinstates).
    Standing {
        suspended: bool,
        seq: u64,
        invoice: String,
    },
    /// Cancel a subscription for non-payment.
    Cancel {
        subscription: String,
        invoice: String,
    },
}

impl Effect {
    /// The effect's deterministic id.
    pub fn id(&self, customer: &str) -> String {
        match self {
            Effect::Notify { notification } => notification.id.clone(),
            Effect::Standing { suspended, seq, .. } => {
                format!(
                    "standing:{customer}:{seq}:{}",
                    if *suspended { "suspend" } else { "resume" }
                )
            }
            Effect::Cancel {
                subscription,
                invoice,
            } => format!("cancel:{subscription}:{invoice}"),
        }
    }
}

/// The dunning state of one customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dunning {
    pub status: Status,
    pub invoices: BTreeMap<String, InvoiceFacts>,
    /// The newest event time seen (unix seconds).
    pub as_of: i64,
    /// Ladder steps taken, `{invoice}:{day}:{action}` (skipped reminders included).
    #[serde(default)]
    pub steps: BTreeSet<String>,
    /// The card on file, as last read.
    #[serde(default)]
    pub payment_method: Option<PaymentMethod>,
    /// Card notices sent, `{last4}:{exp}:{days}`.
    #[serde(default)]
    pub card_notices: BTreeSet<String>,
    /// Effects stored but not yet carried out.
    #[serde(default)]
    pub outbox: Vec<Effect>,
    /// Counts standing changes (suspended <-> active): licensing applies the newest.
    #[serde(default)]
    pub seq: u64,
    /// When the sweep next has work here ([`Dunning::next_action_at`], set before each save).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<i64>,
}

/// An invoice event reduced to what dunning needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceEvent {
    PaymentFailed {
        invoice: String,
        attempt_count: i64,
        at: i64,
        amount_due: Option<Money>,
        pay_url: Option<String>,
        subscription: Option<String>,
    },
    Paid {
        invoice: String,
        at: i64,
    },
}

impl InvoiceEvent {
    /// From a Stripe event (`type`, `created`, `data.object`); `None` for other types.
    pub fn from_stripe(event_type: &str, event: &serde_json::Value) -> Option<(String, Self)> {
        let obj = event.pointer("/data/object")?;
        let invoice = obj.get("id")?.as_str()?.to_owned();
        let customer = obj.get("customer")?.as_str()?.to_owned();
        let created = event
            .get("created")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        let ev = match event_type {
            "invoice.payment_failed" => InvoiceEvent::PaymentFailed {
                invoice,
                attempt_count: obj
                    .get("attempt_count")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(1),
                at: created,
                amount_due: money_of(obj, "amount_due"),
                pay_url: obj
                    .get("hosted_invoice_url")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned),
                subscription: obj
                    .get("subscription")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned),
            },
            "invoice.paid" | "invoice.payment_succeeded" => InvoiceEvent::Paid {
                invoice,
                at: obj
                    .pointer("/status_transitions/paid_at")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(created),
            },
            _ => return None,
        };
        Some((customer, ev))
    }

    fn invoice(&self) -> &str {
        match self {
            InvoiceEvent::PaymentFailed { invoice, .. } | InvoiceEvent::Paid { invoice, .. } => {
                invoice
            }
        }
    }
}

fn money_of(obj: &serde_json::Value, field: &str) -> Option<Money> {
    let amount = obj.get(field)?.as_i64()?;
    let currency = obj.get("currency")?.as_str()?;
    Some(Money::new(amount, currency.parse::<Currency>().ok()?))
}

impl Dunning {
    /// The oldest unpaid failed invoice: the one the ladder runs on.
    fn oldest_open(&self) -> Option<(&String, &InvoiceFacts, i64)> {
        self.invoices
            .iter()
            .filter(|(_, f)| f.open())
            .filter_map(|(id, f)| f.first_failed_at.map(|t| (id, f, t)))
            .min_by_key(|(id, _, t)| (*t, (*id).clone()))
    }

    fn derive(&self) -> Status {
        let open: Vec<&String> = self
            .invoices
            .iter()
            .filter(|(_, f)| f.open())
            .map(|(id, _)| id)
            .collect();
        if open.is_empty() {
            Status::Active
        } else if self.steps.iter().any(|s| {
            s.ends_with(":suspend") && open.iter().any(|id| s.starts_with(&format!("{id}:")))
        }) {
            Status::Suspended
        } else {
            Status::PastDue
        }
    }

    /// Re-derives the status after a change and queues what the change implies: the
    /// standing (with a new `seq`) when it moves between suspended and not, and the
    /// reinstatement notice.
    fn settle(&mut self, customer: &str, invoice: &str) -> Option<Status> {
        let before = self.status;
        self.status = self.derive();
        if before == self.status {
            return None;
        }
        let was = before == Status::Suspended;
        let is = self.status == Status::Suspended;
        if was != is {
            self.seq += 1;
            self.outbox.push(Effect::Standing {
                suspended: is,
                seq: self.seq,
                invoice: invoice.to_owned(),
            });
        }
        if was && self.status == Status::Active {
            self.outbox.push(Effect::Notify {
                notification: Notification::to_customer(
                    format!("dunning:{customer}:{invoice}:reinstated"),
                    Kind::Reinstated,
                    customer,
                )
                .with("invoice", invoice),
            });
        }
        Some(before)
    }

    /// Applies an invoice event; returns the previous status when the status changed. The
    /// implied effects are queued on the outbox.
    pub fn apply(&mut self, customer: &str, ev: &InvoiceEvent) -> Option<Status> {
        match ev {
            InvoiceEvent::PaymentFailed {
                invoice,
                attempt_count,
                at,
                amount_due,
                pay_url,
                subscription,
            } => {
                let f = self.invoices.entry(invoice.clone()).or_default();
                let new_attempt = *attempt_count > f.attempts;
                f.first_failed_at = Some(f.first_failed_at.map_or(*at, |x| x.min(*at)));
                f.attempts = f.attempts.max(*attempt_count);
                if amount_due.is_some() {
                    f.amount_due.clone_from(amount_due);
                }
                if pay_url.is_some() {
                    f.pay_url.clone_from(pay_url);
                }
                if subscription.is_some() {
                    f.subscription.clone_from(subscription);
                }
                let paid = f.paid_at.is_some();
                let (due, url) = (f.amount_due.clone(), f.pay_url.clone());
                self.as_of = self.as_of.max(*at);
                if new_attempt && !paid {
                    self.outbox.push(Effect::Notify {
                        notification: Notification::to_customer(
                            format!("payment_failed:{invoice}:{attempt_count}"),
                            Kind::PaymentFailed,
                            customer,
                        )
                        .with("invoice", invoice)
                        .with("attempt", attempt_count)
                        .with("amount_due", due)
                        .with("pay_url", url),
                    });
                }
            }
            InvoiceEvent::Paid { invoice, at } => {
                let f = self.invoices.entry(invoice.clone()).or_default();
                f.paid_at = Some(f.paid_at.map_or(*at, |x| x.min(*at)));
                self.as_of = self.as_of.max(*at);
            }
        }
        self.settle(customer, ev.invoice())
    }

    /// An invoice issued while the customer has no usable payment method: dunning starts at
    /// once (the invoice counts as failed from `at`). Returns whether anything changed.
    pub fn issued_without_method(
        &mut self,
        customer: &str,
        invoice: &str,
        amount_due: Money,
        pay_url: Option<String>,
        at: i64,
    ) -> bool {
        let f = self.invoices.entry(invoice.to_owned()).or_default();
        if f.first_failed_at.is_some() || f.paid_at.is_some() {
            return false;
        }
        f.first_failed_at = Some(at);
        f.attempts = f.attempts.max(1);
        f.amount_due = Some(amount_due.clone());
        f.pay_url.clone_from(&pay_url);
        self.as_of = self.as_of.max(at);
        self.outbox.push(Effect::Notify {
            notification: Notification::to_customer(
                format!("payment_method_missing:{invoice}"),
                Kind::PaymentMethodMissing,
                customer,
            )
            .with("invoice", invoice)
            .with("amount_due", amount_due)
            .with("pay_url", pay_url),
        });
        self.settle(customer, invoice);
        true
    }

    /// Takes the ladder steps due at `now` (unix seconds) that were not taken yet, and the
    /// card notices due. Returns the steps taken (`{invoice}:{day}:{action}`).
    pub fn advance(
        &mut self,
        customer: &str,
        policy: &Policy,
        subscriptions: &[String],
        now: i64,
    ) -> Vec<String> {
        let mut taken = Vec::new();
        if let Some((invoice, facts, first)) = self.oldest_open() {
            let invoice = invoice.clone();
            let facts = facts.clone();
            let due: Vec<Step> = policy
                .ladder
                .steps()
                .iter()
                .copied()
                .filter(|s| first.saturating_add(s.day.saturating_mul(DAY)) <= now)
                .filter(|s| !self.steps.contains(&step_key(&invoice, s)))
                .collect();
            // Only the latest missed reminder is sent; the others are recorded as skipped.
            let last_remind = due.iter().rposition(|s| s.action == Action::Remind);
            for (i, step) in due.iter().enumerate() {
                let key = step_key(&invoice, step);
                self.steps.insert(key.clone());
                taken.push(key.clone());
                let notice = |kind: Kind| {
                    Notification::to_customer(format!("dunning:{customer}:{key}"), kind, customer)
                        .with("invoice", &invoice)
                        .with("day", step.day)
                        .with("amount_due", &facts.amount_due)
                        .with("pay_url", &facts.pay_url)
                };
                match step.action {
                    Action::Remind if Some(i) == last_remind => {
                        let suspend_on = policy
                            .ladder
                            .suspend_day()
                            .filter(|d| *d > step.day)
                            .map(|d| date_of(first.saturating_add(d.saturating_mul(DAY))));
                        self.outbox.push(Effect::Notify {
                            notification: notice(Kind::DunningReminder)
                                .with("suspend_on", suspend_on),
                        });
                    }
                    Action::Remind => {}
                    Action::Suspend => {
                        let cancel_on = policy
                            .ladder
                            .cancel_day()
                            .map(|d| date_of(first.saturating_add(d.saturating_mul(DAY))));
                        self.outbox.push(Effect::Notify {
                            notification: notice(Kind::Suspended).with("cancel_on", cancel_on),
                        });
                    }
                    Action::Cancel => {
                        let subs: Vec<String> = match &facts.subscription {
                            Some(s) => vec![s.clone()],
                            None => subscriptions.to_vec(),
                        };
                        for sub in &subs {
                            self.outbox.push(Effect::Cancel {
                                subscription: sub.clone(),
                                invoice: invoice.clone(),
                            });
                        }
                        self.outbox.push(Effect::Notify {
                            notification: notice(Kind::CancelledForNonPayment)
                                .with("subscriptions", &subs),
                        });
                    }
                }
            }
            self.as_of = self.as_of.max(now);
            self.settle(customer, &invoice);
        }
        self.card_notices_due(customer, policy, now);
        taken
    }

    fn card_notices_due(&mut self, customer: &str, policy: &Policy, now: i64) {
        let Some(card) = self.payment_method.as_ref().and_then(|p| p.card.clone()) else {
            return;
        };
        let Some(expires) = card_expires_at(&card) else {
            return;
        };
        if expires <= now {
            return;
        }
        // Only the nearest notice due is sent (a card added 10 days before expiry gets the
        // 30-day notice, not the 30 and the 7 at once).
        let mut due: Vec<i64> = policy
            .card_notice_days
            .iter()
            .copied()
            .filter(|d| expires.saturating_sub(d.saturating_mul(DAY)) <= now)
            .collect();
        due.sort_unstable();
        let Some(&days) = due.first() else {
            return;
        };
        let key = format!(
            "{}:{}-{:02}:{days}",
            card.last4, card.exp_year, card.exp_month
        );
        if !self.card_notices.insert(key.clone()) {
            return;
        }
        // The farther notices are done too: they would come after the nearer one.
        for d in due.iter().skip(1) {
            self.card_notices.insert(format!(
                "{}:{}-{:02}:{d}",
                card.last4, card.exp_year, card.exp_month
            ));
        }
        self.outbox.push(Effect::Notify {
            notification: Notification::to_customer(
                format!("card_expiring:{customer}:{key}"),
                Kind::CardExpiring,
                customer,
            )
            .with("brand", &card.brand)
            .with("last4", &card.last4)
            .with("exp_month", card.exp_month)
            .with("exp_year", card.exp_year)
            .with("days", days),
        });
    }

    /// Records the card on file as read at `read_at`; an older read is ignored. `true` when
    /// it changed what is stored.
    pub fn set_payment_method(&mut self, card: Option<Card>, read_at: i64) -> bool {
        if self
            .payment_method
            .as_ref()
            .is_some_and(|p| p.read_at > read_at)
        {
            return false;
        }
        let next = PaymentMethod { card, read_at };
        if self.payment_method.as_ref().map(|p| &p.card) == Some(&next.card) {
            return false;
        }
        self.payment_method = Some(next);
        true
    }

    /// Whether a usable card is on file (unknown counts as usable: never start dunning on a
    /// guess).
    pub fn has_usable_method(&self, now: i64) -> bool {
        match &self.payment_method {
            None => true,
            Some(PaymentMethod { card: None, .. }) => false,
            Some(PaymentMethod {
                card: Some(card), ..
            }) => card_expires_at(card).is_none_or(|e| e > now),
        }
    }

    /// When the sweep next has something to do for this customer (unix seconds), if ever.
    pub fn next_action_at(&self, policy: &Policy) -> Option<i64> {
        let mut next: Option<i64> = None;
        let mut consider = |t: i64| next = Some(next.map_or(t, |n: i64| n.min(t)));
        if !self.outbox.is_empty() {
            consider(0);
        }
        if let Some((invoice, _, first)) = self.oldest_open()
            && let Some(step) = policy
                .ladder
                .steps()
                .iter()
                .find(|s| !self.steps.contains(&step_key(invoice, s)))
        {
            consider(first.saturating_add(step.day.saturating_mul(DAY)));
        }
        if let Some(card) = self.payment_method.as_ref().and_then(|p| p.card.as_ref())
            && let Some(expires) = card_expires_at(card)
        {
            for d in &policy.card_notice_days {
                let key = format!("{}:{}-{:02}:{d}", card.last4, card.exp_year, card.exp_month);
                let at = expires.saturating_sub(d.saturating_mul(DAY));
                if !self.card_notices.contains(&key) && at < expires {
                    consider(at);
                }
            }
        }
        next
    }
}

fn step_key(invoice: &str, step: &Step) -> String {
    format!("{invoice}:{}:{}", step.day, step.action.as_str())
}

fn date_of(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
