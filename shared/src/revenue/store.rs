//! What revenue-ops keeps: per customer its renewals, its recent scores and alerts, and the
//! fingerprints of the CRM records it last wrote; per day the metrics snapshot.
//!
//! DynamoDB (RevenueTable, `pk`/`sk`):
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | customer | `CUSTOMER#{id}` | `STATE` | `doc` (JSON), `version`, `bands` (map: day -> band, the days kept) |
//! | snapshot | `SNAPSHOT` | `{YYYY-MM-DD}` | `doc` (JSON), `mrr`, `currency` |
//!
//! No personal data: ids, numbers, bands and reasons.

use super::health::Health;
use super::metrics::Snapshot;
use super::renewals::Renewal;
use crate::aws::dynamo::{get_json, get_n, json_attr, n, query_all, s};
use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// One day's score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreDay {
    pub score: Option<u32>,
    pub band: String,
}

/// One customer's revenue-ops state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RevenueState {
    pub customer_id: String,
    /// By key.
    pub renewals: BTreeMap<String, Renewal>,
    /// The last days' scores by `YYYY-MM-DD` (40 days kept: a week's drop, reruns).
    pub scores: BTreeMap<String, ScoreDay>,
    /// The latest health.
    pub health: Option<Health>,
    /// When the at-risk warning in force was raised (cleared on leaving `at_risk`).
    pub at_risk_since: Option<String>,
    /// The date of the last drop warning (one per week at most).
    pub drop_warned: Option<String>,
    /// CRM record key -> fingerprint of the record last written.
    pub written: BTreeMap<String, String>,
    /// The last date fully processed.
    pub last_run: Option<String>,
    /// Optimistic version: 0 = never stored.
    pub version: u64,
}

/// The store.
#[async_trait]
pub trait RevenueStore: Send + Sync {
    async fn load(&self, customer_id: &str) -> Result<Option<RevenueState>>;
    /// Saves if the stored version is still `state.version`, else [`Error::Conflict`].
    /// Returns the new version.
    async fn save(&self, state: &RevenueState) -> Result<u64>;
    /// Customers by the band they were scored on `day` (`YYYY-MM-DD`), counted.
    async fn bands_on(&self, day: &str) -> Result<BTreeMap<String, u64>>;
    async fn put_snapshot(&self, snapshot: &Snapshot) -> Result<()>;
    /// The snapshots from `from` to `to` (`YYYY-MM-DD`, inclusive), oldest first.
    async fn snapshots(&self, from: &str, to: &str) -> Result<Vec<Snapshot>>;
}

/// The DynamoDB adapter.
#[derive(Debug, Clone)]
pub struct DynamoRevenue {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoRevenue {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn ddb<E>(
    e: aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Error
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    Error::aws("dynamodb", e)
}

#[async_trait]
impl RevenueStore for DynamoRevenue {
    async fn load(&self, customer_id: &str) -> Result<Option<RevenueState>> {
        let pk = format!("CUSTOMER#{customer_id}");
        let Some(item) =
            crate::aws::dynamo::get_item(&self.client, &self.table, pk, Some("STATE")).await?
        else {
            return Ok(None);
        };
        let mut state: RevenueState = get_json(&item, "doc", "revenue state")?;
        state.version = get_n(&item, "version").unwrap_or(0);
        Ok(Some(state))
    }

    async fn save(&self, state: &RevenueState) -> Result<u64> {
        let next = state.version + 1;
        let bands = state
            .scores
            .iter()
            .map(|(day, s)| (day.clone(), AttributeValue::S(s.band.clone())))
            .collect();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("CUSTOMER#{}", state.customer_id)))
            .item("sk", s("STATE"))
            .item("doc", json_attr(state)?)
            .item("version", n(next))
            .item("bands", AttributeValue::M(bands));
        let put = if state.version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(":v", n(state.version))
        };
        match put.send().await {
            Ok(_) => Ok(next),
            Err(e) if crate::aws::dynamo::is_conditional_check_failed(&e) => Err(Error::Conflict(
                format!("revenue state of {} changed meanwhile", state.customer_id),
            )),
            Err(e) => Err(ddb(e)),
        }
    }

    /// A Scan of the customer items, projecting the bands only.
    async fn bands_on(&self, day: &str) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :s")
                .expression_attribute_values(":s", s("STATE"))
                .projection_expression("bands")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(ddb)?;
            for item in page.items() {
                let band = item
                    .get("bands")
                    .and_then(|b| b.as_m().ok())
                    .and_then(|m| m.get(day))
                    .and_then(|b| b.as_s().ok());
                if let Some(band) = band {
                    *out.entry(band.clone()).or_default() += 1;
                }
            }
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(out),
            }
        }
    }

    async fn put_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s("SNAPSHOT"))
            .item("sk", s(&snapshot.date))
            .item("doc", json_attr(snapshot)?)
            .item("mrr", n(snapshot.mrr))
            .item("currency", s(snapshot.currency.as_str()))
            .send()
            .await
            .map_err(ddb)?;
        Ok(())
    }

    async fn snapshots(&self, from: &str, to: &str) -> Result<Vec<Snapshot>> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
            .expression_attribute_values(":pk", s("SNAPSHOT"))
            .expression_attribute_values(":a", s(from))
            .expression_attribute_values(":b", s(to));
        query_all(query)
            .await?
            .iter()
            .map(|item| get_json(item, "doc", "metrics snapshot"))
            .collect()
    }
}

/// The in-memory fake.
#[derive(Debug, Default)]
pub struct MemoryRevenue {
    states: Mutex<BTreeMap<String, RevenueState>>,
    snapshots: Mutex<BTreeMap<String, Snapshot>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryRevenue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every customer's state (tests).
    pub fn all(&self) -> Vec<RevenueState> {
        lock(&self.states).values().cloned().collect()
    }
}

#[async_trait]
impl RevenueStore for MemoryRevenue {
    async fn load(&self, customer_id: &str) -> Result<Option<RevenueState>> {
        Ok(lock(&self.states).get(customer_id).cloned())
    }

    async fn save(&self, state: &RevenueState) -> Result<u64> {
        let mut map = lock(&self.states);
        if map.get(&state.customer_id).map_or(0, |s| s.version) != state.version {
            return Err(Error::Conflict(format!(
                "revenue state of {} changed meanwhile",
                state.customer_id
            )));
        }
        let mut next = state.clone();
        next.version += 1;
        map.insert(state.customer_id.clone(), next);
        Ok(state.version + 1)
    }

    async fn bands_on(&self, day: &str) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for s in lock(&self.states).values() {
            if let Some(d) = s.scores.get(day) {
                *out.entry(d.band.clone()).or_default() += 1;
            }
        }
        Ok(out)
    }

    async fn put_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        lock(&self.snapshots).insert(snapshot.date.clone(), snapshot.clone());
        Ok(())
    }

    async fn snapshots(&self, from: &str, to: &str) -> Result<Vec<Snapshot>> {
        Ok(lock(&self.snapshots)
            .range(from.to_owned()..=to.to_owned())
            .map(|(_, s)| s.clone())
            .collect())
    }
}
