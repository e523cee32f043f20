//! The intake service with in-memory ports: every path of the contract.

use super::config::{IntakeConfig, SourceSecrets, StripeSecrets, Verifiers};
use super::intake::{Inbound, Intake, Outcome, ledger_key};
use super::routing::Route;
use super::standard_scheme::StandardSecret;
use super::stripe_scheme;
use super::{Routes, Source};
use crate::ledger::{ClaimOptions, Ledger, MemoryLedger, payload_hash};
use crate::queue::{EventMessage, MemoryQueue};
use crate::storage::MemoryStore;
use base64::Engine;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

const NOW: i64 = 1_700_000_000;
const STRIPE_SECRET: &str = "whsec_local_stripe_test_secret";
const PORTAL_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TELEMETRY_SECRET: &str = "whsec_dGVsZW1ldHJ5LXRlc3Qtc2VjcmV0LTAxMjM0NTY3";

struct Fixture {
    intake: Intake,
    ledger: Arc<MemoryLedger>,
    store: Arc<MemoryStore>,
    queue: Arc<MemoryQueue>,
    config: IntakeConfig,
}

fn config() -> IntakeConfig {
    IntakeConfig {
        queue_urls: [
            "q/license-requests",
            "q/billing-events",
            "q/usage-events",
            "q/lead-events",
            "q/customer-events",
            "q/privacy-requests",
        ]
        .map(String::from),
        stripe_secret_id: "s".into(),
        source_secret_id: "f".into(),
        tolerance_secs: 300,
        max_body_bytes: 256 * 1024,
        ledger_table: "ledger".into(),
        bucket: "bucket".into(),
        metrics_namespace: "blapi".into(),
        stripe_api: None,
        subjects: None,
    }
}

fn fixture() -> Fixture {
    let config = config();
    let stripe = StripeSecrets {
        secrets: vec![STRIPE_SECRET.into()],
    };
    let sources = SourceSecrets(
        [
            ("portal".to_owned(), vec![PORTAL_SECRET.to_owned()]),
            ("telemetry".to_owned(), vec![TELEMETRY_SECRET.to_owned()]),
        ]
        .into(),
    );
    let verifiers = Verifiers::new(&stripe, &sources, ("s", "f")).unwrap();
    let ledger = Arc::new(MemoryLedger::new());
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let intake = Intake::new(
        &config,
        verifiers,
        ledger.clone(),
        store.clone(),
        queue.clone(),
    );
    Fixture {
        intake,
        ledger,
        store,
        queue,
        config,
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).unwrap()
}

fn stripe_body(id: &str, event_type: &str) -> String {
    format!(
        r#"{{"id":"{id}","object":"event","api_version":"2024-06-20","created":{NOW},"livemode":false,"pending_webhooks":1,"type":"{event_type}","data":{{"object":{{"id":"sub_1","object":"subscription","customer":"cus_1"}}}}}}"#
    )
}

fn portal_body(event_type: &str) -> String {
    format!(
        r#"{{"type":"{event_type}","timestamp":"2023-11-14T22:13:20Z","data":{{"email":"ada@example.com","first_name":"Ada","consent":{{"marketing":true,"terms":true}}}}}}"#
    )
}

struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    base64: bool,
}

impl Req {
    fn post(path: &str, body: &str) -> Self {
        Self {
            method: "POST".into(),
            path: path.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(body.into()),
            base64: false,
        }
    }

    fn stripe(body: &str) -> Self {
        Self::post("/webhooks/stripe", body).header(
            "Stripe-Signature",
            &stripe_scheme::header(&[STRIPE_SECRET], NOW, body.as_bytes()),
        )
    }

    fn standard(source: &str, secret: &str, id: &str, body: &str) -> Self {
        let sig = StandardSecret::parse(secret)
            .unwrap()
            .sign(id, NOW, body.as_bytes());
        Self::post(&format!("/webhooks/{source}"), body)
            .header("webhook-id", id)
            .header("webhook-timestamp", &NOW.to_string())
            .header("webhook-signature", &sig)
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }

    fn inbound(&self) -> Inbound<'_> {
        Inbound {
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            body: self.body.as_deref(),
            is_base64_encoded: self.base64,
        }
    }
}

