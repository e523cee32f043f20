//! The idempotency ledger: one record per side-effect key.
//!
//! A worker [`Ledger::claim`]s a key before doing the side effect. The claim is a conditional
//! write: exactly one concurrent claimant wins and holds an IN_PROGRESS lease until
//! `lease_until`. The winner then either [`Ledger::complete`]s the key (COMPLETED, with the
//! stored result and an optional TTL) or [`Ledger::release`]s it on failure, so a retry can
//! claim it again. A lease whose holder died is taken over once it expires. A key claimed
//! again with a different payload hash is a [`Error::Conflict`]: the same key must always mean
//! the same request.
//!
//! Completion and release are fenced by the lease token: a worker whose lease was taken over
//! cannot overwrite its successor's record.
//!
//! Adapters: [`DynamoLedger`] (table with a string `pk`, TTL attribute `expires_at`) and
//! [`MemoryLedger`] for unit tests.

use crate::aws::dynamo::{get_n, get_s, is_conditional_check_failed as is_conditional_failure};
use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The hash of a request's payload, stored with its key.
pub fn payload_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A held claim. Pass it back to complete or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub token: String,
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller holds the key and must complete or release it.
    Acquired(Lease),
    /// Another worker holds a live lease until `lease_until_ms`.
    InProgress { lease_until_ms: i64 },
    /// The side effect was already done; `result` is what its worker stored.
    Completed { result: Option<String> },
}

/// Options of a claim.
#[derive(Debug, Clone, Copy)]
pub struct ClaimOptions {
    /// How long the claimant may work before others may take over.
    pub lease: Duration,
    /// How long a COMPLETED record is kept (`None`: for ever — billing keys outlive Stripe's
    /// 24 h idempotency window).
    pub retain: Option<Duration>,
}

