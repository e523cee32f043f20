//! usage-billing Lambda. Triggers: SQS `usage-events` (ingest usage), SQS `billing-events`
//! (subscription view, dunning), SQS `billing-jobs` (plan shards, bill one customer), the
//! monthly `ScheduleV2` plan, and direct `{"action": ...}` invocations. Writes the billing
//! table, Stripe invoices, `invoices/{customer}/{period}.{json,html}` in S3 and
//! notifications.

use blapi::aws::Clients;
use blapi::billing::Config;
use blapi::config::Env;
use lambda_runtime::{run, service_fn};
use usage_billing::handler::{App, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    let config = Config::from_env(&Env::process())?;
    let clients = Clients::from_env().await?;
    let app = App::new(config.clone(), Ports::connect(&config, &clients).await?);
    run(service_fn(|event| app.handle(event))).await
}
