//! The portal API through its handler with in-memory ports and an in-process identity provider.

use super::api::{PaymentMethodView, PaymentMethods, PortalApi, Ports, Settings};
use super::auth::{AuthConfig, StaticKeySource, TokenVerifier};
use super::http::{Request, Response};
use super::testkit::{TestIssuer, now};
use crate::billing::dunning::{Dunning, Status};
use crate::billing::invoice::{Invoice, StripeRefs};
use crate::billing::memory::MemoryBilling;
use crate::billing::ports::{BillState, DunningStore, InvoiceRecord, InvoiceStore};
use crate::customers::state::{CustomerState, CustomerStore, MemoryCustomers, Term};
use crate::error::{Error, Result};
use crate::licensing::format::LicenseKey;
use crate::licensing::store::{LicenseRecord, LicenseStatus, LicenseStore, MemoryLicenseStore};
use crate::storage::{MemoryStore, ObjectStore};
use crate::values::Currency;
use async_trait::async_trait;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const ISS: &str = "https://id.example.test/";
const AUD: &str = "blapi-portal";

#[derive(Default)]
struct Cards {
    down: AtomicBool,
}

#[async_trait]
impl PaymentMethods for Cards {
    async fn default_method(&self, customer: &str) -> Result<Option<PaymentMethodView>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::dependency("stripe", true, "connection refused"));
        }
        Ok((customer == "cus_A").then(|| PaymentMethodView {
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2030,
        }))
    }
}

struct Fixture {
    issuer: TestIssuer,
    api: PortalApi,
    licenses: Arc<MemoryLicenseStore>,
    cards: Arc<Cards>,
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
    let cards = Arc::new(Cards::default());
    let api = PortalApi::new(
        verifier,
        Ports {
            customers,
            licenses: licenses.clone(),
            files,
            invoices: billing.clone(),
            dunning: billing,
            payment_methods: cards.clone(),
        },
        Settings::default(),
    );
    Fixture {
        issuer,
        api,
        licenses,
        cards,
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
    f.cards.down.store(true, Ordering::SeqCst);
    let t = f.issuer.customer_token("cus_A");
    let r = f.api.handle(&get("/v1/account", Some(&t))).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(problem_type(&r), "urn:blapi:problem:dependency-unavailable");
    assert!(!String::from_utf8_lossy(&r.body).contains("refused"));
}
