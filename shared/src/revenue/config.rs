//! Everything revenue-ops reads from its environment, read once and typed: a missing or
//! malformed variable fails the cold start with its name.
//!
//! - `CUSTOMERS_TABLE` (customer-sync's states: subscriptions and their history, licenses,
//!   owner), `BILLING_TABLE` (usage by day, dunning), `REVENUE_TABLE` (renewals, scores,
//!   snapshots), `ARTIFACTS_BUCKET` (metrics files and reports, claim-checked messages).
//! - `REVENUE_JOBS_QUEUE_URL` (the per-customer jobs), `NOTIFICATIONS_QUEUE_URL` (early
//!   warnings).
//! - The CRM: [`CrmConfig`] (Salesforce, else the sink on `CRM_TABLE`).
//! - Optional: `RENEWAL_WINDOW_DAYS` (`year=90,month=30`; default those), `ACTIVE_USERS_METRIC`
//!   (default `active_users`), `REPORTING_RATES` (a rate table as JSON; default the bundled
//!   `rates.json`), `HEALTH_RULES` (rules as JSON; default the bundled `health.json`),
//!   `METRICS_NAMESPACE` (default `blapi`).

use super::health::HealthRules;
use super::metrics::Rates;
use super::renewals::RenewalWindows;
use crate::config::Env;
use crate::crm::CrmConfig;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// revenue-ops' configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub customers_table: String,
    pub billing_table: String,
    pub revenue_table: String,
    pub artifacts_bucket: String,
    pub crm: CrmConfig,
    pub metrics_namespace: String,
    pub http_retry: Option<RetryPolicy>,
    pub settings: Settings,
}

/// What the service needs besides its ports.
#[derive(Debug, Clone)]
pub struct Settings {
    pub jobs_queue_url: String,
    pub notifications_queue_url: String,
    pub windows: RenewalWindows,
    pub rates: Rates,
    pub rules: HealthRules,
    /// The telemetry metric carrying active users.
    pub active_users_metric: String,
}

impl Settings {
    /// The bundled rules and rates, default windows.
    pub fn bundled(jobs_queue_url: &str, notifications_queue_url: &str) -> Result<Self> {
        Ok(Self {
            jobs_queue_url: jobs_queue_url.into(),
            notifications_queue_url: notifications_queue_url.into(),
            windows: RenewalWindows::default(),
            rates: Rates::bundled()?,
            rules: HealthRules::bundled()?,
            active_users_metric: "active_users".into(),
        })
    }
}

/// `year=90,month=30` -> windows (unlisted intervals keep 30 days).
pub fn parse_windows(text: &str) -> Result<RenewalWindows> {
    let mut w = RenewalWindows::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (interval, days) = part
            .split_once('=')
            .and_then(|(i, d)| Some((i.trim(), d.trim().parse::<u32>().ok()?)))
            .filter(|(i, d)| matches!(*i, "day" | "week" | "month" | "year") && *d <= 366)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "RENEWAL_WINDOW_DAYS: {part:?} is not interval=days (day|week|month|year, at most 366)"
                ))
            })?;
        w.days.insert(interval.to_owned(), days);
    }
    Ok(w)
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self> {
        let mut settings = Settings::bundled(
            &env.required("REVENUE_JOBS_QUEUE_URL")?,
            &env.required("NOTIFICATIONS_QUEUE_URL")?,
        )?;
        if let Some(w) = env.optional("RENEWAL_WINDOW_DAYS") {
            settings.windows = parse_windows(&w)?;
        }
        if let Some(m) = env.optional("ACTIVE_USERS_METRIC") {
            settings.active_users_metric = m;
        }
        if let Some(r) = env.optional("REPORTING_RATES") {
            settings.rates = Rates::from_json(&r)
                .map_err(|e| Error::Invalid(format!("REPORTING_RATES: {e}")))?;
        }
        if let Some(r) = env.optional("HEALTH_RULES") {
            settings.rules = HealthRules::from_json(&r)
                .map_err(|e| Error::Invalid(format!("HEALTH_RULES: {e}")))?;
        }
        Ok(Self {
            customers_table: env.required("CUSTOMERS_TABLE")?,
            billing_table: env.required("BILLING_TABLE")?,
            revenue_table: env.required("REVENUE_TABLE")?,
            artifacts_bucket: env.required("ARTIFACTS_BUCKET")?,
            crm: CrmConfig::from_env(env)?,
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
            http_retry: None,
            settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CUSTOMERS_TABLE", "c"),
            ("BILLING_TABLE", "b"),
            ("REVENUE_TABLE", "r"),
            ("ARTIFACTS_BUCKET", "a"),
            ("REVENUE_JOBS_QUEUE_URL", "http://q/jobs"),
            ("NOTIFICATIONS_QUEUE_URL", "http://q/notes"),
            ("CRM_TABLE", "crm"),
        ]
    }

    #[test]
    fn each_missing_variable_is_named() {
        let c = Config::from_env(&Env::from_map(vars())).unwrap();
        assert_eq!(c.settings.windows.for_interval(Some("year")), 90);
        for (name, _) in vars() {
            let env = Env::from_map(vars().into_iter().filter(|(k, _)| *k != name));
            let e = Config::from_env(&env).unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn windows_rates_and_rules_are_overridable_and_checked() {
        let env = |extra: (&'static str, &'static str)| {
            Env::from_map(vars().into_iter().chain([extra]).collect::<Vec<_>>())
        };
        let c = Config::from_env(&env(("RENEWAL_WINDOW_DAYS", "year=60, week=7"))).unwrap();
        assert_eq!(c.settings.windows.for_interval(Some("year")), 60);
        assert_eq!(c.settings.windows.for_interval(Some("week")), 7);
        assert_eq!(c.settings.windows.for_interval(Some("month")), 30);
        for bad in ["year", "year=x", "decade=3", "year=1000"] {
            let e = Config::from_env(&env(("RENEWAL_WINDOW_DAYS", bad)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("RENEWAL_WINDOW_DAYS"), "{bad}: {e}");
        }
        let e = Config::from_env(&env((
            "REPORTING_RATES",
            r#"{"reporting":"usd","rates":{"eur":"-1"}}"#,
        )))
        .unwrap_err()
        .to_string();
        assert!(e.contains("REPORTING_RATES"), "{e}");
        let e = Config::from_env(&env(("HEALTH_RULES", "{}")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HEALTH_RULES"), "{e}");
    }
}
