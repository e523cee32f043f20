//! revenue-ops against the local stack: customer states in the CustomersTable, usage and
//! dunning in the billing table, the RevenueTable, the jobs and notifications queues and the
//! bucket in moto (provisioned from `template.yaml`, a fresh stack per test: the plan reads
//! every customer), the built-in CRM sink, and Salesforce played by wiremock for an outage.
//! Needs `make up`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use blapi::aws::Clients;
use blapi::billing::Quantity;
use blapi::billing::dunning::{Dunning, Status};
use blapi::billing::dynamo::DynamoBilling;
use blapi::billing::ports::{DunningStore, UsageStore};
use blapi::billing::usage::Usage;
use blapi::config::Env;
use blapi::crm::{CrmObject, SinkCrm};
use blapi::customers::state::{CustomerState, CustomerStore, DynamoCustomers, Term, ValuePoint};
use blapi::retry::RetryPolicy;
use blapi::revenue::Config;
use blapi::revenue::store::{DynamoRevenue, RevenueStore};
use blapi::storage::{ObjectStore, S3Store};
use blapi::values::Money;
use blapi_infra::testing::{drain_queue, fresh_stack, sqs_batch};
use chrono::{Days, NaiveDate, TimeZone, Utc};
use lambda_runtime::{Context, LambdaEvent};
use revenue_ops::{App, Ports};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DAY: &str = "2026-03-02";

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn secs(s: &str) -> i64 {
    date(s).and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
}

fn usd(c: i64) -> Money {
    Money::new(c, "usd".parse().unwrap())
}

/// A customer with one active subscription: (interval, MRR, seats, term end).
fn state(id: &str, sub: &str, interval: &str, mrr: i64, seats: u32, end: &str) -> CustomerState {
    let point = ValuePoint {
        at: secs("2025-06-01"),
        status: "active".into(),
        mrr: Some(usd(mrr)),
        seats: Some(seats),
        term_end: secs(end),
        cancel_at_period_end: false,
    };
    let mut s = CustomerState::new(id);
    s.owner_id = Some("005OWNER".into());
    s.subscriptions.insert(
        sub.into(),
        Term {
            status: "active".into(),
            start: secs("2025-06-01"),
            end: secs(end),
            seats: Some(seats),
            sku: Some("enterprise".into()),
            annual_value: Some(usd(mrr * 12)),
            cancel_reason: None,
            plan: None,
            interval: Some(interval.into()),
            interval_count: Some(1),
            mrr: Some(usd(mrr)),
            cancel_at_period_end: false,
            history: vec![point],
        },
    );
    s
}

struct World {
    app: App,
    clients: Clients,
    env: BTreeMap<String, String>,
    stack: blapi_infra::LocalStack,
}

impl World {
    async fn new(salesforce: Option<&MockServer>) -> Self {
        let stack = fresh_stack().await;
        let clients = Clients::new(&stack.sdk_config().await);
        let mut env = stack.env("revenue-ops");
        if let Some(sf) = salesforce {
            env.insert("SALESFORCE_LOGIN_URL".into(), sf.uri());
            env.insert("SALESFORCE_API_VERSION".into(), "v61.0".into());
            env.insert(
                "SALESFORCE_SECRET_ID".into(),
                format!("{}/salesforce", stack.prefix),
            );
        }
        let mut config = Config::from_env(&Env::from_map(env.clone())).unwrap();
        config.http_retry = Some(RetryPolicy::immediate(2));
        let ports = Ports::connect(&config, &clients).await.unwrap();
        Self {
            app: App::new(config, ports),
            clients,
            env,
            stack,
        }
    }

    fn billing(&self) -> DynamoBilling {
        DynamoBilling::new(
            self.clients.dynamodb().clone(),
            self.env["BILLING_TABLE"].clone(),
        )
    }

    fn revenue(&self) -> DynamoRevenue {
        DynamoRevenue::new(
            self.clients.dynamodb().clone(),
            self.env["REVENUE_TABLE"].clone(),
        )
    }

    fn sink(&self) -> SinkCrm {
        let store = Arc::new(S3Store::new(
            self.clients.s3().clone(),
            self.env["ARTIFACTS_BUCKET"].clone(),
        ));
        SinkCrm::new(
            self.clients.dynamodb().clone(),
            self.env["CRM_TABLE"].clone(),
            store,
        )
    }

