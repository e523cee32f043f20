//! The daily dunning sweep over a business of 10 000 customers, 5 % of them past due, on the
//! local stack (moto's DynamoDB and SQS through the real SDK): the wall time of the sweep and
//! the writes it makes, counted from the requests.
//!
//! Every customer has a dunning item with a card on file (so each is in the sweep's index,
//! scheduled for its card-expiry notice); 500 have an unpaid failed invoice, 1 day old. The
//! sweep must read only the due ones (the sparse index), send each one reminder and save each
//! state twice (the step with its outbox, then the outbox cleared).
//!
//! `cargo bench -p usage-billing --bench dunning_sweep` with the stack up (part of
//! `make bench`); `BENCH_DUNNING_CUSTOMERS` changes the size. Prints a table and writes
//! `target/bench/dunning.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use async_trait::async_trait;
use blapi::aws::Clients;
use blapi::billing::dunning::{Dunning, InvoiceEvent};
use blapi::billing::dynamo::DynamoBilling;
use blapi::billing::ports::DunningStore;
use blapi::error::Result;
use blapi::queue::{QueueSender, SqsSender};
use blapi::storage::S3Store;
use blapi::stripe::Card;
use blapi::telemetry::Tally;
use blapi::values::{Currency, Money};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const DAY: i64 = 86_400;

/// Counts the writes the sweep makes to its store and queue.
struct Counting<T> {
    inner: T,
    saves: AtomicU64,
    loads: AtomicU64,
    queries: AtomicU64,
}

#[async_trait]
impl DunningStore for Counting<DynamoBilling> {
    async fn load(&self, customer: &str) -> Result<(Dunning, u64)> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.inner.load(customer).await
    }
    async fn save(&self, customer: &str, state: &Dunning, version: u64) -> Result<()> {
        self.saves.fetch_add(1, Ordering::Relaxed);
        self.inner.save(customer, state, version).await
    }
    async fn due(&self, now: i64) -> Result<Vec<String>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.inner.due(now).await
    }
}

struct CountingQueue {
    inner: SqsSender,
    sends: AtomicU64,
}

#[async_trait]
impl QueueSender for CountingQueue {
    async fn send(&self, url: &str, body: String) -> Result<()> {
        self.sends.fetch_add(1, Ordering::Relaxed);
        self.inner.send(url, body).await
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let customers: usize = std::env::var("BENCH_DUNNING_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let past_due = customers / 20;
    let stack = blapi_infra::testing::stack();
    let clients = Clients::new(&stack.sdk_config().await);
    let table = DynamoBilling::new(clients.dynamodb().clone(), stack.physical("BillingTable"));
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let t0 = chrono::Utc::now().timestamp();
    let usd: Currency = "usd".parse().unwrap();
    let policy = blapi::billing::dunning::Policy::default();

    // Seed: every customer with a card far from expiry; 5 % with a failed invoice a day ago.
    let seeded = Instant::now();
    futures::stream::iter(0..customers)
        .map(|i| {
            let table = &table;
            let (run, usd, policy) = (&run, &usd, &policy);
            async move {
                let customer = format!("cus_bench{run}{i:05}");
                let mut d = Dunning::default();
                d.set_payment_method(
                    Some(Card {
                        brand: "visa".into(),
                        last4: format!("{:04}", i % 10_000),
                        exp_month: 12,
                        exp_year: 2040,
                    }),
                    t0,
                );
                if i % 20 == 0 {
                    d.apply(
                        &customer,
                        &InvoiceEvent::PaymentFailed {
                            invoice: format!("in_bench{run}{i:05}"),
                            attempt_count: 1,
                            at: t0 - DAY - 60,
                            amount_due: Some(Money::new(4_900, usd.clone())),
                            pay_url: None,
                            subscription: None,
                        },
                    );
                    d.outbox.clear();
                }
                d.next_at = d.next_action_at(policy);
                table.save(&customer, &d, 0).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let seeded = seeded.elapsed();

    let store = Arc::new(Counting {
        inner: table,
        saves: AtomicU64::new(0),
        loads: AtomicU64::new(0),
        queries: AtomicU64::new(0),
    });
    let files = Arc::new(S3Store::new(
        clients.s3().clone(),
        stack.physical("ArtifactsBucket"),
    ));
    let queue = Arc::new(CountingQueue {
        inner: SqsSender::new(clients.sqs().clone(), files.clone()),
        sends: AtomicU64::new(0),
    });
    let stripe = Arc::new(blapi::stripe::MemoryStripe::new());
    let billing = blapi::billing::service::Billing {
        ports: blapi::billing::service::Ports {
            usage: Arc::new(blapi::billing::memory::MemoryBilling::new()),
            subs: Arc::new(blapi::billing::memory::MemoryBilling::new()),
            invoices: Arc::new(blapi::billing::memory::MemoryBilling::new()),
            credits: Arc::new(blapi::billing::memory::MemoryBilling::new()),
            dunning: store.clone(),
            stripe: stripe.clone(),
            collections: stripe,
            artifacts: files,
            ledger: Arc::new(blapi::ledger::MemoryLedger::new()),
            queue: queue.clone(),
            book: Arc::new(blapi::billing::pricebook::PriceBook::embedded().unwrap()),
        },
        config: blapi::billing::service::BillingConfig {
            jobs_queue_url: stack.physical("BillingJobsQueue").to_owned(),
            notifications_queue_url: stack.physical("CustomerNotificationsQueue").to_owned(),
            ingest: blapi::billing::usage::IngestPolicy::settled(),
            dunning: policy,
            lease: std::time::Duration::from_secs(60),
            customer_events_queue_url: None,
            license_requests_queue_url: None,
            issuing: Default::default(),
        },
    };
    let tally = Tally::new("bench", "usage-billing");
    let started = Instant::now();
    let at = chrono::DateTime::from_timestamp(t0 + 3600, 0).unwrap();
    let report = billing.sweep_dunning(at, &tally).await.unwrap();
    let wall = started.elapsed();
    // A second sweep the same day: nothing due, one index query.
    let again_started = Instant::now();
    let again = billing.sweep_dunning(at, &tally).await.unwrap();
    let again_wall = again_started.elapsed();

    let ours = report.due; // other runs' customers on a shared stack may be due too
    let table = format!(
        "| customers | past due | due found | reminders | sweep wall | per due customer | dynamodb saves | loads | index queries | sqs sends | second sweep |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {customers} | {past_due} | {ours} | {} | {:.2} s | {:.1} ms | {} | {} | {} | {} | {} due, {:.0} ms |\n",
        report.steps.get("remind").copied().unwrap_or(0),
        wall.as_secs_f64(),
        wall.as_secs_f64() * 1e3 / ours.max(1) as f64,
        store.saves.load(Ordering::Relaxed),
        store.loads.load(Ordering::Relaxed),
        store.queries.load(Ordering::Relaxed),
        queue.sends.load(Ordering::Relaxed),
        again.due,
        again_wall.as_secs_f64() * 1e3,
    );
    println!(
        "seeded {customers} dunning states in {:.1} s\n\n{table}",
        seeded.as_secs_f64()
    );
    let out = blapi_infra::repo_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("dunning.md"), table).unwrap();
    assert!(report.failed == 0, "{report:?}");
}