impl Fixture {
    async fn send(&self, req: &Req) -> (u16, serde_json::Value, Outcome) {
        self.send_at(req, now()).await
    }

    async fn send_at(&self, req: &Req, at: DateTime<Utc>) -> (u16, serde_json::Value, Outcome) {
        let reply = self.intake.receive(&req.inbound(), at).await;
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        (reply.status, body, reply.outcome)
    }

    fn messages(&self, route: Route) -> Vec<EventMessage> {
        self.queue
            .sent(self.config.queue_url(route))
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }

    async fn completed(&self, source: &str, id: &str) -> bool {
        let key = ledger_key(&Source::parse(source).unwrap(), id);
        self.ledger.completed(&key).await.unwrap().is_some()
    }

    /// Nothing archived, nothing enqueued, nothing claimed.
    fn untouched(&self) {
        assert!(
            self.store.keys().is_empty(),
            "archived: {:?}",
            self.store.keys()
        );
        assert_eq!(self.queue.total(), 0, "enqueued");
        assert!(self.ledger.is_empty(), "claimed");
    }
}

#[tokio::test]
async fn stripe_event_is_archived_byte_for_byte_routed_and_recorded() {
    let f = fixture();
    let body = stripe_body("evt_sub_1", "customer.subscription.created");
    let (status, json, outcome) = f.send(&Req::stripe(&body)).await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        serde_json::json!({"received": true, "id": "evt_sub_1", "duplicate": false})
    );
    let key = "raw/stripe/2023/11/14/evt_sub_1.json";
    assert_eq!(f.store.keys(), vec![key]);
    assert_eq!(f.store.object(key).unwrap(), body.as_bytes());
    for route in [
        Route::LicenseRequests,
        Route::BillingEvents,
        Route::CustomerEvents,
    ] {
        let msgs = f.messages(route);
        assert_eq!(msgs.len(), 1, "{route:?}");
        let m = &msgs[0];
        assert_eq!((m.id.as_str(), m.source.as_str()), ("evt_sub_1", "stripe"));
        assert_eq!(m.event_type, "customer.subscription.created");
        assert_eq!(m.raw_key, key);
        assert_eq!(m.received_at, now());
        assert_eq!(
            m.event,
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        );
    }
    assert_eq!(f.queue.total(), 3);
    assert!(f.completed("stripe", "evt_sub_1").await);
    let Outcome::Accepted { routes, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(routes.len(), 3);
    let m = outcome.metrics("blapi", "webhook-intake");
    assert_eq!(m.get("WebhookAccepted"), Some(1.0));
}

#[tokio::test]
async fn duplicate_is_acknowledged_and_not_enqueued_again() {
    let f = fixture();
    let body = stripe_body("evt_dup", "invoice.paid");
    assert_eq!(f.send(&Req::stripe(&body)).await.0, 200);
    assert_eq!(f.queue.total(), 3);
    // Stripe's retry: same event, a later signature, a changed pending_webhooks.
    let retry_body = body.replace("\"pending_webhooks\":1", "\"pending_webhooks\":0");
    let later = Req::post("/webhooks/stripe", &retry_body).header(
        "stripe-signature",
        &stripe_scheme::header(&[STRIPE_SECRET], NOW + 60, retry_body.as_bytes()),
    );
    let (status, json, outcome) = f
        .send_at(&later, DateTime::from_timestamp(NOW + 60, 0).unwrap())
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        serde_json::json!({"received": true, "id": "evt_dup", "duplicate": true})
    );
    assert!(matches!(outcome, Outcome::Duplicate { .. }));
    assert_eq!(
        outcome.metrics("blapi", "f").get("WebhookDuplicate"),
        Some(1.0)
    );
    assert_eq!(f.queue.total(), 3, "nothing enqueued for the duplicate");
    assert_eq!(f.store.keys().len(), 1);
}

