//! Everything license-minting reads from its environment: `LICENSES_TABLE`,
//! `LICENSE_KEY_ID` (the KMS key alias), `ARTIFACTS_BUCKET`, Stripe ([`StripeConfig`]),
//! `CUSTOMER_EVENTS_QUEUE_URL` (optional: where license changes are announced),
//! `PROVISIONING_QUEUE_URL` (optional: where workspace suspensions and resumptions go),
//! `NOTIFICATIONS_QUEUE_URL` (optional: the license-issued notice to the customer),
//! `LICENSE_SUPERSEDED_GRACE_DAYS` (optional, default 7: how long a license replaced by a
//! seat or SKU change stays valid offline before the revocation list revokes it) and
//! `METRICS_NAMESPACE` (default `blapi`). Read once; a missing or malformed variable fails
//! the cold start with its name.

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
    /// How long a superseded license stays valid once its successor is active
    /// (`LICENSE_SUPERSEDED_GRACE_DAYS`, whole days, default 7): the customer's time to
    /// install the new file; then the signed revocation list revokes it offline too.
    pub superseded_grace: std::time::Duration,
    pub metrics_namespace: String,
}

/// The default of `LICENSE_SUPERSEDED_GRACE_DAYS`.
pub const DEFAULT_SUPERSEDED_GRACE_DAYS: u16 = 7;

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
            superseded_grace: std::time::Duration::from_secs(
                u64::from(env.parsed_or(
                    "LICENSE_SUPERSEDED_GRACE_DAYS",
                    DEFAULT_SUPERSEDED_GRACE_DAYS,
                )?) * 86_400,
            ),
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &[(&str, &str)]) -> Env {
        let mut vars = vec![
            ("LICENSES_TABLE", "licenses"),
            ("LICENSE_KEY_ID", "alias/license-signing"),
            ("ARTIFACTS_BUCKET", "artifacts"),
            ("STRIPE_API_BASE", "https://api.stripe.com"),
            ("STRIPE_API_KEY_SECRET_ID", "stripe"),
        ];
        vars.extend_from_slice(extra);
        Env::from_map(vars)
    }

    #[test]
    fn the_superseded_grace_is_a_week_unless_configured_in_whole_days() {
        let week = std::time::Duration::from_secs(7 * 86_400);
        let config = Config::from_env(&env(&[])).unwrap();
        assert_eq!(config.superseded_grace, week);
        assert_eq!(
            i64::try_from(week.as_millis()).unwrap(),
            super::super::SUPERSEDED_GRACE_MS,
            "the default matches the service's"
        );
        let config = Config::from_env(&env(&[("LICENSE_SUPERSEDED_GRACE_DAYS", "3")])).unwrap();
        assert_eq!(
            config.superseded_grace,
            std::time::Duration::from_secs(3 * 86_400)
        );
        let err =
            Config::from_env(&env(&[("LICENSE_SUPERSEDED_GRACE_DAYS", "a week")])).unwrap_err();
        assert!(
            err.to_string().contains("LICENSE_SUPERSEDED_GRACE_DAYS"),
            "{err}"
        );
    }
}
