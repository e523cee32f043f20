//! The portal API's hot paths, through the handler with in-memory ports: the median and p99
//! of each endpoint (token verification included, as every request pays it), and the token
//! verification alone per algorithm. Percentiles need every sample, so this is a plain
//! harness, not criterion: each case runs `BENCH_PORTAL_ITERS` times (default 3 000) after a
//! warm-up, one request at a time.
//!
//! `cargo bench -p portal-api --bench portal` (part of `make bench`); the table is printed and
//! written to `target/bench/portal.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use blapi::billing::dunning::Dunning;
use blapi::billing::invoice::{Invoice, StripeRefs};
use blapi::billing::money::Quantity;
use blapi::billing::ports::{
    BillState, DunningStore, InvoiceRecord, InvoiceStore, SubscriptionView, UsageStore,
};
use blapi::billing::subscription::Subscription;
use blapi::billing::usage::Usage;
use blapi::customers::state::{CustomerState, CustomerStore, Term};
use blapi::licensing::format::LicenseKey;
use blapi::licensing::store::{LicenseRecord, LicenseStatus, LicenseStore};
use blapi::portal::api::{Offer, PortalApi, Settings};
use blapi::portal::auth::{AuthConfig, StaticKeySource, TokenVerifier};
use blapi::portal::http::Request;
use blapi::portal::testkit::{KeyKind, MemoryPorts, TestIssuer};
use blapi::storage::ObjectStore;
use blapi::values::Currency;
use chrono::{Datelike, Utc};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ISS: &str = "https://idp.example.test/";
const AUD: &str = "blapi-portal";
const CUS: &str = "cus_bench";

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let total: Duration = samples.iter().sum();
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: total / samples.len() as u32,
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