impl Default for ClaimOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            retain: Some(Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

/// The ledger port.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Claims `key` for a request whose payload hashes to `hash`.
    async fn claim(&self, key: &str, hash: &str, opts: ClaimOptions) -> Result<Claim>;
    /// Marks the claimed work done, storing `result` for later claimants.
    async fn complete(&self, lease: &Lease, result: Option<&str>, opts: ClaimOptions)
    -> Result<()>;
    /// Gives the claim up so the work can be retried.
    async fn release(&self, lease: &Lease) -> Result<()>;
    /// The stored result of a completed key, if any.
    async fn completed(&self, key: &str) -> Result<Option<Option<String>>>;
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Extra tries of a failed release (see [`DynamoLedger`]'s `release`): 0.5 + 1 + 2 + 4 s.
pub const RELEASE_RETRIES: u32 = 4;

const IN_PROGRESS: &str = "IN_PROGRESS";
const COMPLETED: &str = "COMPLETED";

/// The ledger on a DynamoDB table (`LEDGER_TABLE`).
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        crate::aws::dynamo::get_item(&self.client, &self.table, key, None).await
    }
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn claim(&self, key: &str, hash: &str, opts: ClaimOptions) -> Result<Claim> {
        // Two rounds: a lost race for a stale lease is re-read once.
        for _ in 0..2 {
            let now = now_ms();
            let token = new_token();
            let lease_until = now + opts.lease.as_millis() as i64;
            // An abandoned IN_PROGRESS record disappears with the retention TTL too.
            let expires = opts.retain.map(|r| (now / 1000) + r.as_secs() as i64);
            let mut put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", AttributeValue::S(key.to_owned()))
                .item("status", AttributeValue::S(IN_PROGRESS.into()))
                .item("lease_until", AttributeValue::N(lease_until.to_string()))
                .item("payload_hash", AttributeValue::S(hash.to_owned()))
                .item("owner", AttributeValue::S(token.clone()))
                .condition_expression(
                    "attribute_not_exists(pk) OR (#s = :inprog AND lease_until < :now AND payload_hash = :h)",
                )
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":inprog", AttributeValue::S(IN_PROGRESS.into()))
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .expression_attribute_values(":h", AttributeValue::S(hash.to_owned()));
            if let Some(exp) = expires {
                put = put.item("expires_at", AttributeValue::N(exp.to_string()));
            }
            match put.send().await {
                Ok(_) => {
                    return Ok(Claim::Acquired(Lease {
                        key: key.to_owned(),
                        token,
                    }));
                }
                Err(e) if is_conditional_failure(&e) => {}
                Err(e) => return Err(Error::aws("dynamodb", e)),
            }
            let Some(item) = self.read(key).await? else {
                continue; // released in between: try again
            };
            if get_s(&item, "payload_hash").as_deref() != Some(hash) {
                return Err(Error::Conflict(format!(
                    "idempotency key {key} was used before with a different payload"
                )));
            }
            match get_s(&item, "status").as_deref() {
                Some(COMPLETED) => {
                    return Ok(Claim::Completed {
                        result: get_s(&item, "result"),
                    });
                }
                // Our own put, whose answer was lost: the SDK's retry of it failed the
                // condition on the item the first attempt wrote. The claim is ours (without
                // this, it would be held by no one until its lease ran out).
                _ if get_s(&item, "owner").as_deref() == Some(token.as_str()) => {
                    return Ok(Claim::Acquired(Lease {
                        key: key.to_owned(),
                        token,
                    }));
                }
                _ => {
                    let until = get_n::<i64>(&item, "lease_until").unwrap_or(0);
                    if until >= now_ms() {
                        return Ok(Claim::InProgress {
                            lease_until_ms: until,
                        });
                    }
                    // Stale lease and same payload: the conditional put lost a race; retry.
                }
            }
        }
        Err(Error::InProgress(format!(
            "idempotency key {key} is contended"
        )))
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: Option<&str>,
        opts: ClaimOptions,
    ) -> Result<()> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(lease.key.clone()))
            .condition_expression("#o = :token")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":token", AttributeValue::S(lease.token.clone()))
            .expression_attribute_values(":done", AttributeValue::S(COMPLETED.into()))
            .expression_attribute_values(":at", AttributeValue::N(now_ms().to_string()));
        let mut set = vec!["#s = :done", "completed_at = :at"];
        if let Some(r) = result {
            set.push("#r = :r");
            update = update
                .expression_attribute_names("#r", "result")
                .expression_attribute_values(":r", AttributeValue::S(r.to_owned()));
        }
        let expr = match opts.retain {
            Some(retain) => {
                set.push("expires_at = :exp");
                update = update.expression_attribute_values(
                    ":exp",
                    AttributeValue::N(((now_ms() / 1000) + retain.as_secs() as i64).to_string()),
                );
                format!("SET {}", set.join(", "))
            }
            None => format!("SET {} REMOVE expires_at", set.join(", ")),
        };
        match update.update_expression(expr).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Err(Error::Conflict(format!(
                "lease on {} was lost before completion",
                lease.key
            ))),
            Err(e) => Err(Error::aws("dynamodb", e)),
        }
    }

    /// Tried harder than other calls: a release that fails holds the claim for its whole
    /// lease, and every redelivery meanwhile is refused as "in progress" and counts towards
    /// the queue's `maxReceiveCount`. After the SDK's own attempts, a retryable failure (the
    /// table briefly away) is tried again up to [`RELEASE_RETRIES`] times, 0.5 s to 4 s apart.
    /// Idempotent: a release whose answer was lost finds nothing of ours the next time.
    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut wait = Duration::from_millis(500);
        let mut tries = 0;
        loop {
            let res = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(lease.key.clone()))
                .condition_expression("#o = :token AND #s = :inprog")
                .expression_attribute_names("#o", "owner")
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":token", AttributeValue::S(lease.token.clone()))
                .expression_attribute_values(":inprog", AttributeValue::S(IN_PROGRESS.into()))
                .send()
                .await;
            let err = match res {
                Ok(_) => return Ok(()),
                // Already taken over or completed by someone else: nothing of ours to release.
                Err(e) if is_conditional_failure(&e) => return Ok(()),
                Err(e) => Error::aws("dynamodb", e),
            };
            if !err.is_retryable() || tries >= RELEASE_RETRIES {
                return Err(err);
            }
            tries += 1;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(4));
        }
    }

    async fn completed(&self, key: &str) -> Result<Option<Option<String>>> {
        Ok(self
            .read(key)
            .await?
            .filter(|item| get_s(item, "status").as_deref() == Some(COMPLETED))
            .map(|item| get_s(&item, "result")))
    }
}

#[derive(Debug, Clone)]
struct MemRecord {
    completed: bool,
    lease_until_ms: i64,
    hash: String,
    token: String,
    result: Option<String>,
}

