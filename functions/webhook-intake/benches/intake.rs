//! Criterion benches of webhook-intake.
//!
//! - `verify_parse/stripe_4k`: Stripe signature check + envelope parse of a 4 KB event (the
//!   sample `invoice.paid`), the CPU work on every delivery. Target <= 10 us.
//! - `verify_parse/standard_4k`: the same for a Standard Webhooks delivery.
//! - `handler/stripe_4k`: the whole handler (Function URL request -> response) with no-op
//!   ports, so only our code is measured: routing, verify, parse, the events-queue message
//!   JSON, reply JSON.
//! - `archiver/batch_100x4k`: the archiver on a batch of 100 such events with no-op ports:
//!   parse, subject hashes, gzip NDJSON, the routed messages (the CPU behind the cost model's
//!   archiver duration).
//!
//! Run: `cargo bench -p webhook-intake` (or `make bench`).

use async_trait::async_trait;
use blapi::config::Secret;
use blapi::queue::QueueSender;
use blapi::storage::ObjectStore;
use blapi::webhook::config::Verifiers;
use blapi::webhook::{
    IntakeConfig, SourceSecrets, StandardHeaders, StandardSecret, StandardVerifier, StripeSecrets,
    StripeVerifier, envelope, stripe_scheme,
};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use webhook_intake::samples::{FIXED_NOW, stripe_request};
use webhook_intake::{App, Ports};

const STRIPE_SECRET: &str = "whsec_local_stripe_test_secret";
const PORTAL_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn body_4k() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/webhook-intake/bodies/stripe-invoice-paid.json"
    );
    let base = std::fs::read_to_string(path).expect("sample body");
    let base = base.trim_end();
    // Pad to exactly 4096 bytes inside the metadata, keeping it one valid event.
    let with = |n: usize| {
        base.replacen(
            "\"metadata\": {}",
            &format!("\"metadata\": {{\"p\": \"{}\"}}", "x".repeat(n)),
            1,
        )
    };
    with(4096usize.saturating_sub(with(0).len()))
}

struct NoStore;
#[async_trait]
impl ObjectStore for NoStore {
    async fn put(&self, _key: &str, body: Vec<u8>, _content_type: &str) -> blapi::Result<()> {
        black_box(body);
        Ok(())
    }
    async fn get(&self, _key: &str) -> blapi::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    async fn delete(&self, _key: &str) -> blapi::Result<()> {
        Ok(())
    }
    async fn erase_all_versions(&self, _key: &str) -> blapi::Result<u64> {
        Ok(0)
    }
    async fn list(&self, _prefix: &str) -> blapi::Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn presign_get(&self, key: &str, _ttl: std::time::Duration) -> blapi::Result<String> {
        Ok(key.to_owned())
    }
    fn bucket(&self) -> &str {
        "bench"
    }
}

struct NoQueue;
#[async_trait]
impl QueueSender for NoQueue {
    async fn send(&self, _queue_url: &str, body: String) -> blapi::Result<()> {
        black_box(body);
        Ok(())
    }
}

fn verify_parse(c: &mut Criterion) {
    let body = body_4k();
    assert_eq!(body.len(), 4096, "4 KB event");
    let secrets = [Secret::new(STRIPE_SECRET.to_owned())];
    let verifier = StripeVerifier::new(&secrets);
    let header = stripe_scheme::header(&[STRIPE_SECRET], FIXED_NOW, body.as_bytes());
    assert!(
        verifier
            .verify(Some(&header), body.as_bytes(), FIXED_NOW, 300)
            .is_ok()
    );
    let mut group = c.benchmark_group("verify_parse");
    group.bench_function("stripe_4k", |b| {
        b.iter(|| {
            let t = verifier
                .verify(
                    Some(black_box(&header)),
                    black_box(body.as_bytes()),
                    FIXED_NOW,
                    300,
                )
                .expect("verified");
            let env = envelope::parse_stripe(black_box(body.as_bytes())).expect("parsed");
            black_box((t, env.id, env.event_type.len()));
        })
    });

    let secret = StandardSecret::parse(PORTAL_SECRET).expect("secret");
    let std_verifier = StandardVerifier::new([&secret]);
    let sig = secret.sign("msg_bench", FIXED_NOW, body.as_bytes());
    let ts = FIXED_NOW.to_string();
    let headers = StandardHeaders {
        id: Some("msg_bench"),
        timestamp: Some(&ts),
        signature: Some(&sig),
    };
    group.bench_function("standard_4k", |b| {
        b.iter(|| {
            let (id, _) = std_verifier
                .verify(
                    black_box(headers),
                    black_box(body.as_bytes()),
                    FIXED_NOW,
                    300,
                )
                .expect("verified");
            let env = envelope::parse_standard(id, black_box(body.as_bytes())).expect("parsed");
            black_box(env.event_type.len());
        })
    });
    group.finish();
}

