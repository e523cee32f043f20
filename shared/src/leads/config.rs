//! Everything lead-enrichment reads from its environment, read once and typed: a missing or
//! malformed variable fails the cold start with its name.
//!
//! - `LEADS_TABLE`, `CRM_TABLE`, `LEDGER_TABLE`, `ARTIFACTS_BUCKET`: resources.
//! - `ENRICHMENT_API_BASE`: the provider's base URL (`https://...`, with the key from
//!   `ENRICHMENT_SECRET_ID`, JSON `{"api_key"}`), **or** `fixture:` to answer from the bundled
//!   fixture `shared/data/enrichment-fixture.json` (the demo, no HTTP and no key), or
//!   `fixture:<path>` for a fixture file of the same shape.
//! - `ENRICHMENT_TIMEOUT_MS` (optional, default 3000): per provider attempt.
//! - `SALESFORCE_LOGIN_URL`: My Domain URL; empty = the built-in CRM sink. With it,
//!   `SALESFORCE_API_VERSION` (e.g. `v61.0`) and `SALESFORCE_SECRET_ID` (JSON
//!   `{"client_id", "client_secret"}`) are required; `SALESFORCE_EXTERNAL_ID_FIELD` is optional
//!   (default `Blapi_Lead_Id__c`).
//! - `METRICS_NAMESPACE` (optional, default `blapi`).

use crate::config::Env;
use crate::crm::CrmConfig;
use crate::error::Result;
use crate::retry::RetryPolicy;
use std::time::Duration;

/// The value of `ENRICHMENT_API_BASE` that selects the bundled fixture.
pub const FIXTURE_SCHEME: &str = "fixture:";

/// Where company data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrichmentSource {
    /// The bundled fixture (`None`) or a fixture file.
    Fixture(Option<String>),
    /// The HTTP provider.
    Http {
        base_url: String,
        secret_id: String,
        timeout: Duration,
    },
}

/// lead-enrichment's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub leads_table: String,
    pub ledger_table: String,
    pub artifacts_bucket: String,
    pub enrichment: EnrichmentSource,
    /// Salesforce, or the built-in sink on `CRM_TABLE`.
    pub crm: CrmConfig,
    pub metrics_namespace: String,
    /// The subject key and index (`PRIVACY_TABLE`, `PRIVACY_KEY_SECRET_ID`).
    pub subjects: crate::subjects::SubjectsConfig,
    /// The retry policy of the outgoing HTTP adapters; `None` keeps each adapter's default
    /// (tests shorten it).
    pub http_retry: Option<RetryPolicy>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self> {
        Ok(Self {
            leads_table: env.required("LEADS_TABLE")?,
            ledger_table: env.required("LEDGER_TABLE")?,
            artifacts_bucket: env.required("ARTIFACTS_BUCKET")?,
            enrichment: enrichment(env)?,
            crm: CrmConfig::from_env(env)?,
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
            http_retry: None,
            subjects: crate::subjects::SubjectsConfig::from_env(env)?,
        })
    }
}

fn enrichment(env: &Env) -> Result<EnrichmentSource> {
    let base = env.required("ENRICHMENT_API_BASE")?;
    if let Some(path) = base.trim().strip_prefix(FIXTURE_SCHEME) {
        let path = path.trim();
        return Ok(EnrichmentSource::Fixture(
            (!path.is_empty()).then(|| path.to_owned()),
        ));
    }
    Ok(EnrichmentSource::Http {
        base_url: env.url("ENRICHMENT_API_BASE")?,
        secret_id: env.required("ENRICHMENT_SECRET_ID")?,
        timeout: Duration::from_millis(env.parsed_or("ENRICHMENT_TIMEOUT_MS", 3000u64)?),
    })
}
