//! The archiver: the events queue's consumer. Each batch of [`Incoming`] messages becomes one
//! archive object per event hour ([`crate::archive`]), then one [`crate::queue::EventMessage`]
//! per routed queue, and only then is the batch acknowledged.
//!
//! Order of work for a batch:
//! 1. every record is read (claim checks resolved) and parsed; a malformed one fails alone
//!    (reported for redelivery, parked in the DLQ after `maxReceiveCount`);
//! 2. records repeating an event of the batch (same source and id: a sender's retry, a
//!    recovery) share the first one's fate and add no line;
//! 3. each event gets the keyed hashes of the addresses it names
//!    ([`crate::subjects::emails_in`], [`SubjectKey`]) for privacy requests;
//! 4. one gzip NDJSON object per event hour is written (`archive/batch/...`);
//! 5. each archived event is sent to its routed queues, `SendMessageBatch` by 10, its
//!    `raw_key` the archive locator `{object}#{source}/{id}`;
//! 6. the answer names the records whose archive write or send failed: SQS redelivers them,
//!    the archive gets a second copy in another object (the seal keeps one), the consumers a
//!    second message (they are idempotent).
//!
//! So a message leaves the events queue only once its event is in an archive object and on
//! every queue it is routed to: the archive's loss window is zero.

use super::Source;
use super::config::ArchiverConfig;
use super::envelope::{EventId, Incoming, event_message_json};
use super::routing::Route;
use crate::archive::{self, Hour, Line};
use crate::error::{Error, Result};
use crate::queue::{QueueSender, resolve_body};
use crate::storage::ObjectStore;
use crate::subjects::SubjectKey;
use crate::telemetry::Metrics;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// One record of a batch, free of Lambda types.
#[derive(Debug, Clone)]
pub struct Record {
    pub message_id: String,
    /// As received: the message, or a claim-check pointer to it.
    pub body: Option<String>,
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    pub records: usize,
    /// Distinct events archived and forwarded.
    pub events: usize,
    /// Records repeating an event of the same batch (no line of their own).
    pub duplicates: usize,
    /// The archive objects written.
    pub objects: Vec<String>,
    /// Messages sent, by queue.
    pub sent: BTreeMap<&'static str, usize>,
    /// Accepted events by source: (routed, unrouted).
    pub by_source: BTreeMap<String, (u64, u64)>,
    /// The message ids reported for redelivery.
    pub failed: Vec<String>,
}

impl BatchReport {
    /// The EMF lines of the batch: `WebhookAccepted` / `WebhookUnrouted` by source (the
    /// dashboard's, counted here once per archived event instead of a line per delivery at
    /// intake), and `EventsArchived`, `ArchiveDuplicates`, `ArchiveFailures`.
    pub fn metrics(&self, namespace: &str, function: &str) -> Vec<Metrics> {
        let mut out = Vec::new();
        for (source, (routed, unrouted)) in &self.by_source {
            let mut m = Metrics::new(namespace, function).with_dimension("source", source);
            if *routed > 0 {
                m.count("WebhookAccepted", *routed);
            }
            if *unrouted > 0 {
                m.count("WebhookUnrouted", *unrouted);
            }
            out.push(m);
        }
        let mut m = Metrics::new(namespace, function);
        m.count("EventsArchived", self.events as u64);
        m.count("ArchiveDuplicates", self.duplicates as u64);
        m.count("ArchiveFailures", self.failed.len() as u64);
        out.push(m);
        out
    }
}

/// The archiver. Build once per cold start.
pub struct Archiver {
    store: Arc<dyn ObjectStore>,
    sender: Arc<dyn QueueSender>,
    queue_urls: [String; 6],
    key: SubjectKey,
}

impl std::fmt::Debug for Archiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("bucket", &self.store.bucket())
            .finish()
    }
}

/// An event of the batch on its way.
struct Pending {
    line: Line,
    routes: Vec<Route>,
    /// Its record and those repeating it.
    message_ids: Vec<String>,
    /// The archive object it was written to.
    object: Option<String>,
    failed: bool,
}

impl Archiver {
    pub fn new(
        config: &ArchiverConfig,
        store: Arc<dyn ObjectStore>,
        sender: Arc<dyn QueueSender>,
        key: SubjectKey,
    ) -> Self {
        Self {
            store,
            sender,
            queue_urls: config.queue_urls.clone(),
            key,
        }
    }

