//! The in-memory Stripe every domain's unit tests share. Objects are kept as JSON and read
//! through the same typed parsing as real answers. It behaves as Stripe does where our rules
//! depend on it: an invoice is created empty (pending items excluded) and an item created for
//! it becomes one of its lines, only while it is a draft; an invoice that is not a draft cannot
//! be finalized, an unknown id is `NotFound`. Like
//! localstripe it ignores idempotency keys (so the domains' own look-ups are what prevents
//! duplicates). Failures can be injected: the whole API down ([`MemoryStripe::set_unavailable`])
//! or one operation that does its work and then loses the answer ([`MemoryStripe::crash_after`]).

use super::objects::{
    Card, Charge, CheckoutSession, Customer, Invoice, InvoiceItem, InvoicePreview,
    NewCheckoutSession, NewCoupon, NewInvoice, NewInvoiceItem, Product, SeatChange, Subscription,
};
use super::{StripeCollections, StripeInvoices, StripeReads, StripeSelfService};
use crate::error::{Error, Result};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// A write operation, for failure injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeOp {
    CreateItem,
    CreateInvoice,
    Finalize,
}

#[derive(Default)]
struct State {
    /// Readable objects by (kind, id).
    objects: HashMap<(&'static str, String), Value>,
    /// Invoice items and invoices in creation order.
    items: Vec<Value>,
    invoices: Vec<Value>,
    /// Checkout Sessions created, with the request that made each.
    sessions: Vec<(NewCheckoutSession, String)>,
    /// Coupons by id (amount off).
    coupons: HashMap<String, i64>,
    crash_after: Option<StripeOp>,
    unavailable: bool,
    calls: u64,
}

/// See the module docs.
#[derive(Default)]
pub struct MemoryStripe {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryStripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStripe").finish_non_exhaustive()
    }
}

impl MemoryStripe {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, kind: &'static str, object: Value) {
        let id = object["id"].as_str().unwrap_or_default().to_owned();
        self.lock().objects.insert((kind, id), object);
    }

    pub fn put_subscription(&self, sub: Value) {
        self.put("subscription", sub);
    }
    pub fn put_customer(&self, customer: Value) {
        self.put("customer", customer);
    }
    pub fn put_product(&self, product: Value) {
        self.put("product", product);
    }
    pub fn put_charge(&self, charge: Value) {
        self.put("charge", charge);
    }
    /// An invoice made elsewhere (a subscription's), readable by id.
    pub fn put_invoice(&self, invoice: Value) {
        let mut s = self.lock();
        s.invoices.retain(|i| i["id"] != invoice["id"]);
        s.invoices.push(invoice);
    }
    /// A payment method (`{"id": "pm_...", "card": {...}}`); the customer names it in
    /// `invoice_settings.default_payment_method`.
    pub fn put_payment_method(&self, pm: Value) {
        self.put("payment_method", pm);
    }

    /// The Checkout Sessions created so far (request, idempotency key).
    pub fn checkout_sessions(&self) -> Vec<(NewCheckoutSession, String)> {
        self.lock().sessions.clone()
    }

    /// A subscription as it is now (after seat changes).
    pub fn subscription_json(&self, id: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&("subscription", id.to_owned()))
            .cloned()
    }

    /// Makes every call fail with a retryable error (Stripe 5xx after retries) or succeed.
    pub fn set_unavailable(&self, down: bool) {
        self.lock().unavailable = down;
    }

    /// The next `op` performs its side effect, then fails (as if the response was lost).
    pub fn crash_after(&self, op: StripeOp) {
        self.lock().crash_after = Some(op);
    }

    /// Calls so far, failed ones included.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Invoices of a customer: (id, total, finalized, item count).
    pub fn invoices(&self, customer: &str) -> Vec<(String, i64, bool, usize)> {
        let s = self.lock();
        s.invoices
            .iter()
            .filter(|i| i["customer"] == customer)
            .map(|i| {
                let id = i["id"].as_str().unwrap_or_default().to_owned();
                let n = s.items.iter().filter(|it| it["invoice"] == id).count();
                (
                    id,
                    i["total"].as_i64().unwrap_or(0),
                    i["status"] != "draft",
                    n,
                )
            })
            .collect()
    }

    /// Invoice items created in all (attached or pending).
    pub fn item_count(&self) -> usize {
        self.lock().items.len()
    }

    /// Counts the call and fails it when the API is down.
    fn begin(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        let mut s = self.lock();
        s.calls += 1;
        if s.unavailable {
            return Err(Error::dependency("stripe", true, "HTTP 503 (simulated)"));
        }
        Ok(s)
    }

    fn read<T: serde::de::DeserializeOwned>(&self, kind: &'static str, id: &str) -> Result<T> {
        let s = self.begin()?;
        let v = s
            .objects
            .get(&(kind, id.to_owned()))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("stripe: No such {kind}: '{id}'")))?;
        parse(v)
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| Error::dependency("stripe", false, format!("unexpected response shape: {e}")))
}

