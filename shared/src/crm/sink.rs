//! The built-in CRM sink: the CrmTable (`pk = {OBJECT}#{id}`, `sk = CRM`) plus one JSON-lines
//! export object per record (`crm/{objects}/{id}.jsonl` in the artifacts bucket). Personal
//! contact data is never stored here (see [`super`]).
//!
//! A lead conversion and an account's health are no records of their own: they are attributes
//! on the lead's and the account's item (`lead_status`, `converted_account`; `health_*`), next
//! to the record and never part of it nor of its export line.

use super::{
    AccountHealth, ConsentChange, CrmError, CrmLead, CrmObject, CrmPort, CrmRecord, LeadConversion,
    Upserted,
};
use crate::aws::dynamo::{Item, get_json, get_n, get_s};
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
        Self::export_key_of(CrmObject::Lead, lead_id)
    }

    /// The stored CRM record of a lead and its revision (tests, tools).
    pub async fn get(&self, lead_id: &str) -> Result<Option<(CrmLead, u64)>> {
        self.read(CrmObject::Lead, lead_id).await
    }

    /// The stored JSON of any record and its revision (tests, tools, the demo).
    pub async fn get_object(
        &self,
        object: CrmObject,
        external_id: &str,
    ) -> Result<Option<(serde_json::Value, u64)>> {
        self.read(object, external_id).await
    }

    /// The account a lead was converted into, if it was.
    pub async fn conversion(&self, lead_id: &str) -> Result<Option<String>> {
        Ok(self
            .item(CrmObject::Lead, lead_id)
            .await?
            .and_then(|i| get_s(&i, "converted_account")))
    }

    /// The latest health stored on an account's item, whether or not the account itself has
    /// arrived.
    pub async fn health(&self, account_external_id: &str) -> Result<Option<AccountHealth>> {
        let Some(item) = self.item(CrmObject::Account, account_external_id).await? else {
            return Ok(None);
        };
        let Some(band) = get_s(&item, "health_band") else {
            return Ok(None);
        };
        Ok(Some(AccountHealth {
            account_external_id: account_external_id.to_owned(),
            score: get_n(&item, "health_score"),
            band,
            reasons: get_s(&item, "health_reasons").unwrap_or_default(),
            scored_on: get_s(&item, "health_scored_on").unwrap_or_default(),
            active_users: get_n(&item, "health_active_users"),
            licensed_seats: get_n(&item, "health_licensed_seats"),
            usage_summary: get_s(&item, "health_usage_summary").unwrap_or_default(),
        }))
    }

    async fn item(&self, object: CrmObject, external_id: &str) -> Result<Option<Item>> {
        crate::aws::dynamo::get_item(
            &self.dynamodb,
            &self.table,
            Self::record_key(object, external_id),
            Some("CRM"),
        )
        .await
    }

    /// A record and its revision. An item without a record is no record yet: a conversion
    /// can reach a lead's item before the lead itself does.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        object: CrmObject,
        external_id: &str,
    ) -> Result<Option<(T, u64)>> {
        let Some(item) = self.item(object, external_id).await? else {
            return Ok(None);
        };
        if !item.contains_key("record") {
            return Ok(None);
        }
        let record = get_json(&item, "record", &format!("CRM record {external_id}"))?;
        Ok(Some((record, get_n(&item, "revision").unwrap_or(0))))
    }

    /// A lead converted: its status and account, on the lead's item. The lead's own record is
    /// left as it is; when the lead has not arrived yet, its later upsert keeps these two
    /// attributes (it updates, never replaces, the item), so the order does not matter.
    async fn convert(&self, c: &LeadConversion) -> std::result::Result<Upserted, CrmError> {
        let key = Self::record_key(CrmObject::Lead, &c.lead_id);
        let res = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.clone()))
            .key("sk", AttributeValue::S("CRM".into()))
            .update_expression("SET lead_status = :st, converted_account = :acc")
            .expression_attribute_values(":st", AttributeValue::S("Converted".into()))
            .expression_attribute_values(":acc", AttributeValue::S(c.account_external_id.clone()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Upserted {
                record_id: Some(key),
                created: false,
            }),
            Err(e) => Err(CrmError::Store(Error::aws("dynamodb", e))),
        }
    }

    /// An account's health: its `health_*` attributes on the account's item, set with one
    /// update that leaves the account's record and attributes alone (an absent value removes
    /// A person's opt-out onto their lead or contact: only when the record is there (an
    /// opt-out does not create a record).
    async fn consent(&self, c: &ConsentChange) -> std::result::Result<Upserted, CrmError> {
        let key = Self::record_key(c.object, &c.external_id);
        let res = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.clone()))
            .key("sk", AttributeValue::S("CRM".into()))
            .update_expression("SET opted_out = :o")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":o", AttributeValue::Bool(c.opted_out))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Upserted {
                record_id: Some(key),
                created: false,
            }),
            Err(e) if crate::aws::dynamo::is_conditional_check_failed(&e) => Ok(Upserted {
                record_id: None,
                created: false,
            }),
            Err(e) => Err(CrmError::Store(Error::aws("dynamodb", e))),
        }
    }

    /// its attribute, so no stale score stays). Health arriving before its account makes an
    /// item without a record, which reads as no account yet; the account's later upsert keeps
    /// these attributes (it updates, never replaces, the item).
    async fn score(&self, h: &AccountHealth) -> std::result::Result<Upserted, CrmError> {
        let key = Self::record_key(CrmObject::Account, &h.account_external_id);
        let s = |v: &str| Some(AttributeValue::S(v.to_owned()));
        let n = |v: Option<u64>| v.map(|v| AttributeValue::N(v.to_string()));
        let attrs: [(&str, Option<AttributeValue>); 7] = [
            ("health_score", n(h.score.map(u64::from))),
            ("health_band", s(&h.band)),
            ("health_reasons", s(&h.reasons)),
            ("health_scored_on", s(&h.scored_on)),
            ("health_active_users", n(h.active_users)),
            ("health_licensed_seats", n(h.licensed_seats.map(u64::from))),
            ("health_usage_summary", s(&h.usage_summary)),
        ];
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut update = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.clone()))
            .key("sk", AttributeValue::S("CRM".into()));
        for (name, value) in attrs {
            update = update.expression_attribute_names(format!("#{name}"), name);
            match value {
                Some(v) => {
                    set.push(format!("#{name} = :{name}"));
                    update = update.expression_attribute_values(format!(":{name}"), v);
                }
                None => remove.push(format!("#{name}")),
            }
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        match update.update_expression(expression).send().await {
            Ok(_) => Ok(Upserted {
                record_id: Some(key),
                created: false,
            }),
            Err(e) => Err(CrmError::Store(Error::aws("dynamodb", e))),
        }
    }
}

