//! Bill runs against a wiremock Stripe with Stripe Tax (localstripe has none): the requests
//! that turn tax on (or do not), what Stripe's finalized invoice says reaching the record,
//! the event, the notification and the three documents, exempt and reverse-charge customers,
//! and a customer without a usable address.

use super::*;
use crate::billing::document::{REVERSE_CHARGE, TAX_EXEMPT};
use crate::billing::memory::MemoryBilling;
use crate::billing::pdf::tests::text_of;
use crate::config::Secret;
use crate::notice::Notification;
use crate::queue::MemoryQueue;
use crate::retry::RetryPolicy;
use crate::storage::MemoryStore;
use crate::stripe::{MemoryStripe, StripeClient};
use crate::telemetry::Tally;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const CUS: &str = "cus_tax";
const NOTES: &str = "notes";
const EVENTS: &str = "customer-events";
const INV: &str = "in_tax";

struct Rig {
    billing: Billing,
    table: Arc<MemoryBilling>,
    store: Arc<MemoryStore>,
    queue: Arc<MemoryQueue>,
    server: MockServer,
}

fn period() -> Period {
    "2026-10".parse().unwrap()
}

async fn rig(automatic_tax: bool) -> Rig {
    let server = MockServer::start().await;
    let stripe = StripeClient::new(
        server.uri(),
        Secret::new("sk_test_x".into()),
        Duration::from_secs(5),
    )
    .unwrap()
    .with_retry(RetryPolicy::immediate(2));
    let table = Arc::new(MemoryBilling::new());
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    // The card on file is not this test's business (an unknown customer: no dunning).
    let mut billing = super::tests::billing_on(
        Arc::new(stripe),
        Arc::new(MemoryStripe::new()),
        &table,
        &store,
        &queue,
    );
    billing.config.notifications_queue_url = NOTES.into();
    billing.config.customer_events_queue_url = Some(EVENTS.into());
    billing.config.license_requests_queue_url = None;
    billing.config.issuing = Issuing {
        automatic_tax,
        seller: crate::billing::document::Seller {
            name: "Example Software Inc.".into(),
            address: vec!["1 Market St".into(), "San Francisco, CA 94105".into()],
            tax_id: Some("US12-3456789".into()),
            email: Some("billing@example.com".into()),
        },
    };
    // Cloud Pro, 2 seats, 10 builds, 25 000 API calls: l0 seats 3000, l1 API 3 × 900 = 2700,
    // l2 builds 20 (l3 peak nodes and l4 capacity are zero): 5720.
    let sub = Subscription {
        customer: CUS.into(),
        subscription: "sub_tax".into(),
        plan: "cloud-pro".into(),
        quantity: 2,
        status: "active".into(),
        currency: None,
        start: "2026-01-01T00:00:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp(),
        end: None,
        updated_at: 1,
    };
    table.upsert(&sub).await.unwrap();
    let t = "2026-10-10T10:00:00Z";
    let rec = |id: String, metric: &str, value: i64| {
        json!({"id": id, "customer": CUS, "subscription": "sub_tax", "metric": metric,
            "value": value, "timestamp": t, "installation": "i-1"})
    };
    let mut records: Vec<Value> = (0..10).map(|i| rec(format!("b{i}"), "builds", 1)).collect();
    records.push(rec("api".into(), "api_calls", 25_000));
    let now: DateTime<Utc> = "2026-10-20T00:00:00Z".parse().unwrap();
    billing.ingest(&records, now).await.unwrap();
    Rig {
        billing,
        table,
        store,
        queue,
        server,
    }
}

/// Answers `ii_1`, `ii_2`, ... in creation order (l0, l1, l2).
struct Items(AtomicUsize);

impl Respond for Items {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        ResponseTemplate::new(200)
            .set_body_json(json!({"id": format!("ii_{n}"), "object": "invoiceitem"}))
    }
}

/// Items, the invoice (a draft with tax on or off) and, with a credit, the coupon.
async fn mount_creation(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/v1/invoiceitems"))
        .respond_with(Items(AtomicUsize::new(0)))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/invoices"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": INV, "object": "invoice", "status": "draft", "customer": CUS}),
        ))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/coupons"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "blapi_credit_cus_tax_2026_10"})),
        )
        .mount(server)
        .await;
}

