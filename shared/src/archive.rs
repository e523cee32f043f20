//! The event archive: every accepted webhook event, exactly once, in compressed objects that
//! hold many events (one S3 PUT per object, not per event).
//!
//! # Layout (keys in the artifacts bucket)
//!
//! - `archive/batch/{yyyy}/{mm}/{dd}/{hh}/{uuid v7}.ndjson.gz`: what one archiver batch wrote
//!   for one event hour. Written once, never changed; a redelivered batch writes a new one (so
//!   the same event may sit in two batch objects until the hour is sealed).
//! - `archive/sealed/{yyyy}/{mm}/{dd}/{hh}.ndjson.gz`: the hour sealed: every event of the
//!   hour once (by source and id, the first seen wins), merged from the batch objects, which
//!   are then deleted ([`seal_hour`]).
//! - `archive/manifests/{yyyy}/{mm}/{dd}/{hh}.json`: the sealed hour's [`Manifest`]: event
//!   counts and the keyed subject hashes it holds, each with its events, so a privacy request
//!   finds a person's hours without reading bodies.
//!
//! The hour of an event is the hour of its own time (Stripe `created`, Standard Webhooks
//! `timestamp`) when that is plausible, else the hour it was received ([`placement`]): a
//! sender's retry of the same event, days later, lands in the same hour, where the seal
//! removes the duplicate.
//!
//! # Line format (one JSON object per line, gzip)
//!
//! `{"id", "source", "type", "received_at", "occurred_at"?, "subjects": [<keyed hash>...]?,
//! "body": "<the raw verified body, as a JSON string>"}`; an erased event keeps only its id,
//! source, type and times with `"erased": true` ([`Line::tombstone`]), so event accounting
//! still adds up. A line is located by `{object key}#{source}/{id}` ([`locator`]): the
//! `raw_key` of every queue message.
//!
//! # Exactly once, and no lost update
//!
//! The seal and a privacy erasure change shared objects by read-modify-write with a
//! conditional write on the ETag they read ([`ObjectStore::put_if`]): of two concurrent
//! writers one wins, the other reads again and redoes its change. The seal writes the sealed
//! object, then its manifest, and only then deletes the batch objects it merged (each by the
//! exact version it read) and the versions it replaced; a crash anywhere leaves batch objects
//! that the next run merges again (duplicates are dropped). Readers list and read the batch
//! objects first and the sealed object last, so an event moved by a concurrent seal is always
//! found in one or the other; they drop duplicates the same way, first seen wins, the sealed
//! lines first ([`read_hour`]).
//!
//! # Privacy
//!
//! [`events_of`] finds a person's events through the manifests of sealed hours and by reading
//! the (few, recent) unsealed batch objects; [`erase_subject`] seals the unsealed hours that
//! name the person, then rewrites each sealed hour with the person's events replaced by
//! tombstones, rebuilds its manifest and erases every older version of both.

use crate::error::{Error, Result};
use crate::storage::{ObjectStore, Tagged};
use crate::subjects::SubjectId;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};

/// Where the archiver writes its batch objects.
pub const BATCH_PREFIX: &str = "archive/batch/";
/// Where the seal writes an hour's one object.
pub const SEALED_PREFIX: &str = "archive/sealed/";
/// Where the seal writes an hour's manifest.
pub const MANIFEST_PREFIX: &str = "archive/manifests/";
/// The content type of archive objects.
pub const GZIP: &str = "application/gzip";
const OBJECT_SUFFIX: &str = ".ndjson.gz";
/// How far before its reception an event's own time may lie and still place it (Stripe lists
/// missed events for 30 days).
const MAX_AGE: i64 = 35;
/// Rounds of a read-modify-write before giving up (retryably).
const ROUNDS: usize = 8;
/// Objects read at once.
const READ_CONCURRENCY: usize = 16;

/// One hour of the archive (its start, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour(DateTime<Utc>);

impl Hour {
    /// The hour `t` falls in.
    pub fn of(t: DateTime<Utc>) -> Self {
        let start = Utc
            .with_ymd_and_hms(t.year(), t.month(), t.day(), t.hour(), 0, 0)
            .single()
            .unwrap_or(t);
        Self(start)
    }