/// Named attributes written beside a record's JSON.
type Attributes = Vec<(&'static str, AttributeValue)>;

/// What the sink stores of a record (never contact data) and the attributes it indexes.
fn stored(record: &CrmRecord) -> std::result::Result<(String, Attributes), CrmError> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let (json, attrs) = match record {
        CrmRecord::Lead(lead) => (
            serde_json::to_string(&lead.without_contact_data()),
            vec![
                ("owner_id", s(&lead.owner_id)),
                ("grade", s(&lead.grade)),
                ("score", AttributeValue::N(lead.score.to_string())),
                (
                    "needs_enrichment",
                    AttributeValue::Bool(lead.needs_enrichment),
                ),
            ],
        ),
        CrmRecord::Account(a) => (
            serde_json::to_string(a),
            vec![
                ("owner_id", s(&a.owner_id)),
                ("status", s(a.status.as_str())),
            ],
        ),
        CrmRecord::Contact(c) => (
            serde_json::to_string(&c.without_contact_data()),
            vec![("account", s(&c.account_external_id))],
        ),
        CrmRecord::Opportunity(o) => (
            serde_json::to_string(o),
            vec![
                ("account", s(&o.account_external_id)),
                ("stage", s(o.stage.as_str())),
            ],
        ),
        CrmRecord::Task(t) => (
            serde_json::to_string(t),
            vec![
                ("account", s(&t.account_external_id)),
                ("owner_id", s(&t.owner_id)),
                ("due_date", s(&t.due_date)),
            ],
        ),
        CrmRecord::LeadConversion(_) => {
            return Err(CrmError::Unexpected("a conversion is not a record".into()));
        }
        CrmRecord::AccountHealth(_) | CrmRecord::Consent(_) => {
            return Err(CrmError::Unexpected(format!(
                "{} writes onto a record; it is not one",
                record.key()
            )));
        }
    };
    Ok((
        json.map_err(|e| CrmError::Unexpected(e.to_string()))?,
        attrs,
    ))
}

#[async_trait]
impl CrmPort for SinkCrm {
    async fn erase(
        &self,
        object: CrmObject,
        external_id: &str,
    ) -> std::result::Result<bool, CrmError> {
        let out = self
            .dynamodb
            .delete_item()
            .table_name(&self.table)
            .key(
                "pk",
                AttributeValue::S(Self::record_key(object, external_id)),
            )
            .key("sk", AttributeValue::S("CRM".into()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| CrmError::from(Error::aws("dynamodb", e)))?;
        // The export object too, every version of it.
        self.store
            .erase_all_versions(&Self::export_key_of(object, external_id))
            .await
            .map_err(CrmError::from)?;
        Ok(out.attributes.is_some())
    }

    async fn fetch(
        &self,
        object: CrmObject,
        external_id: &str,
    ) -> std::result::Result<Option<serde_json::Value>, CrmError> {
        let item = crate::aws::dynamo::get_item(
            &self.dynamodb,
            &self.table,
            Self::record_key(object, external_id),
            Some("CRM"),
        )
        .await
        .map_err(CrmError::Store)?;
        Ok(item.map(|i| crate::aws::dynamo::item_to_json(&i)))
    }

    async fn upsert(&self, record: &CrmRecord) -> std::result::Result<Upserted, CrmError> {
        match record {
            CrmRecord::LeadConversion(c) => return self.convert(c).await,
            CrmRecord::AccountHealth(h) => return self.score(h).await,
            CrmRecord::Consent(c) => return self.consent(c).await,
            _ => {}
        }
        let key = Self::record_key(record.object(), record.external_id());
        let (json, attrs) = stored(record)?;
        let now = chrono::Utc::now().to_rfc3339();
        let mut set = vec![
            "#rec = :rec".to_owned(),
            "updated_at = :now".to_owned(),
            "created_at = if_not_exists(created_at, :now)".to_owned(),
        ];
        let mut update = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.clone()))
            .key("sk", AttributeValue::S("CRM".into()))
            .expression_attribute_names("#rec", "record")
            .expression_attribute_values(":rec", AttributeValue::S(json.clone()))
            .expression_attribute_values(":now", AttributeValue::S(now))
            .expression_attribute_values(":one", AttributeValue::N("1".into()));
        for (name, value) in attrs {
            // Names through placeholders: `status` and others are reserved words.
            set.push(format!("#{name} = :{name}"));
            update = update
                .expression_attribute_names(format!("#{name}"), name)
                .expression_attribute_values(format!(":{name}"), value);
        }
        let out = update
            .update_expression(format!("SET {} ADD revision :one", set.join(", ")))
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
