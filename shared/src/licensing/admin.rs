//! Operator requests (direct invocation of license-minting; samples in
//! `events/license-minting/`): mint (reconcile a subscription), revoke, list, verify, publish.

use super::format::LicenseId;
use super::revocation::RevocationReason;
use super::service::LicenseService;
use crate::error::{Error, OneOf, Result, exactly_one};
use serde::Deserialize;
use serde_json::{Value, json};

/// An operator's request (direct invocation; samples in `events/license-minting/`).
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Re-fetch a subscription and mint (or revoke) as its state says.
    Mint { subscription: String },
    /// Revoke one license and republish the revocation list.
    Revoke {
        license_id: LicenseId,
        #[serde(default = "operator")]
        reason: RevocationReason,
    },
    /// A customer's or a subscription's licenses.
    List {
        customer: Option<String>,
        subscription: Option<String>,
    },
    /// Verify a license file (`license`, the base64 text) or a stored license (`license_id`).
    Verify {
        license: Option<String>,
        license_id: Option<LicenseId>,
    },
    /// Republish the public key (the one the signing alias names now: after a key rotation)
    /// and the revocation list, signed by it.
    Publish,
}

fn operator() -> RevocationReason {
    RevocationReason::Operator
}

impl LicenseService {
    /// Runs one operator request and answers it as JSON.
    pub async fn admin(&self, request: AdminRequest) -> Result<Value> {
        tracing::info!(request = ?request_kind(&request), "admin request");
        let to_json = |v: Result<Value, serde_json::Error>| {
            v.map_err(|e| Error::Invalid(format!("response: {e}")))
        };
        match request {
            AdminRequest::Mint { subscription } => {
                to_json(serde_json::to_value(self.reconcile(&subscription).await?))
            }
            AdminRequest::Revoke { license_id, reason } => to_json(serde_json::to_value(
                self.revoke_license(&license_id, reason).await?,
            )),
            AdminRequest::List {
                customer,
                subscription,
            } => {
                let licenses = match exactly_one(
                    "list",
                    ("customer", customer),
                    ("subscription", subscription),
                )? {
                    OneOf::First(c) => self.list_customer(&c).await?,
                    OneOf::Second(s) => self.list_subscription(&s).await?,
                };
                Ok(json!({ "count": licenses.len(), "licenses": licenses }))
            }
            AdminRequest::Verify {
                license,
                license_id,
            } => {
                let report = match exactly_one(
                    "verify",
                    ("license", license),
                    ("license_id", license_id),
                )? {
                    OneOf::First(file) => self.verify_file(&file).await?,
                    OneOf::Second(id) => self.verify_id(&id).await?,
                };
                to_json(serde_json::to_value(report))
            }
            AdminRequest::Publish => {
                // After a rotation: read the key the alias names now, not the cached one.
                let kid = self.refresh_public_key().await?.kid().to_owned();
                self.publish_public_key().await?;
                let wrote = self.publish_revocations().await?;
                Ok(json!({ "published": true, "kid": kid, "revocation_list_rewritten": wrote }))
            }
        }
    }
}

/// The request without its payload, for the log (a license file is not log material).
fn request_kind(r: &AdminRequest) -> &'static str {
    match r {
        AdminRequest::Mint { .. } => "mint",
        AdminRequest::Revoke { .. } => "revoke",
        AdminRequest::List { .. } => "list",
        AdminRequest::Verify { .. } => "verify",
        AdminRequest::Publish => "publish",
    }
}
