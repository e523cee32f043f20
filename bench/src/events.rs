//! The event each cold start hands to its function, rendered fresh for every run.
//!
//! Templates live in `bench/events/<function>.json`. Every run gets a new id, because the
//! functions deduplicate (ledger): replaying one fixed event would time the "duplicate" fast
//! path from the second run on. Rendering, in order:
//! 1. placeholders in every string: `{{uuid}}` (one fresh v4 uuid per run), `{{uuid_simple}}`
//!    (the same without dashes, for Stripe-style ids `sub_...`), `{{now}}` (unix
//!    seconds), `{{now_ms}}`, `{{now_rfc3339}}`, `{{stack_prefix}}` (the local stack's name
//!    prefix, for queue ARNs);
//! 2. every `"body"` given as a JSON object or array is serialised to its compact string (an
//!    SQS record body, a Function URL body), so templates stay readable;
//! 3. signature placeholders in headers, computed over the event's final top-level `"body"`:
//!    `{{stripe_signature}}` (`Stripe-Signature: t=..,v1=..`, first secret of
//!    `StripeWebhookSecretName`) and `{{standard_signature:<source>}}` (Standard Webhooks
//!    `v1,<base64>` over `<webhook-id>.<webhook-timestamp>.<body>`, first secret of `<source>`
//!    in `SourceWebhookSecretName`), with the test-only secrets of `infra/local-secrets.json`.

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The test-only webhook secrets of the local stack (`infra/local-secrets.json`).
#[derive(Debug, Clone, Default)]
pub struct WebhookSecrets {
    secrets: Value,
}

impl WebhookSecrets {
    /// Parses the local secrets file's JSON.
    pub fn from_json(json: &str) -> Result<WebhookSecrets> {
        Ok(WebhookSecrets {
            secrets: serde_json::from_str(json).context("local secrets JSON")?,
        })
    }

    fn stripe(&self) -> Result<&str> {
        self.secrets
            .pointer("/StripeWebhookSecretName/secrets/0")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("no StripeWebhookSecretName.secrets[0] in the local secrets"))
    }

    fn source(&self, source: &str) -> Result<&str> {
        self.secrets
            .get("SourceWebhookSecretName")
            .and_then(|s| s.get(source))
            .and_then(|s| s.get(0))
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("no SourceWebhookSecretName.{source}[0] in the local secrets"))
    }
}

/// Per-run values substituted into a template.
#[derive(Debug, Clone)]
pub struct RunValues {
    pub uuid: String,
    pub now: chrono::DateTime<chrono::Utc>,
    pub stack_prefix: String,
}

impl RunValues {
    /// A fresh uuid and the current time, for a stack named `stack_prefix`.
    pub fn fresh(stack_prefix: &str) -> RunValues {
        RunValues {
            uuid: uuid::Uuid::new_v4().to_string(),
            now: chrono::Utc::now(),
            stack_prefix: stack_prefix.to_owned(),
        }
    }
}

/// Renders a template (see the module doc) into the event bytes.
pub fn render(template: &str, run: &RunValues, secrets: &WebhookSecrets) -> Result<Vec<u8>> {
    let mut event: Value = serde_json::from_str(template).context("event template is not JSON")?;
    substitute(&mut event, run);
    stringify_bodies(&mut event);
    sign(&mut event, run, secrets)?;
    Ok(serde_json::to_vec(&event)?)
}

fn substitute(value: &mut Value, run: &RunValues) {
    match value {
        Value::String(s) if s.contains("{{") => {
            *s = s
                .replace("{{uuid}}", &run.uuid)
                .replace("{{uuid_simple}}", &run.uuid.replace('-', ""))
                .replace("{{now}}", &run.now.timestamp().to_string())
                .replace("{{now_ms}}", &run.now.timestamp_millis().to_string())
                .replace("{{stack_prefix}}", &run.stack_prefix)
                .replace(
                    "{{now_rfc3339}}",
                    &run.now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                );
        }
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, run)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, run)),
        _ => {}
    }
}

fn stringify_bodies(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(stringify_bodies),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "body" && (v.is_object() || v.is_array()) {
                    *v = Value::String(v.to_string());
                } else {
                    stringify_bodies(v);
                }
            }
        }
        _ => {}
    }
}

