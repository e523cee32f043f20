//! Typed Stripe reads for licensing: the subscription (re-fetched for every event, because
//! Stripe delivers events unordered and duplicated), its customer and its product.
//!
//! [`StripeSubscriptions`] is the port; [`StripeApi`] the adapter on top of
//! [`crate::stripe::StripeClient`] (GET only: licensing never writes to Stripe);
//! [`MemoryStripe`] the fake for unit tests. The raw objects parse leniently (real Stripe
//! has prices and, since 2025, periods on items; localstripe has plans and periods on the
//! subscription); [`SubscriptionState::from_subscription`] turns them into what the minting
//! rules need, or says clearly why it cannot.

use crate::error::{Error, Result};
use crate::stripe::StripeClient;
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// An id or the expanded object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

/// Objects that have an id.
pub trait HasId {
    fn id(&self) -> &str;
}

impl<T: HasId> Expandable<T> {
    pub fn id(&self) -> &str {
        match self {
            Expandable::Id(id) => id,
            Expandable::Object(o) => o.id(),
        }
    }
}

type Metadata = Option<HashMap<String, serde_json::Value>>;

fn meta<'a>(m: &'a Metadata, key: &str) -> Option<&'a str> {
    m.as_ref()?
        .get(key)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A Stripe product.
#[derive(Debug, Clone, Deserialize)]
pub struct Product {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
}

impl HasId for Product {
    fn id(&self) -> &str {
        &self.id
    }
}

/// A Stripe price (or legacy plan: the fields we read are the same).
#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    pub id: String,
    #[serde(default)]
    pub product: Option<Expandable<Product>>,
    #[serde(default)]
    pub metadata: Metadata,
}

/// A subscription item.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    pub id: String,
    #[serde(default)]
    pub quantity: Option<u64>,
    #[serde(default)]
    pub price: Option<Price>,
    #[serde(default)]
    pub plan: Option<Price>,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

/// A Stripe list.
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

/// A Stripe subscription, as much as licensing reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer: Expandable<Customer>,
    pub status: String,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
    pub items: List<SubscriptionItem>,
}

/// A Stripe customer (possibly deleted).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub deleted: bool,
}

impl HasId for Customer {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Customer {
    /// `metadata.company`, else the customer's name.
    pub fn company(&self) -> String {
        meta(&self.metadata, "company")
            .map(str::to_owned)
            .or_else(|| self.name.clone())
            .unwrap_or_default()
    }
}

/// What a subscription's status means for its license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Paid (or trialing): the current period must have a license.
    Licensed { trial: bool },
    /// Ended: its licenses are revoked.
    Ended,
    /// Not yet paid or in arrears: nothing to do now; a later event settles it.
    Pending,
}

/// A billing period, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The licensed item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicensedItem {
    pub quantity: u32,
    /// `sku` from the price's (or plan's) metadata.
    pub sku: Option<String>,
    /// The product, to read its metadata when the price has no `sku`.
    pub product_id: Option<String>,
    /// The product's `sku` when the product came expanded.
    pub product_sku: Option<String>,
}

/// A subscription parsed for the minting rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    pub standing: Standing,
    /// The current period; `None` only when the subscription is not licensed.
    pub period: Option<Period>,
    pub item: Option<LicensedItem>,
}

