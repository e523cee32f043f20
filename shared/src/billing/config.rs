//! Everything usage-billing reads from its environment, read once and typed: a missing or
//! malformed variable fails the cold start with its name.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `BILLING_TABLE`, `LEDGER_TABLE`, `ARTIFACTS_BUCKET` | resources | required |
//! | `BILLING_JOBS_QUEUE_URL`, `NOTIFICATIONS_QUEUE_URL` | queues | required |
//! | `STRIPE_API_BASE`, `STRIPE_API_KEY_SECRET_ID`, `STRIPE_TIMEOUT_MS` | see [`StripeConfig`] | |
//! | `DUNNING_SUSPEND_AFTER_DAYS` | days past due before suspension | required |
//! | `DUNNING_SUSPEND_AFTER_ATTEMPTS` | failed attempts before suspension | [`DEFAULT_SUSPEND_AFTER_ATTEMPTS`] |
//! | `USAGE_GRACE_HOURS` | how late after a period's end usage is still accepted | [`DEFAULT_GRACE_HOURS`] |
//! | `CUSTOMER_EVENTS_QUEUE_URL` | where finished invoices are announced | none: not announced |
//! | `METRICS_NAMESPACE` | CloudWatch namespace | `blapi` |

use super::dunning;
use super::service::BillingConfig;
use super::usage::IngestPolicy;
use crate::config::Env;
use crate::error::Result;
use crate::stripe::StripeConfig;
use std::time::Duration;

/// Failed payment attempts before an account is suspended, unless configured.
pub const DEFAULT_SUSPEND_AFTER_ATTEMPTS: i64 = 4;
/// Hours after a period's end during which its usage is still accepted, unless configured.
pub const DEFAULT_GRACE_HOURS: i64 = 72;
/// How long one bill run may hold its (customer, period) lease.
pub const BILL_LEASE: Duration = Duration::from_secs(300);

/// usage-billing's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub table: String,
    pub ledger_table: String,
    pub artifacts_bucket: String,
    pub stripe: StripeConfig,
    pub service: BillingConfig,
    pub metrics_namespace: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self> {
        Ok(Self {
            table: env.required("BILLING_TABLE")?,
            ledger_table: env.required("LEDGER_TABLE")?,
            artifacts_bucket: env.required("ARTIFACTS_BUCKET")?,
            stripe: StripeConfig::from_env(env)?,
            service: BillingConfig {
                jobs_queue_url: env.required("BILLING_JOBS_QUEUE_URL")?,
                notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
                ingest: IngestPolicy {
                    grace: chrono::Duration::hours(
                        env.parsed_or("USAGE_GRACE_HOURS", DEFAULT_GRACE_HOURS)?,
                    ),
                    ..IngestPolicy::default()
                },
                dunning: dunning::Policy {
                    suspend_after_days: env.parsed("DUNNING_SUSPEND_AFTER_DAYS")?,
                    suspend_after_attempts: env.parsed_or(
                        "DUNNING_SUSPEND_AFTER_ATTEMPTS",
                        DEFAULT_SUSPEND_AFTER_ATTEMPTS,
                    )?,
                },
                lease: BILL_LEASE,
                customer_events_queue_url: env.optional("CUSTOMER_EVENTS_QUEUE_URL"),
            },
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(&'static str, &'static str)> {
        vec![
            ("BILLING_TABLE", "b"),
            ("LEDGER_TABLE", "l"),
            ("ARTIFACTS_BUCKET", "a"),
            ("BILLING_JOBS_QUEUE_URL", "http://q/jobs"),
            ("NOTIFICATIONS_QUEUE_URL", "http://q/notes"),
            ("STRIPE_API_BASE", "https://api.stripe.com"),
            ("STRIPE_API_KEY_SECRET_ID", "stripe/key"),
            ("DUNNING_SUSPEND_AFTER_DAYS", "14"),
        ]
    }

    #[test]
    fn defaults_apply_and_a_missing_variable_is_named() {
        let c = Config::from_env(&Env::from_map(vars())).unwrap();
        assert_eq!(c.service.ingest.grace, chrono::Duration::hours(72));
        assert_eq!(c.service.dunning.suspend_after_attempts, 4);
        assert_eq!(c.stripe.timeout, Duration::from_secs(20));
        for (name, _) in vars() {
            let env = Env::from_map(vars().into_iter().filter(|(k, _)| *k != name));
            let e = Config::from_env(&env).unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
        let bad = vars()
            .into_iter()
            .chain([("USAGE_GRACE_HOURS", "soon")])
            .collect::<Vec<_>>();
        let e = Config::from_env(&Env::from_map(bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("USAGE_GRACE_HOURS"), "{e}");
    }
}
