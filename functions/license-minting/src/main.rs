//! license-minting: triggered by the SQS queue `license-requests` (Stripe purchase, renewal,
//! seat-change and cancellation events from webhook-intake) and by direct invocation with
//! admin requests (`{"action": "mint" | "revoke" | "list" | "verify" | "publish", ...}`).
//! Writes KMS-signed license files and the signed revocation list to S3
//! (`licenses/...`) and license records to `LICENSES_TABLE`.

use blapi::config::Env;
use lambda_runtime::{run, service_fn};
use license_minting::handler::App;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    let clients = blapi::aws::Clients::from_env().await?;
    let app = App::new(&Env::process(), &clients).await?;
    run(service_fn(|event| app.handle(event))).await
}
