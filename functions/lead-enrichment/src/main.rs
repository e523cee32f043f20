//! lead-enrichment: triggered by SQS `lead-events` (portal sign-ups and contact-us forms,
//! Stripe `customer.created`). Writes lead records, the enrichment cache and round-robin
//! counters to the LeadsTable, and upserts each lead into Salesforce or the built-in CRM sink
//! (CrmTable + `crm/` export in the artifacts bucket). Reports partial batch failures.

use lambda_runtime::{Error, run, service_fn};
use lead_enrichment::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    blapi::telemetry::init();
    let clients = blapi::aws::Clients::from_env().await?;
    let app = App::new(blapi::config::Env::process(), clients, Default::default()).await?;
    let app = &app;
    run(service_fn(
        move |event| async move { app.handle(event).await },
    ))
    .await
}