/// German VAT at 19 % per line (or 0 with `reason`), as finalize answers it: rates expanded.
fn finalized(line_tax: [i64; 3], reason: &str, exempt: &str, net: i64) -> Value {
    let rate = json!({"id": "txr_de", "object": "tax_rate", "display_name": "VAT",
        "jurisdiction": "DE", "percentage": 19.0, "country": "DE", "inclusive": false});
    let tax_amount = |amount: i64, taxable: i64| {
        json!({"amount": amount, "inclusive": false, "tax_rate": rate,
            "taxability_reason": reason, "taxable_amount": taxable})
    };
    let tax: i64 = line_tax.iter().sum();
    let lines: Vec<Value> = [3000, 2700, 20]
        .iter()
        .zip(line_tax)
        .enumerate()
        .map(|(i, (amount, t))| {
            json!({"id": format!("il_{i}"), "object": "line_item", "type": "invoiceitem",
                "invoice_item": format!("ii_{}", i + 1), "amount": amount,
                "tax_amounts": [tax_amount(t, *amount)]})
        })
        .collect();
    json!({
        "id": INV, "object": "invoice", "customer": CUS, "status": "open",
        "number": "A1B2C3D4-0042", "currency": "usd",
        "subtotal": 5720, "total_excluding_tax": net, "tax": tax, "total": net + tax,
        "amount_due": net + tax,
        "automatic_tax": {"enabled": true, "status": "complete"},
        "customer_name": "Müller & Söhne GmbH", "customer_email": "ap@mueller.example",
        "customer_address": {"line1": "Hauptstraße 1", "postal_code": "10115", "city": "Berlin",
            "country": "DE", "line2": null, "state": null},
        "customer_tax_ids": [{"type": "eu_vat", "value": "DE123456789"}],
        "customer_tax_exempt": exempt,
        "status_transitions": {"finalized_at": 1_793_520_000},
        "due_date": null,
        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_tax",
        "invoice_pdf": "https://pay.stripe.com/invoice/acct_1/test_tax/pdf",
        "total_tax_amounts": [tax_amount(tax, net)],
        "lines": {"object": "list", "has_more": false, "data": lines},
    })
}

fn form(req: &Request) -> BTreeMap<String, String> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

async fn posts(server: &MockServer, p: &str) -> Vec<BTreeMap<String, String>> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == p)
        .map(form)
        .collect()
}

fn notes(r: &Rig, kind: &str) -> Vec<Notification> {
    r.queue
        .sent(NOTES)
        .iter()
        .map(|n| serde_json::from_str::<Notification>(n).unwrap())
        .filter(|n| n.kind == kind)
        .collect()
}

/// The three documents: (JSON, HTML, PDF text).
fn documents(r: &Rig) -> (Value, String, String) {
    let keys = artifact_keys(CUS, period());
    let json = serde_json::from_slice(&r.store.object(&keys.json).unwrap()).unwrap();
    let html = String::from_utf8(r.store.object(&keys.html).unwrap()).unwrap();
    let pdf = text_of(&r.store.object(&keys.pdf).unwrap());
    (json, html, pdf)
}

