//! The signed revocation list, verifiable offline.
//!
//! Published as two objects: `licenses/revoked.json` (the list, compact JSON) and
//! `licenses/revoked.json.sig` (base64 of the RSASSA-PKCS1-v1_5 SHA-512 signature of exactly
//! those bytes, same key as the licenses). A verifier fetches both, checks the signature with
//! the public key (`licenses/public-key.pem`) via [`super::verify_revocation_list`], then
//! rejects any license whose id is listed. Neither Mattermost nor Keygen has this: it is our
//! addition, so revocation works for installations that never call home.
//!
//! The list holds only ids, times and a reason code: no names, no emails.

use super::format::LicenseId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The S3 key of the list.
pub const REVOCATION_LIST_KEY: &str = "licenses/revoked.json";
/// The S3 key of its signature.
pub const REVOCATION_SIGNATURE_KEY: &str = "licenses/revoked.json.sig";

/// Why a license was revoked (published: a code, never free text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// The Stripe subscription ended (`customer.subscription.deleted`).
    SubscriptionCanceled,
    /// Refunded or charged back.
    Refunded,
    /// Fraud or abuse.
    Fraud,
    /// An operator's decision.
    Operator,
    /// Replaced by a license for another seat count or SKU (a seat change): listed when the
    /// successor is activated, effective after [`SUPERSEDED_GRACE_MS`] so the customer has
    /// time to install the successor.
    Superseded,
    /// Suspended for non-payment (dunning's suspend step). Not a revocation for good: payment
    /// issues a fresh license for the rest of the term (the suspended one stays listed).
    Suspended,
}

/// How long a superseded license stays valid after its successor is issued, by default: a
/// week to install the new file, then the revocation list revokes it offline too.
/// license-minting reads it from `LICENSE_SUPERSEDED_GRACE_DAYS`
/// ([`super::LicenseService::with_superseded_grace`]).
pub const SUPERSEDED_GRACE_MS: i64 = 7 * 24 * 3600 * 1000;

impl RevocationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::SubscriptionCanceled => "subscription_canceled",
            RevocationReason::Refunded => "refunded",
            RevocationReason::Fraud => "fraud",
            RevocationReason::Operator => "operator",
            RevocationReason::Superseded => "superseded",
            RevocationReason::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One revoked license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedLicense {
    pub id: LicenseId,
    pub customer_id: String,
    pub subscription_id: String,
    /// When the revocation takes effect (milliseconds since the epoch): the moment of the
    /// revocation, or for a superseded license the end of its grace to install the successor.
    /// A verifier treats the license as revoked from then on.
    pub revoked_at: i64,
    pub reason: RevocationReason,
}

/// The revocation list document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// The signing key's fingerprint.
    pub kid: String,
    /// When this version was published (ms since epoch).
    pub issued_at: i64,
    /// Sorted by license id.
    pub revoked: Vec<RevokedLicense>,
}

impl RevocationList {
    /// A list of `entries`, sorted by id so equal sets give equal documents.
    pub fn new(kid: impl Into<String>, issued_at: i64, mut entries: Vec<RevokedLicense>) -> Self {
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries.dedup_by(|a, b| a.id == b.id);
        Self {
            kid: kid.into(),
            issued_at,
            revoked: entries,
        }
    }

    /// The entry of `id`, if revoked.
    pub fn find(&self, id: &LicenseId) -> Option<&RevokedLicense> {
        self.revoked
            .binary_search_by(|e| e.id.cmp(id))
            .ok()
            .and_then(|i| self.revoked.get(i))
            .or_else(|| self.revoked.iter().find(|e| &e.id == id))
    }

    /// Whether this list says the same as `entries` (publication is skipped when it does).
    pub fn same_entries(&self, entries: &[RevokedLicense]) -> bool {
        let mut sorted = entries.to_vec();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        sorted.dedup_by(|a, b| a.id == b.id);
        self.revoked == sorted
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::LicenseKey;
    use super::super::signer::{LicenseSigner, test_signer};
    use super::super::verify::{VerifyError, verify_revocation_list};
    use super::*;
    use base64::Engine;

    fn entry(q: u32) -> RevokedLicense {
        RevokedLicense {
            id: LicenseKey {
                subscription_id: "sub_9".into(),
                period_start_ms: 0,
                quantity: q,
                sku: "enterprise".into(),
                supersedes: None,
            }
            .license_id(),
            customer_id: "cus_9".into(),
            subscription_id: "sub_9".into(),
            revoked_at: 42,
            reason: RevocationReason::SubscriptionCanceled,
        }
    }

    #[test]
    fn sorted_deduplicated_and_searchable() {
        let list = RevocationList::new("k", 1, vec![entry(3), entry(1), entry(3), entry(2)]);
        assert_eq!(list.revoked.len(), 3);
        assert!(list.revoked.windows(2).all(|w| w[0].id < w[1].id));
        assert!(list.find(&entry(2).id).is_some());
        assert!(list.find(&entry(4).id).is_none());
        assert!(list.same_entries(&[entry(2), entry(1), entry(3)]));
        assert!(!list.same_entries(&[entry(1)]));
        assert_eq!(
            RevocationReason::parse("fraud"),
            Some(RevocationReason::Fraud)
        );
        assert_eq!(RevocationReason::parse("because"), None);
    }

    #[tokio::test]
    async fn signed_list_verifies_offline_and_detects_edits() {
        let s = test_signer();
        let pk = s.public_key().await.unwrap();
        let list = RevocationList::new(pk.kid(), 7, vec![entry(1)]);
        let json = serde_json::to_vec(&list).unwrap();
        let sig = base64::engine::general_purpose::STANDARD.encode(s.sign(&json).await.unwrap());
        assert_eq!(verify_revocation_list(&json, &sig, &pk).unwrap(), list);

        let emptied = String::from_utf8(json.clone())
            .unwrap()
            .replace("subscription_canceled", "operator");
        assert_eq!(
            verify_revocation_list(emptied.as_bytes(), &sig, &pk),
            Err(VerifyError::Tampered)
        );
        assert_eq!(
            verify_revocation_list(&json, &sig[..40], &pk),
            Err(VerifyError::Truncated)
        );
    }
}
