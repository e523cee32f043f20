//! A billing run on the local stack: N customers × D days of usage ingested through the
//! handler (SQS-shaped batches), the period planned, every job billed against localstripe.
//! Prints wall time per phase, records/s and Stripe calls per invoice.
//!
//! `cargo run --release -p usage-billing --example local_run -- [customers] [days] [concurrency]`
//! (defaults 10000 × 30, 8 concurrent batches; needs moto on 4599 and localstripe on 8420, e.g.
//! `make up`).
//!
//! moto is the limit here, not the function: its TransactWriteItems deep-copies every table it
//! touches on each call (cost grows with the table: ~4 ms empty, ~100 ms at 5 000 items, ~1.4 s
//! at 20 000), and concurrent transactions can crash it ("dictionary changed size during
//! iteration", answered as an HTML 500). Failed records are redelivered as SQS would; at high
//! concurrency some can still reach the DLQ limit. Use concurrency 1 for larger runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a dev tool

use blapi::aws::Clients;
use blapi::billing::Config;
use blapi::config::{Env, Secret};
use blapi::stripe::StripeClient;
use chrono::{DateTime, Duration as Days, Utc};
use futures::StreamExt;
use lambda_runtime::{Context, LambdaEvent};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use usage_billing::handler::{App, Ports};

const PERIOD: &str = "2026-10";

fn sqs(bodies: Vec<String>) -> serde_json::Value {
    let records: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| serde_json::json!({"messageId": format!("m{i}"), "body": b, "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:1:local-UsageEventsQueue", "attributes": {"ApproximateReceiveCount": "1"}}))
        .collect();
    serde_json::json!({ "Records": records })
}

fn msg(source: &str, t: &str, event: serde_json::Value) -> String {
    serde_json::json!({"id": uuid::Uuid::new_v4().to_string(), "source": source, "type": t,
        "received_at": "2026-10-31T23:00:00Z", "raw_key": "raw/local-run", "event": event})
    .to_string()
}

async fn call(app: &App, payload: serde_json::Value) -> serde_json::Value {
    app.handle(LambdaEvent::new(payload, Context::default()))
        .await
        .unwrap()
}

/// Receives per message before SQS would park it in the DLQ (the template's maxReceiveCount).
const MAX_RECEIVES: usize = 5;

