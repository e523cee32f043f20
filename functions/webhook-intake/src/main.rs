//! webhook-intake: Lambda Function URL -> verify -> dedupe -> S3 archive + SQS -> 200.
//! See the library docs (`src/lib.rs`) and `events/webhook-intake/README.md`.

use lambda_runtime::{LambdaEvent, service_fn};
use webhook_intake::App;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    blapi::telemetry::init();
    // Config, secrets and clients once per cold start; a bad config fails the start, named.
    let app = App::from_env().await.inspect_err(|e| {
        tracing::error!(error = %e.chain(), "webhook-intake cannot start");
    })?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        app.handle(event).await
    }))
    .await
}
