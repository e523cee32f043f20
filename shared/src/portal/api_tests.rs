//! The portal API through its handler with in-memory ports and an in-process identity provider.

use super::api::{Offer, PortalApi, Ports, Settings};
use super::auth::{AuthConfig, StaticKeySource, TokenVerifier};
use super::http::{Request, Response};
use super::testkit::{TestIssuer, now};
use crate::billing::dunning::{Dunning, Status};
use crate::billing::invoice::{Invoice, StripeRefs};
use crate::billing::memory::MemoryBilling;
use crate::billing::ports::{BillState, DunningStore, InvoiceRecord, InvoiceStore};
use crate::billing::pricebook::PriceBook;
use crate::crm::MemoryCrm;
use crate::customers::state::{CustomerState, CustomerStore, MemoryCustomers, Term};
use crate::ledger::MemoryLedger;
use crate::licensing::format::LicenseKey;
use crate::licensing::store::{LicenseRecord, LicenseStatus, LicenseStore, MemoryLicenseStore};
use crate::queue::MemoryQueue;
use crate::storage::{MemoryStore, ObjectStore};
use crate::stripe::MemoryStripe;
use crate::values::Currency;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const ISS: &str = "https://id.example.test/";
const AUD: &str = "blapi-portal";
/// The fixture's clock: mid-November 2026 (its subscriptions' current period).
const NOW: &str = "2026-11-15T12:00:00Z";
const NOV_1: i64 = 1_793_491_200;
const DEC_1: i64 = 1_796_083_200;
pub(super) const PRIVACY_QUEUE: &str = "https://sqs.test/privacy-requests";

fn settings() -> Settings {
    Settings {
        catalog: BTreeMap::from([(
            "professional".to_string(),
            Offer {
                price: "plan_cloud_pro".into(),
                max_seats: 100,
                plan: Some("cloud-pro".into()),
            },
        )]),
        privacy_queue_url: PRIVACY_QUEUE.into(),
        sales_owner: "sales-desk".into(),
        ..Settings::default()
    }
}

