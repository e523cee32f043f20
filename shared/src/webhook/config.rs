//! The intake's configuration: environment variables (template.yaml) and the JSON shapes of
//! its two secrets in Secrets Manager.
//!
//! A source is *known* iff it has at least one secret: `stripe` through
//! `STRIPE_WEBHOOK_SECRET_ID` (`{"secrets": ["whsec_..."]}`), first-party sources through
//! `SOURCE_WEBHOOK_SECRET_ID` (`{"portal": ["whsec_..."], "telemetry": [...]}`). Secrets are
//! checked at cold start: a malformed one fails the start with its source's name (never its
//! value), not a request.

use super::routing::Route;
use super::standard_scheme::{StandardSecret, StandardVerifier};
use super::stripe_scheme::StripeVerifier;
use super::{STRIPE, Source};
use crate::config::{ConfigError, Env, Secret};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Default largest body (413 above): 256 KiB, the SQS message size, which also bounds what a
/// Stripe event can be. The template's `WebhookMaxBodyBytes` may raise it (min 256 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
/// Default signature tolerance, both directions (Stripe's and Standard Webhooks' default).
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Everything webhook-intake reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeConfig {
    /// Queue URL per route, in [`Route::ALL`] order.
    pub queue_urls: [String; 6],
    pub stripe_secret_id: String,
    pub source_secret_id: String,
    pub tolerance_secs: u64,
    pub max_body_bytes: usize,
    pub ledger_table: String,
    pub bucket: String,
    pub metrics_namespace: String,
    /// The Stripe API (`STRIPE_API_KEY_SECRET_ID`, `STRIPE_API_BASE`), read only by the daily
    /// missed-event recovery (and only then loaded). Optional: without it the intake takes
    /// webhooks and refuses the recovery action.
    pub stripe_api: Option<crate::stripe::StripeConfig>,
    /// The subject index (`PRIVACY_TABLE`, `PRIVACY_KEY_SECRET_ID`): archived events are
    /// indexed under the people they name. Optional: without it nothing is indexed.
    pub subjects: Option<crate::subjects::SubjectsConfig>,
}

impl IntakeConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let queue_urls = [
            env.required(Route::LicenseRequests.env_var())?,
            env.required(Route::BillingEvents.env_var())?,
            env.required(Route::UsageEvents.env_var())?,
            env.required(Route::LeadEvents.env_var())?,
            env.required(Route::CustomerEvents.env_var())?,
            env.required(Route::PrivacyRequests.env_var())?,
        ];
        let max_body_bytes = env.parsed_or("WEBHOOK_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?;
        if max_body_bytes == 0 {
            return Err(ConfigError::Malformed {
                name: "WEBHOOK_MAX_BODY_BYTES".into(),
                reason: "must be positive".into(),
            });
        }
        Ok(Self {
            queue_urls,
            stripe_secret_id: env.required("STRIPE_WEBHOOK_SECRET_ID")?,
            source_secret_id: env.required("SOURCE_WEBHOOK_SECRET_ID")?,
            tolerance_secs: env.parsed_or("WEBHOOK_TOLERANCE_SECS", DEFAULT_TOLERANCE_SECS)?,
            max_body_bytes,
            ledger_table: env.required("LEDGER_TABLE")?,
            bucket: env.required("ARTIFACTS_BUCKET")?,
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
            subjects: match env.optional("PRIVACY_TABLE") {
                None => None,
                Some(_) => Some(crate::subjects::SubjectsConfig::from_env(env)?),
            },
            stripe_api: match env.optional("STRIPE_API_KEY_SECRET_ID") {
                None => None,
                Some(secret_id) => Some(crate::stripe::StripeConfig {
                    api_base: env.url("STRIPE_API_BASE")?,
                    secret_id,
                    timeout: std::time::Duration::from_millis(
                        env.parsed_or("STRIPE_TIMEOUT_MS", 20_000u64)?,
                    ),
                }),
            },
        })
    }

    /// The queue URL of `route`.
    pub fn queue_url(&self, route: Route) -> &str {
        &self.queue_urls[route as usize]
    }
}

/// `STRIPE_WEBHOOK_SECRET_ID`'s JSON: every live Stripe endpoint secret. No `Debug`: it is
/// only ever held inside a [`Secret`] (as [`crate::secrets::load_json`] returns it).
#[derive(Clone, Deserialize)]
pub struct StripeSecrets {
    pub secrets: Vec<String>,
}

/// `SOURCE_WEBHOOK_SECRET_ID`'s JSON: Standard Webhooks secrets per first-party source.
/// No `Debug`, like [`StripeSecrets`].
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SourceSecrets(pub BTreeMap<String, Vec<String>>);

/// The verifiers of every known source, built once per cold start.
#[derive(Debug, Clone, Default)]
pub struct Verifiers {
    pub(crate) stripe: Option<StripeVerifier>,
    pub(crate) sources: BTreeMap<Source, StandardVerifier>,
}

