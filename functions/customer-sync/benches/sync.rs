//! customer-sync hot path with in-memory ports (Stripe, CRM, stores), so the figures are the
//! handler's own cost:
//! - `handler/purchase_batch`: a batch of the 4 Stripe events of a new purchase for a fresh
//!   customer (account, contact, opportunity written once);
//! - `handler/replay_batch`: the same batch again (nothing changed: no CRM write).
//!
//! Printed after the run: CRM requests and records written per purchase.

use criterion::{Criterion, Throughput, criterion_group};
use std::sync::atomic::{AtomicU64, Ordering};

#[path = "../tests/support/mod.rs"]
mod support;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let f = support::fakes();
    let n = AtomicU64::new(0);
    let mut group = c.benchmark_group("handler");
    group.throughput(Throughput::Elements(4));
    group.bench_function("purchase_batch", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let (cus, sub) = (format!("cus_b{i}"), format!("sub_b{i}"));
            f.stripe
                .put_customer(support::customer(&cus, "ada@acme.example", "Acme"));
            f.stripe
                .put_subscription(support::subscription(&sub, &cus, 5));
            let resp = rt
                .block_on(
                    f.app
                        .handle(support::batch_of(&support::purchase(&cus, &sub))),
                )
                .expect("handled");
            assert!(resp.batch_item_failures.is_empty());
        })
    });
    f.stripe
        .put_customer(support::customer("cus_r", "ada@acme.example", "Acme"));
    f.stripe
        .put_subscription(support::subscription("sub_r", "cus_r", 5));
    let replay = support::purchase("cus_r", "sub_r");
    rt.block_on(f.app.handle(support::batch_of(&replay)))
        .expect("first");
    group.bench_function("replay_batch", |b| {
        b.iter(|| {
            rt.block_on(f.app.handle(support::batch_of(&replay)))
                .expect("replay")
        })
    });
    group.finish();

    // Cost per purchase, counted on a fresh app.
    let g = support::fakes();
    g.stripe
        .put_customer(support::customer("cus_c", "ada@acme.example", "Acme"));
    g.stripe
        .put_subscription(support::subscription("sub_c", "cus_c", 5));
    rt.block_on(
        g.app
            .handle(support::batch_of(&support::purchase("cus_c", "sub_c"))),
    )
    .expect("count");
    println!(
        "per purchase (4 Stripe events): {} CRM requests, {} records written (account, contact, opportunity)",
        g.crm.calls(),
        g.crm.writes()
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
