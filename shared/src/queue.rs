//! Queue messages, the SQS sender with claim check, and partial batch responses.
//!
//! - [`EventMessage`]: what webhook-intake's archiver puts on every routed queue; all consumers
//!   read it.
//! - [`QueueSender`]: the sending port. [`SqsSender`] stores a body over the SQS limit in the
//!   object store and sends a small [`ClaimCheck`] pointer instead; [`resolve_body`] turns a
//!   pointer back into the body, so consumers never see the difference.
//! - [`process_batch`]: runs a handler on each record of an SQS batch, one by one, and reports
//!   only the failed records (`batchItemFailures`), so one poison message never fails its
//!   neighbours; SQS redelivers it and the queue's redrive policy parks it in the DLQ. Near the
//!   invocation's deadline it starts no more records and reports the rest as failures too.

use crate::deadline::{Deadline, within};
use crate::error::{Error, Result};
use crate::storage::ObjectStore;
use async_trait::async_trait;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// SQS's message size limit (256 KiB), message attributes included; bodies above
/// [`CLAIM_CHECK_THRESHOLD`] go to the object store.
pub const SQS_MAX_BYTES: usize = 256 * 1024;
/// Bodies larger than this are sent by claim check (a margin for attributes is kept).
pub const CLAIM_CHECK_THRESHOLD: usize = SQS_MAX_BYTES - 8 * 1024;
/// Most entries in one `SendMessageBatch`.
pub const SQS_BATCH_MAX: usize = 10;

/// An accepted webhook event, as the archiver forwards it to every consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    /// The event id given by the sender (Stripe `evt_...`, or the `webhook-id`).
    pub id: String,
    /// `stripe`, `portal`, `telemetry`, ...
    pub source: String,
    /// The event type (`customer.subscription.created`, `signup`, `usage`, ...).
    #[serde(rename = "type")]
    pub event_type: String,
    /// When intake accepted it (RFC 3339).
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// Where the raw, verified bytes are archived: an archive locator
    /// (`{object key}#{source}/{id}`, see [`crate::archive::find`]); a `raw/...` object key for
    /// events archived before the archive was batched.
    pub raw_key: String,
    /// The parsed event.
    pub event: serde_json::Value,
}

/// A pointer to a body kept in the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimCheck {
    pub bucket: String,
    pub key: String,
    pub bytes: usize,
}

#[derive(Serialize, Deserialize)]
struct ClaimCheckBody {
    blapi_claim_check: ClaimCheck,
}

/// The sending port.
#[async_trait]
pub trait QueueSender: Send + Sync {
    /// Sends one message body.
    async fn send(&self, queue_url: &str, body: String) -> Result<()>;
    /// Sends many bodies, in batches of at most 10; fails if any entry could not be sent
    /// (after one retry of the failed entries).
    async fn send_all(&self, queue_url: &str, bodies: Vec<String>) -> Result<()> {
        for body in bodies {
            self.send(queue_url, body).await?;
        }
        Ok(())
    }
    /// Like [`QueueSender::send_all`], each message invisible for `delay` first (SQS
    /// `DelaySeconds`, at most 15 minutes). Senders without delays deliver at once.
    async fn send_all_delayed(
        &self,
        queue_url: &str,
        bodies: Vec<String>,
        delay: std::time::Duration,
    ) -> Result<()> {
        let _ = delay;
        self.send_all(queue_url, bodies).await
    }
}

/// SQS adapter with claim check.
#[derive(Clone)]
pub struct SqsSender {
    sqs: aws_sdk_sqs::Client,
    store: Arc<dyn ObjectStore>,
    threshold: usize,
}

impl std::fmt::Debug for SqsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSender")
            .field("bucket", &self.store.bucket())
            .finish()
    }
}

impl SqsSender {
    pub fn new(sqs: aws_sdk_sqs::Client, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            sqs,
            store,
            threshold: CLAIM_CHECK_THRESHOLD,
        }
    }

    /// Overrides the claim-check threshold (tests).
    pub fn with_threshold(mut self, threshold: usize) -> Self {
        self.threshold = threshold;
        self
    }

    /// The body to put on the queue: itself, or a claim-check pointer.
    async fn outgoing(&self, body: String) -> Result<String> {
        check_out(self.store.as_ref(), self.threshold, body).await
    }
}