impl Verifiers {
    /// Checks and keys every secret. Errors name the secret id and source, never a value.
    pub fn new(
        stripe: &StripeSecrets,
        sources: &SourceSecrets,
        secret_ids: (&str, &str),
    ) -> Result<Self, ConfigError> {
        let (stripe_id, source_id) = secret_ids;
        if stripe.secrets.iter().any(|s| s.trim().is_empty()) {
            return Err(ConfigError::Malformed {
                name: stripe_id.to_owned(),
                reason: "a Stripe webhook secret is empty".into(),
            });
        }
        let stripe_secrets: Vec<Secret<String>> = stripe
            .secrets
            .iter()
            .map(|s| Secret::new(s.trim().to_owned()))
            .collect();
        let stripe = (!stripe_secrets.is_empty()).then(|| StripeVerifier::new(&stripe_secrets));
        let mut map = BTreeMap::new();
        for (name, secrets) in &sources.0 {
            let malformed = |reason: String| ConfigError::Malformed {
                name: source_id.to_owned(),
                reason,
            };
            let source = Source::parse(name).ok_or_else(|| {
                malformed(format!(
                    "source name {name:?} must match [a-z0-9_-]{{1,32}}"
                ))
            })?;
            if source.as_str() == STRIPE {
                return Err(malformed(format!(
                    "{STRIPE} is configured by its own secret"
                )));
            }
            let parsed = secrets
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    StandardSecret::parse(s)
                        .map_err(|e| malformed(format!("secret {i} of source {name}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !parsed.is_empty() {
                map.insert(source, StandardVerifier::new(&parsed));
            }
        }
        Ok(Self {
            stripe,
            sources: map,
        })
    }

    /// Known sources, for the start-up log.
    pub fn known(&self) -> Vec<String> {
        let mut out: Vec<String> = self.stripe.iter().map(|_| STRIPE.to_owned()).collect();
        out.extend(self.sources.keys().map(|s| s.as_str().to_owned()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &[(&str, &str)]) -> Env {
        let mut vars: Vec<(String, String)> = [
            ("LICENSE_REQUESTS_QUEUE_URL", "q-lr"),
            ("BILLING_EVENTS_QUEUE_URL", "q-be"),
            ("USAGE_EVENTS_QUEUE_URL", "q-ue"),
            ("LEAD_EVENTS_QUEUE_URL", "q-le"),
            ("CUSTOMER_EVENTS_QUEUE_URL", "q-ce"),
            ("PRIVACY_REQUESTS_QUEUE_URL", "q-pr"),
            ("STRIPE_WEBHOOK_SECRET_ID", "blapi/stripe"),
            ("SOURCE_WEBHOOK_SECRET_ID", "blapi/sources"),
            ("LEDGER_TABLE", "ledger"),
            ("ARTIFACTS_BUCKET", "bucket"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Env::from_map(vars)
    }

    #[test]
    fn config_from_env() {
        let c = IntakeConfig::from_env(&env(&[])).unwrap();
        assert_eq!(c.tolerance_secs, 300);
        assert_eq!(c.max_body_bytes, 262_144);
        assert_eq!(c.queue_url(Route::UsageEvents), "q-ue");
        assert_eq!(c.metrics_namespace, "blapi");
        let c = IntakeConfig::from_env(&env(&[
            ("WEBHOOK_TOLERANCE_SECS", "60"),
            ("WEBHOOK_MAX_BODY_BYTES", "524288"),
        ]))
        .unwrap();
        assert_eq!((c.tolerance_secs, c.max_body_bytes), (60, 524_288));
        let err = IntakeConfig::from_env(&env(&[("WEBHOOK_TOLERANCE_SECS", "soon")])).unwrap_err();
        assert!(err.to_string().contains("WEBHOOK_TOLERANCE_SECS"));
        let err = IntakeConfig::from_env(&Env::from_map([("LEDGER_TABLE", "x")])).unwrap_err();
        assert!(
            err.to_string().contains("LICENSE_REQUESTS_QUEUE_URL"),
            "{err}"
        );
    }

    #[test]
    fn secrets_json_and_known_sources() {
        let stripe: StripeSecrets =
            serde_json::from_str(r#"{"secrets": ["whsec_a", "whsec_b"]}"#).unwrap();
        let sources: SourceSecrets = serde_json::from_str(
            r#"{"portal": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "telemetry": ["whsec_dGVsZW1ldHJ5LXRlc3Qtc2VjcmV0LTAxMjM0NTY3"], "retired": []}"#,
        )
        .unwrap();
        let v = Verifiers::new(&stripe, &sources, ("s", "f")).unwrap();
        assert_eq!(v.known(), vec!["stripe", "portal", "telemetry"]);
        // No Stripe secret: Stripe is unknown.
        let none: StripeSecrets = serde_json::from_str(r#"{"secrets": []}"#).unwrap();
        assert_eq!(
            Verifiers::new(&none, &sources, ("s", "f")).unwrap().known(),
            vec!["portal", "telemetry"]
        );
    }

    #[test]
    fn bad_secrets_fail_at_start_without_their_value() {
        let stripe: StripeSecrets = serde_json::from_str(r#"{"secrets": ["whsec_a"]}"#).unwrap();
        for (json, expect) in [
            (
                r#"{"portal": ["whsec_not*base64"]}"#,
                "secret 0 of source portal",
            ),
            (
                r#"{"Portal": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}"#,
                "source name",
            ),
            (
                r#"{"stripe": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}"#,
                "own secret",
            ),
        ] {
            let sources: SourceSecrets = serde_json::from_str(json).unwrap();
            let err = Verifiers::new(&stripe, &sources, ("s", "blapi/sources"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("blapi/sources") && err.contains(expect),
                "{err}"
            );
            assert!(!err.contains("not*base64"), "{err}");
        }
        let empty: StripeSecrets = serde_json::from_str(r#"{"secrets": [""]}"#).unwrap();
        let err = Verifiers::new(
            &empty,
            &SourceSecrets(BTreeMap::new()),
            ("blapi/stripe", "f"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("blapi/stripe"));
    }
}
