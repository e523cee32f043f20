//! Logs carry the lead id, never the e-mail. A test binary of its own: `tracing` caches each
//! call site's interest process-wide, so a thread-local subscriber next to other tests running
//! without one would miss events at random.

// Test helpers outside #[test] fns unwrap too (clippy.toml allows it only inside them).
#![allow(clippy::unwrap_used)]

use blapi::leads::enrichment::MemoryProvider;
use lambda_runtime::{Context, LambdaEvent};
use std::sync::{Arc, Mutex};

mod support;

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
    let app = support::fakes(provider).app;
    let event = support::sample("batch-mixed.json");
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
