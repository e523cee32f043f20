//! privacy-requests' handler on in-memory ports: every committed sample event, the operator
//! actions, and the bad inputs (the local stack's tests run the real adapters).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use blapi::billing::memory::MemoryBilling;
use blapi::crm::MemoryCrm;
use blapi::customers::state::MemoryCustomers;
use blapi::leads::store::MemoryLeadStore;
use blapi::licensing::MemoryLicenseStore;
use blapi::privacy::connectors::{
    BillingConnector, Connector, CrmConnector, CustomersConnector, LeadsConnector,
    LicensesConnector, ObjectsConnector,
};
use blapi::privacy::service::Settings;
use blapi::privacy::{Config, MemoryRequests, Ports as PrivacyPorts};
use blapi::queue::MemoryQueue;
use blapi::storage::{MemoryStore, ObjectStore};
use blapi::subjects::{Location, Subjects, System};
use blapi::values::Email;
use chrono::{TimeZone, Utc};
use lambda_runtime::{Context, LambdaEvent};
use privacy_requests::{App, Ports};
use serde_json::{Value, json};
use std::sync::Arc;

fn sample(name: &str) -> Value {
    let path = format!(
        "{}/../../events/privacy-requests/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn now_ms() -> i64 {
    1_764_064_800_000
}

struct Fixture {
    app: App,
    subjects: Subjects,
    files: Arc<MemoryStore>,
    queue: Arc<MemoryQueue>,
}

fn fixture() -> Fixture {
    let subjects = Subjects::for_tests();
    let files = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let billing = Arc::new(MemoryBilling::new());
    let connectors: Vec<Arc<dyn Connector>> = vec![
        Arc::new(LeadsConnector(Arc::new(MemoryLeadStore::new()))),
        Arc::new(CrmConnector(Arc::new(MemoryCrm::new()))),
        Arc::new(CustomersConnector(Arc::new(MemoryCustomers::new()))),
        Arc::new(LicensesConnector {
            store: Arc::new(MemoryLicenseStore::new()),
            files: files.clone(),
            now_ms,
        }),
        Arc::new(BillingConnector {
            subscriptions: billing.clone(),
            dunning: billing,
            files: files.clone(),
        }),
        Arc::new(ObjectsConnector::archive(files.clone())),
        Arc::new(ObjectsConnector::exports(files.clone())),
    ];
    let ports = Ports {
        privacy: PrivacyPorts {
            requests: Arc::new(MemoryRequests::new()),
            subjects: subjects.clone(),
            connectors,
            sweeps: vec![],
            files: files.clone(),
            queue: queue.clone(),
            clock: now_ms,
        },
        store: files.clone(),
        clock: Arc::new(|| Utc.timestamp_millis_opt(now_ms()).unwrap()),
    };
    let env: Vec<(&str, &str)> = vec![
        ("PRIVACY_TABLE", "privacy"),
        ("PRIVACY_KEY_SECRET_ID", "key"),
        ("LEADS_TABLE", "leads"),
        ("CUSTOMERS_TABLE", "customers"),
        ("LICENSES_TABLE", "licenses"),
        ("BILLING_TABLE", "billing"),
        ("CRM_TABLE", "crm"),
        ("ARTIFACTS_BUCKET", "bucket"),
        ("STRIPE_API_BASE", "http://127.0.0.1:1"),
        ("STRIPE_API_KEY_SECRET_ID", "stripe"),
        ("NOTIFICATIONS_QUEUE_URL", "q/notify"),
        ("SWEEP_QUEUE_URLS", "q/dlq1,q/dlq2"),
    ];
    let config = Config::from_env(&blapi::config::Env::from_map(env)).unwrap();
    assert_eq!(config.sweep_queue_urls, vec!["q/dlq1", "q/dlq2"]);
    assert_eq!(config.settings.link_ttl.as_secs(), 72 * 3600);
    let _: &Settings = &config.settings;
    Fixture {
        app: App::new(config, ports),
        subjects,
        files,
        queue,
    }
}

async fn invoke(f: &Fixture, payload: Value) -> blapi::Result<Value> {
    f.app
        .handle(LambdaEvent::new(payload, Context::default()))
        .await
}

#[tokio::test]
async fn the_sample_access_request_gets_a_bundle_and_a_link() {
    let f = fixture();
    let ada = Email::parse("ada.lovelace@globex.example").unwrap();
    let key = "raw/portal/2026/11/25/msg_2f1c9a7e0b.json";
    f.files
        .put(
            key,
            br#"{"data":{"email":"ada.lovelace@globex.example"}}"#.to_vec(),
            "application/json",
        )
        .await
        .unwrap();
    f.subjects
        .index
        .record(
            &f.subjects.key.subject(&ada),
            &[Location::new(System::Archive, key)],
            1,
        )
        .await
        .unwrap();
    let resp = invoke(&f, sample("default.json")).await.unwrap();
    assert_eq!(resp["batchItemFailures"], json!([]), "{resp}");
    let bundles: Vec<String> = f
        .files
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("privacy/exports/"))
        .collect();
    assert_eq!(bundles.len(), 1);
    let bundle: Value = serde_json::from_slice(&f.files.object(&bundles[0]).unwrap()).unwrap();
    assert_eq!(bundle["systems"]["archive"][0]["place"], key);
    let sent = f.queue.sent("q/notify");
    assert_eq!(sent.len(), 1);
    // The requester is told at the address her request came with; the bundle is named by
    // key (the notifications function signs the link when it sends).
    let note: Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(note["type"], "privacy.request.completed");
    assert_eq!(note["to"], "ada.lovelace@globex.example");
    assert!(
        note["bundle_key"]
            .as_str()
            .unwrap()
            .starts_with("privacy/exports/"),
        "{note}"
    );
    assert!(note.get("link").is_none(), "{note}");
}

#[tokio::test]
async fn a_malformed_request_fails_alone_and_the_operator_actions_answer() {
    let f = fixture();
    let resp = invoke(&f, sample("batch-mixed.json")).await.unwrap();
    assert_eq!(
        resp["batchItemFailures"],
        json!([{"itemIdentifier": "5f0c3a1e-0003-batch"}]),
        "{resp}"
    );
    // The operator's samples: submit (CCPA erasure of an unknown person), status, extend.
    let submitted = invoke(&f, sample("submit-erasure.json")).await.unwrap();
    assert_eq!(submitted["request"]["status"], "completed", "{submitted:#}");
    assert_eq!(submitted["request"]["jurisdiction"], "ccpa");
    let status = invoke(&f, sample("status.json")).await.unwrap();
    assert_eq!(status["request"]["id"], "pr_op_ticket_4711");
    // Closed: too late to extend.
    assert!(invoke(&f, sample("extend.json")).await.is_err());
    let swept = invoke(&f, sample("sweep.json")).await.unwrap();
    assert_eq!(swept["report"]["open"], 0, "{swept}");
    // Not an action, an unknown action, a missing field: refused, named.
    for (bad, says) in [
        (json!({"hello": 1}), "action"),
        (json!({"action": "purge"}), "purge"),
        (json!({"action": "status"}), "request_id"),
        (json!({"action": "status", "request_id": "nope"}), "nope"),
    ] {
        let e = invoke(&f, bad.clone()).await.unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}
