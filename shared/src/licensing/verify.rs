//! Offline verification of license files and revocation lists, with one distinct reason per
//! failure.
//!
//! Order of checks for a license file: decode (base64, trailing NULs stripped as Mattermost
//! does) -> length (more than the 256-byte signature) -> signature over the JSON with the
//! public key -> JSON -> revocation list -> validity window (with the grace period). When the
//! signature does not match, the unsigned JSON is only read to explain why: a `kid` naming
//! another key means "wrong key", an unreadable document means "truncated or corrupted",
//! anything else "tampered".

use super::format::{License, SIGNATURE_LEN};
use super::revocation::{RevocationList, RevocationReason};
use super::signer::PublicKey;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rsa::Pkcs1v15Sign;
use sha2::{Digest, Sha512};

/// Mattermost's grace period after `expires_at` (10 days): the license still verifies during
/// it, so a renewal paid a few days late never locks a customer out.
pub const GRACE_PERIOD_MS: i64 = 10 * 24 * 3600 * 1000;

/// Why a license file or a revocation list does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a license file: {0}")]
    Encoding(String),
    #[error("the file is truncated or corrupted")]
    Truncated,
    #[error("the signature does not match the content: the file was tampered with")]
    Tampered,
    #[error("signed by another key (kid {found}), not by this one (kid {expected})")]
    WrongKey { expected: String, found: String },
    #[error("the signed document is not a valid license: {0}")]
    Malformed(String),
    #[error("not valid before {starts_at} (ms since epoch)")]
    NotYetValid { starts_at: i64 },
    #[error("expired at {expires_at}; the grace period ended at {grace_ended_at} (ms since epoch)")]
    Expired {
        expires_at: i64,
        grace_ended_at: i64,
    },
    #[error("revoked at {revoked_at} (ms since epoch): {reason}")]
    Revoked { revoked_at: i64, reason: String },
    #[error(
        "suspended for non-payment since {since} (ms since epoch): a paid invoice brings a new license"
    )]
    Suspended { since: i64 },
    #[error("signed by a key the key set does not hold (kid {found})")]
    UnknownKey { found: String },
    #[error("issued at {issued_at} (ms since epoch), outside key {kid}'s signing window")]
    KeyNotValid { kid: String, issued_at: i64 },
}

impl VerifyError {
    /// A stable machine-readable code (admin `verify` answers, metrics).
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Encoding(_) => "encoding",
            VerifyError::Truncated => "truncated",
            VerifyError::Tampered => "tampered",
            VerifyError::WrongKey { .. } => "wrong_key",
            VerifyError::Malformed(_) => "malformed",
            VerifyError::NotYetValid { .. } => "not_yet_valid",
            VerifyError::Expired { .. } => "expired",
            VerifyError::Revoked { .. } => "revoked",
            VerifyError::Suspended { .. } => "suspended",
            VerifyError::UnknownKey { .. } => "unknown_key",
            VerifyError::KeyNotValid { .. } => "key_not_valid",
        }
    }
}

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a license file into (JSON, signature) without checking the signature.
pub fn split_file(file: &str) -> Result<(Vec<u8>, Vec<u8>), VerifyError> {
    let compact: String = file.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut raw = LENIENT.decode(compact.as_bytes()).map_err(|e| match e {
        base64::DecodeError::InvalidByte(..) => VerifyError::Encoding("not base64".into()),
        // A cut file ends in the middle of a base64 group.
        _ => VerifyError::Truncated,
    })?;
    while raw.last() == Some(&0) {
        raw.pop();
    }
    if raw.len() <= SIGNATURE_LEN {
        return Err(VerifyError::Truncated);
    }
    let sig = raw.split_off(raw.len() - SIGNATURE_LEN);
    Ok((raw, sig))
}

