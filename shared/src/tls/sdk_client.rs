//! The AWS SDK's HTTP client, on reqwest: one HTTP/1.1 stack for the SDK and for Stripe, the
//! enrichment provider and Salesforce.
//!
//! The SDK's own client (`aws-smithy-http-client`) always links HTTP/2 (h2 and hyper's HTTP/2
//! client, ~1 MB of every function binary; there is no feature to leave it out) and takes its
//! trust roots as PEM only, which it decodes at cold start (rustls-pki-types' constant-time
//! base64: ~0.9 M instructions, the largest single item of a function's init). reqwest is in
//! every function already, built without HTTP/2, and takes a rustls configuration: the SDK gets
//! the AWS roots as pre-parsed trust anchors (nothing decoded at init) and speaks HTTP/1.1, as
//! AWS endpoints do with it. What the SDK needs of its client is kept:
//!
//! - the connect and read timeouts of each client's `HttpConnectorSettings` (one reqwest
//!   client, and connection pool, per distinct pair; in practice one);
//! - errors classified as the SDK's retry policy expects: timeouts as timeouts, failed
//!   connections and broken transports as I/O errors (retried), an answer cut short as a
//!   transient error (retried), a request the client cannot send as a user error;
//! - bodies streamed both ways (S3 objects are never buffered here).
//!
//! One difference from the hyper client: reqwest parses the request URI as a URL, which would
//! resolve `.` and `..` path segments; no object key of ours has them.

use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The SDK's HTTP client over reqwest with `tls` (`None`: reqwest's own verifier on the system
/// store, over rustls' process-default provider).
pub fn client(tls: Option<rustls::ClientConfig>) -> SharedHttpClient {
    SharedHttpClient::new(ReqwestHttpClient {
        tls: tls.map(Arc::new),
        clients: Arc::default(),
    })
}

type Timeouts = (Option<Duration>, Option<Duration>);

#[derive(Debug)]
struct ReqwestHttpClient {
    tls: Option<Arc<rustls::ClientConfig>>,
    /// One reqwest client (one pool) per (connect, read) timeout pair asked for.
    clients: Arc<Mutex<HashMap<Timeouts, reqwest::Client>>>,
}

impl ReqwestHttpClient {
    fn reqwest(&self, timeouts: Timeouts) -> Result<reqwest::Client, reqwest::Error> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&timeouts) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            // The SDK follows no redirects and sets its own headers.
            .redirect(reqwest::redirect::Policy::none())
            .http1_only();
        if let Some(t) = timeouts.0 {
            builder = builder.connect_timeout(t);
        }
        if let Some(t) = timeouts.1 {
            builder = builder.read_timeout(t);
        }
        if let Some(tls) = &self.tls {
            builder = builder.tls_backend_preconfigured(rustls::ClientConfig::clone(tls));
        }
        let client = builder.build()?;
        clients.insert(timeouts, client.clone());
        Ok(client)
    }
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let client = self
            .reqwest((settings.connect_timeout(), settings.read_timeout()))
            .map_err(|e| Arc::new(ConnectorError::user(e.into())));
        SharedHttpConnector::new(ReqwestConnector { client })
    }
}