/// Delivers one SQS batch the way the event source mapping does: the records the function
/// reports as failed come back (after a pause standing in for the visibility timeout) until
/// they succeed or reach `MAX_RECEIVES`. Redeliveries are counted in `REDELIVERIES`.
async fn deliver(app: &App, mut bodies: Vec<String>) {
    for receive in 1..=MAX_RECEIVES {
        let answer = call(app, sqs(bodies.clone())).await;
        let failed: Vec<usize> = answer["batchItemFailures"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|x| {
                        x["itemIdentifier"]
                            .as_str()?
                            .strip_prefix('m')?
                            .parse()
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if failed.is_empty() {
            return;
        }
        assert!(
            receive < MAX_RECEIVES,
            "records still failing after {MAX_RECEIVES} receives (DLQ): {answer}"
        );
        bodies = failed.iter().map(|&i| bodies[i].clone()).collect();
        REDELIVERIES.fetch_add(bodies.len(), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

static REDELIVERIES: AtomicUsize = AtomicUsize::new(0);

#[tokio::main]
async fn main() {
    blapi::telemetry::init();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let customers = args.first().copied().unwrap_or(10_000);
    let days = args.get(1).copied().unwrap_or(30).min(31);
    let concurrency = args.get(2).copied().unwrap_or(8).max(1);
    let stripe_base =
        std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into());
    let t0 = Instant::now();
    let stack = blapi_infra::testing::fresh_stack().await;
    let clients = Clients::new(&stack.sdk_config().await);
    let stripe = StripeClient::new(
        &stripe_base,
        Secret::new("sk_test_blapi_local".into()),
        Duration::from_secs(30),
    )
    .unwrap();
    let now: DateTime<Utc> = "2026-11-01T02:00:00Z".parse().unwrap();
    let config = Config::from_env(&Env::from_map(stack.env("usage-billing"))).unwrap();
    let mut ports = Ports::connect(&config, &clients).await.unwrap();
    // Our own client, so its call counter is readable here.
    ports.billing.stripe = Arc::new(stripe.clone());
    ports.clock = Arc::new(move || now);
    let app = Arc::new(App::new(config, ports));
    println!("stack provisioned in {:.1?}", t0.elapsed());

    // localstripe customers with a zero-amount subscription (it only invoices those)
    let t = Instant::now();
    let http = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| r.basic_auth("sk_test_blapi_local", Some(""));
    let _ = auth(http.post(format!("{stripe_base}/v1/plans")))
        .form(&[
            ("id", "blapi-metered-zero"),
            ("amount", "0"),
            ("currency", "usd"),
            ("interval", "month"),
            ("product[name]", "usage"),
        ])
        .send()
        .await;
    let ids: Vec<(String, String)> = futures::stream::iter(0..customers)
        .map(|_| {
            let http = http.clone();
            let base = stripe_base.clone();
            async move {
                let c: serde_json::Value = auth(http.post(format!("{base}/v1/customers")))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let cus = c["id"].as_str().unwrap().to_owned();
                let s: serde_json::Value = auth(http.post(format!("{base}/v1/subscriptions")))
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
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    println!("{customers} localstripe customers in {:.1?}", t.elapsed());

    // the subscription view
    let t = Instant::now();
    let sub_msgs: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, (cus, sub))| {
            let plan = if i % 2 == 0 { "cloud-pro" } else { "cloud-starter" };
            msg("stripe", "customer.subscription.created", serde_json::json!({"id": format!("evt_{i}"), "type": "customer.subscription.created",
                "created": 1_790_000_000, "data": {"object": {"id": sub, "customer": cus, "status": "active", "start_date": 1_780_000_000,
                "metadata": {"blapi_plan": plan}, "items": {"data": [{"quantity": 1 + i % 3, "plan": {"id": "blapi-metered-zero"}}]}}}}))
        })
        .collect();
    futures::stream::iter(sub_msgs.chunks(10).map(|c| c.to_vec()))
        .for_each_concurrent(concurrency, |chunk| {
            let app = app.clone();
            async move {
                deliver(&app, chunk).await;
            }
        })
        .await;
    println!(
        "subscription view: {customers} events in {:.1?}",
        t.elapsed()
    );

    // usage: one record per customer per day per metric (2 metrics), 100 records per message
    let start: DateTime<Utc> = "2026-10-01T12:00:00Z".parse().unwrap();
    let mut records = Vec::with_capacity(customers * days * 2);
    for (i, (cus, sub)) in ids.iter().enumerate() {
        let metrics: [&str; 2] = if i % 2 == 0 {
            ["api_calls", "builds"]
        } else {
            ["api_calls", "active_installations"]
        };
        for d in 0..days {
            for m in metrics {
                records.push(serde_json::json!({"id": uuid::Uuid::new_v4().to_string(), "customer": cus, "subscription": sub,
                    "metric": m, "value": 100 + (d * 37 + i) % 500, "timestamp": (start + Days::days(d as i64)).to_rfc3339(),
                    "installation": format!("inst-{}", d % 3)}));
            }
        }
    }
    let n_records = records.len();
    let t = Instant::now();
    let messages: Vec<String> = records
        .chunks(100)
        .map(|c| {
            msg(
                "telemetry",
                "usage.reported",
                serde_json::json!({"type": "usage.reported", "data": {"records": c}}),
            )
        })
        .collect();
    futures::stream::iter(messages.chunks(10).map(|c| c.to_vec()))
        .for_each_concurrent(concurrency, |chunk| {
            let app = app.clone();
            async move {
                deliver(&app, chunk).await;
            }
        })
        .await;
    let ingest = t.elapsed();
    println!(
        "ingest: {n_records} records in {ingest:.1?} = {:.0} records/s ({} message redeliveries so far)",
        n_records as f64 / ingest.as_secs_f64(),
        REDELIVERIES.load(Ordering::Relaxed)
    );

    // plan + bill (the jobs queue drained with the template's MaximumConcurrency 5)
    let t = Instant::now();
    call(
        &app,
        serde_json::json!({"action": "plan", "period": PERIOD}),
    )
    .await;
    let url = stack.env("usage-billing")["BILLING_JOBS_QUEUE_URL"].clone();
    let calls_before = stripe.calls();
    let mut invoices = 0usize;
    let mut idle = 0;
    while idle < 3 {
        let mut batches = Vec::new();
        for _ in 0..5 {
            let out = clients
                .sqs()
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(5)
                .send()
                .await
                .unwrap();
            let m = out.messages.unwrap_or_default();
            if !m.is_empty() {
                batches.push(m);
            }
        }
        if batches.is_empty() {
            idle += 1;
            continue;
        }
        idle = 0;
        futures::future::join_all(batches.iter().map(|b| {
            let app = app.clone();
            let bodies: Vec<String> = b
                .iter()
                .map(|m| m.body().unwrap_or_default().to_owned())
                .collect();
            async move { deliver(&app, bodies).await }
        }))
        .await;
        for b in &batches {
            for m in b {
                if m.body().is_some_and(|x| x.contains("\"bill\"")) {
                    invoices += 1;
                }
                clients
                    .sqs()
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
    let bill = t.elapsed();
    let calls = stripe.calls() - calls_before;
    println!(
        "plan + bill: {invoices} invoices in {bill:.1?} = {:.1} invoices/s; Stripe calls {calls} = {:.2} per invoice",
        invoices as f64 / bill.as_secs_f64(),
        calls as f64 / invoices.max(1) as f64
    );
    println!(
        "total wall time {:.1?}; {} message redeliveries (records the function reported failed)",
        t0.elapsed(),
        REDELIVERIES.load(Ordering::Relaxed)
    );
}
