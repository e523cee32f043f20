//! The customer sync service: one queue message in, the customer's CRM records brought up to
//! date (Account, Contact, Opportunities, a converted lead) and the account directory that
//! lead routing reads.
//!
//! For every message: find the customer (a dispute names only its charge: read the charge);
//! load our state of the customer; **re-read** the customer and the named subscription from
//! Stripe (events come unordered and twice: the current objects decide, never the event's
//! copy); apply what the message says (license, invoice, refund, dispute); give the account an
//! owner once (existing account on the domain, else territory + weighted round-robin, then
//! kept) and save that before anything is written; build the records; write only those whose
//! content changed since the last write (one CRM request, a Salesforce Composite), then save
//! their fingerprints. Every write is an upsert by external id, so a replay, a duplicate or a
//! different order converges to the same records. A conflicting save by a concurrent message
//! of the same customer makes this one start over.

use super::events::{Change, Skip, Trigger, trigger};
use super::state::{CustomerState, CustomerStore, InvoiceLink, LicenseLink, Term};
use crate::crm::{
    AccountStatus, CrmAccount, CrmContact, CrmOpportunity, CrmPort, CrmRecord, LeadConversion,
    OpportunityStage,
};
use crate::error::{Error, Result};
use crate::events::Internal;
use crate::leads::domains::DomainClassifier;
use crate::leads::normalize::split_name;
use crate::leads::routing::{Account, AccountDirectory, SlotCounter, Territories, route};
use crate::leads::rules::Facts;
use crate::leads::store::LeadStore;
use crate::queue::EventMessage;
use crate::stripe::{Customer, Expandable, StripeInvoices, StripeReads, Subscription};
use crate::subjects::{Location, SubjectId, Subjects, System};
use crate::values::{Country, Currency, Email, Money};
use std::sync::Arc;

/// The ports the service drives.
#[derive(Clone)]
pub struct Ports {
    pub stripe: Arc<dyn StripeReads>,
    /// Invoices are read to find the subscription a refunded or disputed charge paid for.
    pub invoices: Arc<dyn StripeInvoices>,
    pub crm: Arc<dyn CrmPort>,
    pub customers: Arc<dyn CustomerStore>,
    /// Company domain -> account and owner (lead routing reads it).
    pub directory: Arc<dyn AccountDirectory>,
    /// To find the lead a buyer came in as.
    pub leads: Arc<dyn LeadStore>,
    /// Round-robin counters shared with lead routing.
    pub counter: Arc<dyn SlotCounter>,
    /// The subject key, index and tombstones: an erased buyer's contact is not written again.
    pub subjects: Subjects,
}

/// What a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Records written (`records`), or none when nothing had changed.
    Synced {
        customer: String,
        records: usize,
        account_created: bool,
    },
    /// Nothing to do (a guest checkout, a customer who bought nothing yet, a foreign event).
    Skipped { reason: String },
}

/// How often a save that lost a race is retried before the message is retried by SQS.
const ROUNDS: usize = 5;

/// See the module docs.
pub struct CustomerSync {
    ports: Ports,
    territories: Territories,
    classifier: &'static DomainClassifier,
}

impl CustomerSync {
    /// The service with the bundled territory rules (the same that route leads).
    pub fn bundled(ports: Ports) -> Result<Self> {
        Ok(Self {
            ports,
            territories: Territories::bundled()
                .map_err(|e| Error::Invalid(format!("territories: {e}")))?,
            classifier: DomainClassifier::bundled(),
        })
    }