#[derive(Debug)]
struct ReqwestConnector {
    /// The client, or why it could not be built (each call then fails with it).
    client: Result<reqwest::Client, Arc<ConnectorError>>,
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => {
                return HttpConnectorFuture::ready(Err(ConnectorError::user(e.to_string().into())));
            }
        };
        let request = match request.try_into_http1x() {
            Ok(request) => request.map(reqwest::Body::wrap),
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let request = match reqwest::Request::try_from(request) {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        HttpConnectorFuture::new(async move {
            let response = client.execute(request).await.map_err(connector_error)?;
            let response =
                http::Response::<reqwest::Body>::from(response).map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// A reqwest failure as the SDK's retry policy reads it (the classification of the SDK's own
/// hyper client).
fn connector_error(err: reqwest::Error) -> ConnectorError {
    if err.is_timeout() {
        return ConnectorError::timeout(err.into());
    }
    if err.is_builder() {
        return ConnectorError::user(err.into());
    }
    if err.is_connect() {
        return ConnectorError::io(err.into());
    }
    if let Some(hyper) = find_source::<hyper::Error>(&err) {
        if hyper.is_incomplete_message() {
            // S3 sometimes closes a kept-alive connection as a request goes out.
            return ConnectorError::other(err.into(), Some(ErrorKind::TransientError));
        }
        if hyper.is_closed() || hyper.is_canceled() {
            return ConnectorError::io(err.into());
        }
        if hyper.is_user() {
            return ConnectorError::user(err.into());
        }
    }
    if find_source::<std::io::Error>(&err).is_some() {
        return ConnectorError::io(err.into());
    }
    ConnectorError::other(err.into(), None)
}

fn find_source<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::config::{Credentials, Region};
    use aws_smithy_types::timeout::TimeoutConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain-HTTP server on loopback answering each connection with `answer` (after reading
    /// the request head and `Content-Length` bytes of body), and what it was sent.
    async fn server(
        answer: &'static [u8],
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        let head_end = seen.windows(4).position(|w| w == b"\r\n\r\n");
                        if let Some(end) = head_end {
                            let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if seen.len() >= end + 4 + len {
                                break;
                            }
                        }
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tx.send(seen);
                    let _ = tcp.write_all(answer).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        (url, rx)
    }

    fn dynamodb(http: SharedHttpClient, url: &str) -> aws_sdk_dynamodb::Client {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(url)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .read_timeout(Duration::from_millis(300))
                    .build(),
            )
            .http_client(http)
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    }

    #[tokio::test]
    async fn the_sdk_sends_signed_requests_and_reads_the_answers() {
        let (url, mut seen) = server(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 24\r\nconnection: close\r\n\r\n{\"TableNames\":[\"a\",\"b\"]}",
        )
        .await;
        let out = dynamodb(client(None), &url)
            .list_tables()
            .limit(2)
            .send()
            .await
            .unwrap();
        assert_eq!(out.table_names(), ["a", "b"]);
        let request = String::from_utf8(seen.recv().await.unwrap()).unwrap();
        assert!(request.starts_with("POST / HTTP/1.1\r\n"), "{request}");
        let lower = request.to_lowercase();
        assert!(
            lower.contains("x-amz-target: dynamodb_20120810.listtables"),
            "{request}"
        );
        assert!(
            lower.contains("authorization: aws4-hmac-sha256 credential=test/"),
            "{request}"
        );
        assert!(request.ends_with("{\"Limit\":2}"), "{request}");
    }

    #[tokio::test]
    async fn failures_are_classified_for_the_retry_policy() {
        // Nothing listens: an I/O error (the SDK retries those), not a service error.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let conf = dynamodb(client(None), &format!("http://127.0.0.1:{port}"));
        let err = conf.list_tables().send().await.unwrap_err();
        let aws_sdk_dynamodb::error::SdkError::DispatchFailure(connector) = &err else {
            panic!("not a dispatch failure: {err:?}")
        };
        assert!(connector.is_io(), "{err:?}");

        // An answer that never comes: the read timeout, as a timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let err = dynamodb(client(None), &url)
            .list_tables()
            .send()
            .await
            .unwrap_err();
        let aws_sdk_dynamodb::error::SdkError::DispatchFailure(connector) = &err else {
            panic!("not a dispatch failure: {err:?}")
        };
        assert!(connector.is_timeout(), "{err:?}");
    }

    #[test]
    fn one_reqwest_client_per_timeout_pair() {
        let http = ReqwestHttpClient {
            tls: None,
            clients: Arc::default(),
        };
        let a = (Some(Duration::from_secs(1)), None);
        http.reqwest(a).unwrap();
        http.reqwest(a).unwrap();
        http.reqwest((None, None)).unwrap();
        assert_eq!(http.clients.lock().unwrap().len(), 2);
    }
}
