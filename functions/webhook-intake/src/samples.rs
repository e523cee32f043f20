//! Sample Function URL events: signed requests for every route, built the way Lambda
//! delivers them (payload format 2.0).
//!
//! The committed files in `events/webhook-intake/` are generated from the bodies in
//! `events/webhook-intake/bodies/` by `cargo run -p webhook-intake --example sign-events`,
//! signed with the documented local test secrets (`infra/local-secrets.json`) at
//! [`FIXED_NOW`]; tests check the files are current and accepted at that clock. With `--now`
//! the generator signs with the current time, for `cargo lambda invoke` against a running
//! function (a fixed timestamp is outside the 300 s tolerance in real time).

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlRequestContext,
};
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use blapi::webhook::StandardSecret;
use blapi::webhook::stripe_scheme;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The clock of the committed samples: 2023-11-14T22:13:20Z.
pub const FIXED_NOW: i64 = 1_700_000_000;

/// One sample: `events/webhook-intake/{name}.json` from `bodies/{name}.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub name: &'static str,
    pub source: &'static str,
    /// The `webhook-id` of a Standard Webhooks source (Stripe's id is in the body).
    pub webhook_id: Option<&'static str>,
    /// Signed with a secret the function does not hold (shows the 400 path).
    pub wrong_secret: bool,
    /// The status the function answers at [`FIXED_NOW`] on a fresh stack.
    pub expect_status: u16,
    /// The queues it lands in.
    pub expect_queues: &'static [&'static str],
}

const fn sample(
    name: &'static str,
    source: &'static str,
    webhook_id: Option<&'static str>,
    queues: &'static [&'static str],
) -> Sample {
    Sample {
        name,
        source,
        webhook_id,
        wrong_secret: false,
        expect_status: 200,
        expect_queues: queues,
    }
}

/// The sample also written as `default.json` (`make invoke-webhook-intake` without `EVENT=`).
pub const DEFAULT_SAMPLE: &str = "stripe-customer-subscription-created";

/// Every sample.
pub const SAMPLES: &[Sample] = &[
    sample(
        "stripe-customer-created",
        "stripe",
        None,
        &["billing-events", "lead-events", "customer-events"],
    ),
    sample(
        "stripe-customer-subscription-created",
        "stripe",
        None,
        &["license-requests", "billing-events", "customer-events"],
    ),
    sample(
        "stripe-invoice-paid",
        "stripe",
        None,
        &["license-requests", "billing-events", "customer-events"],
    ),
    sample(
        "stripe-invoice-payment-failed",
        "stripe",
        None,
        &["billing-events", "customer-events"],
    ),
    sample(
        "stripe-checkout-session-completed",
        "stripe",
        None,
        &["license-requests", "customer-events"],
    ),
    sample("stripe-plan-created-unrouted", "stripe", None, &[]),
    sample(
        "portal-lead-signup",
        "portal",
        Some("msg_2b8kX0sample0portal0signup"),
        &["lead-events"],
    ),
    sample(
        "portal-lead-contact-us",
        "portal",
        Some("msg_2b8kX0sample0portal0contact"),
        &["lead-events"],
    ),
    sample(
        "telemetry-usage-reported",
        "telemetry",
        Some("msg_2b8kX0sample0telemetry0usage"),
        &["usage-events"],
    ),
    Sample {
        name: "stripe-wrong-secret",
        source: "stripe",
        webhook_id: None,
        wrong_secret: true,
        expect_status: 400,
        expect_queues: &[],
    },
];

/// The local test secrets (`infra/local-secrets.json`), never real ones.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LocalSecrets {
    #[serde(rename = "StripeWebhookSecretName")]
    pub stripe: StripeShape,
    #[serde(rename = "SourceWebhookSecretName")]
    pub sources: BTreeMap<String, Vec<String>>,
}

/// `{"secrets": [...]}`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StripeShape {
    pub secrets: Vec<String>,
}

impl LocalSecrets {
    /// Reads `infra/local-secrets.json` under the workspace root.
    pub fn load(root: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(root.join("infra/local-secrets.json"))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}

/// The workspace root, from this package's manifest directory (`functions/webhook-intake`).
pub fn workspace_root(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../..")
}

/// A Function URL request as Lambda delivers it.
pub fn function_url_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    is_base64_encoded: bool,
    at_unix: i64,
) -> LambdaFunctionUrlRequest {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    let mut context = LambdaFunctionUrlRequestContext::default();
    context.account_id = Some("anonymous".into());
    context.apiid = Some("blapilocal".into());
    context.domain_name = Some("blapilocal.lambda-url.us-east-1.on.aws".into());
    context.domain_prefix = Some("blapilocal".into());
    context.request_id = Some(format!("req-{at_unix}"));
    context.time_epoch = at_unix * 1000;
    context.http.method = Some(method.into());
    context.http.path = Some(path.into());
    context.http.protocol = Some("HTTP/1.1".into());
    context.http.source_ip = Some("127.0.0.1".into());
    context.http.user_agent = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
        .map(|(_, v)| (*v).to_owned());
    let mut req = LambdaFunctionUrlRequest::default();
    req.version = Some("2.0".into());
    req.raw_path = Some(path.into());
    req.raw_query_string = Some(String::new());
    req.headers = map;
    req.request_context = context;
    req.body = body.map(str::to_owned);
    req.is_base64_encoded = is_base64_encoded;
    req
}

