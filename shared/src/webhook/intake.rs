//! The intake service: one HTTP delivery in, one answer out, with the event durable before
//! any 2xx.
//!
//! Order of work (cheap refusals first, nothing written before the event is proven genuine):
//! 1. route `POST /webhooks/{source}`: unknown source 404, other method 405;
//! 2. size limit (413), then base64 decoding when the request says so (400 if invalid);
//! 3. signature on the **raw bytes** (400 for every failure);
//! 4. envelope: UTF-8, one JSON object, event id and type (400);
//! 5. **one** `SendMessage` of an [`Incoming`] (id, source, type, times, the routes chosen by
//!    the routing table, the raw verified body) to the events queue; a body over the SQS
//!    limit goes by claim check ([`crate::queue::SqsSender`]);
//! 6. 200 `{"received": true, "id"}` once SQS has the message (it is durable); if the send
//!    failed, 5xx so the sender retries.
//!
//! No DynamoDB and no S3 (bar claim checks) on this path: the archiver
//! ([`super::archiver`]) archives events in batches and forwards them to their queues, and the
//! archive keeps each event once whatever the deliveries ([`crate::archive`]). A redelivered
//! event (the same id) is accepted again: every consumer is idempotent on the event or on the
//! objects it names. An accepted event is logged at DEBUG only and counted by the archiver
//! (one metric line per batch); refusals are logged at WARN and counted here.

use super::Source;
use super::config::{IntakeConfig, Verifiers};
use super::envelope::{self, Envelope, EnvelopeError, Incoming};
use super::routing::{Route, Routes, routes};
use super::signature::SignatureError;
use super::standard_scheme::{self, StandardHeaders};
use super::stripe_scheme;
use crate::error::Error;
use crate::queue::QueueSender;
use crate::telemetry::Metrics;
use base64::Engine;
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::sync::Arc;

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
    /// Verified and on the events queue, bound for `routes` (none: archived only).
    Accepted {
        source: String,
        id: String,
        event_type: String,
        routes: Routes,
    },
    /// Refused for good (4xx). `reason` is a stable code.
    Rejected { status: u16, reason: &'static str },
    /// The events queue refused it (5xx): the sender retries.
    Failed { status: u16, reason: &'static str },
}

impl Outcome {
    /// The EMF metrics of this outcome: `WebhookRejected` and `WebhookFailed` by reason. An
    /// accepted event writes no metric line here (a log line per event is what the cost model
    /// removes): the archiver counts `WebhookAccepted` / `WebhookUnrouted` by source, one line
    /// per batch.
    pub fn metrics(&self, namespace: &str, function: &str) -> Metrics {
        let base = Metrics::new(namespace, function);
        match self {
            Outcome::Accepted { .. } => base,
            Outcome::Rejected { reason, .. } => {
                let mut m = base.with_dimension("reason", *reason);
                m.count("WebhookRejected", 1);
                m
            }
            Outcome::Failed { reason, .. } => {
                let mut m = base.with_dimension("reason", *reason);
                m.count("WebhookFailed", 1);
                m
            }
        }
    }
}

/// The HTTP answer: status, JSON body, extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// JSON: `{"received": true, "id"}` or `{"error": "..."}`.
    pub body: String,
    /// `Allow` on 405, `Retry-After` on 503.
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
            Refusal::Enqueue(e) => {
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
            Refusal::Enqueue(_) => "enqueue_failed",
        }
    }
}

/// The intake service. Build once per cold start; share across invocations.
pub struct Intake {
    verifiers: Verifiers,
    tolerance_secs: u64,
    max_body_bytes: usize,
    events_queue_url: String,
    sender: Arc<dyn QueueSender>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("sources", &self.verifiers.known())
            .field("tolerance_secs", &self.tolerance_secs)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("events_queue_url", &self.events_queue_url)
            .finish()
    }
}

impl Intake {
    /// The service over its one port: the sender to the events queue (with claim check).
    pub fn new(config: &IntakeConfig, verifiers: Verifiers, sender: Arc<dyn QueueSender>) -> Self {
        Self {
            verifiers,
            tolerance_secs: config.tolerance_secs,
            max_body_bytes: config.max_body_bytes,
            events_queue_url: config.events_queue_url.clone(),
            sender,
        }
    }

    /// Handles one delivery received at `now`. Never fails: every outcome is an HTTP answer.
    pub async fn receive(&self, req: &Inbound<'_>, now: DateTime<Utc>) -> Reply {
        match self.process(req, now).await {
            Ok(accepted) => Reply {
                status: 200,
                body: serde_json::json!({"received": true, "id": accepted.id}).to_string(),
                headers: Vec::new(),
                outcome: Outcome::Accepted {
                    source: accepted.source.to_string(),
                    id: accepted.id,
                    event_type: accepted.event_type,
                    routes: accepted.routes,
                },
            },
            Err(refusal) => self.refuse(req, refusal),
        }
    }

    fn refuse(&self, req: &Inbound<'_>, refusal: Refusal) -> Reply {
        let status = refusal.status();
        let reason = refusal.reason();
        let body_len = req.body.map_or(0, str::len);
        let mut headers = Vec::new();
        let outcome = match &refusal {
            Refusal::Enqueue(e) => {
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

    /// Everything; `Ok` answers 200.
    async fn process(&self, req: &Inbound<'_>, now: DateTime<Utc>) -> Result<Accepted, Refusal> {
        let source = self.source_of(req.path)?;
        if !req.method.eq_ignore_ascii_case("POST") {
            return Err(Refusal::MethodNotAllowed);
        }
        let body = self.body(req)?;
        let envelope = self.verify(&source, req, &body, now.timestamp())?;
        self.accept(source, &envelope, now).await
    }

    /// An event read from its source's API with our key (so authentic without a signature:
    /// Stripe's missed-event recovery) goes the same way as a verified delivery: onto the
    /// events queue. Returns `(id, type, routes)`; a refusal as its reason.
    pub async fn accept_authentic(
        &self,
        source: &Source,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(String, String, Routes), String> {
        let envelope = if source.is_stripe() {
            envelope::parse_stripe(body)
        } else {
            return Err(format!(
                "{source} events cannot be fetched from their source"
            ));
        }
        .map_err(|e| e.reason().to_owned())?;
        self.accept(source.clone(), &envelope, now)
            .await
            .map(|a| (a.id, a.event_type, a.routes))
            .map_err(|r| r.reason().to_owned())
    }

    /// One `SendMessage` of the event to the events queue.
    async fn accept(
        &self,
        source: Source,
        envelope: &Envelope<'_>,
        now: DateTime<Utc>,
    ) -> Result<Accepted, Refusal> {
        let event_type = envelope.event_type.to_string();
        let routes = routes(source.as_str(), &event_type);
        let message: Incoming = envelope::incoming(&source, envelope, routes, now);
        let json = serde_json::to_string(&message)
            .map_err(|e| Refusal::Enqueue(Error::Invalid(format!("events message: {e}"))))?;
        self.sender
            .send(&self.events_queue_url, json)
            .await
            .map_err(Refusal::Enqueue)?;
        // Not INFO: a log line per event is a cost per event (see the cost model); the
        // archiver logs each batch and counts the events.
        tracing::debug!(
            source = %source,
            event_id = %message.id,
            event_type = %event_type,
            queues = ?routes.iter().map(Route::name).collect::<Vec<_>>(),
            "webhook accepted"
        );
        Ok(Accepted {
            source,
            id: message.id,
            event_type,
            routes,
        })
    }
}

/// A delivery taken: on the events queue.
struct Accepted {
    source: Source,
    id: String,
    event_type: String,
    routes: Routes,
}
