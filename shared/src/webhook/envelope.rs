//! The verified body, read just enough to route it: event id, event type and event time; and
//! the two messages an event travels in.
//!
//! Parsing happens only after the signature matched. The body is checked to be UTF-8 and one
//! JSON object that the archiver and every consumer can read as a `serde_json::Value`
//! (numbers within range, no lone surrogates, nesting within serde_json's limit); only
//! `id`/`type`/`created` (Stripe) or `type`/`timestamp` (Standard Webhooks) are extracted,
//! borrowed, without building a JSON tree.
//!
//! - [`Incoming`]: what intake puts on the events queue: the event's identity, its routes and
//!   the raw verified body as a JSON string (kept byte for byte for the archive).
//! - [`EventMessage`] ([`event_message_json`]): what the archiver puts on each routed queue,
//!   the raw body embedded verbatim as its `event`: consumers get the event exactly as it was
//!   sent, and it is never re-serialised.

use super::Source;
use super::routing::Routes;
use crate::queue::EventMessage;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Longest event id accepted (Stripe ids are ~30 chars; Standard Webhooks ids are short).
pub const MAX_EVENT_ID: usize = 255;

/// Why a verified body is not an event we can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is empty")]
    Empty,
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("body is not valid JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error(
        "event fields have the wrong type: id and type must be strings (line {line}, column {column})"
    )]
    NotAnEvent { line: usize, column: usize },
    #[error("event has no id")]
    NoId,
    #[error("event has no type")]
    NoType,
    #[error("event id must be 1 to 255 characters of A-Z a-z 0-9 _ - . :")]
    BadId,
}

impl EnvelopeError {
    /// A stable snake_case code: metric dimension and log field.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::Empty => "empty_body",
            EnvelopeError::NotUtf8 => "not_utf8",
            EnvelopeError::NotJson { .. } => "not_json",
            EnvelopeError::NotAnObject => "not_an_object",
            EnvelopeError::NotAnEvent { .. } => "not_an_event",
            EnvelopeError::NoId => "no_event_id",
            EnvelopeError::NoType => "no_event_type",
            EnvelopeError::BadId => "bad_event_id",
        }
    }
}

/// An event id: part of the archive's locators and of consumers' idempotency keys, so
/// restricted to characters safe in both (no `/`, `#`, or `..` path tricks).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    pub fn parse(raw: &str) -> Result<Self, EnvelopeError> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_EVENT_ID
            && raw != "."
            && raw != ".."
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(EnvelopeError::BadId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What intake needs of a verified event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub id: EventId,
    pub event_type: Cow<'a, str>,
    /// When the event happened according to the sender (Stripe `created`, Standard Webhooks
    /// `timestamp`), if given and well-formed: it places the event in the archive's hour
    /// ([`crate::archive::placement`]), so a retry days later lands in the same hour, where
    /// the seal keeps one copy.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The raw body, verified and known to be one JSON object.
    pub body: &'a str,
}

#[derive(Deserialize)]
struct StripeHead<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<i64>,
}

#[derive(Deserialize)]
struct StandardHead<'a> {
    #[serde(rename = "type", borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
}

/// The body as text, known to start like a JSON object (serde would also accept an array for
/// a struct, which no event is).
fn object_text(body: &[u8]) -> Result<&str, EnvelopeError> {
    if body.is_empty() {
        return Err(EnvelopeError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?;
    match text.trim_start().as_bytes().first() {
        Some(b'{') => Ok(text),
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            // Valid JSON of another kind, or not JSON at all: say which.
            match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Err(EnvelopeError::NotAnObject),
                Err(e) => Err(json_error(&e)),
            }
        }
        Some(_) => Err(serde_json::from_str::<serde::de::IgnoredAny>(text)
            .err()
            .map_or(EnvelopeError::NotAnObject, |e| json_error(&e))),
        None => Err(EnvelopeError::Empty),
    }
}

/// Maps a serde error without echoing the body (serde quotes offending values).
fn json_error(e: &serde_json::Error) -> EnvelopeError {
    let (line, column) = (e.line(), e.column());
    match e.classify() {
        serde_json::error::Category::Data => EnvelopeError::NotAnEvent { line, column },
        _ => EnvelopeError::NotJson { line, column },
    }
}

