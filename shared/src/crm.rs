//! The CRM port: upsert a routed lead, once, by its external id.
//!
//! Adapters:
//! - [`SalesforceCrm`] (when `SALESFORCE_LOGIN_URL` is set): OAuth 2.0 client credentials
//!   against `{login}/services/oauth2/token`, the token cached until it expires and refreshed
//!   once on a 401; upsert with `PATCH {instance}/services/data/{version}/sobjects/Lead/
//!   {ExternalIdField}/{lead id}` and `Sforce-Auto-Assign: FALSE` (we chose the owner).
//!   201 = created, 200/204 = updated, 300 = several records carry the id (nothing written),
//!   400 = field errors, 429/5xx = retried then reported retryable.
//! - [`SinkCrm`], the built-in sink when no Salesforce is configured: one item per lead in the
//!   CrmTable (`pk = LEAD#<id>`, `sk = CRM`) plus a JSON-lines export object per lead at
//!   `crm/leads/<id>.jsonl` in the artifacts bucket (the latest state; the prefix read as a
//!   whole is the JSON-lines export of all leads).
//!   **Personal data there is kept minimal**: the sink stores the lead id, owner, team, score,
//!   grade and reasons, the company (name, domain, industry, size), the country and the
//!   source — never the e-mail, names, phone or title. Those stay in the LeadsTable lead
//!   record (erasable by subject), reached with the lead id.
//! - [`MemoryCrm`] for tests and benchmarks.
//!
//! The upsert is idempotent by construction: the key is the lead id, so a redelivered lead
//! updates the same record.

use crate::config::Secret;
use crate::error::{Error, Result};
use crate::retry::{Attempt, RetryPolicy, retry, retry_after};
use crate::storage::ObjectStore;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// A lead as the CRM receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmLead {
    /// Our lead id: the external id of the CRM record.
    pub lead_id: String,
    /// Personal data: sent to Salesforce, never stored by the sink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Company name (a placeholder for individuals: Salesforce requires one).
    pub company: String,
    /// Company domain (absent for free-mail and disposable addresses).
    pub company_domain: Option<String>,
    pub industry: Option<String>,
    pub employees: Option<u64>,
    pub employee_band: Option<String>,
    /// ISO alpha-2.
    pub country: Option<String>,
    pub lead_source: String,
    pub sources: Vec<String>,
    pub score: u32,
    pub grade: String,
    pub score_reasons: String,
    pub owner_id: String,
    pub team: Option<String>,
    pub routing_reason: String,
    pub needs_enrichment: bool,
    pub marketing_opt_in: bool,
}

impl CrmLead {
    /// The same lead without contact data (what the built-in sink stores).
    pub fn without_contact_data(&self) -> Self {
        Self {
            email: None,
            first_name: None,
            last_name: None,
            phone: None,
            title: None,
            ..self.clone()
        }
    }
}

/// What the upsert did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upserted {
    /// The CRM's record id (Salesforce `00Q...`, or the sink's key).
    pub record_id: Option<String>,
    pub created: bool,
}

/// Why an upsert failed.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// Salesforce 300: several records carry this external id; nothing was written. A human
    /// must merge the duplicates.
    #[error(
        "{count} CRM records match external id {lead_id}; nothing written (merge the duplicates)"
    )]
    Ambiguous { lead_id: String, count: usize },
    /// Salesforce 400: the record was refused (field errors).
    #[error("CRM refused lead {lead_id}: {details}")]
    Rejected { lead_id: String, details: String },
    /// Authentication failed (after one token refresh).
    #[error("CRM authentication failed: {0}")]
    Auth(String),
    /// The CRM is unavailable (429/5xx/transport after retries): try again later.
    #[error("CRM unavailable: {0}")]
    Unavailable(String),
    #[error("CRM answered something unexpected: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<CrmError> for Error {
    fn from(e: CrmError) -> Self {
        match e {
            CrmError::Store(e) => e,
            CrmError::Unavailable(_) => Error::dependency("crm", true, e),
            // A refused or ambiguous record stays so until a human acts: not retryable.
            other => Error::dependency("crm", false, other),
        }
    }
}