/// Stripe as the fixture's customers have it: A with a card and a 25-seat Cloud Pro
/// subscription (seats priced by the price book: $15 a month), B with 5 seats and no card.
fn stripe_fixture() -> MemoryStripe {
    let stripe = MemoryStripe::new();
    stripe.put_customer(
        json!({"id": "cus_A", "invoice_settings": {"default_payment_method": "pm_A"}}),
    );
    stripe.put_customer(json!({"id": "cus_B"}));
    stripe.put_payment_method(json!({"id": "pm_A", "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}}));
    for (c, seats) in [("cus_A", 25), ("cus_B", 5)] {
        stripe.put_subscription(json!({
            "id": format!("sub_{c}"), "customer": c, "status": "active",
            "current_period_start": NOV_1, "current_period_end": DEC_1, "currency": "usd",
            "metadata": {"blapi_plan": "cloud-pro"},
            "items": {"object": "list", "has_more": false, "data": [{
                "id": format!("si_{c}"), "quantity": seats,
                "plan": {"id": "plan_cloud_pro", "amount": 0, "currency": "usd", "interval": "month",
                         "metadata": {"sku": "professional"}}}]},
        }));
    }
    stripe
}

struct Fixture {
    issuer: TestIssuer,
    api: PortalApi,
    licenses: Arc<MemoryLicenseStore>,
    stripe: Arc<MemoryStripe>,
    crm: Arc<MemoryCrm>,
    queue: Arc<MemoryQueue>,
    billing: Arc<MemoryBilling>,
    /// Customer A's active license, B's license, A's license still issuing.
    a_license: String,
    b_license: String,
    a_issuing: String,
}

fn license(customer: &str, sub: &str, seats: u32, status: LicenseStatus) -> LicenseRecord {
    let id = LicenseKey {
        subscription_id: sub.into(),
        period_start_ms: 1_790_000_000_000,
        quantity: seats,
        sku: "professional".into(),
        supersedes: None,
    }
    .license_id();
    LicenseRecord {
        file_key: format!("licenses/{customer}/{id}.mattermost-license"),
        file: format!("signed-bytes-of-{id}"),
        license_id: id,
        customer_id: customer.into(),
        subscription_id: sub.into(),
        period_start_ms: 1_790_000_000_000,
        period_end_ms: 1_821_536_000_000,
        quantity: seats,
        sku: "professional".into(),
        status,
        supersedes: None,
        superseded_by: None,
        revoked_at: None,
        revoked_reason: None,
        issued_at: 1_790_000_100_000,
        starts_at: 1_790_000_000_000,
        expires_at: 1_821_536_000_000,
        is_trial: false,
        kid: "k1".into(),
    }
}

fn invoice(customer: &str, period: &str, finalized: bool) -> InvoiceRecord {
    InvoiceRecord {
        state: if finalized {
            BillState::Done
        } else {
            BillState::ItemsCreated
        },
        invoice: Invoice {
            customer: customer.into(),
            period: period.parse().unwrap(),
            currency: Currency::try_from("usd".to_string()).unwrap(),
            price_book_version: "2026-01".into(),
            lines: Vec::new(),
            subtotal: 12_345,
            credit_applied: -345,
            total: 12_000,
        },
        refs: StripeRefs {
            invoice: Some(format!("in_{customer}_{period}")),
            items: BTreeMap::new(),
            finalized,
            ..StripeRefs::default()
        },
        attempts: 1,
        version: 1,
    }
}

async fn fixture() -> Fixture {
    let issuer = TestIssuer::new(ISS, AUD);
    let verifier = TokenVerifier::new(
        AuthConfig::new(ISS, AUD),
        Arc::new(StaticKeySource(issuer.jwks())),
    );
    let customers = Arc::new(MemoryCustomers::new());
    for (c, status, seats) in [("cus_A", "active", 25), ("cus_B", "active", 5)] {
        let mut state = CustomerState::new(c);
        state.subscriptions.insert(
            format!("sub_{c}"),
            Term {
                status: status.into(),
                start: 1_790_000_000,
                end: 1_821_536_000,
                seats: Some(seats),
                sku: Some("professional".into()),
                annual_value: None,
                cancel_reason: None,
                plan: Some("professional-annual".into()),
                interval: Some("year".into()),
                interval_count: Some(1),
                mrr: None,
                cancel_at_period_end: false,
                history: Vec::new(),
            },
        );
        customers.save(&state).await.unwrap();
    }
    let licenses = Arc::new(MemoryLicenseStore::new());
    let files = Arc::new(MemoryStore::new());
    let mut ids = Vec::new();
    for rec in [
        license("cus_A", "sub_cus_A", 25, LicenseStatus::Active),
        license("cus_B", "sub_cus_B", 5, LicenseStatus::Active),
        license("cus_A", "sub_cus_A2", 3, LicenseStatus::Issuing),
    ] {
        let issuing = LicenseRecord {
            status: LicenseStatus::Issuing,
            ..rec.clone()
        };
        assert!(licenses.begin(&issuing, None).await.unwrap());
        if rec.status == LicenseStatus::Active {
            files
                .put(&rec.file_key, rec.file.clone().into_bytes(), "text/plain")
                .await
                .unwrap();
            assert!(licenses.activate(&issuing, None, 0).await.unwrap());
        }
        ids.push(rec.license_id.to_string());
    }
    let billing = Arc::new(MemoryBilling::new());
    for rec in [
        invoice("cus_A", "2026-10", true),
        invoice("cus_A", "2026-11", true),
        invoice("cus_A", "2026-12", false),
        invoice("cus_B", "2026-11", true),
    ] {
        assert!(billing.create(&rec).await.unwrap());
    }
    let dunning = Dunning {
        status: Status::PastDue,
        ..Dunning::default()
    };
    DunningStore::save(&*billing, "cus_B", &dunning, 0)
        .await
        .unwrap();
    let stripe = Arc::new(stripe_fixture());
    let crm = Arc::new(MemoryCrm::new());
    let queue = Arc::new(MemoryQueue::new());
    let api = PortalApi::new(
        verifier,
        Ports {
            customers,
            licenses: licenses.clone(),
            files,
            invoices: billing.clone(),
            dunning: billing.clone(),
            usage: billing.clone(),
            subscriptions: billing.clone(),
            credits: billing.clone(),
            book: Arc::new(PriceBook::embedded().unwrap()),
            stripe: stripe.clone(),
            crm: crm.clone(),
            ledger: Arc::new(MemoryLedger::new()),
            queue: queue.clone(),
            clock: Arc::new(|| NOW.parse().unwrap()),
        },
        settings(),
    );
    Fixture {
        issuer,
        api,
        licenses,
        stripe,
        crm,
        queue,
        billing,
        a_license: ids[0].clone(),
        b_license: ids[1].clone(),
        a_issuing: ids[2].clone(),
    }
}

fn get(path: &str, token: Option<&str>) -> Request {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    Request {
        method: "GET".into(),
        path: path.into(),
        query: query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        headers: token
            .map(|t| ("authorization".to_string(), format!("Bearer {t}")))
            .into_iter()
            .collect(),
        body: Vec::new(),
    }
}

fn problem_type(r: &Response) -> String {
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{r:?}"
    );
    r.json_body()["type"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_account_shows_plan_seats_status_card_and_dunning() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    let r = f.api.handle(&get("/v1/account", Some(&t))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json_body();
    assert_eq!(v["customer"], "cus_A");
    assert_eq!(v["status"], "active");
    assert_eq!(v["subscriptions"][0]["seats"], 25);
    assert_eq!(v["subscriptions"][0]["plan"], "professional-annual");
    assert_eq!(
        v["payment_method"],
        json!({"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030})
    );
    assert_eq!(v["dunning"]["status"], "active");

    // B is past due per dunning, and has no card on file.
    let t = f.issuer.customer_token("cus_B");
    let v = f
        .api
        .handle(&get("/v1/account", Some(&t)))
        .await
        .json_body();
    assert_eq!(v["status"], "past_due");
    assert_eq!(v["payment_method"], Value::Null);

    // A token for a customer with no account yet.
    let t = f.issuer.customer_token("cus_NEW");
    let r = f.api.handle(&get("/v1/account", Some(&t))).await;
    assert_eq!(
        (r.status, problem_type(&r).as_str()),
        (404, "urn:blapi:problem:not-found")
    );
}

#[tokio::test]
async fn licenses_are_the_customers_own_and_never_one_being_issued() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    let v = f
        .api
        .handle(&get("/v1/licenses", Some(&t)))
        .await
        .json_body();
    let ids: Vec<&str> = v["licenses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![f.a_license.as_str()]);
    assert_eq!(v["licenses"][0]["seats"], 25);
    assert_eq!(v["licenses"][0]["status"], "active");

    let r = f
        .api
        .handle(&get(&format!("/v1/licenses/{}", f.a_license), Some(&t)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body()["subscription"], "sub_cus_A");
    let issuing = f
        .api
        .handle(&get(&format!("/v1/licenses/{}", f.a_issuing), Some(&t)))
        .await;
    assert_eq!(issuing.status, 404);
}

#[tokio::test]
async fn another_customers_license_answers_exactly_like_a_missing_one() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    let theirs = f
        .api
        .handle(&get(&format!("/v1/licenses/{}", f.b_license), Some(&t)))
        .await;
    let missing = f
        .api
        .handle(&get("/v1/licenses/ybndrfg8ejkmcpqxot1uwisza3", Some(&t)))
        .await;
    let not_an_id = f.api.handle(&get("/v1/licenses/nope", Some(&t))).await;
    assert_eq!(theirs.status, 404);
    assert_eq!(theirs, missing);
    assert_eq!(theirs, not_an_id);
    for path in [
        format!("/v1/licenses/{}/file", f.b_license),
        "/v1/invoices/2026-12".to_string(), // A's, not finalized
    ] {
        let r = f.api.handle(&get(&path, Some(&t))).await;
        assert_eq!(r.status, 404, "{path}");
    }
    // Naming another customer explicitly is the same 404.
    let r = f
        .api
        .handle(&get("/v1/account?customer=cus_B", Some(&t)))
        .await;
    assert_eq!(r.status, 404);
    // And B's token sees only B's invoice.
    let tb = f.issuer.customer_token("cus_B");
    let v = f
        .api
        .handle(&get("/v1/invoices", Some(&tb)))
        .await
        .json_body();
    assert_eq!(v["invoices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_license_file_is_the_exact_stored_bytes_or_an_expiring_link() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    let r = f
        .api
        .handle(&get(
            &format!("/v1/licenses/{}/file", f.a_license),
            Some(&t),
        ))
        .await;
    assert_eq!(r.status, 200);
    let rec = f
        .licenses
        .all()
        .into_iter()
        .find(|l| l.license_id.to_string() == f.a_license)
        .unwrap();
    assert_eq!(r.body, rec.file.as_bytes());
    let r = f
        .api
        .handle(&get(
            &format!("/v1/licenses/{}/file?format=link", f.a_license),
            Some(&t),
        ))
        .await;
    let v = r.json_body();
    assert_eq!(v["expires_in"], 900);
    let other = f
        .api
        .handle(&get(
            &format!("/v1/licenses/{}/file?format=pdf", f.a_license),
            Some(&t),
        ))
        .await;
    assert_eq!(
        (other.status, other.json_body()["field"].clone()),
        (400, json!("format"))
    );
    assert!(v["url"].as_str().unwrap().contains(&rec.file_key), "{v}");
}

#[tokio::test]
async fn invoices_list_finalized_ones_newest_first_with_links_on_the_one() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    let v = f
        .api
        .handle(&get("/v1/invoices", Some(&t)))
        .await
        .json_body();
    let periods: Vec<&str> = v["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(periods, vec!["2026-11", "2026-10"]);
    assert_eq!(v["invoices"][0]["amount_due"]["amount"], 12_000);
    assert!(v["invoices"][0].get("links").is_none());
    let r = f.api.handle(&get("/v1/invoices/2026-11", Some(&t))).await;
    assert_eq!(r.status, 200);
    let v = r.json_body();
    assert_eq!(v["stripe_invoice"], "in_cus_A_2026-11");
    assert!(
        v["links"]["html"]
            .as_str()
            .unwrap()
            .contains("invoices/cus_A/2026-11.html")
    );
    assert!(
        v["links"]["json"]
            .as_str()
            .unwrap()
            .contains("invoices/cus_A/2026-11.json")
    );
    assert!(
        v["links"]["pdf"]
            .as_str()
            .unwrap()
            .contains("invoices/cus_A/2026-11.pdf")
    );
    // No Stripe Tax, no Stripe number: no tax, the total is due, nowhere to pay online.
    assert_eq!(v["tax"]["amount"], 0);
    assert_eq!(v["amount_due"]["amount"], 12_000);
    assert!(v["number"].is_null() && v["pay_url"].is_null(), "{v}");
}

#[tokio::test]
async fn a_taxed_invoice_shows_its_tax_number_and_pay_link_and_is_due_with_tax() {
    let f = fixture().await;
    let mut rec = invoice("cus_A", "2026-09", true);
    rec.refs.issued = Some(crate::billing::document::Issued {
        number: Some("INV-0042".into()),
        tax: Some(2_280),
        amount_due: Some(14_280),
        hosted_invoice_url: Some("https://invoice.stripe.com/i/acct_1/test_x".into()),
        automatic_tax: true,
        ..Default::default()
    });
    assert!(f.billing.create(&rec).await.unwrap());
    let t = f.issuer.customer_token("cus_A");
    let r = f.api.handle(&get("/v1/invoices/2026-09", Some(&t))).await;
    assert_eq!(r.status, 200);
    let v = r.json_body();
    assert_eq!(v["number"], "INV-0042");
    assert_eq!(v["total"]["amount"], 12_000, "the total is before tax");
    assert_eq!(v["tax"]["amount"], 2_280);
    assert_eq!(v["amount_due"]["amount"], 14_280);
    assert_eq!(v["pay_url"], "https://invoice.stripe.com/i/acct_1/test_x");
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_big_bodies_are_refused_before_anything() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    for path in [
        "/",
        "/v1",
        "/v2/account",
        "/v1/licenses/a/b/c",
        "/v1/accounts",
    ] {
        let r = f.api.handle(&get(path, Some(&t))).await;
        assert_eq!(
            (r.status, problem_type(&r).as_str()),
            (404, "urn:blapi:problem:no-such-route"),
            "{path}"
        );
    }
    // Unknown routes answer 404 without a token too (nothing to protect, nothing revealed).
    assert_eq!(f.api.handle(&get("/nope", None)).await.status, 404);
    let mut post = get("/v1/account", Some(&t));
    post.method = "POST".into();
    let r = f.api.handle(&post).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    let mut big = get("/v1/account", Some(&t));
    big.body = vec![b'x'; 16 * 1024 + 1];
    let r = f.api.handle(&big).await;
    assert_eq!(
        (r.status, problem_type(&r).as_str()),
        (413, "urn:blapi:problem:body-too-large")
    );
}

#[tokio::test]
async fn no_token_or_a_bad_one_is_401_with_a_challenge() {
    let f = fixture().await;
    let r = f.api.handle(&get("/v1/account", None)).await;
    assert_eq!(r.status, 401);
    assert_eq!(problem_type(&r), "urn:blapi:problem:token-missing");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let mut claims = f.issuer.customer_claims("cus_A", now() - 1000);
    claims["exp"] = json!(now() - 600);
    let expired = f.issuer.sign("k1", &claims);
    let r = f.api.handle(&get("/v1/licenses", Some(&expired))).await;
    assert_eq!(problem_type(&r), "urn:blapi:problem:token-expired");
    assert!(!String::from_utf8_lossy(&r.body).contains("cus_A"));
}

#[tokio::test]
async fn operators_name_the_customer_and_see_it() {
    let f = fixture().await;
    let op = f.issuer.operator_token("staff-7");
    let r = f.api.handle(&get("/v1/account", Some(&op))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json_body()["field"], "customer");
    let r = f
        .api
        .handle(&get("/v1/account?customer=cus%20B/../x", Some(&op)))
        .await;
    assert_eq!(
        (r.status, r.json_body()["field"].as_str()),
        (400, Some("customer"))
    );
    let r = f
        .api
        .handle(&get("/v1/account?customer=cus_B", Some(&op)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body()["customer"], "cus_B");
    let r = f
        .api
        .handle(&get(
            &format!("/v1/licenses/{}?customer=cus_B", f.b_license),
            Some(&op),
        ))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_dependency_down_is_503_with_retry_after() {
    let f = fixture().await;
    f.stripe.set_unavailable(true);
    let t = f.issuer.customer_token("cus_A");
    let r = f.api.handle(&get("/v1/account", Some(&t))).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(problem_type(&r), "urn:blapi:problem:dependency-unavailable");
    assert!(!String::from_utf8_lossy(&r.body).contains("refused"));
}

// ------------------------------------------------------------------ usage, purchase, seats

fn post(path: &str, token: &str, key: Option<&str>, body: &str) -> Request {
    let mut r = get(path, Some(token));
    r.method = "POST".into();
    if let Some(k) = key {
        r.headers.insert("idempotency-key".into(), k.into());
    }
    r.body = body.as_bytes().to_vec();
    r
}

/// Cloud Pro usage of customer A in November: 25 000 API calls (three packages of 10 000 at
/// $9) and 4 builds ($0.02 each), on top of 25 seats at $15 for the whole month.
async fn november_usage(f: &Fixture) {
    use crate::billing::money::Quantity;
    use crate::billing::ports::{SubscriptionView, UsageStore};
    use crate::billing::subscription::Subscription;
    use crate::billing::usage::Usage;
    f.billing
        .upsert(&Subscription {
            customer: "cus_A".into(),
            subscription: "sub_cus_A".into(),
            plan: "cloud-pro".into(),
            quantity: 25,
            status: "active".into(),
            currency: None,
            start: NOV_1,
            end: None,
            updated_at: NOV_1,
        })
        .await
        .unwrap();
    let at: chrono::DateTime<chrono::Utc> = "2026-11-10T08:00:00Z".parse().unwrap();
    let mut records = vec![("api_calls", 25_000)];
    records.extend([("builds", 1); 4]);
    for (i, (metric, value)) in records.into_iter().enumerate() {
        let u = Usage {
            id: format!("u{i}"),
            customer: "cus_A".into(),
            subscription: "sub_cus_A".into(),
            metric: metric.into(),
            value: Quantity::from_int(value),
            timestamp: at,
            installation: None,
        };
        assert!(f.billing.put_records(&[u], None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn usage_to_date_is_what_billing_would_charge() {
    let f = fixture().await;
    november_usage(&f).await;
    let t = f.issuer.customer_token("cus_A");
    let r = f.api.handle(&get("/v1/usage", Some(&t))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json_body();
    assert_eq!(v["period"], "2026-11");
    assert_eq!(v["open"], true);
    // 25 × 1 500 + 3 × 900 + 4 × 2, by hand.
    assert_eq!(v["total"]["amount"], 37_500 + 2_700 + 8, "{v}");
    let charges: Vec<&str> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["charge"].as_str())
        .collect();
    assert!(
        charges.contains(&"seats") && charges.contains(&"api_calls"),
        "{v}"
    );

    // B has no billable subscription in the billing view: nothing to show, not an error.
    let b = f
        .api
        .handle(&get("/v1/usage", Some(&f.issuer.customer_token("cus_B"))))
        .await;
    assert_eq!(
        (b.status, b.json_body()["total"].clone()),
        (200, Value::Null)
    );

    for bad in ["2027-01", "november", "2026-13"] {
        let r = f
            .api
            .handle(&get(&format!("/v1/usage?period={bad}"), Some(&t)))
            .await;
        assert_eq!(
            (r.status, r.json_body()["field"].clone()),
            (400, json!("period")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_purchase_is_a_checkout_session_once_per_idempotency_key() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    let body = r#"{"sku": "professional", "seats": 12}"#;
    let r = f
        .api
        .handle(&post("/v1/checkout-sessions", &t, Some("buy-1"), body))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let v = r.json_body();
    assert!(v["url"].as_str().unwrap().starts_with("https://"), "{v}");
    let sessions = f.stripe.checkout_sessions();
    assert_eq!(sessions.len(), 1);
    let (s, _) = &sessions[0];
    assert_eq!(
        (s.customer.as_str(), s.price.as_str(), s.quantity),
        ("cus_A", "plan_cloud_pro", 12)
    );
    assert_eq!(
        s.metadata.get("blapi_plan").map(String::as_str),
        Some("cloud-pro")
    );
    assert!(!s.automatic_tax);
    assert!(
        s.success_url.ends_with("checkout=success"),
        "{}",
        s.success_url
    );

    // The same key again: the first answer, marked as a replay; Stripe is not asked again.
    let again = f
        .api
        .handle(&post("/v1/checkout-sessions", &t, Some("buy-1"), body))
        .await;
    assert_eq!((again.status, again.json_body()), (201, v.clone()));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(f.stripe.checkout_sessions().len(), 1);

    // The same key with another body: 409, nothing done.
    let other = f
        .api
        .handle(&post(
            "/v1/checkout-sessions",
            &t,
            Some("buy-1"),
            r#"{"sku": "professional", "seats": 13}"#,
        ))
        .await;
    assert_eq!(other.status, 409);
    assert_eq!(
        problem_type(&other),
        "urn:blapi:problem:idempotency-key-reused"
    );
    // Another customer's same key is theirs: a session of their own.
    let b = f
        .api
        .handle(&post(
            "/v1/checkout-sessions",
            &f.issuer.customer_token("cus_B"),
            Some("buy-1"),
            body,
        ))
        .await;
    assert_eq!(b.status, 201);
    let sessions = f.stripe.checkout_sessions();
    assert_eq!(sessions.len(), 2);
    assert_ne!(sessions[0].1, sessions[1].1, "Stripe keys are per customer");
}

#[tokio::test]
async fn purchases_with_bad_input_name_the_field_and_do_nothing() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    let cases: [(&str, Option<&str>, u16, &str); 10] = [
        (
            r#"{"sku": "professional", "seats": 5.5}"#,
            Some("k0"),
            400,
            "seats",
        ),
        (
            r#"{"sku": "professional", "seats": 1}"#,
            None,
            400,
            "Idempotency-Key",
        ),
        (
            r#"{"sku": "professional", "seats": 0}"#,
            Some("k1"),
            400,
            "seats",
        ),
        (
            r#"{"sku": "professional", "seats": 101}"#,
            Some("k2"),
            400,
            "seats",
        ),
        (
            r#"{"sku": "professional", "seats": -3}"#,
            Some("k3"),
            400,
            "seats",
        ),
        (
            r#"{"sku": "professional", "seats": "five"}"#,
            Some("k4"),
            400,
            "seats",
        ),
        (r#"{"sku": "platinum", "seats": 5}"#, Some("k5"), 400, "sku"),
        (
            r#"{"sku": "professional", "seats": 5, "coupon": "FREE"}"#,
            Some("k6"),
            400,
            "coupon",
        ),
        (r#"{"sku": "professional"}"#, Some("k7"), 400, "seats"),
        (
            r#"{"sku": "professional", "seats": 5"#,
            Some("k8"),
            400,
            "body",
        ),
    ];
    for (body, key, status, field) in cases {
        let r = f
            .api
            .handle(&post("/v1/checkout-sessions", &t, key, body))
            .await;
        assert_eq!(r.status, status, "{body}: {r:?}");
        let v = r.json_body();
        assert_eq!(v["field"], field, "{body}: {v}");
        let text = v.to_string();
        assert!(
            !text.contains("five") && !text.contains("FREE") && !text.contains("platinum"),
            "{text}"
        );
    }
    assert!(f.stripe.checkout_sessions().is_empty());
    // JSON's 5.0 is the integer 5 (as JSON Schema reads it).
    let r = f
        .api
        .handle(&post(
            "/v1/checkout-sessions",
            &t,
            Some("whole"),
            r#"{"sku": "professional", "seats": 5.0}"#,
        ))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(f.stripe.checkout_sessions()[0].0.quantity, 5);
}

#[tokio::test]
async fn automatic_tax_is_asked_of_checkout_when_the_deployment_enables_it() {
    let mut f = fixture().await;
    let mut s = settings();
    s.automatic_tax = true;
    let verifier = TokenVerifier::new(
        AuthConfig::new(ISS, AUD),
        Arc::new(StaticKeySource(f.issuer.jwks())),
    );
    f.api = PortalApi::new(verifier, f.api.ports.clone(), s);
    let t = f.issuer.customer_token("cus_B");
    let r = f
        .api
        .handle(&post(
            "/v1/checkout-sessions",
            &t,
            Some("tax"),
            r#"{"sku": "professional", "seats": 3}"#,
        ))
        .await;
    assert_eq!(
        (r.status, r.json_body()["automatic_tax"].clone()),
        (201, json!(true))
    );
    assert!(f.stripe.checkout_sessions()[0].0.automatic_tax);
}

#[tokio::test]
async fn a_seat_change_is_previewed_then_applied_within_the_self_service_limit() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    // 27 seats: 27 × $15 × 12 = $4 860, under $5 000.
    let r = f
        .api
        .handle(&get("/v1/subscriptions/sub_cus_A/seats?seats=27", Some(&t)))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json_body();
    assert_eq!(v["action"], "apply", "{v}");
    assert_eq!(
        (v["current_seats"].clone(), v["seats"].clone()),
        (json!(25), json!(27))
    );
    assert_eq!(v["annual_value"]["current"]["amount"], 450_000);
    assert_eq!(v["annual_value"]["proposed"]["amount"], 486_000);
    let date = v["proration"]["date"].as_i64().unwrap();

    let r = f
        .api
        .handle(&post(
            "/v1/subscriptions/sub_cus_A/seats",
            &t,
            Some("seats-27"),
            &json!({"seats": 27, "proration_date": date}).to_string(),
        ))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json_body()["status"], "applied");
    let sub = f.stripe.subscription_json("sub_cus_A").unwrap();
    assert_eq!(sub["items"]["data"][0]["quantity"], 27);
    assert!(f.crm.opportunities().is_empty());
}

#[tokio::test]
async fn a_seat_change_over_the_limit_becomes_an_opportunity_and_is_not_applied() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    // 28 seats: $5 040 a year.
    let preview = f
        .api
        .handle(&get("/v1/subscriptions/sub_cus_A/seats?seats=28", Some(&t)))
        .await
        .json_body();
    assert_eq!(preview["action"], "sales_assisted", "{preview}");
    let r = f
        .api
        .handle(&post(
            "/v1/subscriptions/sub_cus_A/seats",
            &t,
            Some("seats-28"),
            r#"{"seats": 28}"#,
        ))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let v = r.json_body();
    assert_eq!(v["status"], "sales_assisted");
    assert!(v["message"].as_str().unwrap().contains("not applied"));
    let opps = f.crm.opportunities();
    assert_eq!(opps.len(), 1);
    let o = &opps[0];
    assert_eq!(o.account_external_id, "cus_A");
    assert_eq!(
        o.owner_id, "sales-desk",
        "no account owner: the configured sales owner"
    );
    assert_eq!(o.amount.as_ref().map(|m| m.amount), Some(504_000));
    assert_eq!(o.stage, crate::crm::OpportunityStage::Open);
    assert_eq!(o.seats, Some(28));
    let sub = f.stripe.subscription_json("sub_cus_A").unwrap();
    assert_eq!(sub["items"]["data"][0]["quantity"], 25, "not applied");
}

#[tokio::test]
async fn seat_changes_refuse_bad_counts_and_other_customers_subscriptions() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    for (q, field) in [
        ("0", "seats"),
        ("101", "seats"),
        ("25", "seats"),
        ("x", "seats"),
    ] {
        let r = f
            .api
            .handle(&get(
                &format!("/v1/subscriptions/sub_cus_A/seats?seats={q}"),
                Some(&t),
            ))
            .await;
        assert_eq!(
            (r.status, r.json_body()["field"].clone()),
            (400, json!(field)),
            "{q}"
        );
    }
    let theirs = f
        .api
        .handle(&get("/v1/subscriptions/sub_cus_B/seats?seats=6", Some(&t)))
        .await;
    let missing = f
        .api
        .handle(&get("/v1/subscriptions/sub_nope/seats?seats=6", Some(&t)))
        .await;
    assert_eq!((theirs.status, missing.status), (404, 404));
    assert_eq!(
        theirs.body, missing.body,
        "another customer's is exactly a missing one"
    );
    let r = f
        .api
        .handle(&post(
            "/v1/subscriptions/sub_cus_B/seats",
            &t,
            Some("k"),
            r#"{"seats": 6}"#,
        ))
        .await;
    assert_eq!(r.status, 404);
    let late = f
        .api
        .handle(&post(
            "/v1/subscriptions/sub_cus_A/seats",
            &t,
            Some("old"),
            r#"{"seats": 26, "proration_date": 1500000000}"#,
        ))
        .await;
    assert_eq!(
        (late.status, late.json_body()["field"].clone()),
        (400, json!("proration_date"))
    );
    let sub = f.stripe.subscription_json("sub_cus_B").unwrap();
    assert_eq!(sub["items"]["data"][0]["quantity"], 5);
}

#[tokio::test]
async fn stripe_down_is_503_with_nothing_done_and_the_key_free_for_the_retry() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    f.stripe.set_unavailable(true);
    let body = r#"{"seats": 26}"#;
    let r = f
        .api
        .handle(&post(
            "/v1/subscriptions/sub_cus_A/seats",
            &t,
            Some("retry-me"),
            body,
        ))
        .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(problem_type(&r), "urn:blapi:problem:dependency-unavailable");
    let c = f
        .api
        .handle(&post(
            "/v1/checkout-sessions",
            &t,
            Some("buy"),
            r#"{"sku": "professional", "seats": 2}"#,
        ))
        .await;
    assert_eq!(c.status, 503);
    f.stripe.set_unavailable(false);
    let sub = f.stripe.subscription_json("sub_cus_A").unwrap();
    assert_eq!(sub["items"]["data"][0]["quantity"], 25, "nothing half-done");
    let retry = f
        .api
        .handle(&post(
            "/v1/subscriptions/sub_cus_A/seats",
            &t,
            Some("retry-me"),
            body,
        ))
        .await;
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(
        retry.header("idempotent-replayed"),
        None,
        "a 503 is not replayed"
    );
    let sub = f.stripe.subscription_json("sub_cus_A").unwrap();
    assert_eq!(sub["items"]["data"][0]["quantity"], 26);
}

#[tokio::test]
async fn a_privacy_request_is_handed_over_for_the_signed_in_person_only() {
    let f = fixture().await;
    let t = f.issuer.customer_token("cus_A");
    let r = f
        .api
        .handle(&post(
            "/v1/privacy-requests",
            &t,
            Some("privacy-1"),
            r#"{"kind": "access", "jurisdiction": "gdpr"}"#,
        ))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let v = r.json_body();
    assert_eq!(
        (v["received"].clone(), v["due"].clone()),
        (json!("2026-11-15"), json!("2026-12-15"))
    );
    assert!(
        !v.to_string().contains("example.com"),
        "the answer does not echo the address"
    );
    let sent = f.queue.sent(PRIVACY_QUEUE);
    assert_eq!(sent.len(), 1);
    let msg: crate::queue::EventMessage = serde_json::from_str(&sent[0]).unwrap();
    let sub = crate::privacy::input::from_event(&msg).unwrap();
    assert_eq!(sub.email.as_str(), TestIssuer::email_of("cus_A"));
    assert_eq!(sub.id, v["request_id"].as_str().unwrap());
    // The same request again (a retry): the same answer, nothing sent twice.
    let again = f
        .api
        .handle(&post(
            "/v1/privacy-requests",
            &t,
            Some("privacy-1"),
            r#"{"kind": "access", "jurisdiction": "gdpr"}"#,
        ))
        .await;
    assert_eq!(again.json_body(), v);
    assert_eq!(f.queue.sent(PRIVACY_QUEUE).len(), 1);

    for (body, field) in [
        (
            r#"{"kind": "delete_everything", "jurisdiction": "gdpr"}"#,
            "kind",
        ),
        (
            r#"{"kind": "access", "jurisdiction": "mars"}"#,
            "jurisdiction",
        ),
        (
            r#"{"kind": "access", "jurisdiction": "gdpr", "opted_out": true}"#,
            "opted_out",
        ),
        (
            r#"{"kind": "access", "jurisdiction": "gdpr", "email": "x@y.example"}"#,
            "email",
        ),
    ] {
        let r = f
            .api
            .handle(&post("/v1/privacy-requests", &t, Some(field), body))
            .await;
        assert_eq!(
            (r.status, r.json_body()["field"].clone()),
            (400, json!(field)),
            "{body}"
        );
    }
    let op = f
        .api
        .handle(&post(
            "/v1/privacy-requests?customer=cus_A",
            &f.issuer.operator_token("staff-1"),
            Some("op"),
            r#"{"kind": "access", "jurisdiction": "gdpr"}"#,
        ))
        .await;
    assert_eq!(op.status, 403);
    assert_eq!(f.queue.sent(PRIVACY_QUEUE).len(), 1);

    f.queue.set_failing(true);
    let down = f
        .api
        .handle(&post(
            "/v1/privacy-requests",
            &t,
            Some("privacy-2"),
            r#"{"kind": "erasure", "jurisdiction": "ccpa"}"#,
        ))
        .await;
    assert_eq!(down.status, 503);
}

#[tokio::test]
async fn a_paid_invoice_is_due_nothing_and_only_unpaid_failures_count_as_open() {
    use crate::billing::dunning::InvoiceFacts;
    let f = fixture().await;
    let facts = |failed: Option<i64>, paid: Option<i64>| InvoiceFacts {
        first_failed_at: failed,
        attempts: i64::from(failed.is_some()),
        paid_at: paid,
        ..InvoiceFacts::default()
    };
    let dunning = Dunning {
        status: Status::PastDue,
        invoices: BTreeMap::from([
            // 2026-10 failed once, then was paid; another invoice failed and is unpaid.
            ("in_cus_A_2026-10".to_string(), facts(Some(100), Some(200))),
            ("in_cus_A_2026-11".to_string(), facts(Some(300), None)),
        ]),
        as_of: 300,
        ..Dunning::default()
    };
    DunningStore::save(&*f.billing, "cus_A", &dunning, 0)
        .await
        .unwrap();
    let t = f.issuer.customer_token("cus_A");
    let v = f
        .api
        .handle(&get("/v1/invoices", Some(&t)))
        .await
        .json_body();
    let by_id = |id: &str| {
        v["invoices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("2026-10")["status"], "paid");
    assert_eq!(by_id("2026-10")["amount_due"]["amount"], 0);
    assert_eq!(by_id("2026-11")["status"], "open");
    assert_eq!(by_id("2026-11")["amount_due"]["amount"], 12_000);
    let account = f
        .api
        .handle(&get("/v1/account", Some(&t)))
        .await
        .json_body();
    assert_eq!(account["dunning"]["open_invoices"], 1, "{account}");
    assert_eq!(account["status"], "past_due");
}
