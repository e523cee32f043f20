//! The committed sample events are current, and the handler (with in-memory ports) answers
//! each as documented at the samples' fixed clock.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use blapi::ledger::MemoryLedger;
use blapi::queue::{EventMessage, MemoryQueue};
use blapi::storage::MemoryStore;
use blapi::webhook::config::Verifiers;
use blapi::webhook::{IntakeConfig, Route, SourceSecrets, StripeSecrets};
use lambda_runtime::{Context, LambdaEvent};
use std::path::PathBuf;
use std::sync::Arc;
use webhook_intake::samples::{
    DEFAULT_SAMPLE, FIXED_NOW, LocalSecrets, SAMPLES, function_url_request, render, to_file_json,
    workspace_root,
};
use webhook_intake::{App, Ports};

fn root() -> PathBuf {
    workspace_root(env!("CARGO_MANIFEST_DIR"))
}

fn events_dir() -> PathBuf {
    root().join("events/webhook-intake")
}

struct Fake {
    app: App,
    store: Arc<MemoryStore>,
    queue: Arc<MemoryQueue>,
    config: IntakeConfig,
}

fn fake() -> Fake {
    let secrets = LocalSecrets::load(&root()).unwrap();
    let config = IntakeConfig {
        queue_urls: Route::ALL.map(|r| format!("q/{}", r.name())),
        stripe_secret_id: "s".into(),
        source_secret_id: "f".into(),
        tolerance_secs: 300,
        max_body_bytes: 256 * 1024,
        ledger_table: "t".into(),
        bucket: "b".into(),
        metrics_namespace: "blapi".into(),
        stripe_api: None,
        subjects: None,
    };
    let verifiers = Verifiers::new(
        &StripeSecrets {
            secrets: secrets.stripe.secrets.clone(),
        },
        &SourceSecrets(secrets.sources.clone()),
        ("s", "f"),
    )
    .unwrap();
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let app = App::new(
        config.clone(),
        Ports {
            verifiers,
            ledger: Arc::new(MemoryLedger::new()),
            store: store.clone(),
            sender: queue.clone(),
        },
    );
    Fake {
        app,
        store,
        queue,
        config,
    }
}

fn at_fixed() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(FIXED_NOW, 0).unwrap()
}

#[test]
fn committed_samples_are_current() {
    let secrets = LocalSecrets::load(&root()).unwrap();
    for sample in SAMPLES {
        let expected = to_file_json(
            &render(
                sample,
                &events_dir().join("bodies"),
                &secrets,
                FIXED_NOW,
                None,
            )
            .unwrap(),
        );
        let path = events_dir().join(format!("{}.json", sample.name));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == expected,
            "{} is stale: run `cargo run -p webhook-intake --example sign-events`",
            path.display()
        );
        if sample.name == DEFAULT_SAMPLE {
            let default =
                std::fs::read_to_string(events_dir().join("default.json")).unwrap_or_default();
            assert!(
                default == expected,
                "default.json is stale: run the generator"
            );
        }
    }
}

#[tokio::test]
async fn every_sample_gets_its_documented_answer() {
    for sample in SAMPLES {
        let f = fake();
        let text =
            std::fs::read_to_string(events_dir().join(format!("{}.json", sample.name))).unwrap();
        let req: LambdaFunctionUrlRequest = serde_json::from_str(&text).unwrap();
        let resp = f.app.respond(&req, at_fixed()).await;
        assert_eq!(
            resp.status_code,
            i64::from(sample.expect_status),
            "{}: {:?}",
            sample.name,
            resp.body
        );
        assert_eq!(resp.headers["content-type"], "application/json");
        let mut got: Vec<&str> = Vec::new();
        for route in Route::ALL {
            let sent = f.queue.sent(f.config.queue_url(route));
            for body in &sent {
                let msg: EventMessage = serde_json::from_str(body).unwrap();
                assert_eq!(msg.source, sample.source);
                assert_eq!(
                    f.store.object(&msg.raw_key).unwrap(),
                    req.body.as_deref().unwrap().as_bytes()
                );
            }
            if !sent.is_empty() {
                got.push(route.name());
            }
        }
        assert_eq!(got, sample.expect_queues, "{}", sample.name);
        let archived = usize::from(sample.expect_status == 200);
        assert_eq!(f.store.keys().len(), archived, "{}", sample.name);
    }
}

