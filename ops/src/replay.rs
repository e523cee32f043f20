//! `replay`: archived raw events fed again through the intake's routing table into the
//! queues, exactly as the intake enqueued them (the same message, the same `raw_key`).
//!
//! The archive is dated by the event's own time (`raw/{source}/{yyyy}/{mm}/{dd}/{id}.json`),
//! so a time window reads only its days. The consumers are idempotent (license keys, invoice
//! keys, lead ids, CRM external ids, fingerprints), so replaying events already processed
//! changes nothing; replaying the ones lost on the way makes them happen. An archived object
//! that no longer parses is reported, counted and skipped.

use crate::stack::Stack;
use anyhow::{Result, anyhow, bail};
use blapi::queue::QueueSender;
use blapi::storage::ObjectStore;
use blapi::webhook::Source;
use blapi::webhook::envelope::{self, Envelope};
use blapi::webhook::routing::routes;
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
    pub objects: u64,
    pub replayed: u64,
    /// By queue logical route name (`license-requests`, ...).
    pub sent: BTreeMap<String, u64>,
    /// Outside the window or of another type.
    pub filtered: u64,
    /// Types no queue takes (archived only, as at intake).
    pub unrouted: u64,
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

fn parse<'a>(source: &Source, key: &str, body: &'a [u8]) -> Result<Envelope<'a>, String> {
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

/// Replays `req` from the stack's raw archive.
pub async fn replay(
    stack: &Stack,
    s3: &aws_sdk_s3::Client,
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
    let bucket = stack.bucket()?;
    let now = Utc::now();
    let mut report = ReplayReport {
        dry_run: req.dry_run,
        ..ReplayReport::default()
    };
    let mut day = req.from.date_naive();
    while day <= req.to.date_naive() {
        let prefix = format!("raw/{}/{}/", source.as_str(), day.format("%Y/%m/%d"));
        let mut pages = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        let before = report.replayed;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| anyhow!("listing {prefix}: {e:?}"))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                report.objects += 1;
                let Some(body) = store
                    .get_at_most(key, blapi::http::MAX_RESPONSE_BYTES)
                    .await?
                else {
                    continue;
                };
                let env = match parse(&source, key, &body) {
                    Ok(e) => e,
                    Err(why) => {
                        progress(&format!("skipped {key}: {why}"));
                        report.unparseable.push(key.to_owned());
                        continue;
                    }
                };
                let in_window = env.occurred_at.is_none_or(|t| t >= req.from && t <= req.to);
                let wanted = req
                    .event_type
                    .as_deref()
                    .is_none_or(|p| type_matches(p, &env.event_type));
                if !in_window || !wanted {
                    report.filtered += 1;
                    continue;
                }
                let routed = routes(source.as_str(), &env.event_type);
                if routed.is_empty() {
                    report.unrouted += 1;
                    continue;
                }
                let message = envelope::message_json(&source, &env, now, key);
                for route in routed.iter() {
                    if !req.dry_run {
                        let url = stack.intake_queue(route.env_var())?;
                        queue.send(&url, message.clone()).await?;
                    }
                    *report.sent.entry(route.name().to_owned()).or_default() += 1;
                }
                report.replayed += 1;
            }
        }
        progress(&format!(
            "{day}: {} events {}",
            report.replayed - before,
            if req.dry_run {
                "would be replayed"
            } else {
                "replayed"
            }
        ));
        day = day
            .checked_add_days(Days::new(1))
            .ok_or_else(|| anyhow!("date overflow"))?;
    }
    Ok(report)
}
