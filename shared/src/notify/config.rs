//! Everything the notifications function reads from its environment, read once and typed: a
//! missing or malformed variable fails the cold start with its name.
//!
//! - `MAIL_FROM`: the sender (From) address, an SES identity verified in the account;
//!   `OPERATIONS_EMAIL`: where internal kinds go (privacy deadlines, early warnings).
//! - `LEDGER_TABLE` (each id sent once), `ARTIFACTS_BUCKET` (license files, invoice artifacts,
//!   access bundles: the objects linked; claim-checked messages).
//! - The subject index and key, for opt-outs: `PRIVACY_TABLE`, `PRIVACY_KEY_SECRET_ID`.
//! - Stripe ([`StripeConfig`]): a customer's address and name, read at send time.
//! - Optional: `LINK_TTL_HOURS` (default 72, at most 168: a pre-signed link's limit),
//!   `SES_MAX_ATTEMPTS` (attempts per e-mail when SES throttles, default 4, 1 to 10),
//!   `METRICS_NAMESPACE` (default `blapi`).

use super::service::Settings;
use crate::config::{ConfigError, Env};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::stripe::StripeConfig;
use crate::subjects::SubjectsConfig;
use crate::values::Email;
use std::time::Duration;

/// The notifications function's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub subjects: SubjectsConfig,
    pub stripe: StripeConfig,
    pub ledger_table: String,
    pub artifacts_bucket: String,
    pub metrics_namespace: String,
    /// The Stripe client's retry policy (`None`: its default).
    pub http_retry: Option<RetryPolicy>,
    pub settings: Settings,
}

fn address(env: &Env, name: &str) -> Result<Email> {
    let raw = env.required(name)?;
    Email::parse(&raw).map_err(|e| {
        ConfigError::Malformed {
            name: name.to_owned(),
            reason: e.to_string(),
        }
        .into()
    })
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self> {
        let hours: u64 = env.parsed_or("LINK_TTL_HOURS", 72)?;
        if !(1..=168).contains(&hours) {
            return Err(Error::Invalid(
                "LINK_TTL_HOURS must be 1 to 168 (a pre-signed link lasts 7 days at most)".into(),
            ));
        }
        let attempts: u32 = env.parsed_or("SES_MAX_ATTEMPTS", 4)?;
        if !(1..=10).contains(&attempts) {
            return Err(Error::Invalid("SES_MAX_ATTEMPTS must be 1 to 10".into()));
        }
        Ok(Self {
            subjects: SubjectsConfig::from_env(env)?,
            stripe: StripeConfig::from_env(env)?,
            ledger_table: env.required("LEDGER_TABLE")?,
            artifacts_bucket: env.required("ARTIFACTS_BUCKET")?,
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
            http_retry: None,
            settings: Settings {
                from: address(env, "MAIL_FROM")?,
                operations: address(env, "OPERATIONS_EMAIL")?,
                link_ttl: Duration::from_secs(hours * 3600),
                send_retry: RetryPolicy {
                    max_attempts: attempts,
                    ..RetryPolicy::default()
                },
                lease: Duration::from_secs(120),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(&'static str, &'static str)> {
        vec![
            ("MAIL_FROM", "billing@blapi.example"),
            ("OPERATIONS_EMAIL", "ops@blapi.example"),
            ("LEDGER_TABLE", "ledger"),
            ("ARTIFACTS_BUCKET", "artifacts"),
            ("PRIVACY_TABLE", "privacy"),
            ("PRIVACY_KEY_SECRET_ID", "blapi/privacy-subject-key"),
            ("STRIPE_API_BASE", "http://127.0.0.1:8420"),
            ("STRIPE_API_KEY_SECRET_ID", "blapi/stripe-api-key"),
        ]
    }

    fn with(extra: (&'static str, &'static str)) -> Env {
        Env::from_map(
            vars()
                .into_iter()
                .filter(|(k, _)| *k != extra.0)
                .chain([extra]),
        )
    }

    #[test]
    fn each_missing_variable_is_named_and_defaults_hold() {
        let c = Config::from_env(&Env::from_map(vars())).unwrap();
        assert_eq!(c.settings.link_ttl, Duration::from_secs(72 * 3600));
        assert_eq!(c.settings.send_retry.max_attempts, 4);
        assert_eq!(c.settings.from.as_str(), "billing@blapi.example");
        for (name, _) in vars() {
            let env = Env::from_map(vars().into_iter().filter(|(k, _)| *k != name));
            let e = Config::from_env(&env).unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn addresses_ttl_and_attempts_are_checked_without_echoing_the_address() {
        let e = Config::from_env(&with(("MAIL_FROM", "not-an-address")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("MAIL_FROM") && !e.contains("not-an-address"),
            "{e}"
        );
        for bad in ["0", "169", "x"] {
            let e = Config::from_env(&with(("LINK_TTL_HOURS", bad)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("LINK_TTL_HOURS"), "{bad}: {e}");
        }
        let e = Config::from_env(&with(("SES_MAX_ATTEMPTS", "11")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SES_MAX_ATTEMPTS"), "{e}");
        let c = Config::from_env(&with(("LINK_TTL_HOURS", "24"))).unwrap();
        assert_eq!(c.settings.link_ttl, Duration::from_secs(24 * 3600));
    }
}
