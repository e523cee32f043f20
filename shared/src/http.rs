//! Outgoing HTTP clients (Stripe, enrichment provider, Salesforce): rustls with the trust store
//! of [`crate::tls`], explicit connect and request timeouts, a `User-Agent` naming us. Build one
//! per cold start and reuse it.

use crate::config::Env;
use crate::error::{Error, Result};
use crate::tls::Roots;
use std::time::Duration;

/// A client with the given overall request timeout.
pub fn client(timeout: Duration) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("blapi/", env!("CARGO_PKG_VERSION")));
    if let Some(tls) = Roots::from_env(&Env::process())?.rustls_config()? {
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder
        .build()
        .map_err(|e| Error::dependency("http", false, e))
}

/// Whether an HTTP status is worth retrying (throttling or a server error).
pub fn retryable_status(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Whether a transport error is worth retrying (timeouts, refused or reset connections).
pub fn retryable_transport(err: &reqwest::Error) -> bool {
    err.is_timeout() || err.is_connect() || err.is_request()
}

/// One HTTP answer, read whole: the status, its `Retry-After` and the body.
#[derive(Debug)]
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub retry_after: Option<std::time::Duration>,
    pub body: Vec<u8>,
}

impl Reply {
    /// Whether the answer says "try again" (429 or 5xx).
    pub fn retryable(&self) -> bool {
        retryable_status(self.status)
    }

    /// The body as `T`.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
    ) -> std::result::Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// The largest answer read from an outgoing call (Stripe lists, Salesforce, the provider).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// The body, chunk by chunk, or `None` as soon as it passes `max` bytes (the declared
/// `Content-Length` is checked first).
async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> std::result::Result<Option<Vec<u8>>, reqwest::Error> {
    if resp
        .content_length()
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > max))
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The one retry loop for outgoing HTTP (Stripe, Salesforce, the enrichment provider).
///
/// Each attempt sends `build()`. A transport failure (no answer) becomes
/// `transport(retryable, message)` — retried when it is a timeout or a refused/reset
/// connection, final otherwise — with the
/// URL stripped from the message (it may carry ids or query values). Every answer goes to
/// `answer`, which decides: done, retry (usually `reply.retryable()`, honouring
/// `reply.retry_after`), or fail. The attempts are bounded by `policy` and, inside a
/// [`crate::deadline::Deadline`] scope, by the invocation's deadline: an attempt is cut
/// [`crate::deadline::Deadline::RESERVE`] before it (a retryable transport failure), and no
/// wait is slept past it.
pub async fn send_with_retry<T, E>(
    policy: crate::retry::RetryPolicy,
    build: impl Fn() -> reqwest::RequestBuilder,
    transport: impl Fn(bool, String) -> E,
    answer: impl Fn(Reply) -> crate::retry::Attempt<T, E>,
) -> std::result::Result<T, E> {
    use crate::retry::Attempt;
    crate::retry::retry(policy, |_| async {
        let attempt = attempt(&build, &transport, &answer);
        let Some(deadline) = crate::deadline::Deadline::current() else {
            return attempt.await;
        };
        // No attempt outlasts the invocation (it is cut `Deadline::RESERVE` before the end);
        // a cut attempt is retryable, and the retry loop then gives up at once.
        match tokio::time::timeout_at(deadline.cutoff(), attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Attempt::Retry(
                transport(true, "no answer before the invocation's deadline".into()),
                None,
            ),
        }
    })
    .await
}

/// One attempt of [`send_with_retry`].
async fn attempt<T, E>(
    build: &impl Fn() -> reqwest::RequestBuilder,
    transport: &impl Fn(bool, String) -> E,
    answer: &impl Fn(Reply) -> crate::retry::Attempt<T, E>,
) -> crate::retry::Attempt<T, E> {
    use crate::retry::Attempt;
    let resp = match build().send().await {
        Ok(r) => r,
        Err(e) => {
            let retryable = retryable_transport(&e);
            let err = transport(retryable, e.without_url().to_string());
            return if retryable {
                Attempt::Retry(err, None)
            } else {
                Attempt::Fail(err)
            };
        }
    };
    let status = resp.status();
    let retry_after = crate::retry::retry_after(resp.headers());
    match read_capped(resp, MAX_RESPONSE_BYTES).await {
        Ok(Some(body)) => answer(Reply {
            status,
            retry_after,
            body,
        }),
        // No API of ours answers this much: refused, not retried, never buffered whole.
        Ok(None) => Attempt::Fail(transport(
            false,
            format!("HTTP {status} answer larger than {MAX_RESPONSE_BYTES} bytes; not read"),
        )),
        // The answer broke off mid-body: as good as no answer.
        Err(e) => Attempt::Retry(transport(true, e.without_url().to_string()), None),
    }
}

/// An HTTP API reached with a bearer key (Stripe, the enrichment provider): the client, its
/// base URL (no trailing slash), the key, the retry policy and a call counter shared by
/// clones. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    api_key: crate::config::Secret<String>,
    policy: crate::retry::RetryPolicy,
    calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ApiClient {
    /// `timeout` bounds each attempt.
    pub fn new(
        base_url: impl Into<String>,
        api_key: crate::config::Secret<String>,
        timeout: Duration,
        policy: crate::retry::RetryPolicy,
    ) -> Result<Self> {
        Ok(Self {
            http: client(timeout)?,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key,
            policy,
            calls: Default::default(),
        })
    }

    /// Overrides the retry policy (tests use `RetryPolicy::immediate`).
    pub fn with_retry(mut self, policy: crate::retry::RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// HTTP requests sent so far, retries included (benchmarks count calls).
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `{base}/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path.trim_start_matches('/'))
    }

    /// A request with the bearer key, counted as one call.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.http
            .request(method, url)
            .bearer_auth(self.api_key.expose())
    }

    /// [`send_with_retry`] under this client's policy.
    pub async fn send<T, E>(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        transport: impl Fn(bool, String) -> E,
        answer: impl Fn(Reply) -> crate::retry::Attempt<T, E>,
    ) -> std::result::Result<T, E> {
        send_with_retry(self.policy, build, transport, answer).await
    }
}
