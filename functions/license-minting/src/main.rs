//! license-minting: triggered by the SQS queue `license-requests` (Stripe purchase, renewal,
//! seat-change and cancellation events from webhook-intake) and by direct invocation with
//! admin requests (`{"action": "mint" | "revoke" | "list" | "verify" | "publish", ...}`).
//! Writes KMS-signed license files and the signed revocation list to S3
//! (`licenses/...`) and license records to `LICENSES_TABLE`.

use blapi::aws::Clients;
use blapi::config::Env;
use blapi::licensing::Config;
use lambda_runtime::{run, service_fn};
use license_minting::handler::{App, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    let config = Config::from_env(&Env::process())?;
    let clients = Clients::from_env().await?;
    let ports = Ports::connect(&config, &clients).await?;
    let app = App::new(config, ports).warm().await;
    run(service_fn(|event| app.handle(event))).await
}
