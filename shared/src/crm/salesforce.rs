//! The Salesforce adapter: OAuth 2.0 client credentials (token cached, refreshed once on a
//! 401), upsert by external id with `PATCH .../sobjects/{Object}/{ExternalIdField}/{id}` and
//! `Sforce-Auto-Assign: FALSE`. See the module docs of [`super`] for the answers it handles.

use super::{CrmError, CrmLead, CrmObject, CrmPort, CrmRecord, Upserted, truncate};
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
    /// The Account external id field (holds the Stripe customer id).
    pub account_external_id_field: String,
    /// The Contact external id field (holds a hash of the e-mail).
    pub contact_external_id_field: String,
    /// The Opportunity external id field (`{subscription}:{term start}`).
    pub opportunity_external_id_field: String,
    /// The Task external id field (an Activity custom field marked External ID).
    pub task_external_id_field: String,
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
            account_external_id_field: "Blapi_Stripe_Customer_Id__c".into(),
            contact_external_id_field: "Blapi_Contact_Key__c".into(),
            opportunity_external_id_field: "Blapi_Opportunity_Key__c".into(),
            task_external_id_field: "Blapi_Task_Key__c".into(),
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

/// One Salesforce error entry: `[{"message", "errorCode", "fields"}]`. The message is not
/// read: it may quote a field's value.
#[derive(Deserialize)]
struct SfError {
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

enum Sent<T> {
    Done(T),
    Unauthorized,
}

/// Most subrequests in one Composite request.
pub const COMPOSITE_LIMIT: usize = 25;

#[derive(Deserialize)]
struct CompositeResponse {
    #[serde(rename = "compositeResponse")]
    composite_response: Vec<SubResponse>,
}

#[derive(Deserialize)]
struct SubResponse {
    #[serde(default)]
    body: serde_json::Value,
    #[serde(rename = "httpStatusCode")]
    http_status_code: u16,
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
        if !force && let Some(t) = slot.as_ref().filter(|t| t.expires > Instant::now()) {
            return Ok(t.clone());
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
    fn external_id_field(&self, object: CrmObject) -> &str {
        match object {
            CrmObject::Lead => &self.cfg.external_id_field,
            CrmObject::Account => &self.cfg.account_external_id_field,
            CrmObject::Contact => &self.cfg.contact_external_id_field,
            CrmObject::Opportunity => &self.cfg.opportunity_external_id_field,
            CrmObject::Task => &self.cfg.task_external_id_field,
        }
    }

    /// `/services/data/{version}/sobjects/{Object}/{ExternalIdField}/{id}`.
    pub fn record_path(&self, record: &CrmRecord) -> String {
        let object = record.object();
        format!(
            "/services/data/{}/sobjects/{}/{}/{}",
            self.cfg.api_version,
            object.sobject(),
            self.external_id_field(object),
            record.external_id()
        )
    }

    /// The fields sent for a record (the external id is in the path, not the body). A lookup
    /// to an account names it by its external id, so no Salesforce id is needed first.
    ///
    /// An account's health writes only the `Blapi_Health_*`, `Blapi_Active_Users__c`,
    /// `Blapi_Licensed_Seats__c` and `Blapi_Usage_Summary__c` fields of the Account (empty
    /// values as null, so a score that can no longer be computed is cleared). A task is linked
    /// to its account through the polymorphic `What` lookup, by the account's external id.
    pub fn record_body(&self, record: &CrmRecord) -> serde_json::Value {
        use serde_json::json;
        let account = |id: &str| json!({ self.cfg.account_external_id_field.as_str(): id });
        let flags = |f: &[String]| (!f.is_empty()).then(|| f.join(";"));
        match record {
            CrmRecord::Lead(lead) => Self::body(lead),
            CrmRecord::LeadConversion(c) => json!({
                "Status": "Converted",
                "Converted_Account__r": account(&c.account_external_id),
            }),
            CrmRecord::Account(a) => json!({
                "Name": truncate(&a.name, 255),
                "Website": a.domains.first(),
                "Company_Domains__c": (!a.domains.is_empty()).then(|| a.domains.join(", ")),
                "BillingCountry": a.billing_country.map(|c| c.name()),
                "OwnerId": a.owner_id,
                "Lifecycle_Status__c": a.status.as_str(),
                // Sent even when empty, so a revoked license or a refund cleared later shows.
                "License_Id__c": a.license_id,
                "License_Expires__c": a.license_expires,
                "Last_Invoice_Id__c": a.last_invoice_id,
                "Last_Invoice_Total__c": a.last_invoice_total.as_ref().map(super::records::major_units),
                "Refund_Or_Dispute__c": flags(&a.flags),
            }),
            CrmRecord::Contact(c) => {
                let mut b = json!({
                    "LastName": c.last_name.clone().unwrap_or_else(|| "[not provided]".into()),
                    "Account": account(&c.account_external_id),
                    "Lead_Id__c": c.lead_id,
                });
                if let Some(map) = b.as_object_mut() {
                    if let Some(f) = &c.first_name {
                        map.insert("FirstName".into(), json!(f));
                    }
                    if let Some(e) = &c.email {
                        map.insert("Email".into(), json!(e));
                    }
                }
                b
            }
            CrmRecord::Opportunity(o) => json!({
                "Name": truncate(&o.name, 120),
                "StageName": o.stage.as_str(),
                "CloseDate": o.close_date,
                "Amount": o.amount.as_ref().map(super::records::major_units),
                "Account": account(&o.account_external_id),
                "OwnerId": o.owner_id,
                "Seats__c": o.seats,
                "SKU__c": o.sku,
                "License_Id__c": o.license_id,
                "Subscription_Id__c": o.subscription_id,
                "Loss_Reason__c": o.loss_reason,
                "Refund_Or_Dispute__c": flags(&o.flags),
            }),
            CrmRecord::Consent(c) => json!({ "HasOptedOutOfEmail": c.opted_out }),
            CrmRecord::AccountHealth(h) => json!({
                "Blapi_Health_Score__c": h.score,
                "Blapi_Health_Band__c": h.band,
                "Blapi_Health_Reasons__c": truncate(&h.reasons, 1000),
                "Blapi_Health_Scored_On__c": h.scored_on,
                "Blapi_Active_Users__c": h.active_users,
                "Blapi_Licensed_Seats__c": h.licensed_seats,
                "Blapi_Usage_Summary__c": truncate(&h.usage_summary, 255),
            }),
            CrmRecord::Task(t) => {
                let mut what = account(&t.account_external_id);
                if let Some(map) = what.as_object_mut() {
                    map.insert("attributes".into(), json!({"type": "Account"}));
                }
                json!({
                    "Subject": truncate(&t.subject, 255),
                    "Description": truncate(&t.description, 32000),
                    "ActivityDate": t.due_date,
                    "Priority": t.priority,
                    "Status": "Not Started",
                    "OwnerId": t.owner_id,
                    "What": what,
                })
            }
        }
    }

    async fn send(
        &self,
        token: &Token,
        record: &CrmRecord,
    ) -> std::result::Result<Sent<Upserted>, CrmError> {
        let external_id = record.external_id();
        let url = format!("{}{}", token.instance_url, self.record_path(record));
        let body = self.record_body(record);
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
                            external_id: external_id.to_owned(),
                            count,
                        })
                    }
                    400 | 404 => {
                        Attempt::Fail(not_there_yet(record, status, bytes).unwrap_or_else(|| {
                            CrmError::Rejected {
                                external_id: external_id.to_owned(),
                                details: sf_errors(bytes, status),
                            }
                        }))
                    }
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

impl SalesforceCrm {
    /// `DELETE` by external id: 204 erased, 404 not there (already erased), 401 for a fresh
    /// token, the rest as an upsert's answer. Salesforce's recycle bin keeps a deleted record
    /// 15 days; the org's admin empties it (or sets a shorter retention) for an erasure to be
    /// final.
    /// `DELETE` (erase) or `GET` (fetch) of one record by its external id: the body when it
    /// was there, `None` when Salesforce says 404.
    async fn by_external_id(
        &self,
        token: &Token,
        method: reqwest::Method,
        object: CrmObject,
        external_id: &str,
    ) -> std::result::Result<Sent<Option<Vec<u8>>>, CrmError> {
        let url = format!(
            "{}/services/data/{}/sobjects/{}/{}/{}",
            token.instance_url,
            self.cfg.api_version,
            object.sobject(),
            self.external_id_field(object),
            external_id
        );
        crate::http::send_with_retry(
            self.policy,
            || {
                self.http
                    .request(method.clone(), &url)
                    .bearer_auth(token.access_token.expose())
            },
            |_, message| CrmError::Unavailable(message),
            |reply| {
                let status = reply.status.as_u16();
                match status {
                    200 | 204 => Attempt::Done(Sent::Done(Some(reply.body.to_vec()))),
                    404 => Attempt::Done(Sent::Done(None)),
                    401 => Attempt::Done(Sent::Unauthorized),
                    _ if reply.retryable() => Attempt::Retry(
                        CrmError::Unavailable(format!(
                            "HTTP {status}: {}",
                            sf_errors(&reply.body, status)
                        )),
                        reply.retry_after,
                    ),
                    s => Attempt::Fail(CrmError::Rejected {
                        external_id: external_id.to_owned(),
                        details: sf_errors(&reply.body, s),
                    }),
                }
            },
        )
        .await
    }

