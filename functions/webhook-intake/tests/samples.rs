//! The committed sample events are current, and the handler (with in-memory ports) answers
//! each as documented at the samples' fixed clock: the Function URL samples through intake and
//! the archiver, the archiver's SQS batch and the seal action.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use blapi::queue::{EventMessage, MemoryQueue};
use blapi::storage::MemoryStore;
use blapi::webhook::config::Verifiers;
use blapi::webhook::{ArchiverConfig, IntakeConfig, Route, SourceSecrets, StripeSecrets};
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
        events_queue_url: "q/events".into(),
        webhook_secrets: None,
        tolerance_secs: 300,
        max_body_bytes: 256 * 1024,
        bucket: "b".into(),
        metrics_namespace: "blapi".into(),
        stripe_api: None,
        archiver: Some(ArchiverConfig {
            queue_urls: Route::ALL.map(|r| format!("q/{}", r.name())),
            subject_key_secret_id: "k".into(),
        }),
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
            store: store.clone(),
            sender: queue.clone(),
            subject_key: Some(blapi::subjects::SubjectKey::for_tests()),
        },
    );
    Fake {
        app,
        store,
        queue,
        config,
    }
}

impl Fake {
    fn queue_url(&self, route: Route) -> String {
        self.config
            .archiver
            .as_ref()
            .map(|a| a.queue_url(route).to_owned())
            .unwrap()
    }

    /// The events queue's messages as the SQS event the archiver's function receives.
    fn events_batch(&self) -> aws_lambda_events::event::sqs::SqsEvent {
        let mut event = aws_lambda_events::event::sqs::SqsEvent::default();
        for (i, body) in self.queue.sent("q/events").into_iter().enumerate() {
            let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
            m.message_id = Some(format!("m{i}"));
            m.body = Some(body);
            event.records.push(m);
        }
        event
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
        // Intake wrote nothing but the events-queue message.
        assert!(f.store.keys().is_empty(), "{}", sample.name);
        let accepted = usize::from(sample.expect_status == 200);
        assert_eq!(f.queue.sent("q/events").len(), accepted, "{}", sample.name);
        // The archiver's function takes it from there.
        let answer = f.app.archive(f.events_batch()).await.unwrap();
        assert!(answer.batch_item_failures.is_empty(), "{}", sample.name);
        let mut got: Vec<&str> = Vec::new();
        for route in Route::ALL {
            let sent = f.queue.sent(&f.queue_url(route));
            for body in &sent {
                let msg: EventMessage = serde_json::from_str(body).unwrap();
                assert_eq!(msg.source, sample.source);
                let archived = blapi::archive::find(f.store.as_ref(), &msg.raw_key)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    archived.line.body.as_deref(),
                    req.body.as_deref(),
                    "{}: archived byte for byte",
                    sample.name
                );
            }
            if !sent.is_empty() {
                got.push(route.name());
            }
        }
        assert_eq!(got, sample.expect_queues, "{}", sample.name);
        assert_eq!(f.store.keys().len(), accepted, "{}", sample.name);
    }
}

#[tokio::test]
async fn the_archiver_and_seal_samples_get_their_documented_answers() {
    use webhook_intake::handler::{Answer, Invocation};
    let f = fake();
    let text = std::fs::read_to_string(events_dir().join("archiver-batch.json")).unwrap();
    let inv: Invocation = serde_json::from_str(&text).unwrap();
    assert!(matches!(inv, Invocation::Sqs(_)));
    let Answer::Batch(resp) = f
        .app
        .dispatch(LambdaEvent::new(inv, Context::default()))
        .await
        .unwrap()
    else {
        panic!("not a batch answer")
    };
    // The malformed record fails alone; the redelivered one adds nothing.
    let failed: Vec<&str> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m-4-malformed"]);
    assert_eq!(f.queue.sent(&f.queue_url(Route::LeadEvents)).len(), 2);
    assert_eq!(f.queue.sent(&f.queue_url(Route::BillingEvents)).len(), 1);
    let text = std::fs::read_to_string(events_dir().join("action-seal.json")).unwrap();
    let inv: Invocation = serde_json::from_str(&text).unwrap();
    let Answer::Sealed(report) = f
        .app
        .dispatch(LambdaEvent::new(inv, Context::default()))
        .await
        .unwrap()
    else {
        panic!("not a seal report")
    };
    assert_eq!((report.merged, report.events), (1, 2), "{report:?}");
    assert_eq!(
        f.store.keys(),
        [
            "archive/manifests/2023/11/14/22.json",
            "archive/sealed/2023/11/14/22.ndjson.gz"
        ]
    );
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
        assert!(f.queue.sent(&f.queue_url(route)).is_empty());
    }
}