/// The CRM port.
#[async_trait]
pub trait CrmPort: Send + Sync {
    async fn upsert(&self, lead: &CrmLead) -> std::result::Result<Upserted, CrmError>;
    /// A short name for logs (`salesforce`, `sink`, `memory`).
    fn kind(&self) -> &'static str;
}

// ------------------------------------------------------------------ Salesforce

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
        let resp = retry(self.policy, |_| async {
            self.token_requests.fetch_add(1, Ordering::Relaxed);
            match self.http.post(&url).form(&form).send().await {
                Ok(r) if crate::http::retryable_status(r.status()) => {
                    let after = retry_after(r.headers());
                    Attempt::Retry(
                        CrmError::Unavailable(format!("token endpoint HTTP {}", r.status())),
                        after,
                    )
                }
                Ok(r) => Attempt::Done(r),
                Err(e) => Attempt::Retry(CrmError::Unavailable(e.without_url().to_string()), None),
            }
        })
        .await?;
        let status = resp.status();
        if !status.is_success() {
            // The body names the OAuth error (invalid_client, ...), never the secret.
            let body = resp.text().await.unwrap_or_default();
            return Err(CrmError::Auth(format!(
                "token endpoint HTTP {status}: {}",
                truncate(&body, 300)
            )));
        }
        let t: TokenResponse = resp
            .json()
            .await
            .map_err(|e| CrmError::Unexpected(format!("token response: {}", e.without_url())))?;
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
        put(
            "Country",
            json!(
                lead.country
                    .as_deref()
                    .and_then(crate::leads::normalize::Country::parse)
                    .map(|c| c.name())
            ),
        );
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

    async fn send(&self, token: &Token, lead: &CrmLead) -> std::result::Result<Sent, CrmError> {
        let url = format!(
            "{}/services/data/{}/sobjects/Lead/{}/{}",
            token.instance_url, self.cfg.api_version, self.cfg.external_id_field, lead.lead_id
        );
        let body = Self::body(lead);
        retry(self.policy, |_| async {
            let resp = match self
                .http
                .patch(&url)
                .bearer_auth(token.access_token.expose())
                .header("Sforce-Auto-Assign", "FALSE")
                .json(&body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    let retryable = crate::http::retryable_transport(&e);
                    let err = CrmError::Unavailable(e.without_url().to_string());
                    return if retryable {
                        Attempt::Retry(err, None)
                    } else {
                        Attempt::Fail(err)
                    };
                }
            };
            let status = resp.status().as_u16();
            let after = retry_after(resp.headers());
            let bytes = resp.bytes().await.unwrap_or_default();
            match status {
                200 | 201 => {
                    let parsed = serde_json::from_slice::<SfUpsert>(&bytes).ok();
                    Attempt::Done(Sent::Done(Upserted {
                        record_id: parsed.as_ref().and_then(|p| p.id.clone()),
                        created: status == 201 || parsed.and_then(|p| p.created).unwrap_or(false),
                    }))
                }
                204 => Attempt::Done(Sent::Done(Upserted {
                    record_id: None,
                    created: false,
                })),
                401 => Attempt::Done(Sent::Unauthorized),
                300 => {
                    let count = serde_json::from_slice::<Vec<serde_json::Value>>(&bytes)
                        .map_or(2, |v| v.len());
                    Attempt::Fail(CrmError::Ambiguous {
                        lead_id: lead.lead_id.clone(),
                        count,
                    })
                }
                400 | 404 => Attempt::Fail(CrmError::Rejected {
                    lead_id: lead.lead_id.clone(),
                    details: sf_errors(&bytes, status),
                }),
                429 | 500..=599 => Attempt::Retry(
                    CrmError::Unavailable(format!("HTTP {status}: {}", sf_errors(&bytes, status))),
                    after,
                ),
                s => Attempt::Fail(CrmError::Unexpected(format!(
                    "HTTP {s}: {}",
                    sf_errors(&bytes, s)
                ))),
            }
        })
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

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[async_trait]
impl CrmPort for SalesforceCrm {
    async fn upsert(&self, lead: &CrmLead) -> std::result::Result<Upserted, CrmError> {
        let token = self.token(false).await?;
        match self.send(&token, lead).await? {
            Sent::Done(u) => Ok(u),
            Sent::Unauthorized => {
                // The session expired or was revoked: one fresh token, one more try.
                tracing::info!(lead_id = %lead.lead_id, "salesforce token refused; refreshing once");
                let token = self.token(true).await?;
                match self.send(&token, lead).await? {
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

// ------------------------------------------------------------------ built-in sink

/// The built-in CRM sink: CrmTable + JSON-lines export in the artifacts bucket.
#[derive(Clone)]
pub struct SinkCrm {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for SinkCrm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkCrm")
            .field("table", &self.table)
            .finish()
    }
}

impl SinkCrm {
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        store: Arc<dyn ObjectStore>,
    ) -> Self {
        Self {
            dynamodb,
            table: table.into(),
            store,
        }
    }

    /// The export key of a lead.
    pub fn export_key(lead_id: &str) -> String {
        format!("crm/leads/{lead_id}.jsonl")
    }

    /// The stored CRM record of a lead (tests, tools).
    pub async fn get(&self, lead_id: &str) -> Result<Option<(CrmLead, u64)>> {
        let item = crate::aws::dynamo::get_item(
            &self.dynamodb,
            &self.table,
            format!("LEAD#{lead_id}"),
            Some("CRM"),
        )
        .await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let record = item
            .get("record")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| Error::Invalid(format!("CRM record of {lead_id} has no body")))?;
        let lead: CrmLead = serde_json::from_str(record)
            .map_err(|e| Error::Invalid(format!("CRM record of {lead_id}: {e}")))?;
        let revision = item
            .get("revision")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(Some((lead, revision)))
    }
}

#[async_trait]
impl CrmPort for SinkCrm {
    async fn upsert(&self, lead: &CrmLead) -> std::result::Result<Upserted, CrmError> {
        let minimal = lead.without_contact_data();
        let json =
            serde_json::to_string(&minimal).map_err(|e| CrmError::Unexpected(e.to_string()))?;
        let now = chrono::Utc::now().to_rfc3339();
        let out = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("LEAD#{}", lead.lead_id)))
            .key("sk", AttributeValue::S("CRM".into()))
            .update_expression(
                "SET #rec = :rec, owner_id = :owner, grade = :grade, score = :score, \
                 needs_enrichment = :ne, updated_at = :now, created_at = if_not_exists(created_at, :now) \
                 ADD revision :one",
            )
            .expression_attribute_names("#rec", "record")
            .expression_attribute_values(":rec", AttributeValue::S(json.clone()))
            .expression_attribute_values(":owner", AttributeValue::S(lead.owner_id.clone()))
            .expression_attribute_values(":grade", AttributeValue::S(lead.grade.clone()))
            .expression_attribute_values(":score", AttributeValue::N(lead.score.to_string()))
            .expression_attribute_values(":ne", AttributeValue::Bool(lead.needs_enrichment))
            .expression_attribute_values(":now", AttributeValue::S(now))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| CrmError::Store(Error::aws("dynamodb", e)))?;
        let revision: u64 = out
            .attributes()
            .and_then(|a| a.get("revision"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        self.store
            .put(
                &Self::export_key(&lead.lead_id),
                format!("{json}\n").into_bytes(),
                "application/x-ndjson",
            )
            .await?;
        Ok(Upserted {
            record_id: Some(format!("LEAD#{}", lead.lead_id)),
            created: revision == 1,
        })
    }

    fn kind(&self) -> &'static str {
        "sink"
    }
}

