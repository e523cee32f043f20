//! The Mattermost license format: the JSON document, the file encoding and the identifiers.
//!
//! A license file is `base64(JSON ‖ signature)` where the signature is the 256-byte
//! RSASSA-PKCS1-v1_5 SHA-512 signature of the JSON bytes (RSA-2048), exactly what Mattermost's
//! `utils.LicenseValidator` checks. Field names and millisecond timestamps follow
//! `server/public/model/license.go`; the fields we add (`kid`, `subscription_id`,
//! `supersedes`) come last and are ignored by Mattermost's decoder.
//!
//! The JSON is produced by `serde_json` from structs with a fixed field order, so the same
//! license always serialises to the same bytes, and PKCS#1 v1.5 signatures are deterministic:
//! the same license always gives the same file.

use crate::error::{Error, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Length of an RSA-2048 signature, the tail of every license file.
pub const SIGNATURE_LEN: usize = 256;
/// The largest JSON we sign: KMS signs raw messages of at most 4096 bytes (Mattermost stores
/// licenses of up to 10,000 bytes; ours are ~1.2 KB).
pub const MAX_JSON_LEN: usize = 4096;

/// A license id: 26 characters of Mattermost's id alphabet, derived from the license's
/// idempotency key (see [`LicenseKey::license_id`]) so a retry names the same license.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LicenseId(String);

/// Mattermost's base32 alphabet for ids (`model.NewId`).
const ID_ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

impl LicenseId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_digest(bytes: &[u8]) -> Self {
        // 26 symbols of 5 bits = 130 bits, taken from the first 17 bytes.
        let mut out = String::with_capacity(26);
        let mut acc: u32 = 0;
        let mut bits = 0;
        for &b in bytes.iter().take(17) {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 && out.len() < 26 {
                bits -= 5;
                out.push(ID_ALPHABET[((acc >> bits) & 31) as usize] as char);
            }
        }
        Self(out)
    }
}

impl TryFrom<String> for LicenseId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        if s.len() == 26 && s.bytes().all(|b| ID_ALPHABET.contains(&b)) {
            Ok(Self(s))
        } else {
            Err(Error::Invalid(format!("{s:?} is not a license id")))
        }
    }
}

impl std::str::FromStr for LicenseId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::try_from(s.to_owned())
    }
}

impl From<LicenseId> for String {
    fn from(id: LicenseId) -> String {
        id.0
    }
}

impl fmt::Display for LicenseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What makes a license unique: the subscription, its billing period, the seats, the SKU and
/// the license it replaces (none for the first of a period). Two deliveries that see the same
/// state derive the same key, hence the same license id and the same S3 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseKey {
    pub subscription_id: String,
    pub period_start_ms: i64,
    pub quantity: u32,
    pub sku: String,
    pub supersedes: Option<LicenseId>,
}

impl LicenseKey {
    /// The idempotency key, readable: `license:{sub}:{period start ms}:{seats}:{sku}:{previous|-}`.
    pub fn idempotency_key(&self) -> String {
        format!(
            "license:{}:{}:{}:{}:{}",
            self.subscription_id,
            self.period_start_ms,
            self.quantity,
            self.sku,
            self.supersedes.as_ref().map_or("-", LicenseId::as_str)
        )
    }

    /// The license id: the first 130 bits of SHA-256 of the idempotency key.
    pub fn license_id(&self) -> LicenseId {
        LicenseId::from_digest(&Sha256::digest(self.idempotency_key().as_bytes()))
    }
}

/// The S3 key of a license file.
pub fn file_key(customer_id: &str, license_id: &LicenseId) -> String {
    format!("licenses/{customer_id}/{license_id}.mattermost-license")
}

/// `customer` of a Mattermost license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseCustomer {
    pub id: String,
    pub name: String,
    pub email: String,
    pub company: String,
}

/// `features` of a Mattermost license: the seat count and one flag per licensed feature
/// (Mattermost's `Features` struct; absent flags default to off there too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    pub users: u32,
    pub ldap: bool,
    pub ldap_groups: bool,
    pub mfa: bool,
    pub google_oauth: bool,
    pub office365_oauth: bool,
    pub openid: bool,
    pub compliance: bool,
    pub cluster: bool,
    pub metrics: bool,
    pub mhpns: bool,
    pub saml: bool,
    pub elastic_search: bool,
    pub announcement: bool,
    pub theme_management: bool,
    pub email_notification_contents: bool,
    pub data_retention: bool,
    pub message_export: bool,
    pub custom_permissions_schemes: bool,
    pub custom_terms_of_service: bool,
    pub guest_accounts: bool,
    pub guest_accounts_permissions: bool,
    pub id_loaded: bool,
    pub lock_teammate_name_display: bool,
    pub cloud: bool,
    pub shared_channels: bool,
    pub remote_cluster_service: bool,
    pub future_features: bool,
}