#[tokio::test]
async fn a_taxed_invoice_carries_stripes_tax_per_line_into_record_event_mail_and_documents() {
    let r = rig(true).await;
    // A 10.00 credit: under Stripe Tax it is a coupon on the invoice, not a negative item.
    let usd: Currency = "usd".parse().unwrap();
    r.billing
        .grant_credit(CUS, "promo", Money::new(1000, usd))
        .await
        .unwrap();
    mount_creation(&r.server).await;
    // 19 % of each line, net of its share of the credit: 473 + 426 + 3 = 902 on 4720.
    Mock::given(method("POST"))
        .and(path(format!("/v1/invoices/{INV}/finalize")))
        .and(header("Idempotency-Key", "blapi:cus_tax:2026-10:finalize"))
        .respond_with(ResponseTemplate::new(200).set_body_json(finalized(
            [473, 426, 3],
            "standard_rated",
            "none",
            4720,
        )))
        .expect(1)
        .mount(&r.server)
        .await;
    let out = r.billing.bill(CUS, period()).await.unwrap();
    assert_eq!(
        out,
        BillOutcome::Invoiced {
            stripe_invoice: Some(INV.into()),
            total: 4720,
            resumed: false
        }
    );

    // What went to Stripe: items before tax, the invoice with automatic tax and the coupon.
    let items = posts(&r.server, "/v1/invoiceitems").await;
    assert_eq!(items.len(), 3, "the credit is no item: {items:?}");
    assert!(
        items.iter().all(|i| i["tax_behavior"] == "exclusive"),
        "{items:?}"
    );
    let coupons = posts(&r.server, "/v1/coupons").await;
    assert_eq!(coupons.len(), 1);
    assert_eq!(
        (
            coupons[0]["amount_off"].as_str(),
            coupons[0]["duration"].as_str()
        ),
        ("1000", "once")
    );
    let invoices = posts(&r.server, "/v1/invoices").await;
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0]["automatic_tax[enabled]"], "true");
    assert_eq!(
        invoices[0]["discounts[0][coupon]"],
        "blapi_credit_cus_tax_2026_10"
    );
    let requests = r.server.received_requests().await.unwrap();
    let fin = requests
        .iter()
        .find(|q| q.url.path().ends_with("/finalize"))
        .map(|q| String::from_utf8_lossy(&q.body).into_owned())
        .unwrap();
    assert!(
        fin.contains("lines.data.tax_amounts.tax_rate")
            && fin.contains("total_tax_amounts.tax_rate"),
        "the rates are expanded: {fin}"
    );

    // The record keeps subtotal, tax and total apart.
    let rec = InvoiceStore::load(&*r.table, CUS, period())
        .await
        .unwrap()
        .unwrap();
    let issued = rec.refs.issued.as_ref().unwrap();
    assert_eq!((rec.invoice.subtotal, rec.invoice.total), (5720, 4720));
    assert_eq!((issued.tax, issued.amount_due), (Some(902), Some(5622)));
    assert_eq!(issued.line_taxes["ii_1"][0].amount, 473);

    // Customer sync counts the total before tax; the tax and the amount due ride along.
    let sent = r.queue.sent(EVENTS);
    assert_eq!(sent.len(), 1);
    let msg: crate::queue::EventMessage = serde_json::from_str(&sent[0]).unwrap();
    let data = &msg.event["data"];
    assert_eq!(data["total"]["amount"], 4720);
    assert_eq!(data["tax"]["amount"], 902);
    assert_eq!(data["amount_due"]["amount"], 5622);
    assert_eq!(data["pdf_key"], "invoices/cus_tax/2026-10.pdf");

    // The customer's mail: number, totals with tax, the documents and the pay page.
    let mail = notes(&r, "invoice.available");
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].id, "invoice:cus_tax:2026-10:available");
    assert_eq!(mail[0].data["number"], "A1B2C3D4-0042");
    assert_eq!(mail[0].data["total"]["amount"], 5622);
    assert_eq!(mail[0].data["amount_due"]["amount"], 5622);
    assert_eq!(mail[0].data["html_key"], "invoices/cus_tax/2026-10.html");
    assert_eq!(mail[0].data["pdf_key"], "invoices/cus_tax/2026-10.pdf");
    assert_eq!(
        mail[0].data["pay_url"],
        "https://invoice.stripe.com/i/acct_1/test_tax"
    );

    let (json, html, pdf) = documents(&r);
    let doc = &json["document"];
    assert_eq!(doc["number"], "A1B2C3D4-0042");
    assert_eq!(doc["issue_date"], "2026-11-01");
    assert_eq!(
        (doc["tax"].as_i64(), doc["total"].as_i64()),
        (Some(902), Some(5622))
    );
    let taxes: Vec<i64> = doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["tax"].as_i64())
        .collect();
    assert_eq!(taxes, vec![473, 426, 3], "tax per line");
    assert_eq!(doc["taxes"][0]["label"], "VAT 19% (DE)");
    assert_eq!(json["invoice"]["total"], 4720, "the composition of record");
    for needle in [
        "A1B2C3D4-0042",
        "Example Software Inc.",
        "Müller &amp; Söhne GmbH",
        "EU VAT DE123456789",
        "4.73<div class=\"details\">VAT 19% (DE)</div>",
        "VAT 19% (DE)</td><td class=\"n\">9.02",
        "Amount due (USD)</td><td class=\"n\">56.22",
        "https://invoice.stripe.com/i/acct_1/test_tax",
    ] {
        assert!(html.contains(needle), "{needle} not in {html}");
    }
    // The invoice is kept for years: it carries no e-mail address (erasure leaves it clean).
    let record = serde_json::to_string(&json).unwrap();
    for doc in [&html, &pdf, &record] {
        assert!(
            !doc.contains("ap@mueller.example"),
            "an address on the invoice"
        );
    }
    for needle in [
        "A1B2C3D4-0042",
        "56.22",
        "9.02",
        "VAT 19% (DE)",
        "Hauptstraße 1",
    ] {
        assert!(pdf.contains(needle), "{needle} not in {pdf}");
    }
    for l in &rec.invoice.lines {
        assert!(
            pdf.contains(&l.description),
            "{} not in {pdf}",
            l.description
        );
    }

    // A rerun changes nothing: no Stripe call, the same documents.
    let before = r.server.received_requests().await.unwrap().len();
    assert_eq!(
        r.billing.bill(CUS, period()).await.unwrap(),
        BillOutcome::AlreadyBilled
    );
    assert_eq!(r.server.received_requests().await.unwrap().len(), before);
}

