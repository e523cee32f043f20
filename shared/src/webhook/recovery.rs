//! Stripe's missed-event recovery: the events Stripe could not deliver (`GET /v1/events` with
//! `delivery_success=false`, at most 30 days back, as far as Stripe keeps them) are read with
//! the API key, so they are authentic, and fed through [`Intake::accept_authentic`]: the same
//! events queue, archive and routed queues as a verified webhook.
//!
//! An event already in the archive (its hour is known from its `created`, see
//! [`crate::archive::placement`]) is counted as a duplicate and not sent again, so a recovery
//! can run any number of times. One still on its way (accepted, not archived yet) is sent
//! again: the archive keeps one copy and the consumers are idempotent.
//!
//! An API that refuses the `delivery_success` filter (localstripe) is asked for every event
//! of the window instead; the archive then tells delivered from missed.

use super::Source;
use super::intake::Intake;
use crate::archive::{self, Hour};
use crate::error::{Error, Result};
use crate::storage::ObjectStore;
use crate::stripe::StripeClient;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// How far back Stripe keeps events.
pub const MAX_LOOKBACK_DAYS: i64 = 30;
/// Pages read at most in one run (100 events each).
const MAX_PAGES: usize = 500;

/// What a recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// The window's start actually used (capped at 30 days back).
    pub since: i64,
    /// `delivery_success=false`, or every event when the API refused the filter.
    pub filter: String,
    pub listed: u64,
    /// New to us: put on the events queue now.
    pub recovered: u64,
    /// Already in the archive.
    pub duplicates: u64,
    /// Event ids that could not be taken (with the reason): retried by the next run.
    pub failed: Vec<(String, String)>,
    pub dry_run: bool,
}

#[derive(serde::Deserialize)]
struct Page {
    data: Vec<serde_json::Value>,
    #[serde(default)]
    has_more: bool,
}

async fn page(
    stripe: &StripeClient,
    since: &str,
    after: Option<&str>,
    filtered: bool,
) -> Result<Page> {
    let mut q: Vec<(&str, &str)> = vec![("created[gte]", since), ("limit", "100")];
    if filtered {
        q.push(("delivery_success", "false"));
    }
    if let Some(a) = after {
        q.push(("starting_after", a));
    }
    stripe.get("events", &q).await
}

/// The ids archived in each hour read so far (each hour read once per run).
#[derive(Default)]
struct Archived(HashMap<Hour, HashSet<String>>);

impl Archived {
    async fn contains(
        &mut self,
        store: &dyn ObjectStore,
        id: &str,
        created: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let occurred = created.and_then(|c| DateTime::from_timestamp(c, 0));
        let hour = archive::placement(occurred, now);
        if let std::collections::hash_map::Entry::Vacant(slot) = self.0.entry(hour) {
            let ids = archive::read_hour(store, hour)
                .await?
                .events
                .into_iter()
                .filter(|e| e.line.source == super::STRIPE)
                .map(|e| e.line.id)
                .collect();
            slot.insert(ids);
        }
        Ok(self.0.get(&hour).is_some_and(|ids| ids.contains(id)))
    }
}

/// Recovers the events since `since` (capped at 30 days before `now`). With `archive`, an
/// event already archived is a duplicate; without it every listed event is sent. With
/// `dry_run`, only lists them (nothing is read from the archive, nothing is sent).
pub async fn recover_stripe(
    stripe: &StripeClient,
    intake: &Intake,
    archive: Option<&dyn ObjectStore>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<RecoveryReport> {
    let since = since
        .max(now - Duration::days(MAX_LOOKBACK_DAYS))
        .timestamp();
    let since_text = since.to_string();
    let mut report = RecoveryReport {
        since,
        filter: "delivery_success=false".into(),
        dry_run,
        ..RecoveryReport::default()
    };
    let mut filtered = true;
    let mut after: Option<String> = None;
    let mut seen = HashSet::new();
    let mut archived = Archived::default();
    let source = Source::parse("stripe").ok_or_else(|| Error::Invalid("stripe".into()))?;
    for _ in 0..MAX_PAGES {
        let got = match page(stripe, &since_text, after.as_deref(), filtered).await {
            Err(e) if filtered && e.chain().contains("delivery_success") => {
                filtered = false;
                report.filter = "every event (the API refused delivery_success)".into();
                page(stripe, &since_text, after.as_deref(), false).await?
            }
            other => other?,
        };
        let mut new_on_page = false;
        // The page's missed events, sent together (each its own message, concurrently).
        let mut to_send: Vec<(String, Vec<u8>)> = Vec::new();
        for event in &got.data {
            let Some(id) = event.get("id").and_then(|v| v.as_str()).map(str::to_owned) else {
                continue;
            };
            // Some APIs ignore the cursor: never take an event twice, never loop.
            if !seen.insert(id.clone()) {
                continue;
            }
            new_on_page = true;
            let created = event.get("created").and_then(serde_json::Value::as_i64);
            if created.is_some_and(|c| c < since) {
                continue;
            }
            report.listed += 1;
            if dry_run {
                continue;
            }
            if let Some(store) = archive {
                match archived.contains(store, &id, created, now).await {
                    Ok(true) => {
                        report.duplicates += 1;
                        continue;
                    }
                    Ok(false) => {}
                    // Unreadable archive: send it (a second copy is harmless, a loss is not).
                    Err(e) => {
                        tracing::warn!(event_id = %id, error = %e.chain(), "archive unreadable; event sent again");
                    }
                }
            }
            let body = serde_json::to_vec(event).map_err(|e| Error::Invalid(e.to_string()))?;
            to_send.push((id, body));
        }
        let sent = futures::future::join_all(
            to_send
                .iter()
                .map(|(_, body)| intake.accept_authentic(&source, body, now)),
        )
        .await;
        for ((id, _), outcome) in to_send.into_iter().zip(sent) {
            match outcome {
                Ok(_) => report.recovered += 1,
                Err(reason) => report.failed.push((id, reason)),
            }
        }
        if let Some(last) = got
            .data
            .last()
            .and_then(|e| e.get("id"))
            .and_then(|v| v.as_str())
        {
            after = Some(last.to_owned());
        }
        if !got.has_more || !new_on_page {
            break;
        }
    }
    tracing::info!(
        listed = report.listed,
        recovered = report.recovered,
        duplicates = report.duplicates,
        failed = report.failed.len(),
        "stripe recovery done"
    );
    Ok(report)
}