impl SubscriptionState {
    /// Reads what matters from a raw subscription. A licensed subscription without a period
    /// or item is malformed ([`Error::Invalid`]).
    pub fn from_subscription(sub: &Subscription) -> Result<Self> {
        let standing = match sub.status.as_str() {
            "active" => Standing::Licensed { trial: false },
            "trialing" => Standing::Licensed { trial: true },
            "canceled" | "incomplete_expired" => Standing::Ended,
            _ => Standing::Pending, // incomplete, past_due, unpaid, paused
        };
        let first = sub.items.data.first();
        let start = sub
            .current_period_start
            .or_else(|| first.and_then(|i| i.current_period_start));
        let end = sub
            .current_period_end
            .or_else(|| first.and_then(|i| i.current_period_end));
        let period = match (start, end) {
            (Some(s), Some(e)) if e > s => Some(Period {
                start_ms: s.saturating_mul(1000),
                end_ms: e.saturating_mul(1000),
            }),
            _ => None,
        };
        // The licensed item: the first whose price names a SKU, else the first.
        let pick = sub
            .items
            .data
            .iter()
            .find(|i| {
                i.price
                    .as_ref()
                    .or(i.plan.as_ref())
                    .is_some_and(|p| meta(&p.metadata, "sku").is_some())
            })
            .or(first);
        let item = pick.map(|i| {
            let price = i.price.as_ref().or(i.plan.as_ref());
            LicensedItem {
                quantity: u32::try_from(i.quantity.unwrap_or(1)).unwrap_or(u32::MAX),
                sku: price
                    .and_then(|p| meta(&p.metadata, "sku"))
                    .map(str::to_owned),
                product_id: price
                    .and_then(|p| p.product.as_ref())
                    .map(|p| p.id().to_owned()),
                product_sku: price.and_then(|p| match &p.product {
                    Some(Expandable::Object(prod)) => {
                        meta(&prod.metadata, "sku").map(str::to_owned)
                    }
                    _ => None,
                }),
            }
        });
        if let Standing::Licensed { .. } = standing {
            if period.is_none() {
                return Err(Error::Invalid(format!(
                    "subscription {} has no current period",
                    sub.id
                )));
            }
            if item.is_none() {
                return Err(Error::Invalid(format!(
                    "subscription {} has no items",
                    sub.id
                )));
            }
        }
        Ok(Self {
            id: sub.id.clone(),
            customer_id: sub.customer.id().to_owned(),
            status: sub.status.clone(),
            standing,
            period,
            item,
        })
    }
}

/// The port: what licensing reads from Stripe.
#[async_trait]
pub trait StripeSubscriptions: Send + Sync {
    async fn subscription(&self, id: &str) -> Result<Subscription>;
    async fn customer(&self, id: &str) -> Result<Customer>;
    async fn product(&self, id: &str) -> Result<Product>;
}

/// The adapter over the Stripe HTTP client.
#[derive(Debug, Clone)]
pub struct StripeApi {
    client: StripeClient,
}

impl StripeApi {
    pub fn new(client: StripeClient) -> Self {
        Self { client }
    }
    /// HTTP requests sent so far.
    pub fn calls(&self) -> u64 {
        self.client.calls()
    }
}

fn checked_id(kind: &str, prefix: &str, id: &str) -> Result<()> {
    if id.starts_with(prefix)
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{id:?} is not a Stripe {kind} id")))
    }
}

#[async_trait]
impl StripeSubscriptions for StripeApi {
    async fn subscription(&self, id: &str) -> Result<Subscription> {
        checked_id("subscription", "sub_", id)?;
        // No `expand`: localstripe cannot expand prices (it has plans); the product is
        // fetched only when the price carries no `sku`.
        self.client.get(&format!("subscriptions/{id}"), &[]).await
    }

    async fn customer(&self, id: &str) -> Result<Customer> {
        checked_id("customer", "cus_", id)?;
        self.client.get(&format!("customers/{id}"), &[]).await
    }

    async fn product(&self, id: &str) -> Result<Product> {
        checked_id("product", "prod_", id)?;
        self.client.get(&format!("products/{id}"), &[]).await
    }
}

/// In-memory Stripe for unit tests: objects as JSON, a call counter, and ids that fail.
#[derive(Debug, Default)]
pub struct MemoryStripe {
    subscriptions: Mutex<HashMap<String, serde_json::Value>>,
    customers: Mutex<HashMap<String, serde_json::Value>>,
    products: Mutex<HashMap<String, serde_json::Value>>,
    unavailable: std::sync::atomic::AtomicBool,
    calls: AtomicU64,
}