#[tokio::test]
async fn exempt_and_reverse_charge_customers_pay_no_tax_and_their_documents_say_why() {
    for (exempt, reason, note) in [
        ("exempt", "customer_exempt", TAX_EXEMPT),
        ("reverse", "reverse_charge", REVERSE_CHARGE),
    ] {
        let r = rig(true).await;
        mount_creation(&r.server).await;
        Mock::given(method("POST"))
            .and(path(format!("/v1/invoices/{INV}/finalize")))
            .respond_with(ResponseTemplate::new(200).set_body_json(finalized(
                [0, 0, 0],
                reason,
                exempt,
                5720,
            )))
            .mount(&r.server)
            .await;
        let out = r.billing.bill(CUS, period()).await.unwrap();
        assert!(
            matches!(out, BillOutcome::Invoiced { total: 5720, .. }),
            "{out:?}"
        );
        let (json, html, pdf) = documents(&r);
        assert_eq!(json["document"]["tax"], 0, "{exempt}");
        assert_eq!(json["document"]["amount_due"], 5720, "{exempt}");
        assert_eq!(json["document"]["tax_note"], note, "{exempt}");
        assert!(
            html.contains(&crate::values::html_escape(note)),
            "{exempt}: {html}"
        );
        assert!(pdf.contains(note), "{exempt}: {pdf}");
        assert!(pdf.contains("57.20"), "{pdf}");
        let data = &notes(&r, "invoice.available")[0].data;
        assert_eq!(data["amount_due"]["amount"], 5720);
    }
}