    async fn put_customer(&self, s: &CustomerState) {
        DynamoCustomers::new(
            self.clients.dynamodb().clone(),
            self.env["CUSTOMERS_TABLE"].clone(),
        )
        .save(s)
        .await
        .unwrap();
    }

    /// 60 days of `metric` usage up to DAY: `before` a day, then `recent` a day; and the
    /// day's active users.
    async fn usage(&self, customer: &str, sub: &str, before: i64, recent: i64, users: i64) {
        let billing = self.billing();
        let end = date(DAY);
        for back in 0..60_u64 {
            let day = end - Days::new(back);
            let value = if back < 30 { recent } else { before };
            let ts = Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).unwrap());
            let u = Usage {
                id: format!("{customer}-{day}"),
                customer: customer.into(),
                subscription: sub.into(),
                metric: "api_calls".into(),
                value: Quantity::from_int(value),
                timestamp: ts,
                installation: None,
            };
            assert!(billing.put_records(&[u], None).await.unwrap().is_empty());
        }
        let u = Usage {
            id: format!("{customer}-users"),
            customer: customer.into(),
            subscription: sub.into(),
            metric: "active_users".into(),
            value: Quantity::from_int(users),
            timestamp: Utc.from_utc_datetime(&end.and_hms_opt(9, 0, 0).unwrap()),
            installation: None,
        };
        assert!(billing.put_records(&[u], None).await.unwrap().is_empty());
    }

    async fn invoke(&self, payload: Value) -> Value {
        self.app
            .handle(LambdaEvent::new(payload, Context::default()))
            .await
            .unwrap()
    }

    fn queue(&self, var: &str) -> String {
        self.env[var].clone()
    }

    /// Runs the day, then every job it queued through the handler as one SQS batch.
    async fn run_day(&self) -> (Value, Value) {
        let plan = self.invoke(json!({"action": "run", "date": DAY})).await;
        let jobs = drain_queue(self.clients.sqs(), &self.queue("REVENUE_JOBS_QUEUE_URL")).await;
        let batch = sqs_batch(
            jobs.into_iter()
                .enumerate()
                .map(|(i, b)| (format!("m{i}"), b))
                .collect(),
        );
        let resp = self.invoke(serde_json::to_value(batch).unwrap()).await;
        (plan, resp)
    }
}

