//! The Salesforce adapter: OAuth 2.0 client credentials (token cached, refreshed once on a
//! 401), upsert by external id with `PATCH .../sobjects/{Object}/{ExternalIdField}/{id}` and
//! `Sforce-Auto-Assign: FALSE`. See the module docs of [`super`] for the answers it handles.

use super::{CrmError, CrmLead, CrmPort, CrmRecord, Upserted, truncate};
use crate::config::Secret;
use crate::error::Result;
use crate::retry::{Attempt, RetryPolicy};
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Salesforce OAuth client credentials (secret JSON `{"client_id", "client_secret"}`).
#[derive(Clone, Deserialize)]
pub struct SalesforceCredentials {
    pub client_id: String,
    pub client_secret: String,
}

/// Salesforce adapter settings.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// My Domain URL, e.g. `https://acme.my.salesforce.com`.
    pub login_url: String,
    /// e.g. `v61.0`.
    pub api_version: String,
    /// The Lead external id field, e.g. `Blapi_Lead_Id__c`.
    pub external_id_field: String,
    /// Token lifetime when the token response does not say (Salesforce's client-credentials
    /// response carries no `expires_in`; the session timeout of the org applies).
    pub default_token_ttl: Duration,
    pub timeout: Duration,
}

impl SalesforceConfig {
    pub fn new(login_url: impl Into<String>, api_version: impl Into<String>) -> Self {
        Self {
            login_url: login_url.into().trim_end_matches('/').to_owned(),
            api_version: api_version.into(),
            external_id_field: "Blapi_Lead_Id__c".into(),
            default_token_ttl: Duration::from_secs(30 * 60),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    instance_url: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Clone)]
struct Token {
    access_token: Secret<String>,
    instance_url: String,
    expires: Instant,
}

/// The Salesforce adapter.
pub struct SalesforceCrm {
    http: reqwest::Client,
    cfg: SalesforceConfig,
    creds: Secret<SalesforceCredentials>,
    policy: RetryPolicy,
    token: RwLock<Option<Token>>,
    token_requests: AtomicU64,
}

impl std::fmt::Debug for SalesforceCrm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceCrm")
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// One Salesforce error entry: `[{"message", "errorCode", "fields"}]`.
#[derive(Deserialize)]
struct SfError {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "errorCode")]
    error_code: String,
    #[serde(default)]
    fields: Vec<String>,
}

#[derive(Deserialize)]
struct SfUpsert {
    id: Option<String>,
    created: Option<bool>,
}

enum Sent {
    Done(Upserted),
    Unauthorized,
}

impl SalesforceCrm {
    pub fn new(cfg: SalesforceConfig, creds: Secret<SalesforceCredentials>) -> Result<Self> {
        Ok(Self {
            http: crate::http::client(cfg.timeout)?,
            cfg,
            creds,
            policy: RetryPolicy::default(),
            token: RwLock::new(None),
            token_requests: AtomicU64::new(0),
        })
    }

