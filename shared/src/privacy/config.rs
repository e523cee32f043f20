//! Everything privacy-requests reads from its environment, read once and typed: a missing or
//! malformed variable fails the cold start with its name.
//!
//! - The subject index and key: `PRIVACY_TABLE`, `PRIVACY_KEY_SECRET_ID`.
//! - Every store that holds personal data: `LEADS_TABLE`, `CUSTOMERS_TABLE`,
//!   `LICENSES_TABLE`, `BILLING_TABLE`, `ARTIFACTS_BUCKET` (archive, claim checks, license
//!   files, invoice artifacts, CRM exports, and the access bundles), Stripe
//!   ([`StripeConfig`]) and the CRM ([`CrmConfig`]).
//! - `NOTIFICATIONS_QUEUE_URL` (deadline warnings and completions) and `SWEEP_QUEUE_URLS`
//!   (comma-separated: every dead-letter queue and the notifications queue, swept for
//!   messages at rest).
//! - Optional: `BUNDLE_LINK_TTL_HOURS` (default 72, at most 168: a pre-signed link's
//!   limit), `METRICS_NAMESPACE` (default `blapi`).

use super::service::Settings;
use crate::config::Env;
use crate::crm::CrmConfig;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::stripe::StripeConfig;
use crate::subjects::SubjectsConfig;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub subjects: SubjectsConfig,
    pub leads_table: String,
    pub customers_table: String,
    pub licenses_table: String,
    pub billing_table: String,
    pub artifacts_bucket: String,
    pub stripe: StripeConfig,
    pub crm: CrmConfig,
    pub sweep_queue_urls: Vec<String>,
    pub metrics_namespace: String,
    pub http_retry: Option<RetryPolicy>,
    pub settings: Settings,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self> {
        let hours: u64 = env.parsed_or("BUNDLE_LINK_TTL_HOURS", 72)?;
        if !(1..=168).contains(&hours) {
            return Err(Error::Invalid(
                "BUNDLE_LINK_TTL_HOURS must be 1 to 168 (a pre-signed link lasts 7 days at most)"
                    .into(),
            ));
        }
        Ok(Self {
            subjects: SubjectsConfig::from_env(env)?,
            leads_table: env.required("LEADS_TABLE")?,
            customers_table: env.required("CUSTOMERS_TABLE")?,
            licenses_table: env.required("LICENSES_TABLE")?,
            billing_table: env.required("BILLING_TABLE")?,
            artifacts_bucket: env.required("ARTIFACTS_BUCKET")?,
            stripe: StripeConfig::from_env(env)?,
            crm: CrmConfig::from_env(env)?,
            sweep_queue_urls: env
                .required("SWEEP_QUEUE_URLS")?
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
            http_retry: None,
            settings: Settings {
                notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
                link_ttl: Duration::from_secs(hours * 3600),
            },
        })
    }
}
