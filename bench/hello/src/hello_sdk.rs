//! `blapi-hello-sdk`: the fair floor of an SDK lambda, the second baseline of the cold-start
//! ratios in the bench report.
//!
//! What every function does before its own work, and nothing more: at init it loads the SDK
//! configuration exactly as the functions do ([`blapi::aws::sdk_config`]: the same HTTP client,
//! TLS provider and trust store, credentials from the environment), builds one client
//! (DynamoDB) and makes one call to the endpoint (`ListTables`, one table at most, against
//! `AWS_ENDPOINT_URL` on the local stack); then it answers each event with the event and that
//! call's result. A function's init and first response over this one's are what its own code,
//! its other clients and its further calls cost.

use blapi::config::Env;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = blapi::aws::sdk_config(&Env::process()).await?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let listed = dynamodb.list_tables().limit(1).send().await?;
    let tables = listed.table_names().len();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(json!({ "tables": tables, "event": event.payload }))
    }))
    .await
}