impl MemoryStripe {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn put_subscription(&self, sub: serde_json::Value) {
        let id = sub["id"].as_str().unwrap_or_default().to_owned();
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, sub);
    }
    pub fn put_customer(&self, c: serde_json::Value) {
        let id = c["id"].as_str().unwrap_or_default().to_owned();
        self.customers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, c);
    }
    pub fn put_product(&self, p: serde_json::Value) {
        let id = p["id"].as_str().unwrap_or_default().to_owned();
        self.products
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, p);
    }
    /// Makes every call fail with a retryable error (Stripe 5xx after retries) or succeed.
    pub fn set_unavailable(&self, down: bool) {
        self.unavailable.store(down, Ordering::SeqCst);
    }
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        map: &Mutex<HashMap<String, serde_json::Value>>,
        kind: &str,
        id: &str,
    ) -> Result<T> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(Error::dependency("stripe", true, "HTTP 503 (simulated)"));
        }
        let v = map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("stripe: No such {kind}: '{id}'")))?;
        serde_json::from_value(v).map_err(|e| {
            Error::dependency("stripe", false, format!("unexpected response shape: {e}"))
        })
    }
}

#[async_trait]
impl StripeSubscriptions for MemoryStripe {
    async fn subscription(&self, id: &str) -> Result<Subscription> {
        self.get(&self.subscriptions, "subscription", id)
    }
    async fn customer(&self, id: &str) -> Result<Customer> {
        self.get(&self.customers, "customer", id)
    }
    async fn product(&self, id: &str) -> Result<Product> {
        self.get(&self.products, "product", id)
    }
}

