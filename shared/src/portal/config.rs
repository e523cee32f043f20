//! Everything portal-api reads from its environment, read once and typed: a missing or
//! malformed variable fails the cold start with its name.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `PORTAL_ISSUER`, `PORTAL_AUDIENCE`, `PORTAL_JWKS_URL` | the identity provider: `iss`, `aud`, its key set | required |
//! | `PORTAL_CUSTOMER_CLAIM` | the claim naming the Stripe customer | `customer_id` |
//! | `PORTAL_OPERATOR_SCOPE` | the scope of support staff | `blapi:operator` |
//! | `CUSTOMERS_TABLE`, `LICENSES_TABLE`, `BILLING_TABLE`, `LEDGER_TABLE`, `ARTIFACTS_BUCKET` | resources | required |
//! | `PRIVACY_QUEUE_URL` | privacy-requests' queue | required |
//! | `STRIPE_API_BASE`, `STRIPE_API_KEY_SECRET_ID`, `STRIPE_TIMEOUT_MS` | see [`StripeConfig`] | |
//! | the CRM | see [`CrmConfig`] (Salesforce, else the sink on `CRM_TABLE`) | |
//! | `PORTAL_CATALOG` | JSON: SKU -> `{"price", "max_seats", "plan"?}` | required |
//! | `PORTAL_SELF_SERVICE_LIMIT` | annual value above which a seat change goes to sales, e.g. `5000.00 usd` | `5000.00 usd` |
//! | `PORTAL_AUTOMATIC_TAX` | Stripe Tax on purchases (`true`/`false`) | `false` |
//! | `PORTAL_RETURN_URL` | where Checkout sends the buyer back | required |
//! | `PORTAL_SALES_OWNER` | owner of a sales-assisted opportunity when the account has none | required |
//! | `PORTAL_MAX_BODY_BYTES`, `PORTAL_LINK_TTL_SECONDS` | limits | 16384, 900 |

use super::api::{Offer, Settings};
use super::auth::AuthConfig;
use crate::config::{ConfigError, Env};
use crate::crm::CrmConfig;
use crate::error::Result;
use crate::stripe::StripeConfig;
use crate::values::{Currency, Money};
use std::collections::BTreeMap;
use std::time::Duration;

/// portal-api's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub auth: AuthConfig,
    pub jwks_url: String,
    pub customers_table: String,
    pub licenses_table: String,
    pub billing_table: String,
    pub ledger_table: String,
    pub artifacts_bucket: String,
    pub stripe: StripeConfig,
    pub crm: CrmConfig,
    pub settings: Settings,
    pub metrics_namespace: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self> {
        let mut auth = AuthConfig::new(
            env.required("PORTAL_ISSUER")?,
            env.required("PORTAL_AUDIENCE")?,
        );
        if let Some(c) = env.optional("PORTAL_CUSTOMER_CLAIM") {
            auth.customer_claim = c;
        }
        if let Some(s) = env.optional("PORTAL_OPERATOR_SCOPE") {
            auth.operator_scope = s;
        }
        let catalog_text = env.required("PORTAL_CATALOG")?;
        let catalog: BTreeMap<String, Offer> =
            serde_json::from_str(&catalog_text).map_err(|e| ConfigError::Malformed {
                name: "PORTAL_CATALOG".into(),
                reason: crate::error::json_error(&e),
            })?;
        if let Some((sku, _)) = catalog.iter().find(|(_, o)| o.max_seats == 0) {
            return Err(ConfigError::Malformed {
                name: "PORTAL_CATALOG".into(),
                reason: format!("{sku}: max_seats must be at least 1"),
            }
            .into());
        }
        let limit = match env.optional("PORTAL_SELF_SERVICE_LIMIT") {
            None => Settings::default().self_service_limit,
            Some(v) => parse_limit(&v).ok_or_else(|| ConfigError::Malformed {
                name: "PORTAL_SELF_SERVICE_LIMIT".into(),
                reason: "an amount and a currency, e.g. `5000.00 usd`".into(),
            })?,
        };
        let defaults = Settings::default();
        let link_secs: u64 =
            env.parsed_or("PORTAL_LINK_TTL_SECONDS", defaults.link_ttl.as_secs())?;
        // S3 signs links for at most 7 days.
        if !(1..=7 * 24 * 3600).contains(&link_secs) {
            return Err(ConfigError::Malformed {
                name: "PORTAL_LINK_TTL_SECONDS".into(),
                reason: "between 1 and 604800 (S3 signs links for at most 7 days)".into(),
            }
            .into());
        }
        Ok(Self {
            auth,
            jwks_url: env.url("PORTAL_JWKS_URL")?,
            customers_table: env.required("CUSTOMERS_TABLE")?,
            licenses_table: env.required("LICENSES_TABLE")?,
            billing_table: env.required("BILLING_TABLE")?,
            ledger_table: env.required("LEDGER_TABLE")?,
            artifacts_bucket: env.required("ARTIFACTS_BUCKET")?,
            stripe: StripeConfig::from_env(env)?,
            crm: CrmConfig::from_env(env)?,
            settings: Settings {
                max_body: env.parsed_or("PORTAL_MAX_BODY_BYTES", defaults.max_body)?,
                link_ttl: Duration::from_secs(link_secs),
                catalog,
                self_service_limit: limit,
                automatic_tax: env.parsed_or("PORTAL_AUTOMATIC_TAX", false)?,
                return_url: env.url("PORTAL_RETURN_URL")?,
                privacy_queue_url: env.required("PRIVACY_QUEUE_URL")?,
                sales_owner: env.required("PORTAL_SALES_OWNER")?,
                idempotency_retain: defaults.idempotency_retain,
            },
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
        })
    }
}

