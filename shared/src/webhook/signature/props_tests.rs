//! Properties of both signature schemes (`proptest`): a delivery as signed is accepted, and any
//! single-byte change of the body, the timestamp, the signature (or, for Standard Webhooks,
//! the message id) is refused.
//!
//! The one exception is stated and checked: a Stripe `v1` signature is hex, and hex decoding
//! ignores case, so changing a hex letter's case (`a` <-> `A`) names the same 32 bytes and is
//! accepted. That is not a forgery (it needs the signature already), and `bad_headers` in
//! `stripe_scheme` documents it. Standard Webhooks' base64 has no such freedom: the decoder
//! refuses non-canonical trailing bits and padding.
//!
//! Timestamps are checked with the tolerance both at 300 s and switched off (`u64::MAX`), so a
//! changed timestamp must be caught by the MAC itself, not only by the clock.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p blapi --lib props`.

use super::super::standard_scheme::{StandardHeaders, StandardSecret, StandardVerifier};
use super::super::stripe_scheme::{self, StripeVerifier};
use super::SignatureError;
use crate::config::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use proptest::sample::Index;

/// `cases` per property unless `PROPTEST_CASES` is set (then that, for every property).
fn config(cases: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        base
    } else {
        ProptestConfig { cases, ..base }
    }
}

/// Signing times: now-ish, anywhere in `i64`'s positive range, and the ends.
fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 1_000_000_000_i64..=4_102_444_800,
        1 => 0..=i64::MAX,
        1 => prop_oneof![Just(0_i64), Just(9), Just(10), Just(i64::MAX)],
    ]
}

/// Raw bytes, or something shaped like a JSON event.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        "\\{\"id\":\"evt_[A-Za-z0-9]{1,24}\",\"type\":\"[a-z.]{1,30}\",\"data\":\\{[ -~]{0,200}\\}\\}"
            .prop_map(String::into_bytes),
    ]
}

/// The tolerance: the production 300 s, or none at all (so only the MAC can refuse).
fn tolerance() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(300_u64), 3 => Just(u64::MAX)]
}

/// One change of one byte of `body`: replaced by a different byte, one inserted, or one removed.
#[derive(Debug, Clone)]
enum Change {
    Replace(At, u8),
    Insert(At, u8),
    Remove(At),
}

/// Where: anywhere, or at either end (where a MAC that skips a prefix or a suffix would miss it).
#[derive(Debug, Clone)]
enum At {
    Any(Index),
    First,
    Last,
}

impl At {
    /// The position among `len` (> 0).
    fn of(&self, len: usize) -> usize {
        match self {
            At::Any(i) => i.index(len),
            At::First => 0,
            At::Last => len - 1,
        }
    }
}

fn change() -> impl Strategy<Value = Change> {
    let at = || prop_oneof![2 => any::<Index>().prop_map(At::Any), 1 => Just(At::First), 1 => Just(At::Last)];
    prop_oneof![
        2 => (at(), 1_u8..=255).prop_map(|(i, x)| Change::Replace(i, x)),
        1 => (at(), any::<u8>()).prop_map(|(i, b)| Change::Insert(i, b)),
        1 => at().prop_map(Change::Remove),
    ]
}

fn apply(change: &Change, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match change {
        Change::Replace(at, x) if !out.is_empty() => out[at.of(bytes.len())] ^= x,
        Change::Remove(at) if !out.is_empty() => {
            out.remove(at.of(bytes.len()));
        }
        Change::Insert(at, b) => out.insert(at.of(bytes.len() + 1), *b),
        // Nothing to replace or remove in an empty body: add a byte instead.
        Change::Replace(_, x) => out.push(*x),
        Change::Remove(_) => out.push(0),
    }
    out
}

/// `text` with the byte at `i` replaced by another ASCII byte: a different digit for a digit
/// when `digit` is set, else `old ^ x` (`x` in `1..=127` flips bits of an ASCII byte, so the
/// result is different and still ASCII). Returns the text and the old and new bytes.
fn replace_ascii(text: &str, i: usize, x: u8, digit: bool) -> (String, u8, u8) {
    let mut bytes = text.as_bytes().to_vec();
    let old = bytes[i];
    let new = if digit && old.is_ascii_digit() {
        b'0' + (old - b'0' + 1 + x % 9) % 10
    } else {
        old ^ x
    };
    bytes[i] = new;
    (String::from_utf8(bytes).unwrap_or_default(), old, new)
}

/// The position `at` picks in `range`.
fn pick(range: std::ops::Range<usize>, at: &Index) -> usize {
    range.start + at.index(range.len())
}

