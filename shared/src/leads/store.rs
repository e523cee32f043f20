//! The LeadsTable: the one table holding lead personal data, plus the enrichment cache,
//! accounts by domain and the round-robin counters.
//!
//! Items (`pk` / `sk`):
//! - `SUBJECT#<subject id>` / `SUBJECT`: `lead_id` — the person's lead. Written with a
//!   conditional put, so two events of one person (even concurrent) agree on one lead id.
//! - `LEAD#<id>` / `PROFILE`: the [`LeadRecord`] (JSON in `record`; email, names, phone, title
//!   only here), with `gsi1pk = SUBJECT#<subject id>` (the keyed hash of [`crate::subjects`]), `gsi1sk = LEAD#<id>`: erasing a
//!   subject is a gsi1 query + deletes ([`LeadStore::erase_subject`]).
//! - `DOMAIN#<domain>` / `ENRICHMENT`: the cached provider answer, `expires_at` (TTL, epoch s).
//! - `DOMAIN#<domain>` / `ACCOUNT`: an existing customer (`account_id`, `name`, `owner_id`);
//!   seeded from the CRM/billing side ([`DynamoLeadsTable::put_account`]).
//! - `COUNTER#<team>` / `RR`: `n`, advanced by `UpdateItem ADD n 1` (atomic).

use super::domains::DomainClass;
use super::enrichment::{CachedLookup, Company, EnrichmentCache};
use super::input::{LeadId, LeadSource, Person};
use super::normalize::Email;
use super::routing::{Account, AccountDirectory, Route, SlotCounter};
use super::scoring::Score;
use crate::aws::dynamo::{get_s, is_conditional_check_failed as is_conditional_failure, s};
use crate::error::{Error, Result};
use crate::subjects::{SubjectId, SubjectKey};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// Everything we keep about a lead (personal data included: this is its only home).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadRecord {
    pub lead_id: LeadId,
    #[serde(flatten)]
    pub person: Person,
    pub sources: BTreeSet<LeadSource>,
    /// The events that described this lead (source:id), most recent last, at most 20.
    pub events: Vec<String>,
    pub stripe_customer: Option<String>,
    pub domain: String,
    pub domain_class: DomainClass,
    pub company_info: Option<Company>,
    pub needs_enrichment: bool,
    pub score: Score,
    pub route: Route,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// The lead records port.
#[async_trait]
pub trait LeadStore: Send + Sync {
    /// The lead id of the person with this e-mail: the stored one, else `candidate` (stored now).
    async fn lead_id_for_subject(&self, email: &Email, candidate: &LeadId) -> Result<LeadId>;
    /// The lead id of the person with this e-mail, if there is a lead (nothing is stored).
    async fn find_subject(&self, email: &Email) -> Result<Option<LeadId>>;
    async fn get(&self, id: &LeadId) -> Result<Option<LeadRecord>>;
    async fn put(&self, record: &LeadRecord) -> Result<()>;
    /// Deletes every lead record of the person and the subject item; returns how many lead
    /// records were deleted. (For the privacy process.)
    async fn erase_subject(&self, subject: &SubjectId) -> Result<usize>;
}

fn subject_pk(key: &SubjectKey, email: &Email) -> String {
    format!("SUBJECT#{}", key.subject(email))
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The DynamoDB adapter of every LeadsTable port.
#[derive(Debug, Clone)]
pub struct DynamoLeadsTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// Subject items are keyed by the keyed hash of the email.
    key: SubjectKey,
}

