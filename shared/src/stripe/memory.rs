//! The in-memory Stripe every domain's unit tests share. Objects are kept as JSON and read
//! through the same typed parsing as real answers. It behaves as Stripe does where our rules
//! depend on it: pending invoice items are swept into the next invoice of their customer, an
//! invoice that is not a draft cannot be finalized, an unknown id is `NotFound`. Like
//! localstripe it ignores idempotency keys (so the domains' own look-ups are what prevents
//! duplicates). Failures can be injected: the whole API down ([`MemoryStripe::set_unavailable`])
//! or one operation that does its work and then loses the answer ([`MemoryStripe::crash_after`]).

use super::objects::{
    Charge, Customer, Invoice, InvoiceItem, NewInvoice, NewInvoiceItem, Product, Subscription,
};
use super::{StripeInvoices, StripeReads};
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
        let v = json!({
            "id": format!("ii_{}", s.items.len() + 1),
            "object": "invoiceitem",
            "customer": item.customer,
            "amount": item.amount,
            "currency": item.currency,
            "description": item.description,
            "metadata": item.metadata,
            "invoice": null,
        });
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
        let mut total = 0;
        for it in s
            .items
            .iter_mut()
            .filter(|i| i["customer"] == invoice.customer.as_str() && i["invoice"].is_null())
        {
            it["invoice"] = json!(id);
            total += it["amount"].as_i64().unwrap_or(0);
        }
        let v = json!({
            "id": id,
            "object": "invoice",
            "customer": invoice.customer,
            "status": "draft",
            "total": total,
            "description": invoice.description,
            "metadata": invoice.metadata,
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
        let v = inv.clone();
        crash(&mut s, StripeOp::Finalize)?;
        parse(v)
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
    async fn pending_items_are_swept_into_the_next_invoice_which_finalizes_once() {
        let s = MemoryStripe::new();
        let item = |amount| NewInvoiceItem {
            customer: "cus_1".into(),
            amount,
            currency: "usd".into(),
            description: "x".into(),
            metadata: BTreeMap::from([("blapi_key".into(), format!("k{amount}"))]),
        };
        s.create_invoice_item(&item(100), "a").await.unwrap();
        s.create_invoice_item(&item(250), "b").await.unwrap();
        let new = NewInvoice {
            customer: "cus_1".into(),
            description: "d".into(),
            metadata: BTreeMap::new(),
        };
        let inv = s.create_invoice(&new, "c").await.unwrap();
        assert_eq!(inv.total, Some(350));
        let items = s.invoice_items("cus_1").await.unwrap();
        assert!(items.iter().all(|i| i.invoice.as_deref() == Some("in_1")));
        assert_eq!(items[0].metadata.get("blapi_key"), Some("k100"));
        s.finalize_invoice("in_1", "f").await.unwrap();
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
            amount: 1,
            currency: "usd".into(),
            description: "x".into(),
            metadata: BTreeMap::new(),
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
