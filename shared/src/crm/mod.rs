//! The CRM: one port, upsert records once by their external ids, whatever the CRM is. It knows
//! no domain: the records are CRM objects ([`CrmRecord`]: Lead, Account, Contact, Opportunity,
//! Task, the link of a converted lead and an account's health) carrying parsed values
//! ([`crate::values`]).
//!
//! # Layout
//! - `mod.rs`: the port [`CrmPort`], [`CrmRecord`], [`Upserted`], [`CrmError`], [`CrmConfig`].
//! - [`records`]: the customer objects ([`CrmAccount`], [`CrmContact`], [`CrmOpportunity`],
//!   [`LeadConversion`], [`AccountHealth`], [`CrmTask`]).
//! - [`salesforce`]: [`SalesforceCrm`] (OAuth client credentials, upsert by external id).
//! - [`sink`]: [`SinkCrm`], the built-in CRM (DynamoDB + S3 JSON lines).
//! - [`memory`]: [`MemoryCrm`], the fake for tests and benchmarks.
//!
//! Adapters:
//! - [`SalesforceCrm`] (when `SALESFORCE_LOGIN_URL` is set): OAuth 2.0 client credentials
//!   against `{login}/services/oauth2/token`, the token cached until it expires and refreshed
//!   once on a 401; upsert with `PATCH {instance}/services/data/{version}/sobjects/{Object}/
//!   {ExternalIdField}/{id}` and `Sforce-Auto-Assign: FALSE` (we chose the owner).
//!   201 = created, 200/204 = updated, 300 = several records carry the id (nothing written),
//!   400 = field errors (but `REQUIRED_FIELD_MISSING` for a lead conversion or an account's
//!   health means the lead or account is not there yet: retryable), 429/5xx = retried then
//!   reported retryable. Several records go in one Composite request
//!   ([`CrmPort::upsert_all`]: up to 25 subrequests, one API call against the org's daily
//!   limit); a record refused there fails alone, named with its fields.
//! - [`SinkCrm`], the built-in sink when no Salesforce is configured: one item per lead in the
//!   CrmTable (`pk = LEAD#<id>`, `sk = CRM`) plus a JSON-lines export object per lead at
//!   `crm/leads/<id>.jsonl` in the artifacts bucket (the latest state; the prefix read as a
//!   whole is the JSON-lines export of all leads).
//!   **Personal data there is kept minimal**: the sink stores the lead id, owner, team, score,
//!   grade and reasons, the company (name, domain, industry, size), the country and the
//!   source — never the e-mail, names, phone or title. Those stay in the LeadsTable lead
//!   record (erasable by subject), reached with the lead id.
//!   The other objects the same way (`ACCOUNT#`, `CONTACT#`, `OPPORTUNITY#`, `TASK#`); a lead
//!   conversion and an account's health are attributes on the lead's and the account's item
//!   (`converted_account`, `health_*`), never a record of their own.
//! - [`MemoryCrm`] for tests and benchmarks.
//!
//! The upsert is idempotent by construction: the key is the lead id, so a redelivered lead
//! updates the same record.

pub mod memory;
pub mod records;
pub mod salesforce;
pub mod sink;

pub use records::{
    AccountHealth, AccountStatus, ConsentChange, CrmAccount, CrmContact, CrmOpportunity, CrmTask,
    LeadConversion, OpportunityStage,
};

pub use memory::MemoryCrm;
pub use salesforce::{SalesforceConfig, SalesforceCredentials, SalesforceCrm};
pub use sink::SinkCrm;

use crate::error::Error;
use crate::values::Country;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A lead as the CRM receives it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
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
    pub country: Option<Country>,
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
        "{count} CRM records match external id {external_id}; nothing written (merge the duplicates)"
    )]
    Ambiguous { external_id: String, count: usize },
    /// Salesforce 400: the record was refused (field errors).
    #[error("CRM refused record {external_id}: {details}")]
    Rejected {
        external_id: String,
        details: String,
    },
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

