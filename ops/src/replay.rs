//! `replay`: archived events fed again through the routing table into the queues, as the
//! archiver sent them (the same message, `raw_key` the event's archive locator).
//!
//! The archive ([`blapi::archive`]) keeps events by the hour of their own time: a time window
//! reads only its hours (one listing per day), each hour's sealed object and the batch objects
//! not sealed yet, every event once (duplicates of a redelivered batch are dropped, erased
//! events are tombstones and are not replayed). Single-event objects of the archive before it
//! was batched (`raw/{source}/{yyyy}/{mm}/{dd}/{id}.json`) are read too, by day.
//!
//! The consumers are idempotent (license keys, invoice keys, lead ids, CRM external ids,
//! fingerprints), so replaying events already processed changes nothing; replaying the ones
//! lost on the way makes them happen. An object that no longer parses is reported, counted
//! and skipped.

use crate::stack::Stack;
use anyhow::{Result, anyhow, bail};
use blapi::archive;
use blapi::queue::QueueSender;
use blapi::storage::ObjectStore;
use blapi::webhook::Source;
use blapi::webhook::envelope::{self, Envelope};
use blapi::webhook::routing::{Route, routes};
use chrono::{DateTime, Days, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub source: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `customer.subscription.*`, `invoice.paid`, or `None` for every type.
    pub event_type: Option<String>,
    pub dry_run: bool,
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Archive objects read (sealed hours, batch objects, single-event objects).
    pub objects: u64,
    pub replayed: u64,
    /// By queue logical route name (`license-requests`, ...).
    pub sent: BTreeMap<String, u64>,
    /// Outside the window or of another type.
    pub filtered: u64,
    /// Types no queue takes (archived only, as at intake).
    pub unrouted: u64,
    /// Erased events (tombstones): nothing to replay.
    pub erased: u64,
    /// Copies of an event in a batch object not sealed yet (a redelivered batch): dropped.
    pub duplicates: u64,
    /// Objects that no longer parse: their keys.
    pub unparseable: Vec<String>,
    pub dry_run: bool,
}

/// Whether `event_type` matches `pattern` (`*` alone, an exact type, or a `prefix.*`).
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// Parses a time given as RFC 3339 or as a date (`YYYY-MM-DD`: its start, or with
/// `end_of_day` its last second).
pub fn parse_time(text: &str, end_of_day: bool) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let d: chrono::NaiveDate = text
        .parse()
        .map_err(|_| anyhow!("{text:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time"))?;
    let t = if end_of_day {
        d.and_hms_opt(23, 59, 59)
    } else {
        d.and_hms_opt(0, 0, 0)
    };
    t.map(|t| t.and_utc())
        .ok_or_else(|| anyhow!("{text:?} is not a time"))
}

fn parse_legacy<'a>(source: &Source, key: &str, body: &'a [u8]) -> Result<Envelope<'a>, String> {
    if source.is_stripe() {
        return envelope::parse_stripe(body).map_err(|e| e.to_string());
    }
    let id = key
        .rsplit('/')
        .next()
        .and_then(|f| f.strip_suffix(".json"))
        .ok_or_else(|| "not an archive key".to_owned())?;
    envelope::parse_standard(id, body).map_err(|e| e.to_string())
}

/// Messages waiting to be sent, by queue.
#[derive(Default)]
struct Outbox(BTreeMap<Route, Vec<String>>);

impl Outbox {
    async fn flush(&mut self, stack: &Stack, queue: &dyn QueueSender, dry_run: bool) -> Result<()> {
        for (route, bodies) in std::mem::take(&mut self.0) {
            if !dry_run {
                let url = stack.intake_queue(route.env_var())?;
                queue
                    .send_all(&url, bodies)
                    .await
                    .map_err(|e| anyhow!("sending to {}: {}", route.name(), e.chain()))?;
            }
        }
        Ok(())
    }
}

impl ReplayReport {
    /// Counts an event that passed the filters and queues its messages (`None`: unrouted).
    fn route(&mut self, outbox: &mut Outbox, source: &str, event_type: &str, message: String) {
        let routed = routes(source, event_type);
        if routed.is_empty() {
            self.unrouted += 1;
            return;
        }
        for route in routed.iter() {
            outbox.0.entry(route).or_default().push(message.clone());
            *self.sent.entry(route.name().to_owned()).or_default() += 1;
        }
        self.replayed += 1;
    }
}