fn handler(c: &mut Criterion) {
    let body = body_4k();
    let config = IntakeConfig {
        events_queue_url: "q/events".into(),
        webhook_secrets: None,
        tolerance_secs: 300,
        max_body_bytes: 256 * 1024,
        bucket: "bench".into(),
        metrics_namespace: "blapi".into(),
        stripe_api: None,
        archiver: None,
    };
    let verifiers = Verifiers::new(
        &StripeSecrets {
            secrets: vec![STRIPE_SECRET.into()],
        },
        &SourceSecrets(Default::default()),
        ("s", "f"),
    )
    .expect("verifiers");
    let app = App::new(
        config,
        Ports {
            verifiers,
            store: Arc::new(NoStore),
            sender: Arc::new(NoQueue),
            subject_key: None,
        },
    );
    let req = stripe_request(&body, &[STRIPE_SECRET], FIXED_NOW);
    let now = chrono::DateTime::from_timestamp(FIXED_NOW, 0).expect("time");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let resp = rt.block_on(app.respond(&req, now));
    assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    c.bench_function("handler/stripe_4k", |b| {
        b.iter(|| {
            let resp = rt.block_on(app.respond(black_box(&req), now));
            black_box(resp.status_code);
        })
    });
}

/// The archiver's CPU on a batch of 100 4 KB events (no-op store and queue).
fn archiver(c: &mut Criterion) {
    use blapi::webhook::archiver::{Archiver, Record};
    use blapi::webhook::{ArchiverConfig, Source};
    let body = body_4k();
    let env = envelope::parse_stripe(body.as_bytes()).expect("parsed");
    let source = Source::parse("stripe").expect("source");
    let now = chrono::DateTime::from_timestamp(FIXED_NOW, 0).expect("time");
    let records: Vec<Record> = (0..100)
        .map(|i| {
            let mut inc = envelope::incoming(
                &source,
                &env,
                blapi::webhook::routes("stripe", "invoice.paid"),
                now,
            );
            inc.id = format!("evt_bench_{i}");
            Record {
                message_id: format!("m{i}"),
                body: Some(serde_json::to_string(&inc).expect("json")),
            }
        })
        .collect();
    let config = ArchiverConfig {
        queue_urls: ["q/lr", "q/be", "q/ue", "q/le", "q/ce", "q/pr"].map(String::from),
        subject_key_secret_id: "k".into(),
    };
    let archiver = Archiver::new(
        &config,
        Arc::new(NoStore),
        Arc::new(NoQueue),
        blapi::subjects::SubjectKey::for_tests(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let report = rt.block_on(archiver.archive(records.clone()));
    assert_eq!((report.events, report.failed.len()), (100, 0));
    c.bench_function("archiver/batch_100x4k", |b| {
        b.iter(|| {
            let report = rt.block_on(archiver.archive(black_box(records.clone())));
            black_box(report.events);
        })
    });
}

/// What the runtime pays to read the event: the Function URL request alone (before direct
/// invocations existed) and the `Invocation` that tells an action from a webhook.
fn event_parse(c: &mut Criterion) {
    use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
    use webhook_intake::handler::Invocation;
    let req = stripe_request(&body_4k(), &[STRIPE_SECRET], FIXED_NOW);
    let raw = serde_json::to_vec(&req).expect("event json");
    let mut group = c.benchmark_group("event_parse");
    group.bench_function("url_request_4k", |b| {
        b.iter(|| {
            let r: LambdaFunctionUrlRequest =
                serde_json::from_slice(black_box(&raw)).expect("parse");
            black_box(r.body.map(|b| b.len()));
        })
    });
    group.bench_function("invocation_4k", |b| {
        b.iter(|| {
            let r: Invocation = serde_json::from_slice(black_box(&raw)).expect("parse");
            black_box(matches!(r, Invocation::Url(_)));
        })
    });
    group.finish();
}

criterion_group!(benches, verify_parse, handler, archiver, event_parse);
criterion_main!(benches);