#[tokio::test]
async fn in_progress_duplicate_is_asked_to_retry() {
    let f = fixture();
    let body = stripe_body("evt_busy", "invoice.paid");
    // Another delivery of the same event holds the claim.
    let key = ledger_key(&Source::parse("stripe").unwrap(), "evt_busy");
    let opts = ClaimOptions {
        lease: Duration::from_secs(30),
        retain: None,
    };
    f.ledger
        .claim(&key, &payload_hash(b"invoice.paid"), opts)
        .await
        .unwrap();
    let reply = f.intake.receive(&Req::stripe(&body).inbound(), now()).await;
    assert_eq!(reply.status, 409);
    assert!(reply.body.contains("being processed"), "{}", reply.body);
    let retry_after: u64 = reply
        .headers
        .iter()
        .find(|(k, _)| *k == "retry-after")
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert!(matches!(reply.outcome, Outcome::InProgress { .. }));
    assert_eq!(f.queue.total(), 0);
    assert!(f.store.keys().is_empty());
}

#[tokio::test]
async fn same_id_with_another_type_is_a_conflict() {
    let f = fixture();
    assert_eq!(
        f.send(&Req::stripe(&stripe_body("evt_x", "invoice.paid")))
            .await
            .0,
        200
    );
    let (status, json, _) = f
        .send(&Req::stripe(&stripe_body("evt_x", "invoice.created")))
        .await;
    assert_eq!(status, 409);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("different event type")
    );
    assert_eq!(f.queue.total(), 3);
}

#[tokio::test]
async fn unknown_event_type_is_archived_acknowledged_not_enqueued() {
    let f = fixture();
    let body = stripe_body("evt_plan", "plan.created");
    let (status, json, outcome) = f.send(&Req::stripe(&body)).await;
    assert_eq!(status, 200);
    assert_eq!(json["duplicate"], false);
    assert_eq!(f.store.keys(), vec!["raw/stripe/2023/11/14/evt_plan.json"]);
    assert_eq!(f.queue.total(), 0);
    assert!(f.completed("stripe", "evt_plan").await);
    assert!(matches!(&outcome, Outcome::Accepted { routes, .. } if *routes == Routes::NONE));
    let m = outcome.metrics("blapi", "webhook-intake");
    assert_eq!(
        (m.get("WebhookUnrouted"), m.get("WebhookAccepted")),
        (Some(1.0), None)
    );
}