impl DynamoLeadsTable {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        key: SubjectKey,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            key,
        }
    }

    async fn get_item(
        &self,
        pk: String,
        sk: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>> {
        crate::aws::dynamo::get_item(&self.client, &self.table, pk, Some(sk)).await
    }

    /// The current value of a team's counter (tests, tools).
    pub async fn counter_value(&self, counter: &str) -> Result<u64> {
        Ok(self
            .get_item(format!("COUNTER#{counter}"), "RR")
            .await?
            .and_then(|i| {
                i.get("n")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0))
    }
}

#[async_trait]
impl LeadStore for DynamoLeadsTable {
    async fn lead_id_for_subject(&self, email: &Email, candidate: &LeadId) -> Result<LeadId> {
        let pk = subject_pk(&self.key, email);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&pk))
            .item("sk", s("SUBJECT"))
            .item("lead_id", s(candidate.as_str()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(candidate.clone()),
            Err(e) if is_conditional_failure(&e) => {
                let item = self
                    .get_item(pk, "SUBJECT")
                    .await?
                    .ok_or_else(|| Error::InProgress("subject item erased concurrently".into()))?;
                let id = get_s(&item, "lead_id")
                    .ok_or_else(|| Error::Invalid("subject item without lead_id".into()))?;
                Ok(LeadId::from_stored(id.clone()))
            }
            Err(e) => Err(Error::aws("dynamodb", e)),
        }
    }

    async fn find_subject(&self, email: &Email) -> Result<Option<LeadId>> {
        Ok(self
            .get_item(subject_pk(&self.key, email), "SUBJECT")
            .await?
            .and_then(|i| get_s(&i, "lead_id"))
            .map(LeadId::from_stored))
    }

    async fn get(&self, id: &LeadId) -> Result<Option<LeadRecord>> {
        let Some(item) = self.get_item(format!("LEAD#{id}"), "PROFILE").await? else {
            return Ok(None);
        };
        let rec = get_s(&item, "record")
            .ok_or_else(|| Error::Invalid(format!("lead {id} has no record")))?;
        serde_json::from_str(&rec).map(Some).map_err(|e| {
            Error::Invalid(format!(
                "lead {id} record is unreadable: {}",
                crate::error::json_error(&e)
            ))
        })
    }

    async fn put(&self, r: &LeadRecord) -> Result<()> {
        let json =
            serde_json::to_string(r).map_err(|e| Error::Invalid(format!("lead record: {e}")))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("LEAD#{}", r.lead_id)))
            .item("sk", s("PROFILE"))
            .item("gsi1pk", s(subject_pk(&self.key, &r.person.email)))
            .item("gsi1sk", s(format!("LEAD#{}", r.lead_id)))
            .item("record", s(json))
            .item("owner_id", s(&r.route.owner_id))
            .item("grade", s(&r.score.grade))
            .item("needs_enrichment", AttributeValue::Bool(r.needs_enrichment))
            .item("updated_at", s(r.updated_at.to_rfc3339()))
            .send()
            .await
            .map_err(|e| Error::aws("dynamodb", e))?;
        Ok(())
    }

    async fn erase_subject(&self, subject: &SubjectId) -> Result<usize> {
        let subject = format!("SUBJECT#{subject}");
        let mut deleted = 0;
        let items = crate::aws::dynamo::query_all(
            self.client
                .query()
                .table_name(&self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :s")
                .expression_attribute_values(":s", s(&subject)),
        )
        .await?;
        for item in &items {
            let (Some(pk), Some(sk)) = (get_s(item, "pk"), get_s(item, "sk")) else {
                continue;
            };
            self.client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(pk))
                .key("sk", s(sk))
                .send()
                .await
                .map_err(|e| Error::aws("dynamodb", e))?;
            deleted += 1;
        }
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(subject))
            .key("sk", s("SUBJECT"))
            .send()
            .await
            .map_err(|e| Error::aws("dynamodb", e))?;
        Ok(deleted)
    }
}

