//! The archiver on in-memory ports: a batch with duplicates, hours, bad records, failures of
//! the archive write and of the routed sends (nothing acknowledged, nothing lost), claim checks.

use super::*;
use crate::archive;
use crate::queue::{EventMessage, MemoryQueue, check_out};
use crate::storage::MemoryStore;
use chrono::{DateTime, Utc};

const URLS: [&str; 6] = [
    "q/license-requests",
    "q/billing-events",
    "q/usage-events",
    "q/lead-events",
    "q/customer-events",
    "q/privacy-requests",
];

struct World {
    archiver: Archiver,
    store: Arc<MemoryStore>,
    queue: Arc<MemoryQueue>,
}

fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let config = ArchiverConfig {
        queue_urls: URLS.map(String::from),
        subject_key_secret_id: "k".into(),
    };
    World {
        archiver: Archiver::new(
            &config,
            store.clone(),
            queue.clone(),
            SubjectKey::for_tests(),
        ),
        store,
        queue,
    }
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// An events-queue message of a Stripe event created at `created`.
fn incoming(id: &str, event_type: &str, created: &str, email: Option<&str>) -> String {
    let created = t(created);
    let email = email.map_or(String::new(), |e| format!(",\"email\":\"{e}\""));
    let body = format!(
        "{{\n  \"id\": \"{id}\",\n  \"type\": \"{event_type}\",\n  \"created\": {},\n  \"data\": {{\"object\": {{\"id\": \"cus_1\"{email}}}}}\n}}",
        created.timestamp()
    );
    let routes = super::super::routing::routes("stripe", event_type)
        .iter()
        .map(|r| r.name().to_owned())
        .collect();
    serde_json::to_string(&Incoming {
        id: id.into(),
        source: "stripe".into(),
        event_type: event_type.into(),
        received_at: created + chrono::Duration::seconds(1),
        occurred_at: Some(created),
        routes,
        body,
    })
    .unwrap()
}

fn records(bodies: &[(&str, Option<String>)]) -> Vec<Record> {
    bodies
        .iter()
        .map(|(id, body)| Record {
            message_id: (*id).into(),
            body: body.clone(),
        })
        .collect()
}

impl World {
    fn sent(&self, url: &str) -> Vec<EventMessage> {
        self.queue
            .sent(url)
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn a_batch_with_duplicates_becomes_one_line_per_event_and_one_message_per_route() {
    let w = world();
    let a = incoming(
        "evt_a",
        "customer.created",
        "2026-03-02T10:10:00Z",
        Some("ada@example.com"),
    );
    let b = incoming("evt_b", "invoice.created", "2026-03-02T10:20:00Z", None);
    let report = w
        .archiver
        .archive(records(&[
            ("m1", Some(a.clone())),
            ("m2", Some(b)),
            ("m3", Some(a.clone())),
        ]))
        .await;
    assert_eq!(
        (report.records, report.events, report.duplicates),
        (3, 2, 1)
    );
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.objects.len(), 1, "one object for the hour");
    let key = &report.objects[0];
    assert!(key.starts_with("archive/batch/2026/03/02/10/"), "{key}");
    let bytes = w.store.object(key).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip");
    let lines = archive::decode(key, &bytes).unwrap();
    assert_eq!(
        lines.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        ["evt_a", "evt_b"]
    );
    let ada =
        SubjectKey::for_tests().subject(&crate::values::Email::parse("ada@example.com").unwrap());
    assert_eq!(lines[0].subjects, vec![ada]);
    let original: Incoming = serde_json::from_str(&a).unwrap();
    assert_eq!(lines[0].body.as_deref(), Some(original.body.as_str()));
    // customer.created -> billing, leads, customers; invoice.created -> billing.
    assert_eq!(
        report.sent,
        BTreeMap::from([
            ("billing-events", 2),
            ("customer-events", 1),
            ("lead-events", 1)
        ])
    );
    let leads = w.sent(URLS[3]);
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0].raw_key, format!("{key}#stripe/evt_a"));
    assert_eq!(leads[0].event["data"]["object"]["email"], "ada@example.com");
    assert_eq!(leads[0].received_at, original.received_at);
    assert_eq!(w.sent(URLS[1]).len(), 2);
    assert_eq!(report.by_source["stripe"], (2, 0));
}

#[tokio::test]
async fn a_batch_spanning_hours_writes_one_object_per_hour() {
    let w = world();
    let report = w
        .archiver
        .archive(records(&[
            (
                "m1",
                Some(incoming(
                    "evt_1",
                    "invoice.created",
                    "2026-03-02T10:59:59Z",
                    None,
                )),
            ),
            (
                "m2",
                Some(incoming(
                    "evt_2",
                    "invoice.created",
                    "2026-03-02T11:00:00Z",
                    None,
                )),
            ),
            // A retry of an event three days old: its own hour.
            (
                "m3",
                Some(incoming(
                    "evt_0",
                    "invoice.created",
                    "2026-02-27T09:00:00Z",
                    None,
                )),
            ),
        ]))
        .await;
    assert!(report.failed.is_empty());
    let hours: Vec<Option<archive::Hour>> = report
        .objects
        .iter()
        .map(|k| archive::Hour::from_key(k))
        .collect();
    assert_eq!(
        hours,
        ["2026-02-27T09", "2026-03-02T10", "2026-03-02T11"].map(archive::Hour::parse)
    );
}

