//! The Standard Webhooks scheme (standard-webhooks spec, as Svix implements it), used by our
//! first-party sources.
//!
//! Headers `webhook-id` (the same on every retry: the dedupe key), `webhook-timestamp` (unix
//! seconds of the attempt) and `webhook-signature`: space-separated `v1,<base64>` entries, one
//! per live secret (rotation); `v1a,` (ed25519) and other schemes are ignored. Signed content
//! `"{id}.{timestamp}.{body}"`, HMAC-SHA256 keyed with the secret's **base64-decoded** bytes
//! (`whsec_` + base64 of 24..64 random bytes). Tolerance in both directions; constant-time
//! compare.

use super::signature::{KeyedMac, SignatureError, check_tolerance, keyed, parse_timestamp};
use crate::config::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::Mac;
use subtle::ConstantTimeEq;

/// Header carrying the message id.
pub const ID_HEADER: &str = "webhook-id";
/// Header carrying the attempt's unix timestamp.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header carrying the signatures.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The secret's prefix.
pub const SECRET_PREFIX: &str = "whsec_";

/// A Standard Webhooks secret that did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret is not base64 after the whsec_ prefix")]
    NotBase64,
    #[error("secret decodes to {0} bytes; Standard Webhooks secrets are 24 to 64 bytes")]
    BadLength(usize),
}

/// The decoded key of a `whsec_...` secret. Never printed.
#[derive(Clone)]
pub struct StandardSecret(Secret<Vec<u8>>);

impl std::fmt::Debug for StandardSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StandardSecret([redacted])")
    }
}

impl StandardSecret {
    /// Parses `whsec_<base64>` (the prefix is optional, as in the reference libraries).
    pub fn parse(raw: &str) -> Result<Self, SecretError> {
        let b64 = raw.trim().strip_prefix(SECRET_PREFIX).unwrap_or(raw.trim());
        let key = STANDARD.decode(b64).map_err(|_| SecretError::NotBase64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        Ok(Self(Secret::new(key)))
    }

    /// The `v1,<base64>` signature of `body` for message `id` at `timestamp`. For tests,
    /// sample events and senders.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = signed(keyed(self.0.expose()), id, timestamp, body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

fn signed(mut mac: KeyedMac, id: &str, timestamp: i64, body: &[u8]) -> KeyedMac {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The three headers of a delivery, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Verifies Standard Webhooks signatures for one source against all its secrets.
#[derive(Clone)]
pub struct StandardVerifier {
    keys: Vec<KeyedMac>,
}

impl std::fmt::Debug for StandardVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandardVerifier")
            .field("secrets", &self.keys.len())
            .finish()
    }
}

impl StandardVerifier {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a StandardSecret>) -> Self {
        Self {
            keys: secrets.into_iter().map(|s| keyed(s.0.expose())).collect(),
        }
    }

    /// Number of configured secrets.
    pub fn secrets(&self) -> usize {
        self.keys.len()
    }

    /// Verifies a delivery at `now` (unix seconds); returns the message id and timestamp.
    pub fn verify<'h>(
        &self,
        headers: StandardHeaders<'h>,
        body: &[u8],
        now: i64,
        tolerance_secs: u64,
    ) -> Result<(&'h str, i64), SignatureError> {
        let id = headers
            .id
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(SignatureError::MissingHeader(ID_HEADER))?;
        let raw_ts = headers
            .timestamp
            .ok_or(SignatureError::MissingHeader(TIMESTAMP_HEADER))?;
        let raw_sig = headers
            .signature
            .ok_or(SignatureError::MissingHeader(SIGNATURE_HEADER))?;
        let timestamp = parse_timestamp(raw_ts)?;
        let candidates = parse_signatures(raw_sig)?;
        check_tolerance(timestamp, now, tolerance_secs)?;
        for key in &self.keys {
            let expected = signed(key.clone(), id, timestamp, body)
                .finalize()
                .into_bytes();
            let mut matched = subtle::Choice::from(0u8);
            for candidate in &candidates {
                matched |= expected.as_slice().ct_eq(candidate.as_slice());
            }
            if bool::from(matched) {
                return Ok((id, timestamp));
            }
        }
        Err(SignatureError::Mismatch)
    }
}

