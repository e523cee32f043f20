//! A billing run on the local stack: N customers × D days of usage ingested through the
//! handler (SQS-shaped batches), the period planned, every job billed against localstripe.
//! Prints wall time per phase, records/s and Stripe calls per invoice.
//!
//! `cargo run --release -p usage-billing --example local_run -- [customers] [days]`
//! (defaults 10000 × 30; needs moto on 4599 and localstripe on 8420, e.g. `make up`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a dev tool

use blapi::aws::Clients;
use blapi::config::{Env, Secret};
use blapi::stripe::StripeClient;
use chrono::{DateTime, Duration as Days, Utc};
use futures::StreamExt;
use lambda_runtime::{Context, LambdaEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usage_billing::handler::{App, Overrides};

const PERIOD: &str = "2026-10";
const CONCURRENCY: usize = 8;

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

#[tokio::main]
async fn main() {
    blapi::telemetry::init();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let customers = args.first().copied().unwrap_or(10_000);
    let days = args.get(1).copied().unwrap_or(30).min(31);
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
    let app = Arc::new(
        App::new(
            &Env::from_map(stack.env("usage-billing")),
            &clients,
            Overrides {
                stripe_client: Some(stripe.clone()),
                clock: Some(Arc::new(move || now)),
                ..Overrides::default()
            },
        )
        .await
        .unwrap(),
    );
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
        .buffer_unordered(CONCURRENCY)
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
        .for_each_concurrent(CONCURRENCY, |chunk| {
            let app = app.clone();
            async move {
                call(&app, sqs(chunk)).await;
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
        .for_each_concurrent(CONCURRENCY, |chunk| {
            let app = app.clone();
            async move {
                let r = call(&app, sqs(chunk)).await;
                assert!(
                    r["batchItemFailures"].as_array().is_none_or(Vec::is_empty),
                    "{r}"
                );
            }
        })
        .await;
    let ingest = t.elapsed();
    println!(
        "ingest: {n_records} records in {ingest:.1?} = {:.0} records/s",
        n_records as f64 / ingest.as_secs_f64()
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
        let results = futures::future::join_all(batches.iter().map(|b| {
            let app = app.clone();
            let bodies: Vec<String> = b
                .iter()
                .map(|m| m.body().unwrap_or_default().to_owned())
                .collect();
            async move { call(&app, sqs(bodies)).await }
        }))
        .await;
        for (b, r) in batches.iter().zip(results) {
            assert!(
                r["batchItemFailures"].as_array().is_none_or(Vec::is_empty),
                "{r}"
            );
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
    println!("total wall time {:.1?}", t0.elapsed());
}