    /// `yyyy-mm-ddThh` (or an RFC 3339 time) as an hour.
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(Self::of(t.with_timezone(&Utc)));
        }
        let (day, hour) = text.split_once('T')?;
        let day: NaiveDate = day.parse().ok()?;
        let hour: u32 = hour.parse().ok()?;
        Some(Self(day.and_hms_opt(hour, 0, 0)?.and_utc()))
    }

    pub fn start(self) -> DateTime<Utc> {
        self.0
    }

    /// The hour after this one.
    pub fn next(self) -> Self {
        Self(self.0 + Duration::hours(1))
    }

    fn path(self) -> String {
        self.0.format("%Y/%m/%d/%H").to_string()
    }

    /// `archive/batch/{yyyy}/{mm}/{dd}/{hh}/`.
    pub fn batch_prefix(self) -> String {
        format!("{BATCH_PREFIX}{}/", self.path())
    }

    /// A new batch object's key in this hour (a v7 UUID: keys sort in writing order).
    pub fn new_batch_key(self) -> String {
        format!(
            "{}{}{OBJECT_SUFFIX}",
            self.batch_prefix(),
            uuid::Uuid::now_v7()
        )
    }

    /// `archive/sealed/{yyyy}/{mm}/{dd}/{hh}.ndjson.gz`.
    pub fn sealed_key(self) -> String {
        format!("{SEALED_PREFIX}{}{OBJECT_SUFFIX}", self.path())
    }

    /// `archive/manifests/{yyyy}/{mm}/{dd}/{hh}.json`.
    pub fn manifest_key(self) -> String {
        format!("{MANIFEST_PREFIX}{}.json", self.path())
    }

    /// The hour of any archive key (batch, sealed or manifest).
    pub fn from_key(key: &str) -> Option<Self> {
        let rest = key
            .strip_prefix(BATCH_PREFIX)
            .or_else(|| key.strip_prefix(SEALED_PREFIX))
            .or_else(|| key.strip_prefix(MANIFEST_PREFIX))?;
        let mut parts = rest.splitn(5, '/');
        let mut num = |len: usize| -> Option<u32> {
            let p = parts.next()?;
            let digits = p.get(..len)?;
            digits.parse().ok()
        };
        let (y, m, d, h) = (num(4)?, num(2)?, num(2)?, num(2)?);
        let t = Utc
            .with_ymd_and_hms(i32::try_from(y).ok()?, m, d, h, 0, 0)
            .single()?;
        Some(Self(t))
    }
}

impl std::fmt::Display for Hour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H"))
    }
}

impl Serialize for Hour {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The time that places an event: its own time when plausible (at most 35 days before it
/// was received, at most a day after), else when it was received.
pub fn event_time(occurred_at: Option<DateTime<Utc>>, received_at: DateTime<Utc>) -> DateTime<Utc> {
    occurred_at
        .filter(|t| {
            *t >= received_at - Duration::days(MAX_AGE) && *t <= received_at + Duration::days(1)
        })
        .unwrap_or(received_at)
}

/// The hour an event is archived in ([`event_time`]'s hour).
pub fn placement(occurred_at: Option<DateTime<Utc>>, received_at: DateTime<Utc>) -> Hour {
    Hour::of(event_time(occurred_at, received_at))
}

/// One archived event (a line of an archive object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// The keyed hashes ([`crate::subjects::SubjectKey`]) of the addresses the event names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<SubjectId>,
    /// The raw verified body (absent once erased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
}

impl Line {
    /// `{source}/{id}`: the event's identity in the archive.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.source, self.id)
    }

    /// The time that placed it ([`event_time`]).
    pub fn time(&self) -> DateTime<Utc> {
        event_time(self.occurred_at, self.received_at)
    }

    /// Whether the event names `subject`.
    pub fn names(&self, subject: &SubjectId) -> bool {
        self.subjects.contains(subject)
    }

    /// What is kept of an erased event: no body, no subjects.
    pub fn tombstone(&self) -> Line {
        Line {
            id: self.id.clone(),
            source: self.source.clone(),
            event_type: self.event_type.clone(),
            received_at: self.received_at,
            occurred_at: self.occurred_at,
            subjects: Vec::new(),
            body: None,
            erased: true,
        }
    }

    /// The body as JSON (`Null` once erased or when it is not JSON).
    pub fn event(&self) -> serde_json::Value {
        self.body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Just enough of a line to dedupe it and index it, without building its body.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(default)]
    subjects: Vec<SubjectId>,
    #[serde(default)]
    erased: bool,
}

