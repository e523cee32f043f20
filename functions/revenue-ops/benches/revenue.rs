//! revenue-ops hot paths, in memory:
//! - `metrics/snapshot_100k`: the day's snapshot (MRR, movements, customers, retention, seats,
//!   pipeline) over 100 000 subscriptions, each with a few history points (target: < 1 s on
//!   one core);
//! - `metrics/monthly_12_100k`: the report's twelve months of movements over the same;
//! - `health/score`: one customer's score from its inputs;
//! - `job/customer`: one customer's daily job on in-memory ports (usage read, score,
//!   renewal, CRM write).

#![allow(clippy::unwrap_used)] // a benchmark: a panic is the failure report

use blapi::billing::memory::MemoryBilling;
use blapi::crm::MemoryCrm;
use blapi::customers::state::{CustomerState, CustomerStore, MemoryCustomers, Term, ValuePoint};
use blapi::queue::MemoryQueue;
use blapi::revenue::health::{HealthInputs, HealthRules};
use blapi::revenue::metrics::{MetricsEngine, Rates};
use blapi::revenue::renewals::RenewalWindows;
use blapi::revenue::store::MemoryRevenue;
use blapi::revenue::{Ports, RevenueOps, Settings};
use blapi::storage::MemoryStore;
use blapi::telemetry::Tally;
use blapi::values::Money;
use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group};
use std::hint::black_box;
use std::sync::Arc;

const DAY: i64 = 86_400;
/// 2026-03-02 00:00 UTC.
const T0: i64 = 1_772_409_600;

/// `n` customers with one subscription each: started up to two years back, some upgraded,
/// some cancelled, a few trials, a tenth in EUR.
fn states(n: usize) -> Vec<CustomerState> {
    (0..n)
        .map(|i| {
            let currency = if i % 10 == 0 { "eur" } else { "usd" };
            let money = |a: i64| Some(Money::new(a, currency.parse().unwrap()));
            let start = T0 - (i as i64 % 700) * DAY;
            let base = 1_000 + (i as i64 % 50) * 100;
            let yearly = i % 4 == 0;
            let term_end = start + if yearly { 365 } else { 30 } * DAY;
            let mut points = vec![ValuePoint {
                at: start,
                status: if i % 17 == 0 { "trialing" } else { "active" }.into(),
                mrr: money(base),
                seats: Some(5),
                term_end,
                cancel_at_period_end: false,
            }];
            if i % 3 == 0 {
                let mut p = points[0].clone();
                p.at = start + 40 * DAY;
                p.mrr = money(base * 2);
                p.seats = Some(10);
                points.push(p);
            }
            if i % 11 == 0 {
                let mut p = points.last().unwrap().clone();
                p.at = start + 90 * DAY;
                p.status = "canceled".into();
                points.push(p);
            }
            let last = points.last().unwrap().clone();
            let mut s = CustomerState::new(&format!("cus_{i:06}"));
            s.owner_id = Some("005OWNER".into());
            s.subscriptions.insert(
                format!("sub_{i:06}"),
                Term {
                    status: last.status.clone(),
                    start,
                    end: term_end,
                    seats: last.seats,
                    sku: Some("E20".into()),
                    annual_value: None,
                    cancel_reason: None,
                    plan: None,
                    interval: Some(if yearly { "year" } else { "month" }.into()),
                    interval_count: Some(1),
                    mrr: last.mrr.clone(),
                    cancel_at_period_end: false,
                    history: points,
                },
            );
            s
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let engine = MetricsEngine {
        rates: Rates::bundled().unwrap(),
        windows: RenewalWindows::default(),
        book: None,
    };
    let all = states(100_000);
    let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
    let mut group = c.benchmark_group("metrics");
    group.sample_size(10);
    group.throughput(Throughput::Elements(all.len() as u64));
    group.bench_function("snapshot_100k", |b| {
        b.iter(|| black_box(engine.snapshot(black_box(&all), date)))
    });
    group.bench_function("monthly_12_100k", |b| {
        b.iter(|| black_box(engine.monthly(black_box(&all), date, 12)))
    });
    group.finish();

    let rules = HealthRules::bundled().unwrap();
    let inputs = HealthInputs {
        usage_last_30: [("api_calls".to_owned(), 900), ("storage".to_owned(), 50)].into(),
        usage_previous_30: [("api_calls".to_owned(), 1_000), ("storage".to_owned(), 40)].into(),
        active_users: Some(7),
        licensed_seats: Some(10),
        payment: "active".into(),
        days_to_license_expiry: Some(40),
        refund: false,
        dispute: false,
    };
    c.bench_function("health/score", |b| {
        b.iter(|| black_box(rules.score(black_box(inputs.clone()))))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let customers = Arc::new(MemoryCustomers::new());
    let few = states(1_000);
    rt.block_on(async {
        for s in &few {
            customers.save(s).await.unwrap();
        }
    });
    let billing = Arc::new(MemoryBilling::new());
    let ops = RevenueOps::new(
        Ports {
            customers,
            revenue: Arc::new(MemoryRevenue::new()),
            usage: billing.clone(),
            dunning: billing,
            crm: Arc::new(MemoryCrm::new()),
            queue: Arc::new(MemoryQueue::new()),
            files: Arc::new(MemoryStore::new()),
            book: Arc::new(blapi::billing::pricebook::PriceBook::embedded().unwrap()),
        },
        Settings::bundled("http://q/jobs", "http://q/notes").unwrap(),
    );
    let tally = Tally::new("bench", "revenue-ops");
    let mut i = 0;
    c.bench_function("job/customer", |b| {
        b.iter(|| {
            i = (i + 1) % few.len();
            rt.block_on(ops.run_customer(date, &few[i].customer_id, &tally))
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
