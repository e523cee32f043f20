//! What customer sync remembers of each customer, and where: one item per Stripe customer in
//! the CustomersTable (`pk = CUSTOMER#{id}`, `sk = STATE`; `doc` JSON, `version`, `owner_id`,
//! `status`), saved with an optimistic version so two events of one customer handled at once
//! cannot overwrite each other.
//!
//! The state holds no personal data: owner, subscriptions (status, term, seats, SKU, value),
//! the current license and last invoice, refund/dispute flags, and a fingerprint of every CRM
//! record last written (so an event that changes nothing costs no CRM request).

use crate::aws::dynamo::{get_json, get_n, json_attr, n, s};
use crate::crm::AccountStatus;
use crate::error::{Error, Result};
use crate::values::Money;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// A subscription's current term as last read from Stripe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// Stripe's status (`active`, `trialing`, `past_due`, `canceled`, ...).
    pub status: String,
    /// Seconds since the epoch.
    pub start: i64,
    pub end: i64,
    pub seats: Option<u32>,
    pub sku: Option<String>,
    /// Annualised contract value.
    pub annual_value: Option<Money>,
    /// Stripe's cancellation reason (and feedback), once cancelled.
    pub cancel_reason: Option<String>,
    /// The plan billing knows it by (`metadata.blapi_plan`, else the price or plan id):
    /// revenue-ops values a plan billed through the price book with its fixed charges.
    #[serde(default)]
    pub plan: Option<String>,
    /// The billing interval (`day`, `week`, `month`, `year`) and its count.
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub interval_count: Option<u32>,
    /// Monthly recurring value after recurring discounts (see `revenue::metrics`).
    #[serde(default)]
    pub mrr: Option<Money>,
    /// Set to cancel when the term ends (no renewal).
    #[serde(default)]
    pub cancel_at_period_end: bool,
    /// Every change of status, value, seats or term seen, oldest first: what revenue-ops
    /// computes a past date's metrics from. Only appended to, so a rerun of a past date
    /// reads the same history.
    #[serde(default)]
    pub history: Vec<ValuePoint>,
}

/// A subscription as it stood from `at` on (until the next point).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValuePoint {
    /// When it was observed (seconds since the epoch; never before the previous point).
    pub at: i64,
    pub status: String,
    pub mrr: Option<Money>,
    pub seats: Option<u32>,
    /// End of the current term (seconds).
    pub term_end: i64,
    #[serde(default)]
    pub cancel_at_period_end: bool,
}

impl Term {
    /// The point this term describes, observed at `at`.
    pub fn point(&self, at: i64) -> ValuePoint {
        ValuePoint {
            at,
            status: self.status.clone(),
            mrr: self.mrr.clone(),
            seats: self.seats,
            term_end: self.end,
            cancel_at_period_end: self.cancel_at_period_end,
        }
    }

    /// Appends this term's point at `at` (moved forward to the last point's time if the
    /// observation is older) unless nothing changed since the last point.
    pub fn record(&mut self, at: i64) {
        let last = self.history.last();
        let at = last.map_or(at, |l| l.at.max(at));
        let point = self.point(at);
        if last.is_none_or(|l| ValuePoint { at, ..l.clone() } != point) {
            self.history.push(point);
        }
    }

    /// The history, or for a term stored before histories were kept, one point at its start.
    pub fn points(&self) -> Vec<ValuePoint> {
        if self.history.is_empty() {
            vec![self.point(self.start)]
        } else {
            self.history.clone()
        }
    }
}

/// The license of a subscription, as license-minting last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseLink {
    pub license_id: String,
    pub subscription: String,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
    pub revoked: bool,
}

/// The last invoice seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLink {
    pub invoice_id: String,
    pub total: Money,
    /// When it was issued (seconds), to keep the latest whatever the delivery order.
    pub at: i64,
}

