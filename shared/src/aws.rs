//! AWS clients, built once per cold start from one `SdkConfig`.
//!
//! Local emulators are reached through `AWS_ENDPOINT_URL` (which the SDK reads itself): there is
//! no local branch in this code.

use crate::config::Env;
use crate::error::Result;
use crate::tls::Roots;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_types::timeout::TimeoutConfig;
use std::sync::OnceLock;
use std::time::Duration;

/// Loads the shared SDK configuration (region, credentials, endpoint) from the environment,
/// with the trust store `BLAPI_TLS_ROOTS` selects (see [`crate::tls`]).
///
/// Where the environment carries credentials (Lambda always does: the execution role's
/// session), they are used directly. The default chain would pick them first too, but building
/// it constructs its web-identity STS client and reads profile files: ~12 % of a function's
/// init instructions for nothing. Without them (a laptop with a profile or SSO), the default
/// chain applies.
///
/// Every call is bounded: the SDK's defaults time out only the connect, so an answer that
/// never comes (a stalled connection) would hold the invocation until Lambda's own timeout.
/// Each read waits at most `AWS_READ_TIMEOUT_MS` (default 20 000) and each attempt twice
/// that; a timed-out attempt is retried by the SDK's standard retry, and every write the
/// functions make is idempotent, so a retry after a lost answer changes nothing.
pub async fn sdk_config(env: &Env) -> Result<SdkConfig> {
    let http = Roots::from_env(env)?.sdk_http_client()?;
    let read = Duration::from_millis(env.parsed_or("AWS_READ_TIMEOUT_MS", 20_000u64)?.max(1));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(3_100))
        .read_timeout(read)
        .operation_attempt_timeout(read * 2)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts);
    if let (Some(key), Some(secret)) = (
        env.optional("AWS_ACCESS_KEY_ID"),
        env.optional("AWS_SECRET_ACCESS_KEY"),
    ) {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            key,
            secret,
            env.optional("AWS_SESSION_TOKEN"),
            None,
            "Environment",
        ));
    }
    Ok(loader.load().await)
}

/// The clients a function may use, each built on first use from one `SdkConfig` (they share
/// its HTTP client and connection pool). A function that never asks for a client does not
/// link its SDK crate's operations: the binary stays smaller.
#[derive(Clone, Debug)]
pub struct Clients {
    config: SdkConfig,
    dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
    s3: OnceLock<aws_sdk_s3::Client>,
    sqs: OnceLock<aws_sdk_sqs::Client>,
    kms: OnceLock<aws_sdk_kms::Client>,
    secrets: OnceLock<aws_sdk_secretsmanager::Client>,
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            config: config.clone(),
            dynamodb: OnceLock::new(),
            s3: OnceLock::new(),
            sqs: OnceLock::new(),
            kms: OnceLock::new(),
            secrets: OnceLock::new(),
        }
    }

    /// The shared configuration, for a client of an SDK only one function links (SES).
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        self.dynamodb
            .get_or_init(|| aws_sdk_dynamodb::Client::new(&self.config))
    }

    pub fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3.get_or_init(|| {
            // moto (and MinIO-like emulators) serve S3 on one host: path-style addressing
            // works there and in AWS alike.
            let conf = aws_sdk_s3::config::Builder::from(&self.config)
                .force_path_style(true)
                .build();
            aws_sdk_s3::Client::from_conf(conf)
        })
    }

    pub fn sqs(&self) -> &aws_sdk_sqs::Client {
        self.sqs
            .get_or_init(|| aws_sdk_sqs::Client::new(&self.config))
    }

    pub fn kms(&self) -> &aws_sdk_kms::Client {
        self.kms
            .get_or_init(|| aws_sdk_kms::Client::new(&self.config))
    }

    pub fn secrets(&self) -> &aws_sdk_secretsmanager::Client {
        self.secrets
            .get_or_init(|| aws_sdk_secretsmanager::Client::new(&self.config))
    }

    /// Loads the process environment's `SdkConfig`; each client is built on first use.
    pub async fn from_env() -> Result<Self> {
        Ok(Self::new(&sdk_config(&Env::process()).await?))
    }
}

/// Small DynamoDB helpers every table adapter uses.
pub mod dynamo {
    use crate::error::{Error, Result};
    use aws_sdk_dynamodb::config::http::HttpResponse;
    use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_dynamodb::types::AttributeValue;
    use std::collections::HashMap;

