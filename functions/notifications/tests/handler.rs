//! The handler on the sample events of `events/notifications/`, with in-memory ports (the
//! mailer, the ledger, Stripe, the subject index, the bucket).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use blapi::config::Env;
use blapi::ledger::MemoryLedger;
use blapi::notify::{Config, MemoryMailer, Ports as NotifyPorts};
use blapi::storage::{MemoryStore, ObjectStore};
use blapi::stripe::MemoryStripe;
use blapi::subjects::Subjects;
use lambda_runtime::{Context, LambdaEvent};
use notifications::{App, Ports};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Fixture {
    app: App,
    mailer: Arc<MemoryMailer>,
}

fn config() -> Config {
    Config::from_env(&Env::from_map([
        ("MAIL_FROM", "billing@blapi.example"),
        ("OPERATIONS_EMAIL", "operations@blapi.example"),
        ("LEDGER_TABLE", "ledger"),
        ("ARTIFACTS_BUCKET", "artifacts"),
        ("PRIVACY_TABLE", "privacy"),
        ("PRIVACY_KEY_SECRET_ID", "blapi/privacy-subject-key"),
        ("STRIPE_API_BASE", "http://127.0.0.1:8420"),
        ("STRIPE_API_KEY_SECRET_ID", "blapi/stripe-api-key"),
    ]))
    .unwrap()
}

fn fixture() -> Fixture {
    let mailer = Arc::new(MemoryMailer::new());
    let stripe = Arc::new(MemoryStripe::new());
    stripe.put_customer(json!({
        "id": "cus_sample_1", "email": "grace@initech.example", "name": "Grace Hopper",
        "metadata": {"company": "Initech"}
    }));
    let files: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let ports = Ports {
        notify: NotifyPorts {
            mailer: mailer.clone(),
            ledger: Arc::new(MemoryLedger::new()),
            stripe,
            subjects: Subjects::for_tests(),
            files: files.clone(),
            clock: || 1_772_445_600_000,
        },
        store: files,
    };
    Fixture {
        app: App::new(config(), ports).unwrap(),
        mailer,
    }
}

fn sample(name: &str) -> Value {
    let path = blapi_infra::repo_root()
        .join("events/notifications")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn invoke(f: &Fixture, payload: Value) -> blapi::Result<Value> {
    f.app
        .handle(LambdaEvent::new(payload, Context::default()))
        .await
}

#[tokio::test]
async fn the_default_sample_is_mailed_once_whatever_the_redeliveries() {
    let f = fixture();
    for _ in 0..3 {
        let resp = invoke(&f, sample("default.json")).await.unwrap();
        assert_eq!(resp["batchItemFailures"], json!([]), "{resp}");
    }
    let sent = f.mailer.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to.as_str(), "ada.lovelace@globex.example");
    assert_eq!(sent[0].from.as_str(), "billing@blapi.example");
    assert_eq!(
        sent[0].subject,
        "Your privacy request pr_sample_1 is complete"
    );
    assert!(sent[0].text.contains("no longer receive marketing e-mail"));
}

#[tokio::test]
async fn in_a_mixed_batch_the_unknown_type_fails_alone_and_the_redelivery_is_absorbed() {
    let f = fixture();
    let resp = invoke(&f, sample("batch-mixed.json")).await.unwrap();
    assert_eq!(
        resp["batchItemFailures"],
        json!([{"itemIdentifier": "7d1e0c2a-0004-notify"}]),
        "{resp}"
    );
    let sent = f.mailer.sent();
    assert_eq!(sent.len(), 2, "the license once, the deadline warning");
    assert_eq!(sent[0].to.as_str(), "grace@initech.example");
    assert!(sent[0].text.contains("Hello Grace Hopper,"));
    assert!(
        sent[0].text.contains(
            "memory://licenses/cus_sample_1/lic_sample_1.mattermost-license?expires_in=259200"
        ),
        "{}",
        sent[0].text
    );
    assert_eq!(sent[1].to.as_str(), "operations@blapi.example");
    assert!(
        sent[1].subject.contains("pr_sample_2 is due soon"),
        "{}",
        sent[1].subject
    );
}

#[tokio::test]
async fn amounts_are_shown_in_currency_units() {
    let f = fixture();
    let resp = invoke(&f, sample("invoice-available.json")).await.unwrap();
    assert_eq!(resp["batchItemFailures"], json!([]), "{resp}");
    let mail = f.mailer.sent().pop().unwrap();
    assert!(
        mail.text.contains("Amount due: 1,234.50 USD"),
        "{}",
        mail.text
    );
    assert!(mail.html.contains("1,234.50 USD"));
    assert!(
        mail.text
            .contains("memory://invoices/cus_sample_1/2026-02.html?expires_in=")
    );
}

/// Ten notifications, each taking one second to send (on paused tokio time), and an invocation
/// deadline 5.5 s away: with the default margin (its 2 s floor; 10 % of 5.5 s is less, and no
/// send takes longer), sends start at 0, 1, 2 and 3 s; at 4 s only 1.5 s is left, so the last
/// six are not started and are reported as failures for SQS to redeliver.
#[tokio::test(start_paused = true)]
async fn near_the_deadline_the_records_not_started_are_reported_as_failures() {
    let f = fixture();
    f.mailer.set_delay(Duration::from_secs(1));
    let template = sample("default.json")["Records"][0].clone();
    let records: Vec<Value> = (1..=10)
        .map(|i| {
            let mut r = template.clone();
            r["messageId"] = json!(format!("deadline-{i:02}"));
            let body = json!({
                "id": format!("privacy:pr_deadline_{i}:closed"),
                "type": "privacy.request.completed", "to": "ada.lovelace@globex.example",
                "request_id": format!("pr_deadline_{i}"), "request_kind": "opt_out",
                "status": "completed"
            });
            r["body"] = json!(body.to_string());
            r
        })
        .collect();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut context = Context::default();
    context.deadline = now_ms + 5_500;
    let resp = f
        .app
        .handle(LambdaEvent::new(json!({"Records": records}), context))
        .await
        .unwrap();
    let failed: Vec<&str> = resp["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        (5..=10)
            .map(|i| format!("deadline-{i:02}"))
            .collect::<Vec<_>>(),
        "{resp}"
    );
    let sent = f.mailer.sent();
    assert_eq!(sent.len(), 4, "only the started records were sent");
    assert!(sent.iter().all(|m| m.subject.contains("pr_deadline_")));

    // SQS redelivers the reported ones to an invocation with time to spare: each is sent once.
    let redelivered: Vec<Value> = records
        .iter()
        .filter(|r| failed.contains(&r["messageId"].as_str().unwrap()))
        .cloned()
        .collect();
    let resp = invoke(&f, json!({"Records": redelivered})).await.unwrap();
    assert_eq!(resp["batchItemFailures"], json!([]), "{resp}");
    assert_eq!(f.mailer.sent().len(), 10);
}

#[tokio::test]
async fn anything_but_an_sqs_event_is_refused_by_name() {
    let f = fixture();
    let e = invoke(&f, json!({"action": "send"})).await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("not an SQS event"), "{e}");
    assert!(f.mailer.sent().is_empty());
}