async fn seed(mem: &MemoryPorts) {
    let now = Utc::now();
    let start = now.with_day(1).unwrap().timestamp();
    let mut state = CustomerState::new(CUS);
    state.subscriptions.insert(
        "sub_bench".into(),
        Term {
            status: "active".into(),
            start,
            end: start + 30 * 86_400,
            seats: Some(25),
            sku: Some("professional".into()),
            annual_value: None,
            cancel_reason: None,
            plan: Some("cloud-pro".into()),
            interval: Some("month".into()),
            interval_count: Some(1),
            mrr: None,
            cancel_at_period_end: false,
            history: Vec::new(),
        },
    );
    mem.customers.save(&state).await.unwrap();
    for i in 0..3u32 {
        let id = LicenseKey {
            subscription_id: "sub_bench".into(),
            period_start_ms: 1_790_000_000_000 + i64::from(i),
            quantity: 25,
            sku: "professional".into(),
            supersedes: None,
        }
        .license_id();
        let rec = LicenseRecord {
            file_key: format!("licenses/{CUS}/{id}.mattermost-license"),
            file: "x".repeat(1_400),
            license_id: id,
            customer_id: CUS.into(),
            subscription_id: "sub_bench".into(),
            period_start_ms: 1_790_000_000_000,
            period_end_ms: 1_821_536_000_000,
            quantity: 25,
            sku: "professional".into(),
            status: LicenseStatus::Issuing,
            supersedes: None,
            superseded_by: None,
            revoked_at: None,
            revoked_reason: None,
            issued_at: 1_790_000_100_000,
            starts_at: 1_790_000_000_000,
            expires_at: 1_821_536_000_000,
            is_trial: false,
            kid: "k1".into(),
        };
        mem.licenses.begin(&rec, None).await.unwrap();
        mem.files
            .put(&rec.file_key, rec.file.clone().into_bytes(), "text/plain")
            .await
            .unwrap();
        mem.licenses.activate(&rec, None, 0).await.unwrap();
    }
    for m in 1..=12u32 {
        let period = format!("2025-{m:02}");
        mem.billing
            .create(&InvoiceRecord {
                state: BillState::Done,
                invoice: Invoice {
                    customer: CUS.into(),
                    period: period.parse().unwrap(),
                    currency: Currency::try_from("usd".to_owned()).unwrap(),
                    price_book_version: "2026-10-01".into(),
                    lines: Vec::new(),
                    subtotal: 40_000,
                    credit_applied: 0,
                    total: 40_000,
                },
                refs: StripeRefs {
                    invoice: Some(format!("in_{m}")),
                    items: BTreeMap::new(),
                    finalized: true,
                    ..StripeRefs::default()
                },
                attempts: 1,
                version: 1,
            })
            .await
            .unwrap();
    }
    DunningStore::save(&*mem.billing, CUS, &Dunning::default(), 0)
        .await
        .unwrap();
    mem.billing
        .upsert(&Subscription {
            customer: CUS.into(),
            subscription: "sub_bench".into(),
            plan: "cloud-pro".into(),
            quantity: 25,
            status: "active".into(),
            currency: None,
            start,
            end: None,
            updated_at: start,
        })
        .await
        .unwrap();
    // A month of usage so far: 30 days x 3 metrics x 10 records.
    for i in 0..900i64 {
        let metric = match i % 3 {
            0 => "api_calls",
            1 => "builds",
            _ => "peak_nodes",
        };
        let u = Usage {
            id: format!("u{i}"),
            customer: CUS.into(),
            subscription: "sub_bench".into(),
            metric: metric.into(),
            value: Quantity::from_int(1 + i % 7),
            timestamp: now,
            installation: None,
        };
        mem.billing.put_records(&[u], None).await.unwrap();
    }
    mem.stripe
        .put_customer(json!({"id": CUS, "invoice_settings": {"default_payment_method": "pm_b"}}));
    mem.stripe.put_payment_method(json!({"id": "pm_b", "card": {"brand": "visa", "last4": "4242", "exp_month": 1, "exp_year": 2031}}));
    mem.stripe.put_subscription(json!({
        "id": "sub_bench", "customer": CUS, "status": "active",
        "current_period_start": start, "current_period_end": start + 30 * 86_400, "currency": "usd",
        "metadata": {"blapi_plan": "cloud-pro"},
        "items": {"object": "list", "has_more": false, "data": [{
            "id": "si_bench", "quantity": 25,
            "plan": {"id": "plan_cloud_pro", "amount": 0, "currency": "usd", "interval": "month",
                     "metadata": {"sku": "professional"}}}]},
    }));
}

fn request(
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
    key: Option<String>,
) -> Request {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let mut headers = BTreeMap::from([("authorization".to_owned(), format!("Bearer {token}"))]);
    if let Some(k) = key {
        headers.insert("idempotency-key".into(), k);
    }
    Request {
        method: method.into(),
        path: path.into(),
        query: query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        headers,
        body: body.unwrap_or_default().as_bytes().to_vec(),
    }
}