    /// Handles one queue message.
    pub async fn handle(&self, msg: &EventMessage) -> Result<Outcome> {
        let trig = match trigger(msg)? {
            Ok(t) => t,
            Err(Skip(reason)) => return Ok(Outcome::Skipped { reason }),
        };
        let customer = match &trig.customer {
            Some(c) => c.clone(),
            None => match &trig.change {
                Change::Disputed { charge } | Change::Refunded { charge } => {
                    match self.ports.stripe.charge(charge).await?.customer {
                        Some(c) => c,
                        None => {
                            return Ok(Outcome::Skipped {
                                reason: format!("charge {charge} has no customer"),
                            });
                        }
                    }
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "event {} names no customer",
                        msg.id
                    )));
                }
            },
        };
        for _ in 0..ROUNDS {
            match self
                .sync(&customer, &trig, msg.received_at.timestamp())
                .await
            {
                Err(Error::Conflict(_)) => continue,
                other => {
                    if let Ok(o) = &other {
                        tracing::info!(event_id = %msg.id, event_type = %msg.event_type, customer_id = %customer, outcome = ?o, "customer synced");
                    }
                    return other;
                }
            }
        }
        Err(Error::InProgress(format!(
            "customer {customer} is being changed by other messages"
        )))
    }

    async fn sync(&self, customer_id: &str, trig: &Trigger, at: i64) -> Result<Outcome> {
        let p = &self.ports;
        let mut state = p
            .customers
            .load(customer_id)
            .await?
            .unwrap_or_else(|| CustomerState::new(customer_id));
        let before = state.clone();
        let customer = p.stripe.customer(customer_id).await?;
        self.apply(&mut state, trig, at).await?;
        let Some(status) = state.status() else {
            if state != before {
                p.customers.save(&state).await?;
            }
            return Ok(Outcome::Skipped {
                reason: format!("customer {customer_id} has bought nothing yet"),
            });
        };
        let mut email = customer.email.as_deref().and_then(|e| Email::parse(e).ok());
        let mut subject = None;
        if let Some(e) = &email {
            match p.subjects.live(e).await? {
                Ok(id) => subject = Some(id),
                // Erased: no contact, no lead link, nothing personal is written again.
                Err(t) => {
                    tracing::info!(request_id = %t.request_id, "buyer was erased; no contact written");
                    email = None;
                }
            }
        }
        let domain = email
            .as_ref()
            .map(|e| e.domain().to_owned())
            .filter(|d| self.classifier.classify(d).is_corporate());
        let country = customer
            .address
            .as_ref()
            .and_then(|a| a.country.as_deref())
            .and_then(Country::parse);
        if state.owner_id.is_none() {
            self.assign_owner(&mut state, domain.as_deref(), country, email.is_some())
                .await?;
            // Saved before any write: a retry keeps this owner (and its round-robin slot).
            state.version = p.customers.save(&state).await?;
        }
        let lead_id = match &email {
            Some(e) => p.leads.find_subject(e).await?,
            None => None,
        };
        // Indexed before the contact is first written (a privacy request finds every place);
        // once the contact is written the places are known, so later events cost no writes.
        if let Some(id) = subject
            .as_ref()
            .filter(|id| !state.written.contains_key(&format!("Contact:{id}")))
        {
            p.subjects
                .index
                .record(
                    id,
                    &[
                        Location::new(System::Stripe, customer_id),
                        Location::new(System::Customers, customer_id),
                        Location::new(System::Licenses, customer_id),
                        Location::new(System::Billing, customer_id),
                        Location::new(System::Crm, format!("contact:{id}")),
                        Location::new(System::Crm, format!("account:{customer_id}")),
                    ],
                    at,
                )
                .await?;
        }
        let records = self.records(
            &state,
            &customer,
            status,
            email.as_ref().zip(subject.as_ref()),
            domain.as_deref(),
            country,
            lead_id.map(|l| l.to_string()),
        );
        let changed: Vec<(String, String, CrmRecord)> = records
            .into_iter()
            .map(|r| (r.key(), r.fingerprint(), r))
            .filter(|(k, f, _)| state.written.get(k) != Some(f))
            .collect();
        let account_created = !state.written.keys().any(|k| k.starts_with("Account:"));
        if !changed.is_empty() {
            let to_write: Vec<CrmRecord> = changed.iter().map(|(_, _, r)| r.clone()).collect();
            p.crm.upsert_all(&to_write).await?;
            if let (Some(d), Some(owner)) = (&domain, &state.owner_id)
                && changed.iter().any(|(k, _, _)| k.starts_with("Account:"))
            {
                p.directory
                    .put_account(&Account {
                        domain: d.clone(),
                        account_id: customer_id.to_owned(),
                        name: account_name(&customer),
                        owner_id: owner.clone(),
                    })
                    .await?;
            }
            for (k, f, _) in &changed {
                state.written.insert(k.clone(), f.clone());
            }
        }
        if state != before {
            p.customers.save(&state).await?;
        }
        Ok(Outcome::Synced {
            customer: customer_id.to_owned(),
            records: changed.len(),
            account_created: account_created && !changed.is_empty(),
        })
    }

    /// Applies what the message says to the state, re-reading Stripe where order matters.
    /// `at`: when the message was received, the time of the history points it adds.
    async fn apply(&self, state: &mut CustomerState, trig: &Trigger, at: i64) -> Result<()> {
        let p = &self.ports;
        match &trig.change {
            Change::Refresh => {}
            Change::InvoicePaid {
                invoice_id,
                total,
                currency,
                created,
            } => {
                if trig.subscription.is_none() {
                    state.paid_one_off = true;
                }
                let currency: Currency = currency
                    .parse()
                    .map_err(|e| Error::Invalid(format!("invoice {invoice_id}: {e}")))?;
                keep_latest(
                    state,
                    InvoiceLink {
                        invoice_id: invoice_id.clone(),
                        total: Money::new(*total, currency),
                        at: *created,
                    },
                );
            }
            Change::Refunded { charge } | Change::Disputed { charge } => {
                let flag = if matches!(trig.change, Change::Refunded { .. }) {
                    "refund"
                } else {
                    "dispute"
                };
                state.flags.insert(flag.to_owned());
                let invoice = p.stripe.charge(charge).await?.invoice;
                if let Some(inv) = invoice
                    && let Some(sub) = p.invoices.invoice(&inv).await?.subscription
                {
                    state.flagged_subscriptions.insert(sub);
                }
            }
            Change::License(internal) => {
                let (Internal::LicenseIssued(l)
                | Internal::LicenseSuperseded(l)
                | Internal::LicenseRevoked(l)) = internal
                else {
                    return Ok(());
                };
                let revoked = matches!(internal, Internal::LicenseRevoked(_));
                let superseded = matches!(internal, Internal::LicenseSuperseded(_));
                let current = state.licenses.get(&l.subscription);
                // A superseded license never replaces its successor; a later license wins.
                let replace = !superseded
                    && current.is_none_or(|c| {
                        c.license_id == l.license_id || c.expires_at <= l.expires_at
                    });
                if replace || (revoked && current.is_some_and(|c| c.license_id == l.license_id)) {
                    state.licenses.insert(
                        l.subscription.clone(),
                        LicenseLink {
                            license_id: l.license_id.clone(),
                            subscription: l.subscription.clone(),
                            expires_at: l.expires_at,
                            revoked,
                        },
                    );
                }
            }
            Change::InvoiceFinalized(Internal::InvoiceFinalized(i)) => {
                // The period the invoice bills is the month its end falls just after.
                if let Some(end) = chrono::DateTime::from_timestamp(i.period_end - 1, 0) {
                    state
                        .usage_billed
                        .insert(end.format("%Y-%m").to_string(), i.total.clone());
                }
                if let Some(id) = &i.invoice {
                    keep_latest(
                        state,
                        InvoiceLink {
                            invoice_id: id.clone(),
                            total: i.total.clone(),
                            at: i.period_end,
                        },
                    );
                }
            }
            Change::InvoiceFinalized(_) => {}
        }
        if let Some(sub) = &trig.subscription {
            self.refresh_subscription(state, sub, at).await?;
        }
        Ok(())
    }

    /// Reads a subscription from Stripe into the state's term for it.
    async fn refresh_subscription(
        &self,
        state: &mut CustomerState,
        sub_id: &str,
        at: i64,
    ) -> Result<()> {
        let sub = self.ports.stripe.subscription(sub_id).await?;
        if sub.customer.id() != state.customer_id {
            return Err(Error::Invalid(format!(
                "subscription {sub_id} belongs to another customer"
            )));
        }
        let mut term = self.term(&sub).await?;
        if let Some(previous) = state.subscriptions.remove(&sub.id) {
            term.history = previous.history;
        }
        term.record(at);
        state.subscriptions.insert(sub.id.clone(), term);
        Ok(())
    }

    async fn term(&self, sub: &Subscription) -> Result<Term> {
        let (start, end) = sub.current_period();
        let start = start.unwrap_or(0);
        let end = end.unwrap_or(start);
        let item = sub.main_item();
        let mut sku = item
            .and_then(|i| i.price_or_plan())
            .and_then(|p| p.metadata.get("sku"))
            .map(str::to_owned);
        if sku.is_none()
            && let Some(product) = item
                .and_then(|i| i.price_or_plan())
                .and_then(|p| p.product.as_ref())
        {
            sku = match product {
                Expandable::Object(p) => p.metadata.get("sku").map(str::to_owned),
                Expandable::Id(id) => self
                    .ports
                    .stripe
                    .product(id)
                    .await?
                    .metadata
                    .get("sku")
                    .map(str::to_owned),
            };
        }
        let annual_value = annual_value(sub);
        if annual_value.is_none() {
            tracing::info!(subscription = %sub.id, "a price of the subscription has no amount or interval: the opportunity amount is left empty");
        }
        let cancel_reason = sub.cancellation_details.as_ref().and_then(|d| {
            match (d.reason.as_deref(), d.feedback.as_deref()) {
                (Some(r), Some(f)) => Some(format!("{r}: {f}")),
                (r, f) => r.or(f).map(str::to_owned),
            }
        });
        Ok(Term {
            status: sub.status.clone(),
            start,
            end,
            seats: item.map(|i| u32::try_from(i.quantity.unwrap_or(1)).unwrap_or(u32::MAX)),
            sku,
            annual_value,
            cancel_reason: cancel_reason.or_else(|| {
                (sub.status == "canceled").then(|| "cancellation_requested".to_owned())
            }),
            plan: sub
                .metadata
                .get("blapi_plan")
                .map(str::to_owned)
                .or_else(|| item.and_then(|i| i.price_or_plan()).map(|p| p.id.clone())),
            interval: item
                .and_then(|i| i.price_or_plan())
                .and_then(|p| p.interval_of())
                .map(|(i, _)| i.to_owned()),
            interval_count: item
                .and_then(|i| i.price_or_plan())
                .and_then(|p| p.interval_of())
                .map(|(_, c)| c),
            mrr: monthly_value(sub, start),
            cancel_at_period_end: sub.cancel_at_period_end,
            history: Vec::new(),
        })
    }

    /// Gives the account its owner: the owner of an existing account on its company domain,
    /// else the territory team's next member by weighted round-robin (as leads are routed).
    async fn assign_owner(
        &self,
        state: &mut CustomerState,
        domain: Option<&str>,
        country: Option<Country>,
        has_email: bool,
    ) -> Result<()> {
        let facts = Facts {
            sources: vec!["stripe.customer".into()],
            country: country.map(|c| c.code().to_owned()),
            region: country.map(|c| c.region().to_owned()),
            domain_class: match domain {
                Some(_) => "corporate".into(),
                None if has_email => "free_mail".into(),
                None => "unknown".into(),
            },
            ..Facts::default()
        };
        let r = route(
            &self.territories,
            self.ports.directory.as_ref(),
            self.ports.counter.as_ref(),
            domain,
            &facts,
        )
        .await?;
        state.owner_id = Some(r.owner_id);
        state.owner_reason = Some(r.reason);
        Ok(())
    }

    /// The records the customer should have now.
    #[allow(clippy::too_many_arguments)]
    fn records(
        &self,
        state: &CustomerState,
        customer: &Customer,
        status: AccountStatus,
        email: Option<(&Email, &SubjectId)>,
        domain: Option<&str>,
        country: Option<Country>,
        lead_id: Option<String>,
    ) -> Vec<CrmRecord> {
        let cus = state.customer_id.as_str();
        let owner = state.owner_id.clone().unwrap_or_default();
        let license = state.current_license();
        let flags: Vec<String> = state.flags.iter().cloned().collect();
        let name = account_name(customer);
        let mut out = vec![CrmRecord::Account(CrmAccount {
            external_id: cus.to_owned(),
            name: name.clone(),
            domains: domain.map(|d| vec![d.to_owned()]).unwrap_or_default(),
            billing_country: country,
            owner_id: owner.clone(),
            status,
            license_id: license.map(|l| l.license_id.clone()),
            license_expires: license.map(|l| date_ms(l.expires_at)),
            last_invoice_id: state.last_invoice.as_ref().map(|i| i.invoice_id.clone()),
            last_invoice_total: state.last_invoice.as_ref().map(|i| i.total.clone()),
            flags: flags.clone(),
        })];
        if let Some((email, subject)) = email {
            let person = split_name(None, None, customer.name.as_deref());
            out.push(CrmRecord::Contact(CrmContact {
                external_id: subject.to_string(),
                account_external_id: cus.to_owned(),
                email: Some(email.as_str().to_owned()),
                first_name: person.first,
                last_name: person.last,
                lead_id: lead_id.clone(),
            }));
        }
        for (sub_id, term) in &state.subscriptions {
            let opp = |stage, close: i64, loss_reason: Option<String>| CrmOpportunity {
                external_id: format!("{sub_id}:{}", date_s(close)),
                account_external_id: cus.to_owned(),
                name: format!(
                    "{name} · {} · {}",
                    term.sku.as_deref().unwrap_or("subscription"),
                    date_s(close)
                ),
                stage,
                // After recurring discounts, as revenue-ops values the renewal of the term.
                amount: term
                    .mrr
                    .as_ref()
                    .map(|m| Money::new(m.amount.saturating_mul(12), m.currency.clone()))
                    .or_else(|| term.annual_value.clone()),
                seats: term.seats,
                sku: term.sku.clone(),
                close_date: date_s(close),
                subscription_id: sub_id.clone(),
                license_id: state
                    .licenses
                    .get(sub_id)
                    .filter(|l| !l.revoked)
                    .map(|l| l.license_id.clone()),
                loss_reason,
                flags: if state.flagged_subscriptions.contains(sub_id) {
                    flags.clone()
                } else {
                    Vec::new()
                },
                owner_id: owner.clone(),
            };
            match term.status.as_str() {
                "trialing" => out.push(CrmRecord::Opportunity(opp(
                    OpportunityStage::Open,
                    term.start,
                    None,
                ))),
                "active" | "past_due" | "unpaid" | "paused" => out.push(CrmRecord::Opportunity(
                    opp(OpportunityStage::ClosedWon, term.start, None),
                )),
                "canceled" => {
                    // The paid term stays won; the renewal it would have become is lost.
                    out.push(CrmRecord::Opportunity(opp(
                        OpportunityStage::ClosedWon,
                        term.start,
                        None,
                    )));
                    out.push(CrmRecord::Opportunity(opp(
                        OpportunityStage::ClosedLost,
                        term.end,
                        term.cancel_reason.clone(),
                    )));
                }
                _ => {} // incomplete: nothing was bought
            }
        }
        if let Some(lead_id) = lead_id {
            out.push(CrmRecord::LeadConversion(LeadConversion {
                lead_id,
                account_external_id: cus.to_owned(),
            }));
        }
        out
    }
}

