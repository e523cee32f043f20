//! webhook-intake: one binary, three functions (template.yaml). Behind the Function URL: verify
//! -> one SQS send to the events queue -> 200. Behind the events queue: archive each batch
//! (gzip NDJSON in S3) -> forward to the routed queues. On schedules: the hourly archive seal
//! and the daily Stripe missed-event recovery. See the library docs (`src/lib.rs`) and
//! `events/webhook-intake/README.md`.

use blapi::aws::Clients;
use blapi::config::Env;
use blapi::webhook::Config;
use lambda_runtime::{run, service_fn};
use webhook_intake::{App, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    // Config, secrets and clients once per cold start; a bad config fails the start, named.
    let config = Config::from_env(&Env::process())?;
    let clients = Clients::from_env().await?;
    let app = App::new(config.clone(), Ports::connect(&config, &clients).await?)
        .with_recovery(&config, &clients);
    run(service_fn(|event| app.dispatch(event))).await
}