/// Where a header is changed: anywhere, or in one part of it; and whether a digit becomes
/// another digit (a timestamp that still reads, so only the MAC can refuse it).
fn byte_change() -> impl Strategy<Value = (u8, Index, u8, bool)> {
    (0_u8..3, any::<Index>(), 1_u8..=127, any::<bool>())
}

fn stripe_verifier(secrets: &[String]) -> StripeVerifier {
    let owned: Vec<Secret<String>> = secrets.iter().map(|s| Secret::new(s.clone())).collect();
    StripeVerifier::new(&owned)
}

/// 1 to 3 distinct endpoint secrets and which one signed.
fn stripe_secrets() -> impl Strategy<Value = (Vec<String>, Index)> {
    (
        proptest::collection::btree_set("whsec_[A-Za-z0-9]{8,40}", 1..=3)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>()),
        any::<Index>(),
    )
}

/// 1 to 3 Standard Webhooks secrets (24 to 64 random bytes, `whsec_` + base64) and which one
/// signed.
fn standard_secrets() -> impl Strategy<Value = (Vec<StandardSecret>, Index)> {
    (
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 24..=64), 1..=3),
        any::<Index>(),
    )
        .prop_map(|(keys, who)| {
            let secrets = keys
                .iter()
                .map(|k| StandardSecret::parse(&format!("whsec_{}", STANDARD.encode(k))))
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_default();
            (secrets, who)
        })
}

proptest! {
    #![proptest_config(config(256))]

    /// Stripe: the signed body is accepted; any one byte of it changed, added or removed is a
    /// mismatch.
    #[test]
    fn stripe_refuses_any_single_byte_change_of_the_body(
        (secrets, who) in stripe_secrets(),
        ts in timestamp(),
        body in body(),
        change in change(),
        tolerance in tolerance(),
    ) {
        let v = stripe_verifier(&secrets);
        let header = stripe_scheme::header(&[secrets[who.index(secrets.len())].as_str()], ts, &body);
        prop_assert_eq!(v.verify(Some(&header), &body, ts, tolerance), Ok(ts));
        let changed = apply(&change, &body);
        prop_assert_ne!(&changed, &body);
        prop_assert_eq!(
            v.verify(Some(&header), &changed, ts, tolerance),
            Err(SignatureError::Mismatch)
        );
    }

    /// Stripe: any one byte of the `Stripe-Signature` header (`t=<timestamp>,v1=<hex>`)
    /// replaced by another is refused — in the timestamp, the signature or the syntax around
    /// them — except a hex letter of the signature changed to the other case (the same bytes).
    /// With the tolerance off a changed timestamp is a mismatch (the MAC covers it) or, past
    /// `i64`, unreadable.
    #[test]
    fn stripe_refuses_any_single_byte_change_of_timestamp_or_signature(
        (secrets, who) in stripe_secrets(),
        ts in timestamp(),
        body in body(),
        (part, at, x, digit) in byte_change(),
        tolerance in tolerance(),
    ) {
        let v = stripe_verifier(&secrets);
        let header = stripe_scheme::header(&[secrets[who.index(secrets.len())].as_str()], ts, &body);
        prop_assert_eq!(v.verify(Some(&header), &body, ts, tolerance), Ok(ts));
        let digits = 2..2 + ts.to_string().len();
        let signature = header.len() - 64..header.len();
        let range = match part {
            0 => digits.clone(),
            1 => signature.clone(),
            _ => 0..header.len(),
        };
        let i = pick(range, &at);
        let (changed, old, new) = replace_ascii(&header, i, x, digit);
        let got = v.verify(Some(&changed), &body, ts, tolerance);
        if signature.contains(&i)
            && old.is_ascii_hexdigit()
            && new.is_ascii_hexdigit()
            && old.eq_ignore_ascii_case(&new)
        {
            prop_assert_eq!(got, Ok(ts), "case of a hex letter: the same signature");
        } else if digits.contains(&i) && new.is_ascii_digit() && tolerance == u64::MAX {
            prop_assert!(
                matches!(got, Err(SignatureError::Mismatch | SignatureError::BadTimestamp)),
                "{:?} -> {:?}", changed, got
            );
        } else {
            prop_assert!(got.is_err(), "accepted {:?} ({:?} -> {:?})", changed, old as char, new as char);
        }
    }

    /// Standard Webhooks: the signed delivery is accepted; any one byte of the body changed,
    /// added or removed, or any one byte of `webhook-id`, `webhook-timestamp` or
    /// `webhook-signature` replaced by another, is refused.
    #[test]
    fn standard_refuses_any_single_byte_change_of_body_id_timestamp_or_signature(
        (secrets, who) in standard_secrets(),
        id in "msg_[A-Za-z0-9]{1,30}",
        ts in timestamp(),
        body in body(),
        field in 0_u8..4,
        change in change(),
        (_, at, x, digit) in byte_change(),
        tolerance in tolerance(),
    ) {
        prop_assert!(!secrets.is_empty());
        let v = StandardVerifier::new(&secrets);
        let signature = secrets[who.index(secrets.len())].sign(&id, ts, &body);
        let raw_ts = ts.to_string();
        let headers = StandardHeaders {
            id: Some(&id),
            timestamp: Some(&raw_ts),
            signature: Some(&signature),
        };
        prop_assert_eq!(v.verify(headers, &body, ts, tolerance), Ok((id.as_str(), ts)));
        let (got, what) = match field {
            0 => {
                let changed = apply(&change, &body);
                prop_assert_ne!(&changed, &body);
                (v.verify(headers, &changed, ts, tolerance).map(|(_, t)| t), "body")
            }
            1 => {
                let (changed, ..) = replace_ascii(&id, pick(0..id.len(), &at), x, false);
                let h = StandardHeaders { id: Some(&changed), ..headers };
                (v.verify(h, &body, ts, tolerance).map(|(_, t)| t), "id")
            }
            2 => {
                let (changed, ..) = replace_ascii(&raw_ts, pick(0..raw_ts.len(), &at), x, digit);
                let h = StandardHeaders { timestamp: Some(&changed), ..headers };
                (v.verify(h, &body, ts, tolerance).map(|(_, t)| t), "timestamp")
            }
            _ => {
                let (changed, ..) = replace_ascii(&signature, pick(0..signature.len(), &at), x, false);
                let h = StandardHeaders { signature: Some(&changed), ..headers };
                (v.verify(h, &body, ts, tolerance).map(|(_, t)| t), "signature")
            }
        };
        prop_assert!(got.is_err(), "a changed {} was accepted", what);
        if field == 0 {
            prop_assert_eq!(got, Err(SignatureError::Mismatch));
        }
    }
}