#[tokio::test]
async fn first_party_sources_route_by_type() {
    let f = fixture();
    let body = portal_body("lead.signup");
    let (status, json, _) = f
        .send(&Req::standard(
            "portal",
            PORTAL_SECRET,
            "msg_signup_1",
            &body,
        ))
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["id"], "msg_signup_1");
    let leads = f.messages(Route::LeadEvents);
    assert_eq!(leads.len(), 1);
    assert_eq!(
        (leads[0].source.as_str(), leads[0].event_type.as_str()),
        ("portal", "lead.signup")
    );
    assert_eq!(leads[0].event["data"]["email"], "ada@example.com");
    assert_eq!(
        f.store
            .object("raw/portal/2023/11/14/msg_signup_1.json")
            .unwrap(),
        body.as_bytes()
    );

    let usage = r#"{"type":"usage.reported","timestamp":"2023-11-14T22:13:20Z","data":{"records":[{"id":"u1","customer":"cus_1","subscription":"sub_1","metric":"api_calls","value":42,"timestamp":"2023-11-14T22:00:00Z","installation":"inst_1"}]}}"#;
    let (status, _, _) = f
        .send(&Req::standard(
            "telemetry",
            TELEMETRY_SECRET,
            "msg_usage_1",
            usage,
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(f.messages(Route::UsageEvents).len(), 1);
    assert_eq!(
        f.messages(Route::UsageEvents)[0].event["data"]["records"][0]["value"],
        42
    );

    // One source's secret does not open another source.
    let (status, json, _) = f
        .send(&Req::standard(
            "telemetry",
            PORTAL_SECRET,
            "msg_usage_2",
            usage,
        ))
        .await;
    assert_eq!(
        (status, json["error"].as_str().unwrap()),
        (400, "no signature matches the payload")
    );
    // Contact-us goes to leads; an unrouted portal type is archived only.
    assert_eq!(
        f.send(&Req::standard(
            "portal",
            PORTAL_SECRET,
            "msg_c",
            &portal_body("lead.contact_us")
        ))
        .await
        .0,
        200
    );
    assert_eq!(
        f.send(&Req::standard(
            "portal",
            PORTAL_SECRET,
            "msg_n",
            &portal_body("newsletter.joined")
        ))
        .await
        .0,
        200
    );
    assert_eq!(f.messages(Route::LeadEvents).len(), 2);
    assert_eq!(f.store.keys().len(), 4);
}

#[tokio::test]
async fn s3_failure_answers_5xx_releases_and_retry_goes_through_exactly_once() {
    let f = fixture();
    let body = stripe_body("evt_s3", "customer.created");
    f.store.set_failing(true);
    let (status, json, outcome) = f.send(&Req::stripe(&body)).await;
    assert_eq!(status, 503);
    assert_eq!(json["error"], "could not archive the event; retry later");
    assert_eq!(
        outcome,
        Outcome::Failed {
            status: 503,
            reason: "archive_failed"
        }
    );
    assert!(f.ledger.is_empty(), "claim released");
    assert!(f.store.keys().is_empty());

    f.store.set_failing(false);
    let (status, json, _) = f.send(&Req::stripe(&body)).await;
    assert_eq!((status, json["duplicate"].as_bool()), (200, Some(false)));
    assert!(f.completed("stripe", "evt_s3").await);
    assert_eq!(
        f.store.object("raw/stripe/2023/11/14/evt_s3.json").unwrap(),
        body.as_bytes()
    );
    // The failed attempt's enqueue ran concurrently with the archive, so its message may
    // exist too: every message is the same event, pointing at the same (now written) key.
    let msgs = f.messages(Route::LeadEvents);
    assert!(!msgs.is_empty() && msgs.len() <= 2);
    assert!(
        msgs.iter()
            .all(|m| m.id == "evt_s3" && m.raw_key == "raw/stripe/2023/11/14/evt_s3.json")
    );
    // And from now on it is a duplicate.
    let before = f.queue.total();
    assert_eq!(f.send(&Req::stripe(&body)).await.1["duplicate"], true);
    assert_eq!(f.queue.total(), before);
}

#[tokio::test]
async fn sqs_failure_answers_5xx_releases_and_retry_goes_through_exactly_once() {
    let f = fixture();
    let body = stripe_body("evt_sqs", "invoice.payment_succeeded");
    f.queue.set_failing(true);
    let (status, json, outcome) = f.send(&Req::stripe(&body)).await;
    assert_eq!(status, 503);
    assert_eq!(json["error"], "could not enqueue the event; retry later");
    assert_eq!(
        outcome.metrics("blapi", "f").get("WebhookFailed"),
        Some(1.0)
    );
    assert!(f.ledger.is_empty());
    assert_eq!(f.queue.total(), 0);

    f.queue.set_failing(false);
    assert_eq!(f.send(&Req::stripe(&body)).await.0, 200);
    assert_eq!(f.messages(Route::LicenseRequests).len(), 1);
    assert_eq!(f.messages(Route::BillingEvents).len(), 1);
    assert_eq!(f.messages(Route::CustomerEvents).len(), 1);
    assert_eq!(
        f.store.keys().len(),
        1,
        "the retry rewrote the same archive key"
    );
    assert_eq!(f.send(&Req::stripe(&body)).await.1["duplicate"], true);
    assert_eq!(f.queue.total(), 3);
}

#[tokio::test]
async fn base64_bodies_are_decoded_before_verification() {
    let f = fixture();
    let body = stripe_body("evt_b64", "customer.created");
    let mut req = Req::stripe(&body);
    req.body = Some(base64::engine::general_purpose::STANDARD.encode(&body));
    req.base64 = true;
    let (status, _, _) = f.send(&req).await;
    assert_eq!(status, 200);
    assert_eq!(
        f.store
            .object("raw/stripe/2023/11/14/evt_b64.json")
            .unwrap(),
        body.as_bytes()
    );
}

/// Every bad input of the contract: status, error text, nothing archived, enqueued or claimed.
#[tokio::test]
async fn bad_inputs_get_their_status_and_touch_nothing() {
    let body = stripe_body("evt_bad", "invoice.paid");
    let good_sig = stripe_scheme::header(&[STRIPE_SECRET], NOW, body.as_bytes());
    let v1 = stripe_scheme::sign(STRIPE_SECRET, NOW, body.as_bytes());
    let signed = |b: &str| {
        Req::post("/webhooks/stripe", b).header(
            "stripe-signature",
            &stripe_scheme::header(&[STRIPE_SECRET], NOW, b.as_bytes()),
        )
    };
    let b64 = |b: &[u8], sig_over: &[u8]| {
        let mut r = Req::post(
            "/webhooks/stripe",
            &base64::engine::general_purpose::STANDARD.encode(b),
        )
        .header(
            "stripe-signature",
            &stripe_scheme::header(&[STRIPE_SECRET], NOW, sig_over),
        );
        r.base64 = true;
        r
    };
    let mut tampered = body.clone().into_bytes();
    tampered[20] ^= 1;
    let tampered = String::from_utf8(tampered).unwrap();
    let reserialised =
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&body).unwrap())
            .unwrap();
    let mut get = Req::stripe(&body);
    get.method = "GET".into();
    let mut not_b64 = Req::stripe(&body);
    not_b64.base64 = true;
    not_b64.body = Some("***not base64***".into());
    let mut no_body = Req::stripe("");
    no_body.body = None;

    let cases: Vec<(&str, Req, u16, &str)> = vec![
        (
            "missing header",
            Req::post("/webhooks/stripe", &body),
            400,
            "missing Stripe-Signature header",
        ),
        (
            "malformed header",
            Req::post("/webhooks/stripe", &body).header("stripe-signature", "nonsense"),
            400,
            "malformed Stripe-Signature header",
        ),
        (
            "no t=",
            Req::post("/webhooks/stripe", &body).header("stripe-signature", &format!("v1={v1}")),
            400,
            "signature header has no timestamp (t=)",
        ),
        (
            "non-numeric t",
            Req::post("/webhooks/stripe", &body)
                .header("stripe-signature", &format!("t=now,v1={v1}")),
            400,
            "signature timestamp is not a number",
        ),
        (
            "only v0",
            Req::post("/webhooks/stripe", &body)
                .header("stripe-signature", &format!("t={NOW},v0={v1}")),
            400,
            "no v1 signature in the signature header",
        ),
        (
            "wrong secret",
            Req::post("/webhooks/stripe", &body).header(
                "stripe-signature",
                &stripe_scheme::header(&["whsec_wrong"], NOW, body.as_bytes()),
            ),
            400,
            "no signature matches the payload",
        ),
        (
            "tampered body",
            Req::post("/webhooks/stripe", &tampered).header("stripe-signature", &good_sig),
            400,
            "no signature matches the payload",
        ),
        (
            "re-serialised body",
            Req::post("/webhooks/stripe", &reserialised).header("stripe-signature", &good_sig),
            400,
            "no signature matches the payload",
        ),
        (
            "replay (old)",
            Req::post("/webhooks/stripe", &body).header(
                "stripe-signature",
                &stripe_scheme::header(&[STRIPE_SECRET], NOW - 301, body.as_bytes()),
            ),
            400,
            "signature timestamp is older than the 300 s tolerance",
        ),
        (
            "from the future",
            Req::post("/webhooks/stripe", &body).header(
                "stripe-signature",
                &stripe_scheme::header(&[STRIPE_SECRET], NOW + 301, body.as_bytes()),
            ),
            400,
            "signature timestamp is more than 300 s in the future",
        ),
        (
            "unknown source",
            Req::standard(
                "billing",
                PORTAL_SECRET,
                "msg_1",
                &portal_body("lead.signup"),
            ),
            404,
            "unknown webhook source billing",
        ),
        (
            "no route",
            Req::stripe(&body).tap_path("/hooks/stripe"),
            404,
            "no such route; webhooks are posted to /webhooks/{source}",
        ),
        (
            "nested path",
            Req::stripe(&body).tap_path("/webhooks/stripe/x"),
            404,
            "no such route; webhooks are posted to /webhooks/{source}",
        ),
        ("GET", get, 405, "method not allowed; use POST"),
        (
            "too large",
            signed(&format!(
                "{{\"id\":\"evt_big\",\"type\":\"x\",\"pad\":\"{}\"}}",
                "a".repeat(256 * 1024)
            )),
            413,
            "body is larger than 262144 bytes",
        ),
        (
            "too large base64",
            b64(&vec![b' '; 256 * 1024 + 1], b"x"),
            413,
            "body is larger than 262144 bytes",
        ),
        (
            "not JSON",
            signed("this is not json"),
            400,
            "body is not valid JSON (line 1, column 2)",
        ),
        (
            "no id",
            signed(r#"{"type":"invoice.paid"}"#),
            400,
            "event has no id",
        ),
        (
            "no type",
            signed(r#"{"id":"evt_1"}"#),
            400,
            "event has no type",
        ),
        (
            "not an object",
            signed("[1]"),
            400,
            "body is not a JSON object",
        ),
        (
            "id not a string",
            signed(r#"{"id":7,"type":"x"}"#),
            400,
            "event fields have the wrong type: id and type must be strings (line 1, column 7)",
        ),
        (
            "non-UTF-8",
            b64(
                b"{\"id\":\"evt_\xff\",\"type\":\"x\"}",
                b"{\"id\":\"evt_\xff\",\"type\":\"x\"}",
            ),
            400,
            "body is not UTF-8",
        ),
        ("empty body", Req::stripe(""), 400, "body is empty"),
        ("absent body", no_body, 400, "body is empty"),
        (
            "bad base64",
            not_b64,
            400,
            "body is flagged base64 but is not valid base64",
        ),
        (
            "bad event id",
            signed(r#"{"id":"../../x","type":"invoice.paid"}"#),
            400,
            "event id must be 1 to 255 characters of A-Z a-z 0-9 _ - . :",
        ),
    ];
    for (name, req, status, error) in cases {
        let f = fixture();
        let reply = f.intake.receive(&req.inbound(), now()).await;
        assert_eq!(reply.status, status, "{name}: {}", reply.body);
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(json, serde_json::json!({ "error": error }), "{name}");
        assert!(matches!(reply.outcome, Outcome::Rejected { .. }), "{name}");
        assert_eq!(
            reply.outcome.metrics("blapi", "f").get("WebhookRejected"),
            Some(1.0),
            "{name}"
        );
        if status == 405 {
            assert_eq!(reply.headers, vec![("allow", "POST".to_owned())]);
        }
        f.untouched();
    }
}

#[tokio::test]
async fn standard_webhook_bad_inputs() {
    let body = portal_body("lead.signup");
    let ok = || Req::standard("portal", PORTAL_SECRET, "msg_1", &body);
    let cases: Vec<(&str, Req, &str)> = vec![
        (
            "no id",
            ok().header("webhook-id", ""),
            "missing webhook-id header",
        ),
        (
            "no signature",
            ok().without("webhook-signature"),
            "missing webhook-signature header",
        ),
        (
            "no timestamp",
            ok().without("webhook-timestamp"),
            "missing webhook-timestamp header",
        ),
        (
            "bad timestamp",
            ok().header("webhook-timestamp", "noon"),
            "signature timestamp is not a number",
        ),
        (
            "malformed",
            ok().header("webhook-signature", "garbage"),
            "malformed webhook-signature header",
        ),
        (
            "only v1a",
            ok().header("webhook-signature", "v1a,AAAA"),
            "no v1 signature in the signature header",
        ),
        (
            "old",
            ok().header("webhook-timestamp", &(NOW - 301).to_string()),
            "signature timestamp is older than the 300 s tolerance",
        ),
        (
            "id changed",
            ok().header("webhook-id", "msg_2"),
            "no signature matches the payload",
        ),
        (
            "no type",
            Req::standard("portal", PORTAL_SECRET, "msg_1", r#"{"data":{}}"#),
            "event has no type",
        ),
    ];
    for (name, req, error) in cases {
        let f = fixture();
        let reply = f.intake.receive(&req.inbound(), now()).await;
        assert_eq!(reply.status, 400, "{name}: {}", reply.body);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["error"],
            error,
            "{name}"
        );
        f.untouched();
    }
}

#[tokio::test]
async fn headers_are_case_insensitive_and_trailing_slash_is_fine() {
    let f = fixture();
    let body = stripe_body("evt_case", "customer.created");
    let sig = stripe_scheme::header(&[STRIPE_SECRET], NOW, body.as_bytes());
    let req = Req::post("/webhooks/stripe/", &body).header("STRIPE-SIGNATURE", &sig);
    assert_eq!(f.send(&req).await.0, 200);
}

impl Req {
    fn tap_path(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }
}

/// An index that can be switched off (its records fail as a DynamoDB outage would).
struct FlakyIndex(
    crate::subjects::MemorySubjectIndex,
    std::sync::atomic::AtomicBool,
);

#[async_trait::async_trait]
impl crate::subjects::SubjectIndex for FlakyIndex {
    async fn record(
        &self,
        s: &crate::subjects::SubjectId,
        l: &[crate::subjects::Location],
        now: i64,
    ) -> crate::Result<()> {
        if self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::Error::dependency(
                "dynamodb",
                true,
                "down (simulated)",
            ));
        }
        self.0.record(s, l, now).await
    }
    async fn locations(
        &self,
        s: &crate::subjects::SubjectId,
    ) -> crate::Result<Vec<crate::subjects::Location>> {
        self.0.locations(s).await
    }
    async fn forget(
        &self,
        s: &crate::subjects::SubjectId,
        l: &crate::subjects::Location,
    ) -> crate::Result<()> {
        self.0.forget(s, l).await
    }
    async fn tombstone(
        &self,
        s: &crate::subjects::SubjectId,
        t: &crate::subjects::Tombstone,
    ) -> crate::Result<()> {
        self.0.tombstone(s, t).await
    }
    async fn tombstoned(
        &self,
        s: &crate::subjects::SubjectId,
    ) -> crate::Result<Option<crate::subjects::Tombstone>> {
        self.0.tombstoned(s).await
    }
    async fn set_choice(
        &self,
        s: &crate::subjects::SubjectId,
        c: &crate::subjects::Choice,
    ) -> crate::Result<bool> {
        self.0.set_choice(s, c).await
    }
    async fn choice(
        &self,
        s: &crate::subjects::SubjectId,
    ) -> crate::Result<Option<crate::subjects::Choice>> {
        self.0.choice(s).await
    }
}

#[tokio::test]
async fn archived_events_are_indexed_under_every_address_they_name_before_they_are_written() {
    use crate::subjects::{Location, SubjectIndex, Subjects, System};
    let index = Arc::new(FlakyIndex(
        crate::subjects::MemorySubjectIndex::new(),
        std::sync::atomic::AtomicBool::new(false),
    ));
    let subjects = Subjects {
        key: crate::subjects::SubjectKey::for_tests(),
        index: index.clone(),
    };
    let mut f = fixture();
    f.intake = f.intake.with_subjects(subjects.clone());
    let subject = |e: &str| {
        subjects
            .key
            .subject(&crate::values::Email::parse(e).unwrap())
    };

    // A Stripe invoice naming its customer's and a receipt's address.
    let body = format!(
        r#"{{"id":"evt_in_1","object":"event","created":{NOW},"type":"invoice.paid","data":{{"object":{{"id":"in_1","customer":"cus_1","customer_email":"Ada@Example.com","charge":{{"receipt_email":"ap@example.com"}}}}}}}}"#
    );
    let (status, _, _) = f.send(&Req::stripe(&body)).await;
    assert_eq!(status, 200);
    let key = "raw/stripe/2023/11/14/evt_in_1.json";
    for who in ["ada@example.com", "ap@example.com"] {
        assert_eq!(
            index.locations(&subject(who)).await.unwrap(),
            vec![Location::new(System::Archive, key)],
            "{who}"
        );
    }
    // An event naming nobody costs no index write.
    let (status, _, _) = f
        .send(&Req::stripe(&stripe_body(
            "evt_sub_9",
            "customer.subscription.created",
        )))
        .await;
    assert_eq!(status, 200);

    // The index down: the event is refused (the sender retries), nothing archived or queued.
    index.1.store(true, std::sync::atomic::Ordering::SeqCst);
    let f2 = {
        let mut f2 = fixture();
        f2.intake = f2.intake.with_subjects(subjects.clone());
        f2
    };
    let (status, _, _) = f2
        .send(&Req::standard(
            "portal",
            PORTAL_SECRET,
            "msg_p1",
            &portal_body("lead.signup"),
        ))
        .await;
    assert_eq!(status, 503);
    f2.untouched();
    index.1.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, _, _) = f2
        .send(&Req::standard(
            "portal",
            PORTAL_SECRET,
            "msg_p1",
            &portal_body("lead.signup"),
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        index
            .locations(&subject("ada@example.com"))
            .await
            .unwrap()
            .len(),
        2
    );
}
