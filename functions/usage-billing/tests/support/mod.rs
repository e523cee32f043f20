//! What usage-billing's tests share, so each test reads as its scenario: the app on fakes
//! (`rig`), invocation and batch helpers, the committed samples.

#![allow(dead_code, clippy::unwrap_used)] // helpers; a panic is the failure report

use blapi::billing::Config;
use blapi::billing::dunning;
use blapi::billing::memory::MemoryBilling;
use blapi::billing::pricebook::PriceBook;
use blapi::billing::service::{BillingConfig, Ports as BillingPorts};
use blapi::billing::usage::IngestPolicy;
use blapi::ledger::MemoryLedger;
use blapi::queue::MemoryQueue;
use blapi::storage::MemoryStore;
use blapi::stripe::{MemoryStripe, StripeConfig};
use chrono::{DateTime, Utc};
use lambda_runtime::{Context, LambdaEvent};
use std::sync::Arc;
use std::time::Duration;
use usage_billing::handler::{App, Ports};

pub struct Rig {
    pub app: App,
    pub table: Arc<MemoryBilling>,
    pub queue: Arc<MemoryQueue>,
    pub stripe: Arc<MemoryStripe>,
}

/// The app on in-memory ports with the clock pinned at `now` (RFC 3339).
pub fn rig(now: &str) -> Rig {
    let table = Arc::new(MemoryBilling::new());
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let stripe = Arc::new(MemoryStripe::new());
    let now: DateTime<Utc> = now.parse().unwrap();
    let ports = Ports {
        billing: BillingPorts {
            usage: table.clone(),
            subs: table.clone(),
            invoices: table.clone(),
            credits: table.clone(),
            dunning: table.clone(),
            stripe: stripe.clone(),
            collections: stripe.clone(),
            artifacts: store.clone(),
            ledger: Arc::new(MemoryLedger::new()),
            queue: queue.clone(),
            book: Arc::new(PriceBook::embedded().unwrap()),
        },
        store,
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
            ingest: IngestPolicy::settled(),
            dunning: dunning::Policy::default(),
            lease: Duration::from_secs(60),
            customer_events_queue_url: Some("customer-events".into()),
            license_requests_queue_url: Some("license-requests".into()),
            issuing: Default::default(),
        },
        metrics_namespace: "test".into(),
    };
    Rig {
        app: App::new(config, ports),
        table,
        queue,
        stripe,
    }
}

/// A committed sample of `events/usage-billing/`.
pub fn event(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../../events/usage-billing/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Invokes the handler; a Lambda error fails the test.
pub async fn call(app: &App, payload: serde_json::Value) -> serde_json::Value {
    app.handle(LambdaEvent::new(payload, Context::default()))
        .await
        .unwrap()
}

/// The ids of the failed records of a batch response.
pub fn failures(resp: &serde_json::Value) -> Vec<String> {
    resp["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

/// An SQS event of `bodies` from the queue `arn`.
pub fn sqs_event(arn: &str, bodies: &[String]) -> serde_json::Value {
    let records: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            serde_json::json!({"messageId": format!("m{i}-{}", uuid::Uuid::new_v4()), "receiptHandle": "rh", "body": b,
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": arn, "awsRegion": "us-east-1"})
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// A queue message (`EventMessage`) of `source`/`t` carrying `event`.
pub fn message(source: &str, t: &str, event: serde_json::Value) -> String {
    serde_json::json!({"id": uuid::Uuid::new_v4().to_string(), "source": source, "type": t,
        "received_at": "2026-10-31T22:00:00Z", "raw_key": "raw/test", "event": event})
    .to_string()
}
