//! The in-memory CRM for tests and benchmarks: the latest record per (object, external id),
//! with how many upserts each received, lead conversions, account health, and failure
//! injection.

use super::{
    AccountHealth, CrmAccount, CrmContact, CrmError, CrmLead, CrmObject, CrmOpportunity, CrmPort,
    CrmRecord, CrmTask, Upserted,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<(CrmObject, String), (CrmRecord, u64)>,
    /// Lead id -> account external id.
    conversions: BTreeMap<String, String>,
    /// Account external id -> its latest health (beside the account, never replacing it).
    health: BTreeMap<String, AccountHealth>,
    consents: BTreeMap<(CrmObject, String), bool>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct MemoryCrm {
    state: Mutex<State>,
    failing: AtomicBool,
    calls: AtomicU64,
    writes: AtomicU64,
}

impl MemoryCrm {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every upsert fail with a retryable error (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The record of a lead and how many upserts it received.
    pub fn get(&self, lead_id: &str) -> Option<(CrmLead, u64)> {
        match self
            .lock()
            .records
            .get(&(CrmObject::Lead, lead_id.to_owned()))
        {
            Some((CrmRecord::Lead(l), n)) => Some((l.clone(), *n)),
            _ => None,
        }
    }

    /// Removes a record (what an erasure does); whether there was one.
    pub fn remove(&self, object: CrmObject, external_id: &str) -> bool {
        self.lock()
            .records
            .remove(&(object, external_id.to_owned()))
            .is_some()
    }

    /// Number of distinct lead records.
    pub fn len(&self) -> usize {
        self.all().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All lead records.
    pub fn all(&self) -> Vec<CrmLead> {
        self.lock()
            .records
            .values()
            .filter_map(|(r, _)| match r {
                CrmRecord::Lead(l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    /// An account and how many upserts it received.
    pub fn account(&self, external_id: &str) -> Option<(CrmAccount, u64)> {
        match self
            .lock()
            .records
            .get(&(CrmObject::Account, external_id.to_owned()))
        {
            Some((CrmRecord::Account(a), n)) => Some((a.clone(), *n)),
            _ => None,
        }
    }

    /// Every account.
    pub fn accounts(&self) -> Vec<CrmAccount> {
        self.lock()
            .records
            .values()
            .filter_map(|(r, _)| match r {
                CrmRecord::Account(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every contact.
    pub fn contacts(&self) -> Vec<CrmContact> {
        self.lock()
            .records
            .values()
            .filter_map(|(r, _)| match r {
                CrmRecord::Contact(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every opportunity.
    pub fn opportunities(&self) -> Vec<CrmOpportunity> {
        self.lock()
            .records
            .values()
            .filter_map(|(r, _)| match r {
                CrmRecord::Opportunity(o) => Some(o.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every task.
    pub fn tasks(&self) -> Vec<CrmTask> {
        self.lock()
            .records
            .values()
            .filter_map(|(r, _)| match r {
                CrmRecord::Task(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// The opt-out last written onto a lead or contact by a consent change.
    pub fn opted_out(&self, object: CrmObject, external_id: &str) -> Option<bool> {
        self.lock()
            .consents
            .get(&(object, external_id.to_owned()))
            .copied()
    }

    /// The latest health written onto an account (whether or not the account is there).
    pub fn health(&self, account_external_id: &str) -> Option<AccountHealth> {
        self.lock().health.get(account_external_id).cloned()
    }

    /// The account a lead was converted into.
    pub fn conversion(&self, lead_id: &str) -> Option<String> {
        self.lock().conversions.get(lead_id).cloned()
    }

    /// `upsert` / `upsert_all` calls so far (a Salesforce request each).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Records written so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn write(&self, record: &CrmRecord) -> std::result::Result<Upserted, CrmError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(CrmError::Unavailable("CRM down (simulated)".into()));
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        match record {
            CrmRecord::LeadConversion(c) => {
                let created = s
                    .conversions
                    .insert(c.lead_id.clone(), c.account_external_id.clone())
                    .is_none();
                return Ok(Upserted {
                    record_id: Some(c.lead_id.clone()),
                    created,
                });
            }
            CrmRecord::Consent(c) => {
                let key = (c.object, c.external_id.clone());
                let there = s.records.contains_key(&key);
                if there {
                    s.consents.insert(key, c.opted_out);
                }
                return Ok(Upserted {
                    record_id: there.then(|| c.external_id.clone()),
                    created: false,
                });
            }
            CrmRecord::AccountHealth(h) => {
                let created = s
                    .health
                    .insert(h.account_external_id.clone(), h.clone())
                    .is_none();
                return Ok(Upserted {
                    record_id: Some(h.account_external_id.clone()),
                    created,
                });
            }
            _ => {}
        }
        let key = (record.object(), record.external_id().to_owned());
        let entry = s.records.entry(key).or_insert_with(|| (record.clone(), 0));
        entry.0 = record.clone();
        entry.1 += 1;
        Ok(Upserted {
            record_id: Some(record.external_id().to_owned()),
            created: entry.1 == 1,
        })
    }
}

#[async_trait]
impl CrmPort for MemoryCrm {
    async fn erase(&self, object: CrmObject, external_id: &str) -> Result<bool, CrmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.remove(object, external_id))
    }

    async fn upsert(&self, record: &CrmRecord) -> std::result::Result<Upserted, CrmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.write(record)
    }

    async fn fetch(
        &self,
        object: CrmObject,
        external_id: &str,
    ) -> Result<Option<serde_json::Value>, CrmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let s = self.lock();
        let Some((record, _)) = s.records.get(&(object, external_id.to_owned())) else {
            return Ok(None);
        };
        let mut v = match record {
            CrmRecord::Lead(l) => serde_json::to_value(l),
            CrmRecord::Account(a) => serde_json::to_value(a),
            CrmRecord::Contact(c) => serde_json::to_value(c),
            CrmRecord::Opportunity(o) => serde_json::to_value(o),
            CrmRecord::Task(t) => serde_json::to_value(t),
            _ => Ok(serde_json::Value::Null),
        }
        .map_err(|e| CrmError::Unexpected(e.to_string()))?;
        if let (Some(o), Some(m)) = (
            s.consents.get(&(object, external_id.to_owned())),
            v.as_object_mut(),
        ) {
            m.insert("opted_out".into(), serde_json::json!(o));
        }
        Ok(Some(v))
    }

    async fn upsert_all(
        &self,
        records: &[CrmRecord],
    ) -> std::result::Result<Vec<Upserted>, CrmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        records.iter().map(|r| self.write(r)).collect()
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
