//! portal-api: the customer portal's back end behind a Function URL (payload 2.0). Every
//! request carries the portal's bearer JWT; every resource is scoped to the token's customer.

use blapi::aws::Clients;
use blapi::config::Env;
use blapi::portal::config::Config;
use lambda_runtime::{run, service_fn};
use portal_api::{App, connect};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    let config = Config::from_env(&Env::process())?;
    let clients = Clients::from_env().await?;
    let app = App::new(
        connect(&config, &clients).await?,
        config.metrics_namespace.clone(),
    );
    run(service_fn(|event| app.handle(event))).await
}
