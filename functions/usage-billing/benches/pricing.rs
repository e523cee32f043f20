//! Pricing + aggregation in memory: 1 000 000 usage records across 10 000 customers.
//!
//! Records are generated before measuring. The measured path folds them into one
//! [`Accumulator`] per (customer, metric) — memory grows with customers × metrics, not with
//! records — then composes every customer's invoice with the embedded price book (tiers,
//! packages, volume, minimum). Target: < 1 s on one core.

#![allow(clippy::unwrap_used)] // bench setup: a panic is the failure report

use blapi::billing::aggregate::{Accumulator, Aggregation};
use blapi::billing::invoice::{SubscriptionUsage, compose};
use blapi::billing::pricebook::PriceBook;
use blapi::billing::subscription::Subscription;
use blapi::billing::{Period, Quantity};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;

const CUSTOMERS: u32 = 10_000;
const RECORDS: usize = 1_000_000;

/// (plan, [(metric, aggregation)]) — the metrics that receive records.
fn plans() -> [(&'static str, [(&'static str, Aggregation); 4]); 2] {
    [
        (
            "cloud-pro",
            [
                ("api_calls", Aggregation::Sum),
                ("builds", Aggregation::Count),
                ("peak_nodes", Aggregation::Max),
                ("capacity", Aggregation::Latest),
            ],
        ),
        (
            "cloud-starter",
            [
                ("api_calls", Aggregation::Sum),
                ("active_installations", Aggregation::UniqueCount),
                ("api_calls", Aggregation::Sum),
                ("active_installations", Aggregation::UniqueCount),
            ],
        ),
    ]
}

struct Rec {
    customer: u32,
    metric: u8,
    ts_ms: i64,
    value: Quantity,
    installation: u8,
}

fn records(period: Period) -> Vec<Rec> {
    let start = period.start().timestamp_millis();
    let span = period.end().timestamp_millis() - start;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..RECORDS)
        .map(|_| {
            let r = next();
            Rec {
                customer: (r % u64::from(CUSTOMERS)) as u32,
                metric: ((r >> 20) % 4) as u8,
                ts_ms: start + ((r >> 24) % span as u64) as i64,
                value: Quantity::from_micros(((r >> 40) % 5_000) as i64 * 1_000_000),
                installation: ((r >> 56) % 16) as u8,
            }
        })
        .collect()
}

fn subscription(c: u32, plan: &str) -> Subscription {
    Subscription {
        customer: format!("cus_{c}"),
        subscription: format!("sub_{c}"),
        plan: plan.to_owned(),
        quantity: 1 + i64::from(c % 5),
        status: "active".into(),
        currency: None,
        start: if c.is_multiple_of(10) {
            1_791_590_400
        } else {
            1_780_000_000
        }, // some start mid-month
        end: None,
        updated_at: 0,
    }
}

/// Aggregates and prices; returns the sum of all invoice totals.
fn run(recs: &[Rec], book: &PriceBook, period: Period, installs: &[String]) -> i64 {
    let plans = plans();
    let mut acc: HashMap<(u32, u8), Accumulator> = HashMap::with_capacity(CUSTOMERS as usize * 4);
    for r in recs {
        let plan = &plans[(r.customer % 2) as usize];
        let agg = plan.1[r.metric as usize].1;
        acc.entry((r.customer, r.metric))
            .or_insert_with(|| Accumulator::new(agg))
            .add(r.ts_ms, r.value, Some(&installs[r.installation as usize]));
    }
    let mut total = 0;
    for c in 0..CUSTOMERS {
        let plan = &plans[(c % 2) as usize];
        let mut quantities = BTreeMap::new();
        for (i, (metric, _)) in plan.1.iter().enumerate() {
            if let Some(a) = acc.get(&(c, i as u8)) {
                let q = a.quantity(period);
                let e = quantities
                    .entry((*metric).to_owned())
                    .or_insert(Quantity::ZERO);
                *e = Quantity::from_micros(e.micros() + q.micros());
            }
        }
        let su = SubscriptionUsage {
            subscription: subscription(c, plan.0),
            quantities,
        };
        total += compose(&su.subscription.customer.clone(), period, book, &[su], None)
            .unwrap()
            .total;
    }
    total
}

fn bench(c: &mut Criterion) {
    let period: Period = "2026-10".parse().unwrap();
    let book = PriceBook::embedded().unwrap();
    let recs = records(period);
    let installs: Vec<String> = (0..16).map(|i| format!("inst-{i}")).collect();
    let mut g = c.benchmark_group("usage-billing");
    g.sample_size(10);
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.bench_function("aggregate+price 1M records / 10k customers", |b| {
        b.iter(|| black_box(run(black_box(&recs), &book, period, &installs)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
