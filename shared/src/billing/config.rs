//! Everything usage-billing reads from its environment, read once and typed: a missing or
//! malformed variable fails the cold start with its name.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `BILLING_TABLE`, `LEDGER_TABLE`, `ARTIFACTS_BUCKET` | resources | required |
//! | `BILLING_JOBS_QUEUE_URL`, `NOTIFICATIONS_QUEUE_URL` | queues | required |
//! | `STRIPE_API_BASE`, `STRIPE_API_KEY_SECRET_ID`, `STRIPE_TIMEOUT_MS` | see [`StripeConfig`] | |
//! | `DUNNING_LADDER` | the dunning ladder, `day:action,...` ([`dunning::Ladder`]) | [`dunning::DEFAULT_LADDER`] |
//! | `CARD_NOTICE_DAYS` | days before a card expires that the customer is told, comma-separated | `30,7` |
//! | `LICENSE_REQUESTS_QUEUE_URL` | where a customer's standing (suspended / reinstated) goes to licensing | none: not sent |
//! | `USAGE_GRACE_HOURS` | how late after a period's end usage is still accepted | [`DEFAULT_GRACE_HOURS`] |
//! | `USAGE_WRITE_WINDOW_SECONDS` | how long after reading "period open" the ingest may start writes | [`DEFAULT_WRITE_WINDOW_S`] |
//! | `USAGE_SETTLE_SECONDS` | how long after a period closes its invoices wait (must exceed the window) | [`DEFAULT_SETTLE_S`] |
//! | `CUSTOMER_EVENTS_QUEUE_URL` | where finished invoices are announced | none: not announced |
//! | `METRICS_NAMESPACE` | CloudWatch namespace | `blapi` |
//! | `STRIPE_AUTOMATIC_TAX` | Stripe Tax on usage invoices (`true`/`false`) | `false` |
//! | `SELLER_NAME`, `SELLER_ADDRESS`, `SELLER_TAX_ID`, `SELLER_EMAIL` | the seller on the invoice ([`Issuing::from_env`]) | `blapi`, none |

use super::document::Issuing;
use super::dunning;
use super::service::BillingConfig;
use super::usage::IngestPolicy;
use crate::config::Env;
use crate::error::Result;
use crate::stripe::StripeConfig;
use std::time::Duration;

/// Hours after a period's end during which its usage is still accepted, unless configured.
pub const DEFAULT_GRACE_HOURS: i64 = 72;
/// See [`IngestPolicy::write_window`].
pub const DEFAULT_WRITE_WINDOW_S: i64 = 60;
/// See [`IngestPolicy::settle`]: twice the window.
pub const DEFAULT_SETTLE_S: i64 = 120;
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
                    write_window: chrono::Duration::seconds(
                        env.parsed_or("USAGE_WRITE_WINDOW_SECONDS", DEFAULT_WRITE_WINDOW_S)?,
                    ),
                    settle: chrono::Duration::seconds(
                        env.parsed_or("USAGE_SETTLE_SECONDS", DEFAULT_SETTLE_S)?,
                    ),
                    ..IngestPolicy::default()
                }
                .validated()
                .map_err(crate::error::Error::Invalid)?,
                dunning: dunning::Policy {
                    ladder: dunning::Ladder::parse(
                        &env.optional("DUNNING_LADDER")
                            .unwrap_or_else(|| dunning::DEFAULT_LADDER.into()),
                    )
                    .map_err(|e| crate::error::Error::Invalid(format!("DUNNING_LADDER: {e}")))?,
                    card_notice_days: card_notice_days(
                        env.optional("CARD_NOTICE_DAYS").as_deref(),
                    )?,
                },
                license_requests_queue_url: env.optional("LICENSE_REQUESTS_QUEUE_URL"),
                lease: BILL_LEASE,
                customer_events_queue_url: env.optional("CUSTOMER_EVENTS_QUEUE_URL"),
                issuing: Issuing::from_env(env)?,
            },
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
        })
    }
}

/// `30,7` -> [30, 7]: each 1..=90.
fn card_notice_days(raw: Option<&str>) -> Result<Vec<i64>> {
    let Some(raw) = raw else {
        return Ok(vec![30, 7]);
    };
    raw.split(',')
        .map(|d| match d.trim().parse::<i64>() {
            Ok(n) if (1..=90).contains(&n) => Ok(n),
            _ => Err(crate::error::Error::Invalid(format!(
                "CARD_NOTICE_DAYS: {d:?} is not a day count in 1..=90"
            ))),
        })
        .collect()
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
        ]
    }

    #[test]
    fn defaults_apply_and_a_missing_variable_is_named() {
        let c = Config::from_env(&Env::from_map(vars())).unwrap();
        assert_eq!(c.service.ingest.grace, chrono::Duration::hours(72));
        assert_eq!(c.service.dunning, dunning::Policy::default());
        for (name, value) in [
            ("DUNNING_LADDER", "3:remind,1:remind"),
            ("CARD_NOTICE_DAYS", "30,0"),
        ] {
            let env = Env::from_map(vars().into_iter().chain([(name, value)]));
            let e = Config::from_env(&env).unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
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

    #[test]
    fn a_settle_not_longer_than_the_write_window_is_refused() {
        let c = Config::from_env(&Env::from_map(vars())).unwrap();
        assert_eq!(c.service.ingest.write_window, chrono::Duration::seconds(60));
        assert_eq!(c.service.ingest.settle, chrono::Duration::seconds(120));
        for (window, settle) in [("30", "30"), ("30", "10"), ("0", "10")] {
            let env = Env::from_map(vars().into_iter().chain([
                ("USAGE_WRITE_WINDOW_SECONDS", window),
                ("USAGE_SETTLE_SECONDS", settle),
            ]));
            let e = Config::from_env(&env).unwrap_err().to_string();
            assert!(e.contains("window"), "{window}/{settle}: {e}");
        }
        let env = Env::from_map(vars().into_iter().chain([
            ("USAGE_WRITE_WINDOW_SECONDS", "2"),
            ("USAGE_SETTLE_SECONDS", "4"),
        ]));
        let c = Config::from_env(&env).unwrap();
        assert_eq!(c.service.ingest.settle, chrono::Duration::seconds(4));
    }
}
