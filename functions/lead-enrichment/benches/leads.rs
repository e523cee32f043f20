//! Benchmarks of lead-enrichment with in-memory ports (no network, no AWS):
//! - `handler/batch_of_10`: SQS batches of 10 fresh leads through `App::handle`
//!   (parse, ledger, subject, enrichment cache, scoring, routing, lead store, CRM); criterion
//!   reports the throughput in leads/s.
//! - a one-off report (printed before the criterion run): provider lookups per 1 000 leads with
//!   a realistic domain mix, and the enrichment cache hit ratio.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use blapi::leads::enrichment::{Company, MemoryProvider};
use blapi::leads::normalize::Country;
use criterion::{Criterion, Throughput, criterion_group};
use lambda_runtime::{Context, LambdaEvent};
use lead_enrichment::App;
use std::sync::Arc;

#[path = "../tests/support/mod.rs"]
mod support;

/// Deterministic pseudo-random numbers (no extra dependency, same mix on every run).
struct Lcg(u64);

impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

const COMPANIES: usize = 400;

/// A realistic sign-up mix: ~40 % free-mail (gmail-heavy), ~3 % disposable, the rest company
/// domains with a Zipf-like popularity (a few big customers sign up many people, a long tail
/// signs up one or two); the provider knows 80 % of the companies.
struct Mix {
    rng: Lcg,
    zipf_cdf: Vec<f64>,
}

impl Mix {
    fn new(seed: u64) -> Self {
        let weights: Vec<f64> = (1..=COMPANIES)
            .map(|k| 1.0 / (k as f64).powf(1.07))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let zipf_cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Self {
            rng: Lcg(seed),
            zipf_cdf,
        }
    }

    fn domain(&mut self) -> String {
        let r = self.rng.next_f64();
        let free = [
            (0.20, "gmail.com"),
            (0.28, "outlook.com"),
            (0.33, "yahoo.com"),
            (0.36, "hotmail.com"),
            (0.38, "icloud.com"),
            (0.40, "gmx.de"),
            (0.43, "mailinator.com"),
        ];
        if let Some((_, d)) = free.iter().find(|(p, _)| r < *p) {
            return (*d).to_owned();
        }
        let z = self.rng.next_f64();
        let k = self.zipf_cdf.partition_point(|c| *c < z);
        format!("company{k}.example")
    }
}

fn provider() -> Arc<MemoryProvider> {
    let p = MemoryProvider::new();
    let countries = ["US", "DE", "GB", "FR", "JP", "BR", "CA", "NL"];
    for k in 0..COMPANIES {
        if k % 5 == 4 {
            continue; // unknown to the provider
        }
        p.insert(Company {
            domain: format!("company{k}.example"),
            name: Some(format!("Company {k}")),
            sector: Some("Information Technology".into()),
            industry: Some("Software".into()),
            employees: Some(((k * 7919) % 20_000) as u64 + 5),
            employees_range: None,
            country: Country::parse(countries[k % countries.len()]),
            annual_revenue_usd: None,
        });
    }
    Arc::new(p)
}

fn app(provider: Arc<MemoryProvider>) -> App {
    support::fakes(provider).app
}

fn record(n: u64, domain: &str) -> SqsMessage {
    let body = serde_json::json!({
        "id": format!("msg_{n}"),
        "source": "portal",
        "type": if n.is_multiple_of(3) { "lead.contact_us" } else { "lead.signup" },
        "received_at": "2026-11-25T10:00:00Z",
        "raw_key": format!("raw/portal/msg_{n}.json"),
        "event": {"type": "lead.signup", "timestamp": "2026-11-25T10:00:00Z", "data": {
            "email": format!("person{n}@{domain}"), "name": "Ada Lovelace", "company": "ACME",
            "country": "Germany", "job_title": "Head of Platform", "form": "demo-request",
            "consent": {"marketing": true, "terms": true}}}
    });
    let mut m = SqsMessage::default();
    m.message_id = Some(format!("m{n}"));
    m.body = Some(body.to_string());
    m
}

fn batch(mix: &mut Mix, next: &mut u64, size: usize) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = (0..size)
        .map(|_| {
            *next += 1;
            let d = mix.domain();
            record(*next, &d)
        })
        .collect();
    e
}

fn provider_cost_report(rt: &tokio::runtime::Runtime) {
    let p = provider();
    let app = app(p.clone());
    let mut mix = Mix::new(42);
    let mut next = 0;
    let mut corporate = 0u64;
    let mut failures = 0usize;
    for _ in 0..100 {
        let ev = batch(&mut mix, &mut next, 10);
        corporate += ev
            .records
            .iter()
            .filter(|r| r.body.as_deref().is_some_and(|b| b.contains("@company")))
            .count() as u64;
        let resp = rt
            .block_on(app.handle(LambdaEvent::new(ev, Context::default())))
            .expect("batch");
        failures += resp.batch_item_failures.len();
    }
    let calls = blapi::leads::enrichment::EnrichmentProvider::calls(p.as_ref());
    eprintln!(
        "provider cost: 1000 leads ({corporate} on company domains, {} free-mail/disposable), \
         {calls} provider lookups, cache hit ratio {:.1} % of company-domain leads, {failures} failures",
        1000 - corporate,
        100.0 * (1.0 - calls as f64 / corporate.max(1) as f64)
    );
}

fn bench_handler(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    provider_cost_report(&rt);
    let app = app(provider());
    let mut mix = Mix::new(7);
    let mut next = 1_000_000;
    let mut group = c.benchmark_group("handler");
    group.throughput(Throughput::Elements(10));
    group.bench_function("batch_of_10", |b| {
        b.iter_batched(
            || batch(&mut mix, &mut next, 10),
            |ev| {
                rt.block_on(app.handle(LambdaEvent::new(ev, Context::default())))
                    .expect("batch")
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_handler);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
