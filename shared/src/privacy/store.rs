//! Where privacy requests are kept: [`DynamoRequests`] on the PrivacyTable, [`MemoryRequests`]
//! for unit tests.
//!
//! PrivacyTable items (besides the subject index's):
//! - `REQUEST#<id>` / `REQUEST`: the record (`doc` JSON, `version`, `status`). Kept after the
//!   request closes: it is the proof of what was done.
//! - `OPEN` / `<subject>#<kind>`: the open request of that kind for that person
//!   (`request_id`). One per (person, kind), so a request repeated while one is open is the
//!   same request; the daily sweep reads this partition. Deleted when the request closes.

use super::request::{PrivacyRequest, RequestKind};
use crate::aws::dynamo::{get_json, get_n, get_s, json_attr, n, s};
use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The requests port.
#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Stores `request` as new, unless the same person has one of the same kind open (that
    /// one is returned) or a request with this id exists (returned as it stands). The flag
    /// says whether `request` was stored.
    async fn open(&self, request: &PrivacyRequest) -> Result<(PrivacyRequest, u64, bool)>;
    /// A request and its version.
    async fn get(&self, id: &str) -> Result<Option<(PrivacyRequest, u64)>>;
    /// Saves `request` as version `version + 1` if the stored one is still `version`, else
    /// [`Error::Conflict`]. A closed request leaves the open partition.
    async fn save(&self, request: &PrivacyRequest, version: u64) -> Result<u64>;
    /// Every open request.
    async fn open_requests(&self) -> Result<Vec<(PrivacyRequest, u64)>>;
}

fn kind_str(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Access => "access",
        RequestKind::Erasure => "erasure",
        RequestKind::OptOut => "opt_out",
    }
}

fn open_sk(r: &PrivacyRequest) -> String {
    format!("{}#{}", r.subject, kind_str(r.kind))
}

fn request_pk(id: &str) -> String {
    format!("REQUEST#{id}")
}

/// The DynamoDB adapter.
#[derive(Debug, Clone)]
pub struct DynamoRequests {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoRequests {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The record's put, on `condition` (`None`: only when it does not exist yet; `Some(v)`:
    /// only over version `v`).
    fn put_request(&self, r: &PrivacyRequest, version: u64, over: Option<u64>) -> Result<Put> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(request_pk(&r.id)))
            .item("sk", s("REQUEST"))
            .item("doc", json_attr(r)?)
            .item("version", n(version))
            .item("status", json_attr(&r.status)?);
        let put = match over {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(v) => put
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(v)),
        };
        put.build()
            .map_err(|e| Error::Invalid(format!("request item: {e}")))
    }
}

