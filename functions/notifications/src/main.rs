//! notifications: triggered by SQS `notifications` (every function's
//! [`blapi::notice::Notification`]s). Sends each as a customer e-mail through Amazon SES, once
//! per id, with fresh signed links; reports partial batch failures.

use blapi::aws::Clients;
use blapi::config::Env;
use blapi::notify::Config;
use lambda_runtime::{run, service_fn};
use notifications::{App, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    let config = Config::from_env(&Env::process())?;
    let clients = Clients::from_env().await?;
    let app = App::new(config.clone(), Ports::connect(&config, &clients).await?)?;
    run(service_fn(|event| app.handle(event))).await
}