    /// One Composite request (`allOrNone: false`) upserting `records` in order. Each
    /// subrequest's answer is mapped like a single upsert's; a refused record is reported with
    /// its error codes and fields only (Salesforce's messages may quote the values, which can
    /// be personal data).
    async fn send_composite(
        &self,
        token: &Token,
        records: &[CrmRecord],
    ) -> std::result::Result<Sent<Vec<std::result::Result<Upserted, CrmError>>>, CrmError> {
        let url = format!(
            "{}/services/data/{}/composite",
            token.instance_url, self.cfg.api_version
        );
        let subrequests: Vec<serde_json::Value> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                serde_json::json!({
                    "method": "PATCH",
                    "url": self.record_path(r),
                    "referenceId": format!("r{i}"),
                    "body": self.record_body(r),
                })
            })
            .collect();
        let body = serde_json::json!({"allOrNone": false, "compositeRequest": subrequests});
        crate::http::send_with_retry(
            self.policy,
            || {
                self.http
                    .post(&url)
                    .bearer_auth(token.access_token.expose())
                    .header("Sforce-Auto-Assign", "FALSE")
                    .json(&body)
            },
            |_, message| CrmError::Unavailable(message),
            |reply| match reply.status.as_u16() {
                200 => match reply.json::<CompositeResponse>() {
                    Ok(c) if c.composite_response.len() == records.len() => {
                        Attempt::Done(Sent::Done(
                            c.composite_response
                                .iter()
                                .zip(records)
                                .map(|(sub, r)| sub_result(sub, r))
                                .collect(),
                        ))
                    }
                    Ok(c) => Attempt::Fail(CrmError::Unexpected(format!(
                        "composite answered {} results for {} records",
                        c.composite_response.len(),
                        records.len()
                    ))),
                    Err(e) => Attempt::Fail(CrmError::Unexpected(format!("composite: {e}"))),
                },
                401 => Attempt::Done(Sent::Unauthorized),
                s if reply.retryable() => Attempt::Retry(
                    CrmError::Unavailable(format!("composite HTTP {s}")),
                    reply.retry_after,
                ),
                s => Attempt::Fail(CrmError::Unexpected(format!(
                    "composite HTTP {s}: {}",
                    sf_error_codes(&reply.body, s)
                ))),
            },
        )
        .await
    }
}