fn main() {
    let iters: usize = std::env::var("BENCH_PORTAL_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut issuer = TestIssuer::new(ISS, AUD);
        issuer.add_key("ed", KeyKind::EdDsa);
        issuer.add_key("ec", KeyKind::Es256);
        let mem = MemoryPorts::default();
        seed(&mem).await;
        let settings = Settings {
            catalog: BTreeMap::from([(
                "professional".to_owned(),
                Offer {
                    price: "plan_cloud_pro".into(),
                    max_seats: 100,
                    plan: Some("cloud-pro".into()),
                },
            )]),
            privacy_queue_url: "https://sqs.bench/privacy".into(),
            ..Settings::default()
        };
        let verifier = || {
            TokenVerifier::new(
                AuthConfig::new(ISS, AUD),
                Arc::new(StaticKeySource(issuer.jwks())),
            )
        };
        let api = PortalApi::new(verifier(), mem.ports(), settings);
        let token = issuer.customer_token(CUS);
        let license = mem.licenses.all()[0].license_id.to_string();
        let mut rows = Vec::new();

        // Token verification alone, keys cached (the first call fetched them).
        let v = verifier();
        let now = blapi::portal::testkit::now();
        for (alg, kid) in [("RS256", "k1"), ("EdDSA", "ed"), ("ES256", "ec")] {
            let t = issuer.sign(kid, &issuer.customer_claims(CUS, now));
            v.verify(&t).await.unwrap();
            let mut samples = Vec::with_capacity(iters * 4);
            for _ in 0..iters * 4 {
                let s = Instant::now();
                std::hint::black_box(v.verify(&t).await.unwrap());
                samples.push(s.elapsed());
            }
            rows.push((format!("JWT verify {alg}"), stats(samples)));
        }

        let period = Utc::now().format("%Y-%m").to_string();
        let cases: Vec<(&str, String, &str, Option<&str>, bool)> = vec![
            ("GET /v1/account", "/v1/account".into(), "GET", None, false),
            ("GET /v1/licenses", "/v1/licenses".into(), "GET", None, false),
            ("GET /v1/licenses/{id}", format!("/v1/licenses/{license}"), "GET", None, false),
            ("GET /v1/licenses/{id}/file", format!("/v1/licenses/{license}/file"), "GET", None, false),
            ("GET /v1/invoices (12)", "/v1/invoices".into(), "GET", None, false),
            ("GET /v1/invoices/{period}", "/v1/invoices/2025-06".into(), "GET", None, false),
            ("GET /v1/usage (900 records)", format!("/v1/usage?period={period}"), "GET", None, false),
            ("GET /v1/subscriptions/{id}/seats", "/v1/subscriptions/sub_bench/seats?seats=27".into(), "GET", None, false),
            ("POST /v1/checkout-sessions", "/v1/checkout-sessions".into(), "POST", Some(r#"{"sku": "professional", "seats": 5}"#), true),
            ("POST /v1/privacy-requests", "/v1/privacy-requests".into(), "POST", Some(r#"{"kind": "access", "jurisdiction": "gdpr"}"#), true),
            ("POST replay (same key)", "/v1/checkout-sessions".into(), "POST", Some(r#"{"sku": "professional", "seats": 5}"#), false),
            ("401 (expired token)", "/v1/licenses".into(), "GET", None, false),
        ];
        let mut expired_claims = issuer.customer_claims(CUS, now - 3_600);
        expired_claims["exp"] = json!(now - 600);
        let expired = issuer.sign("k1", &expired_claims);
        for (case, (name, path, method, body, fresh_key)) in cases.into_iter().enumerate() {
            let tok = if name.starts_with("401") { &expired } else { &token };
            let mut samples = Vec::with_capacity(iters);
            for i in 0..iters + 50 {
                let key = match (method, fresh_key) {
                    ("POST", true) => Some(format!("bench-{case}-{i}")),
                    ("POST", false) => Some("bench-replay".to_owned()),
                    _ => None,
                };
                let req = request(method, &path, tok, body, key);
                let s = Instant::now();
                let r = api.handle(&req).await;
                let took = s.elapsed();
                assert!(
                    r.status < 500 && (r.status < 400 || name.starts_with("401")),
                    "{name}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
                if i >= 50 {
                    samples.push(took);
                }
            }
            rows.push((name.to_owned(), stats(samples)));
        }

        let mut out = String::from(
            "| case | p50 µs | p99 µs | mean µs |\n|---|---:|---:|---:|\n",
        );
        for (name, s) in &rows {
            out.push_str(&format!(
                "| {name} | {} | {} | {} |\n",
                micros(s.p50),
                micros(s.p99),
                micros(s.mean)
            ));
        }
        println!("\nportal-api through the handler, in-memory ports, {iters} requests each (after 50 warm-up):\n\n{out}");
        let dir = blapi_infra::repo_root().join("target/bench");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("portal.md"), out).unwrap();
    });
}
