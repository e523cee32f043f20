//! The Stripe HTTP client: injected base URL (localstripe locally), secret key, timeouts,
//! retries on 429/5xx/transport errors with backoff, and an `Idempotency-Key` on every POST.
//! It implements the capability traits of [`super`] ([`StripeReads`], [`StripeInvoices`]).

use super::objects::{
    Card, Charge, CheckoutSession, Customer, Invoice, InvoiceItem, InvoiceLine, InvoicePreview,
    List, NewCheckoutSession, NewCoupon, NewInvoice, NewInvoiceItem, Product, SeatChange,
    Subscription,
};
use super::{StripeCollections, StripeConfig, StripeInvoices, StripeReads, StripeSelfService};
use crate::config::Secret;
use crate::error::{Error, Result};
use crate::retry::{Attempt, RetryPolicy};
use async_trait::async_trait;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Stripe's longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A Stripe API client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StripeClient {
    api: crate::http::ApiClient,
}

/// Stripe's error body: `{"error": {"type", "code", "message", "param"}}`.
#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, serde::Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl StripeClient {
    /// `base_url` without trailing slash, e.g. `https://api.stripe.com`.
    pub fn new(
        base_url: impl Into<String>,
        api_key: Secret<String>,
        timeout: Duration,
    ) -> Result<Self> {
        Ok(Self {
            api: crate::http::ApiClient::new(base_url, api_key, timeout, RetryPolicy::default())?,
        })
    }

    /// The one production constructor: the configured base URL and timeout, the key read from
    /// the Secrets Manager secret `config.secret_id` (JSON `{"api_key": "sk_..."}`).
    pub async fn from_secret(
        config: &StripeConfig,
        secrets: &aws_sdk_secretsmanager::Client,
    ) -> Result<Self> {
        #[derive(Deserialize)]
        struct StripeKey {
            api_key: String,
        }
        let key = crate::secrets::load_json::<StripeKey>(secrets, &config.secret_id).await?;
        Self::new(
            config.api_base.clone(),
            Secret::new(key.expose().api_key.clone()),
            config.timeout,
        )
    }

    /// Overrides the retry policy (tests use [`RetryPolicy::immediate`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.api = self.api.with_retry(policy);
        self
    }

    /// HTTP requests sent so far, retries included (benchmarks count calls per invoice).
    pub fn calls(&self) -> u64 {
        self.api.calls()
    }

    /// `GET /v1/{path}` with query parameters.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        let url = self
            .api
            .url(&format!("v1/{}", path.trim_start_matches('/')));
        self.send(|| self.api.request(reqwest::Method::GET, &url).query(query))
            .await
    }

    /// `POST /v1/{path}` with a form body and an `Idempotency-Key` (required: every POST we
    /// make is a side effect that a retry must not repeat).
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<T> {
        if idempotency_key.is_empty() || idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(Error::Invalid(format!(
                "Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY} characters"
            )));
        }
        let url = self
            .api
            .url(&format!("v1/{}", path.trim_start_matches('/')));
        self.send(|| {
            self.api
                .request(reqwest::Method::POST, &url)
                .header("Idempotency-Key", idempotency_key)
                .form(form)
        })
        .await
    }

    /// `DELETE /v1/{path}`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self
            .api
            .url(&format!("v1/{}", path.trim_start_matches('/')));
        self.send(|| self.api.request(reqwest::Method::DELETE, &url))
            .await
    }

    async fn send<T, B>(&self, build: B) -> Result<T>
    where
        T: DeserializeOwned,
        B: Fn() -> reqwest::RequestBuilder,
    {
        self.api
            .send(
                || build().header("Stripe-Version", "2024-06-20"),
                |retryable, message| Error::dependency("stripe", retryable, message),
                |reply| {
                    let status = reply.status;
                    if status.is_success() {
                        return match reply.json::<T>() {
                            Ok(v) => Attempt::Done(v),
                            Err(e) => Attempt::Fail(Error::dependency(
                                "stripe",
                                false,
                                format!(
                                    "unexpected response shape: {}",
                                    crate::error::json_error(&e)
                                ),
                            )),
                        };
                    }
                    let message = reply
                        .json::<ErrorBody>()
                        .ok()
                        .map(|b| {
                            let d = b.error;
                            format!(
                                "{} {}: {}",
                                d.kind.as_deref().unwrap_or("error"),
                                d.code.as_deref().unwrap_or(""),
                                d.message.as_deref().unwrap_or("")
                            )
                        })
                        .unwrap_or_else(|| format!("HTTP {status}"));
                    if reply.retryable() {
                        Attempt::Retry(
                            Error::dependency("stripe", true, format!("HTTP {status}: {message}")),
                            reply.retry_after,
                        )
                    } else if status == reqwest::StatusCode::NOT_FOUND {
                        Attempt::Fail(Error::NotFound(format!("stripe: {message}")))
                    } else {
                        Attempt::Fail(Error::dependency(
                            "stripe",
                            false,
                            format!("HTTP {status}: {message}"),
                        ))
                    }
                },
            )
            .await
    }

    /// Every object of a list endpoint for one customer, following `has_more` up to
    /// [`MAX_PAGES`] pages of 100.
    pub async fn list_all<T: DeserializeOwned + HasId>(
        &self,
        path: &str,
        customer: &str,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut q: Vec<(&str, &str)> = vec![("customer", customer), ("limit", "100")];
            if let Some(a) = after.as_deref() {
                q.push(("starting_after", a));
            }
            let page: List<T> = self.get(path, &q).await?;
            let next = match (page.has_more, page.data.last()) {
                (true, Some(last)) => Some(last.id().to_owned()),
                _ => None,
            };
            out.extend(page.data);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
        Ok(out)
    }
}

