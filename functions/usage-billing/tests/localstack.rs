//! usage-billing against the local stack: moto (DynamoDB, SQS, S3, Secrets Manager) provisioned
//! from template.yaml, and localstripe over HTTP (wiremock where a Stripe fault is needed).
//! Needs `make up` (moto on 4599, localstripe on 8420).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use blapi::aws::Clients;
use blapi::billing::Config;
use blapi::billing::dynamo::DynamoBilling;
use blapi::billing::memory::HeldWrites;
use blapi::billing::ports::{Credits, InvoiceStore, UsageStore};
use blapi::billing::usage::{IngestPolicy, RejectReason};
use blapi::config::Env;
use blapi::config::Secret;
use blapi::retry::RetryPolicy;
use blapi::storage::{MemoryStore, ObjectStore, S3Store};
use blapi::stripe::StripeClient;
use chrono::{DateTime, Utc};
use lambda_runtime::{Context, LambdaEvent};
use std::sync::Arc;
use std::time::Duration;
use usage_billing::handler::{App, Ports};

mod support;
use support::{call, message, sqs_event};

const PERIOD: &str = "2026-10";

fn localstripe() -> String {
    std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into())
}

fn clock() -> Arc<dyn Fn() -> DateTime<Utc> + Send + Sync> {
    let now: DateTime<Utc> = "2026-11-01T02:00:00Z".parse().unwrap();
    Arc::new(move || now)
}

struct Ctx {
    stack: blapi_infra::LocalStack,
    clients: Clients,
}

impl Ctx {
    async fn new(fresh: bool) -> Self {
        let stack = if fresh {
            blapi_infra::testing::fresh_stack().await
        } else {
            blapi_infra::testing::stack().clone()
        };
        let clients = Clients::new(&stack.sdk_config().await);
        Self { stack, clients }
    }

    /// The app as Lambda wires it, on this stack and localstripe (or `stripe_base`), with
    /// the clock pinned; `adjust` swaps a port (fault injection). No settle time after a
    /// period closes: these tests bill right away and nothing ingests meanwhile (the race
    /// has its own test, with the template's window and settle).
    async fn app_with(&self, stripe_base: Option<String>, adjust: impl FnOnce(&mut Ports)) -> App {
        let (mut config, ports) = self.deployed(stripe_base, adjust).await;
        config.service.ingest = IngestPolicy::settled();
        App::new(config, ports)
    }

    /// The configuration and ports exactly as the template's local parameters give them.
    async fn deployed(
        &self,
        stripe_base: Option<String>,
        adjust: impl FnOnce(&mut Ports),
    ) -> (Config, Ports) {
        let mut env = self.stack.env("usage-billing");
        env.insert(
            "STRIPE_API_BASE".into(),
            stripe_base.unwrap_or_else(localstripe),
        );
        let config = Config::from_env(&Env::from_map(env)).unwrap();
        let mut ports = Ports::connect(&config, &self.clients).await.unwrap();
        ports.clock = clock();
        adjust(&mut ports);
        (config, ports)
    }

    async fn app(&self) -> App {
        self.app_with(None, |_| {}).await
    }

    fn env(&self, k: &str) -> String {
        self.stack.env("usage-billing")[k].clone()
    }

    fn table(&self) -> DynamoBilling {
        DynamoBilling::new(self.clients.dynamodb().clone(), self.env("BILLING_TABLE"))
    }

    fn artifacts(&self) -> S3Store {
        S3Store::new(self.clients.s3().clone(), self.env("ARTIFACTS_BUCKET"))
    }
}

fn failures(resp: &serde_json::Value) -> usize {
    resp["batchItemFailures"].as_array().map_or(0, Vec::len)
}