fn corrupt(key: &str, what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("archive object {key}: {what}"))
}

/// The gzip NDJSON of `lines`.
pub fn encode<'a>(lines: impl IntoIterator<Item = &'a Line>) -> Result<Vec<u8>> {
    let mut out = GzEncoder::new(Vec::new(), Compression::default());
    for line in lines {
        serde_json::to_writer(&mut out, line).map_err(|e| corrupt("(new)", e))?;
        out.write_all(b"\n").map_err(|e| corrupt("(new)", e))?;
    }
    out.finish().map_err(|e| corrupt("(new)", e))
}

/// Calls `each` with every non-empty line of a gzip NDJSON object.
fn for_each_line(key: &str, bytes: &[u8], mut each: impl FnMut(&str) -> Result<()>) -> Result<()> {
    let reader = BufReader::new(GzDecoder::new(bytes));
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| corrupt(key, format!("line {}: {e}", n + 1)))?;
        if !line.trim().is_empty() {
            each(&line)?;
        }
    }
    Ok(())
}

/// The lines of a gzip NDJSON object (`key` names it in errors). A line that does not parse
/// fails the whole object: nothing is ever dropped silently.
pub fn decode(key: &str, bytes: &[u8]) -> Result<Vec<Line>> {
    let mut out = Vec::new();
    for_each_line(key, bytes, |text| {
        let line =
            serde_json::from_str(text).map_err(|e| corrupt(key, crate::error::json_error(&e)))?;
        out.push(line);
        Ok(())
    })?;
    Ok(out)
}

/// `{object key}#{source}/{id}`: where an archived event is.
pub fn locator(object_key: &str, source: &str, id: &str) -> String {
    format!("{object_key}#{source}/{id}")
}

/// The hour, source and id of a [`locator`] (whichever object of the hour holds it now).
pub fn parse_locator(locator: &str) -> Option<(Hour, &str, &str)> {
    let (key, reference) = locator.split_once('#')?;
    let (source, id) = reference.split_once('/')?;
    Some((Hour::from_key(key)?, source, id))
}

/// Writes `lines` (all of `hour`) as a new batch object; returns its key.
pub async fn write_batch(store: &dyn ObjectStore, hour: Hour, lines: &[Line]) -> Result<String> {
    let key = hour.new_batch_key();
    store.put(&key, encode(lines)?, GZIP).await?;
    Ok(key)
}

/// An archived event and the object it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub object: String,
    pub line: Line,
}

impl Located {
    /// Its [`locator`].
    pub fn locator(&self) -> String {
        locator(&self.object, &self.line.source, &self.line.id)
    }
}

/// An hour as readers see it: every event once.
#[derive(Debug, Clone, Default)]
pub struct HourEvents {
    pub events: Vec<Located>,
    /// The objects read (the sealed one first, then the batch objects).
    pub objects: Vec<String>,
    /// Copies dropped (an event in the sealed object and a batch object, or in two batch
    /// objects): a redelivered batch not yet sealed.
    pub duplicates: usize,
    /// Objects that could not be read as archive objects (reported, never dropped).
    pub unreadable: Vec<String>,
}

/// Reads many objects, `READ_CONCURRENCY` at a time, in the order given (missing ones `None`).
async fn read_all(store: &dyn ObjectStore, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(READ_CONCURRENCY) {
        for got in futures::future::join_all(chunk.iter().map(|k| store.get(k))).await {
            out.push(got?);
        }
    }
    Ok(out)
}

/// Every event of `hour` once: the batch objects are listed and read first, the sealed object
/// last (so an event a concurrent seal moved is in one or the other), then the sealed lines
/// come first and the first copy of an event wins.
pub async fn read_hour(store: &dyn ObjectStore, hour: Hour) -> Result<HourEvents> {
    read_hour_where(store, hour, |_| true).await
}

