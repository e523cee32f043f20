//! Who is asking: the portal's bearer token, verified against the identity provider's JWKS.
//!
//! Every request carries `Authorization: Bearer <JWT>` issued by the portal's identity provider.
//! [`TokenVerifier::verify`] checks, in this order, and answers one [`AuthError`] per way of
//! failing (each a stable code for the problem document, never the token or a claim's value):
//! 1. the header: an asymmetric algorithm of [`ALGORITHMS`] (so `none` and HMAC tokens are
//!    refused before any key is looked at) and a `kid`;
//! 2. the key: the JWKS is fetched at the first request, cached, and fetched again when a token
//!    names an unknown `kid` (the provider rotated) — at most once per
//!    [`AuthConfig::refresh_interval`], so a flood of made-up `kid`s cannot hammer the provider;
//!    a key whose own `alg` differs from the token's is not used;
//! 3. the signature, then `iss`, `aud`, `exp` and `nbf` with [`AuthConfig::leeway`];
//! 4. the principal: a token with the operator scope is support staff acting for any customer
//!    (identified by `sub`, which the API logs with every access); any other token must carry
//!    the customer claim and is scoped to that customer only.

use crate::error::{Error, Result};
use async_trait::async_trait;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// The algorithms a portal token may use: asymmetric only (the API never holds a signing
/// secret, so HMAC tokens are refused, as is `none`).
pub const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// How tokens are checked. Built from the environment by the function's config.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The exact `iss` the provider writes.
    pub issuer: String,
    /// The `aud` this API answers to.
    pub audience: String,
    /// The claim naming the customer (a Stripe customer id), e.g. `customer_id` or a namespaced
    /// URL claim.
    pub customer_claim: String,
    /// The scope that makes a token support staff's (space-separated `scope`, or `scp` list).
    pub operator_scope: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The shortest time between two JWKS fetches caused by unknown `kid`s.
    pub refresh_interval: Duration,
}

impl AuthConfig {
    /// Defaults for everything but the issuer and audience: claim `customer_id`, scope
    /// `blapi:operator`, 30 s leeway, a refetch at most once a minute.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            customer_claim: "customer_id".into(),
            operator_scope: "blapi:operator".into(),
            leeway: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(60),
        }
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in person of one customer: every resource is scoped to `customer_id`.
    Customer {
        customer_id: String,
        /// The provider's subject id for the person (pseudonymous; never an email).
        subject: String,
        /// The person's address (`email` claim, unless `email_verified` is false): for their
        /// own privacy requests only. Never logged.
        email: Option<String>,
    },
    /// Support staff: may act for any customer; every access is logged with `operator_id`.
    Operator { operator_id: String },
}

impl Principal {
    /// Whether this principal may see `customer_id`'s resources.
    pub fn may_access(&self, customer_id: &str) -> bool {
        match self {
            Principal::Customer {
                customer_id: own, ..
            } => own == customer_id,
            Principal::Operator { .. } => true,
        }
    }
}

/// Why a token was refused. `code` is stable (it becomes the problem document's `type`);
/// the `Display` text says what to fix and never quotes the token or its claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted (asymmetric signatures only)")]
    Algorithm,
    #[error("the token names no key (`kid`) or one the identity provider does not publish")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    Issuer,
    #[error("the token was issued for another audience")]
    Audience,
    #[error("the token carries no customer and no operator scope")]
    NoCustomer,
}

impl AuthError {
    /// The stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token-missing",
            AuthError::Malformed => "token-malformed",
            AuthError::Algorithm => "token-algorithm",
            AuthError::UnknownKey => "token-unknown-key",
            AuthError::Signature => "token-signature",
            AuthError::Expired => "token-expired",
            AuthError::NotYetValid => "token-not-yet-valid",
            AuthError::Issuer => "token-issuer",
            AuthError::Audience => "token-audience",
            AuthError::NoCustomer => "token-no-customer",
        }
    }
}

/// A failure to verify: the token is refused (401), or the keys could not be had (503).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Refused(#[from] AuthError),
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable(#[source] Error),
}

/// Where the provider's public keys come from.
#[async_trait]
pub trait KeySource: Send + Sync {
    async fn fetch(&self) -> Result<JwkSet>;
}

/// The JWKS document at a URL (`https://<provider>/.well-known/jwks.json`), over the shared
/// HTTP client: bounded answer, timeouts, no retries here (the next request tries again).
pub struct HttpKeySource {
    http: reqwest::Client,
    url: String,
}

impl HttpKeySource {
    pub fn new(http: reqwest::Client, url: impl Into<String>) -> Self {
        Self {
            http,
            url: url.into(),
        }
    }
}

#[async_trait]
impl KeySource for HttpKeySource {
    async fn fetch(&self) -> Result<JwkSet> {
        crate::http::send_with_retry(
            crate::retry::RetryPolicy::immediate(2),
            || self.http.get(&self.url),
            |retryable, msg| Error::dependency("jwks", retryable, msg),
            |reply| {
                use crate::retry::Attempt;
                if reply.status.is_success() {
                    match reply.json::<JwkSet>() {
                        Ok(set) => Attempt::Done(set),
                        Err(_) => Attempt::Fail(Error::dependency(
                            "jwks",
                            false,
                            "the JWKS document is not a JSON Web Key Set",
                        )),
                    }
                } else if reply.retryable() {
                    Attempt::Retry(
                        Error::dependency("jwks", true, format!("HTTP {}", reply.status)),
                        reply.retry_after,
                    )
                } else {
                    Attempt::Fail(Error::dependency(
                        "jwks",
                        false,
                        format!("HTTP {}", reply.status),
                    ))
                }
            },
        )
        .await
    }
}

