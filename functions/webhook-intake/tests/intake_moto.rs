//! webhook-intake against the local stack (moto): the real SDK, DynamoDB ledger, S3 archive and
//! SQS queues as provisioned from template.yaml. Each test that counts queue messages has a
//! fresh stack of its own, so tests run in parallel and repeatedly.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use base64::Engine;
use chrono::Utc;
use std::time::Duration;
use support::*;
use webhook_intake::samples::{standard_request, stripe_request};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn accepted_event_is_archived_byte_for_byte_routed_and_recorded() {
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
    assert_eq!(
        json,
        serde_json::json!({"received": true, "id": id, "duplicate": false})
    );

    let key = stripe_key(&id, now.timestamp());
    assert_eq!(
        archived(&stack, &key).await.unwrap(),
        body.as_bytes(),
        "byte for byte"
    );
    for queue in ["LicenseRequestsQueue", "BillingEventsQueue"] {
        let msgs = drain(&stack, queue, QUIET).await;
        assert_eq!(msgs.len(), 1, "{queue}");
        assert_eq!(msgs[0].id, id);
        assert_eq!(msgs[0].source, "stripe");
        assert_eq!(msgs[0].event_type, "customer.subscription.created");
        assert_eq!(msgs[0].raw_key, key);
        assert_eq!(
            msgs[0].event,
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        );
    }
    assert!(drain(&stack, "LeadEventsQueue", QUIET).await.is_empty());
    assert!(drain(&stack, "UsageEventsQueue", QUIET).await.is_empty());
    assert_eq!(
        ledger_status(&stack, "stripe", &id).await.as_deref(),
        Some("COMPLETED")
    );
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
    let leads = drain(&stack, "LeadEventsQueue", QUIET).await;
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0].event["data"]["email"], "ada@example.com");
    let key = format!("raw/portal/{}/{msg_id}.json", now.format("%Y/%m/%d"));
    assert_eq!(archived(&stack, &key).await.unwrap(), body.as_bytes());
    assert_eq!(
        ledger_status(&stack, "portal", &msg_id).await.as_deref(),
        Some("COMPLETED")
    );
}

#[tokio::test]
async fn duplicate_delivery_is_acknowledged_and_enqueued_once() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let app = app(&stack, &[]).await;
    let now = Utc::now();
    let id = evt_id();
    let body = stripe_event(&id, "customer.created", now.timestamp());
    let req = stripe_request(&body, &[STRIPE_SECRET], now.timestamp());
    assert_eq!(app.respond(&req, now).await.status_code, 200);
    // Stripe's retry a minute later, re-signed.
    let later = now + chrono::Duration::seconds(60);
    let retry = stripe_request(&body, &[STRIPE_SECRET], later.timestamp());
    let resp = app.respond(&retry, later).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(resp.body.as_deref().unwrap()).unwrap(),
        serde_json::json!({"received": true, "id": id, "duplicate": true})
    );
    assert_eq!(drain(&stack, "LeadEventsQueue", QUIET).await.len(), 1);
}