/// Any JSON value, read through without building it: `serde_json` refuses what a `Value`
/// refuses (a number out of `f64` range, a lone surrogate escape, nesting past its recursion
/// limit), which the head's ignored fields are not checked for.
struct Readable;

impl<'de> Deserialize<'de> for Readable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Readable)
    }
}

impl<'de> serde::de::Visitor<'de> for Readable {
    type Value = Readable;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_str<E>(self, _: &str) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_unit<E>(self) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Readable, A::Error> {
        while seq.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Readable, A::Error> {
        while map.next_entry::<Readable, Readable>()?.is_some() {}
        Ok(Readable)
    }
}

/// Refuses a body the archiver and the consumers could not read as a `Value`: accepting it
/// would answer 200 for an event that is never archived nor forwarded.
fn readable(text: &str) -> Result<(), EnvelopeError> {
    serde_json::from_str::<Readable>(text)
        .map(|_| ())
        .map_err(|e| json_error(&e))
}

fn required<'a>(
    v: Option<Cow<'a, str>>,
    missing: EnvelopeError,
) -> Result<Cow<'a, str>, EnvelopeError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(missing),
    }
}

/// A Stripe event: `{"id": "evt_...", "type": "...", "created": <unix s>, ...}`.
pub fn parse_stripe(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let text = object_text(body)?;
    let head: StripeHead<'_> = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    readable(text)?;
    let id = required(head.id, EnvelopeError::NoId)?;
    let event_type = required(head.event_type, EnvelopeError::NoType)?;
    Ok(Envelope {
        id: EventId::parse(&id)?,
        event_type,
        occurred_at: head.created.and_then(|s| DateTime::from_timestamp(s, 0)),
        body: text,
    })
}

/// A Standard Webhooks payload `{"type": "...", "timestamp": "<RFC 3339>", "data": {...}}`;
/// the id is the verified `webhook-id` header.
pub fn parse_standard<'a>(webhook_id: &str, body: &'a [u8]) -> Result<Envelope<'a>, EnvelopeError> {
    let text = object_text(body)?;
    let head: StandardHead<'_> = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    readable(text)?;
    let event_type = required(head.event_type, EnvelopeError::NoType)?;
    Ok(Envelope {
        id: EventId::parse(webhook_id)?,
        event_type,
        occurred_at: head
            .timestamp
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
        body: text,
    })
}

/// What intake puts on the events queue for every accepted delivery (the archiver reads it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// When intake accepted it.
    pub received_at: DateTime<Utc>,
    /// The event's own time, when it gave a well-formed one (it places the event in the
    /// archive: a retry of the same event lands in the same hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// The routed queues' short names ([`super::Route::name`]); empty: archived only.
    pub routes: Vec<String>,
    /// The raw verified body (UTF-8, one JSON object), byte for byte.
    pub body: String,
}

/// The events-queue message of a verified (or authentic) event.
pub fn incoming(
    source: &Source,
    envelope: &Envelope<'_>,
    routes: Routes,
    received_at: DateTime<Utc>,
) -> Incoming {
    Incoming {
        id: envelope.id.as_str().to_owned(),
        source: source.as_str().to_owned(),
        event_type: envelope.event_type.to_string(),
        received_at,
        occurred_at: envelope.occurred_at,
        routes: routes.iter().map(|r| r.name().to_owned()).collect(),
        body: envelope.body.to_owned(),
    }
}

#[derive(serde::Serialize)]
struct MessageHead<'a> {
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    received_at: DateTime<Utc>,
    raw_key: &'a str,
}

/// The JSON of an [`EventMessage`] with `body` (one JSON object, verified) embedded verbatim
/// as `event`, so splicing it is sound.
pub fn event_message_json(
    id: &str,
    source: &str,
    event_type: &str,
    received_at: DateTime<Utc>,
    raw_key: &str,
    body: &str,
) -> String {
    let head = MessageHead {
        id,
        source,
        event_type,
        received_at,
        raw_key,
    };
    // Serialising a struct of strings and a timestamp cannot fail.
    let head = serde_json::to_string(&head).unwrap_or_else(|_| "{}".to_owned());
    let mut out = String::with_capacity(head.len() + body.len() + 12);
    out.push_str(head.strip_suffix('}').unwrap_or(&head));
    out.push_str(",\"event\":");
    out.push_str(body);
    out.push('}');
    out
}

