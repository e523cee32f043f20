//! webhook-intake: Lambda Function URL -> verify -> dedupe -> S3 archive + SQS -> 200.
//! See the library docs (`src/lib.rs`) and `events/webhook-intake/README.md`.

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
        .with_recovery(&config, &clients)
        .with_subjects(&config, &clients)
        .await?;
    run(service_fn(|event| app.dispatch(event))).await
}