    /// Overrides the retry policy (tests use [`RetryPolicy::immediate`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Token requests made so far (tests: the token is cached).
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    async fn token(&self, force: bool) -> std::result::Result<Token, CrmError> {
        if !force {
            let cached = self
                .token
                .read()
                .await
                .as_ref()
                .filter(|t| t.expires > Instant::now())
                .cloned();
            if let Some(t) = cached {
                return Ok(t);
            }
        }
        let mut slot = self.token.write().await;
        // Another task may have refreshed it while we waited.
        if !force {
            if let Some(t) = slot.as_ref().filter(|t| t.expires > Instant::now()) {
                return Ok(t.clone());
            }
        }
        let url = format!("{}/services/oauth2/token", self.cfg.login_url);
        let creds = self.creds.expose();
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", creds.client_id.as_str()),
            ("client_secret", creds.client_secret.as_str()),
        ];
        let reply = crate::http::send_with_retry(
            self.policy,
            || {
                self.token_requests.fetch_add(1, Ordering::Relaxed);
                self.http.post(&url).form(&form)
            },
            |_, message| CrmError::Unavailable(message),
            |reply| {
                if reply.retryable() {
                    let err =
                        CrmError::Unavailable(format!("token endpoint HTTP {}", reply.status));
                    return Attempt::Retry(err, reply.retry_after);
                }
                Attempt::Done(reply)
            },
        )
        .await?;
        if !reply.status.is_success() {
            // The body names the OAuth error (invalid_client, ...), never the secret.
            let body = String::from_utf8_lossy(&reply.body);
            return Err(CrmError::Auth(format!(
                "token endpoint HTTP {}: {}",
                reply.status,
                truncate(&body, 300)
            )));
        }
        let t: TokenResponse = reply
            .json()
            .map_err(|e| CrmError::Unexpected(format!("token response: {e}")))?;
        let ttl = t
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(self.cfg.default_token_ttl)
            .saturating_sub(Duration::from_secs(30));
        let token = Token {
            access_token: Secret::new(t.access_token),
            instance_url: t
                .instance_url
                .unwrap_or_else(|| self.cfg.login_url.clone())
                .trim_end_matches('/')
                .to_owned(),
            expires: Instant::now() + ttl,
        };
        *slot = Some(token.clone());
        Ok(token)
    }

    /// The Lead fields we send (the external id is in the path, not the body).
    pub fn body(lead: &CrmLead) -> serde_json::Value {
        let mut b = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            if !v.is_null() {
                b.insert(k.to_owned(), v);
            }
        };
        use serde_json::json;
        put("FirstName", json!(lead.first_name));
        put(
            "LastName",
            json!(
                lead.last_name
                    .clone()
                    .unwrap_or_else(|| "[not provided]".into())
            ),
        );
        put("Email", json!(lead.email));
        put("Phone", json!(lead.phone));
        put("Title", json!(lead.title));
        put("Company", json!(lead.company));
        put("Website", json!(lead.company_domain));
        put("Industry", json!(lead.industry));
        put("NumberOfEmployees", json!(lead.employees));
        // `Country` (the ISO short name) works with and without State and Country picklists;
        // `CountryCode` exists only when they are enabled.
        put("Country", json!(lead.country.map(|c| c.name())));
        put("LeadSource", json!(lead.lead_source));
        put("OwnerId", json!(lead.owner_id));
        put("HasOptedOutOfEmail", json!(!lead.marketing_opt_in));
        put("Lead_Score__c", json!(lead.score));
        put("Lead_Grade__c", json!(lead.grade));
        put(
            "Score_Reasons__c",
            json!(truncate(&lead.score_reasons, 1000)),
        );
        put(
            "Routing_Reason__c",
            json!(truncate(&lead.routing_reason, 255)),
        );
        put("Territory_Team__c", json!(lead.team));
        put("Needs_Enrichment__c", json!(lead.needs_enrichment));
        serde_json::Value::Object(b)
    }

    /// The external id field of `object` (configured for Lead).
    fn external_id_field(&self, object: super::CrmObject) -> &str {
        match object {
            super::CrmObject::Lead => &self.cfg.external_id_field,
        }
    }

    async fn send(&self, token: &Token, record: &CrmRecord) -> std::result::Result<Sent, CrmError> {
        let object = record.object();
        let external_id = record.external_id();
        let url = format!(
            "{}/services/data/{}/sobjects/{}/{}/{}",
            token.instance_url,
            self.cfg.api_version,
            object.sobject(),
            self.external_id_field(object),
            external_id
        );
        let body = match record {
            CrmRecord::Lead(lead) => Self::body(lead),
        };
        crate::http::send_with_retry(
            self.policy,
            || {
                self.http
                    .patch(&url)
                    .bearer_auth(token.access_token.expose())
                    .header("Sforce-Auto-Assign", "FALSE")
                    .json(&body)
            },
            |_, message| CrmError::Unavailable(message),
            |reply| {
                let status = reply.status.as_u16();
                let bytes = &reply.body;
                match status {
                    200 | 201 => {
                        let parsed = serde_json::from_slice::<SfUpsert>(bytes).ok();
                        Attempt::Done(Sent::Done(Upserted {
                            record_id: parsed.as_ref().and_then(|p| p.id.clone()),
                            created: status == 201
                                || parsed.and_then(|p| p.created).unwrap_or(false),
                        }))
                    }
                    204 => Attempt::Done(Sent::Done(Upserted {
                        record_id: None,
                        created: false,
                    })),
                    401 => Attempt::Done(Sent::Unauthorized),
                    300 => {
                        let count = serde_json::from_slice::<Vec<serde_json::Value>>(bytes)
                            .map_or(2, |v| v.len());
                        Attempt::Fail(CrmError::Ambiguous {
                            lead_id: external_id.to_owned(),
                            count,
                        })
                    }
                    400 | 404 => Attempt::Fail(CrmError::Rejected {
                        lead_id: external_id.to_owned(),
                        details: sf_errors(bytes, status),
                    }),
                    _ if reply.retryable() => Attempt::Retry(
                        CrmError::Unavailable(format!(
                            "HTTP {status}: {}",
                            sf_errors(bytes, status)
                        )),
                        reply.retry_after,
                    ),
                    s => Attempt::Fail(CrmError::Unexpected(format!(
                        "HTTP {s}: {}",
                        sf_errors(bytes, s)
                    ))),
                }
            },
        )
        .await
    }
}

fn sf_errors(bytes: &[u8], status: u16) -> String {
    match serde_json::from_slice::<Vec<SfError>>(bytes) {
        Ok(errs) if !errs.is_empty() => errs
            .iter()
            .map(|e| {
                if e.fields.is_empty() {
                    format!("{}: {}", e.error_code, e.message)
                } else {
                    format!("{} [{}]: {}", e.error_code, e.fields.join(", "), e.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => format!("HTTP {status}"),
    }
}

#[async_trait]
impl CrmPort for SalesforceCrm {
    async fn upsert(&self, record: &CrmRecord) -> std::result::Result<Upserted, CrmError> {
        let token = self.token(false).await?;
        match self.send(&token, record).await? {
            Sent::Done(u) => Ok(u),
            Sent::Unauthorized => {
                // The session expired or was revoked: one fresh token, one more try.
                tracing::info!(object = record.object().sobject(), external_id = %record.external_id(), "salesforce token refused; refreshing once");
                let token = self.token(true).await?;
                match self.send(&token, record).await? {
                    Sent::Done(u) => Ok(u),
                    Sent::Unauthorized => {
                        Err(CrmError::Auth("HTTP 401 even with a fresh token".into()))
                    }
                }
            }
        }
    }

    fn kind(&self) -> &'static str {
        "salesforce"
    }
}
