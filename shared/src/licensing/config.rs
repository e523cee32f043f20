//! Everything license-minting reads from its environment: `LICENSES_TABLE`,
//! `LICENSE_KEY_ID` (the KMS key alias), `ARTIFACTS_BUCKET`, Stripe ([`StripeConfig`]),
//! `CUSTOMER_EVENTS_QUEUE_URL` (optional: where license changes are announced),
//! `PROVISIONING_QUEUE_URL` (optional: where workspace suspensions and resumptions go),
//! `NOTIFICATIONS_QUEUE_URL` (optional: the license-issued notice to the customer) and
//! `METRICS_NAMESPACE` (default `blapi`). Read once; a missing variable fails the cold start
//! with its name.

use crate::config::Env;
use crate::error::Result;
use crate::stripe::StripeConfig;

/// license-minting's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub licenses_table: String,
    /// The KMS key alias (`alias/...-license-signing`).
    pub key_id: String,
    pub stripe: StripeConfig,
    pub artifacts_bucket: String,
    /// Where license changes are announced (`CUSTOMER_EVENTS_QUEUE_URL`, optional: none
    /// announced without it).
    pub customer_events_queue_url: Option<String>,
    /// Where the product's provisioner is told to suspend or resume workspaces
    /// (`PROVISIONING_QUEUE_URL`, optional).
    pub provisioning_queue_url: Option<String>,
    /// Where the license-issued notice goes (`NOTIFICATIONS_QUEUE_URL`, optional).
    pub notifications_queue_url: Option<String>,
    pub metrics_namespace: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self> {
        Ok(Self {
            licenses_table: env.required("LICENSES_TABLE")?,
            key_id: env.required("LICENSE_KEY_ID")?,
            stripe: StripeConfig::from_env(env)?,
            artifacts_bucket: env.required("ARTIFACTS_BUCKET")?,
            customer_events_queue_url: env.optional("CUSTOMER_EVENTS_QUEUE_URL"),
            provisioning_queue_url: env.optional("PROVISIONING_QUEUE_URL"),
            notifications_queue_url: env.optional("NOTIFICATIONS_QUEUE_URL"),
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
        })
    }
}