#[tokio::test]
async fn without_a_usable_address_the_invoice_waits_the_customer_is_told_once_and_a_rerun_finalizes_it()
 {
    let r = rig(true).await;
    mount_creation(&r.server).await;
    // Stripe Tax cannot place the customer: finalize is refused, the draft says why.
    let refusal = ResponseTemplate::new(400).set_body_json(json!({"error": {
        "type": "invalid_request_error", "code": "customer_tax_location_invalid",
        "message": "The customer's location isn't recognized."}}));
    for key in [
        "blapi:cus_tax:2026-10:finalize",
        "blapi:cus_tax:2026-10:finalize:1",
    ] {
        Mock::given(method("POST"))
            .and(path(format!("/v1/invoices/{INV}/finalize")))
            .and(header("Idempotency-Key", key))
            .respond_with(refusal.clone())
            .expect(1)
            .mount(&r.server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(format!("/v1/invoices/{INV}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": INV, "status": "draft", "customer": CUS, "total": 5720,
            "automatic_tax": {"enabled": true, "status": "requires_location_inputs"}})))
        .mount(&r.server)
        .await;
    let tally = Tally::new("test", "usage-billing");
    let answer = r
        .billing
        .run_job(
            Job::Bill {
                customer: CUS.into(),
                period: period(),
            },
            Utc::now(),
            &tally,
        )
        .await
        .unwrap();
    assert_eq!(answer["outcome"], "tax_address_required", "{answer}");
    assert_eq!(answer["stripe_invoice"], INV);
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("customer_tax_location_invalid"),
        "{answer}"
    );
    assert_eq!(tally.get("InvoicesAwaitingTaxAddress"), Some(1.0));
    assert_eq!(tally.get("InvoicesFailed"), None, "not a failure to retry");
    let rec = InvoiceStore::load(&*r.table, CUS, period())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, BillState::ItemsCreated, "not finalized");
    assert!(!rec.refs.finalized && rec.refs.issued.is_none());
    assert!(
        r.store.keys().is_empty(),
        "no document for an unfinalized invoice"
    );
    assert!(r.queue.sent(EVENTS).is_empty(), "nothing announced");
    let asked = notes(&r, "invoice.tax_address_required");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].id, "invoice:cus_tax:2026-10:tax_address_required");
    assert_eq!(asked[0].customer.as_deref(), Some(CUS));
    assert_eq!(asked[0].data["period"], "2026-10");

    // Still no address: the same answer, and the customer is not told again.
    let again = r.billing.bill(CUS, period()).await.unwrap();
    assert_eq!(
        again,
        BillOutcome::TaxAddressRequired {
            stripe_invoice: Some(INV.into())
        }
    );
    assert_eq!(notes(&r, "invoice.tax_address_required").len(), 1);

    // The address is fixed: the next run finalizes the same invoice (a fresh idempotency key,
    // since Stripe would replay the refusal for 24 h).
    Mock::given(method("POST"))
        .and(path(format!("/v1/invoices/{INV}/finalize")))
        .and(header(
            "Idempotency-Key",
            "blapi:cus_tax:2026-10:finalize:2",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(finalized(
            [570, 513, 4],
            "standard_rated",
            "none",
            5720,
        )))
        .expect(1)
        .mount(&r.server)
        .await;
    let done = r.billing.bill(CUS, period()).await.unwrap();
    assert_eq!(
        done,
        BillOutcome::Invoiced {
            stripe_invoice: Some(INV.into()),
            total: 5720,
            resumed: true
        }
    );
    assert_eq!(
        posts(&r.server, "/v1/invoices").await.len(),
        1,
        "one invoice"
    );
    assert_eq!(
        posts(&r.server, "/v1/invoiceitems").await.len(),
        3,
        "no duplicate item"
    );
    let (json, _, pdf) = documents(&r);
    assert_eq!(json["document"]["tax"], 1087);
    assert!(pdf.contains("68.07"), "{pdf}");
    assert_eq!(notes(&r, "invoice.available").len(), 1);
    assert_eq!(notes(&r, "invoice.tax_address_required").len(), 1);
    assert_eq!(
        r.billing.bill(CUS, period()).await.unwrap(),
        BillOutcome::AlreadyBilled
    );
}

#[tokio::test]
async fn with_tax_off_nothing_about_tax_reaches_stripe() {
    let r = rig(false).await;
    let usd: Currency = "usd".parse().unwrap();
    r.billing
        .grant_credit(CUS, "promo", Money::new(1000, usd))
        .await
        .unwrap();
    mount_creation(&r.server).await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/invoices/{INV}/finalize")))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": INV, "status": "open", "total": 4720, "number": "A1B2C3D4-0043"}),
        ))
        .mount(&r.server)
        .await;
    let out = r.billing.bill(CUS, period()).await.unwrap();
    assert!(
        matches!(out, BillOutcome::Invoiced { total: 4720, .. }),
        "{out:?}"
    );
    let items = posts(&r.server, "/v1/invoiceitems").await;
    assert_eq!(items.len(), 4, "3 charges + the credit as a negative item");
    assert!(items.iter().any(|i| i["amount"] == "-1000"));
    assert!(
        items.iter().all(|i| !i.contains_key("tax_behavior")),
        "{items:?}"
    );
    let invoices = posts(&r.server, "/v1/invoices").await;
    assert!(
        invoices[0]
            .keys()
            .all(|k| !k.starts_with("automatic_tax") && !k.starts_with("discounts")),
        "{invoices:?}"
    );
    assert!(posts(&r.server, "/v1/coupons").await.is_empty());
    let (json, html, _) = documents(&r);
    assert_eq!(json["document"]["tax"], 0);
    assert!(json["document"]["taxes"].as_array().unwrap().is_empty());
    assert!(
        !html.contains("Total excluding tax"),
        "no tax lines without tax"
    );
}