/// A license: the signed JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    pub id: LicenseId,
    /// Milliseconds since the Unix epoch, like every timestamp here.
    pub issued_at: i64,
    pub starts_at: i64,
    pub expires_at: i64,
    pub customer: LicenseCustomer,
    pub features: Features,
    pub sku_name: String,
    pub sku_short_name: String,
    pub is_trial: bool,
    pub is_gov_sku: bool,
    pub is_seat_count_enforced: bool,
    pub extra_users: u32,
    pub signup_jwt: Option<String>,
    /// Our extension: the fingerprint of the key that signed it ([`super::PublicKey::kid`]).
    pub kid: String,
    /// Our extension: the Stripe subscription the license is for.
    pub subscription_id: String,
    /// Our extension: the license this one replaces (seat or SKU change in the same period).
    pub supersedes: Option<LicenseId>,
}

impl License {
    /// The exact bytes that are signed.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let json =
            serde_json::to_vec(self).map_err(|e| Error::Invalid(format!("license JSON: {e}")))?;
        if json.len() > MAX_JSON_LEN {
            return Err(Error::Invalid(format!(
                "license {} is {} bytes of JSON, more than {MAX_JSON_LEN}",
                self.id,
                json.len()
            )));
        }
        Ok(json)
    }
}

/// `base64(json ‖ signature)`: the content of a `.mattermost-license` file.
pub fn encode_file(json: &[u8], signature: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(json.len() + signature.len());
    bytes.extend_from_slice(json);
    bytes.extend_from_slice(signature);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> License {
        License {
            id: key(5, None).license_id(),
            issued_at: 1_780_000_000_123,
            starts_at: 1_780_000_000_000,
            expires_at: 1_782_592_000_000,
            customer: LicenseCustomer {
                id: "cus_1".into(),
                name: "Ada".into(),
                email: "ada@example.com".into(),
                company: "Analytical Engines".into(),
            },
            features: Features {
                users: 5,
                saml: true,
                ..Features::default()
            },
            sku_name: "Mattermost Professional".into(),
            sku_short_name: "professional".into(),
            is_trial: false,
            is_gov_sku: false,
            is_seat_count_enforced: false,
            extra_users: 0,
            signup_jwt: None,
            kid: "0123456789abcdef".into(),
            subscription_id: "sub_1".into(),
            supersedes: None,
        }
    }

    fn key(quantity: u32, supersedes: Option<LicenseId>) -> LicenseKey {
        LicenseKey {
            subscription_id: "sub_1".into(),
            period_start_ms: 1_780_000_000_000,
            quantity,
            sku: "professional".into(),
            supersedes,
        }
    }

    #[test]
    fn json_has_mattermost_field_names_and_ms_timestamps() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
        let obj = v.as_object().unwrap();
        for field in [
            "id",
            "issued_at",
            "starts_at",
            "expires_at",
            "customer",
            "features",
            "sku_name",
            "sku_short_name",
            "is_trial",
            "is_gov_sku",
            "is_seat_count_enforced",
            "extra_users",
            "signup_jwt",
        ] {
            assert!(obj.contains_key(field), "missing {field}");
        }
        for field in ["id", "name", "email", "company"] {
            assert!(v["customer"].get(field).is_some(), "customer.{field}");
        }
        assert_eq!(v["features"]["users"], 5);
        assert_eq!(v["features"]["saml"], true);
        assert_eq!(v["features"]["future_features"], false);
        // Milliseconds: 13 digits in this century.
        assert_eq!(v["issued_at"].as_i64().unwrap().to_string().len(), 13);
        assert_eq!(v["expires_at"], 1_782_592_000_000_i64);
        assert_eq!(v["kid"], "0123456789abcdef");
    }

    #[test]
    fn same_license_same_bytes() {
        assert_eq!(sample().to_json().unwrap(), sample().to_json().unwrap());
        let back: License = serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn idempotency_keys_and_ids_are_stable_and_distinct() {
        let a = key(5, None);
        assert_eq!(
            a.idempotency_key(),
            "license:sub_1:1780000000000:5:professional:-"
        );
        assert_eq!(
            a.license_id(),
            key(5, None).license_id(),
            "retries name the same license"
        );
        assert_eq!(a.license_id().as_str().len(), 26);
        let b = key(10, Some(a.license_id()));
        assert!(
            b.idempotency_key()
                .ends_with(&format!(":10:professional:{}", a.license_id()))
        );
        assert_ne!(a.license_id(), b.license_id());
        // Back to 5 seats after 10: a third, distinct license.
        let c = key(5, Some(b.license_id()));
        assert_ne!(c.license_id(), a.license_id());
        let mut other_period = key(5, None);
        other_period.period_start_ms += 1;
        assert_ne!(other_period.license_id(), a.license_id());
        assert!("not-an-id".parse::<LicenseId>().is_err());
        assert_eq!(
            a.license_id().as_str().parse::<LicenseId>().unwrap(),
            a.license_id()
        );
    }

    #[test]
    fn file_is_base64_of_json_then_signature() {
        let json = sample().to_json().unwrap();
        let file = encode_file(&json, &[7u8; SIGNATURE_LEN]);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(file)
            .unwrap();
        assert_eq!(&raw[..json.len()], &json[..]);
        assert_eq!(&raw[json.len()..], &[7u8; SIGNATURE_LEN][..]);
        assert_eq!(
            file_key("cus_1", &sample().id),
            format!("licenses/cus_1/{}.mattermost-license", sample().id)
        );
    }
}
