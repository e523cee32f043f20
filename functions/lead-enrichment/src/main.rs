//! lead-enrichment: triggered by SQS `lead-events` (portal sign-ups and contact-us forms,
//! Stripe `customer.created`). Writes lead records, the enrichment cache and round-robin
//! counters to the LeadsTable, and upserts each lead into Salesforce or the built-in CRM sink
//! (CrmTable + `crm/` export in the artifacts bucket). Reports partial batch failures.

use blapi::aws::Clients;
use blapi::config::Env;
use blapi::leads::Config;
use lambda_runtime::{run, service_fn};
use lead_enrichment::{App, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    let config = Config::from_env(&Env::process())?;
    let clients = Clients::from_env().await?;
    let app = App::new(config.clone(), Ports::connect(&config, &clients).await?)?;
    run(service_fn(|event| app.handle(event))).await
}
