//! The built-in CRM sink: the CrmTable (`pk = {OBJECT}#{id}`, `sk = CRM`) plus one JSON-lines
//! export object per record (`crm/{objects}/{id}.jsonl` in the artifacts bucket). Personal
//! contact data is never stored here (see [`super`]).

use super::{CrmError, CrmLead, CrmPort, CrmRecord, Upserted};
use crate::aws::dynamo::{get_json, get_n};
use crate::error::{Error, Result};
use crate::storage::ObjectStore;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use std::sync::Arc;

/// The built-in CRM sink: CrmTable + JSON-lines export in the artifacts bucket.
#[derive(Clone)]
pub struct SinkCrm {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for SinkCrm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkCrm")
            .field("table", &self.table)
            .finish()
    }
}

impl SinkCrm {
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        store: Arc<dyn ObjectStore>,
    ) -> Self {
        Self {
            dynamodb,
            table: table.into(),
            store,
        }
    }

    /// The table key of a record: `{OBJECT}#{external id}`.
    pub fn record_key(object: super::CrmObject, external_id: &str) -> String {
        format!("{}#{external_id}", object.sink_names().0)
    }

    /// The export key of a record: `crm/{objects}/{external id}.jsonl`.
    pub fn export_key_of(object: super::CrmObject, external_id: &str) -> String {
        format!("crm/{}/{external_id}.jsonl", object.sink_names().1)
    }

    /// The export key of a lead.
    pub fn export_key(lead_id: &str) -> String {
        Self::export_key_of(super::CrmObject::Lead, lead_id)
    }

    /// The stored CRM record of a lead (tests, tools).
    pub async fn get(&self, lead_id: &str) -> Result<Option<(CrmLead, u64)>> {
        let item = crate::aws::dynamo::get_item(
            &self.dynamodb,
            &self.table,
            Self::record_key(super::CrmObject::Lead, lead_id),
            Some("CRM"),
        )
        .await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let lead: CrmLead = get_json(&item, "record", &format!("CRM record of {lead_id}"))?;
        Ok(Some((lead, get_n(&item, "revision").unwrap_or(0))))
    }
}

#[async_trait]
impl CrmPort for SinkCrm {
    async fn upsert(&self, record: &CrmRecord) -> std::result::Result<Upserted, CrmError> {
        let CrmRecord::Lead(lead) = record;
        let key = Self::record_key(record.object(), record.external_id());
        let minimal = lead.without_contact_data();
        let json =
            serde_json::to_string(&minimal).map_err(|e| CrmError::Unexpected(e.to_string()))?;
        let now = chrono::Utc::now().to_rfc3339();
        let out = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.clone()))
            .key("sk", AttributeValue::S("CRM".into()))
            .update_expression(
                "SET #rec = :rec, owner_id = :owner, grade = :grade, score = :score, \
                 needs_enrichment = :ne, updated_at = :now, created_at = if_not_exists(created_at, :now) \
                 ADD revision :one",
            )
            .expression_attribute_names("#rec", "record")
            .expression_attribute_values(":rec", AttributeValue::S(json.clone()))
            .expression_attribute_values(":owner", AttributeValue::S(lead.owner_id.clone()))
            .expression_attribute_values(":grade", AttributeValue::S(lead.grade.clone()))
            .expression_attribute_values(":score", AttributeValue::N(lead.score.to_string()))
            .expression_attribute_values(":ne", AttributeValue::Bool(lead.needs_enrichment))
            .expression_attribute_values(":now", AttributeValue::S(now))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| CrmError::Store(Error::aws("dynamodb", e)))?;
        let revision: u64 = out
            .attributes()
            .and_then(|a| get_n(a, "revision"))
            .unwrap_or(1);
        self.store
            .put(
                &Self::export_key_of(record.object(), record.external_id()),
                format!("{json}\n").into_bytes(),
                "application/x-ndjson",
            )
            .await?;
        Ok(Upserted {
            record_id: Some(key),
            created: revision == 1,
        })
    }

    fn kind(&self) -> &'static str {
        "sink"
    }
}