fn crash(s: &mut State, op: StripeOp) -> Result<()> {
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

#[async_trait]
impl StripeReads for MemoryStripe {
    async fn subscription(&self, id: &str) -> Result<Subscription> {
        self.read("subscription", id)
    }
    async fn customer(&self, id: &str) -> Result<Customer> {
        self.read("customer", id)
    }
    async fn product(&self, id: &str) -> Result<Product> {
        self.read("product", id)
    }
    async fn charge(&self, id: &str) -> Result<Charge> {
        self.read("charge", id)
    }
    async fn invoice_subscription(&self, invoice: &str) -> Result<Option<String>> {
        Ok(StripeInvoices::invoice(self, invoice).await?.subscription)
    }
}

#[async_trait]
impl StripeInvoices for MemoryStripe {
    async fn invoice(&self, id: &str) -> Result<Invoice> {
        let s = self.begin()?;
        let v = s
            .invoices
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("stripe: No such invoice: '{id}'")))?;
        parse(v)
    }

    async fn create_invoice_item(&self, item: &NewInvoiceItem, _idem: &str) -> Result<InvoiceItem> {
        let mut s = self.begin()?;
        let id = format!("ii_{}", s.items.len() + 1);
        let v = json!({
            "id": id,
            "object": "invoiceitem",
            "customer": item.customer,
            "amount": item.amount,
            "currency": item.currency,
            "description": item.description,
            "metadata": item.metadata,
            "invoice": item.invoice,
        });
        if let Some(invoice) = &item.invoice {
            let inv = s
                .invoices
                .iter_mut()
                .find(|i| i["id"] == invoice.as_str())
                .ok_or_else(|| Error::NotFound(format!("stripe: No such invoice: '{invoice}'")))?;
            if inv["status"] != "draft" {
                return Err(Error::dependency(
                    "stripe",
                    false,
                    "HTTP 400: invalid_request_error: the invoice is not a draft",
                ));
            }
            let total = inv["total"].as_i64().unwrap_or(0) + item.amount;
            inv["total"] = json!(total.max(0));
            if let Some(lines) = inv["lines"]["data"].as_array_mut() {
                lines.push(json!({
                    "id": format!("il_{id}"),
                    "amount": item.amount,
                    "description": item.description,
                    "invoice_item": id,
                    "metadata": item.metadata,
                }));
            }
        }
        s.items.push(v.clone());
        crash(&mut s, StripeOp::CreateItem)?;
        parse(v)
    }

    async fn invoice_items(&self, customer: &str) -> Result<Vec<InvoiceItem>> {
        let s = self.begin()?;
        s.items
            .iter()
            .filter(|i| i["customer"] == customer)
            .cloned()
            .map(parse)
            .collect()
    }

    async fn create_invoice(&self, invoice: &NewInvoice, _idem: &str) -> Result<Invoice> {
        let mut s = self.begin()?;
        let id = format!("in_{}", s.invoices.len() + 1);
        let total: i64 = invoice
            .coupons
            .iter()
            .map(|c| -s.coupons.get(c).copied().unwrap_or(0))
            .sum();
        let v = json!({
            "id": id,
            "object": "invoice",
            "customer": invoice.customer,
            "currency": invoice.currency,
            "status": "draft",
            "total": total.max(0),
            "description": invoice.description,
            "metadata": invoice.metadata,
            "automatic_tax": {"enabled": invoice.automatic_tax, "status": null},
            "lines": {"object": "list", "data": [], "has_more": false},
        });
        s.invoices.push(v.clone());
        crash(&mut s, StripeOp::CreateInvoice)?;
        parse(v)
    }

    async fn invoices(&self, customer: &str) -> Result<Vec<Invoice>> {
        let s = self.begin()?;
        s.invoices
            .iter()
            .filter(|i| i["customer"] == customer)
            .cloned()
            .map(parse)
            .collect()
    }

    async fn finalize_invoice(&self, id: &str, _idem: &str) -> Result<Invoice> {
        let mut s = self.begin()?;
        let inv = s
            .invoices
            .iter_mut()
            .find(|i| i["id"] == id)
            .ok_or_else(|| Error::NotFound(format!("stripe: No such invoice: '{id}'")))?;
        if inv["status"] != "draft" {
            return Err(Error::dependency(
                "stripe",
                false,
                "HTTP 400: invalid_request_error: this invoice is already finalized",
            ));
        }
        inv["status"] = json!("open");
        // Like Stripe: a number and the page where the customer pays, from finalization on.
        inv["number"] = json!(format!("MEM-{}", id.trim_start_matches("in_")));
        inv["hosted_invoice_url"] = json!(format!("https://invoice.stripe.test/i/{id}"));
        let v = inv.clone();
        crash(&mut s, StripeOp::Finalize)?;
        parse(v)
    }

    async fn invoice_document(&self, id: &str) -> Result<Invoice> {
        StripeInvoices::invoice(self, id).await
    }

    async fn coupon_exists(&self, id: &str) -> Result<bool> {
        Ok(self.begin()?.coupons.contains_key(id))
    }

    async fn create_coupon(&self, coupon: &NewCoupon, _idem: &str) -> Result<()> {
        let mut s = self.begin()?;
        if s.coupons.contains_key(&coupon.id) {
            return Err(Error::dependency(
                "stripe",
                false,
                "HTTP 400: invalid_request_error resource_already_exists: Coupon already exists.",
            ));
        }
        s.coupons.insert(coupon.id.clone(), coupon.amount_off);
        Ok(())
    }
}