/// Stores `body` in `store` and returns the pointer message when it exceeds `threshold`.
/// A body over [`MAX_CHECKED_OUT_BYTES`] is refused ([`Error::Invalid`]): no consumer would
/// read it.
pub async fn check_out(store: &dyn ObjectStore, threshold: usize, body: String) -> Result<String> {
    if body.len() <= threshold {
        return Ok(body);
    }
    if body.len() > MAX_CHECKED_OUT_BYTES {
        return Err(Error::Invalid(format!(
            "message body of {} bytes is over the claim-check limit of {MAX_CHECKED_OUT_BYTES}; not sent",
            body.len()
        )));
    }
    let key = format!("{CLAIM_CHECK_PREFIX}{}.json", uuid::Uuid::now_v7());
    let bytes = body.len();
    store
        .put(&key, body.into_bytes(), "application/json")
        .await?;
    let pointer = ClaimCheckBody {
        blapi_claim_check: ClaimCheck {
            bucket: store.bucket().to_owned(),
            key,
            bytes,
        },
    };
    serde_json::to_string(&pointer).map_err(|e| Error::Invalid(format!("claim check: {e}")))
}

/// Where claim-checked bodies live in the bucket: `claim-check/{UUID v7}.json`, nothing else.
pub const CLAIM_CHECK_PREFIX: &str = "claim-check/";

/// The largest body a sender claim-checks: 6 MiB, far above any message we send (an event is
/// at most the intake's body limit, 256 KiB by default, plus its envelope; jobs and
/// notifications are a few KiB). A larger body is refused when sent, not parked for a consumer
/// that will not read it.
pub const MAX_CHECKED_OUT_BYTES: usize = 6 * 1024 * 1024;

/// The largest claim-checked body a consumer reads: what any sender writes
/// ([`MAX_CHECKED_OUT_BYTES`]) plus 1 MiB of slack, for a sender built with a slightly larger
/// limit while both run. A larger object is not ours and is not read into memory.
pub const MAX_CLAIM_CHECK_BYTES: usize = MAX_CHECKED_OUT_BYTES + 1024 * 1024;

/// `key` when it is a claim check's own key, `claim-check/{UUID}.json` (lowercase,
/// hyphenated, what [`check_out`] writes); `None` for anything else (another prefix, a path
/// such as `claim-check/../licenses/x` or `/claim-check/x`, other names).
fn claim_check_key(key: &str) -> Option<&str> {
    let id = key
        .strip_prefix(CLAIM_CHECK_PREFIX)?
        .strip_suffix(".json")?;
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    (uuid.hyphenated().to_string() == id).then_some(key)
}

/// The real body of a received message: fetched from the store when it is a claim check.
///
/// Only our own claim checks are read: a pointer into another bucket, or to any key but a
/// claim check's own ([`CLAIM_CHECK_PREFIX`]), cannot make a consumer read another object (a
/// license file, an invoice, the raw archive), and an object or a declared size over
/// [`MAX_CLAIM_CHECK_BYTES`] is not read. Each of those is [`Error::Invalid`]: not retryable,
/// the record goes to its dead-letter queue. A missing object is [`Error::NotFound`].
pub async fn resolve_body(store: &dyn ObjectStore, body: &str) -> Result<String> {
    // Cheap test first: only pointers start like this.
    if !body.trim_start().starts_with("{\"blapi_claim_check\"") {
        return Ok(body.to_owned());
    }
    let Ok(pointer) = serde_json::from_str::<ClaimCheckBody>(body) else {
        return Ok(body.to_owned());
    };
    let ClaimCheck { bucket, key, bytes } = pointer.blapi_claim_check;
    let Some(key) = claim_check_key(&key) else {
        let shown: String = key.chars().take(100).collect();
        return Err(Error::Invalid(format!(
            "claim check key {shown:?} is not {CLAIM_CHECK_PREFIX}{{uuid}}.json: refused"
        )));
    };
    if bucket != store.bucket() {
        return Err(Error::Invalid(
            "claim check points into another bucket: refused".into(),
        ));
    }
    if bytes > MAX_CLAIM_CHECK_BYTES {
        return Err(Error::Invalid(format!(
            "claim check {key} declares {bytes} bytes, over the limit of {MAX_CLAIM_CHECK_BYTES}: refused"
        )));
    }
    let got = store
        .get_at_most(key, MAX_CLAIM_CHECK_BYTES)
        .await?
        .ok_or_else(|| Error::NotFound(format!("claim-checked body {key}")))?;
    if got.len() != bytes {
        return Err(Error::Invalid(format!(
            "claim-checked body {key} holds {} bytes, its pointer says {bytes}: refused",
            got.len()
        )));
    }
    String::from_utf8(got)
        .map_err(|_| Error::Invalid(format!("claim-checked body {key} is not UTF-8")))
}

