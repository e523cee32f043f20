//! webhook-intake against the local stack (moto): the real SDK, the events queue, the S3
//! archive and the routed SQS queues as provisioned from template.yaml. The intake's answer
//! needs nothing but the events queue; the archiver (the same binary, its other function)
//! takes the batch from there. Each test that counts queue messages has a fresh stack of its
//! own, so tests run in parallel and repeatedly.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use base64::Engine;
use blapi::storage::ObjectStore;
use chrono::Utc;
use std::time::Duration;
use support::*;
use webhook_intake::samples::{standard_request, stripe_request};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn accepted_event_is_queued_then_archived_byte_for_byte_and_routed() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let app = app(&stack, &[]).await;
    let now = Utc::now();
    let id = evt_id();
    let body = stripe_event(&id, "customer.subscription.created", now.timestamp());
    let resp = app
        .respond(
            &stripe_request(&body, &[STRIPE_SECRET], now.timestamp()),
            now,
        )
        .await;
    assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    let json: serde_json::Value = serde_json::from_str(resp.body.as_deref().unwrap()).unwrap();
    assert_eq!(json, serde_json::json!({"received": true, "id": id}));
    // Durable on the events queue; nothing in S3 yet, nothing routed yet.
    let s3 = store(&stack).await;
    assert!(s3.list("archive/").await.unwrap().is_empty());
    assert!(s3.list("claim-check/").await.unwrap().is_empty());
    assert!(
        drain(&stack, "LicenseRequestsQueue", Duration::ZERO)
            .await
            .is_empty()
    );

    // The archiver's batch.
    let (answer, ids) = archive_pending(&stack, &app, QUIET).await;
    assert_eq!(ids.len(), 1);
    assert!(answer.batch_item_failures.is_empty());
    let keys = s3.list("archive/batch/").await.unwrap();
    assert_eq!(keys.len(), 1);
    let object = s3.get(&keys[0]).await.unwrap().unwrap();
    assert_eq!(&object[..2], &[0x1f, 0x8b], "gzip");
    for queue in [
        "LicenseRequestsQueue",
        "BillingEventsQueue",
        "CustomerEventsQueue",
    ] {
        let msgs = drain(&stack, queue, QUIET).await;
        assert_eq!(msgs.len(), 1, "{queue}");
        assert_eq!(msgs[0].id, id);
        assert_eq!(msgs[0].source, "stripe");
        assert_eq!(msgs[0].event_type, "customer.subscription.created");
        assert_eq!(msgs[0].raw_key, format!("{}#stripe/{id}", keys[0]));
        assert_eq!(
            msgs[0].event,
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        );
        let found = blapi::archive::find(&s3, &msgs[0].raw_key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            found.line.body.as_deref(),
            Some(body.as_str()),
            "byte for byte"
        );
    }
    assert!(drain(&stack, "LeadEventsQueue", QUIET).await.is_empty());
    assert!(drain(&stack, "UsageEventsQueue", QUIET).await.is_empty());
}

#[tokio::test]
async fn first_party_event_through_base64_lands_in_its_queue() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let app = app(&stack, &[]).await;
    let now = Utc::now();
    let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let body = format!(
        r#"{{"type":"lead.signup","timestamp":"{}","data":{{"email":"ada@example.com","consent":{{"marketing":true,"terms":true}}}}}}"#,
        now.to_rfc3339()
    );
    let secret = blapi::webhook::StandardSecret::parse(PORTAL_SECRET).unwrap();
    let mut req = standard_request("portal", &msg_id, &body, &secret, now.timestamp());
    req.body = Some(base64::engine::general_purpose::STANDARD.encode(&body));
    req.is_base64_encoded = true;
    let resp = app.respond(&req, now).await;
    assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    archive_pending(&stack, &app, QUIET).await;
    let leads = drain(&stack, "LeadEventsQueue", QUIET).await;
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0].event["data"]["email"], "ada@example.com");
    let hour = archived_hour(&stack, now.timestamp()).await;
    let line = &hour
        .events
        .iter()
        .find(|e| e.line.id == msg_id)
        .unwrap()
        .line;
    assert_eq!(line.body.as_deref(), Some(body.as_str()));
    // The address is in the archive only inside the body; the line names her by keyed hash.
    assert_eq!(line.subjects.len(), 1);
}

#[tokio::test]
async fn a_redelivered_event_is_accepted_again_and_archived_once() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let app = app(&stack, &[]).await;
    let now = Utc::now();
    let id = evt_id();
    let body = stripe_event(&id, "customer.created", now.timestamp());
    let req = stripe_request(&body, &[STRIPE_SECRET], now.timestamp());
    assert_eq!(app.respond(&req, now).await.status_code, 200);
    archive_pending(&stack, &app, QUIET).await;
    // Stripe's retry a minute later (our 2xx was lost), re-signed: accepted again.
    let later = now + chrono::Duration::seconds(60);
    let retry = stripe_request(&body, &[STRIPE_SECRET], later.timestamp());
    let resp = app.respond(&retry, later).await;
    assert_eq!(resp.status_code, 200);
    archive_pending(&stack, &app, QUIET).await;
    // Two copies until the seal (readers see one), then one line.
    let hour = archived_hour(&stack, now.timestamp()).await;
    assert_eq!(
        (hour.events.len(), hour.duplicates),
        (1, 1),
        "{:?}",
        hour.events
    );
    let sealed = app.seal(None, true, Utc::now()).await.unwrap();
    assert_eq!((sealed.events, sealed.duplicates), (1, 1), "{sealed:?}");
    let s3 = store(&stack).await;
    assert!(s3.list("archive/batch/").await.unwrap().is_empty());
    // The consumers got it twice: they are idempotent on the event.
    assert_eq!(drain(&stack, "LeadEventsQueue", QUIET).await.len(), 2);
}

