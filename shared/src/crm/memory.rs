//! The in-memory CRM for tests and benchmarks.

use super::{CrmError, CrmLead, CrmPort, CrmRecord, Upserted};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

/// In-memory CRM for tests and benchmarks: records by lead id with an upsert count.
#[derive(Debug, Default)]
pub struct MemoryCrm {
    records: Mutex<BTreeMap<String, (CrmLead, u64)>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemoryCrm {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every upsert fail with a retryable error (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The record of a lead and how many upserts it received.
    pub fn get(&self, lead_id: &str) -> Option<(CrmLead, u64)> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(lead_id)
            .cloned()
    }

    /// Number of distinct records.
    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All records.
    pub fn all(&self) -> Vec<CrmLead> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(l, _)| l.clone())
            .collect()
    }
}

#[async_trait]
impl CrmPort for MemoryCrm {
    async fn upsert(&self, record: &CrmRecord) -> std::result::Result<Upserted, CrmError> {
        let CrmRecord::Lead(lead) = record;
        if self.failing.load(Ordering::SeqCst) {
            return Err(CrmError::Unavailable("CRM down (simulated)".into()));
        }
        let mut map = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(lead.lead_id.clone())
            .or_insert_with(|| (lead.clone(), 0));
        entry.0 = lead.clone();
        entry.1 += 1;
        Ok(Upserted {
            record_id: Some(lead.lead_id.clone()),
            created: entry.1 == 1,
        })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
