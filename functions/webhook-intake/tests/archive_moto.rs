//! The archiver, the seal and the archive's privacy operations on the local stack (moto): a
//! versioned S3 bucket, conditional writes, the events queue and the routed queues as
//! provisioned from template.yaml.
//!
//! - a batch with duplicates -> one gzip NDJSON object, one line per event, one message per
//!   routed queue; a malformed record fails alone;
//! - a redelivered batch + the seal -> exactly one line per event; the seal is idempotent and
//!   resumable;
//! - an archive write failure -> nothing acknowledged, nothing lost (redelivered);
//! - conditional writes and version deletes behave as the seal needs on a versioned bucket;
//! - a person's access and erasure across a sealed and an unsealed hour: tombstones, other
//!   people's events untouched, no version left anywhere that names them.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use blapi::archive::{self, Hour};
use blapi::storage::ObjectStore;
use blapi::subjects::SubjectKey;
use blapi::values::Email;
use chrono::Utc;
use std::time::Duration;
use support::*;
use webhook_intake::samples::stripe_request;

const QUIET: Duration = Duration::from_millis(300);

/// A Stripe event naming `email`.
fn customer_event(id: &str, created: i64, email: &str) -> String {
    format!(
        r#"{{"id":"{id}","object":"event","created":{created},"type":"customer.created","data":{{"object":{{"id":"cus_{id}","object":"customer","email":"{email}"}}}}}}"#
    )
}

/// Every version of every archive object, decompressed, as text.
async fn every_archive_version(stack: &blapi_infra::LocalStack) -> Vec<(String, String)> {
    let s3 = clients(stack).await.s3().clone();
    let bucket = stack.physical("ArtifactsBucket");
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix("archive/")
        .send()
        .await
        .unwrap();
    let mut texts = Vec::new();
    for v in out.versions() {
        let bytes = s3
            .get_object()
            .bucket(bucket)
            .key(v.key().unwrap())
            .version_id(v.version_id().unwrap())
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        // Archive objects decompressed (every line re-serialised: the body string too).
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            archive::decode("version", &bytes)
                .unwrap()
                .iter()
                .map(|l| serde_json::to_string(l).unwrap() + "\n")
                .collect()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        texts.push((v.key().unwrap().to_owned(), text));
    }
    texts
}

#[tokio::test]
async fn a_batch_with_duplicates_and_a_bad_record_then_a_redelivery_and_the_seal() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let app = app(&stack, &[]).await;
    let now = Utc::now();
    let (a, b) = (evt_id(), evt_id());
    for (id, t) in [(&a, "invoice.created"), (&b, "customer.updated")] {
        let body = stripe_event(id, t, now.timestamp());
        let req = stripe_request(&body, &[STRIPE_SECRET], now.timestamp());
        // Each delivered twice (a sender's retry).
        for _ in 0..2 {
            assert_eq!(app.respond(&req, now).await.status_code, 200);
        }
    }
    // A malformed message on the events queue fails alone.
    let sqs = clients(&stack).await.sqs().clone();
    sqs.send_message()
        .queue_url(stack.physical("EventsQueue"))
        .message_body(r#"{"this is": "not an events-queue message"}"#)
        .send()
        .await
        .unwrap();
    let (answer, ids) = archive_pending(&stack, &app, QUIET).await;
    assert_eq!(ids.len(), 5);
    assert_eq!(answer.batch_item_failures.len(), 1, "{answer:?}");
    let s3 = store(&stack).await;
    let batch_keys = s3.list("archive/batch/").await.unwrap();
    assert_eq!(batch_keys.len(), 1);
    let lines = archive::decode(
        &batch_keys[0],
        &s3.get(&batch_keys[0]).await.unwrap().unwrap(),
    )
    .unwrap();
    let mut line_ids: Vec<&str> = lines.iter().map(|l| l.id.as_str()).collect();
    line_ids.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(line_ids, want, "one line per event");
    assert_eq!(drain(&stack, "BillingEventsQueue", QUIET).await.len(), 2);
    assert_eq!(drain(&stack, "CustomerEventsQueue", QUIET).await.len(), 1);

    // The malformed one comes back (until its redrive parks it); a redelivered copy of `a`
    // (as if the first batch had timed out after writing) gets archived a second time.
    let again = stripe_event(&a, "invoice.created", now.timestamp());
    let req = stripe_request(&again, &[STRIPE_SECRET], now.timestamp());
    assert_eq!(app.respond(&req, now).await.status_code, 200);
    let (answer, ids) = archive_pending(&stack, &app, QUIET).await;
    assert_eq!((ids.len(), answer.batch_item_failures.len()), (2, 1));
    assert_eq!(s3.list("archive/batch/").await.unwrap().len(), 2);
    let read = archived_hour(&stack, now.timestamp()).await;
    assert_eq!((read.events.len(), read.duplicates), (2, 1));

    // The seal: one object, each event once; the batch objects gone for good (no version).
    let hour = Hour::of(now);
    let done = app
        .seal(Some(&hour.to_string()), false, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        (done.merged, done.events, done.duplicates),
        (2, 2, 1),
        "{done:?}"
    );
    assert!(s3.list("archive/batch/").await.unwrap().is_empty());
    let sealed = archive::decode(
        &hour.sealed_key(),
        &s3.get(&hour.sealed_key()).await.unwrap().unwrap(),
    )
    .unwrap();
    assert_eq!(sealed.len(), 2, "exactly one line per event");
    let versions = every_archive_version(&stack).await;
    let keys: Vec<&str> = versions.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [hour.manifest_key().as_str(), hour.sealed_key().as_str()],
        "no batch object version left, one version of each sealed object"
    );
    // Idempotent: again, nothing changes.
    let before = s3.get(&hour.sealed_key()).await.unwrap();
    let done = app.seal(None, true, Utc::now()).await.unwrap();
    assert_eq!(done.merged, 0);
    assert_eq!(s3.get(&hour.sealed_key()).await.unwrap(), before);
}