#[async_trait]
impl QueueSender for SqsSender {
    async fn send(&self, queue_url: &str, body: String) -> Result<()> {
        let body = self.outgoing(body).await?;
        self.sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| Error::aws("sqs", e))?;
        Ok(())
    }

    async fn send_all(&self, queue_url: &str, bodies: Vec<String>) -> Result<()> {
        self.send_all_delayed(queue_url, bodies, std::time::Duration::ZERO)
            .await
    }

    async fn send_all_delayed(
        &self,
        queue_url: &str,
        bodies: Vec<String>,
        delay: std::time::Duration,
    ) -> Result<()> {
        let delay_seconds = i32::try_from(delay.as_secs().min(900)).unwrap_or(900);
        let mut outgoing = Vec::with_capacity(bodies.len());
        for b in bodies {
            outgoing.push(self.outgoing(b).await?);
        }
        // A batch is at most 10 entries and 256 KiB in all.
        let mut batches: Vec<Vec<String>> = Vec::new();
        let mut size = 0;
        for body in outgoing {
            let fits = batches
                .last()
                .is_some_and(|b| b.len() < SQS_BATCH_MAX && size + body.len() <= SQS_MAX_BYTES);
            if !fits {
                batches.push(Vec::new());
                size = 0;
            }
            size += body.len();
            if let Some(last) = batches.last_mut() {
                last.push(body);
            }
        }
        for batch in batches {
            let mut pending: Vec<(String, String)> = batch
                .into_iter()
                .enumerate()
                .map(|(i, b)| (i.to_string(), b))
                .collect();
            for round in 0..2 {
                let entries = pending
                    .iter()
                    .map(|(id, body)| {
                        aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                            .id(id)
                            .message_body(body)
                            .set_delay_seconds((delay_seconds > 0).then_some(delay_seconds))
                            .build()
                            .map_err(|e| Error::Invalid(format!("batch entry: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let out = self
                    .sqs
                    .send_message_batch()
                    .queue_url(queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| Error::aws("sqs", e))?;
                let failed: Vec<String> = out.failed().iter().map(|f| f.id().to_owned()).collect();
                if failed.is_empty() {
                    break;
                }
                if round == 1 {
                    return Err(Error::dependency(
                        "sqs",
                        true,
                        format!("{} of a batch could not be sent", failed.len()),
                    ));
                }
                pending.retain(|(id, _)| failed.contains(id));
            }
        }
        Ok(())
    }
}

/// In-memory sender for unit tests: records bodies per queue URL.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    sent: Mutex<BTreeMap<String, Vec<String>>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following send fail with a retryable error (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// The bodies sent to `queue_url`, in order.
    pub fn sent(&self, queue_url: &str) -> Vec<String> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue_url)
            .cloned()
            .unwrap_or_default()
    }

    /// Every message sent, all queues together.
    pub fn total(&self) -> usize {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }
}

#[async_trait]
impl QueueSender for MemoryQueue {
    async fn send(&self, queue_url: &str, body: String) -> Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::dependency(
                "sqs",
                true,
                "queue unavailable (simulated)",
            ));
        }
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue_url.to_owned())
            .or_default()
            .push(body);
        Ok(())
    }
}

/// One received message, its body already resolved from a claim check.
#[derive(Debug, Clone)]
pub struct QueueRecord {
    pub message_id: String,
    pub body: String,
    /// How many times SQS has delivered it (1 on the first delivery).
    pub receive_count: u32,
    /// The ARN of the queue it came from.
    pub source_queue: Option<String>,
}