#[tokio::test]
async fn a_day_writes_metrics_renewals_health_and_one_early_warning() {
    let w = World::new(None).await;
    let id = &w.stack.prefix;
    let healthy = format!("cus_{id}_h");
    let risky = format!("cus_{id}_r");
    w.put_customer(&state(&healthy, "sub_h", "year", 10_000, 10, "2026-06-01"))
        .await;
    w.put_customer(&state(&risky, "sub_r", "month", 5_000, 10, "2026-03-20"))
        .await;
    w.usage(&healthy, "sub_h", 100, 100, 9).await;
    w.usage(&risky, "sub_r", 1_000, 10, 1).await;
    w.billing()
        .save(
            &risky,
            &Dunning {
                status: Status::PastDue,
                ..Dunning::default()
            },
            0,
        )
        .await
        .unwrap();

    let (plan, resp) = w.run_day().await;
    assert_eq!(plan["jobs"], 2, "{plan}");
    assert_eq!(plan["mrr"], 15_000, "{plan}");
    assert_eq!(resp["batchItemFailures"], json!([]), "{resp}");

    // The snapshot: DynamoDB, S3 JSON + CSV, the month's report.
    let snaps = w.revenue().snapshots(DAY, DAY).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        (snaps[0].mrr, snaps[0].arr, snaps[0].customers.paying),
        (15_000, 180_000, 2)
    );
    // Both renew within their windows: 1 200.00 + 600.00 a year.
    assert_eq!(snaps[0].renewal_pipeline.count, 2);
    assert_eq!(snaps[0].renewal_pipeline.amount, 180_000);
    let files = S3Store::new(w.clients.s3().clone(), w.env["ARTIFACTS_BUCKET"].clone());
    let json: Value = serde_json::from_slice(
        &files
            .get(&format!("metrics/daily/{DAY}.json"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["mrr"], 15_000);
    let csv = String::from_utf8(
        files
            .get(&format!("metrics/daily/{DAY}.csv"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(csv.starts_with("date,currency,mrr,arr"), "{csv}");
    assert!(csv.contains("2026-03-02,usd,150.00,1800.00"), "{csv}");
    let html = String::from_utf8(
        files
            .get("reports/monthly/2026-03.html")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(html.contains("<svg") && !html.contains("<script"));

    // The CRM sink: a renewal per subscription, health on both accounts.
    let sink = w.sink();
    let (opp, _) = sink
        .get_object(CrmObject::Opportunity, "sub_h:2026-06-01")
        .await
        .unwrap()
        .expect("the yearly renewal");
    assert_eq!(opp["stage"], "Open");
    assert_eq!(opp["close_date"], "2026-06-01");
    assert_eq!(opp["owner_id"], "005OWNER");
    let h = sink.health(&healthy).await.unwrap().unwrap();
    assert_eq!(
        (h.band.as_str(), h.active_users, h.licensed_seats),
        ("healthy", Some(9), Some(10))
    );
    let r = sink.health(&risky).await.unwrap().unwrap();
    assert_eq!(r.band, "at_risk", "{r:?}");
    assert!(r.reasons.contains("usage down 99%"), "{}", r.reasons);

    // One early warning, for the risky customer.
    let notes = drain_queue(w.clients.sqs(), &w.queue("NOTIFICATIONS_QUEUE_URL")).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note: Value = serde_json::from_str(&notes[0]).unwrap();
    assert_eq!(note["customer"], risky.as_str());
    assert_eq!(note["type"], "customer.health");
    assert_eq!(note["warning"], "entered_at_risk");
    let (task, _) = sink
        .get_object(CrmObject::Task, &format!("health:{risky}:{DAY}"))
        .await
        .unwrap()
        .expect("a task for the owner");
    assert_eq!(task["owner_id"], "005OWNER");

    // The same day again: the same snapshot, no second warning, nothing rewritten.
    let (_, again) = w.run_day().await;
    assert_eq!(again["batchItemFailures"], json!([]), "{again}");
    assert_eq!(w.revenue().snapshots(DAY, DAY).await.unwrap(), snaps);
    assert!(
        drain_queue(w.clients.sqs(), &w.queue("NOTIFICATIONS_QUEUE_URL"))
            .await
            .is_empty()
    );
    let state = w.revenue().load(&healthy).await.unwrap().unwrap();
    assert_eq!(state.renewals.len(), 1, "one renewal per term");

    // A poison job fails alone.
    let batch = sqs_batch(vec![
        ("bad", "{\"action\":\"customer\"}".to_owned()),
        (
            "ok",
            json!({"action": "customer", "date": DAY, "customer": healthy}).to_string(),
        ),
    ]);
    let resp = w.invoke(serde_json::to_value(batch).unwrap()).await;
    assert_eq!(
        resp["batchItemFailures"],
        json!([{"itemIdentifier": "bad"}]),
        "{resp}"
    );
}

#[tokio::test]
async fn with_the_crm_down_the_metrics_still_land_and_the_jobs_are_retried() {
    let sf = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "tok", "instance_url": sf.uri()})),
        )
        .mount(&sf)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&sf)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&sf)
        .await;
    let w = World::new(Some(&sf)).await;
    let cus = format!("cus_{}_d", w.stack.prefix);
    w.put_customer(&state(&cus, "sub_d", "year", 10_000, 10, "2026-06-01"))
        .await;
    let (plan, resp) = w.run_day().await;
    assert_eq!(plan["mrr"], 10_000);
    assert_eq!(w.revenue().snapshots(DAY, DAY).await.unwrap().len(), 1);
    assert_eq!(
        resp["batchItemFailures"].as_array().unwrap().len(),
        1,
        "{resp}"
    );
    // Nothing recorded as done: the retry will write it all.
    assert!(w.revenue().load(&cus).await.unwrap().is_none());
}

#[tokio::test]
async fn bad_invocations_are_refused_with_their_reason() {
    let w = World::new(None).await;
    for (payload, expected) in [
        (
            json!({"action": "run", "date": "2026-02-30"}),
            "revenue-ops action",
        ),
        (json!({"action": "run", "date": "2999-01-01"}), "future"),
        (json!({"hello": "world"}), "unrecognised event shape"),
    ] {
        let e = w
            .app
            .handle(LambdaEvent::new(payload.clone(), Context::default()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains(expected), "{payload}: {e}");
    }
}