/// [`read_hour`], keeping only the events whose keyed subject hashes pass `keep` (the others
/// are deduplicated but never built: an hour is read without holding all its bodies).
async fn read_hour_where(
    store: &dyn ObjectStore,
    hour: Hour,
    keep: impl Fn(&[SubjectId]) -> bool,
) -> Result<HourEvents> {
    let batch_keys = store.list(&hour.batch_prefix()).await?;
    let batches = read_all(store, &batch_keys).await?;
    let sealed_key = hour.sealed_key();
    let sealed = store.get(&sealed_key).await?;
    let mut out = HourEvents::default();
    let mut seen = HashSet::new();
    let objects = std::iter::once((&sealed_key, sealed)).chain(batch_keys.iter().zip(batches));
    for (key, bytes) in objects {
        let Some(bytes) = bytes else { continue };
        out.objects.push(key.clone());
        let mut found = Vec::new();
        let mut duplicates = 0;
        let read = for_each_line(key, &bytes, |text| {
            let head: Head<'_> = serde_json::from_str(text)
                .map_err(|e| corrupt(key, crate::error::json_error(&e)))?;
            if !seen.insert(format!("{}/{}", head.source, head.id)) {
                duplicates += 1;
            } else if keep(&head.subjects) {
                let line: Line = serde_json::from_str(text)
                    .map_err(|e| corrupt(key, crate::error::json_error(&e)))?;
                found.push(Located {
                    object: key.clone(),
                    line,
                });
            }
            Ok(())
        });
        match read {
            Ok(()) => {
                out.events.extend(found);
                out.duplicates += duplicates;
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e.chain(), "archive object unreadable");
                out.unreadable.push(key.clone());
            }
        }
    }
    Ok(out)
}

/// The event at `locator`, wherever its hour keeps it now (sealed or batch object).
pub async fn find(store: &dyn ObjectStore, locator: &str) -> Result<Option<Located>> {
    let (hour, source, id) = parse_locator(locator)
        .ok_or_else(|| Error::Invalid(format!("{locator} is not an archive locator")))?;
    Ok(read_hour(store, hour)
        .await?
        .events
        .into_iter()
        .find(|e| e.line.source == source && e.line.id == id))
}

/// The hours holding any archive object between `from` and `to` (inclusive), in order: one
/// listing per day and kind of object.
pub async fn hours_between(
    store: &dyn ObjectStore,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Hour>> {
    let (first, last) = (Hour::of(from), Hour::of(to));
    let mut hours = BTreeSet::new();
    let mut day = from.date_naive();
    while day <= to.date_naive() {
        let path = day.format("%Y/%m/%d/").to_string();
        for prefix in [BATCH_PREFIX, SEALED_PREFIX] {
            for key in store.list(&format!("{prefix}{path}")).await? {
                if let Some(h) = Hour::from_key(&key).filter(|h| *h >= first && *h <= last) {
                    hours.insert(h);
                }
            }
        }
        day = day
            .succ_opt()
            .ok_or_else(|| Error::Invalid("date out of range".into()))?;
    }
    Ok(hours.into_iter().collect())
}

/// Every hour that has batch objects (not sealed yet, or sealed and written to again).
pub async fn unsealed_hours(store: &dyn ObjectStore) -> Result<Vec<Hour>> {
    let hours: BTreeSet<Hour> = store
        .list(BATCH_PREFIX)
        .await?
        .iter()
        .filter_map(|k| Hour::from_key(k))
        .collect();
    Ok(hours.into_iter().collect())
}

/// A sealed hour's index: what a privacy request reads instead of bodies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The hour (its start).
    pub hour: Option<DateTime<Utc>>,
    /// Events in the sealed object (tombstones included).
    pub events: usize,
    /// Of which erased.
    pub erased: usize,
    /// Keyed subject hash -> the events (`{source}/{id}`) naming that person.
    pub subjects: BTreeMap<SubjectId, Vec<String>>,
}

impl Manifest {
    fn add(&mut self, reference: &str, subjects: &[SubjectId], erased: bool) {
        self.events += 1;
        self.erased += usize::from(erased);
        for s in subjects {
            self.subjects
                .entry(s.clone())
                .or_default()
                .push(reference.to_owned());
        }
    }
}

/// Merges gzip NDJSON objects into one, part by part, line by line (lines copied byte for
/// byte, never rebuilt), the first copy of each event winning. Memory: the compressed output,
/// one part at a time, and the events' references.
struct Merger {
    out: GzEncoder<Vec<u8>>,
    seen: HashSet<String>,
    manifest: Manifest,
    duplicates: usize,
}

