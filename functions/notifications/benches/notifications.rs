//! Notifications per second through the handler, with in-memory ports (mailer, ledger, Stripe,
//! subject index, bucket): SQS batches of 10 records, each parsed, claimed, its recipient and
//! links resolved, its three templates rendered and "sent". A plain harness, not criterion:
//! the figure is a rate over many batches. Cases: a mix of every customer kind (the hot path),
//! the same batches delivered again (duplicates: the ledger's fast path), and one invoice kind
//! alone (the heaviest template).
//!
//! `cargo bench -p notifications --bench notifications` (part of `make bench`); `BENCH_NOTIFY_COUNT`
//! notifications per case (default 10 000). The table is printed and written to
//! `target/bench/notifications.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use blapi::config::Env;
use blapi::ledger::MemoryLedger;
use blapi::notice::{Kind, Notification};
use blapi::notify::{Config, MemoryMailer, Ports as NotifyPorts};
use blapi::storage::{MemoryStore, ObjectStore};
use blapi::stripe::MemoryStripe;
use blapi::subjects::Subjects;
use lambda_runtime::{Context, LambdaEvent};
use notifications::{App, Ports};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CUSTOMERS: usize = 100;

fn app(mailer: Arc<MemoryMailer>) -> App {
    let config = Config::from_env(&Env::from_map([
        ("MAIL_FROM", "billing@blapi.example"),
        ("OPERATIONS_EMAIL", "operations@blapi.example"),
        ("LEDGER_TABLE", "ledger"),
        ("ARTIFACTS_BUCKET", "artifacts"),
        ("PRIVACY_TABLE", "privacy"),
        ("PRIVACY_KEY_SECRET_ID", "blapi/privacy-subject-key"),
        ("STRIPE_API_BASE", "http://127.0.0.1:8420"),
        ("STRIPE_API_KEY_SECRET_ID", "blapi/stripe-api-key"),
    ]))
    .unwrap();
    let stripe = Arc::new(MemoryStripe::new());
    for c in 0..CUSTOMERS {
        stripe.put_customer(json!({
            "id": format!("cus_bench{c}"), "email": format!("buyer{c}@bench.example"),
            "name": format!("Buyer {c}"), "metadata": {"company": format!("Company {c}")}
        }));
    }
    let files: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let ports = Ports {
        notify: NotifyPorts {
            mailer,
            ledger: Arc::new(MemoryLedger::new()),
            stripe,
            subjects: Subjects::for_tests(),
            files: files.clone(),
            clock: || 1_772_445_600_000,
        },
        store: files,
    };
    App::new(config, ports).unwrap()
}

fn usd(amount: i64) -> Value {
    json!({"amount": amount, "currency": "usd"})
}

/// Notification `i` of a case: `mixed` cycles through the customer kinds, else invoices only.
fn notification(case: &str, i: usize, mixed: bool) -> Notification {
    let customer = format!("cus_bench{}", i % CUSTOMERS);
    let id = format!("{case}:{i}");
    let n = |kind| Notification::to_customer(id.clone(), kind, &customer);
    let invoice = || {
        n(Kind::InvoiceAvailable)
            .with("period", "2026-02")
            .with("number", format!("INV-{i:05}"))
            .with("total", usd(123_450 + i as i64))
            .with("amount_due", usd(100_000))
            .with("html_key", format!("invoices/{customer}/2026-02.html"))
            .with("pdf_key", format!("invoices/{customer}/2026-02.pdf"))
            .with("pay_url", "https://invoice.stripe.com/i/bench")
    };
    if !mixed {
        return invoice();
    }
    match i % 5 {
        0 => n(Kind::LicenseIssued)
            .with("license_id", format!("lic_{i}"))
            .with("sku", "professional")
            .with("seats", 25)
            .with("expires_at", 1_803_945_600_000i64)
            .with(
                "file_key",
                format!("licenses/{customer}/lic_{i}.mattermost-license"),
            ),
        1 => invoice(),
        2 => n(Kind::DunningReminder)
            .with("invoice", format!("in_{i}"))
            .with("day", 7)
            .with("amount_due", usd(4_900))
            .with("pay_url", "https://invoice.stripe.com/i/bench")
            .with("suspend_on", "2026-03-16"),
        3 => n(Kind::CardExpiring)
            .with("brand", "Visa")
            .with("last4", "4242")
            .with("exp_month", 3)
            .with("exp_year", 2026)
            .with("days", 30),
        _ => Notification::to_address(id.clone(), Kind::PrivacyCompleted, "ada@bench.example")
            .with("request_id", format!("pr_{i}"))
            .with("request_kind", "access")
            .with("status", "completed")
            .with("bundle_key", format!("privacy/exports/pr_{i}.json")),
    }
}

/// SQS events of 10 records each.
fn batches(case: &str, count: usize, mixed: bool) -> Vec<Value> {
    (0..count)
        .collect::<Vec<_>>()
        .chunks(10)
        .map(|chunk| {
            let records: Vec<Value> = chunk
                .iter()
                .map(|&i| {
                    json!({
                        "messageId": format!("{case}-{i}"),
                        "body": serde_json::to_string(&notification(case, i, mixed)).unwrap(),
                        "attributes": {"ApproximateReceiveCount": "1"},
                        "messageAttributes": {},
                    })
                })
                .collect();
            json!({ "Records": records })
        })
        .collect()
}

async fn run(app: &App, events: &[Value]) -> Duration {
    let start = Instant::now();
    for e in events {
        let resp = app
            .handle(LambdaEvent::new(e.clone(), Context::default()))
            .await
            .unwrap();
        assert_eq!(resp["batchItemFailures"], json!([]), "{resp}");
    }
    start.elapsed()
}

fn main() {
    let count: usize = std::env::var("BENCH_NOTIFY_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mailer = Arc::new(MemoryMailer::new());
        let app = app(mailer.clone());
        // Warm-up: templates, allocator, the first Stripe look-ups.
        run(&app, &batches("warm", 200, true)).await;
        let mixed = batches("mixed", count, true);
        let invoices = batches("invoice", count, false);
        let mut rows = Vec::new();
        mailer.clear();
        let took = run(&app, &mixed).await;
        assert_eq!(mailer.sent().len(), count, "every notification sent once");
        rows.push(("mixed customer kinds, sent", took));
        let took = run(&app, &mixed).await;
        assert_eq!(mailer.sent().len(), count, "redeliveries send nothing");
        rows.push(("the same again (duplicates)", took));
        let took = run(&app, &invoices).await;
        rows.push(("invoice.available only, sent", took));
        let mut out = String::from(
            "| case | notifications/s | µs per notification |\n|---|---:|---:|\n",
        );
        for (name, took) in &rows {
            let secs = took.as_secs_f64();
            out.push_str(&format!(
                "| {name} | {:.0} | {:.1} |\n",
                count as f64 / secs,
                secs * 1e6 / count as f64
            ));
        }
        println!(
            "\nnotifications through the handler, in-memory ports, {count} per case in batches of 10:\n\n{out}"
        );
        let dir = blapi_infra::repo_root().join("target/bench");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notifications.md"), out).unwrap();
    });
}