/// Replays `req` from the stack's archive.
pub async fn replay(
    stack: &Stack,
    store: &dyn ObjectStore,
    queue: &dyn QueueSender,
    req: &ReplayRequest,
    progress: &dyn Fn(&str),
) -> Result<ReplayReport> {
    if req.to < req.from {
        bail!("--to ({}) is before --from ({})", req.to, req.from);
    }
    let source = Source::parse(&req.source)
        .ok_or_else(|| anyhow!("{:?} is not a source name", req.source))?;
    let mut report = ReplayReport {
        dry_run: req.dry_run,
        ..ReplayReport::default()
    };
    let wanted = |t: &str| req.event_type.as_deref().is_none_or(|p| type_matches(p, t));
    let mut outbox = Outbox::default();
    let verb = if req.dry_run {
        "would be replayed"
    } else {
        "replayed"
    };

    // The archive, hour by hour.
    let hours = archive::hours_between(store, req.from, req.to)
        .await
        .map_err(|e| anyhow!("listing the archive: {}", e.chain()))?;
    for hour in hours {
        let read = archive::read_hour(store, hour)
            .await
            .map_err(|e| anyhow!("reading archive hour {hour}: {}", e.chain()))?;
        report.objects += read.objects.len() as u64;
        report.duplicates += read.duplicates as u64;
        for key in &read.unreadable {
            progress(&format!("skipped {key}: not an archive object"));
            report.unparseable.push(key.clone());
        }
        let before = report.replayed;
        for e in &read.events {
            let line = &e.line;
            if line.source != source.as_str() {
                continue;
            }
            let t = line.time();
            if t < req.from || t > req.to || !wanted(&line.event_type) {
                report.filtered += 1;
                continue;
            }
            let Some(body) = line.body.as_deref().filter(|_| !line.erased) else {
                report.erased += 1;
                continue;
            };
            let message = envelope::event_message_json(
                &line.id,
                &line.source,
                &line.event_type,
                line.received_at,
                &e.locator(),
                body,
            );
            report.route(&mut outbox, &line.source, &line.event_type, message);
        }
        outbox.flush(stack, queue, req.dry_run).await?;
        progress(&format!(
            "{hour}: {} events {verb}",
            report.replayed - before
        ));
    }

    // Single-event objects of the archive before it was batched, by day.
    let now = Utc::now();
    let mut day = req.from.date_naive();
    while day <= req.to.date_naive() {
        let prefix = format!("raw/{}/{}/", source.as_str(), day.format("%Y/%m/%d"));
        let keys = store
            .list(&prefix)
            .await
            .map_err(|e| anyhow!("listing {prefix}: {}", e.chain()))?;
        let before = report.replayed;
        for key in &keys {
            report.objects += 1;
            let Some(body) = store
                .get_at_most(key, blapi::http::MAX_RESPONSE_BYTES)
                .await
                .map_err(|e| anyhow!("reading {key}: {}", e.chain()))?
            else {
                continue;
            };
            let env = match parse_legacy(&source, key, &body) {
                Ok(e) => e,
                Err(why) => {
                    progress(&format!("skipped {key}: {why}"));
                    report.unparseable.push(key.clone());
                    continue;
                }
            };
            let in_window = env.occurred_at.is_none_or(|t| t >= req.from && t <= req.to);
            if !in_window || !wanted(&env.event_type) {
                report.filtered += 1;
                continue;
            }
            let message = envelope::message_json(&source, &env, now, key);
            report.route(&mut outbox, source.as_str(), &env.event_type, message);
        }
        outbox.flush(stack, queue, req.dry_run).await?;
        if !keys.is_empty() {
            progress(&format!(
                "{day} (single-event objects): {} events {verb}",
                report.replayed - before
            ));
        }
        day = day
            .checked_add_days(Days::new(1))
            .ok_or_else(|| anyhow!("date overflow"))?;
    }
    Ok(report)
}
