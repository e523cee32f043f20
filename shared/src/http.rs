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

/// The largest answer read into memory from an outgoing call, by default (Stripe lists of
/// 100 objects are well under 1 MiB, Salesforce composite answers and JWK sets smaller still).
/// A larger answer is not read: the call fails with a non-retryable error saying so, since
/// asking again brings the same answer. [`ApiClient::with_max_response_bytes`] sets another
/// limit per client.
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
///
/// Answers are read up to [`MAX_RESPONSE_BYTES`] ([`send_with_retry_capped`] takes another
/// limit).
pub async fn send_with_retry<T, E>(
    policy: crate::retry::RetryPolicy,
    build: impl Fn() -> reqwest::RequestBuilder,
    transport: impl Fn(bool, String) -> E,
    answer: impl Fn(Reply) -> crate::retry::Attempt<T, E>,
) -> std::result::Result<T, E> {
    send_with_retry_capped(policy, MAX_RESPONSE_BYTES, build, transport, answer).await
}

/// [`send_with_retry`] reading at most `max_body` bytes of an answer: a larger one (by its
/// `Content-Length`, or counted as it streams in when it declares none) is dropped unread and
/// the call fails with `transport(false, "... larger than {max_body} bytes ...")`.
pub async fn send_with_retry_capped<T, E>(
    policy: crate::retry::RetryPolicy,
    max_body: usize,
    build: impl Fn() -> reqwest::RequestBuilder,
    transport: impl Fn(bool, String) -> E,
    answer: impl Fn(Reply) -> crate::retry::Attempt<T, E>,
) -> std::result::Result<T, E> {
    use crate::retry::Attempt;
    crate::retry::retry(policy, |_| async {
        let attempt = attempt(max_body, &build, &transport, &answer);
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
    max_body: usize,
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
    match read_capped(resp, max_body).await {
        Ok(Some(body)) => answer(Reply {
            status,
            retry_after,
            body,
        }),
        // No API of ours answers this much: refused, not retried, never buffered whole.
        Ok(None) => Attempt::Fail(transport(
            false,
            format!("HTTP {status} answer larger than {max_body} bytes; not read"),
        )),
        // The answer broke off mid-body: as good as no answer.
        Err(e) => Attempt::Retry(transport(true, e.without_url().to_string()), None),
    }
}

/// An HTTP API reached with a bearer key (Stripe, the enrichment provider): the client, its
/// base URL (no trailing slash), the key, the retry policy, the largest answer it reads and a
/// call counter shared by clones. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    api_key: crate::config::Secret<String>,
    policy: crate::retry::RetryPolicy,
    max_response_bytes: usize,
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
            max_response_bytes: MAX_RESPONSE_BYTES,
            calls: Default::default(),
        })
    }

    /// Reads answers up to `max` bytes instead of [`MAX_RESPONSE_BYTES`] (an API whose
    /// answers are small gets a small limit).
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// The largest answer this client reads.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
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
        send_with_retry_capped(
            self.policy,
            self.max_response_bytes,
            build,
            transport,
            answer,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{Attempt, RetryPolicy};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// One GET of `url` through the retry loop reading at most `max` bytes: the body length,
    /// or the error as `(retryable, message)`.
    async fn get(url: &str, max: usize) -> std::result::Result<usize, (bool, String)> {
        let http = client(Duration::from_secs(5)).unwrap();
        send_with_retry_capped(
            RetryPolicy::immediate(3),
            max,
            || http.get(url),
            |retryable, m| (retryable, m),
            |reply| Attempt::Done(reply.body.len()),
        )
        .await
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_unread_and_not_retried() {
        let server = MockServer::start().await;
        for (p, len) in [("/at", 1000), ("/over", 1001), ("/empty", 0)] {
            Mock::given(method("GET"))
                .and(path(p))
                .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; len]))
                .mount(&server)
                .await;
        }
        assert_eq!(get(&format!("{}/at", server.uri()), 1000).await, Ok(1000));
        assert_eq!(get(&format!("{}/empty", server.uri()), 0).await, Ok(0));
        let (retryable, m) = get(&format!("{}/over", server.uri()), 1000)
            .await
            .unwrap_err();
        assert!(!retryable);
        assert_eq!(m, "HTTP 200 OK answer larger than 1000 bytes; not read");
        let over = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() == "/over")
            .count();
        assert_eq!(over, 1, "asking again brings the same answer");
        // An error answer is capped the same way (a 500 page is not read whole either).
        Mock::given(method("GET"))
            .and(path("/error"))
            .respond_with(ResponseTemplate::new(500).set_body_bytes(vec![b'x'; 2000]))
            .mount(&server)
            .await;
        let (retryable, m) = get(&format!("{}/error", server.uri()), 1000)
            .await
            .unwrap_err();
        assert!(!retryable && m.contains("larger than 1000 bytes"), "{m}");
    }

    #[tokio::test]
    async fn an_answer_without_a_length_is_counted_as_it_streams() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A chunked answer (no Content-Length) of 64 chunks of 1 KiB.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut req = [0_u8; 4096];
                    let _ = sock.read(&mut req).await;
                    let mut out =
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                            .to_vec();
                    for _ in 0..64 {
                        out.extend_from_slice(b"400\r\n");
                        out.extend_from_slice(&[b'y'; 1024]);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                    let _ = sock.write_all(&out).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        let url = format!("http://{addr}/stream");
        assert_eq!(get(&url, 64 * 1024).await, Ok(64 * 1024));
        let (retryable, m) = get(&url, 64 * 1024 - 1).await.unwrap_err();
        assert!(!retryable && m.contains("larger than 65535 bytes"), "{m}");
    }

    #[tokio::test]
    async fn each_api_client_has_its_own_limit() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'z'; 4096]))
            .mount(&server)
            .await;
        let api = ApiClient::new(
            server.uri(),
            crate::config::Secret::new("k".to_owned()),
            Duration::from_secs(5),
            RetryPolicy::immediate(2),
        )
        .unwrap();
        assert_eq!(api.max_response_bytes(), MAX_RESPONSE_BYTES);
        let call = |api: ApiClient| async move {
            let url = api.url("x");
            api.send(
                || api.request(reqwest::Method::GET, &url),
                |retryable, m| (retryable, m),
                |reply| Attempt::Done(reply.body.len()),
            )
            .await
        };
        assert_eq!(call(api.clone()).await, Ok(4096));
        let small = api.with_max_response_bytes(4095);
        let (retryable, m) = call(small.clone()).await.unwrap_err();
        assert!(!retryable && m.contains("larger than 4095 bytes"), "{m}");
    }
}