/// In-memory ledger with the same semantics, for unit tests of handlers.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    records: Mutex<HashMap<String, MemRecord>>,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MemRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of keys held (tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn claim(&self, key: &str, hash: &str, opts: ClaimOptions) -> Result<Claim> {
        let mut map = self.lock();
        let now = now_ms();
        if let Some(rec) = map.get(key) {
            if rec.hash != hash {
                return Err(Error::Conflict(format!(
                    "idempotency key {key} was used before with a different payload"
                )));
            }
            if rec.completed {
                return Ok(Claim::Completed {
                    result: rec.result.clone(),
                });
            }
            if rec.lease_until_ms >= now {
                return Ok(Claim::InProgress {
                    lease_until_ms: rec.lease_until_ms,
                });
            }
        }
        let token = new_token();
        map.insert(
            key.to_owned(),
            MemRecord {
                completed: false,
                lease_until_ms: now + opts.lease.as_millis() as i64,
                hash: hash.to_owned(),
                token: token.clone(),
                result: None,
            },
        );
        Ok(Claim::Acquired(Lease {
            key: key.to_owned(),
            token,
        }))
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: Option<&str>,
        _opts: ClaimOptions,
    ) -> Result<()> {
        let mut map = self.lock();
        match map.get_mut(&lease.key) {
            Some(rec) if rec.token == lease.token => {
                rec.completed = true;
                rec.result = result.map(str::to_owned);
                Ok(())
            }
            _ => Err(Error::Conflict(format!(
                "lease on {} was lost before completion",
                lease.key
            ))),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut map = self.lock();
        if map
            .get(&lease.key)
            .is_some_and(|r| r.token == lease.token && !r.completed)
        {
            map.remove(&lease.key);
        }
        Ok(())
    }

    async fn completed(&self, key: &str) -> Result<Option<Option<String>>> {
        Ok(self
            .lock()
            .get(key)
            .filter(|r| r.completed)
            .map(|r| r.result.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(lease_ms: u64) -> ClaimOptions {
        ClaimOptions {
            lease: Duration::from_millis(lease_ms),
            retain: None,
        }
    }

    #[tokio::test]
    async fn a_release_outlasts_a_short_outage_and_gives_up_after_its_retries() {
        use wiremock::matchers::method;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let down = || {
            ResponseTemplate::new(500)
                .insert_header("content-type", "application/x-amz-json-1.0")
                .set_body_string(r#"{"__type":"InternalServerError","message":"down"}"#)
        };
        let lease = Lease {
            key: "notify#n1".into(),
            token: "t1".into(),
        };
        // Down for three tries, then up: released.
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(down())
            .up_to_n_times(3)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
            .mount(&server)
            .await;
        let ledger = DynamoLedger::new(crate::aws::dynamo::test_client(&server.uri()), "ledger");
        ledger.release(&lease).await.unwrap();
        assert_eq!(server.received_requests().await.unwrap().len(), 4);
        // Down for good: an error after the first try and its retries, not a wait forever.
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(down())
            .mount(&server)
            .await;
        let ledger = DynamoLedger::new(crate::aws::dynamo::test_client(&server.uri()), "ledger");
        let err = ledger.release(&lease).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            1 + RELEASE_RETRIES as usize
        );
    }

    /// A DynamoDB stand-in for one claim whose first answer is lost: the put is applied and
    /// the SDK's retry of it finds the item (condition failed); the read returns what the put
    /// wrote.
    struct LostAnswer {
        written: Mutex<Option<serde_json::Value>>,
    }

    impl wiremock::Respond for LostAnswer {
        fn respond(&self, req: &wiremock::Request) -> wiremock::ResponseTemplate {
            let target = req
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let json = |status: u16, v: serde_json::Value| {
                wiremock::ResponseTemplate::new(status)
                    .insert_header("content-type", "application/x-amz-json-1.0")
                    .set_body_json(v)
            };
            let mut written = self.written.lock().unwrap();
            if target.ends_with("PutItem") {
                if written.is_none() {
                    *written = Some(body["Item"].clone());
                }
                json(
                    400,
                    serde_json::json!({"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException", "message": "The conditional request failed"}),
                )
            } else {
                json(200, serde_json::json!({"Item": written.clone()}))
            }
        }
    }

    #[tokio::test]
    async fn a_claim_whose_answer_was_lost_is_still_ours() {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .respond_with(LostAnswer {
                written: Mutex::new(None),
            })
            .mount(&server)
            .await;
        let ledger = DynamoLedger::new(crate::aws::dynamo::test_client(&server.uri()), "ledger");
        let claim = ledger.claim("notify#n1", "h", opts(60_000)).await.unwrap();
        assert!(
            matches!(&claim, Claim::Acquired(l) if l.key == "notify#n1"),
            "{claim:?}"
        );
    }

    #[tokio::test]
    async fn memory_ledger_lifecycle() {
        let l = MemoryLedger::new();
        let h = payload_hash(b"a");
        let Claim::Acquired(lease) = l.claim("k", &h, opts(60_000)).await.unwrap() else {
            panic!("first claim must win")
        };
        assert!(matches!(
            l.claim("k", &h, opts(60_000)).await.unwrap(),
            Claim::InProgress { .. }
        ));
        assert!(matches!(
            l.claim("k", &payload_hash(b"b"), opts(60_000)).await,
            Err(Error::Conflict(_))
        ));
        l.release(&lease).await.unwrap();
        let Claim::Acquired(lease) = l.claim("k", &h, opts(60_000)).await.unwrap() else {
            panic!("released key must be claimable")
        };
        l.complete(&lease, Some("r1"), opts(0)).await.unwrap();
        assert_eq!(
            l.claim("k", &h, opts(60_000)).await.unwrap(),
            Claim::Completed {
                result: Some("r1".into())
            }
        );
        assert_eq!(l.completed("k").await.unwrap(), Some(Some("r1".into())));
    }

    #[tokio::test]
    async fn memory_ledger_stale_lease_is_taken_over_and_fenced() {
        let l = MemoryLedger::new();
        let h = payload_hash(b"a");
        let Claim::Acquired(old) = l.claim("k", &h, opts(0)).await.unwrap() else {
            panic!()
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Claim::Acquired(new) = l.claim("k", &h, opts(60_000)).await.unwrap() else {
            panic!("stale lease must be taken over")
        };
        assert!(matches!(
            l.complete(&old, None, opts(0)).await,
            Err(Error::Conflict(_))
        ));
        l.complete(&new, None, opts(0)).await.unwrap();
    }
}
