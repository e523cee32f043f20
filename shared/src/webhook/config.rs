//! webhook-intake's configuration: environment variables (template.yaml) and the JSON shapes
//! of its two webhook secrets in Secrets Manager.
//!
//! One binary runs three Lambda functions (template.yaml). Each function's environment names
//! what it does:
//! - the intake (Function URL): `EVENTS_QUEUE_URL` and the webhook secrets
//!   (`STRIPE_WEBHOOK_SECRET_ID`, `SOURCE_WEBHOOK_SECRET_ID`);
//! - the archiver (the events queue): the routed queues' URLs and the subject key
//!   (`PRIVACY_KEY_SECRET_ID`);
//! - the archive maintenance (schedules: the seal, the Stripe recovery): `EVENTS_QUEUE_URL`
//!   (the recovery sends there) and the Stripe API.
//!
//! `EVENTS_QUEUE_URL` is set on all three.
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
    /// `EVENTS_QUEUE_URL`: where every accepted event goes (the archiver's queue).
    pub events_queue_url: String,
    /// The webhook secrets' ids (the Function URL's function); `None`: no source is known.
    pub webhook_secrets: Option<WebhookSecretIds>,
    pub tolerance_secs: u64,
    pub max_body_bytes: usize,
    /// The artifacts bucket: the archive and the claim check of large messages.
    pub bucket: String,
    pub metrics_namespace: String,
    /// The Stripe API (`STRIPE_API_KEY_SECRET_ID`, `STRIPE_API_BASE`), read only by the daily
    /// missed-event recovery (and only then loaded). Optional: without it the recovery action
    /// is refused.
    pub stripe_api: Option<crate::stripe::StripeConfig>,
    /// The archiver (the routed queues and the subject key); `None` on the intake's function.
    pub archiver: Option<ArchiverConfig>,
}

/// `STRIPE_WEBHOOK_SECRET_ID` and `SOURCE_WEBHOOK_SECRET_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSecretIds {
    pub stripe: String,
    pub sources: String,
}

/// What the archiver reads besides the common settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiverConfig {
    /// Queue URL per route, in [`Route::ALL`] order.
    pub queue_urls: [String; 6],
    /// `PRIVACY_KEY_SECRET_ID`: the key of the subject hashes written with every event.
    pub subject_key_secret_id: String,
}

impl ArchiverConfig {
    /// The queue URL of `route`.
    pub fn queue_url(&self, route: Route) -> &str {
        &self.queue_urls[route as usize]
    }
}

/// The largest `WEBHOOK_MAX_BODY_BYTES`: half of [`crate::queue::MAX_CHECKED_OUT_BYTES`].
pub const MAX_WEBHOOK_BODY_BYTES: usize = crate::queue::MAX_CHECKED_OUT_BYTES / 2;