/// One customer's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CustomerState {
    pub customer_id: String,
    /// Given once, then kept (accounts keep their owner).
    pub owner_id: Option<String>,
    pub owner_reason: Option<String>,
    /// By subscription id.
    pub subscriptions: BTreeMap<String, Term>,
    /// By subscription id.
    pub licenses: BTreeMap<String, LicenseLink>,
    pub last_invoice: Option<InvoiceLink>,
    /// A paid invoice without a subscription (a one-off purchase) makes a customer too.
    pub paid_one_off: bool,
    /// `refund`, `dispute`.
    pub flags: BTreeSet<String>,
    /// Subscriptions whose payment was refunded or disputed.
    pub flagged_subscriptions: BTreeSet<String>,
    /// Usage invoices finalized, by billing period (`YYYY-MM`): usage revenue.
    #[serde(default)]
    pub usage_billed: BTreeMap<String, Money>,
    /// CRM record key -> fingerprint of the record last written.
    pub written: BTreeMap<String, String>,
    /// Optimistic version: 0 = never stored.
    pub version: u64,
}

impl CustomerState {
    pub fn new(customer_id: &str) -> Self {
        Self {
            customer_id: customer_id.to_owned(),
            ..Self::default()
        }
    }

    /// The lifecycle status, from every subscription (order-independent): money owed wins,
    /// then a paying subscription, then a trial, then churn. `None` before any purchase.
    pub fn status(&self) -> Option<AccountStatus> {
        let has = |pred: fn(&str) -> bool| self.subscriptions.values().any(|t| pred(&t.status));
        if has(|s| matches!(s, "past_due" | "unpaid" | "paused")) {
            Some(AccountStatus::PastDue)
        } else if has(|s| s == "active") {
            Some(AccountStatus::Customer)
        } else if has(|s| s == "trialing") {
            Some(AccountStatus::Trial)
        } else if has(|s| matches!(s, "canceled" | "incomplete_expired")) {
            Some(AccountStatus::Churned)
        } else if self.paid_one_off {
            Some(AccountStatus::Customer)
        } else {
            None
        }
    }

    /// The license to show on the account: the one expiring last that is not revoked.
    pub fn current_license(&self) -> Option<&LicenseLink> {
        self.licenses
            .values()
            .filter(|l| !l.revoked)
            .max_by_key(|l| l.expires_at)
    }
}

/// The customer state store.
#[async_trait]
pub trait CustomerStore: Send + Sync {
    async fn load(&self, customer_id: &str) -> Result<Option<CustomerState>>;
    /// Saves `state` as version `state.version + 1` if the stored version is still
    /// `state.version` (0: not stored yet), else [`Error::Conflict`]. Returns the new version.
    async fn save(&self, state: &CustomerState) -> Result<u64>;
    /// One page of every stored state (in no particular order) and the cursor of the next.
    async fn page(&self, cursor: Option<String>) -> Result<(Vec<CustomerState>, Option<String>)>;

    /// Every stored state, page by page.
    async fn all_states(&self) -> Result<Vec<CustomerState>> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = self.page(cursor).await?;
            out.extend(page);
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }
}

/// The DynamoDB adapter (CustomersTable).
#[derive(Debug, Clone)]
pub struct DynamoCustomers {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoCustomers {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn pk(customer_id: &str) -> String {
    format!("CUSTOMER#{customer_id}")
}

#[async_trait]
impl CustomerStore for DynamoCustomers {
    async fn load(&self, customer_id: &str) -> Result<Option<CustomerState>> {
        let item =
            crate::aws::dynamo::get_item(&self.client, &self.table, pk(customer_id), Some("STATE"))
                .await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let mut state: CustomerState = get_json(&item, "doc", "customer state")?;
        state.version = get_n(&item, "version").unwrap_or(0);
        Ok(Some(state))
    }