/// The item of `change` in `sub`, and its quantity and unit amount.
fn item_of(sub: &Value, change: &SeatChange) -> Result<(usize, i64, i64)> {
    let items = sub["items"]["data"].as_array().cloned().unwrap_or_default();
    let (i, item) = items
        .iter()
        .enumerate()
        .find(|(_, it)| it["id"] == change.item.as_str())
        .ok_or_else(|| {
            Error::NotFound(format!(
                "stripe: No such subscription item: '{}'",
                change.item
            ))
        })?;
    let price = if item["price"].is_object() {
        &item["price"]
    } else {
        &item["plan"]
    };
    let unit = price["unit_amount"]
        .as_i64()
        .or_else(|| price["amount"].as_i64())
        .unwrap_or(0);
    Ok((i, item["quantity"].as_i64().unwrap_or(1), unit))
}

#[async_trait]
impl StripeSelfService for MemoryStripe {
    async fn create_checkout_session(
        &self,
        session: &NewCheckoutSession,
        idempotency_key: &str,
    ) -> Result<CheckoutSession> {
        let mut s = self.begin()?;
        // Stripe's idempotency: the same key answers the same session.
        let n = match s.sessions.iter().position(|(_, k)| k == idempotency_key) {
            Some(i) => i + 1,
            None => {
                s.sessions
                    .push((session.clone(), idempotency_key.to_owned()));
                s.sessions.len()
            }
        };
        parse(json!({
            "id": format!("cs_test_{n}"),
            "object": "checkout.session",
            "url": format!("https://checkout.stripe.test/c/pay/cs_test_{n}"),
            "customer": session.customer,
            "mode": "subscription",
            "metadata": session.metadata,
        }))
    }

    async fn preview_seat_change(&self, change: &SeatChange) -> Result<InvoicePreview> {
        let s = self.begin()?;
        let sub = s
            .objects
            .get(&("subscription", change.subscription.clone()))
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "stripe: No such subscription: '{}'",
                    change.subscription
                ))
            })?;
        let (_, old, unit) = item_of(&sub, change)?;
        let (start, end) = (
            sub["current_period_start"].as_i64().unwrap_or(0),
            sub["current_period_end"].as_i64().unwrap_or(0),
        );
        // The unused part of the period, at the new quantity less the old.
        let left = (end - change.proration_date).clamp(0, (end - start).max(0));
        let span = (end - start).max(1);
        let proration = (i64::from(change.quantity) - old) * unit * left / span;
        let next = i64::from(change.quantity) * unit;
        parse(json!({
            "currency": sub["currency"],
            "total": next + proration,
            "amount_due": next + proration,
            "lines": {"object": "list", "has_more": false, "data": [
                {"amount": proration, "proration": true, "description": "Seat change (prorated)"},
                {"amount": next, "proration": false, "description": "Next period"},
            ]},
        }))
    }

    async fn apply_seat_change(&self, change: &SeatChange, _key: &str) -> Result<Subscription> {
        let mut s = self.begin()?;
        let key = ("subscription", change.subscription.clone());
        let mut sub = s.objects.get(&key).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "stripe: No such subscription: '{}'",
                change.subscription
            ))
        })?;
        let (i, _, _) = item_of(&sub, change)?;
        sub["items"]["data"][i]["quantity"] = json!(change.quantity);
        s.objects.insert(key, sub.clone());
        parse(sub)
    }

    async fn default_card(&self, customer: &str) -> Result<Option<Card>> {
        let s = self.begin()?;
        let c = s
            .objects
            .get(&("customer", customer.to_owned()))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("stripe: No such customer: '{customer}'")))?;
        let Some(pm) = c["invoice_settings"]["default_payment_method"].as_str() else {
            return Ok(None);
        };
        Ok(s.objects
            .get(&("payment_method", pm.to_owned()))
            .and_then(|p| serde_json::from_value(p["card"].clone()).ok()))
    }
}

