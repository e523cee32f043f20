//! The intake service: one HTTP delivery in, one answer out, with the event durable before
//! any 2xx.
//!
//! Order of work (cheap refusals first, nothing written before the event is proven genuine):
//! 1. route `POST /webhooks/{source}`: unknown source 404, other method 405;
//! 2. size limit (413), then base64 decoding when the request says so (400 if invalid);
//! 3. signature on the **raw bytes** (400 for every failure);
//! 4. envelope: UTF-8, one JSON object, event id and type (400);
//! 5. ledger claim on `webhook#{source}#{event id}` (the side-effect key): already completed ->
//!    200 `"duplicate": true`, nothing enqueued; held by a concurrent delivery -> 409 with
//!    `Retry-After` (the sender retries; by then it is either completed or released);
//! 6. archive the raw bytes at `raw/{source}/{yyyy}/{mm}/{dd}/{id}.json` **and** enqueue one
//!    [`crate::queue::EventMessage`] per routed queue, all concurrently;
//! 7. if any of those failed: release the claim and answer 5xx, so the sender's retry goes
//!    through (the archive key is deterministic, so the retry overwrites the same object);
//! 8. complete the claim and answer 200 `{"received": true, "id", "duplicate": false}`.
//!
//! A failure to *complete* the claim after step 6 succeeded still answers 200: the event is
//! durable; the claim's lease then expires and a later redelivery would be enqueued again,
//! which consumers absorb (their side effects are idempotent). Answering 5xx instead would
//! make that duplicate certain.

use super::Source;
use super::config::{IntakeConfig, Verifiers};
use super::envelope::{self, Envelope, EnvelopeError};
use super::routing::{Route, Routes, routes};
use super::signature::SignatureError;
use super::standard_scheme::{self, StandardHeaders};
use super::stripe_scheme;
use crate::error::Error;
use crate::ledger::{Claim, ClaimOptions, Lease, Ledger, payload_hash};
use crate::queue::QueueSender;
use crate::storage::ObjectStore;
use crate::telemetry::Metrics;
use base64::Engine;
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// How long a delivery may hold its claim: longer than the function timeout (15 s), so a live
/// delivery is never overtaken, short enough that a crashed one blocks retries only briefly.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);
/// How long a completed event id is remembered: Stripe retries for 3 days and lists missed
/// events for 30.
pub const CLAIM_RETAIN: Duration = Duration::from_secs(35 * 24 * 3600);

/// Case-insensitive header lookup (the HTTP layer's header map, or a list in tests).
pub trait Headers: Send + Sync {
    /// The value of header `name` (lowercase), when present and visible ASCII.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for aws_lambda_events::http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        aws_lambda_events::http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

impl Headers for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&str> {
        Headers::get(self.as_slice(), name)
    }
}

impl Headers for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP delivery, free of Lambda types.
#[derive(Clone, Copy)]
pub struct Inbound<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a dyn Headers,
    pub body: Option<&'a str>,
    pub is_base64_encoded: bool,
}

