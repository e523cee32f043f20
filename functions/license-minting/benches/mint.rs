//! Mint throughput with the in-process signer, and KMS round trips per license.
//!
//! - `license/sign+serialise`: JSON serialisation, RSA-2048 PKCS#1 v1.5 SHA-512 signature and
//!   base64 file encoding of one license (what a mint costs in CPU; in production the
//!   signature is a KMS round trip instead).
//! - `license/mint via service`: the whole minting rule with in-memory ports (Stripe fake,
//!   store, object store) and the in-process signer.
//! - Before the benchmarks: 200 mints through the service with a counting signer; asserts and
//!   prints signer calls per license (must be exactly 1 Sign, plus 1 GetPublicKey per cold start).
//!
//! Run: `cargo bench -p license-minting --bench mint`.

use blapi::licensing::{
    CountingSigner, Features, InProcessSigner, License, LicenseCustomer, LicenseKey,
    LicenseService, MemoryLicenseStore, Outcome, Sku, format::encode_file,
};
use blapi::storage::MemoryStore;
use blapi::stripe::MemoryStripe;
use criterion::{Criterion, Throughput};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const START: i64 = 1_780_000_000;

fn license(kid: &str, n: u32) -> License {
    let key = LicenseKey {
        subscription_id: format!("sub_{n}"),
        period_start_ms: START * 1000,
        quantity: 25,
        sku: "enterprise".into(),
        supersedes: None,
    };
    License {
        id: key.license_id(),
        issued_at: START * 1000 + 1,
        starts_at: START * 1000,
        expires_at: (START + 30 * 86400) * 1000,
        customer: LicenseCustomer {
            id: "cus_bench".into(),
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            company: "Analytical Engines".into(),
        },
        features: Sku::lookup("enterprise")
            .map(|s| s.features(25))
            .unwrap_or_else(|_| Features::default()),
        sku_name: "Mattermost Enterprise".into(),
        sku_short_name: "enterprise".into(),
        is_trial: false,
        is_gov_sku: false,
        is_seat_count_enforced: false,
        extra_users: 0,
        signup_jwt: None,
        kid: kid.into(),
        subscription_id: format!("sub_{n}"),
        supersedes: None,
    }
}

struct Bench {
    stripe: Arc<MemoryStripe>,
    signer: Arc<CountingSigner<InProcessSigner>>,
    service: LicenseService,
    next: u64,
}

impl Bench {
    fn new(key: &InProcessSigner) -> Self {
        let stripe = Arc::new(MemoryStripe::new());
        stripe.put_customer(json!({"id": "cus_bench", "name": "Ada", "email": "ada@example.com"}));
        let signer = Arc::new(CountingSigner::new(key.clone()));
        let service = LicenseService::new(
            stripe.clone(),
            signer.clone(),
            Arc::new(MemoryLicenseStore::new()),
            Arc::new(MemoryStore::new()),
        );
        Self {
            stripe,
            signer,
            service,
            next: 0,
        }
    }

    /// A new active subscription to mint for.
    fn add_subscription(&mut self) -> String {
        self.next += 1;
        let id = format!("sub_bench{}", self.next);
        self.stripe.put_subscription(json!({
            "id": id, "customer": "cus_bench", "status": "active",
            "current_period_start": START, "current_period_end": START + 30 * 86400,
            "items": {"data": [{"id": "si_1", "quantity": 25, "plan": {"id": "plan_1", "metadata": {"sku": "enterprise"}}}]}
        }));
        id
    }
}

fn kms_calls_per_license(rt: &tokio::runtime::Runtime, key: &InProcessSigner) {
    let mut b = Bench::new(key);
    let n = 200u64;
    rt.block_on(async {
        for _ in 0..n {
            let sub = b.add_subscription();
            // Each license also sees two duplicate deliveries: they must not sign again.
            for round in 0..3 {
                let out = b.service.reconcile(&sub).await.expect("mint");
                assert_eq!(matches!(out, Outcome::Minted { .. }), round == 0, "{out:?}");
            }
        }
    });
    let signs = b.signer.signs();
    let keys = b.signer.public_keys();
    assert_eq!(signs, n, "exactly one Sign per license");
    assert_eq!(keys, 1, "one GetPublicKey per cold start");
    println!(
        "KMS round trips: {n} licenses (each delivered 3 times) -> {signs} Sign + {keys} GetPublicKey = {:.3} Sign per license, {:.3} calls per license incl. the cold-start key fetch",
        signs as f64 / n as f64,
        (signs + keys) as f64 / n as f64
    );
}

fn main() {
    let key = InProcessSigner::generate().expect("key generation");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    kms_calls_per_license(&rt, &key);

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("license");
    group.throughput(Throughput::Elements(1));
    let kid = key.public().kid().to_owned();
    let mut n = 0u32;
    group.bench_function("sign+serialise", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let json = license(&kid, n).to_json().expect("json");
            let sig = key.sign_now(&json).expect("sign");
            black_box(encode_file(&json, &sig))
        })
    });
    group.bench_function("serialise only", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(license(&kid, n).to_json().expect("json"))
        })
    });
    let mut bench = Bench::new(&key);
    group.bench_function("mint via service", |b| {
        b.iter_custom(|iters| {
            let subs: Vec<String> = (0..iters).map(|_| bench.add_subscription()).collect();
            let started = Instant::now();
            rt.block_on(async {
                for sub in &subs {
                    black_box(bench.service.reconcile(sub).await.expect("mint"));
                }
            });
            started.elapsed().max(Duration::from_nanos(1))
        })
    });
    group.finish();
    c.final_summary();
}