/// One subrequest's answer as an upsert result.
fn sub_result(sub: &SubResponse, record: &CrmRecord) -> std::result::Result<Upserted, CrmError> {
    let status = sub.http_status_code;
    let bytes = serde_json::to_vec(&sub.body).unwrap_or_default();
    match status {
        200 | 201 => {
            let parsed = serde_json::from_value::<SfUpsert>(sub.body.clone()).ok();
            Ok(Upserted {
                record_id: parsed.as_ref().and_then(|p| p.id.clone()),
                created: status == 201 || parsed.and_then(|p| p.created).unwrap_or(false),
            })
        }
        204 => Ok(Upserted {
            record_id: None,
            created: false,
        }),
        300 => Err(CrmError::Ambiguous {
            external_id: record.key(),
            count: sub.body.as_array().map_or(2, Vec::len),
        }),
        429 | 500..=599 => Err(CrmError::Unavailable(format!(
            "{}: HTTP {status}",
            record.key()
        ))),
        _ => Err(
            not_there_yet(record, status, &bytes).unwrap_or_else(|| CrmError::Rejected {
                external_id: record.key(),
                details: sf_error_codes(&bytes, status),
            }),
        ),
    }
}

/// A record that writes onto another one, refused because that one does not exist yet: the
/// upsert by external id tried to create it and missed its required fields. Linking a lead
/// that is not in Salesforce yet (lead-enrichment brings it), or scoring an account that is
/// not there yet (customer-sync creates it), is worth trying again later, not a refusal.
fn not_there_yet(record: &CrmRecord, status: u16, bytes: &[u8]) -> Option<CrmError> {
    let what = match record {
        CrmRecord::LeadConversion(_) => "the lead",
        CrmRecord::AccountHealth(_) => "the account",
        _ => return None,
    };
    (status == 400 && sf_error_codes(bytes, status).contains("REQUIRED_FIELD_MISSING"))
        .then(|| CrmError::Unavailable(format!("{}: {what} is not in the CRM yet", record.key())))
}