/// What happened, for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Verified, archived, enqueued to `routes` (none: an unrouted type, archived only).
    Accepted {
        source: String,
        id: String,
        event_type: String,
        routes: Routes,
    },
    /// Already completed earlier: nothing done.
    Duplicate { source: String, id: String },
    /// A concurrent delivery holds the claim: retry later.
    InProgress { source: String, id: String },
    /// Refused for good (4xx). `reason` is a stable code.
    Rejected { status: u16, reason: &'static str },
    /// A dependency failed (5xx); the claim was released so a retry goes through.
    Failed { status: u16, reason: &'static str },
}

impl Outcome {
    /// The EMF metrics of this outcome: `WebhookAccepted` / `WebhookUnrouted` (unknown event
    /// types) / `WebhookDuplicate` / `WebhookInProgress` by source, `WebhookRejected` and
    /// `WebhookFailed` by reason.
    pub fn metrics(&self, namespace: &str, function: &str) -> Metrics {
        let base = Metrics::new(namespace, function);
        let (mut m, name) = match self {
            Outcome::Accepted { source, routes, .. } => (
                base.with_dimension("source", source),
                if routes.is_empty() {
                    "WebhookUnrouted"
                } else {
                    "WebhookAccepted"
                },
            ),
            Outcome::Duplicate { source, .. } => {
                (base.with_dimension("source", source), "WebhookDuplicate")
            }
            Outcome::InProgress { source, .. } => {
                (base.with_dimension("source", source), "WebhookInProgress")
            }
            Outcome::Rejected { reason, .. } => {
                (base.with_dimension("reason", *reason), "WebhookRejected")
            }
            Outcome::Failed { reason, .. } => {
                (base.with_dimension("reason", *reason), "WebhookFailed")
            }
        };
        m.count(name, 1);
        m
    }
}

/// The HTTP answer: status, JSON body, extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// JSON: `{"received": true, "id", "duplicate"}` or `{"error": "..."}`.
    pub body: String,
    /// `Allow` on 405, `Retry-After` on 409/503.
    pub headers: Vec<(&'static str, String)>,
    pub outcome: Outcome,
}

/// Why a delivery was not accepted. Each maps to one status and one reason code.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no such route; webhooks are posted to /webhooks/{{source}}")]
    NoRoute,
    #[error("unknown webhook source {0}")]
    UnknownSource(Source),
    #[error("method not allowed; use POST")]
    MethodNotAllowed,
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("body is flagged base64 but is not valid base64")]
    BadBase64,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("event {id} is being processed by another delivery; retry later")]
    InProgress {
        from: Source,
        id: String,
        retry_after: u64,
    },
    #[error("event id {0} was already received with a different event type")]
    IdConflict(String),
    #[error("could not record the event; retry later")]
    Ledger(#[source] Error),
    #[error("could not archive the event; retry later")]
    Archive(#[source] Error),
    #[error("could not enqueue the event; retry later")]
    Enqueue(#[source] Error),
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::NoRoute | Refusal::UnknownSource(_) => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::TooLarge(_) => 413,
            Refusal::BadBase64 | Refusal::Signature(_) | Refusal::Envelope(_) => 400,
            Refusal::InProgress { .. } | Refusal::IdConflict(_) => 409,
            Refusal::Ledger(e) | Refusal::Archive(e) | Refusal::Enqueue(e) => {
                if e.is_retryable() {
                    503
                } else {
                    500
                }
            }
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Refusal::NoRoute => "no_route",
            Refusal::UnknownSource(_) => "unknown_source",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::TooLarge(_) => "body_too_large",
            Refusal::BadBase64 => "bad_base64",
            Refusal::Signature(e) => e.reason(),
            Refusal::Envelope(e) => e.reason(),
            Refusal::InProgress { .. } => "in_progress",
            Refusal::IdConflict(_) => "event_id_conflict",
            Refusal::Ledger(_) => "ledger_failed",
            Refusal::Archive(_) => "archive_failed",
            Refusal::Enqueue(_) => "enqueue_failed",
        }
    }
}

/// The intake service. Build once per cold start; share across invocations.
pub struct Intake {
    verifiers: Verifiers,
    tolerance_secs: u64,
    max_body_bytes: usize,
    queue_urls: [String; 6],
    ledger: Arc<dyn Ledger>,
    store: Arc<dyn ObjectStore>,
    sender: Arc<dyn QueueSender>,
    /// The subject index: every archived event carrying an address is indexed under that
    /// person before it is written (optional: without it nothing is indexed).
    subjects: Option<crate::subjects::Subjects>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("sources", &self.verifiers.known())
            .field("tolerance_secs", &self.tolerance_secs)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("bucket", &self.store.bucket())
            .finish()
    }
}

