//! A month of a usage-billed business, run for real on the local stack: N customers × D days
//! of usage (three metrics per customer per day) ingested through the usage-billing handler in
//! SQS-shaped batches, the period planned and every bill job run against localstripe, then the
//! whole period run again (every usage message redelivered, plan and every bill job again).
//!
//! Prints wall time per phase, records/s, invoices/s, Stripe calls per invoice, DynamoDB write
//! units per usage record (counted from the requests the SDK sends, see
//! `blapi_infra::capacity`), and what the rerun duplicated (must be 0: one Stripe invoice per
//! customer, and every invoice's quantities equal to the month's records folded once).
//!
//! `make bench-billing` (starts the stack; 10 000 customers), or with the stack up:
//! `cargo test -p usage-billing --bench month` (the function's CPU is not what is measured, so
//! the debug build serves). `make bench` runs it too, at its default size of 500 customers.
//! Environment: `BENCH_MONTH_CUSTOMERS` (500), `BENCH_MONTH_DAYS` (30),
//! `BENCH_MONTH_CONCURRENCY` (4 ingest batches at once). Writes `target/bench/month.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a measurement tool

use blapi::aws::Clients;
use blapi::billing::Config;
use blapi::billing::aggregate::Aggregation;
use blapi::billing::dynamo::DynamoBilling;
use blapi::billing::period::Period;
use blapi::billing::ports::{InvoiceStore, UsageStore};
use blapi::config::{Env, Secret};
use blapi::ledger::DynamoLedger;
use blapi::stripe::StripeClient;
use blapi_infra::capacity::Capacity;
use chrono::{DateTime, Duration as Days, Utc};
use futures::StreamExt;
use lambda_runtime::{Context, LambdaEvent};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use usage_billing::handler::{App, Ports};

const PERIOD: &str = "2026-10";
/// Records per usage message (a telemetry batch) and messages per SQS batch.
const RECORDS_PER_MESSAGE: usize = 100;
const MESSAGES_PER_BATCH: usize = 10;
/// The template's billing-jobs mapping: batches of 5, at most 5 at once.
const JOBS_BATCH: i32 = 5;
const JOBS_CONCURRENCY: usize = 5;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sqs(arn: &str, bodies: &[String]) -> serde_json::Value {
    let records: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            serde_json::json!({"messageId": format!("m{i}"), "body": b, "eventSource": "aws:sqs",
            "eventSourceARN": arn, "attributes": {"ApproximateReceiveCount": "1"}})
        })
        .collect();
    serde_json::json!({ "Records": records })
}

fn message(source: &str, kind: &str, event: serde_json::Value) -> String {
    serde_json::json!({"id": uuid::Uuid::new_v4().to_string(), "source": source, "type": kind,
        "received_at": "2026-10-31T23:00:00Z", "raw_key": "archive/bench", "event": event})
    .to_string()
}

/// One SQS batch through the handler; the failed records (if any) are redelivered, as the
/// event source mapping would, up to the queue's receive limit. Returns the redeliveries.
async fn deliver(app: &App, arn: &str, bodies: &[String]) -> usize {
    let mut pending = bodies.to_vec();
    let mut redelivered = 0;
    for receive in 1..=5 {
        let answer = app
            .handle(LambdaEvent::new(sqs(arn, &pending), Context::default()))
            .await
            .unwrap();
        let failed: Vec<usize> = answer["batchItemFailures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                f["itemIdentifier"]
                    .as_str()?
                    .strip_prefix('m')?
                    .parse()
                    .ok()
            })
            .collect();
        if failed.is_empty() {
            return redelivered;
        }
        assert!(
            receive < 5,
            "records still failing after 5 receives: {answer}"
        );
        pending = failed.iter().map(|&i| pending[i].clone()).collect();
        redelivered += pending.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    redelivered
}

/// Drains the billing-jobs queue through the handler like the event source mapping (batches of
/// 5, 5 at once), until `expect_bills` bill jobs ran and the queue stays empty. Returns
/// (jobs, bill jobs).
async fn drain_jobs(
    app: &Arc<App>,
    clients: &Clients,
    url: &str,
    arn: &str,
    expect_bills: usize,
) -> (usize, usize) {
    let (mut jobs, mut bills) = (0, 0);
    let mut idle_since = Instant::now();
    loop {
        let receives = futures::future::join_all((0..JOBS_CONCURRENCY).map(|_| {
            clients
                .sqs()
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(JOBS_BATCH)
                .wait_time_seconds(1)
                .send()
        }))
        .await;
        let batches: Vec<Vec<_>> = receives
            .into_iter()
            .map(|r| r.unwrap().messages.unwrap_or_default())
            .filter(|m| !m.is_empty())
            .collect();
        if batches.is_empty() {
            // Shard jobs wait out the settle time (SQS delay); then the bill jobs come.
            if bills >= expect_bills && idle_since.elapsed() > Duration::from_secs(3) {
                return (jobs, bills);
            }
            assert!(
                idle_since.elapsed() < Duration::from_secs(60),
                "the jobs queue went quiet after {bills} bill jobs"
            );
            continue;
        }
        idle_since = Instant::now();
        futures::future::join_all(batches.iter().map(|b| {
            let bodies: Vec<String> = b
                .iter()
                .map(|m| m.body().unwrap_or_default().to_owned())
                .collect();
            let app = app.clone();
            async move { deliver(&app, arn, &bodies).await }
        }))
        .await;
        for m in batches.iter().flatten() {
            jobs += 1;
            if m.body().is_some_and(|x| x.contains("\"bill\"")) {
                bills += 1;
            }
            clients
                .sqs()
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .unwrap();
        }
    }
}

