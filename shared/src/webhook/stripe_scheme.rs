//! Stripe's `Stripe-Signature` scheme.
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`; the signed payload is
//! the bytes `"{t}." + raw body`, HMAC-SHA256 keyed with the endpoint secret **as its raw UTF-8
//! bytes** (`whsec_...` is not decoded), lowercase hex. Any `v1` may match any configured secret
//! (rotation sends one `v1` per live secret; platform and Connect endpoints have their own
//! secrets). `v0` and unknown schemes are ignored, so a header with only `v0` fails. The
//! timestamp must be within the tolerance in both directions. Comparison is constant time.

use super::signature::{KeyedMac, SignatureError, check_tolerance, keyed, parse_timestamp};
use crate::config::Secret;
use hmac::Mac;
use subtle::ConstantTimeEq;

/// The header name (HTTP headers are case-insensitive; Lambda lowercases them).
pub const HEADER: &str = "stripe-signature";

/// Verifies Stripe signatures against every configured endpoint secret.
#[derive(Clone)]
pub struct StripeVerifier {
    keys: Vec<KeyedMac>,
}

impl std::fmt::Debug for StripeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeVerifier")
            .field("secrets", &self.keys.len())
            .finish()
    }
}

impl StripeVerifier {
    /// One verifier for all of `secrets` (`whsec_...`, used as raw bytes).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret<String>>) -> Self {
        Self {
            keys: secrets
                .into_iter()
                .map(|s| keyed(s.expose().as_bytes()))
                .collect(),
        }
    }

    /// Number of configured secrets (a verifier with none refuses everything).
    pub fn secrets(&self) -> usize {
        self.keys.len()
    }

    /// Verifies `header` for `body` at `now` (unix seconds) and returns the signed timestamp.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
        tolerance_secs: u64,
    ) -> Result<i64, SignatureError> {
        let header = header.ok_or(SignatureError::MissingHeader("Stripe-Signature"))?;
        let parsed = parse_header(header)?;
        let timestamp = parse_timestamp(parsed.timestamp)?;
        if parsed.v1.is_empty() {
            return Err(SignatureError::NoV1Signature);
        }
        check_tolerance(timestamp, now, tolerance_secs)?;
        // Candidates that are not 32 bytes of hex can never match: skip them, the others
        // still get their chance.
        let candidates: Vec<[u8; 32]> = parsed
            .v1
            .iter()
            .filter_map(|hex_sig| decode_hex32(hex_sig))
            .collect();
        let ts = timestamp.to_string();
        let ts = ts.as_bytes();
        for key in &self.keys {
            let mut mac = key.clone();
            mac.update(ts);
            mac.update(b".");
            mac.update(body);
            let expected = mac.finalize().into_bytes();
            // Check every candidate so the time taken does not depend on which one matched.
            let mut matched = subtle::Choice::from(0u8);
            for candidate in &candidates {
                matched |= expected.as_slice().ct_eq(candidate.as_slice());
            }
            if bool::from(matched) {
                return Ok(timestamp);
            }
        }
        Err(SignatureError::Mismatch)
    }
}

struct ParsedHeader<'a> {
    timestamp: &'a str,
    v1: Vec<&'a str>,
}

fn parse_header(header: &str) -> Result<ParsedHeader<'_>, SignatureError> {
    const NAME: &str = "Stripe-Signature";
    let mut timestamp = None;
    let mut v1 = Vec::new();
    if header.trim().is_empty() {
        return Err(SignatureError::MalformedHeader(NAME));
    }
    for item in header.split(',') {
        let item = item.trim();
        let Some((key, value)) = item.split_once('=') else {
            return Err(SignatureError::MalformedHeader(NAME));
        };
        match key.trim() {
            "" => return Err(SignatureError::MalformedHeader(NAME)),
            // The first t counts, like stripe-node.
            "t" => {
                timestamp.get_or_insert(value.trim());
            }
            "v1" => v1.push(value.trim()),
            // v0 (test-only) and unknown schemes are ignored: downgrade protection.
            _ => {}
        }
    }
    Ok(ParsedHeader {
        timestamp: timestamp.ok_or(SignatureError::NoTimestamp)?,
        v1,
    })
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// The `v1` signature (lowercase hex) of `body` signed at `timestamp` with `secret` — what
/// Stripe computes. For tests, sample events and local tools.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = keyed(secret.as_bytes());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A complete `Stripe-Signature` header value with one `v1` per secret, as Stripe sends it
/// during a secret roll.
pub fn header(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut out = format!("t={timestamp}");
    for s in secrets {
        out.push_str(",v1=");
        out.push_str(&sign(s, timestamp, body));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const SECRET: &str = "whsec_test_secret_one";
    const OTHER: &str = "whsec_test_secret_two";
    const BODY: &[u8] =
        br#"{"id":"evt_1","object":"event","type":"customer.created","data":{"object":{}}}"#;

    fn verifier(secrets: &[&str]) -> StripeVerifier {
        let owned: Vec<Secret<String>> = secrets
            .iter()
            .map(|s| Secret::new((*s).to_owned()))
            .collect();
        StripeVerifier::new(&owned)
    }

    fn check(
        v: &StripeVerifier,
        header: &str,
        body: &[u8],
        now: i64,
    ) -> Result<i64, SignatureError> {
        v.verify(Some(header), body, now, 300)
    }

    /// A vector derived by hand from the published algorithm: HMAC-SHA256(key = secret bytes,
    /// message = "{t}.{body}"), computed independently with Python's hmac module:
    /// `hmac.new(b"whsec_test_secret_one", b"1700000000." + body, "sha256").hexdigest()`.
    #[test]
    fn known_vector() {
        let sig = sign(SECRET, NOW, BODY);
        assert_eq!(sig, KNOWN_SIG);
        assert_eq!(
            check(
                &verifier(&[SECRET]),
                &format!("t={NOW},v1={KNOWN_SIG}"),
                BODY,
                NOW
            ),
            Ok(NOW)
        );
    }
    const KNOWN_SIG: &str = "91fc529f4e1f0bbf4cefc4e0c2af6c690b007f210263e300909f981b7c57f506";

    #[test]
    fn rotation_any_v1_matches_any_secret() {
        // Stripe sends one v1 per live secret; we may hold either or both.
        let both = header(&[OTHER, SECRET], NOW, BODY);
        assert_eq!(check(&verifier(&[SECRET]), &both, BODY, NOW), Ok(NOW));
        assert_eq!(check(&verifier(&[OTHER]), &both, BODY, NOW), Ok(NOW));
        assert_eq!(
            check(&verifier(&["whsec_old", SECRET]), &both, BODY, NOW),
            Ok(NOW)
        );
        // One v1 but two configured secrets (platform + Connect): the second one matches.
        let one = header(&[OTHER], NOW, BODY);
        assert_eq!(check(&verifier(&[SECRET, OTHER]), &one, BODY, NOW), Ok(NOW));
        // Neither secret.
        assert_eq!(
            check(&verifier(&["whsec_a", "whsec_b"]), &both, BODY, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tolerance_edges_both_directions() {
        let v = verifier(&[SECRET]);
        let h = header(&[SECRET], NOW, BODY);
        assert_eq!(check(&v, &h, BODY, NOW + 300), Ok(NOW));
        assert_eq!(check(&v, &h, BODY, NOW - 300), Ok(NOW));
        assert_eq!(
            check(&v, &h, BODY, NOW + 301),
            Err(SignatureError::TooOld {
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(&v, &h, BODY, NOW - 301),
            Err(SignatureError::TooNew {
                tolerance_secs: 300
            })
        );
        // Tolerance is configurable.
        assert_eq!(v.verify(Some(&h), BODY, NOW + 301, 600), Ok(NOW));
    }

    #[test]
    fn bad_headers() {
        let v = verifier(&[SECRET]);
        let sig = sign(SECRET, NOW, BODY);
        assert_eq!(
            v.verify(None, BODY, NOW, 300),
            Err(SignatureError::MissingHeader("Stripe-Signature"))
        );
        for malformed in [
            "",
            "   ",
            "garbage",
            &format!("t={NOW},={sig}"),
            &format!("t={NOW},v1{sig}"),
        ] {
            assert_eq!(
                check(&v, malformed, BODY, NOW),
                Err(SignatureError::MalformedHeader("Stripe-Signature")),
                "{malformed:?}"
            );
        }
        assert_eq!(
            check(&v, &format!("v1={sig}"), BODY, NOW),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            check(&v, &format!("t=soon,v1={sig}"), BODY, NOW),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            check(&v, &format!("t=,v1={sig}"), BODY, NOW),
            Err(SignatureError::BadTimestamp)
        );
        // A wrong separator leaves the timestamp unreadable.
        assert_eq!(
            check(&v, &format!("t={NOW};v1={sig}"), BODY, NOW),
            Err(SignatureError::BadTimestamp)
        );
        // Only v0 (even a correct one): refused, scheme downgrade protection.
        assert_eq!(
            check(&v, &format!("t={NOW},v0={sig}"), BODY, NOW),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            check(&v, &format!("t={NOW},v2={sig}"), BODY, NOW),
            Err(SignatureError::NoV1Signature)
        );
        // v0 and unknown schemes beside a good v1 are ignored.
        assert_eq!(
            check(&v, &format!("t={NOW},v0=abc,v9=zz,v1={sig}"), BODY, NOW),
            Ok(NOW)
        );
        // Spaces around elements are tolerated.
        assert_eq!(check(&v, &format!("t={NOW}, v1={sig}"), BODY, NOW), Ok(NOW));
        // A v1 that is not hex, or the wrong length, never matches but does not hide a good one.
        assert_eq!(
            check(&v, &format!("t={NOW},v1=zz"), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&v, &format!("t={NOW},v1={}", &sig[..62]), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&v, &format!("t={NOW},v1=zz,v1={sig}"), BODY, NOW),
            Ok(NOW)
        );
        // Uppercase hex is decoded the same (hex decoding is case-insensitive).
        assert_eq!(
            check(&v, &format!("t={NOW},v1={}", sig.to_uppercase()), BODY, NOW),
            Ok(NOW)
        );
    }

    #[test]
    fn wrong_secret_tampered_or_reserialised_body() {
        let v = verifier(&[SECRET]);
        let h = header(&["whsec_wrong"], NOW, BODY);
        assert_eq!(check(&v, &h, BODY, NOW), Err(SignatureError::Mismatch));
        let good = header(&[SECRET], NOW, BODY);
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 0x01;
        assert_eq!(
            check(&v, &good, &tampered, NOW),
            Err(SignatureError::Mismatch)
        );
        let reserialised =
            serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(BODY).unwrap())
                .unwrap();
        assert_eq!(
            check(&v, &good, &reserialised, NOW),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is part of what is signed.
        let shifted = good.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert_eq!(
            check(&v, &shifted, BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        // No secret configured: nothing verifies.
        assert_eq!(
            check(&verifier(&[]), &good, BODY, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn debug_never_shows_keys() {
        assert_eq!(
            format!("{:?}", verifier(&[SECRET])),
            "StripeVerifier { secrets: 1 }"
        );
    }
}