#[tokio::test]
async fn malformed_records_fail_alone() {
    let w = world();
    let good = incoming("evt_ok", "invoice.created", "2026-03-02T10:00:00Z", None);
    let mut unknown_route: Incoming = serde_json::from_str(&good).unwrap();
    unknown_route.id = "evt_r".into();
    unknown_route.routes = vec!["nowhere".into()];
    let mut bad_id: Incoming = serde_json::from_str(&good).unwrap();
    bad_id.id = "../x".into();
    let mut not_json_body: Incoming = serde_json::from_str(&good).unwrap();
    not_json_body.id = "evt_nj".into();
    not_json_body.body = "not json".into();
    let report = w
        .archiver
        .archive(records(&[
            ("m-not-json", Some("{\"this is\": \"not an event\"".into())),
            ("m-ok", Some(good)),
            ("m-event-message", Some(r#"{"id":"evt_1","source":"stripe","type":"x","received_at":"2026-03-02T10:00:00Z","raw_key":"","event":{}}"#.into())),
            ("m-none", None),
            ("m-route", Some(serde_json::to_string(&unknown_route).unwrap())),
            ("m-id", Some(serde_json::to_string(&bad_id).unwrap())),
            ("m-body", Some(serde_json::to_string(&not_json_body).unwrap())),
            ("m-pointer", Some(r#"{"blapi_claim_check":{"bucket":"memory","key":"claim-check/gone.json","bytes":9}}"#.into())),
        ]))
        .await;
    assert_eq!(
        report.failed,
        [
            "m-not-json",
            "m-event-message",
            "m-none",
            "m-route",
            "m-id",
            "m-body",
            "m-pointer"
        ]
    );
    assert_eq!(report.events, 1);
    assert_eq!(w.sent(URLS[1]).len(), 1);
}

#[tokio::test]
async fn an_archive_write_failure_acknowledges_nothing_and_loses_nothing() {
    let w = world();
    let batch = || {
        records(&[
            (
                "m1",
                Some(incoming(
                    "evt_1",
                    "customer.created",
                    "2026-03-02T10:00:00Z",
                    None,
                )),
            ),
            (
                "m2",
                Some(incoming(
                    "evt_2",
                    "invoice.created",
                    "2026-03-02T10:01:00Z",
                    None,
                )),
            ),
        ])
    };
    w.store.set_failing(true);
    let report = w.archiver.archive(batch()).await;
    assert_eq!(report.failed, ["m1", "m2"], "every record redelivered");
    assert_eq!(
        w.queue.total(),
        0,
        "nothing forwarded before it is archived"
    );
    assert!(w.store.keys().is_empty());
    // SQS redelivers; the bucket is back.
    w.store.set_failing(false);
    let report = w.archiver.archive(batch()).await;
    assert!(report.failed.is_empty());
    assert_eq!(report.events, 2);
    assert_eq!(w.sent(URLS[1]).len(), 2);
}

#[tokio::test]
async fn a_send_failure_is_redelivered_and_the_seal_keeps_one_copy() {
    let w = world();
    let batch = || {
        records(&[
            (
                "m1",
                Some(incoming(
                    "evt_1",
                    "customer.created",
                    "2026-03-02T10:00:00Z",
                    None,
                )),
            ),
            (
                "m2",
                Some(incoming(
                    "evt_2",
                    "plan.created",
                    "2026-03-02T10:01:00Z",
                    None,
                )),
            ),
        ])
    };
    w.queue.set_failing(true);
    let report = w.archiver.archive(batch()).await;
    // Archived, but not on its queues: redelivered. The unrouted one is done.
    assert_eq!(report.failed, ["m1"]);
    assert_eq!(report.objects.len(), 1);
    // SQS redelivers m1 alone: archived a second time (another object), then forwarded.
    w.queue.set_failing(false);
    let again = w
        .archiver
        .archive(batch().into_iter().take(1).collect())
        .await;
    assert!(again.failed.is_empty());
    let hour = archive::Hour::parse("2026-03-02T10").unwrap();
    let read = archive::read_hour(w.store.as_ref(), hour).await.unwrap();
    assert_eq!((read.events.len(), read.duplicates), (2, 1));
    archive::seal_hour(w.store.as_ref(), hour).await.unwrap();
    let sealed = archive::decode(
        &hour.sealed_key(),
        &w.store.object(&hour.sealed_key()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        sealed.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        ["evt_1", "evt_2"],
        "exactly one line per event"
    );
    assert_eq!(
        w.sent(URLS[4]).len(),
        1,
        "evt_1 reached customer-events once"
    );
}

#[tokio::test]
async fn a_claim_checked_message_is_read_from_the_store() {
    let w = world();
    let body = incoming("evt_big", "invoice.created", "2026-03-02T10:00:00Z", None);
    let pointer = check_out(w.store.as_ref(), 10, body).await.unwrap();
    assert!(pointer.contains("blapi_claim_check"));
    let report = w.archiver.archive(records(&[("m1", Some(pointer))])).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(w.sent(URLS[1])[0].id, "evt_big");
    let metrics = report.metrics("blapi", "webhook-intake");
    assert_eq!(metrics.len(), 2);
    assert_eq!(metrics[1].get("EventsArchived"), Some(1.0));
}
