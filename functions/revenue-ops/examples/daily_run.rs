//! A daily revenue-ops run on the local stack: N customers' states written to the
//! CustomersTable of a fresh stack (BatchWriteItem), the day planned through the handler
//! (snapshot, files, report, one job per customer sent to `revenue-jobs`), every job run
//! through the handler in SQS batches of 10, then the same day again. Prints wall time per
//! phase, jobs/s and CRM requests per customer (the CRM is the built-in sink, counted at the
//! port: Salesforce would take them in Composite requests of 25 records).
//!
//! The jobs are run from the same bodies the plan sent, not received back from moto's queue:
//! moto's SQS receives and deletes at a few messages a second once 10 000 wait (it scans the
//! queue on every call), which would measure the emulator. The queue is purged after the
//! plan.
//!
//! `cargo run --release -p revenue-ops --example daily_run -- [customers] [concurrency]`
//! (defaults 10000, 4; needs moto on 4599, e.g. `make up`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a dev tool

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use blapi::aws::Clients;
use blapi::config::Env;
use blapi::crm::{CrmError, CrmObject, CrmPort, CrmRecord, Upserted};
use blapi::customers::state::{CustomerState, Term, ValuePoint};
use blapi::revenue::Config;
use blapi::values::Money;
use blapi_infra::testing::{fresh_stack, sqs_batch};
use lambda_runtime::{Context, LambdaEvent};
use revenue_ops::{App, Ports};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const DAY: &str = "2026-03-02";
const T0: i64 = 1_772_409_600;

/// Counts what reaches the CRM.
struct Counting {
    inner: Arc<dyn CrmPort>,
    requests: AtomicU64,
    records: AtomicU64,
}

#[async_trait]
impl CrmPort for Counting {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn erase(&self, object: CrmObject, external_id: &str) -> Result<bool, CrmError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.erase(object, external_id).await
    }
    async fn fetch(
        &self,
        object: CrmObject,
        external_id: &str,
    ) -> Result<Option<serde_json::Value>, CrmError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.fetch(object, external_id).await
    }
    async fn upsert(&self, record: &CrmRecord) -> Result<Upserted, CrmError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(1, Ordering::Relaxed);
        self.inner.upsert(record).await
    }
    async fn upsert_all(&self, records: &[CrmRecord]) -> Result<Vec<Upserted>, CrmError> {
        // Salesforce sends up to 25 records per Composite request.
        self.requests
            .fetch_add(records.len().div_ceil(25) as u64, Ordering::Relaxed);
        self.records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.inner.upsert_all(records).await
    }
}

