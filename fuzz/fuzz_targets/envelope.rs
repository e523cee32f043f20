//! The event envelope: a verified body read just enough to route it (Stripe and Standard
//! Webhooks), and the messages it travels in to the archiver and on to every consumer.
//!
//! Input: the `webhook-id` line, then the body. Beyond "no panic", for every body intake
//! accepts:
//! - the envelope keeps the body byte for byte, its id is a safe event id, its type is set;
//! - the events-queue message ([`Incoming`]) survives its JSON round trip, and the archiver
//!   can read its body as JSON (an accepted event is never stuck before the archive);
//! - the message every consumer reads (the body spliced into an `EventMessage`) parses, and
//!   its `event` is the body.
#![no_main]

use blapi::queue::EventMessage;
use blapi::webhook::envelope::{self, Envelope, Incoming};
use blapi::webhook::{EventId, Source, routes};
use blapi_fuzz::{NOW, lines};
use chrono::DateTime;
use libfuzzer_sys::fuzz_target;

fn check(source: &str, env: &Envelope<'_>, body: &[u8]) {
    assert_eq!(
        env.body.as_bytes(),
        body,
        "the envelope keeps the body verbatim"
    );
    assert_eq!(EventId::parse(env.id.as_str()).as_ref(), Ok(&env.id));
    assert!(!env.event_type.trim().is_empty());
    let source = Source::parse(source).expect("a source name");
    let received_at = DateTime::from_timestamp(NOW, 0).expect("a time");

    // Intake -> events queue -> archiver.
    let incoming = envelope::incoming(
        &source,
        env,
        routes(source.as_str(), &env.event_type),
        received_at,
    );
    let text = serde_json::to_string(&incoming).expect("an Incoming serialises");
    let back: Incoming = serde_json::from_str(&text).expect("an Incoming parses back");
    assert_eq!(back, incoming);
    let event: serde_json::Value = serde_json::from_str(&back.body)
        .unwrap_or_else(|e| panic!("the archiver cannot read an accepted body: {e}"));

    // Archiver -> routed queue -> consumer.
    let raw_key = format!("archive/batch/x.ndjson.gz#{source}/{}", env.id);
    let msg: EventMessage = envelope::message(&source, env, received_at, &raw_key)
        .unwrap_or_else(|e| panic!("a consumer cannot read the routed message: {e}"));
    assert_eq!(msg.id, env.id.as_str());
    assert_eq!(msg.event_type, env.event_type);
    assert_eq!(msg.raw_key, raw_key);
    assert_eq!(msg.event, event);
}

fuzz_target!(|data: &[u8]| {
    let (id, body) = lines(data, 1);
    let id = id
        .first()
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or("");
    match envelope::parse_stripe(body) {
        Ok(env) => check("stripe", &env, body),
        Err(e) => {
            let _ = (e.reason(), e.to_string());
        }
    }
    match envelope::parse_standard(id, body) {
        Ok(env) => {
            assert_eq!(env.id.as_str(), id);
            check("portal", &env, body);
        }
        Err(e) => {
            let _ = (e.reason(), e.to_string());
        }
    }
});