/// A fixed key set (tests, benches, and a deployment that pins its keys).
pub struct StaticKeySource(pub JwkSet);

#[async_trait]
impl KeySource for StaticKeySource {
    async fn fetch(&self) -> Result<JwkSet> {
        Ok(self.0.clone())
    }
}

struct CachedKey {
    key: DecodingKey,
    alg: Option<Algorithm>,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<CachedKey>>,
    fetched_at: Option<Instant>,
}

/// Verifies portal tokens. One per cold start; the key cache lives as long as it does.
pub struct TokenVerifier {
    config: AuthConfig,
    source: Arc<dyn KeySource>,
    cache: RwLock<Cache>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

impl TokenVerifier {
    pub fn new(config: AuthConfig, source: Arc<dyn KeySource>) -> Self {
        // Signatures are checked on ring (the crate has no crypto feature of its own here).
        super::jwt_crypto::install();
        Self {
            config,
            source,
            cache: RwLock::new(Cache::default()),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Verifies the value of an `Authorization` header (or its absence).
    pub async fn verify_header(
        &self,
        authorization: Option<&str>,
    ) -> std::result::Result<Principal, VerifyError> {
        let token = authorization
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        self.verify(token).await
    }

    /// Verifies a compact JWT and says whom it speaks for.
    pub async fn verify(&self, token: &str) -> std::result::Result<Principal, VerifyError> {
        // The algorithm is read first, by name: `none`, HMAC and anything unknown are refused
        // as such (not as a malformed token) before any key is looked up.
        let alg = declared_alg(token).ok_or(AuthError::Malformed)?;
        if !ALGORITHMS.iter().any(|a| alg == format!("{a:?}")) {
            return Err(AuthError::Algorithm.into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::Algorithm.into());
        }
        let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
        let key = self.key(kid).await?;
        if key.alg.is_some_and(|a| a != header.alg) {
            return Err(AuthError::Algorithm.into());
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| refusal(e.kind()))?;
        self.principal(data.claims).map_err(VerifyError::from)
    }

    fn principal(&self, claims: Claims) -> std::result::Result<Principal, AuthError> {
        let sub = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Malformed)?;
        let operator = claims
            .scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|x| x == self.config.operator_scope))
            || claims
                .scp
                .as_ref()
                .is_some_and(|l| l.contains(&self.config.operator_scope));
        if operator {
            return Ok(Principal::Operator { operator_id: sub });
        }
        match claims.rest.get(&self.config.customer_claim) {
            Some(serde_json::Value::String(c)) if !c.is_empty() => Ok(Principal::Customer {
                customer_id: c.clone(),
                subject: sub,
                email: match (claims.rest.get("email"), claims.rest.get("email_verified")) {
                    (_, Some(serde_json::Value::Bool(false))) => None,
                    (Some(serde_json::Value::String(e)), _) if !e.is_empty() => Some(e.clone()),
                    _ => None,
                },
            }),
            _ => Err(AuthError::NoCustomer),
        }
    }

    /// The key named `kid`: from the cache, or after one (rate-limited) refetch of the set.
    async fn key(&self, kid: &str) -> std::result::Result<Arc<CachedKey>, VerifyError> {
        if let Some(known) = self.cached(&*self.cache.read().await, kid) {
            return known;
        }
        let mut cache = self.cache.write().await;
        // Another request may have refreshed it meanwhile.
        if let Some(known) = self.cached(&cache, kid) {
            return known;
        }
        let set = self
            .source
            .fetch()
            .await
            .map_err(|e| {
                // The provider's keys are down: every request answers 503 until they are back.
                tracing::warn!(error = %e.chain(), "the identity provider's key set could not be fetched");
                VerifyError::KeysUnavailable(e)
            })?;
        cache.keys = usable_keys(&set);
        cache.fetched_at = Some(Instant::now());
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthError::UnknownKey.into())
    }
}

impl TokenVerifier {
    /// What the cache alone can say of `kid`: the key, or "unknown" while the last fetch is
    /// too recent to fetch again; `None` when a fetch is due.
    fn cached(
        &self,
        cache: &Cache,
        kid: &str,
    ) -> Option<std::result::Result<Arc<CachedKey>, VerifyError>> {
        if let Some(k) = cache.keys.get(kid) {
            return Some(Ok(k.clone()));
        }
        cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.config.refresh_interval)
            .then(|| Err(AuthError::UnknownKey.into()))
    }
}

/// The keys of a set that can verify a signature: with a `kid`, not restricted to
/// encryption, and of a type `jsonwebtoken` can read. Unusable entries are skipped, not fatal:
/// a provider may publish keys for other purposes.
fn usable_keys(set: &JwkSet) -> HashMap<String, Arc<CachedKey>> {
    set.keys
        .iter()
        .filter(|k| {
            !matches!(
                k.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            )
        })
        .filter_map(|k: &Jwk| {
            let kid = k.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(k).ok()?;
            let alg = k
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            Some((kid, Arc::new(CachedKey { key, alg })))
        })
        .collect()
}

/// The `alg` a compact JWT's header declares, if the header is base64url JSON with one.
fn declared_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let (header, _) = token.split_once('.')?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidIssuer => AuthError::Issuer,
        K::InvalidAudience => AuthError::Audience,
        K::InvalidSignature => AuthError::Signature,
        K::InvalidAlgorithm | K::InvalidAlgorithmName => AuthError::Algorithm,
        K::InvalidKeyFormat | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => AuthError::UnknownKey,
        // A missing required claim, bad base64 or JSON, a claim of the wrong type.
        _ => AuthError::Malformed,
    }
}
