//! What lead-enrichment's tests and benches share, so each test reads as its scenario: the app
//! on in-memory ports, SQS batches and the committed samples.

#![allow(dead_code, clippy::unwrap_used)] // helpers; a panic is the failure report

use aws_lambda_events::event::sqs::SqsEvent;
use blapi::crm::MemoryCrm;
use blapi::leads::Config;
use blapi::leads::enrichment::{
    CacheTtl, Enricher, EnrichmentProvider, FixtureProvider, MemoryCache,
};
use blapi::leads::routing::{MemoryAccounts, MemoryCounter};
use blapi::leads::service::LeadPorts;
use blapi::leads::store::MemoryLeadStore;
use blapi::ledger::MemoryLedger;
use blapi::storage::MemoryStore;
use lambda_runtime::{Context, LambdaEvent};
use lead_enrichment::{App, Ports};
use std::sync::Arc;

/// The app on fakes, and the fakes a test looks into.
pub struct Fakes {
    pub app: App,
    pub crm: Arc<MemoryCrm>,
    pub accounts: Arc<MemoryAccounts>,
    pub leads: Arc<MemoryLeadStore>,
    /// The subject index and tombstones the app checks.
    pub subjects: blapi::subjects::Subjects,
}

/// A configuration for apps on fakes (the resources it names are never reached).
pub fn fake_config() -> Config {
    Config::from_env(&blapi::config::Env::from_map([
        ("LEADS_TABLE", "leads"),
        ("PRIVACY_TABLE", "privacy"),
        ("PRIVACY_KEY_SECRET_ID", "privacy-key"),
        ("CRM_TABLE", "crm"),
        ("LEDGER_TABLE", "ledger"),
        ("ARTIFACTS_BUCKET", "artifacts"),
        ("ENRICHMENT_API_BASE", "fixture:"),
    ]))
    .unwrap()
}

/// The app with the bundled rules on in-memory ports and `provider`.
pub fn fakes(provider: Arc<dyn EnrichmentProvider>) -> Fakes {
    let crm = Arc::new(MemoryCrm::new());
    let accounts = Arc::new(MemoryAccounts::new());
    let leads = Arc::new(MemoryLeadStore::new());
    let subjects = blapi::subjects::Subjects::for_tests();
    let ports = LeadPorts {
        store: leads.clone(),
        accounts: accounts.clone(),
        counter: Arc::new(MemoryCounter::new()),
        enricher: Enricher::new(provider, Arc::new(MemoryCache::new()), CacheTtl::default()),
        crm: crm.clone(),
        ledger: Arc::new(MemoryLedger::new()),
        subjects: subjects.clone(),
    };
    let ports = Ports {
        leads: ports,
        store: Arc::new(MemoryStore::new()),
    };
    Fakes {
        app: App::new(fake_config(), ports).unwrap(),
        crm,
        accounts,
        leads,
        subjects,
    }
}

/// [`fakes`] with the bundled enrichment fixture.
pub fn fixture_fakes() -> Fakes {
    fakes(Arc::new(FixtureProvider::bundled().unwrap()))
}

/// An SQS batch of (message id, body).
pub fn batch<I: Into<String>, B: Into<String>>(records: Vec<(I, B)>) -> LambdaEvent<SqsEvent> {
    LambdaEvent::new(blapi_infra::testing::sqs_batch(records), Context::default())
}

/// A committed sample of `events/lead-enrichment/`.
pub fn sample(name: &str) -> SqsEvent {
    let path = format!(
        "{}/../../events/lead-enrichment/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