/// The account's name: the company (`metadata.company`); an individual buyer's account is
/// `Individual customer {id}`. The account is the customer's accounting record, kept after
/// the person's erasure, so it never carries personal data: the person is its Contact (named,
/// and erased on request).
fn account_name(customer: &Customer) -> String {
    match customer.metadata.get("company").map(str::trim) {
        Some(company) if !company.is_empty() => company.to_owned(),
        _ => format!("Individual customer {}", customer.id),
    }
}

/// Keeps the later of the stored and the new last invoice (events arrive in any order).
fn keep_latest(state: &mut CustomerState, new: InvoiceLink) {
    if state
        .last_invoice
        .as_ref()
        .is_none_or(|cur| (new.at, new.invoice_id.as_str()) >= (cur.at, cur.invoice_id.as_str()))
    {
        state.last_invoice = Some(new);
    }
}

/// The annualised contract value of a subscription: Σ unit amount × quantity × billing
/// periods per year, rounded half up to the minor unit. `None` when a price has no amount or
/// interval (an unknown or metered price), the items disagree on the currency, or the value
/// does not fit an amount (checked arithmetic: never a wrapped figure).
pub fn annual_value(sub: &Subscription) -> Option<Money> {
    let mut total: i128 = 0;
    let mut currency: Option<String> = None;
    for item in &sub.items.data {
        let price = item.price_or_plan()?;
        let unit = i128::from(price.unit_amount?);
        let (per_year, count) = price.periods_per_year()?;
        let qty = i128::from(item.quantity.unwrap_or(1));
        let num = unit.checked_mul(qty)?.checked_mul(i128::from(per_year))?;
        let den = i128::from(count).max(1);
        total = total.checked_add(num.checked_add(den / 2)? / den)?;
        let c = price.currency.clone().or_else(|| sub.currency.clone())?;
        if currency.as_ref().is_some_and(|cur| *cur != c) {
            return None;
        }
        currency = Some(c);
    }
    let currency: Currency = currency?.parse().ok()?;
    Some(Money::new(i64::try_from(total).ok()?, currency))
}