/// Exhaustive for one delivery of each scheme: every byte of the Stripe header and of the
/// Standard Webhooks timestamp and signature headers, replaced by every other ASCII byte. The
/// random properties above reach few of base64's last characters (whose low bits are padding)
/// or of hex's letters; this reaches all of them.
#[test]
fn every_single_byte_change_of_one_delivery_is_refused_exhaustively() {
    let ts = 1_700_000_000_i64;
    let body = br#"{"id":"evt_1","type":"invoice.paid","data":{}}"#;
    let stripe = stripe_verifier(&["whsec_exhaustive".to_owned()]);
    let header = stripe_scheme::header(&["whsec_exhaustive"], ts, body);
    assert_eq!(stripe.verify(Some(&header), body, ts, u64::MAX), Ok(ts));
    let signature_at = header.len() - 64;
    for i in 0..header.len() {
        for x in 1..=127_u8 {
            let (changed, old, new) = replace_ascii(&header, i, x, false);
            let got = stripe.verify(Some(&changed), body, ts, u64::MAX);
            let same_hex = i >= signature_at
                && old.is_ascii_hexdigit()
                && new.is_ascii_hexdigit()
                && old.eq_ignore_ascii_case(&new);
            assert_eq!(got.is_ok(), same_hex, "{changed:?}: {got:?}");
        }
    }

    let secret = StandardSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let standard = StandardVerifier::new([&secret]);
    let (id, raw_ts) = ("msg_exhaustive", ts.to_string());
    let signature = secret.sign(id, ts, body);
    let headers = StandardHeaders {
        id: Some(id),
        timestamp: Some(&raw_ts),
        signature: Some(&signature),
    };
    assert!(standard.verify(headers, body, ts, u64::MAX).is_ok());
    for (name, text) in [("timestamp", &raw_ts), ("signature", &signature)] {
        for i in 0..text.len() {
            for x in 1..=127_u8 {
                let (changed, ..) = replace_ascii(text, i, x, false);
                let h = if name == "timestamp" {
                    StandardHeaders {
                        timestamp: Some(&changed),
                        ..headers
                    }
                } else {
                    StandardHeaders {
                        signature: Some(&changed),
                        ..headers
                    }
                };
                let got = standard.verify(h, body, ts, u64::MAX);
                assert!(got.is_err(), "{name} {changed:?} accepted");
            }
        }
    }
}