#[async_trait]
impl EnrichmentCache for DynamoLeadsTable {
    async fn get(&self, domain: &str) -> Result<Option<CachedLookup>> {
        let Some(item) = self
            .get_item(format!("DOMAIN#{domain}"), "ENRICHMENT")
            .await?
        else {
            return Ok(None);
        };
        // DynamoDB deletes expired items lazily (up to days later): check the TTL ourselves.
        let expires = item
            .get("expires_at")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0);
        if expires <= now_s() {
            return Ok(None);
        }
        let entry = get_s(&item, "entry")
            .ok_or_else(|| Error::Invalid("cache item without entry".into()))?;
        Ok(serde_json::from_str(&entry).ok())
    }

    async fn put(&self, domain: &str, entry: &CachedLookup, ttl: Duration) -> Result<()> {
        let json = serde_json::to_string(entry)
            .map_err(|e| Error::Invalid(format!("cache entry: {e}")))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("DOMAIN#{domain}")))
            .item("sk", s("ENRICHMENT"))
            .item("entry", s(json))
            .item("fetched_at", s(chrono::Utc::now().to_rfc3339()))
            .item(
                "expires_at",
                AttributeValue::N((now_s() + ttl.as_secs() as i64).to_string()),
            )
            .send()
            .await
            .map_err(|e| Error::aws("dynamodb", e))?;
        Ok(())
    }
}

#[async_trait]
impl AccountDirectory for DynamoLeadsTable {
    async fn account_for_domain(&self, domain: &str) -> Result<Option<Account>> {
        let Some(item) = self.get_item(format!("DOMAIN#{domain}"), "ACCOUNT").await? else {
            return Ok(None);
        };
        let (Some(id), Some(owner)) = (get_s(&item, "account_id"), get_s(&item, "owner_id")) else {
            return Ok(None);
        };
        Ok(Some(Account {
            domain: domain.to_owned(),
            account_id: id.clone(),
            name: get_s(&item, "name").unwrap_or_default(),
            owner_id: owner.clone(),
        }))
    }

    async fn put_account(&self, account: &Account) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("DOMAIN#{}", account.domain.to_lowercase())))
            .item("sk", s("ACCOUNT"))
            .item("account_id", s(&account.account_id))
            .item("name", s(&account.name))
            .item("owner_id", s(&account.owner_id))
            .send()
            .await
            .map_err(|e| Error::aws("dynamodb", e))?;
        Ok(())
    }
}

#[async_trait]
impl SlotCounter for DynamoLeadsTable {
    async fn next(&self, counter: &str) -> Result<u64> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("COUNTER#{counter}")))
            .key("sk", s("RR"))
            .update_expression("ADD n :one")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| Error::aws("dynamodb", e))?;
        out.attributes()
            .and_then(|a| a.get("n"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::dependency("dynamodb", false, "counter update returned no value"))
    }
}

/// In-memory lead store (tests, benchmarks).
#[derive(Debug, Default)]
pub struct MemoryLeadStore {
    subjects: Mutex<HashMap<String, LeadId>>,
    leads: Mutex<HashMap<LeadId, LeadRecord>>,
}

impl MemoryLeadStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of lead records.
    pub fn len(&self) -> usize {
        self.leads.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl LeadStore for MemoryLeadStore {
    async fn lead_id_for_subject(&self, email: &Email, candidate: &LeadId) -> Result<LeadId> {
        Ok(self
            .subjects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(SubjectKey::for_tests().subject(email).to_string())
            .or_insert_with(|| candidate.clone())
            .clone())
    }

    async fn find_subject(&self, email: &Email) -> Result<Option<LeadId>> {
        Ok(self
            .subjects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&SubjectKey::for_tests().subject(email).to_string())
            .cloned())
    }

    async fn get(&self, id: &LeadId) -> Result<Option<LeadRecord>> {
        Ok(self
            .leads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned())
    }

    async fn put(&self, record: &LeadRecord) -> Result<()> {
        self.leads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.lead_id.clone(), record.clone());
        Ok(())
    }

    async fn erase_subject(&self, subject: &SubjectId) -> Result<usize> {
        self.subjects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(subject.as_str());
        let key = SubjectKey::for_tests();
        let mut leads = self.leads.lock().unwrap_or_else(|p| p.into_inner());
        let before = leads.len();
        leads.retain(|_, r| &key.subject(&r.person.email) != subject);
        Ok(before - leads.len())
    }
}