/// The monthly recurring value of a subscription at `at` (seconds): Σ unit amount × quantity
/// normalised to a month (yearly / 12, every 3 months / 3, weekly × 52 / 12, daily × 365 /
/// 12), less a recurring discount still running at `at` (`forever`, or `repeating` until its
/// end; a `once` coupon is a one-off, not recurring), rounded half up to the minor unit once,
/// at the end. `None` as for [`annual_value`].
pub fn monthly_value(sub: &Subscription, at: i64) -> Option<Money> {
    let currency = annual_value(sub)?.currency;
    // Exact fractions of minor units (numerator, denominator), rounded once at the end.
    let mut monthly = (0_i128, 1_i128);
    let mut invoices_per_month: Option<(i128, i128)> = None;
    for item in &sub.items.data {
        let price = item.price_or_plan()?;
        let (per_year, count) = price.periods_per_year()?;
        let per_month = (i128::from(per_year), i128::from(count).max(1) * 12);
        invoices_per_month.get_or_insert(per_month);
        let qty = i128::from(item.quantity.unwrap_or(1));
        let amount = i128::from(price.unit_amount?).checked_mul(qty)?;
        monthly = add(monthly, (amount.checked_mul(per_month.0)?, per_month.1))?;
    }
    if let Some(d) = &sub.discount
        && d.coupon.duration.as_deref() != Some("once")
        && d.end.is_none_or(|end| end > at)
    {
        if let Some(p) = d.coupon.percent_off {
            // Basis points: exact for the two decimals Stripe allows.
            let bp = ((p * 100.0).round() as i128).clamp(0, 10_000);
            monthly = (
                monthly.0.checked_mul(10_000 - bp)?,
                monthly.1.checked_mul(10_000)?,
            );
        } else if let (Some(off), Some((n, d))) = (d.coupon.amount_off, invoices_per_month) {
            monthly = add(monthly, ((-i128::from(off)).checked_mul(n)?, d))?;
        }
    }
    let (num, den) = monthly;
    let rounded = if num <= 0 {
        0
    } else {
        num.checked_mul(2)?.checked_add(den)? / den.checked_mul(2)?
    };
    Some(Money::new(i64::try_from(rounded).ok()?, currency))
}

/// The exact sum of two fractions (positive denominators), reduced; `None` past `i128`
/// (a value no real subscription reaches: the caller then reports no value).
fn add(a: (i128, i128), b: (i128, i128)) -> Option<(i128, i128)> {
    let num = a.0.checked_mul(b.1)?.checked_add(b.0.checked_mul(a.1)?)?;
    let den = a.1.checked_mul(b.1)?;
    let g = gcd(num.checked_abs()?, den).max(1);
    Some((num / g, den / g))
}

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `YYYY-MM-DD` of seconds since the epoch (UTC).
fn date_s(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// `YYYY-MM-DD` of milliseconds since the epoch (UTC).
fn date_ms(ms: i64) -> String {
    date_s(ms.div_euclid(1000))
}