/// The CRM objects blapi writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CrmObject {
    Lead,
    Account,
    Contact,
    Opportunity,
    Task,
}

impl CrmObject {
    /// The Salesforce sObject name.
    pub fn sobject(self) -> &'static str {
        match self {
            CrmObject::Lead => "Lead",
            CrmObject::Account => "Account",
            CrmObject::Contact => "Contact",
            CrmObject::Opportunity => "Opportunity",
            CrmObject::Task => "Task",
        }
    }

    /// The built-in sink's key prefix (`LEAD#{id}`) and export folder (`crm/leads/`).
    pub fn sink_names(self) -> (&'static str, &'static str) {
        match self {
            CrmObject::Lead => ("LEAD", "leads"),
            CrmObject::Account => ("ACCOUNT", "accounts"),
            CrmObject::Contact => ("CONTACT", "contacts"),
            CrmObject::Opportunity => ("OPPORTUNITY", "opportunities"),
            CrmObject::Task => ("TASK", "tasks"),
        }
    }
}

/// One record to upsert, by object.
#[derive(Debug, Clone, PartialEq)]
pub enum CrmRecord {
    Lead(CrmLead),
    Account(CrmAccount),
    Contact(CrmContact),
    Opportunity(CrmOpportunity),
    /// Marks a lead converted and links it to its account (writes the Lead object).
    LeadConversion(LeadConversion),
    /// A customer's health on its account (writes only the health fields of the Account
    /// object; the account itself is written by [`CrmRecord::Account`]).
    AccountHealth(AccountHealth),
    /// A follow-up task for an account's owner.
    Task(CrmTask),
    /// A person's opt-out choice on their lead or contact (only that field).
    Consent(ConsentChange),
}

impl CrmRecord {
    pub fn object(&self) -> CrmObject {
        match self {
            CrmRecord::Lead(_) | CrmRecord::LeadConversion(_) => CrmObject::Lead,
            CrmRecord::Account(_) | CrmRecord::AccountHealth(_) => CrmObject::Account,
            CrmRecord::Contact(_) => CrmObject::Contact,
            CrmRecord::Opportunity(_) => CrmObject::Opportunity,
            CrmRecord::Task(_) => CrmObject::Task,
            CrmRecord::Consent(c) => c.object,
        }
    }

    /// Our id of the record: the CRM's external id.
    pub fn external_id(&self) -> &str {
        match self {
            CrmRecord::Lead(l) => &l.lead_id,
            CrmRecord::LeadConversion(c) => &c.lead_id,
            CrmRecord::Account(a) => &a.external_id,
            CrmRecord::Contact(c) => &c.external_id,
            CrmRecord::Opportunity(o) => &o.external_id,
            CrmRecord::AccountHealth(h) => &h.account_external_id,
            CrmRecord::Task(t) => &t.external_id,
            CrmRecord::Consent(c) => &c.external_id,
        }
    }

    /// `{object}:{external id}`: how logs and change detection name a record (no personal
    /// data: contact ids are hashes).
    pub fn key(&self) -> String {
        let kind = match self {
            CrmRecord::LeadConversion(_) => "LeadConversion",
            CrmRecord::AccountHealth(_) => "AccountHealth",
            CrmRecord::Consent(_) => "Consent",
            other => other.object().sobject(),
        };
        format!("{kind}:{}", self.external_id())
    }
}

/// The CRM port.
#[async_trait]
pub trait CrmPort: Send + Sync {
    /// Creates or updates the record carrying `record.external_id()`.
    async fn upsert(&self, record: &CrmRecord) -> std::result::Result<Upserted, CrmError>;

