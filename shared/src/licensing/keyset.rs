//! The published key set: every license-signing public key with its `kid` and validity, at
//! `licenses/keys.json`. Signing keys rotate (`blapi-ops license rotate-key`); licenses live
//! for a year or more, so a verifier holds the whole set and picks the key a file names.
//!
//! Validity is about *issuing*: a key signs what is issued from its `not_before` until its
//! `not_after` (the moment the next key took over; `None` while it is current). A license
//! whose `issued_at` falls outside its key's window is refused (`key_not_valid`): a retired
//! key that leaked cannot mint new licenses. The window is widened by [`ISSUE_SKEW_MS`] on
//! both sides for the clocks of the signer and the operator who rotated.
//!
//! Rotation (see `blapi-ops`): create the key, [`KeySet::add`] it (the current key retires at
//! that moment), publish the set, then point the signing alias at the new key. A rerun after
//! an interruption finds its key already in the set and only finishes the remaining steps.

use super::format::License;
use super::revocation::RevocationList;
use super::signer::PublicKey;
use super::verify::{
    VerifyError, split_file, verify_license, verify_revocation_list as verify_list,
};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The S3 key of the published key set.
pub const KEY_SET_KEY: &str = "licenses/keys.json";

/// Clock tolerance around a key's window (5 minutes).
pub const ISSUE_SKEW_MS: i64 = 5 * 60 * 1000;

/// One public key of the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub kid: String,
    pub public_key_pem: String,
    /// Signs licenses issued from this moment (ms since epoch).
    pub not_before: i64,
    /// ... until this moment, when the next key took over (`None`: the current key).
    pub not_after: Option<i64>,
}

/// Every signing key, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    pub keys: Vec<KeyEntry>,
}

impl KeySet {
    /// Parses a published set, checking every PEM and that each `kid` is its key's.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let set: KeySet =
            serde_json::from_slice(bytes).map_err(|e| Error::Invalid(format!("key set: {e}")))?;
        for k in &set.keys {
            let pk = PublicKey::from_pem(&k.public_key_pem)?;
            if pk.kid() != k.kid {
                return Err(Error::Invalid(format!(
                    "key set: entry {} holds the key {}",
                    k.kid,
                    pk.kid()
                )));
            }
        }
        Ok(set)
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(format!("key set: {e}")))
    }

    pub fn find(&self, kid: &str) -> Option<&KeyEntry> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The key that signs now.
    pub fn current(&self) -> Option<&KeyEntry> {
        self.keys.iter().rev().find(|k| k.not_after.is_none())
    }

    /// Adds `key`, current from `now`, retiring the current one at `now`. Returns false (and
    /// changes nothing) when the set already holds it: adding is idempotent.
    pub fn add(&mut self, key: &PublicKey, now: i64) -> Result<bool> {
        if self.find(key.kid()).is_some() {
            return Ok(false);
        }
        for k in self.keys.iter_mut().filter(|k| k.not_after.is_none()) {
            k.not_after = Some(now);
        }
        self.keys.push(KeyEntry {
            kid: key.kid().to_owned(),
            public_key_pem: key.to_pem()?,
            not_before: now,
            not_after: None,
        });
        Ok(true)
    }

    /// The public key named `kid`.
    pub fn key(&self, kid: &str) -> std::result::Result<(PublicKey, &KeyEntry), VerifyError> {
        let entry = self.find(kid).ok_or_else(|| VerifyError::UnknownKey {
            found: kid.to_owned(),
        })?;
        let pk = PublicKey::from_pem(&entry.public_key_pem)
            .map_err(|e| VerifyError::Malformed(format!("key {kid}: {e}")))?;
        Ok((pk, entry))
    }
}

/// The `kid` a signed document names (read before its signature is checked, only to choose
/// the key that checks it).
fn named_kid(json: &[u8]) -> std::result::Result<String, VerifyError> {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|d| d.get("kid").and_then(|k| k.as_str()).map(str::to_owned))
        .ok_or(VerifyError::Truncated)
}

fn within(entry: &KeyEntry, issued_at: i64) -> std::result::Result<(), VerifyError> {
    let from = entry.not_before.saturating_sub(ISSUE_SKEW_MS);
    let until = entry
        .not_after
        .map_or(i64::MAX, |t| t.saturating_add(ISSUE_SKEW_MS));
    if issued_at < from || issued_at > until {
        return Err(VerifyError::KeyNotValid {
            kid: entry.kid.clone(),
            issued_at,
        });
    }
    Ok(())
}

/// Verifies a license file against the key set: the key its `kid` names, within that key's
/// window, then everything [`verify_license`] checks.
pub fn verify_license_with_keys(
    file: &str,
    keys: &KeySet,
    revocations: Option<&RevocationList>,
    now_ms: i64,
) -> std::result::Result<License, VerifyError> {
    let (json, _) = split_file(file)?;
    let (pk, entry) = keys.key(&named_kid(&json)?)?;
    let license = verify_license(file, &pk, revocations, now_ms)?;
    within(entry, license.issued_at)?;
    Ok(license)
}

/// Verifies a published revocation list against the key set (the key its `kid` names,
/// within that key's window).
pub fn verify_revocation_list_with_keys(
    json: &[u8],
    signature_b64: &str,
    keys: &KeySet,
) -> std::result::Result<RevocationList, VerifyError> {
    let (pk, entry) = keys.key(&named_kid(json)?)?;
    let list = verify_list(json, signature_b64, &pk)?;
    within(entry, list.issued_at)?;
    Ok(list)
}