/// The subscription an event is about: `data.object.id` for subscription events,
/// `data.object.subscription` for invoices (or `parent.subscription_details.subscription` in
/// API versions since 2025) and checkout sessions. `None`: the event concerns no subscription
/// (a one-off invoice, a payment-mode checkout).
pub fn subscription_of(event: &serde_json::Value) -> Option<String> {
    let object = &event["data"]["object"];
    let kind = object["object"].as_str().unwrap_or_default();
    let event_type = event["type"].as_str().unwrap_or_default();
    let id = if kind == "subscription" || event_type.starts_with("customer.subscription.") {
        object["id"].as_str()
    } else {
        object["subscription"]
            .as_str()
            .or_else(|| object["subscription"]["id"].as_str())
            .or_else(|| object["parent"]["subscription_details"]["subscription"].as_str())
    };
    id.filter(|s| s.starts_with("sub_")).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subscription_id_from_each_event_kind() {
        let sub = json!({"type": "customer.subscription.created", "data": {"object": {"object": "subscription", "id": "sub_1"}}});
        let inv = json!({"type": "invoice.payment_succeeded", "data": {"object": {"object": "invoice", "id": "in_1", "subscription": "sub_2"}}});
        let inv_new = json!({"type": "invoice.paid", "data": {"object": {"object": "invoice", "id": "in_1", "parent": {"subscription_details": {"subscription": "sub_3"}}}}});
        let co = json!({"type": "checkout.session.completed", "data": {"object": {"object": "checkout.session", "id": "cs_1", "subscription": "sub_4"}}});
        let one_off = json!({"type": "invoice.paid", "data": {"object": {"object": "invoice", "id": "in_2", "subscription": null}}});
        assert_eq!(subscription_of(&sub).as_deref(), Some("sub_1"));
        assert_eq!(subscription_of(&inv).as_deref(), Some("sub_2"));
        assert_eq!(subscription_of(&inv_new).as_deref(), Some("sub_3"));
        assert_eq!(subscription_of(&co).as_deref(), Some("sub_4"));
        assert_eq!(subscription_of(&one_off), None);
        assert_eq!(subscription_of(&json!({})), None);
    }

    #[test]
    fn parses_localstripe_plans_and_stripe_prices() {
        // localstripe: plan, periods on the subscription.
        let local: Subscription = serde_json::from_value(json!({
            "id": "sub_1", "customer": "cus_1", "status": "active",
            "current_period_start": 1_780_000_000, "current_period_end": 1_782_592_000,
            "items": {"object": "list", "data": [{"id": "si_1", "quantity": 7,
                "plan": {"id": "plan_1", "product": "prod_1", "metadata": {"sku": "enterprise"}}, "metadata": null}]}
        }))
        .unwrap();
        let s = SubscriptionState::from_subscription(&local).unwrap();
        assert_eq!(s.standing, Standing::Licensed { trial: false });
        assert_eq!(
            s.period,
            Some(Period {
                start_ms: 1_780_000_000_000,
                end_ms: 1_782_592_000_000
            })
        );
        let item = s.item.unwrap();
        assert_eq!(
            (item.quantity, item.sku.as_deref()),
            (7, Some("enterprise"))
        );

        // Stripe (2025+): price with expanded product, periods on the item.
        let real: Subscription = serde_json::from_value(json!({
            "id": "sub_2", "customer": {"id": "cus_2", "object": "customer"}, "status": "trialing",
            "items": {"data": [{"id": "si_2", "quantity": 3, "current_period_start": 10, "current_period_end": 20,
                "price": {"id": "price_1", "metadata": {}, "product": {"id": "prod_2", "metadata": {"sku": "professional"}}}}]}
        }))
        .unwrap();
        let s = SubscriptionState::from_subscription(&real).unwrap();
        assert_eq!(s.customer_id, "cus_2");
        assert_eq!(s.standing, Standing::Licensed { trial: true });
        let item = s.item.unwrap();
        assert_eq!(item.sku, None);
        assert_eq!(item.product_sku.as_deref(), Some("professional"));
        assert_eq!(item.product_id.as_deref(), Some("prod_2"));
    }

    #[test]
    fn statuses_map_to_standing_and_licensed_needs_a_period() {
        let mk = |status: &str, period: bool| {
            let mut v = json!({"id": "sub_1", "customer": "cus_1", "status": status,
                "items": {"data": [{"id": "si_1", "quantity": 1, "plan": {"id": "p", "metadata": {"sku": "professional"}}}]}});
            if period {
                v["current_period_start"] = json!(1);
                v["current_period_end"] = json!(2);
            }
            SubscriptionState::from_subscription(&serde_json::from_value(v).unwrap())
        };
        assert_eq!(mk("canceled", false).unwrap().standing, Standing::Ended);
        assert_eq!(
            mk("incomplete_expired", true).unwrap().standing,
            Standing::Ended
        );
        assert_eq!(mk("past_due", true).unwrap().standing, Standing::Pending);
        assert_eq!(mk("incomplete", true).unwrap().standing, Standing::Pending);
        assert!(matches!(mk("active", false), Err(Error::Invalid(_))));
    }

    #[tokio::test]
    async fn http_adapter_classifies_stripe_answers() {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/subscriptions/sub_ok"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "sub_ok", "object": "subscription", "customer": "cus_1", "status": "active",
                "items": {"object": "list", "data": [{"id": "si_1", "quantity": 2, "current_period_start": 1, "current_period_end": 2,
                    "price": {"id": "price_1", "product": "prod_1", "metadata": {"sku": "advanced"}}}]}})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/subscriptions/sub_gone"))
            .respond_with(ResponseTemplate::new(404).set_body_json(
                json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such subscription"}}),
            ))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/customers/cus_busy"))
            .respond_with(ResponseTemplate::new(503))
            .mount(&server)
            .await;
        let client = StripeClient::new(
            server.uri(),
            crate::config::Secret::new("sk_test_x".into()),
            std::time::Duration::from_secs(2),
        )
        .unwrap()
        .with_retry(crate::retry::RetryPolicy::immediate(2));
        let api = StripeApi::new(client);
        let sub = api.subscription("sub_ok").await.unwrap();
        let state = SubscriptionState::from_subscription(&sub).unwrap();
        assert_eq!(state.item.unwrap().sku.as_deref(), Some("advanced"));
        let e = api.subscription("sub_gone").await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)) && !e.is_retryable());
        assert!(api.customer("cus_busy").await.unwrap_err().is_retryable());
        // Ids are checked before they go into a URL.
        assert!(matches!(
            api.subscription("../customers/x").await,
            Err(Error::Invalid(_))
        ));
        assert_eq!(api.calls(), 1 + 1 + 2);
    }

    #[tokio::test]
    async fn memory_stripe_not_found_is_permanent_and_outage_retryable() {
        let s = MemoryStripe::new();
        let e = s.subscription("sub_missing").await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)) && !e.is_retryable());
        s.set_unavailable(true);
        assert!(s.customer("cus_1").await.unwrap_err().is_retryable());
        assert_eq!(s.calls(), 2);
    }
}