/// Whether `signature` is `key`'s RSASSA-PKCS1-v1_5 SHA-512 signature of `message`.
pub fn signature_valid(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    key.rsa()
        .verify(
            Pkcs1v15Sign::new::<Sha512>(),
            &Sha512::digest(message),
            signature,
        )
        .is_ok()
}

/// Verifies a license file at `now_ms` against `key` and, when given, a verified
/// revocation list. Returns the license when it is valid.
pub fn verify_license(
    file: &str,
    key: &PublicKey,
    revocations: Option<&RevocationList>,
    now_ms: i64,
) -> Result<License, VerifyError> {
    let (json, sig) = split_file(file)?;
    if !signature_valid(key, &json, &sig) {
        return Err(explain_bad_signature(&json, key));
    }
    let license: License =
        serde_json::from_slice(&json).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    if let Some(entry) = revocations
        .and_then(|r| r.find(&license.id))
        .filter(|e| now_ms >= e.revoked_at)
    {
        if entry.reason == RevocationReason::Suspended {
            return Err(VerifyError::Suspended {
                since: entry.revoked_at,
            });
        }
        return Err(VerifyError::Revoked {
            revoked_at: entry.revoked_at,
            reason: entry.reason.to_string(),
        });
    }
    if now_ms < license.starts_at {
        return Err(VerifyError::NotYetValid {
            starts_at: license.starts_at,
        });
    }
    let grace_ended_at = license.expires_at.saturating_add(GRACE_PERIOD_MS);
    if now_ms > grace_ended_at {
        return Err(VerifyError::Expired {
            expires_at: license.expires_at,
            grace_ended_at,
        });
    }
    Ok(license)
}

fn explain_bad_signature(json: &[u8], key: &PublicKey) -> VerifyError {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Err(_) => VerifyError::Truncated,
        Ok(doc) => match doc.get("kid").and_then(|k| k.as_str()) {
            Some(kid) if kid != key.kid() => VerifyError::WrongKey {
                expected: key.kid().to_owned(),
                found: kid.to_owned(),
            },
            _ => VerifyError::Tampered,
        },
    }
}