    /// Upserts several records, in order (an account before the contacts that point at it).
    /// Every record is attempted; the first failure is returned after the others were
    /// written. Salesforce sends them in one Composite request.
    async fn upsert_all(
        &self,
        records: &[CrmRecord],
    ) -> std::result::Result<Vec<Upserted>, CrmError> {
        let mut out = Vec::with_capacity(records.len());
        let mut first_error = None;
        for r in records {
            match self.upsert(r).await {
                Ok(u) => out.push(u),
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(_) => {}
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Erases the record of `object` carrying `external_id` (a privacy erasure): `true` when
    /// there was one. Idempotent: erasing a missing record is `false`, not an error.
    async fn erase(
        &self,
        object: CrmObject,
        external_id: &str,
    ) -> std::result::Result<bool, CrmError>;

    /// The record of `object` carrying `external_id` as the CRM holds it (a privacy access
    /// request's export), or `None`.
    async fn fetch(
        &self,
        object: CrmObject,
        external_id: &str,
    ) -> std::result::Result<Option<serde_json::Value>, CrmError>;

    /// A short name for logs (`salesforce`, `sink`, `memory`).
    fn kind(&self) -> &'static str;
}

/// Which CRM the functions write to: Salesforce when `SALESFORCE_LOGIN_URL` is set (then
/// `SALESFORCE_API_VERSION`, e.g. `v61.0`, and `SALESFORCE_SECRET_ID`, JSON `{"client_id",
/// "client_secret"}`, are required; `SALESFORCE_EXTERNAL_ID_FIELD` names the Lead's external
/// id field), else the built-in sink on `CRM_TABLE`.
#[derive(Debug, Clone)]
pub enum CrmConfig {
    Sink {
        table: String,
    },
    Salesforce {
        config: SalesforceConfig,
        secret_id: String,
    },
}

impl CrmConfig {
    pub fn from_env(env: &crate::config::Env) -> crate::Result<Self> {
        if env.optional("SALESFORCE_LOGIN_URL").is_none() {
            return Ok(CrmConfig::Sink {
                table: env.required("CRM_TABLE")?,
            });
        }
        let login = env.url("SALESFORCE_LOGIN_URL")?;
        let version = env.required("SALESFORCE_API_VERSION")?;
        if !version.starts_with('v') {
            return Err(Error::Config(crate::config::ConfigError::Malformed {
                name: "SALESFORCE_API_VERSION".into(),
                reason: "expected the form v61.0".into(),
            }));
        }
        let secret_id = env.required("SALESFORCE_SECRET_ID")?;
        let mut config = SalesforceConfig::new(login, version);
        if let Some(field) = env.optional("SALESFORCE_EXTERNAL_ID_FIELD") {
            config.external_id_field = field;
        }
        Ok(CrmConfig::Salesforce { config, secret_id })
    }

    /// The adapter: the sink on DynamoDB + `store`, or Salesforce with its credentials read
    /// once from Secrets Manager. `retry` overrides the Salesforce retry policy (tests).
    pub async fn connect(
        &self,
        clients: &crate::aws::Clients,
        store: std::sync::Arc<dyn crate::storage::ObjectStore>,
        retry: Option<crate::retry::RetryPolicy>,
    ) -> crate::Result<std::sync::Arc<dyn CrmPort>> {
        match self {
            CrmConfig::Sink { table } => {
                tracing::info!("no SALESFORCE_LOGIN_URL: records go to the built-in CRM sink");
                Ok(std::sync::Arc::new(SinkCrm::new(
                    clients.dynamodb().clone(),
                    table.clone(),
                    store,
                )))
            }
            CrmConfig::Salesforce { config, secret_id } => {
                let creds = crate::secrets::load_json::<SalesforceCredentials>(
                    clients.secrets(),
                    secret_id,
                )
                .await?;
                let mut crm = SalesforceCrm::new(config.clone(), creds)?;
                if let Some(policy) = retry {
                    crm = crm.with_retry(policy);
                }
                Ok(std::sync::Arc::new(crm))
            }
        }
    }
}

/// Truncates to at most `max` bytes on a character boundary (CRM field limits).
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
pub(crate) mod tests;

impl CrmRecord {
    /// A short digest of the record's content: a caller that remembers the fingerprint of
    /// what it last wrote skips a write that would change nothing.
    pub fn fingerprint(&self) -> String {
        crate::ledger::payload_hash(format!("{self:?}").as_bytes())[..16].to_owned()
    }
}
