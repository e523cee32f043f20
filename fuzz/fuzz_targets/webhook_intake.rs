//! The whole intake path of one delivery ([`Intake::receive`]): route, size limit, base64,
//! signature (Stripe or Standard Webhooks), envelope, the one message to the events queue,
//! then the archiver ([`Archiver::archive`]) forwarding it to its routed queues.
//!
//! Input, HTTP-like: `METHOD PATH [base64]`, header lines `name: value`, an empty line, the
//! body (a body that is not UTF-8 arrives base64-encoded, as Lambda sends it). A signature
//! header whose value is `SIGN` is replaced by a genuine one for the body, so the fuzzer also
//! explores what follows verification (an authentic sender with any body). Beyond "no panic":
//! - the answer is one of the contract's statuses with a JSON body;
//! - an accepted delivery is exactly one events-queue message carrying the body byte for
//!   byte, which the archiver archives and forwards to every routed queue as a message a
//!   consumer can read; a refused one sends nothing.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blapi::queue::{EventMessage, MemoryQueue};
use blapi::storage::MemoryStore;
use blapi::subjects::SubjectKey;
use blapi::webhook::archiver::{Archiver, Record};
use blapi::webhook::config::Verifiers;
use blapi::webhook::{
    ArchiverConfig, Inbound, Incoming, Intake, IntakeConfig, Outcome, SourceSecrets,
    StandardSecret, StripeSecrets, stripe_scheme,
};
use blapi_fuzz::{NOW, PORTAL_SECRET, STRIPE_SECRETS, TELEMETRY_SECRET, block_on, lines};
use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

const EVENTS: &str = "q/events";
/// Small enough that the fuzzer reaches the limit.
const MAX_BODY: usize = 8 * 1024;

static VERIFIERS: LazyLock<Verifiers> = LazyLock::new(|| {
    let stripe = StripeSecrets {
        secrets: STRIPE_SECRETS.iter().map(|s| (*s).to_owned()).collect(),
    };
    let sources = SourceSecrets(
        [
            ("portal".to_owned(), vec![PORTAL_SECRET.to_owned()]),
            ("telemetry".to_owned(), vec![TELEMETRY_SECRET.to_owned()]),
        ]
        .into(),
    );
    Verifiers::new(&stripe, &sources, ("stripe-secret", "source-secrets")).expect("verifiers")
});

fn config() -> IntakeConfig {
    IntakeConfig {
        events_queue_url: EVENTS.into(),
        webhook_secrets: None,
        tolerance_secs: blapi_fuzz::TOLERANCE_SECS,
        max_body_bytes: MAX_BODY,
        bucket: "memory".into(),
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
        subject_key_secret_id: "subject-key".into(),
    }
}

/// What an HTTP header map would show: visible ASCII (and tabs) only.
fn visible(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fuzz_target!(|data: &[u8]| {
    // Request line and headers, up to the first empty line; the rest is the body.
    let mut head = Vec::new();
    let mut rest = data;
    loop {
        let (line, after) = lines(rest, 1);
        let line = line.first().copied().unwrap_or_default();
        rest = after;
        if line.is_empty() || head.len() == 16 {
            break;
        }
        head.push(line);
    }
    let Some(request_line) = head.first().and_then(|l| std::str::from_utf8(l).ok()) else {
        return;
    };
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or_default();
    let path = words.next().unwrap_or_default();
    let mut base64 = words.next() == Some("base64");
    let mut headers: Vec<(String, String)> = head[1..]
        .iter()
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(_, v)| visible(v))
        .collect();
    let body: String = match std::str::from_utf8(rest) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            base64 = true;
            STANDARD.encode(rest)
        }
    };
    // The bytes a sender signs: the decoded body.
    let signed: Vec<u8> = if base64 {
        STANDARD
            .decode(body.trim())
            .unwrap_or_else(|_| body.as_bytes().to_vec())
    } else {
        body.as_bytes().to_vec()
    };
    let get = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let id = get(&headers, "webhook-id").unwrap_or_default();
    let secret = if path.contains("telemetry") {
        TELEMETRY_SECRET
    } else {
        PORTAL_SECRET
    };
    for (k, v) in &mut headers {
        if v == "SIGN" {
            if k.eq_ignore_ascii_case("stripe-signature") {
                *v = stripe_scheme::header(&STRIPE_SECRETS[..1], NOW, &signed);
            } else if k.eq_ignore_ascii_case("webhook-signature") {
                let ts = NOW;
                *v = StandardSecret::parse(secret)
                    .expect("secret")
                    .sign(id.trim(), ts, &signed);
            }
        }
    }

    let queue = Arc::new(MemoryQueue::new());
    let intake = Intake::new(&config(), VERIFIERS.clone(), queue.clone());
    let req = Inbound {
        method,
        path,
        headers: &headers,
        body: Some(&body),
        is_base64_encoded: base64,
    };
    let now = DateTime::from_timestamp(NOW, 0).expect("a time");
    let reply = block_on(intake.receive(&req, now));
    assert!(
        [200, 400, 404, 405, 413].contains(&reply.status),
        "status {}",
        reply.status
    );
    let _: serde_json::Value = serde_json::from_str(&reply.body).expect("a JSON answer");
    let sent = queue.sent(EVENTS);
    let Outcome::Accepted {
        source,
        id,
        event_type,
        routes,
    } = reply.outcome
    else {
        assert!(sent.is_empty(), "a refused delivery was enqueued");
        return;
    };
    assert_eq!(reply.status, 200);
    assert_eq!(sent.len(), 1, "an accepted delivery is one message");
    let incoming: Incoming = serde_json::from_str(&sent[0]).expect("an events-queue message");
    assert_eq!(
        (&incoming.source, &incoming.id, &incoming.event_type),
        (&source, &id, &event_type)
    );
    assert_eq!(
        incoming.body.as_bytes(),
        signed.as_slice(),
        "the body byte for byte"
    );

    // The archiver takes it and forwards it; each consumer can read what it gets.
    let store = Arc::new(MemoryStore::new());
    let out = Arc::new(MemoryQueue::new());
    let config = archiver_config();
    let archiver = Archiver::new(&config, store, out.clone(), SubjectKey::for_tests());
    let report = block_on(archiver.archive(vec![Record {
        message_id: "m1".into(),
        body: Some(sent[0].clone()),
    }]));
    assert!(
        report.failed.is_empty(),
        "an accepted event was not archived: {report:?}"
    );
    let event: serde_json::Value = serde_json::from_slice(&signed).expect("a JSON body");
    for route in routes.iter() {
        let got = out.sent(config.queue_url(route));
        assert_eq!(got.len(), 1, "{route:?}");
        let msg: EventMessage = serde_json::from_str(&got[0]).expect("a consumer's message");
        assert_eq!(msg.event, event);
        assert_eq!(msg.id, id);
    }
});
