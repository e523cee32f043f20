//! The handler on the sample events in `events/usage-billing/`, with in-memory ports.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use blapi::billing::Config;
use blapi::billing::dunning;
use blapi::billing::memory::MemoryBilling;
use blapi::billing::ports::SubscriptionView;
use blapi::billing::pricebook::PriceBook;
use blapi::billing::service::{BillingConfig, Job};
use blapi::billing::usage::{IngestPolicy, RejectReason};
use blapi::ledger::MemoryLedger;
use blapi::queue::MemoryQueue;
use blapi::storage::MemoryStore;
use blapi::stripe::{MemoryStripe, StripeConfig};
use chrono::{DateTime, Utc};
use lambda_runtime::{Context, LambdaEvent};
use std::sync::Arc;
use std::time::Duration;
use usage_billing::handler::{App, Ports};

struct Rig {
    app: App,
    table: Arc<MemoryBilling>,
    queue: Arc<MemoryQueue>,
}

fn rig(now: &str) -> Rig {
    let table = Arc::new(MemoryBilling::new());
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let now: DateTime<Utc> = now.parse().unwrap();
    let ports = Ports {
        usage: table.clone(),
        subs: table.clone(),
        invoices: table.clone(),
        credits: table.clone(),
        dunning: table.clone(),
        stripe: Arc::new(MemoryStripe::new()),
        artifacts: store.clone(),
        store,
        ledger: Arc::new(MemoryLedger::new()),
        queue: queue.clone(),
        book: Arc::new(PriceBook::embedded().unwrap()),
        clock: Arc::new(move || now),
    };
    let config = Config {
        table: "billing".into(),
        ledger_table: "ledger".into(),
        artifacts_bucket: "artifacts".into(),
        stripe: StripeConfig {
            api_base: "http://127.0.0.1:9".into(),
            secret_id: "unused".into(),
            timeout: Duration::from_secs(1),
        },
        service: BillingConfig {
            jobs_queue_url: "jobs".into(),
            notifications_queue_url: "notes".into(),
            ingest: IngestPolicy::default(),
            dunning: dunning::Policy {
                suspend_after_days: 14,
                suspend_after_attempts: 4,
            },
            lease: Duration::from_secs(60),
        },
        metrics_namespace: "test".into(),
    };
    Rig {
        app: App::new(config, ports),
        table,
        queue,
    }
}

fn event(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../../events/usage-billing/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn call(app: &App, payload: serde_json::Value) -> serde_json::Value {
    app.handle(LambdaEvent::new(payload, Context::default()))
        .await
        .unwrap()
}

fn failures(resp: &serde_json::Value) -> Vec<String> {
    resp["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sample_events_flow_through_every_trigger() {
    let r = rig("2026-10-20T12:00:00Z");
    // billing events: the subscription view, then dunning past_due -> active
    let resp = call(&r.app, event("billing-events.json")).await;
    assert!(failures(&resp).is_empty(), "{resp}");
    assert!(
        r.table
            .get("cus_demo1", "sub_demo1")
            .await
            .unwrap()
            .is_some()
    );
    let notes: Vec<serde_json::Value> = r
        .queue
        .sent("notes")
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(
        notes
            .iter()
            .map(|n| n["status"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["past_due", "active"]
    );

    // usage: 3 accepted, the negative one refused (stored), the message itself succeeds
    let resp = call(&r.app, event("usage-events.json")).await;
    assert!(failures(&resp).is_empty(), "{resp}");
    let rejected = r.table.rejected();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, RejectReason::NegativeValue);
    // a redelivery is all duplicates (the refusal is stored again under the same key in DynamoDB)
    call(&r.app, event("usage-events.json")).await;

    // direct bill
    let out = call(&r.app, event("bill.json")).await;
    assert_eq!(out["outcome"], "invoiced", "{out}");
    // starter: 2900 platform + api 1200 -> 200 × 0.5 = 100 + storage 12.5 GB × 12/31 days weighted
    // + 1 installation × 500
    assert!(out["total"].as_i64().unwrap() > 3500, "{out}");
    let again = call(&r.app, event("bill.json")).await;
    assert_eq!(again["outcome"], "already_billed");
}

#[tokio::test]
async fn a_malformed_job_fails_alone() {
    let r = rig("2026-10-20T12:00:00Z");
    call(&r.app, event("billing-events.json")).await;
    let resp = call(&r.app, event("billing-jobs-malformed.json")).await;
    assert_eq!(failures(&resp), vec!["m2", "m3"]);
}

#[tokio::test]
async fn the_schedule_plans_the_previous_month() {
    for name in ["schedule.json", "scheduled-event.json"] {
        let r = rig("2026-11-01T03:00:00Z");
        let out = call(&r.app, event(name)).await;
        assert_eq!(out["period"], "2026-10", "{name}");
        let jobs = r.queue.sent("jobs");
        assert_eq!(jobs.len(), 16);
        let first: Job = serde_json::from_str(&jobs[0]).unwrap();
        assert_eq!(
            first,
            Job::PlanShard {
                period: "2026-10".parse().unwrap(),
                shard: 0
            }
        );
    }
    let r = rig("2026-11-01T03:00:00Z");
    assert!(
        r.app
            .handle(LambdaEvent::new(
                serde_json::json!({"hello": 1}),
                Context::default()
            ))
            .await
            .is_err()
    );
    assert!(
        r.app
            .handle(LambdaEvent::new(
                serde_json::json!({"action": "explode"}),
                Context::default()
            ))
            .await
            .is_err()
    );
}
