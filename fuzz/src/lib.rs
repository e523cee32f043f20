//! What the fuzz targets share: the local test secrets the sample events in `events/` are
//! signed with, their clock, a way to run blapi's async ports (in-memory fakes, which never
//! wait) without a runtime, and the small text formats the targets split their input with
//! (so a seed corpus can be written from the sample events without any encoding).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// The clock every signed sample in `events/` was signed at (unix seconds).
pub const NOW: i64 = 1_700_000_000;
/// The intake's signature tolerance (`WEBHOOK_TOLERANCE_SECS` default).
pub const TOLERANCE_SECS: u64 = 300;
/// The Stripe endpoint secrets: the local one the samples are signed with and a second one
/// (a secret roll).
pub const STRIPE_SECRETS: [&str; 2] =
    ["whsec_local_stripe_test_secret", "whsec_fuzz_rolled_secret"];
/// The Standard Webhooks secrets of the first-party sources (local test values).
pub const PORTAL_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const TELEMETRY_SECRET: &str = "whsec_dGVsZW1ldHJ5LXRlc3Qtc2VjcmV0LTAxMjM0NTY3";

/// Runs a future of the in-memory fakes to completion. They never wait on anything, so a
/// future still pending after many polls is a bug in the harness (or a real deadlock).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("an in-memory future did not complete");
}

/// Splits `data` at the first `n` newlines: `n` lines (fewer when the input has fewer) and
/// the rest (everything after the `n`-th newline, or nothing).
pub fn lines(data: &[u8], n: usize) -> (Vec<&[u8]>, &[u8]) {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() < n {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => {
                out.push(rest);
                return (out, &[]);
            }
        }
    }
    (out, rest)
}

/// One byte changed (or one appended to an empty input): a body that is certainly not `body`.
pub fn tampered(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    if out.is_empty() {
        out.push(b'x');
    } else {
        let i = body.len().wrapping_mul(31) % body.len();
        out[i] ^= 0x01;
    }
    out
}

/// Whether two JSON values are equal, floats within a few units in the last place:
/// `serde_json` (without its `float_roundtrip` feature, as blapi builds it) may parse a long
/// decimal one unit off, so a float can move by that much each time a value is written and
/// read again. Everything else must be exactly equal.
pub fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