impl Intake {
    /// The service over its ports.
    pub fn new(
        config: &IntakeConfig,
        verifiers: Verifiers,
        ledger: Arc<dyn Ledger>,
        store: Arc<dyn ObjectStore>,
        sender: Arc<dyn QueueSender>,
    ) -> Self {
        Self {
            verifiers,
            tolerance_secs: config.tolerance_secs,
            max_body_bytes: config.max_body_bytes,
            queue_urls: config.queue_urls.clone(),
            ledger,
            store,
            sender,
            subjects: None,
        }
    }

    /// Indexes each archived event under the people its addresses name.
    pub fn with_subjects(mut self, subjects: crate::subjects::Subjects) -> Self {
        self.subjects = Some(subjects);
        self
    }

    /// Records the archive key under every person the event names (before it is written,
    /// so no archived personal data is ever unindexed).
    async fn index(&self, body: &str, raw_key: &str, now: DateTime<Utc>) -> crate::Result<()> {
        let Some(subjects) = &self.subjects else {
            return Ok(());
        };
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| Error::Invalid(crate::error::json_error(&e)))?;
        let place = [crate::subjects::Location::new(
            crate::subjects::System::Archive,
            raw_key,
        )];
        for email in crate::subjects::emails_in(&value) {
            subjects
                .index
                .record(
                    &subjects.key.subject(&email),
                    &place,
                    now.timestamp_millis(),
                )
                .await?;
        }
        Ok(())
    }

    /// Handles one delivery received at `now`. Never fails: every outcome is an HTTP answer.
    pub async fn receive(&self, req: &Inbound<'_>, now: DateTime<Utc>) -> Reply {
        match self.process(req, now).await {
            Ok((source, envelope_id, event_type, routes, duplicate)) => {
                let outcome = if duplicate {
                    tracing::info!(source = %source, event_id = %envelope_id, "duplicate delivery acknowledged");
                    Outcome::Duplicate {
                        source: source.to_string(),
                        id: envelope_id.clone(),
                    }
                } else {
                    Outcome::Accepted {
                        source: source.to_string(),
                        id: envelope_id.clone(),
                        event_type,
                        routes,
                    }
                };
                Reply {
                    status: 200,
                    body: serde_json::json!({"received": true, "id": envelope_id, "duplicate": duplicate}).to_string(),
                    headers: Vec::new(),
                    outcome,
                }
            }
            Err(refusal) => self.refuse(req, refusal),
        }
    }

    fn refuse(&self, req: &Inbound<'_>, refusal: Refusal) -> Reply {
        let status = refusal.status();
        let reason = refusal.reason();
        let body_len = req.body.map_or(0, str::len);
        let mut headers = Vec::new();
        let outcome = match &refusal {
            Refusal::InProgress {
                from,
                id,
                retry_after,
            } => {
                tracing::info!(source = %from, event_id = %id, "concurrent delivery; asked to retry");
                headers.push(("retry-after", retry_after.to_string()));
                Outcome::InProgress {
                    source: from.to_string(),
                    id: id.clone(),
                }
            }
            Refusal::Ledger(e) | Refusal::Archive(e) | Refusal::Enqueue(e) => {
                tracing::error!(reason, status, error = %e.chain(), path = req.path, "webhook not made durable; sender will retry");
                if status == 503 {
                    headers.push(("retry-after", "5".to_owned()));
                }
                Outcome::Failed { status, reason }
            }
            other => {
                // Never the body or a header value: only what was wrong.
                tracing::warn!(reason, status, error = %other, path = req.path, method = req.method, body_len, "webhook rejected");
                if matches!(other, Refusal::MethodNotAllowed) {
                    headers.push(("allow", "POST".to_owned()));
                }
                Outcome::Rejected { status, reason }
            }
        };
        Reply {
            status,
            body: serde_json::json!({"error": refusal.to_string()}).to_string(),
            headers,
            outcome,
        }
    }

    /// The known source of `path`.
    fn source_of(&self, path: &str) -> Result<Source, Refusal> {
        let name = path
            .strip_prefix("/webhooks/")
            .map(|rest| rest.strip_suffix('/').unwrap_or(rest))
            .filter(|rest| !rest.contains('/'))
            .ok_or(Refusal::NoRoute)?;
        let source = Source::parse(name).ok_or(Refusal::NoRoute)?;
        let known = if source.is_stripe() {
            self.verifiers.stripe.is_some()
        } else {
            self.verifiers.sources.contains_key(&source)
        };
        if known {
            Ok(source)
        } else {
            Err(Refusal::UnknownSource(source))
        }
    }

    /// The raw body bytes, size-checked and decoded.
    fn body<'b>(&self, req: &Inbound<'b>) -> Result<Cow<'b, [u8]>, Refusal> {
        let raw = req.body.unwrap_or("");
        if !req.is_base64_encoded {
            if raw.len() > self.max_body_bytes {
                return Err(Refusal::TooLarge(self.max_body_bytes));
            }
            return Ok(Cow::Borrowed(raw.as_bytes()));
        }
        // Refuse before decoding what cannot fit: 4 base64 chars per 3 bytes.
        if raw.len() / 4 * 3 > self.max_body_bytes + 3 {
            return Err(Refusal::TooLarge(self.max_body_bytes));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| Refusal::BadBase64)?;
        if decoded.len() > self.max_body_bytes {
            return Err(Refusal::TooLarge(self.max_body_bytes));
        }
        Ok(Cow::Owned(decoded))
    }

    /// Steps 1-4: the verified envelope of a delivery.
    fn verify<'b>(
        &self,
        source: &Source,
        req: &Inbound<'_>,
        body: &'b [u8],
        now: i64,
    ) -> Result<Envelope<'b>, Refusal> {
        if body.is_empty() {
            return Err(EnvelopeError::Empty.into());
        }
        if source.is_stripe() {
            let verifier = self
                .verifiers
                .stripe
                .as_ref()
                .ok_or_else(|| Refusal::UnknownSource(source.clone()))?;
            verifier.verify(
                req.headers.get(stripe_scheme::HEADER),
                body,
                now,
                self.tolerance_secs,
            )?;
            Ok(envelope::parse_stripe(body)?)
        } else {
            let verifier = self
                .verifiers
                .sources
                .get(source)
                .ok_or_else(|| Refusal::UnknownSource(source.clone()))?;
            let headers = StandardHeaders {
                id: req.headers.get(standard_scheme::ID_HEADER),
                timestamp: req.headers.get(standard_scheme::TIMESTAMP_HEADER),
                signature: req.headers.get(standard_scheme::SIGNATURE_HEADER),
            };
            let (id, _) = verifier.verify(headers, body, now, self.tolerance_secs)?;
            Ok(envelope::parse_standard(id, body)?)
        }
    }

    /// Everything; `Ok((source, id, type, routes, duplicate))` answers 200.
    async fn process(
        &self,
        req: &Inbound<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Source, String, String, Routes, bool), Refusal> {
        let source = self.source_of(req.path)?;
        if !req.method.eq_ignore_ascii_case("POST") {
            return Err(Refusal::MethodNotAllowed);
        }
        let body = self.body(req)?;
        let envelope = self.verify(&source, req, &body, now.timestamp())?;
        self.accept(source, &envelope, &body, now).await
    }

    /// An event read from its source's API with our key (so authentic without a signature:
    /// Stripe's missed-event recovery) goes the same way as a verified delivery: ledger,
    /// archive, queues. Returns `(id, type, routes, duplicate)`; a refusal as its reason.
    pub async fn accept_authentic(
        &self,
        source: &Source,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(String, String, Routes, bool), String> {
        let envelope = if source.is_stripe() {
            envelope::parse_stripe(body)
        } else {
            return Err(format!(
                "{source} events cannot be fetched from their source"
            ));
        }
        .map_err(|e| e.reason().to_owned())?;
        self.accept(source.clone(), &envelope, body, now)
            .await
            .map(|(_, id, t, routes, duplicate)| (id, t, routes, duplicate))
            .map_err(|r| r.reason().to_owned())
    }

    /// Ledger, archive and queues for a verified (or authentic) event.
    async fn accept(
        &self,
        source: Source,
        envelope: &Envelope<'_>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(Source, String, String, Routes, bool), Refusal> {
        let id = envelope.id.as_str().to_owned();
        let event_type = envelope.event_type.to_string();
        let routes = routes(source.as_str(), &event_type);

        let key = ledger_key(&source, &id);
        let opts = ClaimOptions {
            lease: CLAIM_LEASE,
            retain: Some(CLAIM_RETAIN),
        };
        // The same id must always be the same event: a different type is a conflict. The body
        // itself is not hashed: Stripe's retries may differ (e.g. `pending_webhooks`).
        let hash = payload_hash(event_type.as_bytes());
        let lease = match self.ledger.claim(&key, &hash, opts).await {
            Ok(Claim::Acquired(lease)) => lease,
            Ok(Claim::Completed { .. }) => return Ok((source, id, event_type, routes, true)),
            Ok(Claim::InProgress { lease_until_ms }) => {
                let left_ms = (lease_until_ms - now.timestamp_millis()).max(0);
                let retry_after = u64::try_from(left_ms / 1000 + 1)
                    .unwrap_or(1)
                    .min(CLAIM_LEASE.as_secs());
                return Err(Refusal::InProgress {
                    from: source,
                    id,
                    retry_after,
                });
            }
            Err(Error::Conflict(_)) => return Err(Refusal::IdConflict(id)),
            Err(e) => return Err(Refusal::Ledger(e)),
        };

        if let Err(refusal) = self
            .make_durable(&source, envelope, body, routes, now)
            .await
        {
            self.release(&lease).await;
            return Err(refusal);
        }
        if let Err(e) = self.ledger.complete(&lease, None, opts).await {
            // Durable already: acknowledge (see the module docs).
            tracing::error!(source = %source, event_id = %id, error = %e.chain(), "event durable but its ledger entry could not be completed");
        }
        tracing::info!(
            source = %source,
            event_id = %id,
            event_type = %event_type,
            queues = ?routes.iter().map(Route::name).collect::<Vec<_>>(),
            "webhook accepted"
        );
        Ok((source, id, event_type, routes, false))
    }

    /// Archive and enqueue concurrently; every one must succeed.
    async fn make_durable(
        &self,
        source: &Source,
        env: &Envelope<'_>,
        body: &[u8],
        routes: Routes,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let raw_key = envelope::archive_key(source, env, now);
        self.index(env.body, &raw_key, now)
            .await
            .map_err(Refusal::Archive)?;
        let message = envelope::message_json(source, env, now, &raw_key);
        let archive = self.store.put(&raw_key, body.to_vec(), "application/json");
        let sends = futures::future::join_all(routes.iter().map(|route| {
            self.sender
                .send(&self.queue_urls[route as usize], message.clone())
        }));
        // Wait for all, so a failure never leaves a send running unobserved.
        let (archived, sent) = futures::future::join(archive, sends).await;
        archived.map_err(Refusal::Archive)?;
        for (route, result) in routes.iter().zip(sent) {
            result.map_err(|e| {
                tracing::warn!(queue = route.name(), "enqueue failed");
                Refusal::Enqueue(e)
            })?;
        }
        Ok(())
    }

    async fn release(&self, lease: &Lease) {
        if let Err(e) = self.ledger.release(lease).await {
            // The lease expires after CLAIM_LEASE anyway; the sender's retry comes later.
            tracing::error!(key = %lease.key, error = %e.chain(), "could not release the claim");
        }
    }
}

/// The ledger key of an event: one per (source, event id).
pub fn ledger_key(source: &Source, id: &str) -> String {
    format!("webhook#{source}#{id}")
}