/// Verifies a published revocation list: `json` is the exact content of
/// `licenses/revoked.json`, `signature_b64` the content of `licenses/revoked.json.sig`.
pub fn verify_revocation_list(
    json: &[u8],
    signature_b64: &str,
    key: &PublicKey,
) -> Result<RevocationList, VerifyError> {
    let compact: String = signature_b64
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let sig = LENIENT
        .decode(compact.as_bytes())
        .map_err(|_| VerifyError::Encoding("revocation list signature is not base64".into()))?;
    if sig.len() != SIGNATURE_LEN {
        return Err(VerifyError::Truncated);
    }
    if !signature_valid(key, json, &sig) {
        return Err(explain_bad_signature(json, key));
    }
    serde_json::from_slice(json).map_err(|e| VerifyError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::format::{LicenseKey, encode_file};
    use super::super::revocation::{RevocationReason, RevokedLicense};
    use super::super::signer::{InProcessSigner, LicenseSigner, test_signer};
    use super::*;

    fn license(kid: &str) -> License {
        let key = LicenseKey {
            subscription_id: "sub_1".into(),
            period_start_ms: 1_000_000,
            quantity: 5,
            sku: "professional".into(),
            supersedes: None,
        };
        License {
            id: key.license_id(),
            issued_at: 1_000_000,
            starts_at: 1_000_000,
            expires_at: 2_000_000,
            customer: super::super::format::LicenseCustomer {
                id: "cus_1".into(),
                name: "Ada".into(),
                email: "ada@example.com".into(),
                company: "AE".into(),
            },
            features: super::super::sku::Sku::lookup("professional")
                .unwrap()
                .features(5),
            sku_name: "Mattermost Professional".into(),
            sku_short_name: "professional".into(),
            is_trial: false,
            is_gov_sku: false,
            is_seat_count_enforced: false,
            extra_users: 0,
            signup_jwt: None,
            kid: kid.into(),
            subscription_id: "sub_1".into(),
            supersedes: None,
        }
    }

    /// A license signed by `signer`, re-signed (as the minter does) while the signature ends
    /// in a zero byte, which Mattermost's file format cannot carry.
    async fn signed(signer: &InProcessSigner) -> (License, String) {
        let pk = signer.public_key().await.unwrap();
        let mut l = license(pk.kid());
        loop {
            let json = l.to_json().unwrap();
            let sig = signer.sign(&json).await.unwrap();
            if sig.last() != Some(&0) {
                return (l, encode_file(&json, &sig));
            }
            l.issued_at += 1;
        }
    }

    #[tokio::test]
    async fn round_trip_verifies() {
        let s = test_signer();
        let (l, file) = signed(&s).await;
        let pk = s.public_key().await.unwrap();
        assert_eq!(verify_license(&file, &pk, None, 1_500_000).unwrap(), l);
        // Line-wrapped files and trailing NULs (as Mattermost strips them) are fine.
        let wrapped: String = file
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
            .collect();
        assert!(verify_license(&wrapped, &pk, None, 1_500_000).is_ok());
    }

    #[tokio::test]
    async fn each_failure_has_its_reason() {
        let s = test_signer();
        let pk = s.public_key().await.unwrap();
        let (_, file) = signed(&s).await;
        let now = 1_500_000;

        // Tampered: one seat more in the JSON, signature kept.
        let (json, sig) = split_file(&file).unwrap();
        let forged = String::from_utf8(json)
            .unwrap()
            .replace("\"users\":5", "\"users\":500");
        let tampered = encode_file(forged.as_bytes(), &sig);
        assert_eq!(
            verify_license(&tampered, &pk, None, now),
            Err(VerifyError::Tampered)
        );

        // Truncated: cut anywhere.
        for cut in [10, file.len() / 2, file.len() - 7] {
            assert_eq!(
                verify_license(&file[..cut], &pk, None, now)
                    .unwrap_err()
                    .code(),
                "truncated",
                "cut at {cut}"
            );
        }
        assert_eq!(
            verify_license("", &pk, None, now),
            Err(VerifyError::Truncated)
        );
        assert_eq!(
            verify_license("%%%%", &pk, None, now).unwrap_err().code(),
            "encoding"
        );

        // Wrong key: signed by another key, checked with ours.
        let other = InProcessSigner::generate().unwrap();
        let (_, foreign) = signed(&other).await;
        assert!(matches!(
            verify_license(&foreign, &pk, None, now),
            Err(VerifyError::WrongKey { .. })
        ));

        // Expired: still fine within the grace period, not after it.
        assert!(verify_license(&file, &pk, None, 2_000_000 + GRACE_PERIOD_MS).is_ok());
        assert_eq!(
            verify_license(&file, &pk, None, 2_000_001 + GRACE_PERIOD_MS),
            Err(VerifyError::Expired {
                expires_at: 2_000_000,
                grace_ended_at: 2_000_000 + GRACE_PERIOD_MS
            })
        );
        assert_eq!(
            verify_license(&file, &pk, None, 999_999)
                .unwrap_err()
                .code(),
            "not_yet_valid"
        );

        // Revoked.
        let l = license(pk.kid());
        let list = RevocationList {
            kid: pk.kid().into(),
            issued_at: now,
            revoked: vec![RevokedLicense {
                id: l.id.clone(),
                customer_id: "cus_1".into(),
                subscription_id: "sub_1".into(),
                revoked_at: 1_400_000,
                reason: RevocationReason::SubscriptionCanceled,
            }],
        };
        assert_eq!(
            verify_license(&file, &pk, Some(&list), now),
            Err(VerifyError::Revoked {
                revoked_at: 1_400_000,
                reason: "subscription_canceled".into()
            })
        );
        let empty = RevocationList {
            revoked: vec![],
            ..list
        };
        assert!(verify_license(&file, &pk, Some(&empty), now).is_ok());
    }
}