#[async_trait]
impl RequestStore for DynamoRequests {
    async fn open(&self, request: &PrivacyRequest) -> Result<(PrivacyRequest, u64, bool)> {
        if let Some((r, v)) = self.get(&request.id).await? {
            return Ok((r, v, false));
        }
        let marker = Put::builder()
            .table_name(&self.table)
            .item("pk", s("OPEN"))
            .item("sk", s(open_sk(request)))
            .item("request_id", s(&request.id))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| Error::Invalid(format!("open marker: {e}")))?;
        let record = self.put_request(request, 1, None)?;
        let out = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(marker).build())
            .transact_items(TransactWriteItem::builder().put(record).build())
            .send()
            .await;
        match out {
            Ok(_) => Ok((request.clone(), 1, true)),
            Err(e) if crate::aws::dynamo::cancelled_by_condition(&e) == Some(true) => {
                // Either this id was stored meanwhile, or the person has one open already.
                if let Some((r, v)) = self.get(&request.id).await? {
                    return Ok((r, v, false));
                }
                let open = crate::aws::dynamo::get_item(
                    &self.client,
                    &self.table,
                    "OPEN".to_owned(),
                    Some(&open_sk(request)),
                )
                .await?;
                let id = open
                    .as_ref()
                    .and_then(|i| get_s(i, "request_id"))
                    .ok_or_else(|| Error::Conflict("privacy request opened concurrently".into()))?;
                let (r, v) = self.get(&id).await?.ok_or_else(|| {
                    Error::Conflict(format!("open request {id} is not stored yet"))
                })?;
                Ok((r, v, false))
            }
            Err(e) => Err(Error::aws("dynamodb", e)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<(PrivacyRequest, u64)>> {
        let item = crate::aws::dynamo::get_item(
            &self.client,
            &self.table,
            request_pk(id),
            Some("REQUEST"),
        )
        .await?;
        item.map(|i| {
            let r: PrivacyRequest = get_json(&i, "doc", "privacy request")?;
            Ok((r, get_n(&i, "version").unwrap_or(0)))
        })
        .transpose()
    }

    async fn save(&self, request: &PrivacyRequest, version: u64) -> Result<u64> {
        let next = version + 1;
        let put = self.put_request(request, next, Some(version))?;
        let mut tx = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build());
        if request.status.is_closed() {
            let delete = aws_sdk_dynamodb::types::Delete::builder()
                .table_name(&self.table)
                .key("pk", s("OPEN"))
                .key("sk", s(open_sk(request)))
                .build()
                .map_err(|e| Error::Invalid(format!("open marker: {e}")))?;
            tx = tx.transact_items(TransactWriteItem::builder().delete(delete).build());
        }
        match tx.send().await {
            Ok(_) => Ok(next),
            Err(e) if crate::aws::dynamo::cancelled_by_condition(&e) == Some(true) => Err(
                Error::Conflict(format!("privacy request {} changed meanwhile", request.id)),
            ),
            Err(e) => Err(Error::aws("dynamodb", e)),
        }
    }

    async fn open_requests(&self) -> Result<Vec<(PrivacyRequest, u64)>> {
        let markers = crate::aws::dynamo::query_all(
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s("OPEN")),
        )
        .await?;
        let mut out = Vec::with_capacity(markers.len());
        for m in &markers {
            if let Some(id) = get_s(m, "request_id")
                && let Some(r) = self.get(&id).await?
            {
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// Requests by id with their versions, and the open markers (`subject#kind` -> id).
type MemoryTables = (
    BTreeMap<String, (PrivacyRequest, u64)>,
    BTreeMap<String, String>,
);

/// In memory (unit tests).
#[derive(Debug, Default)]
pub struct MemoryRequests {
    inner: Mutex<MemoryTables>,
}

impl MemoryRequests {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RequestStore for MemoryRequests {
    async fn open(&self, request: &PrivacyRequest) -> Result<(PrivacyRequest, u64, bool)> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (requests, open) = &mut *g;
        if let Some((r, v)) = requests.get(&request.id) {
            return Ok((r.clone(), *v, false));
        }
        if let Some((r, v)) = open.get(&open_sk(request)).and_then(|id| requests.get(id)) {
            return Ok((r.clone(), *v, false));
        }
        open.insert(open_sk(request), request.id.clone());
        requests.insert(request.id.clone(), (request.clone(), 1));
        Ok((request.clone(), 1, true))
    }

    async fn get(&self, id: &str) -> Result<Option<(PrivacyRequest, u64)>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.0.get(id).cloned())
    }

    async fn save(&self, request: &PrivacyRequest, version: u64) -> Result<u64> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (requests, open) = &mut *g;
        match requests.get(&request.id) {
            Some((_, v)) if *v == version => {}
            _ => {
                return Err(Error::Conflict(format!(
                    "privacy request {} changed meanwhile",
                    request.id
                )));
            }
        }
        requests.insert(request.id.clone(), (request.clone(), version + 1));
        if request.status.is_closed() {
            open.remove(&open_sk(request));
        }
        Ok(version + 1)
    }

    async fn open_requests(&self) -> Result<Vec<(PrivacyRequest, u64)>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.1.values().filter_map(|id| g.0.get(id).cloned()).collect())
    }
}