// ------------------------------------------------------------------ memory

/// In-memory CRM for tests and benchmarks: records by lead id with an upsert count.
#[derive(Debug, Default)]
pub struct MemoryCrm {
    records: Mutex<BTreeMap<String, (CrmLead, u64)>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemoryCrm {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every upsert fail with a retryable error (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The record of a lead and how many upserts it received.
    pub fn get(&self, lead_id: &str) -> Option<(CrmLead, u64)> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(lead_id)
            .cloned()
    }

    /// Number of distinct records.
    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All records.
    pub fn all(&self) -> Vec<CrmLead> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(l, _)| l.clone())
            .collect()
    }
}

#[async_trait]
impl CrmPort for MemoryCrm {
    async fn upsert(&self, lead: &CrmLead) -> std::result::Result<Upserted, CrmError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(CrmError::Unavailable("CRM down (simulated)".into()));
        }
        let mut map = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(lead.lead_id.clone())
            .or_insert_with(|| (lead.clone(), 0));
        entry.0 = lead.clone();
        entry.1 += 1;
        Ok(Upserted {
            record_id: Some(lead.lead_id.clone()),
            created: entry.1 == 1,
        })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_json, body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    pub(crate) fn lead() -> CrmLead {
        CrmLead {
            lead_id: "ld_0123456789abcdef01234567".into(),
            email: Some("ada@acme.example".into()),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            phone: None,
            title: Some("CTO".into()),
            company: "Acme Corporation".into(),
            company_domain: Some("acme.example".into()),
            industry: Some("Machinery".into()),
            employees: Some(12000),
            employee_band: Some("5001+".into()),
            country: Some("US".into()),
            lead_source: "Contact Us".into(),
            sources: vec!["portal.contact_us".into()],
            score: 88,
            grade: "A".into(),
            score_reasons: "+30 global company".into(),
            owner_id: "005000000000NE1AAA".into(),
            team: Some("na-enterprise".into()),
            routing_reason: "territory rule na-enterprise".into(),
            needs_enrichment: false,
            marketing_opt_in: true,
        }
    }

    fn crm(server: &MockServer) -> SalesforceCrm {
        let mut cfg = SalesforceConfig::new(server.uri(), "v61.0");
        cfg.timeout = Duration::from_secs(2);
        SalesforceCrm::new(
            cfg,
            Secret::new(SalesforceCredentials {
                client_id: "cid".into(),
                client_secret: "csecret".into(),
            }),
        )
        .unwrap()
        .with_retry(RetryPolicy::immediate(3))
    }

    async fn mount_token(server: &MockServer, token: &str, times: u64) {
        Mock::given(method("POST"))
            .and(path("/services/oauth2/token"))
            .and(body_string_contains("grant_type=client_credentials"))
            .and(body_string_contains("client_id=cid"))
            .and(body_string_contains("client_secret=csecret"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": token, "instance_url": server.uri(), "token_type": "Bearer",
                "issued_at": "1700000000000"})))
            .up_to_n_times(times)
            .expect(times)
            .mount(server)
            .await;
    }

    const UPSERT_PATH: &str =
        "/services/data/v61.0/sobjects/Lead/Blapi_Lead_Id__c/ld_0123456789abcdef01234567";

    #[tokio::test]
    async fn upsert_request_shape_and_token_cache() {
        let server = MockServer::start().await;
        mount_token(&server, "tok1", 1).await;
        Mock::given(method("PATCH"))
            .and(path(UPSERT_PATH))
            .and(header("authorization", "Bearer tok1"))
            .and(header("sforce-auto-assign", "FALSE"))
            .and(header("content-type", "application/json"))
            .and(body_json(SalesforceCrm::body(&lead())))
            .respond_with(ResponseTemplate::new(201).set_body_json(
                serde_json::json!({"id": "00Q000000000001", "success": true, "errors": [], "created": true}),
            ))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path(UPSERT_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"id": "00Q000000000001", "success": true, "errors": [], "created": false}),
            ))
            .mount(&server)
            .await;
        let c = crm(&server);
        let u = c.upsert(&lead()).await.unwrap();
        assert_eq!(
            u,
            Upserted {
                record_id: Some("00Q000000000001".into()),
                created: true
            }
        );
        let u = c.upsert(&lead()).await.unwrap();
        assert!(!u.created);
        assert_eq!(c.token_requests(), 1, "token cached between upserts");

        // The body: our owner, no external id field, individuals get required placeholders.
        let body = SalesforceCrm::body(&lead());
        assert_eq!(body["OwnerId"], "005000000000NE1AAA");
        assert_eq!(body["LastName"], "Lovelace");
        assert_eq!(body["Country"], "United States");
        assert_eq!(body["HasOptedOutOfEmail"], false);
        assert!(body.get("Blapi_Lead_Id__c").is_none());
        assert!(body.get("Phone").is_none(), "absent fields are not sent");
        let reqs: Vec<Request> = server.received_requests().await.unwrap();
        let patch = reqs.iter().find(|r| r.method.as_str() == "PATCH").unwrap();
        assert_eq!(patch.url.path(), UPSERT_PATH);
    }

    #[tokio::test]
    async fn no_content_is_an_update() {
        let server = MockServer::start().await;
        mount_token(&server, "tok", 1).await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        let u = crm(&server).upsert(&lead()).await.unwrap();
        assert!(!u.created);
    }

    #[tokio::test]
    async fn unauthorized_refreshes_the_token_once() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/services/oauth2/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"access_token": "stale", "instance_url": server.uri()}),
            ))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        mount_token(&server, "fresh", 1).await;
        Mock::given(method("PATCH"))
            .and(header("authorization", "Bearer stale"))
            .respond_with(ResponseTemplate::new(401).set_body_json(
                serde_json::json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]),
            ))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(header("authorization", "Bearer fresh"))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(serde_json::json!({"id": "00Q1", "created": true})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let c = crm(&server);
        assert!(c.upsert(&lead()).await.unwrap().created);
        assert_eq!(c.token_requests(), 2);
    }

    #[tokio::test]
    async fn unauthorized_twice_is_an_auth_error() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/services/oauth2/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"access_token": "t", "instance_url": server.uri()}),
            ))
            .expect(2)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(401))
            .expect(2)
            .mount(&server)
            .await;
        let e = crm(&server).upsert(&lead()).await.unwrap_err();
        assert!(matches!(e, CrmError::Auth(_)), "{e:?}");
        assert!(!Error::from(e).is_retryable());
    }

    #[tokio::test]
    async fn ambiguous_match_and_field_errors_are_reported_clearly() {
        let server = MockServer::start().await;
        mount_token(&server, "tok", 1).await;
        Mock::given(method("PATCH"))
            .and(path(UPSERT_PATH))
            .respond_with(ResponseTemplate::new(300).set_body_json(serde_json::json!([
                "/services/data/v61.0/sobjects/Lead/00Q1",
                "/services/data/v61.0/sobjects/Lead/00Q2"
            ])))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path(UPSERT_PATH))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!([
                {"message": "Owner ID: id value of incorrect type", "errorCode": "MALFORMED_ID", "fields": ["OwnerId"]}])))
            .mount(&server)
            .await;
        let c = crm(&server);
        let e = c.upsert(&lead()).await.unwrap_err();
        assert!(matches!(e, CrmError::Ambiguous { count: 2, .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("2 CRM records match external id ld_0123456789abcdef01234567")
        );
        assert!(!Error::from(e).is_retryable());
        let e = c.upsert(&lead()).await.unwrap_err();
        assert!(matches!(e, CrmError::Rejected { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("MALFORMED_ID [OwnerId]: Owner ID: id value of incorrect type"),
            "{e}"
        );
        assert!(!Error::from(e).is_retryable());
    }

    #[tokio::test]
    async fn unavailable_is_retried_then_retryable() {
        let server = MockServer::start().await;
        mount_token(&server, "tok", 1).await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(503).set_body_json(
                serde_json::json!([{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}]),
            ))
            .expect(3)
            .mount(&server)
            .await;
        let e = crm(&server).upsert(&lead()).await.unwrap_err();
        assert!(matches!(e, CrmError::Unavailable(_)), "{e:?}");
        assert!(
            Error::from(e).is_retryable(),
            "SQS redelivers the lead later"
        );
    }

    #[tokio::test]
    async fn bad_credentials_are_an_auth_error_without_the_secret() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/services/oauth2/token"))
            .respond_with(ResponseTemplate::new(400).set_body_json(
                serde_json::json!({"error": "invalid_client", "error_description": "invalid client credentials"}),
            ))
            .mount(&server)
            .await;
        let e = crm(&server).upsert(&lead()).await.unwrap_err();
        assert!(matches!(e, CrmError::Auth(_)));
        assert!(e.to_string().contains("invalid_client") && !e.to_string().contains("csecret"));
    }

    #[tokio::test]
    async fn memory_crm_counts_upserts() {
        let c = MemoryCrm::new();
        assert!(c.upsert(&lead()).await.unwrap().created);
        assert!(!c.upsert(&lead()).await.unwrap().created);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&lead().lead_id).unwrap().1, 2);
        let m = lead().without_contact_data();
        assert!(
            m.email.is_none()
                && m.first_name.is_none()
                && m.last_name.is_none()
                && m.title.is_none()
        );
    }
}