    /// One item as the SDK returns it.
    pub type Item = HashMap<String, AttributeValue>;

    /// A string attribute.
    pub fn s(v: impl Into<String>) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    /// A number attribute.
    pub fn n(v: impl ToString) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    /// A string attribute of an item.
    pub fn get_s(item: &Item, name: &str) -> Option<String> {
        item.get(name).and_then(|v| v.as_s().ok()).cloned()
    }

    /// A number attribute of an item, parsed (absent or unparsable: `None`).
    pub fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
    }

    /// A boolean attribute of an item.
    pub fn get_bool(item: &Item, name: &str) -> Option<bool> {
        item.get(name).and_then(|v| v.as_bool().ok()).copied()
    }

    /// A string-set attribute of an item (absent: empty).
    pub fn get_ss(item: &Item, name: &str) -> Vec<String> {
        item.get(name)
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default()
    }

    /// The JSON document in attribute `name`, parsed; `what` names the item in the error.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        item: &Item,
        name: &str,
        what: &str,
    ) -> Result<T> {
        let text = get_s(item, name)
            .ok_or_else(|| Error::Invalid(format!("{what} item has no {name}")))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{what} item is corrupt: {}",
                crate::error::json_error(&e)
            ))
        })
    }

    /// An item as plain JSON (what a privacy access request exports): strings that hold a
    /// JSON document are embedded as that document, numbers stay numbers, binaries are
    /// base64.
    pub fn item_to_json(item: &Item) -> serde_json::Value {
        fn value(v: &AttributeValue) -> serde_json::Value {
            use base64::Engine;
            use serde_json::Value as J;
            match v {
                AttributeValue::S(s) => match s.trim_start().chars().next() {
                    Some('{') | Some('[') => {
                        serde_json::from_str(s).unwrap_or_else(|_| J::String(s.clone()))
                    }
                    _ => J::String(s.clone()),
                },
                AttributeValue::N(n) => {
                    serde_json::from_str(n).unwrap_or_else(|_| J::String(n.clone()))
                }
                AttributeValue::Bool(b) => J::Bool(*b),
                AttributeValue::Null(_) => J::Null,
                AttributeValue::Ss(v) => v.iter().cloned().map(J::String).collect(),
                AttributeValue::Ns(v) => v.iter().cloned().map(J::String).collect(),
                AttributeValue::L(v) => v.iter().map(value).collect(),
                AttributeValue::M(m) => {
                    J::Object(m.iter().map(|(k, v)| (k.clone(), value(v))).collect())
                }
                AttributeValue::B(b) => {
                    J::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))
                }
                _ => J::Null,
            }
        }
        serde_json::Value::Object(item.iter().map(|(k, v)| (k.clone(), value(v))).collect())
    }

    /// A value as a JSON string attribute.
    pub fn json_attr<T: serde::Serialize>(v: &T) -> Result<AttributeValue> {
        serde_json::to_string(v)
            .map(s)
            .map_err(|e| Error::Invalid(e.to_string()))
    }

    /// A strongly consistent read of one item: `pk`, and `sk` for tables with a sort key.
    pub async fn get_item(
        client: &aws_sdk_dynamodb::Client,
        table: &str,
        pk: impl Into<String>,
        sk: Option<&str>,
    ) -> Result<Option<Item>> {
        let mut get = client
            .get_item()
            .table_name(table)
            .key("pk", s(pk))
            .consistent_read(true);
        if let Some(sk) = sk {
            get = get.key("sk", s(sk));
        }
        let out = get.send().await.map_err(|e| Error::aws("dynamodb", e))?;
        Ok(out.item)
    }

    /// Every item a query matches, all pages (the SDK's paginator follows `LastEvaluatedKey`).
    pub async fn query_all(
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>> {
        query
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<Vec<_>, _>>()
            .await
            .map_err(|e| Error::aws("dynamodb", e))
    }

    /// Most items in one `BatchWriteItem`.
    pub const BATCH_WRITE_MAX: usize = 25;
    /// Most keys in one `BatchGetItem`.
    pub const BATCH_GET_MAX: usize = 100;

    /// The primary key of an item (`pk`, and `sk` when present), for duplicate detection.
    fn key_of(item: &Item) -> (Option<String>, Option<String>) {
        (get_s(item, "pk"), get_s(item, "sk"))
    }

    /// Plain puts of `items` with `BatchWriteItem` (25 per request, up to 4 requests at
    /// once): no condition, so an item written twice simply overwrites itself. Items with the
    /// same key keep the last (DynamoDB refuses duplicate keys within one request). What
    /// DynamoDB leaves unprocessed (throttling) is retried with backoff. No request starts
    /// after `not_after`: the items not written by then are returned, unwritten, so a caller
    /// with a write window can re-check its precondition before trying again.
    pub async fn batch_put(
        client: &aws_sdk_dynamodb::Client,
        table: &str,
        items: Vec<Item>,
        not_after: Option<std::time::Instant>,
    ) -> Result<Vec<Item>> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        use futures::StreamExt;
        let mut seen = std::collections::HashSet::new();
        let mut unique: Vec<Item> = items
            .into_iter()
            .rev()
            .filter(|i| seen.insert(key_of(i)))
            .collect();
        unique.reverse();
        let chunks: Vec<Vec<Item>> = unique
            .chunks(BATCH_WRITE_MAX)
            .map(<[Item]>::to_vec)
            .collect();
        let expired = || not_after.is_some_and(|t| std::time::Instant::now() >= t);
        let results: Vec<Result<Vec<Item>>> = futures::stream::iter(chunks)
            .map(|chunk| async move {
                let mut pending = chunk;
                let mut delay = std::time::Duration::from_millis(25);
                for _ in 0..10 {
                    if pending.is_empty() || expired() {
                        break;
                    }
                    let requests = pending
                        .iter()
                        .map(|item| {
                            PutRequest::builder()
                                .set_item(Some(item.clone()))
                                .build()
                                .map(|p| WriteRequest::builder().put_request(p).build())
                                .map_err(|e| Error::Invalid(e.to_string()))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let out = client
                        .batch_write_item()
                        .request_items(table, requests)
                        .send()
                        .await
                        .map_err(|e| Error::aws("dynamodb", e))?;
                    pending = out
                        .unprocessed_items
                        .and_then(|mut u| u.remove(table))
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|w| w.put_request.map(|p| p.item))
                        .collect();
                    if !pending.is_empty() {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(1));
                    }
                }
                if !pending.is_empty() && !expired() {
                    return Err(Error::dependency(
                        "dynamodb",
                        true,
                        format!("{} item(s) still unprocessed after retries", pending.len()),
                    ));
                }
                Ok(pending)
            })
            .buffered(4)
            .collect()
            .await;
        let mut unwritten = Vec::new();
        for r in results {
            unwritten.extend(r?);
        }
        Ok(unwritten)
    }

    /// The items of `keys` (each a `pk`/`sk` map) with `BatchGetItem` (100 per request,
    /// unprocessed keys retried); missing items are simply absent.
    pub async fn batch_get(
        client: &aws_sdk_dynamodb::Client,
        table: &str,
        keys: Vec<Item>,
    ) -> Result<Vec<Item>> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let keys: Vec<Item> = keys
            .into_iter()
            .filter(|k| seen.insert(key_of(k)))
            .collect();
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut pending = chunk.to_vec();
            let mut delay = std::time::Duration::from_millis(25);
            for attempt in 0..10 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(1));
                }
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(pending.clone()))
                    .build()
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                let resp = client
                    .batch_get_item()
                    .request_items(table, ka)
                    .send()
                    .await
                    .map_err(|e| Error::aws("dynamodb", e))?;
                out.extend(
                    resp.responses
                        .and_then(|mut r| r.remove(table))
                        .unwrap_or_default(),
                );
                pending = resp
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(Error::dependency(
                    "dynamodb",
                    true,
                    format!("{} key(s) still unprocessed after retries", pending.len()),
                ));
            }
        }
        Ok(out)
    }

    /// Sends a put that writes a fact once (its condition refuses a second write): a lost
    /// condition means the fact is already there, so it is `Ok` like the first write.
    pub async fn put_once(
        put: aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder,
    ) -> Result<()> {
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_check_failed(&e) => Ok(()),
            Err(e) => Err(Error::aws("dynamodb", e)),
        }
    }

    /// A client of a DynamoDB answered by a test server at `endpoint` (test credentials, no
    /// retries: each test sees every answer).
    #[cfg(test)]
    pub fn test_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::config::{Credentials, Region, retry::RetryConfig};
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(endpoint)
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    }

    /// Whether a write lost its condition (`ConditionalCheckFailedException`): the expected
    /// outcome of an idempotent conditional write that someone else already made.
    pub fn is_conditional_check_failed<E: ProvideErrorMetadata>(
        e: &SdkError<E, HttpResponse>,
    ) -> bool {
        has_code(e, &["ConditionalCheckFailedException"])
    }

    /// Why a `TransactWriteItems` was cancelled: `Some(true)` when one of its conditions
    /// failed (the expected outcome of a lost race: someone else wrote first), `Some(false)`
    /// when it was cancelled for another reason (a conflicting transaction, throttling, a
    /// capacity limit: worth retrying, never to be taken for "the condition failed"), `None`
    /// when it was not cancelled at all.
    pub fn cancelled_by_condition(
        e: &SdkError<
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
            HttpResponse,
        >,
    ) -> Option<bool> {
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(tc)) => Some(
                tc.cancellation_reasons()
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed")),
            ),
            _ => None,
        }
    }

    /// Whether the service answered with one of `codes`.
    pub fn has_code<E: ProvideErrorMetadata>(
        e: &SdkError<E, HttpResponse>,
        codes: &[&str],
    ) -> bool {
        e.as_service_error()
            .and_then(|se| se.code())
            .is_some_and(|c| codes.contains(&c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::config::ProvideCredentials;

    #[tokio::test]
    async fn credentials_in_the_environment_are_used_as_given() {
        let env = Env::from_map([
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
            ("AWS_SESSION_TOKEN", "session"),
        ]);
        let config = sdk_config(&env).await.unwrap();
        let creds = config
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap();
        assert_eq!(creds.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(creds.secret_access_key(), "wJalrXUtnFEMI");
        assert_eq!(creds.session_token(), Some("session"));
    }

    #[tokio::test]
    async fn a_stalled_answer_times_out_and_is_retried_never_held_forever() {
        // A server that accepts every connection and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(tcp);
            }
        });
        let env = Env::from_map([
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_READ_TIMEOUT_MS", "200"),
        ]);
        let config = sdk_config(&env).await.unwrap();
        let conf = aws_sdk_dynamodb::config::Builder::from(&config)
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url(&url)
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(conf);
        let err = tokio::time::timeout(Duration::from_secs(60), client.list_tables().send())
            .await
            .expect("bounded by the SDK's own timeouts")
            .unwrap_err();
        assert!(
            matches!(err, aws_sdk_dynamodb::error::SdkError::TimeoutError(_))
                || format!("{err:?}").to_lowercase().contains("timeout"),
            "{err:?}"
        );
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "the standard retry's three attempts, each on a new connection"
        );
        assert!(
            Env::from_map([("AWS_READ_TIMEOUT_MS", "soon")])
                .parsed_or("AWS_READ_TIMEOUT_MS", 1u64)
                .is_err()
        );
    }

    #[test]
    fn a_cancelled_transaction_is_a_lost_condition_only_when_a_condition_failed() {
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        use aws_sdk_dynamodb::types::CancellationReason;
        use aws_sdk_dynamodb::types::error::TransactionCanceledException;
        let cancelled = |codes: &[&str]| {
            let reasons: Vec<CancellationReason> = codes
                .iter()
                .map(|c| CancellationReason::builder().code(*c).build())
                .collect();
            let err = TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .set_cancellation_reasons(Some(reasons))
                    .build(),
            );
            let raw = aws_sdk_dynamodb::config::http::HttpResponse::new(
                400.try_into().unwrap(),
                aws_smithy_types::body::SdkBody::empty(),
            );
            aws_sdk_dynamodb::error::SdkError::service_error(err, raw)
        };
        assert_eq!(
            dynamo::cancelled_by_condition(&cancelled(&["None", "ConditionalCheckFailed"])),
            Some(true),
            "any item's condition, not only the first"
        );
        assert_eq!(
            dynamo::cancelled_by_condition(&cancelled(&["TransactionConflict", "None"])),
            Some(false)
        );
        assert_eq!(
            dynamo::cancelled_by_condition(&cancelled(&["ThrottlingError"])),
            Some(false)
        );
    }

    #[tokio::test]
    async fn a_bad_trust_store_setting_fails_the_cold_start() {
        let env = Env::from_map([("BLAPI_TLS_ROOTS", "none")]);
        let err = sdk_config(&env).await.unwrap_err();
        assert!(err.to_string().contains("BLAPI_TLS_ROOTS"), "{err}");
    }
}