#[tokio::test]
async fn missing_events_queue_answers_5xx_and_a_later_retry_succeeds() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let good_url = stack.physical("EventsQueue").to_owned();
    let missing = format!("{good_url}-missing");
    let broken = app(&stack, &[("EVENTS_QUEUE_URL", &missing)]).await;
    let now = Utc::now();
    let id = evt_id();
    let body = stripe_event(&id, "checkout.session.completed", now.timestamp());
    let req = stripe_request(&body, &[STRIPE_SECRET], now.timestamp());
    let resp = broken.respond(&req, now).await;
    assert!((500..600).contains(&resp.status_code), "{resp:?}");
    assert_eq!(
        resp.body.as_deref(),
        Some(r#"{"error":"could not enqueue the event; retry later"}"#)
    );
    // The deployment is fixed; Stripe retries.
    let fixed = app(&stack, &[]).await;
    let later = now + chrono::Duration::seconds(30);
    let retry = stripe_request(&body, &[STRIPE_SECRET], later.timestamp());
    assert_eq!(fixed.respond(&retry, later).await.status_code, 200);
    archive_pending(&stack, &fixed, QUIET).await;
    let msgs = drain(&stack, "LicenseRequestsQueue", QUIET).await;
    assert_eq!(msgs.len(), 1, "exactly once: {msgs:?}");
    assert_eq!(msgs[0].id, id);
}

#[tokio::test]
async fn forged_and_unknown_deliveries_touch_nothing() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let app = app(&stack, &[]).await;
    let now = Utc::now();
    let id = evt_id();
    let body = stripe_event(&id, "invoice.paid", now.timestamp());
    let forged = stripe_request(&body, &["whsec_attacker"], now.timestamp());
    let resp = app.respond(&forged, now).await;
    assert_eq!(resp.status_code, 400);
    let mut unknown = stripe_request(&body, &[STRIPE_SECRET], now.timestamp());
    unknown.raw_path = Some("/webhooks/billing".into());
    assert_eq!(app.respond(&unknown, now).await.status_code, 404);
    let (_, ids) = archive_pending(&stack, &app, QUIET).await;
    assert!(ids.is_empty(), "nothing on the events queue");
    assert!(
        store(&stack)
            .await
            .list("archive/")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn start_fails_with_the_name_of_a_missing_secret() {
    let stack = blapi_infra::testing::stack();
    let mut env = stack.env("webhook-intake");
    env.insert(
        "STRIPE_WEBHOOK_SECRET_ID".into(),
        "blapi/no-such-secret".into(),
    );
    let clients = blapi::aws::Clients::new(&stack.sdk_config().await);
    let err = support::build(env, clients).await.unwrap_err();
    assert!(err.chain().contains("secretsmanager"), "{}", err.chain());
}

#[tokio::test]
async fn an_object_erased_leaves_no_version_behind_in_the_versioned_bucket() {
    use blapi::storage::S3Store;
    let stack = blapi_infra::testing::fresh_stack().await;
    let key = format!("raw/stripe/2026/03/02/{}.json", evt_id());
    let s3 = aws_sdk_s3::Client::new(&stack.sdk_config().await);
    let bucket = stack.physical("ArtifactsBucket").to_owned();
    let store = S3Store::new(s3.clone(), bucket.clone());
    // Three versions and a delete marker: what rewrites and a plain delete leave.
    for v in [&b"v1"[..], b"v2", b"v3"] {
        store
            .put(&key, v.to_vec(), "application/json")
            .await
            .unwrap();
    }
    store.delete(&key).await.unwrap();
    // A neighbour sharing the prefix is not touched.
    let neighbour = format!("{key}.bak");
    store
        .put(&neighbour, b"keep".to_vec(), "text/plain")
        .await
        .unwrap();
    let versions = |prefix: String| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            let out = s3
                .list_object_versions()
                .bucket(&bucket)
                .prefix(&prefix)
                .send()
                .await
                .unwrap();
            (out.versions().len(), out.delete_markers().len())
        }
    };
    assert_eq!(
        versions(key.clone()).await,
        (4, 1),
        "the bucket is versioned"
    );
    assert_eq!(store.erase_all_versions(&key).await.unwrap(), 4);
    assert_eq!(
        versions(key.clone()).await,
        (1, 0),
        "only the neighbour is left"
    );
    assert_eq!(
        store.get(&neighbour).await.unwrap().as_deref(),
        Some(&b"keep"[..])
    );
    assert_eq!(
        store.erase_all_versions(&key).await.unwrap(),
        0,
        "idempotent"
    );
}