#[tokio::test]
async fn lambda_entry_point_answers_json_with_http_semantics() {
    let f = fake();
    // A GET is refused with 405 and Allow; handle() never returns a Lambda error.
    let req = function_url_request("GET", "/webhooks/stripe", &[], None, false, FIXED_NOW);
    let resp = f
        .app
        .handle(LambdaEvent::new(req, Context::default()))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 405);
    assert_eq!(resp.headers["allow"], "POST");
    assert_eq!(
        resp.body.as_deref(),
        Some(r#"{"error":"method not allowed; use POST"}"#)
    );
    // The path may come from requestContext.http.path only.
    let mut req = function_url_request("POST", "/webhooks/nope", &[], Some("{}"), false, FIXED_NOW);
    req.raw_path = None;
    let resp = f.app.respond(&req, at_fixed()).await;
    assert_eq!(resp.status_code, 404);
    assert_eq!(
        resp.body.as_deref(),
        Some(r#"{"error":"unknown webhook source nope"}"#)
    );
    // Stale fixed-clock sample at the real time: refused as a replay.
    let text = std::fs::read_to_string(events_dir().join("stripe-invoice-paid.json")).unwrap();
    let req: LambdaFunctionUrlRequest = serde_json::from_str(&text).unwrap();
    let resp = f
        .app
        .handle(LambdaEvent::new(req, Context::default()))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 400);
    assert!(
        resp.body
            .unwrap()
            .contains("older than the 300 s tolerance")
    );
}

#[tokio::test]
async fn direct_invocations_are_told_apart_from_webhooks() {
    use webhook_intake::handler::{Action, Answer, Invocation};
    let f = fake();
    // Every sample (what `cargo lambda invoke` sends) is a webhook.
    for sample in SAMPLES {
        let text =
            std::fs::read_to_string(events_dir().join(format!("{}.json", sample.name))).unwrap();
        let inv: Invocation = serde_json::from_str(&text).unwrap();
        assert!(matches!(inv, Invocation::Url(_)), "{}", sample.name);
        let answer = f
            .app
            .dispatch(LambdaEvent::new(inv, Context::default()))
            .await
            .unwrap();
        assert!(matches!(answer, Answer::Url(_)), "{}", sample.name);
    }
    // The schedule's payload is the recovery action.
    let inv: Invocation = serde_json::from_str(r#"{"action": "recover_stripe"}"#).unwrap();
    assert!(matches!(
        inv,
        Invocation::Action(Action::RecoverStripe {
            days: None,
            dry_run: false
        })
    ));
    // Without the Stripe API configured, it is refused (nothing read, nothing sent).
    let e = f
        .app
        .dispatch(LambdaEvent::new(inv, Context::default()))
        .await
        .unwrap_err();
    assert!(
        e.error_message.contains("STRIPE_API_KEY_SECRET_ID"),
        "{e:?}"
    );
    // A mistyped action is refused, not answered as a webhook.
    for typo in [
        r#"{"action": "recover_stripe", "dayz": 3}"#,
        r#"{"action": "recover"}"#,
        r#"{}"#,
    ] {
        // Either the runtime cannot read it (and answers with the error), or it reads as
        // a request without a method, which dispatch refuses.
        match serde_json::from_str::<Invocation>(typo) {
            Err(e) => assert!(e.to_string().contains("Invocation"), "{typo}: {e}"),
            Ok(inv) => {
                let e = f
                    .app
                    .dispatch(LambdaEvent::new(inv, Context::default()))
                    .await
                    .unwrap_err();
                assert_eq!(e.error_type, "InvalidInvocation", "{typo}");
            }
        }
    }
    for route in Route::ALL {
        assert!(f.queue.sent(f.config.queue_url(route)).is_empty());
    }
}
