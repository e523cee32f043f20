//! The CRM: one port, upsert a record once by its external id, whatever the CRM is. It knows
//! no domain: the records are CRM objects ([`CrmRecord`]: a Lead today; customer sync adds
//! Account, Contact and Opportunity) carrying parsed values ([`crate::values::Country`]).
//!
//! # Layout
//! - `mod.rs`: the port [`CrmPort`], the records, [`Upserted`], [`CrmError`].
//! - [`salesforce`]: [`SalesforceCrm`] (OAuth client credentials, upsert by external id).
//! - [`sink`]: [`SinkCrm`], the built-in CRM (DynamoDB + S3 JSON lines).
//! - [`memory`]: [`MemoryCrm`], the fake for tests and benchmarks.
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

pub mod memory;
pub mod salesforce;
pub mod sink;

pub use memory::MemoryCrm;
pub use salesforce::{SalesforceConfig, SalesforceCredentials, SalesforceCrm};
pub use sink::SinkCrm;

use crate::error::Error;
use crate::values::Country;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
        "{count} CRM records match external id {lead_id}; nothing written (merge the duplicates)"
    )]
    Ambiguous { lead_id: String, count: usize },
    /// Salesforce 400: the record was refused (field errors).
    #[error("CRM refused record {lead_id}: {details}")]
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

/// The CRM objects blapi writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrmObject {
    Lead,
}

impl CrmObject {
    /// The Salesforce sObject name.
    pub fn sobject(self) -> &'static str {
        match self {
            CrmObject::Lead => "Lead",
        }
    }

    /// The built-in sink's key prefix (`LEAD#{id}`) and export folder (`crm/leads/`).
    pub fn sink_names(self) -> (&'static str, &'static str) {
        match self {
            CrmObject::Lead => ("LEAD", "leads"),
        }
    }
}

/// One record to upsert, by object.
#[derive(Debug, Clone, PartialEq)]
pub enum CrmRecord {
    Lead(CrmLead),
}

impl CrmRecord {
    pub fn object(&self) -> CrmObject {
        match self {
            CrmRecord::Lead(_) => CrmObject::Lead,
        }
    }

    /// Our id of the record: the CRM's external id.
    pub fn external_id(&self) -> &str {
        match self {
            CrmRecord::Lead(l) => &l.lead_id,
        }
    }
}

/// The CRM port.
#[async_trait]
pub trait CrmPort: Send + Sync {
    /// Creates or updates the record carrying `record.external_id()`.
    async fn upsert(&self, record: &CrmRecord) -> std::result::Result<Upserted, CrmError>;
    /// A short name for logs (`salesforce`, `sink`, `memory`).
    fn kind(&self) -> &'static str;
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
