//! privacy-requests against the local stack: the PrivacyTable, the licenses table, the CRM
//! sink, the versioned bucket, the dead-letter queues in moto (provisioned from
//! `template.yaml`, a fresh stack per test), Stripe played by localstripe, and by wiremock for
//! an outage. Needs `make up`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use blapi::aws::Clients;
use blapi::config::{Env, Secret};
use blapi::crm::{CrmLead, CrmObject, CrmPort, CrmRecord, SinkCrm};
use blapi::licensing::{DynamoLicenseStore, LicenseId, LicenseRecord, LicenseStatus, LicenseStore};
use blapi::privacy::Config;
use blapi::retry::RetryPolicy;
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::{StripeClient, form_pairs};
use blapi::subjects::{DynamoSubjectIndex, Location, SubjectId, SubjectIndex, SubjectKey, System};
use blapi::values::Email;
use blapi_infra::testing::{drain_queue, fresh_stack, sqs_batch};
use lambda_runtime::{Context, LambdaEvent};
use privacy_requests::{App, Ports};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn localstripe_url() -> String {
    std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into())
}

fn uid() -> String {
    format!("{:012x}", rand_u64() & 0xffff_ffff_ffff)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

fn stripe() -> StripeClient {
    StripeClient::new(
        localstripe_url(),
        Secret::new("sk_test_blapi_local".into()),
        Duration::from_secs(10),
    )
    .unwrap()
}

async fn stripe_post(path: &str, form: &[(&str, String)]) -> Value {
    let form = form_pairs(form.iter().map(|(k, v)| (*k, v.clone())));
    stripe()
        .post::<Value>(path, &form, &format!("test-{}", uid()))
        .await
        .unwrap_or_else(|e| panic!("localstripe POST {path}: {}", e.chain()))
}

/// A localstripe customer; with `subscribed`, an active subscription too.
async fn stripe_customer(email: &str, subscribed: bool) -> String {
    let c = stripe_post(
        "customers",
        &[("name", "Ada Lovelace".into()), ("email", email.into())],
    )
    .await;
    let cus = c["id"].as_str().unwrap().to_owned();
    if subscribed {
        let product = stripe_post("products", &[("name", "Mattermost".into())]).await;
        let plan = stripe_post(
            "plans",
            &[
                ("product", product["id"].as_str().unwrap().into()),
                ("amount", "1200".into()),
                ("currency", "usd".into()),
                ("interval", "month".into()),
            ],
        )
        .await;
        stripe_post(
            &format!("customers/{cus}/sources"),
            &[
                ("source[object]", "card".into()),
                ("source[number]", "4242424242424242".into()),
                ("source[exp_month]", "12".into()),
                ("source[exp_year]", "2040".into()),
                ("source[cvc]", "123".into()),
            ],
        )
        .await;
        let sub = stripe_post(
            "subscriptions",
            &[
                ("customer", cus.clone()),
                ("items[0][plan]", plan["id"].as_str().unwrap().into()),
            ],
        )
        .await;
        assert_eq!(sub["status"], "active", "{sub}");
    }
    cus
}

async fn stripe_customer_gone(cus: &str) -> bool {
    match stripe()
        .get::<Value>(&format!("customers/{cus}"), &[])
        .await
    {
        Ok(c) => c["deleted"] == true,
        Err(blapi::Error::NotFound(_)) => true,
        Err(e) => panic!("{}", e.chain()),
    }
}

struct World {
    app: App,
    clients: Clients,
    env: BTreeMap<String, String>,
    key: SubjectKey,
    index: DynamoSubjectIndex,
    files: S3Store,
}

impl World {
    async fn new(stack: &blapi_infra::LocalStack, stripe_base: Option<&str>) -> Self {
        let clients = Clients::new(&stack.sdk_config().await);
        let mut env = stack.env("privacy-requests");
        env.insert(
            "STRIPE_API_BASE".into(),
            stripe_base.map_or_else(localstripe_url, str::to_owned),
        );
        let mut config = Config::from_env(&Env::from_map(env.clone())).unwrap();
        config.http_retry = Some(RetryPolicy::immediate(2));
        let ports = Ports::connect(&config, &clients).await.unwrap();
        let key = SubjectKey::from_secret(clients.secrets(), &env["PRIVACY_KEY_SECRET_ID"])
            .await
            .unwrap();
        Self {
            app: App::new(config, ports),
            index: DynamoSubjectIndex::new(
                clients.dynamodb().clone(),
                env["PRIVACY_TABLE"].clone(),
            ),
            files: S3Store::new(clients.s3().clone(), env["ARTIFACTS_BUCKET"].clone()),
            clients,
            env,
            key,
        }
    }

    fn subject(&self, email: &str) -> SubjectId {
        self.key.subject(&Email::parse(email).unwrap())
    }

    async fn invoke(&self, payload: Value) -> blapi::Result<Value> {
        self.app
            .handle(LambdaEvent::new(payload, Context::default()))
            .await
    }

    async fn versions(&self, key: &str) -> usize {
        let out = self
            .clients
            .s3()
            .list_object_versions()
            .bucket(&self.env["ARTIFACTS_BUCKET"])
            .prefix(key)
            .send()
            .await
            .unwrap();
        out.versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .count()
            + out
                .delete_markers()
                .iter()
                .filter(|m| m.key() == Some(key))
                .count()
    }

    async fn put_versions(&self, key: &str, body: &Value, n: usize) {
        for i in 0..n {
            let mut b = body.clone();
            b["rev"] = json!(i);
            self.files
                .put(key, b.to_string().into_bytes(), "application/json")
                .await
                .unwrap();
        }
    }

    fn sweep_queue(&self) -> String {
        self.env["SWEEP_QUEUE_URLS"]
            .split(',')
            .next()
            .unwrap()
            .to_owned()
    }

    fn licenses(&self) -> DynamoLicenseStore {
        DynamoLicenseStore::new(
            self.clients.dynamodb().clone(),
            self.env["LICENSES_TABLE"].clone(),
        )
    }

    fn sink(&self) -> SinkCrm {
        SinkCrm::new(
            self.clients.dynamodb().clone(),
            self.env["CRM_TABLE"].clone(),
            Arc::new(self.files.clone()),
        )
    }
}

fn portal_message(event_id: &str, data: Value) -> String {
    json!({
        "id": event_id, "source": "portal", "type": "privacy.request",
        "received_at": "2026-11-25T10:00:00Z",
        "raw_key": format!("raw/portal/2026/11/25/{event_id}.json"),
        "event": {"type": "privacy.request", "data": data}
    })
    .to_string()
}

fn license(customer: &str, id: &str, status: LicenseStatus, expires_at: i64) -> LicenseRecord {
    LicenseRecord {
        license_id: id.parse::<LicenseId>().unwrap(),
        customer_id: customer.into(),
        subscription_id: format!("sub_{id}"),
        period_start_ms: 1_700_000_000_000,
        period_end_ms: expires_at,
        quantity: 5,
        sku: "professional".into(),
        status,
        supersedes: None,
        superseded_by: None,
        revoked_at: None,
        revoked_reason: None,
        issued_at: 1_700_000_000_000,
        starts_at: 1_700_000_000_000,
        expires_at,
        is_trial: false,
        kid: "k1".into(),
        file_key: format!("licenses/{customer}/{id}.mattermost-license"),
        file: "c2lnbmVkIGxpY2Vuc2U=".into(),
    }
}

#[tokio::test]
async fn erasure_reaches_every_version_message_and_store_and_keeps_what_it_must() {
    let stack = fresh_stack().await;
    let w = World::new(&stack, None).await;
    let ada = format!("ada.{}@analytical-engines.example", uid());
    let bob = format!("bob.{}@analytical-engines.example", uid());
    let id = w.subject(&ada);
    let cus = stripe_customer(&ada, false).await;

    // The archive: three versions and a delete marker of Ada's event; Bob's beside it.
    let raw = format!("raw/portal/2026/11/20/{}.json", uid());
    let raw_bob = format!("raw/portal/2026/11/20/{}.json", uid());
    w.put_versions(&raw, &json!({"data": {"email": ada}}), 3)
        .await;
    w.files.delete(&raw).await.unwrap();
    w.put_versions(&raw_bob, &json!({"data": {"email": bob}}), 1)
        .await;
    // Claim checks (not indexed: swept) and dead letters.
    let cc_ada = format!("claim-check/{}.json", uid());
    let cc_bob = format!("claim-check/{}.json", uid());
    w.put_versions(&cc_ada, &json!({"event": {"customer_email": ada}}), 2)
        .await;
    w.put_versions(&cc_bob, &json!({"event": {"customer_email": bob}}), 1)
        .await;
    let dlq = w.sweep_queue();
    for who in [&ada, &bob] {
        w.clients
            .sqs()
            .send_message()
            .queue_url(&dlq)
            .message_body(json!({"event": {"email": who}}).to_string())
            .send()
            .await
            .unwrap();
    }
    // Licenses: one in force (kept), one revoked (its file goes, every version).
    let store = w.licenses();
    let active = license(
        &cus,
        "ybndrfg8ejkmcpqxot1uwisza3",
        LicenseStatus::Active,
        4_102_444_800_000,
    );
    let revoked = license(
        &cus,
        "ybndrfg8ejkmcpqxot1uwisza4",
        LicenseStatus::Revoked,
        4_102_444_800_000,
    );
    for l in [&active, &revoked] {
        assert!(store.begin(l, None).await.unwrap());
        w.put_versions(&l.file_key, &json!({"licensee": ada}), 2)
            .await;
    }
    // The CRM sink's lead and its export.
    let lead_id = format!("ld_{}", uid());
    w.sink()
        .upsert(&CrmRecord::Lead(CrmLead {
            lead_id: lead_id.clone(),
            ..CrmLead::default()
        }))
        .await
        .unwrap();
    let export = SinkCrm::export_key_of(CrmObject::Lead, &lead_id);
    assert!(w.versions(&export).await >= 1);
    w.index
        .record(
            &id,
            &[
                Location::new(System::Stripe, &cus),
                Location::new(System::Archive, &raw),
                Location::new(System::Licenses, &cus),
                Location::new(System::Billing, &cus),
                Location::new(System::Crm, format!("lead:{lead_id}")),
            ],
            1,
        )
        .await
        .unwrap();

    // The portal's request, beside a malformed one: only that one fails.
    let good = portal_message(
        &format!("msg_{}", uid()),
        json!({"email": ada, "kind": "erasure", "jurisdiction": "gdpr"}),
    );
    let bad = portal_message(
        &format!("msg_{}", uid()),
        json!({"email": "ada-at-example", "kind": "erasure", "jurisdiction": "gdpr"}),
    );
    let batch =
        serde_json::to_value(sqs_batch(vec![("m-good", good.clone()), ("m-bad", bad)])).unwrap();
    let resp = w.invoke(batch).await.unwrap();
    assert_eq!(
        resp["batchItemFailures"],
        json!([{"itemIdentifier": "m-bad"}]),
        "{resp}"
    );

    // Gone, every version: Ada's archived event, claim check, revoked license file, the
    // CRM lead and its export; her dead letter; her Stripe customer.
    assert_eq!(w.versions(&raw).await, 0);
    assert_eq!(w.versions(&cc_ada).await, 0);
    assert_eq!(w.versions(&revoked.file_key).await, 0);
    assert_eq!(w.versions(&export).await, 0);
    assert!(
        w.sink()
            .fetch(CrmObject::Lead, &lead_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(stripe_customer_gone(&cus).await);
    let left = drain_queue(w.clients.sqs(), &dlq).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].contains(&bob) && !left[0].contains(&ada));
    let r = store.get(&cus, &revoked.license_id).await.unwrap().unwrap();
    assert!(r.file.is_empty(), "the stored copy of the file is gone");
    // Kept, with a basis: the license in force (file and record) and billing.
    assert_eq!(w.versions(&active.file_key).await, 2);
    assert!(
        !store
            .get(&cus, &active.license_id)
            .await
            .unwrap()
            .unwrap()
            .file
            .is_empty()
    );
    // Bob is untouched.
    assert_eq!(w.versions(&raw_bob).await, 1);
    assert_eq!(w.versions(&cc_bob).await, 1);

    let status = w.invoke(json!({"action": "status", "request_id": blapi::privacy::input::request_id_for_event("portal", serde_json::from_str::<Value>(&good).unwrap()["id"].as_str().unwrap())})).await.unwrap();
    let req = &status["request"];
    assert_eq!(req["status"], "completed_with_exceptions", "{status:#}");
    let kept: Vec<&Value> = req["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "kept")
        .collect();
    let systems: Vec<&str> = kept.iter().map(|e| e["system"].as_str().unwrap()).collect();
    assert_eq!(systems, vec!["billing", "licenses"], "{kept:#?}");
    assert!(
        kept.iter()
            .all(|e| e["basis"].as_str().is_some_and(|b| !b.is_empty()))
    );
    assert!(
        !status.to_string().contains(&ada),
        "the record holds no address"
    );
    let mut left: Vec<Location> = w.index.locations(&id).await.unwrap();
    left.sort();
    assert_eq!(
        left,
        vec![
            Location::new(System::Licenses, &cus),
            Location::new(System::Billing, &cus)
        ]
    );
    assert!(w.index.tombstoned(&id).await.unwrap().is_some());

    // The same message again: the same request, closed; nothing runs again.
    let again = serde_json::to_value(sqs_batch(vec![("m-again", good)])).unwrap();
    let resp = w.invoke(again).await.unwrap();
    assert_eq!(resp["batchItemFailures"], json!([]));
    let after = w
        .invoke(json!({"action": "status", "request_id": req["id"]}))
        .await
        .unwrap();
    assert_eq!(after["request"]["audit"], req["audit"]);
    // localstripe delivers its events a second later; let them go before the next test.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn access_bundle_is_encrypted_and_linked_and_a_subscriber_stays_in_stripe() {
    let stack = fresh_stack().await;
    let w = World::new(&stack, None).await;
    let cleo = format!("cleo.{}@example.com", uid());
    let id = w.subject(&cleo);
    let cus = stripe_customer(&cleo, true).await;
    let raw = format!("raw/stripe/2026/11/20/{}.json", uid());
    w.put_versions(
        &raw,
        &json!({"data": {"object": {"customer_email": cleo}}}),
        1,
    )
    .await;
    w.index
        .record(
            &id,
            &[
                Location::new(System::Stripe, &cus),
                Location::new(System::Archive, &raw),
            ],
            1,
        )
        .await
        .unwrap();

    let answer = w
        .invoke(json!({"action": "submit", "email": cleo, "kind": "access", "jurisdiction": "ccpa", "request_id": format!("pr_{}", uid())}))
        .await
        .unwrap();
    assert_eq!(answer["request"]["status"], "completed", "{answer:#}");
    let key = answer["request"]["bundle_key"].as_str().unwrap();
    let head = w
        .clients
        .s3()
        .head_object()
        .bucket(&w.env["ARTIFACTS_BUCKET"])
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("AES256")
    );
    let link = answer["link"].as_str().unwrap();
    assert!(link.contains("X-Amz-Expires"), "{link}");
    let bundle: Value = reqwest::get(link).await.unwrap().json().await.unwrap();
    assert_eq!(
        bundle["systems"]["stripe"][0]["data"]["email"],
        cleo.as_str()
    );
    assert_eq!(
        bundle["systems"]["archive"][0]["data"]["data"]["object"]["customer_email"],
        cleo.as_str()
    );

    // Erasure while the subscription runs: Stripe keeps the customer, with the basis.
    let r = w
        .invoke(
            json!({"action": "submit", "email": cleo, "kind": "erasure", "jurisdiction": "ccpa"}),
        )
        .await
        .unwrap();
    assert_eq!(r["request"]["status"], "completed_with_exceptions", "{r:#}");
    let kept = r["request"]["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "kept")
        .unwrap()
        .clone();
    assert_eq!(kept["system"], "stripe");
    assert!(
        kept["detail"]
            .as_str()
            .unwrap()
            .contains("live subscription"),
        "{kept}"
    );
    assert!(!stripe_customer_gone(&cus).await);
    assert_eq!(w.versions(&raw).await, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_stripe_outage_leaves_the_request_in_progress_until_it_resumes() {
    let stack = fresh_stack().await;
    let down = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(503))
        .mount(&down)
        .await;
    let broken = World::new(&stack, Some(&down.uri())).await;
    let dan = format!("dan.{}@example.com", uid());
    let id = broken.subject(&dan);
    let cus = stripe_customer(&dan, false).await;
    let raw = format!("raw/portal/2026/11/20/{}.json", uid());
    broken
        .put_versions(&raw, &json!({"data": {"email": dan}}), 2)
        .await;
    broken
        .index
        .record(
            &id,
            &[
                Location::new(System::Archive, &raw),
                Location::new(System::Stripe, &cus),
            ],
            1,
        )
        .await
        .unwrap();
    let rid = format!("pr_{}", uid());
    let err = broken
        .invoke(json!({"action": "submit", "email": dan, "kind": "erasure", "jurisdiction": "gdpr", "request_id": rid}))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let status = broken
        .invoke(json!({"action": "status", "request_id": rid}))
        .await
        .unwrap();
    assert_eq!(status["request"]["status"], "in_progress");
    assert_eq!(
        broken.versions(&raw).await,
        0,
        "the archive step ran before Stripe's"
    );
    // The sweep a long time later: still open, and overdue.
    let swept = broken
        .invoke(json!({"action": "sweep", "date": "2027-06-01"}))
        .await
        .unwrap();
    assert_eq!(swept["report"]["failed"], 1);
    assert_eq!(swept["report"]["overdue"], json!([rid]));

    // Stripe back: the operator resumes it (or tomorrow's sweep does).
    let fixed = World::new(&stack, None).await;
    let done = fixed
        .invoke(json!({"action": "resume", "request_id": rid}))
        .await
        .unwrap();
    assert_eq!(done["request"]["status"], "completed", "{done:#}");
    assert!(stripe_customer_gone(&cus).await);
    let failed = done["request"]["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "failed")
        .count();
    assert_eq!(
        failed, 2,
        "the first run and the sweep's retry, each audited"
    );
    assert!(
        done["request"]["audit"]
            .to_string()
            .contains("stripe unavailable")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn opt_out_reaches_the_crm_sink_and_a_later_withdrawal_undoes_it() {
    let stack = fresh_stack().await;
    let w = World::new(&stack, None).await;
    let eve = format!("eve.{}@example.com", uid());
    let id = w.subject(&eve);
    let lead_id = format!("ld_{}", uid());
    w.sink()
        .upsert(&CrmRecord::Lead(CrmLead {
            lead_id: lead_id.clone(),
            ..CrmLead::default()
        }))
        .await
        .unwrap();
    w.index
        .record(
            &id,
            &[Location::new(System::Crm, format!("lead:{lead_id}"))],
            1,
        )
        .await
        .unwrap();
    let out = w
        .invoke(
            json!({"action": "submit", "email": eve, "kind": "opt_out", "jurisdiction": "ccpa"}),
        )
        .await
        .unwrap();
    assert_eq!(out["request"]["status"], "completed", "{out:#}");
    assert_eq!(out["due"].as_str().map(str::len), Some(10));
    let lead = w
        .sink()
        .fetch(CrmObject::Lead, &lead_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lead["opted_out"], true, "{lead}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let back = w
        .invoke(json!({"action": "submit", "email": eve, "kind": "opt_out", "jurisdiction": "ccpa", "opted_out": false}))
        .await
        .unwrap();
    assert_eq!(back["request"]["status"], "completed");
    let lead = w
        .sink()
        .fetch(CrmObject::Lead, &lead_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lead["opted_out"], false, "{lead}");
    assert!(!w.index.choice(&id).await.unwrap().unwrap().opted_out);
    // The lead stays: an opt-out erases nothing.
    assert!(w.index.tombstoned(&id).await.unwrap().is_none());
    // A malformed operator request is refused, naming the field and not the value.
    let e = w
        .invoke(json!({"action": "submit", "email": "eve-at-example", "kind": "opt_out", "jurisdiction": "ccpa"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("email") && !e.contains("eve-at-example"), "{e}");
    let e = w
        .invoke(json!({"action": "submit", "email": eve, "kind": "opt_out", "jurisdiction": "ccpa", "phone": "1"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("phone"), "{e}");
}
