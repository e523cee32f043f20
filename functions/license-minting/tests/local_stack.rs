//! license-minting against the local stack: moto (KMS RSA_2048 key from the template,
//! DynamoDB, S3, Secrets Manager) and localstripe. Every test makes its own Stripe customer
//! and subscription, so tests run in parallel and repeatedly on the shared stack.

mod support;

use base64::Engine;
use rsa::pkcs8::DecodePublicKey;
use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn a_subscription_leads_to_exactly_one_license_verifiable_with_the_published_pem() {
    let l = local().await;
    let stripe = Stripe::new();
    let (cus, sub, _) = stripe.subscription("professional", 5).await;

    let created = message("customer.subscription.created", &sub);
    let paid = message("invoice.payment_succeeded", &sub);
    for _ in 0..5 {
        let resp = l
            .invoke(batch(&[created.clone(), paid.clone()]))
            .await
            .unwrap();
        assert_eq!(failures(&resp), 0, "{resp}");
    }
    let licenses = l.licenses_of(&cus).await;
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    assert_eq!(licenses[0]["status"], "ACTIVE");
    // One KMS Sign for the one license, and one more if its signature ended in a zero byte
    // (1 in 256: such a file would not verify in Mattermost, so it is signed again).
    assert_eq!(
        l.signer.signs(),
        1 + l.signer.zero_tailed(),
        "one KMS Sign for the one license"
    );
    assert!(l.signer.zero_tailed() <= 1);
    assert_eq!(l.signer.public_keys(), 1, "one GetPublicKey per cold start");

    let file_key = licenses[0]["file_key"].as_str().unwrap();
    assert!(file_key.starts_with(&format!("licenses/{cus}/")));
    let file = String::from_utf8(l.object(file_key).await.expect("license file in S3")).unwrap();
    let pem = String::from_utf8(
        l.object("licenses/public-key.pem")
            .await
            .expect("published PEM"),
    )
    .unwrap();
    let doc = independent_verify(&pem, &file);
    assert_eq!(doc["id"], licenses[0]["license_id"]);
    assert_eq!(doc["customer"]["id"], cus.as_str());
    assert_eq!(doc["customer"]["company"], "Analytical Engines");
    assert_eq!(doc["features"]["users"], 5);
    assert_eq!(doc["sku_short_name"], "professional");
    assert_eq!(doc["subscription_id"], sub.as_str());
    assert!(doc["expires_at"].as_i64().unwrap() > doc["starts_at"].as_i64().unwrap());
    assert!(
        doc["issued_at"].as_i64().unwrap() > 1_700_000_000_000,
        "milliseconds"
    );

    let verified = l
        .invoke(json!({"action": "verify", "license": file}))
        .await
        .unwrap();
    assert_eq!(verified["valid"], true, "{verified}");
}

#[tokio::test]
async fn reordered_duplicates_with_a_later_seat_change_give_one_license_per_period() {
    let l = local().await;
    let stripe = Stripe::new();
    let (cus, sub, item) = stripe.subscription("enterprise", 5).await;
    // The seat change happens before any event is processed; events then arrive newest first.
    stripe.set_quantity(&sub, &item, 12).await;
    let updated = message("customer.subscription.updated", &sub);
    let created = message("customer.subscription.created", &sub);
    let paid = message("invoice.payment_succeeded", &sub);
    let mut bodies = Vec::new();
    for _ in 0..5 {
        bodies.extend([updated.clone(), paid.clone(), created.clone()]);
    }
    let resp = l.invoke(batch(&bodies)).await.unwrap();
    assert_eq!(failures(&resp), 0, "{resp}");
    let licenses = l.licenses_of(&cus).await;
    assert_eq!(licenses.len(), 1, "{licenses:?}");
    assert_eq!(
        licenses[0]["quantity"], 12,
        "the current state, not the first event's"
    );

    // Another seat change in the same period supersedes it.
    stripe.set_quantity(&sub, &item, 20).await;
    let later = message("customer.subscription.updated", &sub);
    for _ in 0..3 {
        let resp = l
            .invoke(batch(&[later.clone(), created.clone()]))
            .await
            .unwrap();
        assert_eq!(failures(&resp), 0, "{resp}");
    }
    let mut licenses = l.licenses_of(&cus).await;
    licenses.sort_by_key(|r| r["quantity"].as_u64());
    assert_eq!(licenses.len(), 2, "{licenses:?}");
    assert_eq!(licenses[0]["status"], "SUPERSEDED");
    assert_eq!(licenses[1]["status"], "ACTIVE");
    assert_eq!(licenses[1]["quantity"], 20);
    assert_eq!(licenses[1]["supersedes"], licenses[0]["license_id"]);
    assert_eq!(licenses[0]["superseded_by"], licenses[1]["license_id"]);
    assert_eq!(
        licenses[0]["period_start_ms"],
        licenses[1]["period_start_ms"]
    );
    // Two licenses, and the revocation list that lists the superseded one (published once,
    // or twice when two duplicate deliveries finish the activation at the same moment).
    assert!(
        (3..=4).contains(&l.signer.signs()),
        "{} signatures",
        l.signer.signs()
    );
}

