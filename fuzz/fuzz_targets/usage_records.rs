//! Usage records as usage-billing ingests them: a telemetry event's `data.records[]`, each
//! read as a [`RawUsage`] and put through the lookup-free checks ([`usage::parse`]).
//!
//! Input: the clock as one RFC 3339 line (a default when it is not one), then the queue
//! message (an `EventMessage`), the event, or a bare array of records. Beyond "no panic":
//! - an accepted record has its text fields set, a value of at least zero that is its JSON
//!   number to the nearest millionth, a timestamp not past the clock's skew, and a period
//!   within one of the open one;
//! - its quantity and its period survive their text forms; a refused record's
//!   [`Rejection`] (as stored) survives its JSON round trip.
#![no_main]

use blapi::billing::Period;
use blapi::billing::Quantity;
use blapi::billing::usage::{self, IngestPolicy, RawUsage, Rejection};
use blapi_fuzz::{lines, same_json};
use chrono::{DateTime, Datelike, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const DEFAULT_NOW: &str = "2026-10-20T12:00:00Z";

fn clock(line: Option<&&[u8]>) -> DateTime<Utc> {
    let parsed = line
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| DateTime::parse_from_rfc3339(l.trim()).ok())
        .map(|t| t.with_timezone(&Utc))
        // Billing's periods run from 2000 to 2200; the clock is the real one.
        .filter(|t| (2001..=2199).contains(&t.year()));
    parsed.unwrap_or_else(|| DEFAULT_NOW.parse().expect("a time"))
}

fn records(doc: &Value) -> Option<&Vec<Value>> {
    doc.pointer("/event/data/records")
        .or_else(|| doc.pointer("/data/records"))
        .unwrap_or(doc)
        .as_array()
}

fuzz_target!(|data: &[u8]| {
    let (head, rest) = lines(data, 1);
    let now = clock(head.first());
    let Ok(doc) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let Some(records) = records(&doc) else {
        return;
    };
    let policy = IngestPolicy::default();
    let open = Period::of(now);
    for value in records {
        let Ok(raw) = serde_json::from_value::<RawUsage>(value.clone()) else {
            continue;
        };
        match usage::parse(&raw, now, &policy) {
            Ok(u) => {
                for field in [&u.id, &u.customer, &u.subscription, &u.metric] {
                    assert!(!field.trim().is_empty() && field.len() <= 200);
                }
                assert!(u.value.micros() >= 0);
                let number = raw.value.as_f64().expect("an accepted value is a number");
                let micros = u.value.micros() as f64;
                assert!(
                    (micros - number * 1e6).abs() <= 0.5 + number.abs() * 1e-9,
                    "{number} became {} millionths",
                    u.value.micros()
                );
                assert!(u.timestamp <= now + policy.future_skew);
                let period = u.period();
                assert!(period == open || period == open.prev() || period == open.next());
                assert_eq!(u.value.to_string().parse::<Quantity>(), Ok(u.value));
                assert_eq!(period.to_string().parse::<Period>(), Ok(period));
            }
            Err(reason) => {
                let rejection = Rejection::new(&raw, reason);
                let text = serde_json::to_string(&rejection).expect("a rejection serialises");
                let back: Rejection = serde_json::from_str(&text).expect("a rejection parses back");
                assert_eq!(
                    (&back.record_id, &back.customer, back.reason),
                    (&rejection.record_id, &rejection.customer, rejection.reason)
                );
                assert!(same_json(&back.record, &rejection.record));
                let _ = (reason.list(), reason.to_string());
            }
        }
    }
});
