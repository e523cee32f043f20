//! Billing's [`Invoicing`] port, implemented once for every [`StripeInvoices`] (the HTTP
//! client and the shared in-memory fake alike), so the look-up rules below are the same in
//! tests and in production.
//!
//! Each object carries our key in its metadata (`blapi_key` on items, `blapi_invoice` on the
//! invoice, and `ref {key}` in the invoice description, because localstripe drops invoice
//! metadata on create). Only parameters both Stripe and localstripe accept are sent.

use super::document::Issued;
use super::money::Money;
use super::ports::{Collections, Finalized, InvoiceOptions, Invoicing, ItemRequest, StripeInvoice};
use crate::error::{Error, Result};
use crate::stripe::{
    Invoice, NewCoupon, NewInvoice, NewInvoiceItem, StripeCollections, StripeInvoices,
    StripeSelfService, is_tax_location_error,
};
use async_trait::async_trait;
use std::collections::BTreeMap;

fn invoice_ref(key: &str) -> String {
    format!("ref {key}")
}

fn summary(inv: Invoice) -> StripeInvoice {
    StripeInvoice {
        id: inv.id,
        status: inv.status,
        total: inv.total,
    }
}

#[async_trait]
impl<S: StripeInvoices + ?Sized> Invoicing for S {
    async fn create_item(&self, item: &ItemRequest, idempotency_key: &str) -> Result<String> {
        let req = NewInvoiceItem {
            customer: item.customer.clone(),
            invoice: Some(item.invoice.clone()),
            amount: item.amount.amount,
            currency: item.amount.currency.as_str().to_owned(),
            description: item.description.clone(),
            metadata: BTreeMap::from([
                ("blapi_key".to_owned(), item.key.clone()),
                ("blapi_period".to_owned(), item.period.to_string()),
            ]),
            tax_behavior: item.taxed.then(|| "exclusive".to_owned()),
        };
        Ok(self.create_invoice_item(&req, idempotency_key).await?.id)
    }

    async fn items_on(&self, invoice: &str) -> Result<BTreeMap<String, String>> {
        let inv = self.invoice_document(invoice).await?;
        Ok(inv
            .document
            .lines
            .map(|l| l.data)
            .unwrap_or_default()
            .iter()
            .filter_map(|line| {
                Some((
                    line.metadata.get("blapi_key")?.to_owned(),
                    line.item_id()?.to_owned(),
                ))
            })
            .collect())
    }

    async fn create_invoice(
        &self,
        customer: &str,
        key: &str,
        description: &str,
        options: &InvoiceOptions,
        idempotency_key: &str,
    ) -> Result<StripeInvoice> {
        let description = if description.contains(&invoice_ref(key)) {
            description.to_owned()
        } else {
            format!("{description} · {}", invoice_ref(key))
        };
        let req = NewInvoice {
            customer: customer.to_owned(),
            currency: options.currency.clone(),
            description,
            metadata: BTreeMap::from([("blapi_invoice".to_owned(), key.to_owned())]),
            automatic_tax: options.automatic_tax,
            coupons: options.coupon.iter().cloned().collect(),
        };
        Ok(summary(
            StripeInvoices::create_invoice(self, &req, idempotency_key).await?,
        ))
    }

    async fn credit_coupon(&self, key: &str, credit: &Money, resuming: bool) -> Result<String> {
        // `cus_1:2026-10` -> `blapi_credit_cus_1_2026_10`: Stripe's id alphabet, one per invoice.
        let id: String = format!("blapi_credit_{key}")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if resuming && self.coupon_exists(&id).await? {
            return Ok(id);
        }
        let coupon = NewCoupon {
            id: id.clone(),
            amount_off: credit.amount,
            currency: credit.currency.as_str().to_owned(),
            name: "Prepaid / promotional credit".to_owned(),
            metadata: BTreeMap::from([("blapi_invoice".to_owned(), key.to_owned())]),
        };
        self.create_coupon(&coupon, &format!("blapi:{key}:coupon"))
            .await?;
        Ok(id)
    }

    async fn find_invoice(&self, customer: &str, key: &str) -> Result<Option<StripeInvoice>> {
        let marker = invoice_ref(key);
        Ok(self
            .invoices(customer)
            .await?
            .into_iter()
            .find(|i| {
                i.metadata.get("blapi_invoice") == Some(key)
                    || i.description
                        .as_deref()
                        .is_some_and(|d| d.ends_with(&marker))
            })
            .map(summary))
    }

