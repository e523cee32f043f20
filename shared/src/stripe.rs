//! The Stripe HTTP client: injected base URL (localstripe locally), secret key, timeouts,
//! retries on 429/5xx/transport errors with backoff, and an `Idempotency-Key` on every POST.
//!
//! Typed requests for one domain live beside that domain (billing, licensing) and go through
//! [`StripeClient::get`] and [`StripeClient::post`]; this module knows only the transport.

use crate::config::Secret;
use crate::error::{Error, Result};
use crate::retry::{Attempt, RetryPolicy, retry, retry_after};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Stripe's longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A Stripe API client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StripeClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Secret<String>,
    policy: RetryPolicy,
    calls: Arc<AtomicU64>,
}

/// Stripe's error body: `{"error": {"type", "code", "message", "param"}}`.
#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, serde::Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl StripeClient {
    /// `base_url` without trailing slash, e.g. `https://api.stripe.com`.
    pub fn new(
        base_url: impl Into<String>,
        api_key: Secret<String>,
        timeout: Duration,
    ) -> Result<Self> {
        Ok(Self {
            http: crate::http::client(timeout)?,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key,
            policy: RetryPolicy::default(),
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Overrides the retry policy (tests use [`RetryPolicy::immediate`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// HTTP requests sent so far, retries included (benchmarks count calls per invoice).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `GET /v1/{path}` with query parameters.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        let url = format!("{}/v1/{}", self.base_url, path.trim_start_matches('/'));
        self.send(|| self.http.get(&url).query(query)).await
    }

    /// `POST /v1/{path}` with a form body and an `Idempotency-Key` (required: every POST we
    /// make is a side effect that a retry must not repeat).
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<T> {
        if idempotency_key.is_empty() || idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(Error::Invalid(format!(
                "Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY} characters"
            )));
        }
        let url = format!("{}/v1/{}", self.base_url, path.trim_start_matches('/'));
        self.send(|| {
            self.http
                .post(&url)
                .header("Idempotency-Key", idempotency_key)
                .form(form)
        })
        .await
    }

    /// `DELETE /v1/{path}`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}/v1/{}", self.base_url, path.trim_start_matches('/'));
        self.send(|| self.http.delete(&url)).await
    }

    async fn send<T, B>(&self, build: B) -> Result<T>
    where
        T: DeserializeOwned,
        B: Fn() -> reqwest::RequestBuilder,
    {
        retry(self.policy, |_| async {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let resp = match build()
                .bearer_auth(self.api_key.expose())
                .header("Stripe-Version", "2024-06-20")
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    let retryable = crate::http::retryable_transport(&e);
                    let err = Error::dependency("stripe", retryable, e.without_url());
                    return if retryable {
                        Attempt::Retry(err, None)
                    } else {
                        Attempt::Fail(err)
                    };
                }
            };
            let status = resp.status();
            let after = retry_after(resp.headers());
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    return Attempt::Retry(
                        Error::dependency("stripe", true, e.without_url()),
                        None,
                    );
                }
            };
            if status.is_success() {
                return match serde_json::from_slice::<T>(&bytes) {
                    Ok(v) => Attempt::Done(v),
                    Err(e) => Attempt::Fail(Error::dependency(
                        "stripe",
                        false,
                        format!("unexpected response shape: {e}"),
                    )),
                };
            }
            let detail = serde_json::from_slice::<ErrorBody>(&bytes)
                .ok()
                .map(|b| b.error);
            let message = detail
                .as_ref()
                .map(|d| {
                    format!(
                        "{} {}: {}",
                        d.kind.as_deref().unwrap_or("error"),
                        d.code.as_deref().unwrap_or(""),
                        d.message.as_deref().unwrap_or("")
                    )
                })
                .unwrap_or_else(|| format!("HTTP {status}"));
            if crate::http::retryable_status(status) {
                Attempt::Retry(
                    Error::dependency("stripe", true, format!("HTTP {status}: {message}")),
                    after,
                )
            } else if status == reqwest::StatusCode::NOT_FOUND {
                Attempt::Fail(Error::NotFound(format!("stripe: {message}")))
            } else {
                Attempt::Fail(Error::dependency(
                    "stripe",
                    false,
                    format!("HTTP {status}: {message}"),
                ))
            }
        })
        .await
    }
}

/// Flattens nested parameters into Stripe's form encoding: `("metadata[sku]", "pro")`.
pub fn form_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Vec<(String, String)> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn client(base: &str) -> StripeClient {
        StripeClient::new(
            base,
            Secret::new("sk_test_x".into()),
            Duration::from_secs(2),
        )
        .unwrap()
        .with_retry(RetryPolicy::immediate(3))
    }

    #[tokio::test]
    async fn post_carries_idempotency_key_and_retries_5xx() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/invoiceitems"))
            .and(header("Idempotency-Key", "inv-c1-2026-10-item-0"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/invoiceitems"))
            .and(header("Idempotency-Key", "inv-c1-2026-10-item-0"))
            .and(header("authorization", "Bearer sk_test_x"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "ii_1"})),
            )
            .mount(&server)
            .await;
        let c = client(&server.uri());
        let v: serde_json::Value = c
            .post(
                "invoiceitems",
                &form_pairs([("amount", "100".to_owned())]),
                "inv-c1-2026-10-item-0",
            )
            .await
            .unwrap();
        assert_eq!(v["id"], "ii_1");
        assert_eq!(c.calls(), 2);
    }

    #[tokio::test]
    async fn not_found_and_client_errors_are_not_retried() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/subscriptions/sub_missing"))
            .respond_with(ResponseTemplate::new(404).set_body_json(
                serde_json::json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such subscription"}}),
            ))
            .mount(&server)
            .await;
        let c = client(&server.uri());
        let e = c
            .get::<serde_json::Value>("subscriptions/sub_missing", &[])
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e:?}");
        assert!(!e.is_retryable());
        assert_eq!(c.calls(), 1);
    }

    #[tokio::test]
    async fn throttling_exhausts_retries_as_retryable() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
            .mount(&server)
            .await;
        let c = client(&server.uri());
        let e = c
            .get::<serde_json::Value>("customers/cus_1", &[])
            .await
            .unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(c.calls(), 3);
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        let c = client("http://127.0.0.1:9");
        let e = c
            .get::<serde_json::Value>("customers/cus_1", &[])
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
    }

    #[tokio::test]
    async fn bad_idempotency_key_is_refused_before_sending() {
        let c = client("http://127.0.0.1:9");
        let long = "k".repeat(256);
        assert!(matches!(
            c.post::<serde_json::Value>("invoices", &[], &long).await,
            Err(Error::Invalid(_))
        ));
        assert_eq!(c.calls(), 0);
    }
}
