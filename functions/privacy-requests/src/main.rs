//! privacy-requests: GDPR and CCPA requests. Triggered by SQS `privacy-requests` (the portal's
//! signed `privacy.request` events, through intake), by the daily schedule (`{"action":
//! "sweep"}`: resume open requests, warn of deadlines), and by an operator's direct invocation
//! (`submit`, `status`, `extend`, `resume`, `sweep`). Reports partial batch failures.

use blapi::aws::Clients;
use blapi::config::Env;
use blapi::privacy::Config;
use lambda_runtime::{run, service_fn};
use privacy_requests::{App, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    let config = Config::from_env(&Env::process())?;
    let clients = Clients::from_env().await?;
    let app = App::new(config.clone(), Ports::connect(&config, &clients).await?);
    run(service_fn(|event| app.handle(event))).await
}