/// Salesforce's error codes and field names, without the messages.
fn sf_error_codes(bytes: &[u8], status: u16) -> String {
    match serde_json::from_slice::<Vec<SfError>>(bytes) {
        Ok(errs) if !errs.is_empty() => errs
            .iter()
            .map(|e| {
                if e.fields.is_empty() {
                    e.error_code.clone()
                } else {
                    format!("{} [{}]", e.error_code, e.fields.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => format!("HTTP {status}"),
    }
}

impl SalesforceCrm {
    /// [`Self::by_external_id`] with one fresh token after a 401.
    async fn one_by_external_id(
        &self,
        method: reqwest::Method,
        object: CrmObject,
        external_id: &str,
    ) -> std::result::Result<Option<Vec<u8>>, CrmError> {
        let token = self.token(false).await?;
        match self
            .by_external_id(&token, method.clone(), object, external_id)
            .await?
        {
            Sent::Done(found) => Ok(found),
            Sent::Unauthorized => {
                let token = self.token(true).await?;
                match self
                    .by_external_id(&token, method, object, external_id)
                    .await?
                {
                    Sent::Done(found) => Ok(found),
                    Sent::Unauthorized => {
                        Err(CrmError::Auth("HTTP 401 even with a fresh token".into()))
                    }
                }
            }
        }
    }
}

/// What a refusal says: codes and field names only. Salesforce's messages may quote a field's
/// value (an email, a name), which must not reach a log line or a dead-letter reason.
fn sf_errors(bytes: &[u8], status: u16) -> String {
    sf_error_codes(bytes, status)
}

#[async_trait]
impl CrmPort for SalesforceCrm {
    async fn erase(
        &self,
        object: CrmObject,
        external_id: &str,
    ) -> std::result::Result<bool, CrmError> {
        Ok(self
            .one_by_external_id(reqwest::Method::DELETE, object, external_id)
            .await?
            .is_some())
    }

    async fn fetch(
        &self,
        object: CrmObject,
        external_id: &str,
    ) -> std::result::Result<Option<serde_json::Value>, CrmError> {
        self.one_by_external_id(reqwest::Method::GET, object, external_id)
            .await?
            .map(|body| {
                serde_json::from_slice(&body).map_err(|e| {
                    CrmError::Unexpected(format!(
                        "salesforce record: {}",
                        crate::error::json_error(&e)
                    ))
                })
            })
            .transpose()
    }

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

    async fn upsert_all(
        &self,
        records: &[CrmRecord],
    ) -> std::result::Result<Vec<Upserted>, CrmError> {
        let mut out = Vec::with_capacity(records.len());
        let mut first_error = None;
        for chunk in records.chunks(COMPOSITE_LIMIT) {
            let token = self.token(false).await?;
            let results = match self.send_composite(&token, chunk).await? {
                Sent::Done(r) => r,
                Sent::Unauthorized => {
                    tracing::info!("salesforce token refused; refreshing once");
                    let token = self.token(true).await?;
                    match self.send_composite(&token, chunk).await? {
                        Sent::Done(r) => r,
                        Sent::Unauthorized => {
                            return Err(CrmError::Auth("HTTP 401 even with a fresh token".into()));
                        }
                    }
                }
            };
            for r in results {
                match r {
                    Ok(u) => out.push(u),
                    Err(e) => {
                        tracing::warn!(error = %e, "salesforce refused one record of a composite");
                        // A retryable failure wins: the message is retried as a whole.
                        let retryable = matches!(e, CrmError::Unavailable(_));
                        if first_error.is_none()
                            || (retryable && !matches!(first_error, Some(CrmError::Unavailable(_))))
                        {
                            first_error = Some(e);
                        }
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn kind(&self) -> &'static str {
        "salesforce"
    }
}
