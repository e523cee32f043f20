//! The intake service with in-memory ports: every path of the contract, and the pipeline
//! intake -> events queue -> archiver -> archive + routed queues.

use super::archiver::{Archiver, BatchReport, Record};
use super::config::{ArchiverConfig, IntakeConfig, SourceSecrets, StripeSecrets, Verifiers};
use super::envelope::Incoming;
use super::intake::{Inbound, Intake, Outcome};
use super::routing::Route;
use super::standard_scheme::StandardSecret;
use super::stripe_scheme;
use super::{Routes, Source};
use crate::archive;
use crate::queue::{EventMessage, MemoryQueue};
use crate::storage::MemoryStore;
use crate::subjects::SubjectKey;
use base64::Engine;
use chrono::{DateTime, Utc};
use std::sync::Arc;

const NOW: i64 = 1_700_000_000;
const STRIPE_SECRET: &str = "whsec_local_stripe_test_secret";
const PORTAL_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TELEMETRY_SECRET: &str = "whsec_dGVsZW1ldHJ5LXRlc3Qtc2VjcmV0LTAxMjM0NTY3";
const EVENTS: &str = "q/events";

struct Fixture {
    intake: Intake,
    archiver: Archiver,
    store: Arc<MemoryStore>,
    queue: Arc<MemoryQueue>,
    archiver_config: ArchiverConfig,
    /// Events-queue messages already handed to the archiver.
    archived: std::sync::atomic::AtomicUsize,
}

fn config() -> IntakeConfig {
    IntakeConfig {
        events_queue_url: EVENTS.into(),
        webhook_secrets: None,
        tolerance_secs: 300,
        max_body_bytes: 256 * 1024,
        bucket: "bucket".into(),
        metrics_namespace: "blapi".into(),
        stripe_api: None,
        archiver: None,
    }
}

fn archiver_config() -> ArchiverConfig {
    ArchiverConfig {
        queue_urls: [
            "q/license-requests",
            "q/billing-events",
            "q/usage-events",
            "q/lead-events",
            "q/customer-events",
            "q/privacy-requests",
        ]
        .map(String::from),
        subject_key_secret_id: "k".into(),
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
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let intake = Intake::new(&config, verifiers, queue.clone());
    let archiver = Archiver::new(
        &archiver_config(),
        store.clone(),
        queue.clone(),
        SubjectKey::for_tests(),
    );
    Fixture {
        intake,
        archiver,
        store,
        queue,
        archiver_config: archiver_config(),
        archived: std::sync::atomic::AtomicUsize::new(0),
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

    /// What intake put on the events queue.
    fn incoming(&self) -> Vec<Incoming> {
        self.queue
            .sent(EVENTS)
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }

    /// Hands every events-queue message not archived yet to the archiver, as one batch.
    async fn archive(&self) -> BatchReport {
        let all = self.queue.sent(EVENTS);
        let from = self
            .archived
            .swap(all.len(), std::sync::atomic::Ordering::SeqCst);
        let records = all[from..]
            .iter()
            .enumerate()
            .map(|(i, b)| Record {
                message_id: format!("m{}", from + i),
                body: Some(b.clone()),
            })
            .collect();
        self.archiver.archive(records).await
    }

    fn messages(&self, route: Route) -> Vec<EventMessage> {
        self.queue
            .sent(self.archiver_config.queue_url(route))
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }

    /// Nothing enqueued, nothing archived.
    fn untouched(&self) {
        assert!(
            self.store.keys().is_empty(),
            "archived: {:?}",
            self.store.keys()
        );
        assert_eq!(self.queue.total(), 0, "enqueued");
    }
}

#[tokio::test]
async fn one_send_to_the_events_queue_then_200_with_the_body_byte_for_byte() {
    let f = fixture();
    let body = stripe_body("evt_sub_1", "customer.subscription.created");
    let (status, json, outcome) = f.send(&Req::stripe(&body)).await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        serde_json::json!({"received": true, "id": "evt_sub_1"})
    );
    // One message, on the events queue only; nothing written anywhere else.
    assert_eq!(f.queue.total(), 1);
    assert!(f.store.keys().is_empty(), "no S3 on the hot path");
    let inc = &f.incoming()[0];
    assert_eq!(
        (inc.id.as_str(), inc.source.as_str()),
        ("evt_sub_1", "stripe")
    );
    assert_eq!(inc.event_type, "customer.subscription.created");
    assert_eq!(inc.received_at, now());
    assert_eq!(inc.occurred_at, Some(now()));
    assert_eq!(
        inc.routes,
        vec!["license-requests", "billing-events", "customer-events"]
    );
    assert_eq!(inc.body, body, "byte for byte");
    let Outcome::Accepted { routes, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(routes.len(), 3);
    // No metric line per accepted event: the archiver counts them per batch.
    let m = outcome.metrics("blapi", "webhook-intake");
    assert_eq!(m.render(0), None);
}

#[tokio::test]
async fn the_archiver_archives_once_and_routes_each_event_with_its_locator() {
    let f = fixture();
    let body = stripe_body("evt_sub_1", "customer.subscription.created");
    assert_eq!(f.send(&Req::stripe(&body)).await.0, 200);
    let report = f.archive().await;
    assert_eq!((report.events, report.failed.len()), (1, 0), "{report:?}");
    assert_eq!(report.objects.len(), 1);
    let object = &report.objects[0];
    assert!(
        object.starts_with("archive/batch/2023/11/14/22/") && object.ends_with(".ndjson.gz"),
        "{object}"
    );
    let lines = archive::decode(object, &f.store.object(object).unwrap()).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0].body.as_deref(),
        Some(body.as_str()),
        "byte for byte"
    );
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
        assert_eq!(m.raw_key, format!("{object}#stripe/evt_sub_1"));
        assert_eq!(m.received_at, now());
        assert_eq!(
            m.event,
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        );
        // The locator finds the event, before and after the seal.
        let found = archive::find(f.store.as_ref(), &m.raw_key).await.unwrap();
        assert_eq!(found.unwrap().line.body.as_deref(), Some(body.as_str()));
    }
    let metrics = report.metrics("blapi", "webhook-intake");
    assert_eq!(metrics[0].get("WebhookAccepted"), Some(1.0));
    archive::seal(f.store.as_ref(), now(), true).await.unwrap();
    let m = &f.messages(Route::LicenseRequests)[0];
    assert!(
        archive::find(f.store.as_ref(), &m.raw_key)
            .await
            .unwrap()
            .is_some_and(|e| e.object == "archive/sealed/2023/11/14/22.ndjson.gz")
    );
}