    async fn save(&self, state: &CustomerState) -> Result<u64> {
        let next = state.version + 1;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk(&state.customer_id)))
            .item("sk", s("STATE"))
            .item("doc", json_attr(state)?)
            .item("version", n(next))
            .item("updated_at", s(chrono::Utc::now().to_rfc3339()));
        if let Some(owner) = &state.owner_id {
            put = put.item("owner_id", s(owner));
        }
        if let Some(status) = state.status() {
            put = put.item("status", s(status.as_str()));
        }
        put = if state.version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(":v", n(state.version))
        };
        match put.send().await {
            Ok(_) => Ok(next),
            Err(e) if crate::aws::dynamo::is_conditional_check_failed(&e) => Err(Error::Conflict(
                format!("customer state of {} changed meanwhile", state.customer_id),
            )),
            Err(e) => Err(Error::aws("dynamodb", e)),
        }
    }

    /// A Scan of the state items; the cursor is the last key read (`pk`).
    async fn page(&self, cursor: Option<String>) -> Result<(Vec<CustomerState>, Option<String>)> {
        let mut scan = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("sk = :state")
            .expression_attribute_values(":state", s("STATE"));
        if let Some(c) = cursor {
            let (pk, sk) = c
                .split_once('\u{1f}')
                .ok_or_else(|| Error::Invalid("not a customer state cursor".into()))?;
            scan = scan
                .exclusive_start_key("pk", s(pk))
                .exclusive_start_key("sk", s(sk));
        }
        let out = scan.send().await.map_err(|e| Error::aws("dynamodb", e))?;
        let mut states = Vec::new();
        for item in out.items() {
            let mut state: CustomerState = get_json(item, "doc", "customer state")?;
            state.version = get_n(item, "version").unwrap_or(0);
            states.push(state);
        }
        let next = out.last_evaluated_key().and_then(|k| {
            let pk = k.get("pk")?.as_s().ok()?;
            let sk = k.get("sk")?.as_s().ok()?;
            Some(format!("{pk}\u{1f}{sk}"))
        });
        Ok((states, next))
    }
}

/// The in-memory fake.
#[derive(Debug, Default)]
pub struct MemoryCustomers(Mutex<HashMap<String, CustomerState>>);

impl MemoryCustomers {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CustomerState>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every stored state (tests).
    pub fn all(&self) -> Vec<CustomerState> {
        self.lock().values().cloned().collect()
    }
}

#[async_trait]
impl CustomerStore for MemoryCustomers {
    async fn load(&self, customer_id: &str) -> Result<Option<CustomerState>> {
        Ok(self.lock().get(customer_id).cloned())
    }

    async fn save(&self, state: &CustomerState) -> Result<u64> {
        let mut map = self.lock();
        let stored = map.get(&state.customer_id).map_or(0, |s| s.version);
        if stored != state.version {
            return Err(Error::Conflict(format!(
                "customer state of {} changed meanwhile",
                state.customer_id
            )));
        }
        let mut next = state.clone();
        next.version = state.version + 1;
        map.insert(state.customer_id.clone(), next);
        Ok(state.version + 1)
    }
    /// Every state on one page.
    async fn page(&self, _cursor: Option<String>) -> Result<(Vec<CustomerState>, Option<String>)> {
        let mut all = self.all();
        all.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        Ok((all, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(status: &str) -> Term {
        Term {
            status: status.into(),
            start: 0,
            end: 1,
            seats: Some(1),
            sku: None,
            annual_value: None,
            cancel_reason: None,
            plan: None,
            interval: Some("month".into()),
            interval_count: Some(1),
            mrr: None,
            cancel_at_period_end: false,
            history: Vec::new(),
        }
    }

    #[test]
    fn status_is_order_independent_and_money_owed_wins() {
        let mut s = CustomerState::new("cus_1");
        assert_eq!(s.status(), None, "no purchase yet");
        s.subscriptions.insert("sub_a".into(), term("canceled"));
        assert_eq!(s.status(), Some(AccountStatus::Churned));
        s.subscriptions.insert("sub_b".into(), term("trialing"));
        assert_eq!(s.status(), Some(AccountStatus::Trial));
        s.subscriptions.insert("sub_c".into(), term("active"));
        assert_eq!(s.status(), Some(AccountStatus::Customer));
        s.subscriptions.insert("sub_d".into(), term("past_due"));
        assert_eq!(s.status(), Some(AccountStatus::PastDue));
        let mut one_off = CustomerState::new("cus_2");
        one_off.paid_one_off = true;
        assert_eq!(one_off.status(), Some(AccountStatus::Customer));
    }

    #[tokio::test]
    async fn memory_store_refuses_a_stale_version() {
        let m = MemoryCustomers::new();
        let s = CustomerState::new("cus_1");
        assert_eq!(m.save(&s).await.unwrap(), 1);
        assert!(matches!(m.save(&s).await, Err(Error::Conflict(_))));
        let mut loaded = m.load("cus_1").await.unwrap().unwrap();
        assert_eq!(loaded.version, 1);
        loaded.flags.insert("refund".into());
        assert_eq!(m.save(&loaded).await.unwrap(), 2);
    }
}