/// `5000.00 usd` (or `5000 usd`): minor units of the currency.
fn parse_limit(v: &str) -> Option<Money> {
    let (amount, currency) = v.trim().split_once(' ')?;
    let currency = Currency::try_from(currency.trim().to_owned()).ok()?;
    let (units, cents) = match amount.split_once('.') {
        Some((u, c)) if c.len() == 2 => (u.parse::<i64>().ok()?, c.parse::<i64>().ok()?),
        None => (amount.parse::<i64>().ok()?, 0),
        _ => return None,
    };
    let scale = 10_i64.checked_pow(currency.exponent())?;
    let minor = if currency.exponent() == 0 {
        (cents == 0).then_some(units)?
    } else {
        units.checked_mul(scale)?.checked_add(cents)?
    };
    (minor > 0).then(|| Money::new(minor, currency))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &[(&str, &str)]) -> Env {
        let mut vars = vec![
            ("PORTAL_ISSUER", "https://id.example.test/"),
            ("PORTAL_AUDIENCE", "blapi-portal"),
            (
                "PORTAL_JWKS_URL",
                "https://id.example.test/.well-known/jwks.json",
            ),
            ("CUSTOMERS_TABLE", "c"),
            ("LICENSES_TABLE", "l"),
            ("BILLING_TABLE", "b"),
            ("LEDGER_TABLE", "g"),
            ("ARTIFACTS_BUCKET", "a"),
            ("PRIVACY_QUEUE_URL", "https://sqs.test/p"),
            ("STRIPE_API_BASE", "https://api.stripe.com"),
            ("STRIPE_API_KEY_SECRET_ID", "stripe"),
            ("CRM_TABLE", "crm"),
            (
                "PORTAL_CATALOG",
                r#"{"professional": {"price": "price_1", "max_seats": 500}}"#,
            ),
            ("PORTAL_RETURN_URL", "https://portal.example.test/billing"),
            ("PORTAL_SALES_OWNER", "005SALES"),
        ];
        vars.extend_from_slice(extra);
        Env::from_map(vars)
    }

    #[test]
    fn reads_every_setting_with_defaults() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.settings.catalog["professional"].max_seats, 500);
        assert_eq!(c.settings.self_service_limit.amount, 500_000);
        assert!(!c.settings.automatic_tax);
        assert_eq!(c.auth.customer_claim, "customer_id");
        let c = Config::from_env(&env(&[
            ("PORTAL_SELF_SERVICE_LIMIT", "2500.50 eur"),
            ("PORTAL_AUTOMATIC_TAX", "true"),
        ]))
        .unwrap();
        assert_eq!(c.settings.self_service_limit.amount, 250_050);
        assert_eq!(c.settings.self_service_limit.currency.as_str(), "eur");
        assert!(c.settings.automatic_tax);
    }

    #[test]
    fn a_bad_setting_fails_naming_it() {
        for (name, value) in [
            ("PORTAL_CATALOG", "{not json"),
            (
                "PORTAL_CATALOG",
                r#"{"pro": {"price": "p", "max_seats": 0}}"#,
            ),
            (
                "PORTAL_CATALOG",
                r#"{"pro": {"price": "p", "max_seats": 5, "x": 1}}"#,
            ),
            ("PORTAL_SELF_SERVICE_LIMIT", "lots"),
            ("PORTAL_SELF_SERVICE_LIMIT", "-5 usd"),
            ("PORTAL_SELF_SERVICE_LIMIT", "5000.5 usd"),
            ("PORTAL_AUTOMATIC_TAX", "maybe"),
            ("PORTAL_JWKS_URL", "not a url"),
            ("PORTAL_LINK_TTL_SECONDS", "864000"),
        ] {
            let e = Config::from_env(&env(&[(name, value)])).unwrap_err();
            assert!(e.to_string().contains(name), "{name}={value}: {e}");
        }
    }
}