impl IntakeConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_body_bytes = env.parsed_or("WEBHOOK_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?;
        if max_body_bytes == 0 {
            return Err(ConfigError::Malformed {
                name: "WEBHOOK_MAX_BODY_BYTES".into(),
                reason: "must be positive".into(),
            });
        }
        // The queue message carries the body as a JSON string (escaping can double it), and
        // the largest message a consumer reads is `MAX_CHECKED_OUT_BYTES`: a larger limit
        // would accept events that could never be handed on.
        if max_body_bytes > MAX_WEBHOOK_BODY_BYTES {
            return Err(ConfigError::Malformed {
                name: "WEBHOOK_MAX_BODY_BYTES".into(),
                reason: format!(
                    "at most {MAX_WEBHOOK_BODY_BYTES} (half the largest queue message a consumer reads)"
                ),
            });
        }
        // Both or neither: one without the other is a deployment mistake, named.
        let webhook_secrets = if env.optional("STRIPE_WEBHOOK_SECRET_ID").is_some()
            || env.optional("SOURCE_WEBHOOK_SECRET_ID").is_some()
        {
            Some(WebhookSecretIds {
                stripe: env.required("STRIPE_WEBHOOK_SECRET_ID")?,
                sources: env.required("SOURCE_WEBHOOK_SECRET_ID")?,
            })
        } else {
            None
        };
        let routed = Route::ALL
            .iter()
            .any(|r| env.optional(r.env_var()).is_some());
        let archiver = if routed {
            Some(ArchiverConfig {
                queue_urls: [
                    env.required(Route::LicenseRequests.env_var())?,
                    env.required(Route::BillingEvents.env_var())?,
                    env.required(Route::UsageEvents.env_var())?,
                    env.required(Route::LeadEvents.env_var())?,
                    env.required(Route::CustomerEvents.env_var())?,
                    env.required(Route::PrivacyRequests.env_var())?,
                ],
                subject_key_secret_id: env.required("PRIVACY_KEY_SECRET_ID")?,
            })
        } else {
            None
        };
        Ok(Self {
            events_queue_url: env.required("EVENTS_QUEUE_URL")?,
            webhook_secrets,
            tolerance_secs: env.parsed_or("WEBHOOK_TOLERANCE_SECS", DEFAULT_TOLERANCE_SECS)?,
            max_body_bytes,
            bucket: env.required("ARTIFACTS_BUCKET")?,
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
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
            archiver,
        })
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
            ("EVENTS_QUEUE_URL", "q-ev"),
            ("STRIPE_WEBHOOK_SECRET_ID", "blapi/stripe"),
            ("SOURCE_WEBHOOK_SECRET_ID", "blapi/sources"),
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

    const ARCHIVER: [(&str, &str); 7] = [
        ("LICENSE_REQUESTS_QUEUE_URL", "q-lr"),
        ("BILLING_EVENTS_QUEUE_URL", "q-be"),
        ("USAGE_EVENTS_QUEUE_URL", "q-ue"),
        ("LEAD_EVENTS_QUEUE_URL", "q-le"),
        ("CUSTOMER_EVENTS_QUEUE_URL", "q-ce"),
        ("PRIVACY_REQUESTS_QUEUE_URL", "q-pr"),
        ("PRIVACY_KEY_SECRET_ID", "blapi/privacy-key"),
    ];

    #[test]
    fn config_from_env() {
        let c = IntakeConfig::from_env(&env(&[])).unwrap();
        assert_eq!(c.tolerance_secs, 300);
        assert_eq!(c.max_body_bytes, 262_144);
        assert_eq!(c.events_queue_url, "q-ev");
        assert_eq!(
            c.webhook_secrets,
            Some(WebhookSecretIds {
                stripe: "blapi/stripe".into(),
                sources: "blapi/sources".into()
            })
        );
        assert_eq!(
            c.archiver, None,
            "the intake's function routes nothing itself"
        );
        assert_eq!(c.metrics_namespace, "blapi");
        // The archiver's function: the routed queues and the subject key, no webhook secret.
        let mut archiver: Vec<(String, String)> = ARCHIVER
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        archiver.push(("EVENTS_QUEUE_URL".into(), "q-ev".into()));
        archiver.push(("ARTIFACTS_BUCKET".into(), "bucket".into()));
        let c = IntakeConfig::from_env(&Env::from_map(archiver)).unwrap();
        assert_eq!(c.webhook_secrets, None);
        let a = c.archiver.unwrap();
        assert_eq!(a.queue_url(Route::UsageEvents), "q-ue");
        assert_eq!(a.subject_key_secret_id, "blapi/privacy-key");
        // A routed queue without the others (or without the key) names what is missing.
        let err = IntakeConfig::from_env(&env(&[("USAGE_EVENTS_QUEUE_URL", "q-ue")])).unwrap_err();
        assert!(
            err.to_string().contains("LICENSE_REQUESTS_QUEUE_URL"),
            "{err}"
        );
        let err = IntakeConfig::from_env(&env(&ARCHIVER[..6])).unwrap_err();
        assert!(err.to_string().contains("PRIVACY_KEY_SECRET_ID"), "{err}");
        let c = IntakeConfig::from_env(&env(&[
            ("WEBHOOK_TOLERANCE_SECS", "60"),
            ("WEBHOOK_MAX_BODY_BYTES", "524288"),
        ]))
        .unwrap();
        assert_eq!((c.tolerance_secs, c.max_body_bytes), (60, 524_288));
        let too_big = (MAX_WEBHOOK_BODY_BYTES + 1).to_string();
        let err = IntakeConfig::from_env(&env(&[("WEBHOOK_MAX_BODY_BYTES", too_big.as_str())]))
            .unwrap_err();
        assert!(err.to_string().contains("WEBHOOK_MAX_BODY_BYTES"), "{err}");
        let err = IntakeConfig::from_env(&env(&[("WEBHOOK_TOLERANCE_SECS", "soon")])).unwrap_err();
        assert!(err.to_string().contains("WEBHOOK_TOLERANCE_SECS"));
        let err = IntakeConfig::from_env(&Env::from_map([("ARTIFACTS_BUCKET", "x")])).unwrap_err();
        assert!(err.to_string().contains("EVENTS_QUEUE_URL"), "{err}");
        let one = Env::from_map([
            ("EVENTS_QUEUE_URL", "q"),
            ("ARTIFACTS_BUCKET", "b"),
            ("STRIPE_WEBHOOK_SECRET_ID", "s"),
        ]);
        let err = IntakeConfig::from_env(&one).unwrap_err();
        assert!(
            err.to_string().contains("SOURCE_WEBHOOK_SECRET_ID"),
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
