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

#[tokio::test]
async fn anything_but_an_sqs_event_is_refused_by_name() {
    let f = fixture();
    let e = invoke(&f, json!({"action": "send"})).await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("not an SQS event"), "{e}");
    assert!(f.mailer.sent().is_empty());
}