/// Runs every message of the billing-jobs queue through the handler (each delivered
/// `copies` times) until the queue is empty. Returns the messages handled.
async fn drain_jobs(ctx: &Ctx, app: &App, copies: usize) -> usize {
    let url = ctx.env("BILLING_JOBS_QUEUE_URL");
    let arn = ctx
        .stack
        .attr("BillingJobsQueue", "Arn")
        .unwrap_or("arn:aws:sqs:us-east-1:123456789012:BillingJobsQueue")
        .to_owned();
    let mut handled = 0;
    let mut empty_rounds = 0;
    while empty_rounds < 2 {
        let out = ctx
            .clients
            .sqs()
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let msgs = out.messages.unwrap_or_default();
        if msgs.is_empty() {
            empty_rounds += 1;
            continue;
        }
        empty_rounds = 0;
        let mut bodies = Vec::new();
        for m in &msgs {
            for _ in 0..copies {
                bodies.push(m.body().unwrap().to_owned());
            }
        }
        let resp = call(app, sqs_event(&arn, &bodies)).await;
        assert_eq!(failures(&resp), 0, "{resp}");
        for m in &msgs {
            ctx.clients
                .sqs()
                .delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        handled += msgs.len();
    }
    handled
}

/// localstripe: a zero-amount plan and, per customer, a customer with a subscription on it
/// (localstripe only invoices customers that have a subscription).
async fn stripe_customer(http: &reqwest::Client, base: &str) -> (String, String) {
    let _ = http
        .post(format!("{base}/v1/plans"))
        .basic_auth("sk_test_blapi_local", Some(""))
        .form(&[
            ("id", "blapi-metered-zero"),
            ("amount", "0"),
            ("currency", "usd"),
            ("interval", "month"),
            ("product[name]", "usage"),
        ])
        .send()
        .await
        .unwrap();
    let c: serde_json::Value = http
        .post(format!("{base}/v1/customers"))
        .basic_auth("sk_test_blapi_local", Some(""))
        .form(&[(
            "email",
            format!("{}@example.com", uuid::Uuid::new_v4().simple()),
        )])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cus = c["id"].as_str().unwrap().to_owned();
    let s: serde_json::Value = http
        .post(format!("{base}/v1/subscriptions"))
        .basic_auth("sk_test_blapi_local", Some(""))
        .form(&[
            ("customer", cus.as_str()),
            ("items[0][plan]", "blapi-metered-zero"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (cus, s["id"].as_str().unwrap().to_owned())
}

/// Our invoices of a customer on localstripe: (id, total, line amounts).
async fn our_invoices(
    http: &reqwest::Client,
    base: &str,
    customer: &str,
) -> Vec<(String, i64, Vec<i64>)> {
    let list: serde_json::Value = http
        .get(format!("{base}/v1/invoices"))
        .basic_auth("sk_test_blapi_local", Some(""))
        .query(&[("customer", customer), ("limit", "100")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = Vec::new();
    for inv in list["data"].as_array().unwrap() {
        if !inv["description"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("ref {customer}:{PERIOD}"))
        {
            continue;
        }
        let mut lines: Vec<i64> = inv["lines"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["type"] == "invoiceitem")
            .map(|l| l["amount"].as_i64().unwrap())
            .collect();
        lines.sort_unstable();
        out.push((
            inv["id"].as_str().unwrap().to_owned(),
            inv["total"].as_i64().unwrap(),
            lines,
        ));
    }
    out
}

async fn check(http: &reqwest::Client, base: &str, expected: &[(&String, i64, Vec<i64>)]) {
    for (cus, total, lines) in expected {
        let invs = our_invoices(http, base, cus).await;
        assert_eq!(invs.len(), 1, "{cus}: exactly one invoice: {invs:?}");
        assert_eq!(invs[0].1, *total, "{cus}: total");
        assert_eq!(&invs[0].2, lines, "{cus}: lines");
    }
}

fn subscription_event(cus: &str, sub: &str, plan: &str, qty: i64, start: &str) -> String {
    let start = start.parse::<DateTime<Utc>>().unwrap().timestamp();
    message(
        "stripe",
        "customer.subscription.created",
        serde_json::json!({"id": format!("evt_{}", uuid::Uuid::new_v4().simple()), "type": "customer.subscription.created",
            "created": start + 1, "data": {"object": {"id": sub, "customer": cus, "status": "active", "start_date": start,
            "metadata": {"blapi_plan": plan}, "items": {"data": [{"quantity": qty, "plan": {"id": "blapi-metered-zero", "currency": "usd"}}]}}}}),
    )
}

fn usage_event(records: Vec<serde_json::Value>) -> String {
    message(
        "telemetry",
        "usage.reported",
        serde_json::json!({"type": "usage.reported", "timestamp": "2026-10-31T22:00:00Z", "data": {"records": records}}),
    )
}

fn rec(
    cus: &str,
    sub: &str,
    metric: &str,
    value: serde_json::Value,
    t: &str,
    inst: &str,
) -> serde_json::Value {
    serde_json::json!({"id": uuid::Uuid::new_v4().to_string(), "customer": cus, "subscription": sub, "metric": metric,
        "value": value, "timestamp": t, "installation": inst})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_is_invoiced_once_with_reruns_duplicates_and_a_failed_artifact_write() {
    let ctx = Ctx::new(true).await;
    let app = ctx.app().await;
    let http = reqwest::Client::new();
    let base = localstripe();
    let (a, sa) = stripe_customer(&http, &base).await;
    let (b, sb) = stripe_customer(&http, &base).await;
    let (c, sc) = stripe_customer(&http, &base).await;
    let (d, sd) = stripe_customer(&http, &base).await;
    let arn = "arn:aws:sqs:us-east-1:123456789012:local-BillingEventsQueue";

    // the subscription view, from billing events (one delivered twice, out of order)
    let subs = vec![
        subscription_event(&a, &sa, "cloud-pro", 2, "2026-09-01T00:00:00Z"),
        subscription_event(&b, &sb, "cloud-starter", 1, "2026-10-21T00:00:00Z"),
        subscription_event(&c, &sc, "cloud-pro", 1, "2026-09-01T00:00:00Z"),
        subscription_event(&d, &sd, "cloud-pro", 1, "2026-09-01T00:00:00Z"),
    ];
    let resp = call(&app, sqs_event(arn, &subs)).await;
    assert_eq!(failures(&resp), 0, "{resp}");

    // usage
    let mut records: Vec<serde_json::Value> = (0..10)
        .map(|_| {
            rec(
                &a,
                &sa,
                "builds",
                serde_json::json!(1),
                "2026-10-03T10:00:00Z",
                "i1",
            )
        })
        .collect();
    records.extend([
        rec(
            &a,
            &sa,
            "api_calls",
            serde_json::json!(20_000),
            "2026-10-04T10:00:00Z",
            "i1",
        ),
        rec(
            &a,
            &sa,
            "api_calls",
            serde_json::json!(5_000),
            "2026-10-24T10:00:00Z",
            "i1",
        ),
        rec(
            &a,
            &sa,
            "peak_nodes",
            serde_json::json!(3),
            "2026-10-04T10:00:00Z",
            "i1",
        ),
        rec(
            &a,
            &sa,
            "peak_nodes",
            serde_json::json!(4),
            "2026-10-05T10:00:00Z",
            "i1",
        ),
        rec(
            &a,
            &sa,
            "capacity",
            serde_json::json!(7),
            "2026-10-10T00:00:00Z",
            "i1",
        ),
        rec(
            &a,
            &sa,
            "capacity",
            serde_json::json!(5),
            "2026-10-05T00:00:00Z",
            "i1",
        ),
        rec(
            &b,
            &sb,
            "api_calls",
            serde_json::json!(1500),
            "2026-10-22T10:00:00Z",
            "ia",
        ),
        rec(
            &b,
            &sb,
            "storage_gb",
            serde_json::json!(31),
            "2026-10-21T00:00:00Z",
            "ia",
        ),
        rec(
            &b,
            &sb,
            "active_installations",
            serde_json::json!(1),
            "2026-10-22T00:00:00Z",
            "ia",
        ),
        rec(
            &b,
            &sb,
            "active_installations",
            serde_json::json!(1),
            "2026-10-23T00:00:00Z",
            "ib",
        ),
        rec(
            &b,
            &sb,
            "active_installations",
            serde_json::json!(1),
            "2026-10-24T00:00:00Z",
            "ia",
        ),
        // refused: unknown metric, negative, unknown customer, too old
        rec(
            &a,
            &sa,
            "teleportations",
            serde_json::json!(1),
            "2026-10-04T10:00:00Z",
            "i1",
        ),
        rec(
            &a,
            &sa,
            "builds",
            serde_json::json!(-1),
            "2026-10-04T10:00:00Z",
            "i1",
        ),
        rec(
            "cus_nobody",
            "sub_nobody",
            "builds",
            serde_json::json!(1),
            "2026-10-04T10:00:00Z",
            "i1",
        ),
        rec(
            &a,
            &sa,
            "builds",
            serde_json::json!(1),
            "2026-08-04T10:00:00Z",
            "i1",
        ),
    ]);
    let batch = usage_event(records);
    let uarn = "arn:aws:sqs:us-east-1:123456789012:local-UsageEventsQueue";
    for _ in 0..2 {
        // delivered twice: the second delivery is all duplicates
        let resp = call(&app, sqs_event(uarn, std::slice::from_ref(&batch))).await;
        assert_eq!(failures(&resp), 0, "{resp}");
    }

    // credits: B 1000 (less than its invoice), C 5000 (more than its invoice)
    for (cus, amount) in [(&b, 1000), (&c, 5000)] {
        let out = call(&app, serde_json::json!({"action": "grant_credit", "customer": cus, "grant_id": "promo", "amount": amount, "currency": "usd"})).await;
        assert_eq!(out["added"], true);
    }

    // D: the artifact write fails after the Stripe invoice exists
    let failing = Arc::new(MemoryStore::new());
    failing.set_failing(true);
    let broken = ctx
        .app_with(None, |p| {
            p.billing.artifacts = failing as Arc<dyn ObjectStore>
        })
        .await;
    let err = broken
        .handle(LambdaEvent::new(
            serde_json::json!({"action": "bill", "customer": d, "period": PERIOD}),
            Context::default(),
        ))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        our_invoices(&http, &base, &d).await.len(),
        1,
        "the invoice exists, the artifact does not"
    );

    // plan + run every job, each delivered twice
    let out = call(
        &app,
        serde_json::json!({"action": "plan", "period": PERIOD}),
    )
    .await;
    assert_eq!(out["shard_jobs"], 16);
    let handled = drain_jobs(&ctx, &app, 2).await;
    // each shard job ran twice (duplicate delivery), so each customer's bill job was enqueued twice
    assert_eq!(
        handled,
        16 + 2 * 4,
        "16 shard jobs + two bill jobs per customer"
    );

    // A: seats 2 × 1500 + api 25 000 -> 3 × 900 + builds 10 × 2 + peak 4 × 300 + latest capacity 7 × 100
    // B: platform 2900 × 11/31 = 1029 + api tier 2 500 × 0.5 = 250 + storage 31 GB × 11/31 = 11 × 10 = 110
    //    + 2 installations × 500 = 1000 -> 2389 - credit 1000 = 1389
    // C: seat 1500 - credit 1500 = 0 ; D: seat 1500
    let expected = [
        (&a, 7620, vec![20, 700, 1200, 2700, 3000]),
        (&b, 1389, vec![-1000, 110, 250, 1000, 1029]),
        (&c, 0, vec![-1500, 1500]),
        (&d, 1500, vec![1500]),
    ];
    check(&http, &base, &expected).await;
    let store = ctx.artifacts();
    for (cus, total, _) in &expected {
        let json = store
            .get(&format!("invoices/{cus}/{PERIOD}.json"))
            .await
            .unwrap()
            .expect("json artifact");
        let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(doc["invoice"]["total"], *total);
        assert!(
            doc["stripe"]["invoice"]
                .as_str()
                .unwrap()
                .starts_with("in_")
        );
        let html = store
            .get(&format!("invoices/{cus}/{PERIOD}.html"))
            .await
            .unwrap()
            .expect("html artifact");
        assert!(String::from_utf8(html).unwrap().contains("Total"));
    }
    let table = ctx.table();
    assert_eq!(table.balance(&b).await.unwrap().unwrap().amount, 0);
    assert_eq!(table.balance(&c).await.unwrap().unwrap().amount, 3500);

    // the whole period again, every job twice: nothing new
    call(
        &app,
        serde_json::json!({"action": "plan", "period": PERIOD}),
    )
    .await;
    drain_jobs(&ctx, &app, 2).await;
    check(&http, &base, &expected).await;
    assert_eq!(table.balance(&b).await.unwrap().unwrap().amount, 0);
    assert_eq!(table.balance(&c).await.unwrap().unwrap().amount, 3500);

    // the period is closed: late usage is refused (reported, not counted)
    let late = usage_event(vec![rec(
        &a,
        &sa,
        "builds",
        serde_json::json!(1),
        "2026-10-30T10:00:00Z",
        "i1",
    )]);
    let resp = call(&app, sqs_event(uarn, &[late])).await;
    assert_eq!(failures(&resp), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_5xx_and_429_mid_invoice_resume_without_duplicates() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let ctx = Ctx::new(false).await;
    let server = MockServer::start().await;
    let cus = format!("cus_{}", uuid::Uuid::new_v4().simple());
    // The invoice is created first (500 until the first run's retries are exhausted), then
    // its item (one 429, then fine), on the resumed run, which first reads the invoice's
    // lines (none yet).
    Mock::given(method("GET"))
        .and(path("/v1/invoices/in_x"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"id": "in_x", "status": "draft", "lines": {"data": [], "has_more": false}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/invoiceitems"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/invoiceitems"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "ii_x"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/invoices"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/invoices"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"id": "in_x", "status": "draft", "total": 1500})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"data": [], "has_more": false})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/invoices/in_x/finalize"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"id": "in_x", "status": "open"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let stripe = StripeClient::new(
        server.uri(),
        Secret::new("sk_test_x".into()),
        Duration::from_secs(5),
    )
    .unwrap()
    .with_retry(RetryPolicy::immediate(2));
    let app = ctx
        .app_with(Some(server.uri()), |p| p.billing.stripe = Arc::new(stripe))
        .await;
    let sub = format!("sub_{}", uuid::Uuid::new_v4().simple());
    let resp = call(
        &app,
        sqs_event(
            "arn:aws:sqs:us-east-1:1:BillingEventsQueue",
            &[subscription_event(
                &cus,
                &sub,
                "cloud-pro",
                1,
                "2026-09-01T00:00:00Z",
            )],
        ),
    )
    .await;
    assert_eq!(failures(&resp), 0);
    let job = serde_json::json!({"action": "bill", "customer": cus, "period": PERIOD}).to_string();
    let jarn = "arn:aws:sqs:us-east-1:1:BillingJobsQueue";
    let first = call(&app, sqs_event(jarn, std::slice::from_ref(&job))).await;
    assert_eq!(
        failures(&first),
        1,
        "Stripe kept failing: the job is redelivered"
    );
    let second = call(&app, sqs_event(jarn, &[job.clone(), job])).await;
    assert_eq!(failures(&second), 0, "{second}");
    server.verify().await;
    let rec =
        blapi::billing::ports::InvoiceStore::load(&ctx.table(), &cus, PERIOD.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(rec.refs.invoice.as_deref(), Some("in_x"));
    assert_eq!(rec.state, blapi::billing::ports::BillState::Done);
    // The customer's invoice history (the portal's list) is that one record, from one Query.
    let all = blapi::billing::ports::InvoiceStore::for_customer(&ctx.table(), &cus)
        .await
        .unwrap();
    assert_eq!(all, vec![rec]);
    let none = blapi::billing::ports::InvoiceStore::for_customer(&ctx.table(), "cus_nobody")
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn the_billing_table_lets_a_same_second_cancellation_win_in_either_order() {
    use blapi::billing::ports::SubscriptionView;
    use blapi::billing::subscription::Subscription;
    let ctx = Ctx::new(false).await;
    let table = ctx.table();
    let view = |sub: &str, status: &str| {
        let obj = serde_json::json!({"id": sub, "customer": "cus_same_second", "status": status,
            "start_date": 1_780_000_000,
            "items": {"data": [{"quantity": 2, "plan": {"id": "plan_cloud_pro", "currency": "usd"}}]}});
        Subscription::from_stripe(&obj, 1_790_000_000).unwrap()
    };
    for (sub, first, second) in [
        (
            format!("sub_a{}", uuid::Uuid::new_v4().simple()),
            "canceled",
            "active",
        ),
        (
            format!("sub_b{}", uuid::Uuid::new_v4().simple()),
            "active",
            "canceled",
        ),
    ] {
        table.upsert(&view(&sub, first)).await.unwrap();
        table.upsert(&view(&sub, second)).await.unwrap();
        let stored = table.get("cus_same_second", &sub).await.unwrap().unwrap();
        assert_eq!(stored.status, "canceled", "{first} then {second}");
    }
}

/// The billing table's condition keeps the phase order of `Subscription::order_key`: a
/// cancelled view is never replaced by a live one (same second or later), a live one never by
/// an incomplete one; within a phase the later second wins. Items written before the phase was
/// stored (no `precedence` attribute) count as live.
#[tokio::test]
async fn the_billing_table_keeps_a_cancelled_subscription_cancelled() {
    use blapi::aws::dynamo::{n, s};
    use blapi::billing::ports::SubscriptionView;
    use blapi::billing::subscription::Subscription;
    let ctx = Ctx::new(false).await;
    let table = ctx.table();
    let customer = format!("cus_terminal{}", uuid::Uuid::new_v4().simple());
    let view = |sub: &str, status: &str, at: i64| {
        let obj = serde_json::json!({"id": sub, "customer": customer, "status": status,
            "start_date": 1_780_000_000, "canceled_at": 1_790_000_000,
            "items": {"data": [{"quantity": 2, "plan": {"id": "plan_cloud_pro", "currency": "usd"}}]}});
        Subscription::from_stripe(&obj, at).unwrap()
    };
    let t = 1_790_000_000;
    /// Upserts applied in order: (status, second, whether it is stored).
    type Steps<'a> = &'a [(&'a str, i64, bool)];
    // The steps, and the status left.
    let cases: [(Steps, &str); 5] = [
        (
            &[
                ("canceled", t, true),
                ("active", t, false),
                ("active", t + 5, false),
                ("past_due", t + 86_400, false),
                ("incomplete", t + 1, false),
            ],
            "canceled",
        ),
        (
            &[("active", t + 60, true), ("canceled", t, true)],
            "canceled",
        ),
        (
            &[
                ("canceled", t, true),
                ("canceled", t + 1, true),
                ("canceled", t, false),
            ],
            "canceled",
        ),
        (&[("active", t, true), ("incomplete", t, false)], "active"),
        (
            &[
                ("incomplete", t, true),
                ("active", t, true),
                ("past_due", t - 1, false),
            ],
            "active",
        ),
    ];
    for (i, (steps, left)) in cases.iter().enumerate() {
        let sub = format!("sub_{i}_{}", uuid::Uuid::new_v4().simple());
        for (status, at, stored) in *steps {
            assert_eq!(
                table.upsert(&view(&sub, status, *at)).await.unwrap(),
                *stored,
                "case {i}: {status} @{at}"
            );
        }
        let got = table.get(&customer, &sub).await.unwrap().unwrap();
        assert_eq!(got.status, *left, "case {i}");
    }

    // An item from before `precedence` was stored: a live view, replaced by a cancellation
    // (even an older one) and by a later live view, not by an incomplete one.
    let legacy = |sub: &str, at: i64| {
        let v = view(sub, "active", at);
        ctx.clients
            .dynamodb()
            .put_item()
            .table_name(ctx.env("BILLING_TABLE"))
            .item("pk", s(format!("CUST#{customer}")))
            .item("sk", s(format!("SUB#{sub}")))
            .item("updated_at", n(at))
            .item("doc", s(serde_json::to_string(&v).unwrap()))
            .send()
    };
    let sub = format!("sub_legacy{}", uuid::Uuid::new_v4().simple());
    legacy(&sub, t).await.unwrap();
    assert!(
        !table
            .upsert(&view(&sub, "incomplete", t + 1))
            .await
            .unwrap()
    );
    assert!(!table.upsert(&view(&sub, "past_due", t - 1)).await.unwrap());
    assert!(table.upsert(&view(&sub, "past_due", t)).await.unwrap());
    legacy(&sub, t).await.unwrap();
    assert!(table.upsert(&view(&sub, "canceled", t - 10)).await.unwrap());
    assert!(!table.upsert(&view(&sub, "active", t + 10)).await.unwrap());
    let got = table.get(&customer, &sub).await.unwrap().unwrap();
    assert_eq!(got.status, "canceled");
}

/// The consumers' claim-check reader on the real bucket: a body it sent comes back; an object
/// over the limit at a claim-check key, and any object outside `claim-check/`, are refused
/// (not retryable) without being read.
#[tokio::test]
async fn claim_checks_on_s3_read_only_their_own_bounded_objects() {
    use blapi::error::Error;
    use blapi::queue::{MAX_CLAIM_CHECK_BYTES, check_out, resolve_body};
    let ctx = Ctx::new(false).await;
    let store = ctx.artifacts();
    let body = format!("{{\"big\":\"{}\"}}", "x".repeat(300 * 1024));
    let pointer = check_out(&store, 1024, body.clone()).await.unwrap();
    assert_eq!(resolve_body(&store, &pointer).await.unwrap(), body);

    let pointer_to = |key: &str, bytes: usize| {
        serde_json::json!({"blapi_claim_check": {"bucket": store.bucket(), "key": key, "bytes": bytes}})
            .to_string()
    };
    let huge = format!("claim-check/{}.json", uuid::Uuid::now_v7());
    store
        .put(
            &huge,
            vec![b' '; MAX_CLAIM_CHECK_BYTES + 1],
            "application/json",
        )
        .await
        .unwrap();
    let e = resolve_body(&store, &pointer_to(&huge, 10))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(m) if m.contains("larger than")) && !e.is_retryable(),
        "{e:?}"
    );
    let outside = format!("archive/{}.json", uuid::Uuid::now_v7());
    store
        .put(&outside, b"{}".to_vec(), "application/json")
        .await
        .unwrap();
    for key in [
        outside.clone(),
        format!("claim-check/../{outside}"),
        format!("/claim-check/{}.json", uuid::Uuid::now_v7()),
    ] {
        let e = resolve_body(&store, &pointer_to(&key, 2))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("is not claim-check/"))
                && !e.is_retryable(),
            "{key}: {e:?}"
        );
    }
}

/// The period-close race on DynamoDB, with the template's local write window (1 s) and settle
/// time (2 s): an ingest that read "open" and writes within its window is billed even though
/// the close came first; one held past its window is listed as late; a bill run before the
/// settle time composes nothing. Never neither, never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_racing_the_period_close_is_billed_or_listed_late() {
    let ctx = Ctx::new(true).await;
    let http = reqwest::Client::new();
    let (a, sa) = stripe_customer(&http, &localstripe()).await;
    let table = Arc::new(ctx.table());
    let hold = std::collections::HashMap::from([
        ("held-in".to_owned(), Duration::from_millis(300)),
        ("held-out".to_owned(), Duration::from_millis(2_500)),
    ]);
    let (config, ports) = ctx
        .deployed(None, |p| {
            p.billing.usage = Arc::new(HeldWrites::new(table.clone(), hold))
        })
        .await;
    assert_eq!(config.service.ingest.write_window.num_seconds(), 1);
    assert_eq!(config.service.ingest.settle.num_seconds(), 2);
    let app = Arc::new(App::new(config, ports));
    let arn = "arn:aws:sqs:us-east-1:123456789012:local-BillingEventsQueue";
    let sub = subscription_event(&a, &sa, "cloud-pro", 1, "2026-09-01T00:00:00Z");
    assert_eq!(failures(&call(&app, sqs_event(arn, &[sub])).await), 0);
    let record = |id: &str| {
        let mut r = rec(
            &a,
            &sa,
            "builds",
            serde_json::json!(1),
            "2026-10-03T10:00:00Z",
            "i1",
        );
        r["id"] = serde_json::json!(id);
        r
    };
    let now: DateTime<Utc> = "2026-11-01T02:00:00Z".parse().unwrap();
    let early = app.billing.ingest(&[record("early")], now).await.unwrap();
    assert_eq!(early.accepted, 1);
    let held = |id: &'static str| {
        let app = app.clone();
        let r = record(id);
        tokio::spawn(async move { app.billing.ingest(&[r], now).await.unwrap() })
    };
    let (inside, outside) = (held("held-in"), held("held-out"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let plan = call(
        &app,
        serde_json::json!({"action": "plan", "period": PERIOD}),
    )
    .await;
    assert_eq!(plan["shard_jobs"], 16);
    let period = PERIOD.parse().unwrap();
    let too_soon = app.billing.bill(&a, period).await.unwrap_err();
    assert!(too_soon.is_retryable(), "{too_soon:?}");
    assert!(
        InvoiceStore::load(table.as_ref(), &a, period)
            .await
            .unwrap()
            .is_none(),
        "nothing composed before the settle time"
    );
    let inside = inside.await.unwrap();
    assert_eq!((inside.accepted, inside.rejected.len()), (1, 0));
    let outside = outside.await.unwrap();
    assert_eq!(outside.accepted, 0);
    assert_eq!(outside.rejected[0].reason, RejectReason::PeriodClosed);
    let mut billed = None;
    for _ in 0..50 {
        match app.billing.bill(&a, period).await {
            Ok(_) => {
                billed = InvoiceStore::load(table.as_ref(), &a, period)
                    .await
                    .unwrap();
                break;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    let rec = billed.expect("billed once settled");
    let builds: i64 = rec
        .invoice
        .lines
        .iter()
        .filter(|l| l.metric.as_deref() == Some("builds"))
        .map(|l| l.quantity.micros() / 1_000_000)
        .sum();
    assert_eq!(builds, 2, "early and held-in are billed, held-out is not");
    let ids: Vec<String> = table
        .records(&a, &sa, period)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(ids.contains(&"held-in".to_owned()) && !ids.contains(&"held-out".to_owned()));
    // A redelivery of a billed record after the close is a duplicate, not late.
    let again = app.billing.ingest(&[record("early")], now).await.unwrap();
    assert_eq!((again.duplicates, again.rejected.len()), (1, 0));
}