fn state(i: usize) -> CustomerState {
    let start = T0 - (i as i64 % 700) * 86_400;
    let yearly = i.is_multiple_of(4);
    let end = start + if yearly { 365 } else { 30 } * 86_400;
    let point = ValuePoint {
        at: start,
        status: "active".into(),
        mrr: Some(Money::new(
            1_000 + (i as i64 % 50) * 100,
            "usd".parse().unwrap(),
        )),
        seats: Some(5),
        term_end: end,
        cancel_at_period_end: false,
    };
    let mut s = CustomerState::new(&format!("cus_run{i:06}"));
    s.owner_id = Some("005OWNER".into());
    s.subscriptions.insert(
        format!("sub_run{i:06}"),
        Term {
            status: "active".into(),
            start,
            end,
            seats: Some(5),
            sku: Some("E20".into()),
            annual_value: None,
            cancel_reason: None,
            plan: None,
            interval: Some(if yearly { "year" } else { "month" }.into()),
            interval_count: Some(1),
            mrr: point.mrr.clone(),
            cancel_at_period_end: false,
            history: vec![point],
        },
    );
    s
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(10_000);
    let concurrency = args.get(1).copied().unwrap_or(4).max(1);
    let stack = fresh_stack().await;
    let clients = Clients::new(&stack.sdk_config().await);
    let env = stack.env("revenue-ops");
    let config = Config::from_env(&Env::from_map(env.clone())).unwrap();
    let mut ports = Ports::connect(&config, &clients).await.unwrap();
    let counting = Arc::new(Counting {
        inner: ports.revenue.crm.clone(),
        requests: AtomicU64::new(0),
        records: AtomicU64::new(0),
    });
    ports.revenue.crm = counting.clone();
    let app = Arc::new(App::new(config, ports));

    let t = Instant::now();
    let table = env["CUSTOMERS_TABLE"].clone();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (ddb, table) = (clients.dynamodb().clone(), table.clone());
        tasks.spawn(async move {
            let mine: Vec<usize> = (w..n).step_by(concurrency).collect();
            for chunk in mine.chunks(25) {
                let mut writes: Vec<WriteRequest> = chunk.iter().map(|i| put(&state(*i))).collect();
                // Retry what DynamoDB leaves unprocessed.
                while !writes.is_empty() {
                    let out = ddb
                        .batch_write_item()
                        .request_items(&table, writes)
                        .send()
                        .await
                        .unwrap();
                    writes = out
                        .unprocessed_items()
                        .and_then(|m| m.get(&table))
                        .cloned()
                        .unwrap_or_default();
                }
            }
        });
    }
    tasks.join_all().await;
    println!(
        "seeded {n} customer states in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let ids: Vec<String> = (0..n).map(|i| state(i).customer_id).collect();

    for round in ["first run", "same day again"] {
        let (requests, records) = (
            counting.requests.load(Ordering::Relaxed),
            counting.records.load(Ordering::Relaxed),
        );
        let t = Instant::now();
        let plan = app
            .handle(LambdaEvent::new(
                json!({"action": "run", "date": DAY}),
                Context::default(),
            ))
            .await
            .unwrap();
        let planned = t.elapsed().as_secs_f64();
        // At most one purge a minute: a refused one leaves the messages queued, unused here.
        let _ = clients
            .sqs()
            .purge_queue()
            .queue_url(&env["REVENUE_JOBS_QUEUE_URL"])
            .send()
            .await;
        let jobs: Vec<String> = ids
            .iter()
            .map(|c| json!({"action": "customer", "date": DAY, "customer": c}).to_string())
            .collect();
        assert_eq!(
            plan["jobs"],
            jobs.len(),
            "the plan queued one job per customer"
        );
        let t = Instant::now();
        let failed = Arc::new(AtomicU64::new(0));
        let chunks: Vec<Vec<String>> = jobs.chunks(10).map(<[String]>::to_vec).collect();
        let chunks = Arc::new(std::sync::Mutex::new(chunks));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (app, chunks, failed) = (app.clone(), chunks.clone(), failed.clone());
            tasks.spawn(async move {
                loop {
                    let Some(chunk) = chunks.lock().unwrap().pop() else {
                        return;
                    };
                    let batch = sqs_batch(
                        chunk
                            .into_iter()
                            .enumerate()
                            .map(|(i, b)| (format!("m{i}"), b))
                            .collect(),
                    );
                    let resp = app
                        .handle(LambdaEvent::new(
                            serde_json::to_value(batch).unwrap(),
                            Context::default(),
                        ))
                        .await
                        .unwrap();
                    let f = resp["batchItemFailures"].as_array().map_or(0, Vec::len);
                    failed.fetch_add(f as u64, Ordering::Relaxed);
                }
            });
        }
        tasks.join_all().await;
        let ran = t.elapsed().as_secs_f64();
        let req = counting.requests.load(Ordering::Relaxed) - requests;
        let rec = counting.records.load(Ordering::Relaxed) - records;
        println!(
            "{round}: plan {planned:.1} s (MRR {} {}, {} jobs queued), run in {ran:.1} s = {:.0} jobs/s, {} failed; CRM requests/customer {:.2}, records/customer {:.2}",
            plan["mrr"],
            plan["currency"].as_str().unwrap_or(""),
            jobs.len(),
            jobs.len() as f64 / ran.max(1e-9),
            failed.load(Ordering::Relaxed),
            req as f64 / n as f64,
            rec as f64 / n as f64,
        );
    }
}

/// The CustomersTable item of a state, as customer-sync writes it (version 1).
fn put(s: &CustomerState) -> WriteRequest {
    let av = |v: String| AttributeValue::S(v);
    let put = PutRequest::builder()
        .item("pk", av(format!("CUSTOMER#{}", s.customer_id)))
        .item("sk", av("STATE".into()))
        .item("doc", av(serde_json::to_string(s).unwrap()))
        .item("version", AttributeValue::N("1".into()))
        .item("owner_id", av("005OWNER".into()))
        .item("status", av("customer".into()))
        .build()
        .unwrap();
    WriteRequest::builder().put_request(put).build()
}