#[tokio::test]
async fn an_archive_write_failure_acknowledges_nothing_and_loses_nothing() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let intake = app(&stack, &[]).await;
    // The archiver of a deployment whose bucket is wrong.
    let broken = app(
        &stack,
        &[("ARTIFACTS_BUCKET", "blapi-no-such-bucket-for-tests")],
    )
    .await;
    let now = Utc::now();
    let ids = [evt_id(), evt_id()];
    for id in &ids {
        let body = stripe_event(id, "invoice.payment_failed", now.timestamp());
        let req = stripe_request(&body, &[STRIPE_SECRET], now.timestamp());
        assert_eq!(intake.respond(&req, now).await.status_code, 200);
    }
    let (answer, batch) = archive_pending(&stack, &broken, QUIET).await;
    assert_eq!(batch.len(), 2);
    assert_eq!(
        answer.batch_item_failures.len(),
        2,
        "every record reported for redelivery"
    );
    assert!(drain(&stack, "BillingEventsQueue", QUIET).await.is_empty());
    // Fixed: the same messages, redelivered, go through.
    let (answer, batch) = archive_pending(&stack, &intake, QUIET).await;
    assert_eq!((batch.len(), answer.batch_item_failures.len()), (2, 0));
    let billed = drain(&stack, "BillingEventsQueue", QUIET).await;
    let mut got: Vec<&str> = billed.iter().map(|m| m.id.as_str()).collect();
    got.sort();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(archived_hour(&stack, now.timestamp()).await.events.len(), 2);
}