    async fn finalize(&self, invoice_id: &str, idempotency_key: &str) -> Result<Finalized> {
        let done = |inv: &Invoice| Finalized::Done(Box::new(Issued::from_stripe(inv)));
        match self.finalize_invoice(invoice_id, idempotency_key).await {
            Ok(inv) => Ok(done(&inv)),
            Err(e) if !e.is_retryable() => {
                // Already finalized (a rerun), an address Stripe Tax cannot use, or an API
                // without the endpoint: ask the invoice.
                let inv = self.invoice_document(invoice_id).await?;
                let tax = inv.document.automatic_tax.as_ref();
                let no_location = is_tax_location_error(&e)
                    || tax.is_some_and(|t| {
                        t.enabled && t.status.as_deref() == Some("requires_location_inputs")
                    });
                match inv.status.as_deref() {
                    Some("draft") if no_location => Ok(Finalized::TaxLocationRequired),
                    Some("draft") if matches!(e, Error::NotFound(_)) => Ok(Finalized::Unsupported),
                    Some("draft") => Err(e),
                    _ => Ok(done(&inv)),
                }
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl<S: StripeSelfService + StripeCollections + ?Sized> Collections for S {
    async fn card(&self, customer: &str) -> Result<Option<crate::stripe::Card>> {
        self.default_card(customer).await
    }

    async fn cancel_subscription(&self, id: &str) -> Result<()> {
        StripeCollections::cancel_subscription(self, id)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::money::Money;
    use crate::config::Secret;
    use crate::retry::RetryPolicy;
    use crate::stripe::StripeClient;
    use std::time::Duration;
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn adapter(uri: &str) -> StripeClient {
        StripeClient::new(uri, Secret::new("sk_test_x".into()), Duration::from_secs(2))
            .unwrap()
            .with_retry(RetryPolicy::immediate(3))
    }

    #[tokio::test]
    async fn item_carries_key_metadata_and_idempotency_key_and_survives_429() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/invoiceitems"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/invoiceitems"))
            .and(header("Idempotency-Key", "blapi:cus_1:2026-10:l0:item"))
            .and(body_string_contains(
                "metadata%5Bblapi_key%5D=cus_1%3A2026-10%3Al0",
            ))
            .and(body_string_contains("invoice=in_1"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "ii_1"})),
            )
            .mount(&server)
            .await;
        let a = adapter(&server.uri());
        let req = ItemRequest {
            customer: "cus_1".into(),
            invoice: "in_1".into(),
            amount: Money::new(1234, "usd".parse().unwrap()),
            description: "x".into(),
            key: "cus_1:2026-10:l0".into(),
            period: "2026-10".parse().unwrap(),
            taxed: false,
        };
        assert_eq!(
            a.create_item(&req, "blapi:cus_1:2026-10:l0:item")
                .await
                .unwrap(),
            "ii_1"
        );
        assert_eq!(a.calls(), 2);
    }

    #[tokio::test]
    async fn lookups_read_the_invoice_lines_and_match_invoices_by_metadata_or_description() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/invoices/in_hit"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": "in_hit", "status": "draft", "lines": {"data": [
                    {"id": "il_1", "amount": 5, "invoice_item": "ii_old_shape", "metadata": {"blapi_key": "cus_1:2026-10:l0"}},
                    {"id": "il_2", "amount": 7, "metadata": {"blapi_key": "cus_1:2026-10:l1"},
                     "parent": {"type": "invoice_item_details", "invoice_item_details": {"invoice_item": "ii_new_shape"}}},
                    {"id": "il_3", "amount": 9, "invoice_item": "ii_foreign", "metadata": {}}],
                "has_more": false}})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/invoices"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": [
                {"id": "in_sub", "status": "paid", "total": 0, "description": null, "metadata": {}},
                {"id": "in_hit", "status": "draft", "total": 500, "description": "Usage 2026-10 · ref cus_1:2026-10", "metadata": {}}],
                "has_more": false})))
            .mount(&server)
            .await;
        let a = adapter(&server.uri());
        let on = a.items_on("in_hit").await.unwrap();
        assert_eq!(
            on,
            BTreeMap::from([
                ("cus_1:2026-10:l0".to_owned(), "ii_old_shape".to_owned()),
                ("cus_1:2026-10:l1".to_owned(), "ii_new_shape".to_owned()),
            ]),
            "both API shapes; a line that is not ours is ignored"
        );
        let inv = a
            .find_invoice("cus_1", "cus_1:2026-10")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((inv.id.as_str(), inv.total), ("in_hit", Some(500)));
        assert!(
            a.find_invoice("cus_1", "cus_1:2026-11")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn finalize_tolerates_already_finalized_and_missing_endpoint() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/invoices/in_open/finalize"))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": {"type": "invalid_request_error", "message": "already finalized"}})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/invoices/in_open"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"id": "in_open", "status": "open"})),
            )
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/invoices/in_draft/finalize"))
            .respond_with(ResponseTemplate::new(404).set_body_string("404: Not Found"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/invoices/in_draft"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"id": "in_draft", "status": "draft"})),
            )
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/invoices/in_5xx/finalize"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;
        let a = adapter(&server.uri());
        assert!(matches!(
            a.finalize("in_open", "k").await.unwrap(),
            Finalized::Done(_)
        ));
        assert_eq!(
            a.finalize("in_draft", "k").await.unwrap(),
            Finalized::Unsupported
        );
        let e = a.finalize("in_5xx", "k").await.unwrap_err();
        assert!(e.is_retryable());
    }
}