/// [`event_message_json`] of a parsed envelope.
pub fn message_json(
    source: &Source,
    envelope: &Envelope<'_>,
    received_at: DateTime<Utc>,
    raw_key: &str,
) -> String {
    event_message_json(
        envelope.id.as_str(),
        source.as_str(),
        &envelope.event_type,
        received_at,
        raw_key,
        envelope.body,
    )
}

/// The message as a typed value (tests and tools; the archiver sends [`event_message_json`]).
pub fn message(
    source: &Source,
    envelope: &Envelope<'_>,
    received_at: DateTime<Utc>,
    raw_key: &str,
) -> serde_json::Result<EventMessage> {
    serde_json::from_str(&message_json(source, envelope, received_at, raw_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRIPE: &[u8] = br#"{"id":"evt_123","object":"event","type":"invoice.paid","created":1700000000,"data":{"object":{"id":"in_1","lines":[1,2,{"a":"b"}]}}}"#;

    #[test]
    fn stripe_envelope() {
        let env = parse_stripe(STRIPE).unwrap();
        assert_eq!(env.id.as_str(), "evt_123");
        assert_eq!(env.event_type, "invoice.paid");
        assert_eq!(env.occurred_at, DateTime::from_timestamp(1_700_000_000, 0));
        // An escaped type is decoded (owned), not borrowed wrongly.
        let escaped = br#"{"id":"evt_1","type":"invoice.pai\u0064"}"#;
        assert_eq!(parse_stripe(escaped).unwrap().event_type, "invoice.paid");
    }

    #[test]
    fn stripe_bad_bodies() {
        assert_eq!(parse_stripe(b""), Err(EnvelopeError::Empty));
        assert_eq!(parse_stripe(b"\xff\xfe{}"), Err(EnvelopeError::NotUtf8));
        assert!(matches!(
            parse_stripe(b"{\"id\":"),
            Err(EnvelopeError::NotJson { .. })
        ));
        assert!(matches!(
            parse_stripe(b"not json"),
            Err(EnvelopeError::NotJson { .. })
        ));
        assert!(matches!(
            parse_stripe(b"{} trailing"),
            Err(EnvelopeError::NotJson { .. })
        ));
        assert_eq!(parse_stripe(b"[1,2]"), Err(EnvelopeError::NotAnObject));
        assert_eq!(
            parse_stripe(br#"["evt_1","invoice.paid"]"#),
            Err(EnvelopeError::NotAnObject)
        );
        assert_eq!(parse_stripe(b" \"evt\""), Err(EnvelopeError::NotAnObject));
        assert_eq!(parse_stripe(b"   "), Err(EnvelopeError::Empty));
        assert!(matches!(
            parse_stripe(b"[1,"),
            Err(EnvelopeError::NotJson { .. })
        ));
        assert!(matches!(
            parse_stripe(br#"{"id":5,"type":"x"}"#),
            Err(EnvelopeError::NotAnEvent { .. })
        ));
        assert!(matches!(
            parse_stripe(br#"{"id":"a","id":"b","type":"x"}"#),
            Err(EnvelopeError::NotAnEvent { .. })
        ));
        assert_eq!(parse_stripe(br#"{"type":"x"}"#), Err(EnvelopeError::NoId));
        assert_eq!(
            parse_stripe(br#"{"id":"","type":"x"}"#),
            Err(EnvelopeError::NoId)
        );
        assert_eq!(
            parse_stripe(br#"{"id":"evt_1"}"#),
            Err(EnvelopeError::NoType)
        );
        assert_eq!(
            parse_stripe(br#"{"id":"evt_1","type":null}"#),
            Err(EnvelopeError::NoType)
        );
        assert_eq!(
            parse_stripe(br#"{"id":"../../etc","type":"x"}"#),
            Err(EnvelopeError::BadId)
        );
        assert_eq!(
            parse_stripe(br#"{"id":"evt 1","type":"x"}"#),
            Err(EnvelopeError::BadId)
        );
        // The error text never quotes the body.
        let err = parse_stripe(br#"{"id":"secret-value-here","type":7}"#).unwrap_err();
        assert!(!err.to_string().contains("secret-value-here"), "{err}");
    }

    /// Found by the `envelope` fuzz target: bodies whose head reads fine but which no
    /// `serde_json::Value` holds (the archiver's and every consumer's reading) were accepted,
    /// answered 200, then failed in the archiver until they reached its dead-letter queue.
    #[test]
    fn bodies_no_consumer_can_read_are_refused() {
        let deep = format!(
            r#"{{"id":"evt_1","type":"invoice.paid","data":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for body in [
            r#"{"id":"evt_1","type":"invoice.paid","data":{"amount":1e400}}"#,
            r#"{"id":"evt_1","type":"invoice.paid","data":{"name":"\ud800"}}"#,
            r#"{"id":"evt_1","type":"invoice.paid","data":{"name":"\udc00x"}}"#,
            &deep,
        ] {
            assert!(serde_json::from_str::<serde_json::Value>(body).is_err());
            assert!(
                matches!(
                    parse_stripe(body.as_bytes()),
                    Err(EnvelopeError::NotJson { .. })
                ),
                "{body}"
            );
            assert!(
                matches!(
                    parse_standard("msg_1", body.as_bytes()),
                    Err(EnvelopeError::NotJson { .. })
                ),
                "{body}"
            );
        }
        // Deep but within the limit, large numbers in range, escaped pairs: still events.
        let fine = format!(
            r#"{{"id":"evt_1","type":"invoice.paid","data":{}{},"n":1e300,"s":"\ud83d\ude00"}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(parse_stripe(fine.as_bytes()).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&fine).is_ok());
    }

    #[test]
    fn standard_envelope() {
        let body = br#"{"type":"lead.signup","timestamp":"2024-02-29T23:59:59+01:00","data":{"email":"a@example.com"}}"#;
        let env = parse_standard("msg_1", body).unwrap();
        assert_eq!(env.id.as_str(), "msg_1");
        assert_eq!(env.event_type, "lead.signup");
        assert_eq!(
            env.occurred_at.unwrap().to_rfc3339(),
            "2024-02-29T22:59:59+00:00"
        );
        // A timestamp that is not RFC 3339 only loses the date hint.
        let env = parse_standard("msg_1", br#"{"type":"x","timestamp":"yesterday"}"#).unwrap();
        assert_eq!(env.occurred_at, None);
        assert_eq!(
            parse_standard("msg_1", br#"{"data":{}}"#),
            Err(EnvelopeError::NoType)
        );
        assert_eq!(
            parse_standard("a/b", br#"{"type":"x"}"#),
            Err(EnvelopeError::BadId)
        );
        assert_eq!(parse_standard("m", b"[]"), Err(EnvelopeError::NotAnObject));
    }

    #[test]
    fn incoming_and_event_message() {
        let source = Source::parse("stripe").unwrap();
        let env = parse_stripe(STRIPE).unwrap();
        let received = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let routes = super::super::routing::routes("stripe", "invoice.paid");
        let inc = incoming(&source, &env, routes, received);
        assert_eq!(inc.id, "evt_123");
        assert_eq!(inc.occurred_at, DateTime::from_timestamp(1_700_000_000, 0));
        assert_eq!(
            inc.routes,
            vec!["license-requests", "billing-events", "customer-events"]
        );
        assert_eq!(inc.body.as_bytes(), STRIPE, "the body byte for byte");
        let json = serde_json::to_string(&inc).unwrap();
        assert_eq!(serde_json::from_str::<Incoming>(&json).unwrap(), inc);

        let key = "archive/batch/2023/11/14/22/x.ndjson.gz#stripe/evt_123";
        let msg = message(&source, &env, received, key).unwrap();
        assert_eq!(msg.id, "evt_123");
        assert_eq!(msg.source, "stripe");
        assert_eq!(msg.event_type, "invoice.paid");
        assert_eq!(msg.received_at, received);
        assert_eq!(msg.raw_key, key);
        assert_eq!(
            msg.event,
            serde_json::from_slice::<serde_json::Value>(STRIPE).unwrap()
        );
        // The body is embedded verbatim.
        assert!(
            message_json(&source, &env, received, key)
                .ends_with(&format!(",\"event\":{}}}", env.body))
        );
    }
}
