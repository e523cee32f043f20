//! usage-billing Lambda. Triggers: SQS `usage-events` (ingest usage), SQS `billing-events`
//! (subscription view, dunning), SQS `billing-jobs` (plan shards, bill one customer), the
//! monthly `ScheduleV2` plan, and direct `{"action": ...}` invocations. Writes the billing
//! table, Stripe invoices, `invoices/{customer}/{period}.{json,html}` in S3 and
//! notifications.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use usage_billing::handler::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    blapi::telemetry::init();
    let app = App::from_env().await?;
    run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        app.handle(event)
    }))
    .await
}
