//! notifications against the local stack: the real SES adapter (SES v2 `SendEmail`) on moto,
//! the idempotency ledger and the subject index in DynamoDB, the license file in S3, all
//! provisioned from `template.yaml` (a fresh stack per run; the sender identity verified by
//! provisioning). Stripe is the in-memory fake, so the test needs moto only (`make up`, or
//! `BLAPI_MOTO_URL` pointing at a moto server). What was sent is read back from moto with
//! `blapi_infra::ses::sent_messages`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use blapi::aws::Clients;
use blapi::config::Env;
use blapi::ledger::{DynamoLedger, Ledger};
use blapi::notice::{Kind, Notification};
use blapi::notify::Config;
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::MemoryStripe;
use blapi::subjects::{Choice, DynamoSubjectIndex, SubjectIndex, SubjectKey};
use blapi::values::Email;
use blapi_infra::ses::{SentMail, sent_messages};
use blapi_infra::testing::{fresh_stack, random_prefix, sqs_batch};
use lambda_runtime::{Context, LambdaEvent};
use notifications::{App, Ports};
use serde_json::{Value, json};
use std::sync::Arc;

async fn mail_to(endpoint: &str, address: &str) -> Vec<SentMail> {
    sent_messages(endpoint)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.is_to(address))
        .collect()
}

/// The first `href` of an HTML body, its entities decoded.
fn first_link(html: &str) -> String {
    let start = html.find("href=\"").expect("a link") + 6;
    let end = start + html[start..].find('"').unwrap();
    html[start..end]
        .replace("&#x2f;", "/")
        .replace("&#x3d;", "=")
        .replace("&amp;", "&")
}

#[tokio::test]
async fn mail_goes_out_through_ses_once_with_a_working_expiring_link() {
    let stack = fresh_stack().await;
    let clients = Clients::new(&stack.sdk_config().await);
    let env = stack.env("notifications");
    let config = Config::from_env(&Env::from_map(env.clone())).unwrap();
    let mut ports = Ports::connect(&config, &clients).await.unwrap();
    let uid = random_prefix();
    let customer = format!("cus_{uid}");
    let ada = format!("ada+{uid}@globex.example");
    let bob = format!("bob+{uid}@globex.example");
    let stripe = Arc::new(MemoryStripe::new());
    stripe.put_customer(json!({
        "id": customer, "email": ada, "name": "Ada <Lovelace>",
        "metadata": {"company": "A&B"}
    }));
    ports.notify.stripe = stripe;
    let app = App::new(config, ports).unwrap();

    // The license file the message names, and a person who opted out of marketing.
    let files = S3Store::new(clients.s3().clone(), env["ARTIFACTS_BUCKET"].clone());
    let file_key = format!("licenses/{customer}/lic_{uid}.mattermost-license");
    files
        .put(
            &file_key,
            b"LICENSE-FILE".to_vec(),
            "application/octet-stream",
        )
        .await
        .unwrap();
    let key = SubjectKey::from_secret(clients.secrets(), &env["PRIVACY_KEY_SECRET_ID"])
        .await
        .unwrap();
    let index = DynamoSubjectIndex::new(clients.dynamodb().clone(), env["PRIVACY_TABLE"].clone());
    index
        .set_choice(
            &key.subject(&Email::parse(&bob).unwrap()),
            &Choice {
                opted_out: true,
                at: 1,
            },
        )
        .await
        .unwrap();

    let license = Notification::to_customer(
        format!("license:lic_{uid}:issued"),
        Kind::LicenseIssued,
        &customer,
    )
    .with("license_id", format!("lic_{uid}"))
    .with("sku", "professional")
    .with("seats", 25)
    .with("expires_at", "2027-03-02")
    .with("file_key", &file_key);
    let news = Notification::to_address(format!("news:{uid}"), Kind::ProductNews, &bob)
        .with("headline", "News")
        .with("summary", "Something new.");
    let unknown = json!({"id": format!("x:{uid}"), "type": "license.exploded", "to": bob});
    let body = |n: &Notification| serde_json::to_string(n).unwrap();
    let batch = sqs_batch(vec![
        ("m1", body(&license)),
        ("m2", body(&license)),
        ("m3", unknown.to_string()),
        ("m4", body(&news)),
    ]);
    let event: Value = serde_json::to_value(batch).unwrap();
    let resp = app
        .handle(LambdaEvent::new(event.clone(), Context::default()))
        .await
        .unwrap();
    assert_eq!(
        resp["batchItemFailures"],
        json!([{"itemIdentifier": "m3"}]),
        "{resp}"
    );

    // One e-mail to Ada, through SES, as moto received it.
    let to_ada = mail_to(&stack.endpoint, &ada).await;
    assert_eq!(to_ada.len(), 1, "{to_ada:#?}");
    let mail = &to_ada[0];
    assert_eq!(mail.from, env["MAIL_FROM"]);
    assert_eq!(
        mail.subject,
        "Your professional license is ready (25 seats)"
    );
    assert!(
        mail.body.contains("Hello Ada &lt;Lovelace&gt;,"),
        "{}",
        mail.body
    );
    assert!(mail.body.contains("A&amp;B"), "{}", mail.body);
    // Its link is a pre-signed S3 URL that expires, and it opens the file.
    let link = first_link(&mail.body);
    assert!(link.contains(&file_key), "{link}");
    assert!(link.contains("X-Amz-Expires=259200"), "{link}");
    assert!(link.contains("X-Amz-Signature="), "{link}");
    let got = reqwest::get(&link).await.unwrap();
    assert!(got.status().is_success(), "{}", got.status());
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"LICENSE-FILE");
    // Sent once: recorded in the ledger; the whole batch again sends nothing more.
    let ledger = DynamoLedger::new(clients.dynamodb().clone(), env["LEDGER_TABLE"].clone());
    let done = ledger
        .completed(&format!("notify#license:lic_{uid}:issued"))
        .await
        .unwrap();
    assert_eq!(done, Some(Some(mail.id.clone())));
    let again = app
        .handle(LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    assert_eq!(
        again["batchItemFailures"],
        json!([{"itemIdentifier": "m3"}])
    );
    assert_eq!(mail_to(&stack.endpoint, &ada).await.len(), 1);
    // Bob opted out: no product news for him (and the unknown type sent nothing either).
    assert!(mail_to(&stack.endpoint, &bob).await.is_empty());
}