    /// The event of one message, ready to archive.
    fn parse(&self, body: &str) -> Result<(Line, Vec<Route>)> {
        let msg: Incoming = serde_json::from_str(body).map_err(|e| {
            Error::Invalid(format!(
                "not an events-queue message: {}",
                crate::error::json_error(&e)
            ))
        })?;
        Source::parse(&msg.source)
            .ok_or_else(|| Error::Invalid(format!("{:?} is not a source", msg.source)))?;
        EventId::parse(&msg.id).map_err(|e| Error::Invalid(e.to_string()))?;
        let routes = msg
            .routes
            .iter()
            .map(|r| {
                Route::from_name(r).ok_or_else(|| Error::Invalid(format!("no queue named {r}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let value: serde_json::Value = serde_json::from_str(&msg.body).map_err(|e| {
            Error::Invalid(format!(
                "event {} has no JSON body: {}",
                msg.id,
                crate::error::json_error(&e)
            ))
        })?;
        let subjects: BTreeSet<_> = crate::subjects::emails_in(&value)
            .iter()
            .map(|e| self.key.subject(e))
            .collect();
        let line = Line {
            id: msg.id,
            source: msg.source,
            event_type: msg.event_type,
            received_at: msg.received_at,
            occurred_at: msg.occurred_at,
            subjects: subjects.into_iter().collect(),
            body: Some(msg.body),
            erased: false,
        };
        Ok((line, routes))
    }

    /// Archives and forwards one batch; the answer names the records to redeliver.
    pub async fn archive(&self, records: Vec<Record>) -> BatchReport {
        let mut report = BatchReport {
            records: records.len(),
            ..BatchReport::default()
        };
        // 1-2. Read, parse, dedupe.
        let bodies = futures::future::join_all(records.iter().map(|r| async {
            match &r.body {
                Some(b) => resolve_body(self.store.as_ref(), b).await,
                None => Err(Error::Invalid("message has no body".into())),
            }
        }))
        .await;
        let mut events: Vec<Pending> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (record, body) in records.into_iter().zip(bodies) {
            match body.and_then(|b| self.parse(&b)) {
                Err(e) => {
                    tracing::warn!(message_id = %record.message_id, error = %e.chain(), retryable = e.is_retryable(), "events-queue record refused; reported for redelivery");
                    report.failed.push(record.message_id);
                }
                Ok((line, routes)) => match index.get(&line.reference()) {
                    Some(&i) => {
                        events[i].message_ids.push(record.message_id);
                        report.duplicates += 1;
                    }
                    None => {
                        index.insert(line.reference(), events.len());
                        events.push(Pending {
                            line,
                            routes,
                            message_ids: vec![record.message_id],
                            object: None,
                            failed: false,
                        });
                    }
                },
            }
        }

        // 4. One object per event hour, written concurrently.
        let mut by_hour: BTreeMap<Hour, Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            by_hour
                .entry(archive::placement(e.line.occurred_at, e.line.received_at))
                .or_default()
                .push(i);
        }
        let writes = futures::future::join_all(by_hour.iter().map(|(hour, idx)| {
            let lines: Vec<Line> = idx.iter().map(|&i| events[i].line.clone()).collect();
            let store = self.store.clone();
            let hour = *hour;
            async move { archive::write_batch(store.as_ref(), hour, &lines).await }
        }))
        .await;
        for ((hour, idx), written) in by_hour.iter().zip(writes) {
            match written {
                Ok(key) => {
                    for &i in idx {
                        events[i].object = Some(key.clone());
                    }
                    report.objects.push(key);
                }
                Err(e) => {
                    tracing::error!(hour = %hour, events = idx.len(), error = %e.chain(), "archive write failed; the batch's events are redelivered");
                    for &i in idx {
                        events[i].failed = true;
                    }
                }
            }
        }

        // 5. The routed queues, concurrently, SendMessageBatch by 10.
        let mut per_queue: BTreeMap<Route, Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate().filter(|(_, e)| !e.failed) {
            for r in &e.routes {
                per_queue.entry(*r).or_default().push(i);
            }
        }
        let sends = futures::future::join_all(per_queue.iter().map(|(route, idx)| {
            let bodies: Vec<String> = idx.iter().map(|&i| self.message(&events[i])).collect();
            let url = &self.queue_urls[*route as usize];
            async move { self.sender.send_all(url, bodies).await }
        }))
        .await;
        for ((route, idx), sent) in per_queue.iter().zip(sends) {
            match sent {
                Ok(()) => {
                    report.sent.insert(route.name(), idx.len());
                }
                Err(e) => {
                    tracing::error!(queue = route.name(), events = idx.len(), error = %e.chain(), "forwarding failed; the events are redelivered");
                    for &i in idx {
                        events[i].failed = true;
                    }
                }
            }
        }

        // 6. The answer.
        for e in events {
            if e.failed {
                report.failed.extend(e.message_ids);
                continue;
            }
            report.events += 1;
            let counts = report.by_source.entry(e.line.source).or_default();
            if e.routes.is_empty() {
                counts.1 += 1;
            } else {
                counts.0 += 1;
            }
        }
        tracing::info!(
            records = report.records,
            events = report.events,
            duplicates = report.duplicates,
            objects = report.objects.len(),
            failed = report.failed.len(),
            "events archived and forwarded"
        );
        report
    }

    /// The routed message of an archived event: the raw body verbatim, `raw_key` its locator.
    fn message(&self, e: &Pending) -> String {
        let l = &e.line;
        let raw_key = archive::locator(e.object.as_deref().unwrap_or_default(), &l.source, &l.id);
        event_message_json(
            &l.id,
            &l.source,
            &l.event_type,
            l.received_at,
            &raw_key,
            l.body.as_deref().unwrap_or("{}"),
        )
    }
}

#[cfg(test)]
mod tests;