#[tokio::test]
async fn cancellation_revokes_and_the_revocation_list_verifies_offline() {
    let l = local().await;
    let stripe = Stripe::new();
    let (cus, sub, _) = stripe.subscription("advanced", 3).await;
    let resp = l
        .invoke(batch(&[message("customer.subscription.created", &sub)]))
        .await
        .unwrap();
    assert_eq!(failures(&resp), 0);
    let id = l.licenses_of(&cus).await[0]["license_id"]
        .as_str()
        .unwrap()
        .to_owned();

    stripe.cancel(&sub).await;
    let deleted = message("customer.subscription.deleted", &sub);
    let stale_created = message("customer.subscription.created", &sub);
    let resp = l
        .invoke(batch(&[deleted.clone(), stale_created, deleted]))
        .await
        .unwrap();
    assert_eq!(failures(&resp), 0, "{resp}");
    let licenses = l.licenses_of(&cus).await;
    assert_eq!(licenses.len(), 1);
    assert_eq!(licenses[0]["status"], "REVOKED");
    assert_eq!(licenses[0]["revoked_reason"], "subscription_canceled");

    // Independent check of the published list.
    let pem = String::from_utf8(l.object("licenses/public-key.pem").await.unwrap()).unwrap();
    let list = l
        .object("licenses/revoked.json")
        .await
        .expect("revocation list");
    let sig_b64 = String::from_utf8(l.object("licenses/revoked.json.sig").await.unwrap()).unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig_b64.trim())
        .unwrap();
    let key = rsa::RsaPublicKey::from_public_key_pem(&pem).unwrap();
    use sha2::Digest;
    key.verify(
        rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
        &sha2::Sha512::digest(&list),
        &sig,
    )
    .expect("the revocation list is signed by the license key");
    let doc: Value = serde_json::from_slice(&list).unwrap();
    // Other tests share the stack and may have published since: the list holds ours either way.
    assert!(
        doc["revoked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == id.as_str()),
        "{doc}"
    );
    let report = l
        .invoke(json!({"action": "verify", "license_id": id}))
        .await
        .unwrap();
    assert_eq!(
        (report["valid"].as_bool(), report["reason"].as_str()),
        (Some(false), Some("revoked"))
    );
}

#[tokio::test]
async fn an_unknown_subscription_is_a_permanent_failure() {
    let l = local().await;
    let e = l
        .invoke(json!({"action": "mint", "subscription": "sub_doesnotexist0001"}))
        .await
        .unwrap_err();
    assert!(!e.is_retryable(), "{e:?}");
    let resp = l
        .invoke(batch(&[message(
            "customer.subscription.created",
            "sub_doesnotexist0001",
        )]))
        .await
        .unwrap();
    assert_eq!(
        failures(&resp),
        1,
        "reported, so SQS parks it in the DLQ after its retries"
    );
    assert_eq!(l.signer.signs(), 0);
}

#[tokio::test]
async fn a_kms_failure_is_retryable_and_writes_nothing() {
    let l = local_with_key(Some("alias/no-such-license-key")).await;
    let stripe = Stripe::new();
    let (cus, sub, _) = stripe.subscription("professional", 2).await;
    let e = l
        .invoke(json!({"action": "mint", "subscription": sub}))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    let resp = l
        .invoke(batch(&[message("customer.subscription.created", &sub)]))
        .await
        .unwrap();
    assert_eq!(failures(&resp), 1);
    assert!(l.licenses_of(&cus).await.is_empty(), "no record");
    assert!(
        l.keys_under(&format!("licenses/{cus}/")).await.is_empty(),
        "no file"
    );

    // With the right key the same request then succeeds.
    let good = local().await;
    let minted = good
        .invoke(json!({"action": "mint", "subscription": sub}))
        .await
        .unwrap();
    assert_eq!(minted["outcome"], "minted");
    assert_eq!(good.keys_under(&format!("licenses/{cus}/")).await.len(), 1);
}

#[tokio::test]
async fn a_minted_license_is_announced_on_the_customer_events_queue() {
    let l = local().await;
    let stripe = Stripe::new();
    let (cus, sub, _) = stripe.subscription("professional", 3).await;
    let resp = l
        .invoke(batch(&[message("customer.subscription.created", &sub)]))
        .await
        .unwrap();
    assert_eq!(failures(&resp), 0, "{resp}");
    let stack = blapi_infra::testing::stack();
    let url = stack.physical("CustomerEventsQueue").to_owned();
    // The shared stack's queue holds other tests' announcements too: find ours.
    let mut ours = None;
    for _ in 0..20 {
        let got = l
            .clients
            .sqs()
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            let body: Value = serde_json::from_str(m.body().unwrap_or_default()).unwrap();
            if body["event"]["data"]["subscription"] == sub.as_str() {
                ours = Some(body);
            }
        }
        if ours.is_some() {
            break;
        }
    }
    let msg = ours.expect("a license.issued message for the subscription");
    assert_eq!(msg["source"], "blapi");
    assert_eq!(msg["type"], "license.issued");
    assert_eq!(msg["event"]["data"]["customer"], cus.as_str());
    assert_eq!(msg["event"]["data"]["seats"], 3);
}
