//! Everything customer-sync reads from its environment, read once and typed: a missing or
//! malformed variable fails the cold start with its name.
//!
//! - `CUSTOMERS_TABLE`: the customer state; `LEADS_TABLE`: the account directory and the
//!   leads a buyer may have come in as; `ARTIFACTS_BUCKET`: claim-checked messages and the
//!   sink's export.
//! - Stripe: [`StripeConfig`]; the CRM: [`CrmConfig`] (Salesforce, else the sink on
//!   `CRM_TABLE`).
//! - `METRICS_NAMESPACE` (optional, default `blapi`).

use crate::config::Env;
use crate::crm::CrmConfig;
use crate::error::Result;
use crate::retry::RetryPolicy;
use crate::stripe::StripeConfig;

/// customer-sync's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub customers_table: String,
    pub leads_table: String,
    pub artifacts_bucket: String,
    pub stripe: StripeConfig,
    pub crm: CrmConfig,
    pub metrics_namespace: String,
    /// The subject key and index (`PRIVACY_TABLE`, `PRIVACY_KEY_SECRET_ID`).
    pub subjects: crate::subjects::SubjectsConfig,
    /// The Salesforce retry policy; `None` keeps the adapter's default (tests shorten it).
    pub http_retry: Option<RetryPolicy>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self> {
        Ok(Self {
            customers_table: env.required("CUSTOMERS_TABLE")?,
            leads_table: env.required("LEADS_TABLE")?,
            artifacts_bucket: env.required("ARTIFACTS_BUCKET")?,
            stripe: StripeConfig::from_env(env)?,
            crm: CrmConfig::from_env(env)?,
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
            http_retry: None,
            subjects: crate::subjects::SubjectsConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CUSTOMERS_TABLE", "c"),
            ("LEADS_TABLE", "l"),
            ("PRIVACY_TABLE", "p"),
            ("PRIVACY_KEY_SECRET_ID", "k"),
            ("ARTIFACTS_BUCKET", "a"),
            ("STRIPE_API_BASE", "https://api.stripe.com"),
            ("STRIPE_API_KEY_SECRET_ID", "stripe/key"),
            ("CRM_TABLE", "crm"),
        ]
    }

    #[test]
    fn each_missing_variable_is_named_and_salesforce_needs_its_secret() {
        let c = Config::from_env(&Env::from_map(vars())).unwrap();
        assert!(matches!(c.crm, CrmConfig::Sink { .. }));
        for (name, _) in vars() {
            let env = Env::from_map(vars().into_iter().filter(|(k, _)| *k != name));
            let e = Config::from_env(&env).unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
        let sf = vars()
            .into_iter()
            .chain([
                ("SALESFORCE_LOGIN_URL", "https://acme.my.salesforce.com"),
                ("SALESFORCE_API_VERSION", "61.0"),
            ])
            .collect::<Vec<_>>();
        let e = Config::from_env(&Env::from_map(sf))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SALESFORCE_API_VERSION"), "{e}");
    }
}