#[async_trait]
impl StripeCollections for MemoryStripe {
    async fn cancel_subscription(&self, id: &str) -> Result<Subscription> {
        let mut s = self.begin()?;
        let key = ("subscription", id.to_owned());
        let mut sub = s
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("stripe: No such subscription: '{id}'")))?;
        sub["status"] = json!("canceled");
        s.objects.insert(key, sub.clone());
        parse(sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn not_found_is_permanent_and_outage_retryable() {
        let s = MemoryStripe::new();
        let e = s.subscription("sub_missing").await.unwrap_err();
        assert!(matches!(e, Error::NotFound(_)) && !e.is_retryable());
        s.set_unavailable(true);
        assert!(s.customer("cus_1").await.unwrap_err().is_retryable());
        assert_eq!(s.calls(), 2);
    }

    #[tokio::test]
    async fn items_attach_to_their_draft_invoice_which_finalizes_once() {
        let s = MemoryStripe::new();
        let item = |amount, invoice: Option<&str>| NewInvoiceItem {
            customer: "cus_1".into(),
            invoice: invoice.map(str::to_owned),
            amount,
            currency: "usd".into(),
            description: "x".into(),
            metadata: BTreeMap::from([("blapi_key".into(), format!("k{amount}"))]),
            tax_behavior: None,
        };
        // An unrelated pending item is never swept into the invoice.
        s.create_invoice_item(&item(7, None), "p").await.unwrap();
        let new = NewInvoice {
            customer: "cus_1".into(),
            currency: "usd".into(),
            description: "d".into(),
            metadata: BTreeMap::new(),
            automatic_tax: false,
            coupons: Vec::new(),
        };
        let inv = s.create_invoice(&new, "c").await.unwrap();
        assert_eq!(inv.total, Some(0));
        s.create_invoice_item(&item(100, Some("in_1")), "a")
            .await
            .unwrap();
        s.create_invoice_item(&item(250, Some("in_1")), "b")
            .await
            .unwrap();
        let items = s.invoice_items("cus_1").await.unwrap();
        assert_eq!(items[0].invoice, None, "the pending item stays pending");
        assert!(
            items[1..]
                .iter()
                .all(|i| i.invoice.as_deref() == Some("in_1"))
        );
        assert_eq!(items[1].metadata.get("blapi_key"), Some("k100"));
        let doc = s.invoice_document("in_1").await.unwrap();
        let lines = doc.document.lines.unwrap().data;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].item_id(), Some("ii_3"));
        s.finalize_invoice("in_1", "f").await.unwrap();
        let late = s.create_invoice_item(&item(1, Some("in_1")), "l").await;
        assert!(!late.unwrap_err().is_retryable(), "not a draft any more");
        let again = s.finalize_invoice("in_1", "f").await.unwrap_err();
        assert!(!again.is_retryable());
        assert_eq!(s.invoices("cus_1"), vec![("in_1".into(), 350, true, 2)]);
        assert_eq!(
            s.invoice("in_1").await.unwrap().status.as_deref(),
            Some("open")
        );
    }

    #[tokio::test]
    async fn a_crash_keeps_the_side_effect_and_loses_the_answer() {
        let s = MemoryStripe::new();
        s.crash_after(StripeOp::CreateItem);
        let item = NewInvoiceItem {
            customer: "cus_1".into(),
            invoice: None,
            amount: 1,
            currency: "usd".into(),
            description: "x".into(),
            metadata: BTreeMap::new(),
            tax_behavior: None,
        };
        assert!(
            s.create_invoice_item(&item, "k")
                .await
                .unwrap_err()
                .is_retryable()
        );
        assert_eq!(s.item_count(), 1);
        s.create_invoice_item(&item, "k").await.unwrap();
        assert_eq!(
            s.item_count(),
            2,
            "the fake ignores idempotency keys, like localstripe"
        );
    }
}