#[tokio::test]
async fn conditional_writes_and_version_deletes_on_the_versioned_bucket() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let s3 = store(&stack).await;
    let key = format!("archive/sealed/test/{}.ndjson.gz", evt_id());
    s3.put_if(&key, b"one".to_vec(), "application/gzip", None)
        .await
        .unwrap();
    // Must not exist: refused now.
    let e = s3
        .put_if(&key, b"x".to_vec(), "application/gzip", None)
        .await
        .unwrap_err();
    assert!(matches!(e, blapi::Error::Conflict(_)), "{e:?}");
    let first = s3.get_tagged(&key).await.unwrap().unwrap();
    assert!(first.version.is_some(), "a versioned bucket");
    s3.put_if(&key, b"two".to_vec(), "application/gzip", Some(&first.etag))
        .await
        .unwrap();
    // The first ETag is stale now.
    let e = s3
        .put_if(
            &key,
            b"three".to_vec(),
            "application/gzip",
            Some(&first.etag),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, blapi::Error::Conflict(_)), "{e:?}");
    assert_eq!(s3.get(&key).await.unwrap().as_deref(), Some(&b"two"[..]));
    // The old version erased, the current one kept.
    assert_eq!(s3.erase_noncurrent_versions(&key).await.unwrap(), 1);
    assert_eq!(s3.get(&key).await.unwrap().as_deref(), Some(&b"two"[..]));
    // One exact version deleted for good: no delete marker, nothing left.
    let current = s3.get_tagged(&key).await.unwrap().unwrap();
    s3.delete_version(&key, current.version.as_deref())
        .await
        .unwrap();
    assert_eq!(s3.get(&key).await.unwrap(), None);
    let versions = clients(&stack)
        .await
        .s3()
        .list_object_versions()
        .bucket(stack.physical("ArtifactsBucket"))
        .prefix(&key)
        .send()
        .await
        .unwrap();
    assert!(versions.versions().is_empty() && versions.delete_markers().is_empty());
}

#[tokio::test]
async fn a_persons_archived_events_are_exported_and_erased_everywhere() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let app = app(&stack, &[]).await;
    let now = Utc::now();
    let ada = format!("ada.{}@example.com", uuid::Uuid::new_v4().simple());
    let bob = format!("bob.{}@example.com", uuid::Uuid::new_v4().simple());
    let earlier = now - chrono::Duration::hours(2);
    // Ada and Bob two hours ago (sealed), Ada again now (not sealed yet).
    let (a1, b1, a2) = (evt_id(), evt_id(), evt_id());
    for (id, at, who) in [(&a1, earlier, &ada), (&b1, earlier, &bob), (&a2, now, &ada)] {
        let body = customer_event(id, at.timestamp(), who);
        // Signed now (within tolerance); the event's own time places it.
        let req = stripe_request(&body, &[STRIPE_SECRET], now.timestamp());
        assert_eq!(app.respond(&req, now).await.status_code, 200);
    }
    archive_pending(&stack, &app, QUIET).await;
    app.seal(Some(&Hour::of(earlier).to_string()), false, now)
        .await
        .unwrap();
    let s3 = store(&stack).await;
    // The local stack's subject key (infra/local-secrets.json), as the archiver loaded it.
    let secrets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(blapi_infra::repo_root().join("infra/local-secrets.json"))
            .unwrap(),
    )
    .unwrap();
    let key = SubjectKey::new(
        secrets["PrivacyKeySecretName"]["subject_key"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    )
    .unwrap();
    let subject = key.subject(&Email::parse(&ada).unwrap());

    let sweep = blapi::privacy::connectors::ArchiveSweep {
        files: std::sync::Arc::new(s3.clone()),
    };
    use blapi::privacy::connectors::Sweep;
    let exported = sweep.export(&subject).await.unwrap();
    assert_eq!(exported.len(), 2, "{exported:#?}");
    assert!(
        exported
            .iter()
            .all(|e| e["data"]["data"]["object"]["email"] == ada.as_str())
    );
    assert!(!serde_json::to_string(&exported).unwrap().contains(&bob));

    let outcomes = sweep.erase(&subject).await.unwrap();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    // No version of any archive object names her any more; Bob's event is intact.
    let versions = every_archive_version(&stack).await;
    for (k, text) in &versions {
        assert!(!text.contains(&ada), "{k} still names her");
        assert!(!text.contains(subject.as_str()), "{k} still holds her hash");
    }
    let old = archived_hour(&stack, earlier.timestamp()).await;
    let bob_line = old.events.iter().find(|e| e.line.id == b1).unwrap();
    assert!(bob_line.line.body.as_deref().unwrap().contains(&bob));
    let tomb = old.events.iter().find(|e| e.line.id == a1).unwrap();
    assert!(tomb.line.erased && tomb.line.body.is_none());
    assert_eq!(tomb.line.event_type, "customer.created");
    let new = archived_hour(&stack, now.timestamp()).await;
    assert!(new.events.iter().all(|e| e.line.erased), "{:?}", new.events);
    assert!(sweep.export(&subject).await.unwrap().is_empty());
}