#[tokio::test]
async fn a_redelivered_event_is_accepted_again_and_archived_once() {
    let f = fixture();
    let body = stripe_body("evt_dup", "invoice.paid");
    assert_eq!(f.send(&Req::stripe(&body)).await.0, 200);
    f.archive().await;
    // Stripe's retry a minute later (a lost 2xx): same event, a later signature, a changed
    // pending_webhooks. Accepted again, not deduplicated here.
    let retry_body = body.replace("\"pending_webhooks\":1", "\"pending_webhooks\":0");
    let later = Req::post("/webhooks/stripe", &retry_body).header(
        "stripe-signature",
        &stripe_scheme::header(&[STRIPE_SECRET], NOW + 60, retry_body.as_bytes()),
    );
    let at = DateTime::from_timestamp(NOW + 60, 0).unwrap();
    let (status, json, _) = f.send_at(&later, at).await;
    assert_eq!((status, json["id"].as_str()), (200, Some("evt_dup")));
    // Twice within one batch too.
    f.send_at(&later, at).await;
    let report = f.archive().await;
    assert_eq!((report.events, report.duplicates), (1, 1), "{report:?}");
    // Two batch objects of the same hour (the event's own time places both), one event.
    let hour = archive::Hour::of(now());
    let read = archive::read_hour(f.store.as_ref(), hour).await.unwrap();
    assert_eq!((read.events.len(), read.duplicates), (1, 1));
    let sealed = archive::seal(f.store.as_ref(), now(), true).await.unwrap();
    assert_eq!((sealed.merged, sealed.events, sealed.duplicates), (2, 1, 1));
    let lines = archive::decode(
        &hour.sealed_key(),
        &f.store.object(&hour.sealed_key()).unwrap(),
    )
    .unwrap();
    assert_eq!(lines.len(), 1, "exactly one line for the event");
    assert_eq!(lines[0].body.as_deref(), Some(body.as_str()), "first wins");
    // The consumers got it twice: they are idempotent on the event.
    assert_eq!(f.messages(Route::BillingEvents).len(), 2);
}

