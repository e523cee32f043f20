//! Logs carry the lead id, never the e-mail. A test binary of its own: `tracing` caches each
//! call site's interest process-wide, so a thread-local subscriber next to other tests running
//! without one would miss events at random.

// Test helpers outside #[test] fns unwrap too (clippy.toml allows it only inside them).
#![allow(clippy::unwrap_used)]

use aws_lambda_events::event::sqs::SqsEvent;
use blapi::crm::MemoryCrm;
use blapi::leads::enrichment::{CacheTtl, Enricher, MemoryCache, MemoryProvider};
use blapi::leads::routing::{MemoryAccounts, MemoryCounter};
use blapi::leads::service::LeadPorts;
use blapi::leads::store::MemoryLeadStore;
use blapi::ledger::MemoryLedger;
use blapi::storage::MemoryStore;
use lambda_runtime::{Context, LambdaEvent};
use lead_enrichment::{App, Ports};
use std::sync::{Arc, Mutex};

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_carry_the_lead_id_never_the_email() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let provider = Arc::new(MemoryProvider::new());
    provider.set_down(true); // the outage path logs too
    let ports = LeadPorts {
        store: Arc::new(MemoryLeadStore::new()),
        accounts: Arc::new(MemoryAccounts::new()),
        counter: Arc::new(MemoryCounter::new()),
        enricher: Enricher::new(provider, Arc::new(MemoryCache::new()), CacheTtl::default()),
        crm: Arc::new(MemoryCrm::new()),
        ledger: Arc::new(MemoryLedger::new()),
    };
    let app = App::new(
        fake_config(),
        Ports {
            leads: ports,
            store: Arc::new(MemoryStore::new()),
        },
    )
    .unwrap();
    let path = format!(
        "{}/../../events/lead-enrichment/batch-mixed.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let event: SqsEvent = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let resp = app
        .handle(LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    assert_eq!(resp.batch_item_failures.len(), 2);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("lead_id=ld_"), "{logs}");
    assert!(logs.contains("lead upserted"), "{logs}");
    assert!(
        logs.contains("record failed"),
        "failures are logged: {logs}"
    );
    for email in [
        "ada.lovelace@globex.example",
        "grace.hopper@umbrella.example",
        "linus.t@gmail.com",
        "margaret@tyrell.example",
        "not-an-email",
    ] {
        assert!(
            !logs.to_lowercase().contains(email),
            "{email} leaked: {logs}"
        );
    }
}

/// A configuration for apps on fakes (the resources are never reached).
fn fake_config() -> blapi::leads::Config {
    blapi::leads::Config::from_env(&blapi::config::Env::from_map([
        ("LEADS_TABLE", "leads"),
        ("CRM_TABLE", "crm"),
        ("LEDGER_TABLE", "ledger"),
        ("ARTIFACTS_BUCKET", "artifacts"),
        ("ENRICHMENT_API_BASE", "fixture:"),
    ]))
    .expect("config")
}