fn sign(event: &mut Value, run: &RunValues, secrets: &WebhookSecrets) -> Result<()> {
    let Some(Value::Object(headers)) = event.get("headers").cloned() else {
        return Ok(());
    };
    let body = event
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned)
    };
    let mut signed = headers.clone();
    for value in signed.values_mut() {
        let Some(text) = value.as_str() else { continue };
        if text == "{{stripe_signature}}" {
            let t = run.now.timestamp();
            let mac = hmac(
                secrets.stripe()?.as_bytes(),
                format!("{t}.{body}").as_bytes(),
            )?;
            *value = Value::String(format!("t={t},v1={}", hex::encode(mac)));
        } else if let Some(source) = text
            .strip_prefix("{{standard_signature:")
            .and_then(|s| s.strip_suffix("}}"))
        {
            let secret = secrets.source(source)?;
            let key = STANDARD
                .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
                .with_context(|| format!("{source} secret is not whsec_<base64>"))?;
            let (Some(id), Some(ts)) = (header("webhook-id"), header("webhook-timestamp")) else {
                bail!(
                    "a Standard Webhooks signature needs webhook-id and webhook-timestamp headers"
                );
            };
            let mac = hmac(&key, format!("{id}.{ts}.{body}").as_bytes())?;
            *value = Value::String(format!("v1,{}", STANDARD.encode(mac)));
        }
    }
    event["headers"] = Value::Object(signed);
    Ok(())
}

fn hmac(key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| anyhow!("hmac key: {e}"))?;
    mac.update(message);
    Ok(mac.finalize().into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunValues {
        RunValues {
            uuid: "11111111-2222-3333-4444-555555555555".into(),
            now: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            stack_prefix: "bench".into(),
        }
    }

    fn secrets() -> WebhookSecrets {
        WebhookSecrets::from_json(
            r#"{"StripeWebhookSecretName":{"secrets":["whsec_local_stripe_test_secret"]},
                "SourceWebhookSecretName":{"portal":["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn substitutes_and_stringifies_bodies() {
        let t = r#"{"Records":[{"messageId":"{{uuid}}","body":{"id":"evt_{{uuid}}","at":"{{now_rfc3339}}","n":1}}],"t":"{{now}}","arn":"q:{{stack_prefix}}-Q","sub":"sub_{{uuid_simple}}"}"#;
        let v: Value = serde_json::from_slice(&render(t, &run(), &secrets()).unwrap()).unwrap();
        assert_eq!(v["t"], "1700000000");
        assert_eq!(v["arn"], "q:bench-Q");
        assert_eq!(v["sub"], "sub_11111111222233334444555555555555");
        assert_eq!(
            v["Records"][0]["messageId"],
            "11111111-2222-3333-4444-555555555555"
        );
        let body: Value = serde_json::from_str(v["Records"][0]["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["id"], "evt_11111111-2222-3333-4444-555555555555");
        assert_eq!(body["at"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn standard_webhooks_signature_matches_the_spec_example() {
        // The Standard Webhooks reference example (standard-webhooks/spec): id msg_p5jXN8AQM9LWM0D4loKWxJek,
        // timestamp 1614265330, this secret and body give this signature.
        let t = r#"{"headers":{"webhook-id":"msg_p5jXN8AQM9LWM0D4loKWxJek","webhook-timestamp":"1614265330",
            "webhook-signature":"{{standard_signature:portal}}"},"body":"{\"test\": 2432232314}"}"#;
        let v: Value = serde_json::from_slice(&render(t, &run(), &secrets()).unwrap()).unwrap();
        assert_eq!(
            v["headers"]["webhook-signature"],
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn stripe_signature_is_hmac_of_timestamp_dot_body() {
        let t = r#"{"headers":{"stripe-signature":"{{stripe_signature}}"},"body":"{}"}"#;
        let v: Value = serde_json::from_slice(&render(t, &run(), &secrets()).unwrap()).unwrap();
        let expected =
            hex::encode(hmac(b"whsec_local_stripe_test_secret", b"1700000000.{}").unwrap());
        assert_eq!(
            v["headers"]["stripe-signature"],
            format!("t=1700000000,v1={expected}")
        );
    }

    #[test]
    fn a_missing_secret_is_a_clear_error() {
        let t = r#"{"headers":{"webhook-id":"a","webhook-timestamp":"1","s":"{{standard_signature:telemetry}}"},"body":"{}"}"#;
        let err = render(t, &run(), &secrets()).unwrap_err();
        assert!(
            err.to_string()
                .contains("SourceWebhookSecretName.telemetry")
        );
    }
}
