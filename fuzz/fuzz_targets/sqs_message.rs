//! SQS messages as every consumer reads them: the claim-check reference resolved
//! ([`resolve_body`]), the body parsed as an [`EventMessage`], and a whole Lambda SQS event
//! through [`process_batch`].
//!
//! Input: a message body, or (starting with `{"Records"`) an SQS event. The object store
//! holds one claim-checked body and, beside it, objects no pointer may reach (a license file,
//! a claim-check-like key with another name). Beyond "no panic":
//! - a body that is not a pointer is itself; a pointer resolves only to the claim-checked body;
//! - an `EventMessage` survives its JSON round trip;
//! - a body sent through the claim check ([`check_out`]) resolves to itself;
//! - a batch reports exactly the records its handler failed, each once.
#![no_main]

use aws_lambda_events::event::sqs::SqsEvent;
use blapi::queue::{EventMessage, QueueRecord, check_out, process_batch, resolve_body};
use blapi::storage::{MemoryStore, ObjectStore};
use blapi_fuzz::{block_on, same_json};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::sync::LazyLock;

const CLAIMED_KEY: &str = "claim-check/01890a5d-ac96-774b-bcce-b302099a8057.json";
const CLAIMED: &str = r#"{"id":"evt_claimed","source":"stripe","type":"invoice.paid","received_at":"2023-11-14T22:13:20Z","raw_key":"raw/stripe/evt_claimed.json","event":{"id":"evt_claimed"}}"#;
/// Objects in the same bucket that no pointer may make a consumer read.
const PRIVATE: [&str; 3] = [
    "licenses/cus_1/private.mattermost-license",
    "claim-check/01890A5D-AC96-774B-BCCE-B302099A8057.json",
    "claim-check/../licenses/cus_1/private.mattermost-license",
];
const PRIVATE_BODY: &str = "private: never read through a claim check";

static STORE: LazyLock<MemoryStore> = LazyLock::new(|| {
    let store = MemoryStore::new();
    block_on(store.put(CLAIMED_KEY, CLAIMED.as_bytes().to_vec(), "application/json"))
        .expect("memory put");
    for key in PRIVATE {
        block_on(store.put(key, PRIVATE_BODY.as_bytes().to_vec(), "application/json"))
            .expect("memory put");
    }
    store
});

fn looks_like_pointer(body: &str) -> bool {
    body.trim_start().starts_with("{\"blapi_claim_check\"")
}

fn event_message(record: &QueueRecord) -> Option<EventMessage> {
    let msg: EventMessage = record.json().ok()?;
    let text = serde_json::to_string(&msg).expect("an EventMessage serialises");
    let back: EventMessage = serde_json::from_str(&text).expect("an EventMessage parses back");
    assert_eq!(
        (
            &back.id,
            &back.source,
            &back.event_type,
            back.received_at,
            &back.raw_key
        ),
        (
            &msg.id,
            &msg.source,
            &msg.event_type,
            msg.received_at,
            &msg.raw_key
        )
    );
    assert!(same_json(&back.event, &msg.event), "{back:?} != {msg:?}");
    Some(msg)
}

fn one_body(body: &str) {
    let store: &MemoryStore = &STORE;
    match block_on(resolve_body(store, body)) {
        Ok(resolved) => {
            if !looks_like_pointer(body) {
                assert_eq!(resolved, body, "a plain body is itself");
            } else if resolved != body {
                assert_eq!(
                    resolved, CLAIMED,
                    "a pointer resolves only to the claim-checked body"
                );
            }
            let record = QueueRecord {
                message_id: "m".into(),
                body: resolved,
                receive_count: 1,
                source_queue: None,
            };
            let _ = event_message(&record);
        }
        Err(e) => {
            assert!(
                looks_like_pointer(body),
                "only a pointer can fail to resolve"
            );
            assert!(!e.to_string().contains(PRIVATE_BODY));
        }
    }

    // Through the claim check and back: the same body. (A body that is itself shaped like a
    // pointer is only sent as one; it is not checked out when small.)
    let threshold = body.len() / 2;
    let out_store = MemoryStore::new();
    let sent = block_on(check_out(&out_store, threshold, body.to_owned())).expect("check out");
    if sent != body || !looks_like_pointer(body) {
        let back = block_on(resolve_body(&out_store, &sent)).expect("a fresh claim check resolves");
        assert_eq!(back, body);
    }
}

fn batch(event: SqsEvent) {
    let ids: Vec<String> = event
        .records
        .iter()
        .map(|r| r.message_id.clone().unwrap_or_default())
        .collect();
    let mut failed_by_handler = Vec::new();
    let response = block_on(process_batch(event, &*STORE, None, |record| {
        let outcome = event_message(&record).map(|_| ()).ok_or_else(|| {
            blapi::Error::Invalid(format!("{} is not an event message", record.message_id))
        });
        if outcome.is_err() {
            failed_by_handler.push(record.message_id.clone());
        }
        async move { outcome }
    }));
    let reported: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    // Every record the handler failed is reported; every report names a record of the batch.
    for id in &failed_by_handler {
        assert!(reported.contains(id), "a failed record was acknowledged");
    }
    for id in &reported {
        assert!(ids.contains(id), "a report names no record of the batch");
    }
    let distinct: BTreeSet<&String> = reported.iter().collect();
    let distinct_ids: BTreeSet<&String> = ids.iter().collect();
    if distinct_ids.len() == ids.len() {
        assert_eq!(distinct.len(), reported.len(), "a record reported twice");
        assert!(reported.len() <= ids.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.starts_with("{\"Records\"") {
        if let Ok(event) = serde_json::from_str::<SqsEvent>(text) {
            batch(event);
        }
        return;
    }
    one_body(text);
});