/// The decoded `v1` signatures. Entries without a `,` are malformed; a header with no
/// well-formed entry is malformed; one with entries but no `v1` has no v1 signature.
/// A `v1` that does not decode to 32 bytes can never match and is skipped.
fn parse_signatures(header: &str) -> Result<Vec<[u8; 32]>, SignatureError> {
    let mut wellformed = 0usize;
    let mut v1_seen = false;
    let mut out = Vec::new();
    for entry in header.split_ascii_whitespace() {
        let Some((version, sig)) = entry.split_once(',') else {
            continue;
        };
        if version.is_empty() || sig.is_empty() {
            continue;
        }
        wellformed += 1;
        if version != "v1" {
            continue;
        }
        v1_seen = true;
        let mut buf = [0u8; 32];
        // Longer values fail to fit, shorter ones decode to fewer bytes: both skipped.
        if matches!(STANDARD.decode_slice(sig, &mut buf), Ok(32)) {
            out.push(buf);
        }
    }
    if wellformed == 0 {
        return Err(SignatureError::MalformedHeader(SIGNATURE_HEADER));
    }
    if !v1_seen {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks reference test vector (standard-webhooks libraries' tests).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    const OTHER_SECRET: &str = "whsec_dGVsZW1ldHJ5LXRlc3Qtc2VjcmV0LTAxMjM0NTY3";

    fn secret(s: &str) -> StandardSecret {
        StandardSecret::parse(s).unwrap()
    }

    fn verifier(secrets: &[&str]) -> StandardVerifier {
        let parsed: Vec<StandardSecret> = secrets.iter().map(|s| secret(s)).collect();
        StandardVerifier::new(&parsed)
    }

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> StandardHeaders<'a> {
        StandardHeaders {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn published_vector() {
        assert_eq!(
            secret(SPEC_SECRET).sign(SPEC_ID, SPEC_TS, SPEC_BODY),
            SPEC_SIG
        );
        let ts = SPEC_TS.to_string();
        assert_eq!(
            verifier(&[SPEC_SECRET]).verify(
                headers(SPEC_ID, &ts, SPEC_SIG),
                SPEC_BODY,
                SPEC_TS,
                300
            ),
            Ok((SPEC_ID, SPEC_TS))
        );
    }

    #[test]
    fn secret_parsing() {
        // Without the prefix too, like the reference libraries.
        assert!(StandardSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert_eq!(
            StandardSecret::parse("whsec_!!!").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            StandardSecret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::BadLength(5)
        );
        assert_eq!(
            format!("{:?}", secret(SPEC_SECRET)),
            "StandardSecret([redacted])"
        );
        assert_eq!(
            format!("{:?}", verifier(&[SPEC_SECRET])),
            "StandardVerifier { secrets: 1 }"
        );
    }

    #[test]
    fn rotation_two_v1_two_secrets() {
        let (a, b) = (secret(SPEC_SECRET), secret(OTHER_SECRET));
        let ts = SPEC_TS.to_string();
        let both = format!(
            "{} {}",
            b.sign(SPEC_ID, SPEC_TS, SPEC_BODY),
            a.sign(SPEC_ID, SPEC_TS, SPEC_BODY)
        );
        for v in [
            verifier(&[SPEC_SECRET]),
            verifier(&[OTHER_SECRET]),
            verifier(&[OTHER_SECRET, SPEC_SECRET]),
        ] {
            assert!(
                v.verify(headers(SPEC_ID, &ts, &both), SPEC_BODY, SPEC_TS, 300)
                    .is_ok()
            );
        }
        // One signature, the second configured secret matches it.
        let one = b.sign(SPEC_ID, SPEC_TS, SPEC_BODY);
        assert!(
            verifier(&[SPEC_SECRET, OTHER_SECRET])
                .verify(headers(SPEC_ID, &ts, &one), SPEC_BODY, SPEC_TS, 300)
                .is_ok()
        );
        // v1a (ed25519) and unknown entries beside it are ignored.
        let mixed = format!("v1a,AAAA v2,xyz {SPEC_SIG}");
        assert!(
            verifier(&[SPEC_SECRET])
                .verify(headers(SPEC_ID, &ts, &mixed), SPEC_BODY, SPEC_TS, 300)
                .is_ok()
        );
    }

    #[test]
    fn tolerance_edges() {
        let v = verifier(&[SPEC_SECRET]);
        let ts = SPEC_TS.to_string();
        let h = headers(SPEC_ID, &ts, SPEC_SIG);
        assert!(v.verify(h, SPEC_BODY, SPEC_TS + 300, 300).is_ok());
        assert!(v.verify(h, SPEC_BODY, SPEC_TS - 300, 300).is_ok());
        assert_eq!(
            v.verify(h, SPEC_BODY, SPEC_TS + 301, 300),
            Err(SignatureError::TooOld {
                tolerance_secs: 300
            })
        );
        assert_eq!(
            v.verify(h, SPEC_BODY, SPEC_TS - 301, 300),
            Err(SignatureError::TooNew {
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn bad_inputs() {
        let v = verifier(&[SPEC_SECRET]);
        let ts = SPEC_TS.to_string();
        let at =
            |h: StandardHeaders<'_>, body: &[u8]| v.verify(h, body, SPEC_TS, 300).map(|(_, t)| t);
        let mut h = headers(SPEC_ID, &ts, SPEC_SIG);
        h.id = None;
        assert_eq!(
            at(h, SPEC_BODY),
            Err(SignatureError::MissingHeader(ID_HEADER))
        );
        h.id = Some("  ");
        assert_eq!(
            at(h, SPEC_BODY),
            Err(SignatureError::MissingHeader(ID_HEADER))
        );
        let mut h = headers(SPEC_ID, &ts, SPEC_SIG);
        h.timestamp = None;
        assert_eq!(
            at(h, SPEC_BODY),
            Err(SignatureError::MissingHeader(TIMESTAMP_HEADER))
        );
        let mut h = headers(SPEC_ID, &ts, SPEC_SIG);
        h.signature = None;
        assert_eq!(
            at(h, SPEC_BODY),
            Err(SignatureError::MissingHeader(SIGNATURE_HEADER))
        );
        assert_eq!(
            at(headers(SPEC_ID, "later", SPEC_SIG), SPEC_BODY),
            Err(SignatureError::BadTimestamp)
        );
        for malformed in ["", "   ", "garbage", "v1", "v1, ,x"] {
            assert_eq!(
                at(headers(SPEC_ID, &ts, malformed), SPEC_BODY),
                Err(SignatureError::MalformedHeader(SIGNATURE_HEADER)),
                "{malformed:?}"
            );
        }
        assert_eq!(
            at(
                headers(
                    SPEC_ID,
                    &ts,
                    "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
                ),
                SPEC_BODY
            ),
            Err(SignatureError::NoV1Signature)
        );
        // Not base64 / wrong length: never matches.
        assert_eq!(
            at(headers(SPEC_ID, &ts, "v1,@@@@"), SPEC_BODY),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            at(headers(SPEC_ID, &ts, "v1,AAAA"), SPEC_BODY),
            Err(SignatureError::Mismatch)
        );
        // Wrong secret, tampered body, re-serialised body, other id, other timestamp.
        let wrong = secret(OTHER_SECRET).sign(SPEC_ID, SPEC_TS, SPEC_BODY);
        assert_eq!(
            at(headers(SPEC_ID, &ts, &wrong), SPEC_BODY),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            at(headers(SPEC_ID, &ts, SPEC_SIG), br#"{"test": 2432232315}"#),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            at(headers(SPEC_ID, &ts, SPEC_SIG), br#"{"test":2432232314}"#),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            at(headers("msg_other", &ts, SPEC_SIG), SPEC_BODY),
            Err(SignatureError::Mismatch)
        );
        let ts2 = (SPEC_TS + 1).to_string();
        assert_eq!(
            at(headers(SPEC_ID, &ts2, SPEC_SIG), SPEC_BODY),
            Err(SignatureError::Mismatch)
        );
    }
}