#[tokio::test]
async fn missing_bucket_answers_5xx_and_a_later_retry_succeeds_exactly_once() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let broken = app(
        &stack,
        &[("ARTIFACTS_BUCKET", "blapi-no-such-bucket-for-tests")],
    )
    .await;
    let now = Utc::now();
    let id = evt_id();
    let body = stripe_event(&id, "invoice.payment_failed", now.timestamp());
    let req = stripe_request(&body, &[STRIPE_SECRET], now.timestamp());
    let resp = broken.respond(&req, now).await;
    assert!((500..600).contains(&resp.status_code), "{resp:?}");
    assert_eq!(
        resp.body.as_deref(),
        Some(r#"{"error":"could not archive the event; retry later"}"#)
    );
    assert_eq!(
        ledger_status(&stack, "stripe", &id).await,
        None,
        "claim released"
    );
    let key = stripe_key(&id, now.timestamp());
    assert!(archived(&stack, &key).await.is_none());

    // The deployment is fixed; Stripe retries.
    let fixed = app(&stack, &[]).await;
    let later = now + chrono::Duration::seconds(30);
    let retry = stripe_request(&body, &[STRIPE_SECRET], later.timestamp());
    let resp = fixed.respond(&retry, later).await;
    assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    assert!(resp.body.unwrap().contains(r#""duplicate":false"#));
    assert_eq!(archived(&stack, &key).await.unwrap(), body.as_bytes());
    assert_eq!(
        ledger_status(&stack, "stripe", &id).await.as_deref(),
        Some("COMPLETED")
    );
    // Archive and enqueue run concurrently, so the failed attempt's message went out too;
    // both carry the same event id and the same (now written) archive key.
    let msgs = drain(&stack, "BillingEventsQueue", QUIET).await;
    assert!((1..=2).contains(&msgs.len()), "{msgs:?}");
    assert!(msgs.iter().all(|m| m.id == id && m.raw_key == key));
    // Every further delivery is a duplicate.
    assert!(
        fixed
            .respond(&retry, later)
            .await
            .body
            .unwrap()
            .contains(r#""duplicate":true"#)
    );
    assert!(drain(&stack, "BillingEventsQueue", QUIET).await.is_empty());
}

#[tokio::test]
async fn missing_queue_answers_5xx_and_a_later_retry_succeeds_exactly_once() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let good_url = stack.physical("LicenseRequestsQueue").to_owned();
    let missing = format!("{}-missing", good_url);
    let broken = app(&stack, &[("LICENSE_REQUESTS_QUEUE_URL", &missing)]).await;
    let now = Utc::now();
    let id = evt_id();
    // Routed to license-requests only.
    let body = stripe_event(&id, "checkout.session.completed", now.timestamp());
    let req = stripe_request(&body, &[STRIPE_SECRET], now.timestamp());
    let resp = broken.respond(&req, now).await;
    assert!((500..600).contains(&resp.status_code), "{resp:?}");
    assert_eq!(
        resp.body.as_deref(),
        Some(r#"{"error":"could not enqueue the event; retry later"}"#)
    );
    assert_eq!(
        ledger_status(&stack, "stripe", &id).await,
        None,
        "claim released"
    );

    let fixed = app(&stack, &[]).await;
    let later = now + chrono::Duration::seconds(30);
    let retry = stripe_request(&body, &[STRIPE_SECRET], later.timestamp());
    assert_eq!(fixed.respond(&retry, later).await.status_code, 200);
    assert!(
        fixed
            .respond(&retry, later)
            .await
            .body
            .unwrap()
            .contains(r#""duplicate":true"#)
    );
    let msgs = drain(&stack, "LicenseRequestsQueue", QUIET).await;
    assert_eq!(msgs.len(), 1, "exactly once: {msgs:?}");
    assert_eq!(msgs[0].id, id);
    let key = stripe_key(&id, now.timestamp());
    assert_eq!(archived(&stack, &key).await.unwrap(), body.as_bytes());
    assert_eq!(
        ledger_status(&stack, "stripe", &id).await.as_deref(),
        Some("COMPLETED")
    );
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
    assert_eq!(ledger_status(&stack, "stripe", &id).await, None);
    assert!(
        archived(&stack, &stripe_key(&id, now.timestamp()))
            .await
            .is_none()
    );
    assert!(
        drain(&stack, "LicenseRequestsQueue", QUIET)
            .await
            .is_empty()
    );
    assert!(drain(&stack, "BillingEventsQueue", QUIET).await.is_empty());
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
async fn an_archived_event_erased_leaves_no_version_behind_in_the_versioned_bucket() {
    use blapi::storage::{ObjectStore, S3Store};
    let stack = blapi_infra::testing::fresh_stack().await;
    let app = app(&stack, &[]).await;
    let now = Utc::now();
    let id = evt_id();
    let body = stripe_event(&id, "customer.created", now.timestamp());
    let resp = app
        .respond(
            &stripe_request(&body, &[STRIPE_SECRET], now.timestamp()),
            now,
        )
        .await;
    assert_eq!(resp.status_code, 200, "{:?}", resp.body);
    let key = stripe_key(&id, now.timestamp());
    let s3 = aws_sdk_s3::Client::new(&stack.sdk_config().await);
    let bucket = stack.physical("ArtifactsBucket").to_owned();
    let store = S3Store::new(s3.clone(), bucket.clone());
    // Two more versions and a delete marker: what rewrites and a plain delete leave.
    store
        .put(&key, b"v2".to_vec(), "application/json")
        .await
        .unwrap();
    store
        .put(&key, b"v3".to_vec(), "application/json")
        .await
        .unwrap();
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