impl Merger {
    fn new(hour: Hour) -> Self {
        Self {
            out: GzEncoder::new(Vec::new(), Compression::default()),
            seen: HashSet::new(),
            manifest: Manifest {
                hour: Some(hour.start()),
                ..Manifest::default()
            },
            duplicates: 0,
        }
    }

    fn add(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        for_each_line(key, bytes, |text| {
            let head: Head<'_> = serde_json::from_str(text)
                .map_err(|e| corrupt(key, crate::error::json_error(&e)))?;
            let reference = format!("{}/{}", head.source, head.id);
            if self.seen.contains(&reference) {
                self.duplicates += 1;
                return Ok(());
            }
            self.manifest.add(&reference, &head.subjects, head.erased);
            self.seen.insert(reference);
            self.out
                .write_all(text.as_bytes())
                .and_then(|()| self.out.write_all(b"\n"))
                .map_err(|e| corrupt(key, e))
        })
    }

    fn finish(self) -> Result<(Vec<u8>, Manifest, usize)> {
        let bytes = self.out.finish().map_err(|e| corrupt("(merged)", e))?;
        Ok((bytes, self.manifest, self.duplicates))
    }
}

fn manifest_json(m: &Manifest) -> Result<Vec<u8>> {
    serde_json::to_vec(m).map_err(|e| Error::Invalid(format!("manifest: {e}")))
}

/// What sealing an hour did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HourSealed {
    pub hour: Option<Hour>,
    /// Batch objects merged (and deleted).
    pub merged: usize,
    /// Events in the sealed object now.
    pub events: usize,
    /// Copies dropped.
    pub duplicates: usize,
    /// Rounds lost to a concurrent writer (each redone from a fresh read).
    pub conflicts: usize,
}