#[tokio::test]
async fn unknown_event_type_is_archived_acknowledged_not_routed() {
    let f = fixture();
    let body = stripe_body("evt_plan", "plan.created");
    let (status, _, outcome) = f.send(&Req::stripe(&body)).await;
    assert_eq!(status, 200);
    assert!(matches!(&outcome, Outcome::Accepted { routes, .. } if *routes == Routes::NONE));
    assert!(f.incoming()[0].routes.is_empty());
    let report = f.archive().await;
    assert_eq!(report.objects.len(), 1);
    assert!(report.sent.is_empty());
    assert_eq!(f.queue.total(), 1, "only the events-queue message");
    let metrics = report.metrics("blapi", "webhook-intake");
    assert_eq!(
        (
            metrics[0].get("WebhookUnrouted"),
            metrics[0].get("WebhookAccepted")
        ),
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
    for (id, t) in [("msg_c", "lead.contact_us"), ("msg_n", "newsletter.joined")] {
        let req = Req::standard("portal", PORTAL_SECRET, id, &portal_body(t));
        assert_eq!(f.send(&req).await.0, 200);
    }
    let report = f.archive().await;
    assert_eq!((report.events, report.objects.len()), (4, 1), "{report:?}");
    let leads = f.messages(Route::LeadEvents);
    assert_eq!(leads.len(), 2);
    assert_eq!(
        (leads[0].source.as_str(), leads[0].event_type.as_str()),
        ("portal", "lead.signup")
    );
    assert_eq!(leads[0].event["data"]["email"], "ada@example.com");
    assert_eq!(
        f.messages(Route::UsageEvents)[0].event["data"]["records"][0]["value"],
        42
    );
    // The portal event names Ada: its line carries her keyed hash, never her address.
    let object = &report.objects[0];
    let lines = archive::decode(object, &f.store.object(object).unwrap()).unwrap();
    let ada =
        SubjectKey::for_tests().subject(&crate::values::Email::parse("ada@example.com").unwrap());
    let signup = lines.iter().find(|l| l.id == "msg_signup_1").unwrap();
    assert_eq!(signup.subjects, vec![ada]);
    assert_eq!(signup.body.as_deref(), Some(body.as_str()));
    assert!(
        lines
            .iter()
            .find(|l| l.id == "msg_usage_1")
            .unwrap()
            .subjects
            .is_empty()
    );
}

#[tokio::test]
async fn sqs_failure_answers_5xx_and_the_retry_goes_through() {
    let f = fixture();
    let body = stripe_body("evt_sqs", "invoice.payment_succeeded");
    f.queue.set_failing(true);
    let (status, json, outcome) = f.send(&Req::stripe(&body)).await;
    assert_eq!(status, 503);
    assert_eq!(json["error"], "could not enqueue the event; retry later");
    assert_eq!(
        outcome,
        Outcome::Failed {
            status: 503,
            reason: "enqueue_failed"
        }
    );
    assert_eq!(
        outcome.metrics("blapi", "f").get("WebhookFailed"),
        Some(1.0)
    );
    f.untouched();

    f.queue.set_failing(false);
    assert_eq!(f.send(&Req::stripe(&body)).await.0, 200);
    f.archive().await;
    assert_eq!(f.messages(Route::LicenseRequests).len(), 1);
    assert_eq!(f.messages(Route::BillingEvents).len(), 1);
    assert_eq!(f.messages(Route::CustomerEvents).len(), 1);
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
    assert_eq!(f.incoming()[0].body, body);
}

#[tokio::test]
async fn authentic_events_of_the_recovery_take_the_same_path() {
    let f = fixture();
    let body = stripe_body("evt_missed", "customer.created");
    let (id, t, routes) = f
        .intake
        .accept_authentic(&Source::parse("stripe").unwrap(), body.as_bytes(), now())
        .await
        .unwrap();
    assert_eq!(
        (id.as_str(), t.as_str(), routes.len()),
        ("evt_missed", "customer.created", 3)
    );
    assert_eq!(f.incoming()[0].body, body);
    let e = f
        .intake
        .accept_authentic(&Source::parse("portal").unwrap(), body.as_bytes(), now())
        .await
        .unwrap_err();
    assert!(e.contains("cannot be fetched"), "{e}");
    let e = f
        .intake
        .accept_authentic(&Source::parse("stripe").unwrap(), b"{}", now())
        .await
        .unwrap_err();
    assert_eq!(e, "no_event_id");
}

/// Every bad input of the contract: status, error text, nothing enqueued.
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