impl QueueRecord {
    /// Parses the body as JSON into `T`; a malformed body is a non-retryable failure.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.body).map_err(|e| {
            Error::Invalid(format!(
                "message {} is not a valid message: {}",
                self.message_id,
                crate::error::json_error(&e)
            ))
        })
    }
}

/// Runs `handler` on each record in order and returns the ids of the failed ones only.
/// A record whose claim check cannot be resolved fails alone, like any other.
///
/// With a `deadline` (the invocation's, [`Deadline::from_context`]), no record is started once
/// less than the margin is left: the larger of [`Deadline::margin`] (see
/// [`crate::deadline::Margin`]: 2 s or 10 % of the time the invocation started with) and the
/// longest any record of this batch has taken so far. Every record not started is reported as
/// a batch item failure, in order, after the failed ones before it (one warning says how many
/// were deferred), so SQS redelivers it to a later invocation instead of Lambda killing this one
/// while it holds them. Records already failed stay failed; a started record runs to its end.
/// Note that a deferred record's redelivery counts as a receive against the queue's
/// `maxReceiveCount`. Each record runs inside the deadline's scope ([`Deadline::scope`]), so
/// outgoing HTTP retries never wait past it ([`crate::retry::retry`]).
pub async fn process_batch<F, Fut>(
    event: SqsEvent,
    store: &dyn ObjectStore,
    deadline: Option<Deadline>,
    mut handler: F,
) -> SqsBatchResponse
where
    F: FnMut(QueueRecord) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut response = SqsBatchResponse::default();
    let total = event.records.len();
    let mut records = event.records.into_iter().enumerate();
    let mut slowest = Duration::ZERO;
    for (started, record) in records.by_ref() {
        if let Some(d) = deadline {
            let margin = d.margin().max(slowest);
            if d.near(margin) {
                let deferred = total - started;
                tracing::warn!(
                    started,
                    deferred,
                    remaining_ms = d.remaining().as_millis() as u64,
                    margin_ms = margin.as_millis() as u64,
                    "invocation deadline near: records not started, reported for redelivery"
                );
                response
                    .batch_item_failures
                    .push(failure(record.message_id.unwrap_or_default()));
                break;
            }
        }
        let message_id = record.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("record", message_id = %message_id);
        let began = tokio::time::Instant::now();
        let outcome = async {
            let raw = record
                .body
                .as_deref()
                .ok_or_else(|| Error::Invalid("message has no body".into()))?;
            let body = resolve_body(store, raw).await?;
            let receive_count = record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            handler(QueueRecord {
                message_id: message_id.clone(),
                body,
                receive_count,
                source_queue: record.event_source_arn.clone(),
            })
            .await
        };
        let outcome = within(deadline, outcome).instrument(span.clone()).await;
        slowest = slowest.max(began.elapsed());
        if let Err(e) = outcome {
            let _enter = span.enter();
            tracing::warn!(
                error = %e.chain(),
                retryable = e.is_retryable(),
                "record failed; reported for redelivery"
            );
            response.batch_item_failures.push(failure(message_id));
        }
    }
    // The rest of the records after the first deferred one (none when all were started).
    response
        .batch_item_failures
        .extend(records.map(|(_, record)| failure(record.message_id.unwrap_or_default())));
    response
}