/// A Stripe delivery of `body` signed with `secrets` at `at_unix`.
pub fn stripe_request(body: &str, secrets: &[&str], at_unix: i64) -> LambdaFunctionUrlRequest {
    let sig = stripe_scheme::header(secrets, at_unix, body.as_bytes());
    function_url_request(
        "POST",
        "/webhooks/stripe",
        &[
            ("content-type", "application/json; charset=utf-8"),
            (
                "user-agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            ),
            ("stripe-signature", &sig),
        ],
        Some(body),
        false,
        at_unix,
    )
}

/// A Standard Webhooks delivery of `body` from `source`, signed with `secret` at `at_unix`.
pub fn standard_request(
    source: &str,
    webhook_id: &str,
    body: &str,
    secret: &StandardSecret,
    at_unix: i64,
) -> LambdaFunctionUrlRequest {
    let sig = secret.sign(webhook_id, at_unix, body.as_bytes());
    let ts = at_unix.to_string();
    function_url_request(
        "POST",
        &format!("/webhooks/{source}"),
        &[
            ("content-type", "application/json"),
            ("webhook-id", webhook_id),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sig),
        ],
        Some(body),
        false,
        at_unix,
    )
}

/// Why a sample could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("no local secret for source {0}")]
    NoSecret(String),
    #[error("local secret of {0} is not a Standard Webhooks secret")]
    BadSecret(String),
    #[error("body {0} is not a JSON object")]
    BadBody(String),
}

/// Renders `sample` (its body from `bodies_dir`) signed at `at_unix`. With `suffix`, event ids
/// get it appended (fresh ids: new events to a running stack, not redeliveries); the body is
/// then re-serialised before signing.
pub fn render(
    sample: &Sample,
    bodies_dir: &Path,
    secrets: &LocalSecrets,
    at_unix: i64,
    suffix: Option<&str>,
) -> Result<LambdaFunctionUrlRequest, SampleError> {
    let path = bodies_dir.join(format!("{}.json", sample.name));
    let mut body = std::fs::read_to_string(&path).map_err(|source| SampleError::Io {
        path: path.display().to_string(),
        source,
    })?;
    if body.ends_with('\n') {
        body.pop();
    }
    if sample.source == "stripe" {
        if let Some(suffix) = suffix {
            let mut value: serde_json::Value = serde_json::from_str(&body)
                .map_err(|_| SampleError::BadBody(sample.name.into()))?;
            let id = value["id"].as_str().unwrap_or("evt_sample").to_owned();
            value["id"] = serde_json::Value::String(format!("{id}_{suffix}"));
            value["created"] = serde_json::Value::from(at_unix);
            body = value.to_string();
        }
        let wrong = ["whsec_not_the_configured_secret".to_owned()];
        let keys: Vec<&str> = if sample.wrong_secret {
            &wrong[..]
        } else {
            &secrets.stripe.secrets[..]
        }
        .iter()
        .map(String::as_str)
        .collect();
        return Ok(stripe_request(&body, &keys, at_unix));
    }
    let raw_secret = secrets
        .sources
        .get(sample.source)
        .and_then(|s| s.first())
        .ok_or_else(|| SampleError::NoSecret(sample.source.into()))?;
    let secret = StandardSecret::parse(raw_secret)
        .map_err(|_| SampleError::BadSecret(sample.source.into()))?;
    let base_id = sample.webhook_id.unwrap_or("msg_sample");
    let id = match suffix {
        Some(s) => format!("{base_id}_{s}"),
        None => base_id.to_owned(),
    };
    Ok(standard_request(
        sample.source,
        &id,
        &body,
        &secret,
        at_unix,
    ))
}

/// Pretty JSON of a request, as committed in `events/` (one trailing newline).
pub fn to_file_json(req: &LambdaFunctionUrlRequest) -> String {
    let mut out = serde_json::to_string_pretty(req).unwrap_or_default();
    out.push('\n');
    out
}
