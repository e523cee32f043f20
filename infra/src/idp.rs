//! The local stack's identity provider, standing in for the portal's: one Ed25519 key per
//! stack, generated at provisioning and kept in the emulator's Secrets Manager (never in the
//! repository), its public half published as a JWKS in the emulator's S3 — the URL the
//! template's `PortalJwksUrl` gets locally. The demo, the tests and `blapi-local token` sign
//! portal tokens with it; portal-api verifies them exactly as it verifies a real provider's.

use crate::LocalStack;
use anyhow::{Context, Result, anyhow};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use serde_json::{Value, json};

/// The logical name of the provider's bucket (created beside the template's resources).
pub const BUCKET: &str = "LocalIdp";
/// The JWKS object in it.
pub const JWKS_KEY: &str = "jwks.json";

/// The secret holding the provider's key for stack `prefix`.
pub fn secret_name(prefix: &str) -> String {
    format!("{prefix}/local-portal-idp")
}

/// The JWKS URL of stack `prefix` on emulator `endpoint`.
pub fn jwks_url(endpoint: &str, prefix: &str) -> String {
    format!(
        "{}/{}/{JWKS_KEY}",
        endpoint.trim_end_matches('/'),
        crate::provision::bucket_name(prefix, BUCKET)
    )
}

/// A provider that signs portal tokens.
pub struct LocalIdp {
    pub issuer: String,
    pub audience: String,
    pub kid: String,
    pair: Ed25519KeyPair,
}

impl LocalIdp {
    /// The stack's provider: its key from the emulator, its issuer and audience from
    /// portal-api's resolved environment.
    pub async fn load(stack: &LocalStack) -> Result<Self> {
        let env = stack
            .functions
            .get("portal-api")
            .context("template.yaml has no portal-api function")?;
        let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk_config().await);
        let stored = secrets
            .get_secret_value()
            .secret_id(secret_name(&stack.prefix))
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "the local identity provider's key: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            })?;
        let v: Value = serde_json::from_str(stored.secret_string().unwrap_or("{}"))?;
        let pkcs8 = STANDARD.decode(v["pkcs8"].as_str().unwrap_or_default())?;
        Ok(Self {
            issuer: env.get("PORTAL_ISSUER").cloned().unwrap_or_default(),
            audience: env.get("PORTAL_AUDIENCE").cloned().unwrap_or_default(),
            kid: v["kid"].as_str().unwrap_or_default().to_owned(),
            pair: Ed25519KeyPair::from_pkcs8(&pkcs8)
                .map_err(|e| anyhow!("the stored key is not Ed25519 PKCS#8: {e}"))?,
        })
    }

    /// The JWKS publishing the public key.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid,
            "x": B64.encode(self.pair.public_key().as_ref()),
        }]})
    }

    /// `claims` signed (EdDSA), with `iss`, `aud`, `iat`, `nbf` and a 15-minute `exp` added
    /// where missing.
    pub fn sign(&self, mut claims: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        for (k, v) in [
            ("iss", json!(self.issuer)),
            ("aud", json!(self.audience)),
            ("iat", json!(now)),
            ("nbf", json!(now)),
            ("exp", json!(now + 900)),
        ] {
            if claims.get(k).is_none() {
                claims[k] = v;
            }
        }
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self.pair.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    /// A signed-in person of `customer` (their address for their own privacy requests).
    pub fn customer_token(&self, customer: &str, email: &str) -> String {
        self.sign(json!({
            "sub": format!("local|{customer}"),
            "customer_id": customer,
            "email": email,
            "email_verified": true,
        }))
    }

    /// Support staff `operator`.
    pub fn operator_token(&self, operator: &str) -> String {
        self.sign(json!({"sub": operator, "scope": "openid blapi:operator"}))
    }
}

/// Provisioning: the stack's key (created once, then kept) and its JWKS published.
pub async fn ensure(
    secrets: &aws_sdk_secretsmanager::Client,
    s3: &aws_sdk_s3::Client,
    prefix: &str,
) -> Result<()> {
    let name = secret_name(prefix);
    let existing = secrets.get_secret_value().secret_id(&name).send().await;
    let (kid, pkcs8) = match existing {
        Ok(out) => {
            let v: Value = serde_json::from_str(out.secret_string().unwrap_or("{}"))?;
            (
                v["kid"].as_str().unwrap_or_default().to_owned(),
                STANDARD.decode(v["pkcs8"].as_str().unwrap_or_default())?,
            )
        }
        Err(_) => {
            let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|e| anyhow!("generating the local provider's key: {e}"))?;
            let kid = format!("local-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            let body = json!({"kid": kid, "pkcs8": STANDARD.encode(doc.as_ref())});
            secrets
                .create_secret()
                .name(&name)
                .secret_string(body.to_string())
                .send()
                .await
                .map_err(|e| {
                    anyhow!(
                        "storing the local provider's key: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    )
                })?;
            (kid, doc.as_ref().to_vec())
        }
    };
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map_err(|e| anyhow!("the stored key is not Ed25519 PKCS#8: {e}"))?;
    let idp = LocalIdp {
        issuer: String::new(),
        audience: String::new(),
        kid,
        pair,
    };
    let bucket = crate::provision::bucket_name(prefix, BUCKET);
    crate::provision::ensure_bucket(s3, &bucket).await?;
    s3.put_object()
        .bucket(&bucket)
        .key(JWKS_KEY)
        .content_type("application/json")
        // A key set is public, as a provider serves it.
        .acl(aws_sdk_s3::types::ObjectCannedAcl::PublicRead)
        .body(idp.jwks().to_string().into_bytes().into())
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "publishing the JWKS: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    Ok(())
}
