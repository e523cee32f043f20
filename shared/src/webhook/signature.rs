//! What can be wrong with a webhook signature, common to both schemes.
//!
//! One variant per failure (like svix's verifier), each with a short stable `reason` used as
//! the metric dimension and in the log, and a message safe to send back to the sender: it
//! never contains a secret, a computed signature or the body.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 keyed once per secret at cold start; cloned per verification so the key
/// schedule (two compression blocks) is not redone for every event.
pub(crate) type KeyedMac = Hmac<Sha256>;

/// A keyed HMAC for `key` (HMAC accepts keys of any length, so this cannot fail).
pub(crate) fn keyed(key: &[u8]) -> KeyedMac {
    KeyedMac::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Why a signature was refused. Every variant answers 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is absent (or not visible ASCII).
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// The header does not have the scheme's shape.
    #[error("malformed {0} header")]
    MalformedHeader(&'static str),
    /// The Stripe header has no `t=` element.
    #[error("signature header has no timestamp (t=)")]
    NoTimestamp,
    /// The timestamp is not an integer number of seconds.
    #[error("signature timestamp is not a number")]
    BadTimestamp,
    /// No `v1` signature at all (only `v0`, `v1a` or unknown schemes): downgrade protection.
    #[error("no v1 signature in the signature header")]
    NoV1Signature,
    /// Older than the tolerance: a replay, or a delivery held too long.
    #[error("signature timestamp is older than the {tolerance_secs} s tolerance")]
    TooOld { tolerance_secs: u64 },
    /// Newer than the tolerance: the sender's clock is off, or a forged timestamp.
    #[error("signature timestamp is more than {tolerance_secs} s in the future")]
    TooNew { tolerance_secs: u64 },
    /// Well-formed, fresh, but no signature matches any configured secret (wrong secret,
    /// tampered or re-serialised body).
    #[error("no signature matches the payload")]
    Mismatch,
}

impl SignatureError {
    /// A stable snake_case code: metric dimension and log field.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader(_) => "missing_signature_header",
            SignatureError::MalformedHeader(_) => "malformed_signature_header",
            SignatureError::NoTimestamp => "no_timestamp",
            SignatureError::BadTimestamp => "bad_timestamp",
            SignatureError::NoV1Signature => "no_v1_signature",
            SignatureError::TooOld { .. } => "timestamp_too_old",
            SignatureError::TooNew { .. } => "timestamp_too_new",
            SignatureError::Mismatch => "signature_mismatch",
        }
    }
}

/// Checks `|now - timestamp| <= tolerance` (both directions, like async-stripe and the
/// Standard Webhooks reference libraries). Exactly `tolerance` seconds away is accepted.
pub(crate) fn check_tolerance(
    timestamp: i64,
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let tolerance = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
    let age = now.saturating_sub(timestamp);
    if age > tolerance {
        Err(SignatureError::TooOld { tolerance_secs })
    } else if age < -tolerance {
        Err(SignatureError::TooNew { tolerance_secs })
    } else {
        Ok(())
    }
}

/// Parses a decimal unix timestamp (digits only, optional leading `-` refused: senders sign
/// with the current time).
pub(crate) fn parse_timestamp(raw: &str) -> Result<i64, SignatureError> {
    let raw = raw.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::BadTimestamp);
    }
    raw.parse::<i64>().map_err(|_| SignatureError::BadTimestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_edges_are_inclusive() {
        assert_eq!(check_tolerance(1000, 1300, 300), Ok(()));
        assert_eq!(check_tolerance(1000, 700, 300), Ok(()));
        assert_eq!(
            check_tolerance(1000, 1301, 300),
            Err(SignatureError::TooOld {
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check_tolerance(1000, 699, 300),
            Err(SignatureError::TooNew {
                tolerance_secs: 300
            })
        );
        assert!(check_tolerance(i64::MIN, i64::MAX, 300).is_err());
    }

    #[test]
    fn timestamps_are_plain_digits() {
        assert_eq!(parse_timestamp("1700000000"), Ok(1_700_000_000));
        for bad in [
            "",
            " ",
            "abc",
            "-5",
            "1e9",
            "17000000000000000000000",
            "12.5",
            "+12",
        ] {
            assert_eq!(
                parse_timestamp(bad),
                Err(SignatureError::BadTimestamp),
                "{bad:?}"
            );
        }
    }
}

#[cfg(test)]
mod props_tests;
