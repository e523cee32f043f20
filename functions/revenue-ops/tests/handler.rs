//! The handler on in-memory ports with the committed sample events: every trigger's shape,
//! partial batch failures, the schedule planning yesterday.

#![allow(clippy::unwrap_used)]

use blapi::billing::memory::MemoryBilling;
use blapi::config::Env;
use blapi::crm::MemoryCrm;
use blapi::customers::state::{CustomerState, CustomerStore, MemoryCustomers};
use blapi::queue::MemoryQueue;
use blapi::revenue::store::MemoryRevenue;
use blapi::revenue::{Config, Job, Ports as RevenuePorts};
use blapi::storage::MemoryStore;
use chrono::{TimeZone, Utc};
use lambda_runtime::{Context, LambdaEvent};
use revenue_ops::{App, Ports};
use serde_json::{Value, json};
use std::sync::Arc;

fn sample(name: &str) -> Value {
    let path = format!(
        "{}/../../events/revenue-ops/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

struct Fakes {
    app: App,
    customers: Arc<MemoryCustomers>,
    queue: Arc<MemoryQueue>,
    files: Arc<MemoryStore>,
}

fn fakes() -> Fakes {
    let config = Config::from_env(&Env::from_map([
        ("CUSTOMERS_TABLE", "c"),
        ("BILLING_TABLE", "b"),
        ("REVENUE_TABLE", "r"),
        ("ARTIFACTS_BUCKET", "a"),
        ("REVENUE_JOBS_QUEUE_URL", "http://q/jobs"),
        ("NOTIFICATIONS_QUEUE_URL", "http://q/notes"),
        ("CRM_TABLE", "crm"),
    ]))
    .unwrap();
    let customers = Arc::new(MemoryCustomers::new());
    let billing = Arc::new(MemoryBilling::new());
    let queue = Arc::new(MemoryQueue::new());
    let files = Arc::new(MemoryStore::new());
    let ports = Ports {
        revenue: RevenuePorts {
            customers: customers.clone(),
            revenue: Arc::new(MemoryRevenue::new()),
            usage: billing.clone(),
            dunning: billing,
            crm: Arc::new(MemoryCrm::new()),
            queue: queue.clone(),
            files: files.clone(),
            book: Arc::new(blapi::billing::pricebook::PriceBook::embedded().unwrap()),
        },
        store: files.clone(),
        clock: Arc::new(|| Utc.with_ymd_and_hms(2026, 3, 3, 2, 30, 0).unwrap()),
    };
    Fakes {
        app: App::new(config, ports),
        customers,
        queue,
        files,
    }
}

async fn invoke(f: &Fakes, payload: Value) -> blapi::Result<Value> {
    f.app
        .handle(LambdaEvent::new(payload, Context::default()))
        .await
}

#[tokio::test]
async fn the_schedule_plans_yesterday_and_an_operator_any_past_date() {
    let f = fakes();
    let out = invoke(&f, sample("default.json")).await.unwrap();
    assert_eq!(out["date"], "2026-03-02");
    assert_eq!(out["report_key"], "reports/monthly/2026-03.html");
    assert!(
        f.files
            .keys()
            .contains(&"metrics/daily/2026-03-02.json".to_owned())
    );
    let out = invoke(&f, json!({"action": "run", "date": "2026-02-10"}))
        .await
        .unwrap();
    assert_eq!(out["date"], "2026-02-10");
    assert_eq!(
        Job::from_invocation(sample("run-date.json")).unwrap(),
        Job::Run {
            date: Some("2026-03-02".parse().unwrap())
        }
    );
}

#[tokio::test]
async fn a_batch_reports_only_its_failed_jobs() {
    let f = fakes();
    let batch = sample("batch-jobs.json");
    let out = invoke(&f, batch.clone()).await.unwrap();
    // The sample customer is unknown here, and the second job names none: both fail.
    assert_eq!(
        out["batchItemFailures"].as_array().unwrap().len(),
        2,
        "{out}"
    );
    let mut state = CustomerState::new("cus_SampleCustomer0001");
    state.owner_id = Some("005OWNER".into());
    f.customers.save(&state).await.unwrap();
    let out = invoke(&f, batch).await.unwrap();
    assert_eq!(
        out["batchItemFailures"],
        json!([{"itemIdentifier": "2c1f8a7e-0002-4d6e-9a51-6a2b1f3c4d02"}])
    );
    let one = invoke(&f, sample("customer-job.json")).await.unwrap();
    assert_eq!(one["customer"], "cus_SampleCustomer0001");
    assert_eq!(one["band"], "no_data");
    assert!(f.queue.sent("http://q/notes").is_empty());
}

#[tokio::test]
async fn unknown_shapes_are_refused() {
    let f = fakes();
    for payload in [json!({}), json!({"Records": "no"}), json!([1, 2])] {
        assert!(invoke(&f, payload.clone()).await.is_err(), "{payload}");
    }
}