struct Customer {
    id: String,
    sub: String,
    plan: &'static str,
    metrics: [(&'static str, Aggregation); 3],
}

fn customer(i: usize, id: String) -> Customer {
    let pro = i.is_multiple_of(2);
    Customer {
        sub: format!("sub_month{i:06}"),
        id,
        plan: if pro { "cloud-pro" } else { "cloud-starter" },
        metrics: if pro {
            [
                ("api_calls", Aggregation::Sum),
                ("builds", Aggregation::Count),
                ("peak_nodes", Aggregation::Max),
            ]
        } else {
            [
                ("api_calls", Aggregation::Sum),
                ("storage_gb", Aggregation::WeightedSum),
                ("active_installations", Aggregation::UniqueCount),
            ]
        },
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The function's logs, at the level `RUST_LOG` (or `AWS_LAMBDA_LOG_LEVEL`) asks; `make
    // bench-billing` shows warnings and errors.
    blapi::telemetry::init();
    let customers = env_or("BENCH_MONTH_CUSTOMERS", 500);
    let days = env_or("BENCH_MONTH_DAYS", 30).clamp(1, 31);
    let concurrency = env_or("BENCH_MONTH_CONCURRENCY", 4).max(1);
    let stripe_base =
        std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into());
    let period: Period = PERIOD.parse().unwrap();
    let t0 = Instant::now();
    let stack = blapi_infra::testing::fresh_stack().await;
    let sdk = stack.sdk_config().await;
    let clients = Clients::new(&sdk);
    let capacity = Capacity::new();
    let counted = capacity.client(&sdk);
    let stripe = StripeClient::new(
        &stripe_base,
        Secret::new("sk_test_blapi_local".into()),
        Duration::from_secs(30),
    )
    .unwrap();
    let now: DateTime<Utc> = "2026-11-01T02:00:00Z".parse().unwrap();
    let env = stack.env("usage-billing");
    let config = Config::from_env(&Env::from_map(env.clone())).unwrap();
    let mut ports = Ports::connect(&config, &clients).await.unwrap();
    // The billing table and ledger through the counting client; Stripe through our client, so
    // its call counter is readable here.
    let table = Arc::new(DynamoBilling::new(counted.clone(), config.table.clone()));
    ports.billing.usage = table.clone();
    ports.billing.subs = table.clone();
    ports.billing.invoices = table.clone();
    ports.billing.credits = table.clone();
    ports.billing.dunning = table.clone();
    ports.billing.ledger = Arc::new(DynamoLedger::new(counted, config.ledger_table.clone()));
    ports.billing.stripe = Arc::new(stripe.clone());
    ports.billing.collections = Arc::new(stripe.clone());
    ports.clock = Arc::new(move || now);
    let app = Arc::new(App::new(config, ports));
    let arn = |logical: &str| {
        stack
            .attr(logical, "Arn")
            .unwrap_or("arn:aws:sqs:us-east-1:1:q")
            .to_owned()
    };
    let (usage_arn, events_arn, jobs_arn) = (
        arn("UsageEventsQueue"),
        arn("BillingEventsQueue"),
        arn("BillingJobsQueue"),
    );
    let jobs_url = env["BILLING_JOBS_QUEUE_URL"].clone();
    let mut report = String::new();
    let mut say = |line: String| {
        println!("{line}");
        let _ = writeln!(report, "{line}  ");
    };
    say(format!(
        "# A month of usage billing: {customers} customers × {days} days × 3 metrics"
    ));
    say(format!("stack provisioned in {:.1?}", t0.elapsed()));

    // Customers in localstripe (billing creates invoices and items for them).
    let t = Instant::now();
    let http = reqwest::Client::new();
    let ids: Vec<String> = futures::stream::iter(0..customers)
        .map(|_| {
            let (http, base) = (http.clone(), stripe_base.clone());
            async move {
                let c: serde_json::Value = http
                    .post(format!("{base}/v1/customers"))
                    .basic_auth("sk_test_blapi_local", Some(""))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                c["id"].as_str().unwrap().to_owned()
            }
        })
        .buffered(8)
        .collect()
        .await;
    let book: Vec<Customer> = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| customer(i, id))
        .collect();
    say(format!(
        "{customers} localstripe customers in {:.1?}",
        t.elapsed()
    ));

    // The subscription view, from billing events.
    let t = Instant::now();
    let subs: Vec<String> = book
        .iter()
        .enumerate()
        .map(|(i, c)| {
            message("stripe", "customer.subscription.created", serde_json::json!({"id": format!("evt_month{i}"),
                "type": "customer.subscription.created", "created": 1_780_000_001,
                "data": {"object": {"id": c.sub, "customer": c.id, "status": "active", "start_date": 1_780_000_000,
                "metadata": {"blapi_plan": c.plan}, "items": {"data": [{"quantity": 1 + i % 3, "plan": {"id": "blapi-metered", "currency": "usd"}}]}}}}))
        })
        .collect();
    futures::stream::iter(subs.chunks(10))
        .for_each_concurrent(concurrency, |chunk| {
            let (app, arn) = (app.clone(), events_arn.clone());
            async move {
                deliver(&app, &arn, chunk).await;
            }
        })
        .await;
    say(format!(
        "subscription view: {customers} events in {:.1?}",
        t.elapsed()
    ));

    // A month of usage: per customer, per day, one record of each of its three metrics.
    let start: DateTime<Utc> = "2026-10-01T00:00:00Z".parse().unwrap();
    let mut records = Vec::with_capacity(customers * days * 3);
    for (i, c) in book.iter().enumerate() {
        for d in 0..days {
            for (k, (metric, _)) in c.metrics.iter().enumerate() {
                let id = format!("u{i:06}d{d:02}m{k}");
                let ts = start + Days::days(d as i64) + Days::minutes((i % 1440) as i64);
                let value = 1 + (d * 37 + i + k) % 500;
                let inst = format!("inst-{}", (d + k) % 4);
                records.push(serde_json::json!({"id": id, "customer": c.id, "subscription": c.sub, "metric": metric,
                    "value": value, "timestamp": ts.to_rfc3339(), "installation": inst}));
            }
        }
    }
    let n_records = records.len();
    let messages: Vec<String> = records
        .chunks(RECORDS_PER_MESSAGE)
        .map(|c| {
            message(
                "telemetry",
                "usage.reported",
                serde_json::json!({"type": "usage.reported", "data": {"records": c}}),
            )
        })
        .collect();
    drop(records);
    let ingest = |label: &'static str| {
        let (app, arn, messages) = (app.clone(), usage_arn.clone(), &messages);
        async move {
            let t = Instant::now();
            let redelivered: usize = futures::stream::iter(messages.chunks(MESSAGES_PER_BATCH))
                .map(|chunk| {
                    let (app, arn) = (app.clone(), arn.clone());
                    async move { deliver(&app, &arn, chunk).await }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .sum();
            (label, t.elapsed(), redelivered)
        }
    };
    capacity.reset();
    let (_, took, redelivered) = ingest("ingest").await;
    let ingest_capacity = capacity.totals();
    say(format!(
        "ingest: {n_records} records in {} messages in {took:.1?} = **{:.0} records/s**; {redelivered} records redelivered",
        messages.len(),
        n_records as f64 / took.as_secs_f64()
    ));
    say(format!(
        "ingest DynamoDB: {} write requests, {} items, **{} write units = {:.3} per record**, {} transactions; {} read requests",
        ingest_capacity.write_requests,
        ingest_capacity.items_written,
        ingest_capacity.write_units,
        ingest_capacity.write_units as f64 / n_records as f64,
        ingest_capacity.transactions,
        ingest_capacity.read_requests
    ));

    // Plan and bill: every bill job through the handler.
    let t = Instant::now();
    capacity.reset();
    let calls = stripe.calls();
    let plan = app
        .handle(LambdaEvent::new(
            serde_json::json!({"action": "plan", "period": PERIOD}),
            Context::default(),
        ))
        .await
        .unwrap();
    assert_eq!(plan["shard_jobs"], 16, "{plan}");
    let (jobs, bills) = drain_jobs(&app, &clients, &jobs_url, &jobs_arn, customers).await;
    let bill_time = t.elapsed();
    let bill_calls = stripe.calls() - calls;
    let bill_capacity = capacity.totals();
    say(format!(
        "plan + bill: {jobs} jobs ({bills} bill jobs; SQS may deliver one twice) in {bill_time:.1?} (settle wait included) = **{:.1} invoices/s**",
        customers as f64 / bill_time.as_secs_f64()
    ));
    say(format!(
        "billing DynamoDB: {} write units = {:.1} per invoice (updates counted at their floor)",
        bill_capacity.write_units,
        bill_capacity.write_units as f64 / customers as f64
    ));

    // The whole period again: every usage message redelivered, plan and every job again.
    let t = Instant::now();
    capacity.reset();
    let calls = stripe.calls();
    let (_, retook, _) = ingest("rerun").await;
    let rerun_ingest_capacity = capacity.totals();
    app.handle(LambdaEvent::new(
        serde_json::json!({"action": "plan", "period": PERIOD}),
        Context::default(),
    ))
    .await
    .unwrap();
    let (rerun_jobs, rerun_bills) =
        drain_jobs(&app, &clients, &jobs_url, &jobs_arn, customers).await;
    let rerun_calls = stripe.calls() - calls;
    say(format!(
        "rerun: ingest {retook:.1?} ({} usage writes), {rerun_jobs} jobs / {rerun_bills} bill jobs, {rerun_calls} Stripe calls, total {:.1?}",
        rerun_ingest_capacity.items_written,
        t.elapsed()
    ));

    // What the rerun duplicated: Stripe invoices per customer, and every invoice's quantities
    // against the month's records folded once.
    let t = Instant::now();
    // (invoices, total, lines) per customer in localstripe
    let mut per_customer: BTreeMap<String, (usize, i64, usize)> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = vec![("limit", "100".to_owned())];
        if let Some(a) = &after {
            q.push(("starting_after", a.clone()));
        }
        let page: serde_json::Value = http
            .get(format!("{stripe_base}/v1/invoices"))
            .basic_auth("sk_test_blapi_local", Some(""))
            .query(&q)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = page["data"].as_array().cloned().unwrap_or_default();
        for inv in &data {
            let cus = inv["customer"].as_str().unwrap_or_default().to_owned();
            let e = per_customer.entry(cus).or_default();
            e.0 += 1;
            e.1 = inv["total"].as_i64().unwrap_or(0);
            e.2 = inv["lines"]["data"].as_array().map_or(0, Vec::len);
        }
        after = data
            .last()
            .and_then(|i| i["id"].as_str())
            .map(str::to_owned);
        if !page["has_more"].as_bool().unwrap_or(false) || after.is_none() {
            break;
        }
    }
    let duplicate_invoices: usize = book
        .iter()
        .filter_map(|c| per_customer.get(&c.id))
        .map(|(n, _, _)| n.saturating_sub(1))
        .sum();
    let invoiced = book
        .iter()
        .filter(|c| per_customer.contains_key(&c.id))
        .count();
    // Every invoice as its record says (no item twice), and every usage record stored once.
    let expected_records = days * 3;
    let lines: usize = futures::stream::iter(book.iter())
        .map(|c| {
            let table = table.clone();
            async move {
                InvoiceStore::load(table.as_ref(), &c.id, period)
                    .await
                    .unwrap()
                    .map_or(0, |r| r.refs.items.len())
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    let per_invoice = bill_calls as f64 / customers as f64;
    let lines_per_invoice = lines as f64 / customers as f64;
    say(format!(
        "Stripe: {bill_calls} calls = **{per_invoice:.2} per invoice** with {lines_per_invoice:.2} lines per invoice: target ≤ 3 + lines = {:.2} ({})",
        3.0 + lines_per_invoice,
        if per_invoice <= 3.0 + lines_per_invoice {
            "met"
        } else {
            "NOT met"
        }
    ));
    let mismatched: usize = futures::stream::iter(book.iter())
        .map(|c| {
            let (table, per_customer) = (table.clone(), &per_customer);
            async move {
                let rec = InvoiceStore::load(table.as_ref(), &c.id, period)
                    .await
                    .unwrap()
                    .expect("invoice record");
                let stored = UsageStore::records(table.as_ref(), &c.id, &c.sub, period)
                    .await
                    .unwrap()
                    .len();
                let (_, total, lines) = per_customer.get(&c.id).copied().unwrap_or_default();
                usize::from(
                    total != rec.invoice.total.max(0)
                        || lines != rec.refs.items.len()
                        || stored != expected_records,
                )
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    say(format!(
        "after the rerun: {invoiced} customers invoiced, **{duplicate_invoices} duplicate invoices, {mismatched} invoices or usage sets that differ from one pass** (Stripe total and items vs the record, stored records vs sent) (checked in {:.1?})",
        t.elapsed()
    ));
    say(format!("total wall time {:.1?}", t0.elapsed()));
    assert_eq!(invoiced, customers, "every customer invoiced");
    assert_eq!(
        (duplicate_invoices, mismatched),
        (0, 0),
        "nothing duplicated"
    );
    let out = blapi_infra::repo_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("month.md"), report).unwrap();
}