fn failure(message_id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = message_id;
    failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use aws_lambda_events::event::sqs::SqsMessage;

    fn msg(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.to_owned());
        m.body = Some(body.to_owned());
        m
    }

    #[tokio::test]
    async fn only_failed_records_are_reported() {
        let store = MemoryStore::new();
        let mut event = SqsEvent::default();
        event.records = vec![
            msg("1", r#"{"n":1}"#),
            msg("2", "not json"),
            msg("3", r#"{"n":3}"#),
        ];
        let mut seen = Vec::new();
        let resp = process_batch(event, &store, None, |r| {
            let parsed = r.json::<serde_json::Value>();
            seen.push(r.message_id.clone());
            async move { parsed.map(|_| ()) }
        })
        .await;
        assert_eq!(seen, vec!["1", "2", "3"], "every record is processed");
        let failed: Vec<_> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, vec!["2"]);
    }

    fn batch(n: usize) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = (1..=n).map(|i| msg(&i.to_string(), "{}")).collect();
        event
    }

    fn ids(resp: &SqsBatchResponse) -> Vec<&str> {
        resp.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    /// Each record takes one second of (paused) tokio time; record "3" fails. The ids started
    /// and the response.
    async fn run_slow_batch(
        n: usize,
        deadline: Option<Deadline>,
    ) -> (Vec<String>, SqsBatchResponse) {
        let store = MemoryStore::new();
        let mut started = Vec::new();
        let resp = process_batch(batch(n), &store, deadline, |r| {
            started.push(r.message_id.clone());
            async move {
                assert_eq!(
                    Deadline::current(),
                    deadline,
                    "the record runs in the scope"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                if r.message_id == "3" {
                    return Err(Error::dependency("stripe", true, "busy"));
                }
                Ok(())
            }
        })
        .await;
        (started, resp)
    }

    #[tokio::test(start_paused = true)]
    async fn near_the_deadline_the_unstarted_records_are_reported_in_order() {
        // 6.5 s left and a 2 s margin: records start at 0, 1, 2, 3 and 4 s (6.5 .. 2.5 s
        // left); at 5 s only 1.5 s is left, so records 6 to 10 are not started.
        let deadline =
            Deadline::after(Duration::from_millis(6_500)).with_margin(Duration::from_secs(2));
        let (started, resp) = run_slow_batch(10, Some(deadline)).await;
        assert_eq!(started, ["1", "2", "3", "4", "5"]);
        assert_eq!(
            ids(&resp),
            ["3", "6", "7", "8", "9", "10"],
            "the failed one, then the unstarted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_slowest_record_so_far_widens_the_margin() {
        // A 0.5 s margin, but the first record took 1 s: with 0.8 s left after it, the
        // second is not started.
        let deadline =
            Deadline::after(Duration::from_millis(1_800)).with_margin(Duration::from_millis(500));
        let (started, resp) = run_slow_batch(4, Some(deadline)).await;
        assert_eq!(started, ["1"]);
        assert_eq!(ids(&resp), ["2", "3", "4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_every_record_is_processed() {
        let (started, resp) = run_slow_batch(10, None).await;
        assert_eq!(started.len(), 10);
        assert_eq!(ids(&resp), ["3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_deadline_already_near_no_record_is_started() {
        let deadline = Deadline::after(Duration::from_secs(1)).with_margin(Duration::from_secs(2));
        let (started, resp) = run_slow_batch(4, Some(deadline)).await;
        assert!(started.is_empty(), "{started:?}");
        assert_eq!(ids(&resp), ["1", "2", "3", "4"]);
        let past = Deadline::from_epoch_ms(1).unwrap();
        let (started, resp) = run_slow_batch(2, Some(past)).await;
        assert!(started.is_empty());
        assert_eq!(ids(&resp), ["1", "2"]);
    }

    #[tokio::test]
    async fn claim_check_round_trip_and_small_bodies_pass_through() {
        let store = MemoryStore::new();
        let small = "x".repeat(100);
        assert_eq!(check_out(&store, 1000, small.clone()).await.unwrap(), small);
        let big = format!("{{\"data\":\"{}\"}}", "y".repeat(300 * 1024));
        let pointer = check_out(&store, CLAIM_CHECK_THRESHOLD, big.clone())
            .await
            .unwrap();
        assert!(pointer.len() < 300, "pointer is small: {pointer}");
        assert_eq!(store.keys().len(), 1);
        assert_eq!(resolve_body(&store, &pointer).await.unwrap(), big);
        assert_eq!(resolve_body(&store, &small).await.unwrap(), small);
    }

    #[tokio::test]
    async fn missing_claim_check_fails_that_record() {
        let store = MemoryStore::new();
        let pointer = r#"{"blapi_claim_check":{"bucket":"memory","key":"claim-check/0190b3a8-5c1e-7000-8000-000000000000.json","bytes":9}}"#;
        assert!(matches!(
            resolve_body(&store, pointer).await,
            Err(Error::NotFound(_))
        ));
        let mut event = SqsEvent::default();
        event.records = vec![msg("a", pointer), msg("b", "{}")];
        let resp = process_batch(event, &store, None, |_| async { Ok(()) }).await;
        assert_eq!(resp.batch_item_failures.len(), 1);
        assert_eq!(resp.batch_item_failures[0].item_identifier, "a");
    }

    fn pointer(bucket: &str, key: &str, bytes: usize) -> String {
        serde_json::to_string(&ClaimCheckBody {
            blapi_claim_check: ClaimCheck {
                bucket: bucket.into(),
                key: key.into(),
                bytes,
            },
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_claim_check_reads_only_its_own_keys() {
        let store = MemoryStore::new();
        let secret = b"{\"secret\":1}".to_vec();
        let n = secret.len();
        let id = "0190b3a8-5c1e-7000-8000-000000000000";
        // Every object below exists, so a refusal is the key's doing, not a missing object.
        for key in [
            "licenses/cus_1/lic_1.mattermost-license".to_owned(),
            "archive/2026/10/01/00/batch.ndjson.gz".to_owned(),
            "claim-check/../licenses/x".to_owned(),
            "/claim-check/{id}.json".replace("{id}", id),
            format!("claim-check/{}.json", id.to_uppercase()),
            format!("claim-check/{}.json", id.replace('-', "")),
            format!("claim-check/{{{id}}}.json"),
            format!("claim-check/sub/{id}.json"),
            format!("claim-check/{id}.json/../../invoices/x"),
            format!("claim-check/{id}"),
            "claim-check/x.json".to_owned(),
            "claim-check/".to_owned(),
        ] {
            store
                .put(&key, secret.clone(), "application/json")
                .await
                .unwrap();
            let e = resolve_body(&store, &pointer("memory", &key, n))
                .await
                .unwrap_err();
            assert!(
                matches!(&e, Error::Invalid(m) if m.contains("is not claim-check/{uuid}.json")),
                "{key}: {e:?}"
            );
            assert!(!e.is_retryable(), "{key}");
        }
        let own = format!("claim-check/{id}.json");
        store
            .put(&own, secret.clone(), "application/json")
            .await
            .unwrap();
        assert_eq!(
            resolve_body(&store, &pointer("memory", &own, n))
                .await
                .unwrap(),
            "{\"secret\":1}"
        );
        let e = resolve_body(&store, &pointer("another-bucket", &own, n))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Invalid(_)) && !e.is_retryable(), "{e:?}");
        // A pointer whose size disagrees with the object is not ours either.
        let e = resolve_body(&store, &pointer("memory", &own, n + 1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("its pointer says"), "{e}");
    }

    #[tokio::test]
    async fn a_claim_check_reads_no_more_than_the_limit() {
        let store = MemoryStore::new();
        let key = format!("claim-check/{}.json", uuid::Uuid::now_v7());
        // Declared over the limit: refused before any read.
        let e = resolve_body(&store, &pointer("memory", &key, usize::MAX))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("over the limit")),
            "{e:?}"
        );
        // Stored over the limit, whatever the pointer says: not read.
        store
            .put(
                &key,
                vec![b' '; MAX_CLAIM_CHECK_BYTES + 1],
                "application/json",
            )
            .await
            .unwrap();
        let e = resolve_body(&store, &pointer("memory", &key, 10))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("larger than")) && !e.is_retryable(),
            "{e:?}"
        );
        // At the limit: read.
        store
            .put(&key, vec![b' '; MAX_CLAIM_CHECK_BYTES], "application/json")
            .await
            .unwrap();
        let body = resolve_body(&store, &pointer("memory", &key, MAX_CLAIM_CHECK_BYTES))
            .await
            .unwrap();
        assert_eq!(body.len(), MAX_CLAIM_CHECK_BYTES);
    }

    #[tokio::test]
    async fn the_sender_claim_checks_no_more_than_a_consumer_reads() {
        const _: () = assert!(MAX_CHECKED_OUT_BYTES < MAX_CLAIM_CHECK_BYTES);
        let store = MemoryStore::new();
        let largest = " ".repeat(MAX_CHECKED_OUT_BYTES);
        let p = check_out(&store, 10, largest.clone()).await.unwrap();
        assert_eq!(resolve_body(&store, &p).await.unwrap(), largest);
        let e = check_out(&store, 10, " ".repeat(MAX_CHECKED_OUT_BYTES + 1))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Invalid(m) if m.contains("over the claim-check limit")),
            "{e:?}"
        );
        assert_eq!(
            store.list(CLAIM_CHECK_PREFIX).await.unwrap().len(),
            1,
            "nothing stored"
        );
    }
}