/// Most list pages a look-up reads (100 objects each).
pub const MAX_PAGES: usize = 10;

use super::objects::HasId;

/// Ids go into URL paths: only Stripe's own shape (`{prefix}[A-Za-z0-9_]+`) is accepted.
pub fn checked_id(kind: &str, prefix: &str, id: &str) -> Result<()> {
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
impl StripeReads for StripeClient {
    async fn subscription(&self, id: &str) -> Result<Subscription> {
        checked_id("subscription", "sub_", id)?;
        // No `expand`: localstripe cannot expand prices (it has plans); the product is
        // fetched only when the price carries no `sku`.
        self.get(&format!("subscriptions/{id}"), &[]).await
    }

    async fn customer(&self, id: &str) -> Result<Customer> {
        checked_id("customer", "cus_", id)?;
        self.get(&format!("customers/{id}"), &[]).await
    }

    async fn product(&self, id: &str) -> Result<Product> {
        checked_id("product", "prod_", id)?;
        self.get(&format!("products/{id}"), &[]).await
    }

    async fn charge(&self, id: &str) -> Result<Charge> {
        let prefix = if id.starts_with("py_") { "py_" } else { "ch_" };
        checked_id("charge", prefix, id)?;
        self.get(&format!("charges/{id}"), &[]).await
    }
    async fn invoice_subscription(&self, invoice: &str) -> Result<Option<String>> {
        Ok(StripeInvoices::invoice(self, invoice).await?.subscription)
    }
}

#[async_trait]
impl StripeInvoices for StripeClient {
    async fn invoice(&self, id: &str) -> Result<Invoice> {
        checked_id("invoice", "in_", id)?;
        self.get(&format!("invoices/{id}"), &[]).await
    }
    async fn create_invoice_item(
        &self,
        item: &NewInvoiceItem,
        idempotency_key: &str,
    ) -> Result<InvoiceItem> {
        let mut form = vec![
            ("customer".to_owned(), item.customer.clone()),
            ("amount".to_owned(), item.amount.to_string()),
            ("currency".to_owned(), item.currency.clone()),
            ("description".to_owned(), item.description.clone()),
        ];
        if let Some(invoice) = &item.invoice {
            checked_id("invoice", "in_", invoice)?;
            form.push(("invoice".to_owned(), invoice.clone()));
        }
        if let Some(b) = &item.tax_behavior {
            form.push(("tax_behavior".to_owned(), b.clone()));
        }
        form.extend(metadata_form(&item.metadata));
        self.post("invoiceitems", &form, idempotency_key).await
    }

    async fn invoice_items(&self, customer: &str) -> Result<Vec<InvoiceItem>> {
        checked_id("customer", "cus_", customer)?;
        self.list_all("invoiceitems", customer).await
    }

    async fn create_invoice(&self, invoice: &NewInvoice, idempotency_key: &str) -> Result<Invoice> {
        let mut form = vec![
            ("customer".to_owned(), invoice.customer.clone()),
            ("description".to_owned(), invoice.description.clone()),
            ("currency".to_owned(), invoice.currency.clone()),
            (
                "pending_invoice_items_behavior".to_owned(),
                "exclude".to_owned(),
            ),
            ("auto_advance".to_owned(), "false".to_owned()),
        ];
        if invoice.automatic_tax {
            form.push(("automatic_tax[enabled]".to_owned(), "true".to_owned()));
        }
        for (n, coupon) in invoice.coupons.iter().enumerate() {
            form.push((format!("discounts[{n}][coupon]"), coupon.clone()));
        }
        form.extend(metadata_form(&invoice.metadata));
        self.post("invoices", &form, idempotency_key).await
    }

    async fn invoices(&self, customer: &str) -> Result<Vec<Invoice>> {
        checked_id("customer", "cus_", customer)?;
        self.list_all("invoices", customer).await
    }

    async fn finalize_invoice(&self, id: &str, idempotency_key: &str) -> Result<Invoice> {
        checked_id("invoice", "in_", id)?;
        // Created with `auto_advance=false` (never finalized half-filled); once final, Stripe
        // collects it on its own.
        let mut form = form_pairs(INVOICE_EXPAND.map(|e| ("expand[]", e.to_owned())));
        form.push(("auto_advance".to_owned(), "true".to_owned()));
        let inv = self
            .post(&format!("invoices/{id}/finalize"), &form, idempotency_key)
            .await?;
        self.with_every_line(inv).await
    }

    async fn invoice_document(&self, id: &str) -> Result<Invoice> {
        checked_id("invoice", "in_", id)?;
        let q = INVOICE_EXPAND.map(|e| ("expand[]", e));
        let inv = self.get(&format!("invoices/{id}"), &q).await?;
        self.with_every_line(inv).await
    }

    async fn coupon_exists(&self, id: &str) -> Result<bool> {
        checked_id("coupon", "blapi_", id)?;
        match self
            .get::<serde_json::Value>(&format!("coupons/{id}"), &[])
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn create_coupon(&self, coupon: &NewCoupon, idempotency_key: &str) -> Result<()> {
        checked_id("coupon", "blapi_", &coupon.id)?;
        let mut form = form_pairs([
            ("id", coupon.id.clone()),
            ("amount_off", coupon.amount_off.to_string()),
            ("currency", coupon.currency.clone()),
            ("duration", "once".to_owned()),
            ("max_redemptions", "1".to_owned()),
            ("name", coupon.name.clone()),
        ]);
        form.extend(metadata_form(&coupon.metadata));
        self.post::<serde_json::Value>("coupons", &form, idempotency_key)
            .await
            .map(|_| ())
    }
}

/// What an invoice's document needs expanded: the rate (name, jurisdiction, percentage) of
/// each tax amount, per line and per invoice (4 levels, Stripe's limit).
const INVOICE_EXPAND: [&str; 2] = [
    "lines.data.tax_amounts.tax_rate",
    "total_tax_amounts.tax_rate",
];

impl StripeClient {
    /// Completes an invoice's first page of lines with the others (`has_more`), up to
    /// [`MAX_PAGES`] pages of 100.
    async fn with_every_line(&self, mut inv: Invoice) -> Result<Invoice> {
        let Some(lines) = inv.document.lines.as_mut() else {
            return Ok(inv);
        };
        let path = format!("invoices/{}/lines", inv.id);
        for _ in 0..MAX_PAGES {
            let Some(last) = lines.data.last().and_then(|l| l.id.clone()) else {
                break;
            };
            if !lines.has_more {
                break;
            }
            let q = [
                ("limit", "100"),
                ("starting_after", last.as_str()),
                ("expand[]", "data.tax_amounts.tax_rate"),
            ];
            let page: List<InvoiceLine> = self.get(&path, &q).await?;
            lines.has_more = page.has_more;
            lines.data.extend(page.data);
        }
        Ok(inv)
    }
}

#[async_trait]
impl StripeSelfService for StripeClient {
    async fn create_checkout_session(
        &self,
        session: &NewCheckoutSession,
        idempotency_key: &str,
    ) -> Result<CheckoutSession> {
        checked_id("customer", "cus_", &session.customer)?;
        let mut form = form_pairs([
            ("mode", "subscription".to_owned()),
            ("customer", session.customer.clone()),
            ("line_items[0][price]", session.price.clone()),
            ("line_items[0][quantity]", session.quantity.to_string()),
            ("success_url", session.success_url.clone()),
            ("cancel_url", session.cancel_url.clone()),
        ]);
        if session.automatic_tax {
            // Tax needs the buyer's address: collected in Checkout and saved on the customer.
            form.extend(form_pairs([
                ("automatic_tax[enabled]", "true".to_owned()),
                ("customer_update[address]", "auto".to_owned()),
                ("customer_update[name]", "auto".to_owned()),
                ("tax_id_collection[enabled]", "true".to_owned()),
            ]));
        }
        for (k, v) in &session.metadata {
            form.push((format!("metadata[{k}]"), v.clone()));
            form.push((format!("subscription_data[metadata][{k}]"), v.clone()));
        }
        self.post("checkout/sessions", &form, idempotency_key).await
    }

    async fn preview_seat_change(&self, change: &SeatChange) -> Result<InvoicePreview> {
        checked_id("customer", "cus_", &change.customer)?;
        checked_id("subscription", "sub_", &change.subscription)?;
        let quantity = change.quantity.to_string();
        let date = change.proration_date.to_string();
        // `plan` names the unchanged price (localstripe requires it; Stripe takes it as the
        // item's price).
        self.get(
            "invoices/upcoming",
            &[
                ("customer", change.customer.as_str()),
                ("subscription", change.subscription.as_str()),
                ("subscription_items[0][id]", change.item.as_str()),
                ("subscription_items[0][plan]", change.price.as_str()),
                ("subscription_items[0][quantity]", quantity.as_str()),
                ("subscription_proration_date", date.as_str()),
            ],
        )
        .await
    }

    async fn apply_seat_change(
        &self,
        change: &SeatChange,
        idempotency_key: &str,
    ) -> Result<Subscription> {
        checked_id("subscription", "sub_", &change.subscription)?;
        let form = form_pairs([
            ("items[0][id]", change.item.clone()),
            ("items[0][quantity]", change.quantity.to_string()),
            ("proration_date", change.proration_date.to_string()),
        ]);
        self.post(
            &format!("subscriptions/{}", change.subscription),
            &form,
            idempotency_key,
        )
        .await
    }

    async fn default_card(&self, customer: &str) -> Result<Option<Card>> {
        checked_id("customer", "cus_", customer)?;
        let c: serde_json::Value = self.get(&format!("customers/{customer}"), &[]).await?;
        let id_of = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("id").and_then(|i| i.as_str()).map(str::to_owned),
            _ => None,
        };
        if let Some(pm) = id_of(&c["invoice_settings"]["default_payment_method"]) {
            checked_id("payment method", "pm_", &pm)?;
            let pm: serde_json::Value = self.get(&format!("payment_methods/{pm}"), &[]).await?;
            return Ok(serde_json::from_value::<Card>(pm["card"].clone()).ok());
        }
        if let Some(src) = id_of(&c["default_source"]) {
            let prefix = if src.starts_with("card_") {
                "card_"
            } else {
                "src_"
            };
            checked_id("source", prefix, &src)?;
            let s: serde_json::Value = self
                .get(&format!("customers/{customer}/sources/{src}"), &[])
                .await?;
            // A card source is the card itself; a `source` object carries it under `card`.
            let card = if s["object"] == "card" {
                s
            } else {
                s["card"].clone()
            };
            return Ok(serde_json::from_value::<Card>(card)
                .ok()
                .filter(|c| !c.last4.is_empty()));
        }
        Ok(None)
    }
}

#[async_trait]
impl StripeCollections for StripeClient {
    async fn cancel_subscription(&self, id: &str) -> Result<Subscription> {
        checked_id("subscription", "sub_", id)?;
        match self
            .delete::<Subscription>(&format!("subscriptions/{id}"))
            .await
        {
            Ok(s) => Ok(s),
            // Already cancelled (or gone from the list of cancellable ones): say what it is.
            Err(e @ (Error::Invalid(_) | Error::NotFound(_))) => {
                let current = self.subscription(id).await.map_err(|_| e)?;
                if matches!(current.status.as_str(), "canceled" | "incomplete_expired") {
                    Ok(current)
                } else {
                    Err(Error::Invalid(format!(
                        "subscription {id} ({}) could not be cancelled",
                        current.status
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }
}

fn metadata_form(
    metadata: &std::collections::BTreeMap<String, String>,
) -> impl Iterator<Item = (String, String)> + '_ {
    metadata
        .iter()
        .map(|(k, v)| (format!("metadata[{k}]"), v.clone()))
}

/// Flattens nested parameters into Stripe's form encoding: `("metadata[sku]", "pro")`.
pub fn form_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Vec<(String, String)> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn client(base: &str) -> StripeClient {
        StripeClient::new(
            base,
            Secret::new("sk_test_x".into()),
            Duration::from_secs(2),
        )
        .unwrap()
        .with_retry(RetryPolicy::immediate(3))
    }

    #[tokio::test]
    async fn post_carries_idempotency_key_and_retries_5xx() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/invoiceitems"))
            .and(header("Idempotency-Key", "inv-c1-2026-10-item-0"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/invoiceitems"))
            .and(header("Idempotency-Key", "inv-c1-2026-10-item-0"))
            .and(header("authorization", "Bearer sk_test_x"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "ii_1"})),
            )
            .mount(&server)
            .await;
        let c = client(&server.uri());
        let v: serde_json::Value = c
            .post(
                "invoiceitems",
                &form_pairs([("amount", "100".to_owned())]),
                "inv-c1-2026-10-item-0",
            )
            .await
            .unwrap();
        assert_eq!(v["id"], "ii_1");
        assert_eq!(c.calls(), 2);
    }

    #[tokio::test]
    async fn not_found_and_client_errors_are_not_retried() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/subscriptions/sub_missing"))
            .respond_with(ResponseTemplate::new(404).set_body_json(
                serde_json::json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such subscription"}}),
            ))
            .mount(&server)
            .await;
        let c = client(&server.uri());
        let e = c
            .get::<serde_json::Value>("subscriptions/sub_missing", &[])
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e:?}");
        assert!(!e.is_retryable());
        assert_eq!(c.calls(), 1);
    }

    #[tokio::test]
    async fn throttling_exhausts_retries_as_retryable() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
            .mount(&server)
            .await;
        let c = client(&server.uri());
        let e = c
            .get::<serde_json::Value>("customers/cus_1", &[])
            .await
            .unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(c.calls(), 3);
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        let c = client("http://127.0.0.1:9");
        let e = c
            .get::<serde_json::Value>("customers/cus_1", &[])
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused_not_buffered_and_not_retried() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![
                b' ';
                crate::http::MAX_RESPONSE_BYTES
                    + 1
            ]))
            .mount(&server)
            .await;
        let c = client(&server.uri());
        let e = c
            .get::<serde_json::Value>("customers/cus_1", &[])
            .await
            .unwrap_err();
        assert!(e.chain().contains("larger than"), "{}", e.chain());
        assert!(!e.is_retryable());
        assert_eq!(c.calls(), 1);
    }

    #[tokio::test]
    async fn bad_idempotency_key_is_refused_before_sending() {
        let c = client("http://127.0.0.1:9");
        let long = "k".repeat(256);
        assert!(matches!(
            c.post::<serde_json::Value>("invoices", &[], &long).await,
            Err(Error::Invalid(_))
        ));
        assert_eq!(c.calls(), 0);
    }

    /// The form a request carried, decoded.
    fn form_of(req: &wiremock::Request) -> std::collections::BTreeMap<String, String> {
        url_pairs(&String::from_utf8_lossy(&req.body))
    }

    fn url_pairs(q: &str) -> std::collections::BTreeMap<String, String> {
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    #[tokio::test]
    async fn a_checkout_session_asks_for_tax_only_when_enabled_and_carries_the_metadata() {
        use super::super::{NewCheckoutSession, StripeSelfService};
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/checkout/sessions"))
            .and(header("Idempotency-Key", "portal-checkout-abc"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
                {"id": "cs_1", "url": "https://checkout.stripe.com/c/pay/cs_1", "expires_at": 5}
            )))
            .mount(&server)
            .await;
        let c = client(&server.uri());
        let mut s = NewCheckoutSession {
            customer: "cus_A".into(),
            price: "price_pro".into(),
            quantity: 7,
            success_url: "https://portal.example/billing?checkout=success".into(),
            cancel_url: "https://portal.example/billing?checkout=cancelled".into(),
            automatic_tax: false,
            metadata: [("sku".to_owned(), "professional".to_owned())].into(),
        };
        let out = c
            .create_checkout_session(&s, "portal-checkout-abc")
            .await
            .unwrap();
        assert_eq!(
            out.url.as_deref(),
            Some("https://checkout.stripe.com/c/pay/cs_1")
        );
        s.automatic_tax = true;
        c.create_checkout_session(&s, "portal-checkout-abc")
            .await
            .unwrap();
        let reqs = server.received_requests().await.unwrap();
        let (plain, taxed) = (form_of(&reqs[0]), form_of(&reqs[1]));
        assert_eq!(plain["mode"], "subscription");
        assert_eq!(plain["customer"], "cus_A");
        assert_eq!(plain["line_items[0][price]"], "price_pro");
        assert_eq!(plain["line_items[0][quantity]"], "7");
        assert_eq!(plain["metadata[sku]"], "professional");
        assert_eq!(plain["subscription_data[metadata][sku]"], "professional");
        assert!(!plain.contains_key("automatic_tax[enabled]"));
        assert_eq!(taxed["automatic_tax[enabled]"], "true");
        assert_eq!(taxed["customer_update[address]"], "auto");
        // A customer id that is not Stripe's shape never reaches Stripe.
        s.customer = "cus_A/../x".into();
        assert!(matches!(
            c.create_checkout_session(&s, "k").await,
            Err(Error::Invalid(_))
        ));
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_seat_change_is_previewed_and_applied_at_the_same_proration_date() {
        use super::super::{SeatChange, StripeSelfService};
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/invoices/upcoming"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "currency": "usd", "total": 4_500, "amount_due": 4_500,
                "lines": {"object": "list", "has_more": false, "data": [
                    {"amount": 12_000, "proration": false},
                    {"amount": -7_500, "proration": true},
                    {"amount": 1_000, "proration": true}]}
            })))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/subscriptions/sub_1"))
            .and(header("Idempotency-Key", "portal-seats-k"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": "sub_1", "customer": "cus_A", "status": "active",
                "items": {"object": "list", "has_more": false, "data": [{"id": "si_1", "quantity": 8}]}
            })))
            .mount(&server)
            .await;
        let c = client(&server.uri());
        let change = SeatChange {
            customer: "cus_A".into(),
            subscription: "sub_1".into(),
            item: "si_1".into(),
            price: "price_pro".into(),
            quantity: 8,
            proration_date: 1_796_000_000,
        };
        let preview = c.preview_seat_change(&change).await.unwrap();
        assert_eq!(preview.proration(), -6_500);
        let sub = c
            .apply_seat_change(&change, "portal-seats-k")
            .await
            .unwrap();
        assert_eq!(sub.items.data[0].quantity, Some(8));
        let reqs = server.received_requests().await.unwrap();
        let q = url_pairs(reqs[0].url.query().unwrap_or_default());
        assert_eq!(q["subscription_items[0][id]"], "si_1");
        assert_eq!(q["subscription_items[0][quantity]"], "8");
        assert_eq!(q["subscription_proration_date"], "1796000000");
        let f = form_of(&reqs[1]);
        assert_eq!(f["items[0][id]"], "si_1");
        assert_eq!(f["items[0][quantity]"], "8");
        assert_eq!(
            f["proration_date"], "1796000000",
            "the change is prorated as previewed"
        );
    }

    #[tokio::test]
    async fn the_default_card_is_the_payment_method_else_the_legacy_source() {
        use super::super::StripeSelfService;
        let server = MockServer::start().await;
        let card = serde_json::json!({"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030});
        for (customer, body) in [
            (
                "cus_pm",
                serde_json::json!({"id": "cus_pm", "invoice_settings": {"default_payment_method": "pm_1"}}),
            ),
            (
                "cus_src",
                serde_json::json!({"id": "cus_src", "default_source": "card_1", "invoice_settings": {"default_payment_method": null}}),
            ),
            ("cus_none", serde_json::json!({"id": "cus_none"})),
        ] {
            Mock::given(method("GET"))
                .and(path(format!("/v1/customers/{customer}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
                .mount(&server)
                .await;
        }
        Mock::given(method("GET"))
            .and(path("/v1/payment_methods/pm_1"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"id": "pm_1", "card": card})),
            )
            .mount(&server)
            .await;
        let mut source = card.clone();
        source["object"] = "card".into();
        source["last4"] = "1881".into();
        Mock::given(method("GET"))
            .and(path("/v1/customers/cus_src/sources/card_1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(source))
            .mount(&server)
            .await;
        let c = client(&server.uri());
        assert_eq!(
            c.default_card("cus_pm").await.unwrap().unwrap().last4,
            "4242"
        );
        assert_eq!(
            c.default_card("cus_src").await.unwrap().unwrap().last4,
            "1881"
        );
        assert_eq!(c.default_card("cus_none").await.unwrap(), None);
    }
}