/// Writes `key` conditionally; `Ok(false)` when another writer changed it first.
async fn put_if_unchanged(
    store: &dyn ObjectStore,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
    read: Option<&Tagged>,
) -> Result<bool> {
    match store
        .put_if(key, body, content_type, read.map(|t| t.etag.as_str()))
        .await
    {
        Ok(()) => Ok(true),
        Err(Error::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the versions a rewrite replaced (they hold nothing the new version lacks, except
/// what an erasure removed on purpose).
async fn delete_replaced(store: &dyn ObjectStore, replaced: &[(String, String)]) -> Result<()> {
    for (key, version) in replaced {
        store.delete_version(key, Some(version)).await?;
    }
    Ok(())
}

/// Merges `hour`'s batch objects into its sealed object (with the lines already sealed first),
/// rewrites its manifest, then deletes the merged batch objects. Idempotent and resumable: a
/// run with nothing to merge changes nothing; a run after a crash merges what is left.
pub async fn seal_hour(store: &dyn ObjectStore, hour: Hour) -> Result<HourSealed> {
    let mut report = HourSealed {
        hour: Some(hour),
        ..HourSealed::default()
    };
    let (sealed_key, manifest_key) = (hour.sealed_key(), hour.manifest_key());
    let mut replaced: Vec<(String, String)> = Vec::new();
    for _ in 0..ROUNDS {
        let batch_keys = store.list(&hour.batch_prefix()).await?;
        if batch_keys.is_empty() {
            // Nothing (left) to merge: done, by this run or a concurrent one.
            delete_replaced(store, &replaced).await?;
            return Ok(report);
        }
        // The sealed lines first (they win), then each batch object in writing order, read
        // one at a time. What changes meanwhile makes the conditional write below fail.
        let sealed = store.get_tagged(&sealed_key).await?;
        let manifest = store.get_tagged(&manifest_key).await?;
        let mut merger = Merger::new(hour);
        let sealed = match sealed {
            Some(t) => {
                merger.add(&sealed_key, &t.body)?;
                Some(Tagged {
                    body: Vec::new(),
                    ..t
                })
            }
            None => None,
        };
        let mut merged_objects: Vec<(&String, Option<String>)> = Vec::new();
        for key in &batch_keys {
            // Gone since the listing: a concurrent seal merged it (it is in the sealed object).
            if let Some(t) = store.get_tagged(key).await? {
                merger.add(key, &t.body)?;
                merged_objects.push((key, t.version));
            }
        }
        if merged_objects.is_empty() {
            continue;
        }
        let (bytes, merged_manifest, duplicates) = merger.finish()?;
        let manifest_body = manifest_json(&merged_manifest)?;
        if !put_if_unchanged(store, &sealed_key, bytes, GZIP, sealed.as_ref()).await? {
            report.conflicts += 1;
            continue;
        }
        replaced.extend(
            sealed
                .as_ref()
                .and_then(|t| t.version.clone())
                .map(|v| (sealed_key.clone(), v)),
        );
        if !put_if_unchanged(
            store,
            &manifest_key,
            manifest_body,
            "application/json",
            manifest.as_ref(),
        )
        .await?
        {
            // Another writer's manifest came in between: redo from a fresh read so the last
            // manifest written always describes the sealed object it follows.
            report.conflicts += 1;
            continue;
        }
        replaced.extend(
            manifest
                .as_ref()
                .and_then(|t| t.version.clone())
                .map(|v| (manifest_key.clone(), v)),
        );
        // Only now are the batch objects' lines safe elsewhere.
        for (key, version) in &merged_objects {
            store.delete_version(key, version.as_deref()).await?;
        }
        delete_replaced(store, &replaced).await?;
        report.merged = merged_objects.len();
        report.events = merged_manifest.events;
        report.duplicates = duplicates;
        tracing::info!(hour = %hour, merged = report.merged, events = report.events, duplicates = report.duplicates, "archive hour sealed");
        return Ok(report);
    }
    delete_replaced(store, &replaced).await?;
    Err(Error::dependency(
        "s3",
        true,
        format!("archive hour {hour} kept changing while being sealed; retry"),
    ))
}

/// What a seal run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SealReport {
    pub hours: Vec<HourSealed>,
    pub merged: usize,
    pub events: usize,
    pub duplicates: usize,
    /// Hours left for a later run (the current hour, unless asked to include it).
    pub skipped: Vec<Hour>,
}

/// Seals every hour that has batch objects, except the hour of `now` (still being written)
/// unless `include_current`.
pub async fn seal(
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
    include_current: bool,
) -> Result<SealReport> {
    let mut report = SealReport::default();
    let current = Hour::of(now);
    for hour in unsealed_hours(store).await? {
        if hour >= current && !include_current {
            report.skipped.push(hour);
            continue;
        }
        let done = seal_hour(store, hour).await?;
        report.merged += done.merged;
        report.events += done.events;
        report.duplicates += done.duplicates;
        report.hours.push(done);
    }
    Ok(report)
}

/// Everything about one person in the archive: the hours naming them, by kind.
#[derive(Debug, Clone, Default)]
struct Naming {
    /// Sealed hours whose manifest names the person.
    sealed: BTreeSet<Hour>,
    /// Hours with a batch object naming the person.
    unsealed: BTreeSet<Hour>,
}

/// The sealed hours whose manifest names `subject`.
async fn sealed_naming(store: &dyn ObjectStore, subject: &SubjectId) -> Result<BTreeSet<Hour>> {
    let keys = store.list(MANIFEST_PREFIX).await?;
    let bodies = read_all(store, &keys).await?;
    let mut out = BTreeSet::new();
    for (key, body) in keys.iter().zip(bodies) {
        let Some(body) = body else { continue };
        let m: Manifest = serde_json::from_slice(&body).map_err(|e| corrupt(key, e))?;
        if m.subjects.contains_key(subject)
            && let Some(h) = Hour::from_key(key)
        {
            out.insert(h);
        }
    }
    Ok(out)
}

/// The hours with a batch object naming `subject` (the heads of its lines are read).
async fn unsealed_naming(store: &dyn ObjectStore, subject: &SubjectId) -> Result<BTreeSet<Hour>> {
    let keys = store.list(BATCH_PREFIX).await?;
    let bodies = read_all(store, &keys).await?;
    let mut out = BTreeSet::new();
    for (key, body) in keys.iter().zip(bodies) {
        let Some(body) = body else { continue };
        let mut names = false;
        for_each_line(key, &body, |text| {
            let head: Head<'_> = serde_json::from_str(text)
                .map_err(|e| corrupt(key, crate::error::json_error(&e)))?;
            names |= head.subjects.contains(subject);
            Ok(())
        })?;
        if names && let Some(h) = Hour::from_key(key) {
            out.insert(h);
        }
    }
    Ok(out)
}

async fn naming(store: &dyn ObjectStore, subject: &SubjectId) -> Result<Naming> {
    Ok(Naming {
        unsealed: unsealed_naming(store, subject).await?,
        sealed: sealed_naming(store, subject).await?,
    })
}

/// Every archived event naming `subject` (erased ones are not: they name no one), each once.
pub async fn events_of(store: &dyn ObjectStore, subject: &SubjectId) -> Result<Vec<Located>> {
    let n = naming(store, subject).await?;
    let mut out = Vec::new();
    for hour in n.sealed.union(&n.unsealed) {
        let read = read_hour_where(store, *hour, |s| s.contains(subject)).await?;
        out.extend(read.events);
    }
    Ok(out)
}

/// What erasing a person did in one sealed hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourErased {
    pub hour: Hour,
    /// Events replaced by tombstones.
    pub erased: usize,
    /// Older versions of the sealed object and manifest erased.
    pub versions: u64,
}

/// Replaces `subject`'s events in `hour`'s sealed object by tombstones, rebuilds the manifest,
/// then erases every older version of both.
async fn erase_in_hour(
    store: &dyn ObjectStore,
    hour: Hour,
    subject: &SubjectId,
) -> Result<HourErased> {
    let (sealed_key, manifest_key) = (hour.sealed_key(), hour.manifest_key());
    for _ in 0..ROUNDS {
        let Some(sealed) = store.get_tagged(&sealed_key).await? else {
            break;
        };
        let manifest = store.get_tagged(&manifest_key).await?;
        let mut out = GzEncoder::new(Vec::new(), Compression::default());
        let mut m = Manifest {
            hour: Some(hour.start()),
            ..Manifest::default()
        };
        let mut erased = 0;
        for_each_line(&sealed_key, &sealed.body, |text| {
            let head: Head<'_> = serde_json::from_str(text)
                .map_err(|e| corrupt(&sealed_key, crate::error::json_error(&e)))?;
            let reference = format!("{}/{}", head.source, head.id);
            let text = if head.subjects.contains(subject) {
                let line: Line = serde_json::from_str(text)
                    .map_err(|e| corrupt(&sealed_key, crate::error::json_error(&e)))?;
                erased += 1;
                m.add(&reference, &[], true);
                Cow::Owned(
                    serde_json::to_string(&line.tombstone())
                        .map_err(|e| corrupt(&sealed_key, e))?,
                )
            } else {
                m.add(&reference, &head.subjects, head.erased);
                Cow::Borrowed(text)
            };
            out.write_all(text.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| corrupt(&sealed_key, e))
        })?;
        // A manifest still naming the person (an earlier erasure stopped between the two
        // writes) is rewritten even when the sealed object has nothing left to erase.
        let stale = manifest.as_ref().is_some_and(|t| {
            serde_json::from_slice::<Manifest>(&t.body)
                .ok()
                .is_none_or(|old| old.subjects.contains_key(subject))
        });
        if erased > 0 {
            let bytes = out.finish().map_err(|e| corrupt(&sealed_key, e))?;
            if !put_if_unchanged(store, &sealed_key, bytes, GZIP, Some(&sealed)).await? {
                continue;
            }
        }
        if (erased > 0 || stale)
            && !put_if_unchanged(
                store,
                &manifest_key,
                manifest_json(&m)?,
                "application/json",
                manifest.as_ref(),
            )
            .await?
        {
            continue;
        }
        let versions = store.erase_noncurrent_versions(&sealed_key).await?
            + store.erase_noncurrent_versions(&manifest_key).await?;
        return Ok(HourErased {
            hour,
            erased,
            versions,
        });
    }
    Err(Error::dependency(
        "s3",
        true,
        format!("archive hour {hour} kept changing while being erased; retry"),
    ))
}

/// Erases `subject` from the archive: the hours with batch objects naming them are sealed
/// first (their batch objects deleted for good), then every sealed hour naming them is
/// rewritten with tombstones in place of their events, older versions erased.
pub async fn erase_subject(
    store: &dyn ObjectStore,
    subject: &SubjectId,
) -> Result<Vec<HourErased>> {
    for hour in unsealed_naming(store, subject).await? {
        seal_hour(store, hour).await?;
    }
    let mut out = Vec::new();
    for hour in sealed_naming(store, subject).await? {
        out.push(erase_in_hour(store, hour, subject).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
