//! Shared helpers of the integration tests: the intake built on a provisioned local stack,
//! queue draining, ledger and archive reads.

#![allow(clippy::unwrap_used, dead_code)] // test helpers

use aws_sdk_dynamodb::types::AttributeValue;
use blapi::config::Env;
use blapi::queue::EventMessage;
use blapi_infra::LocalStack;
use std::time::Duration;
use webhook_intake::App;

/// The Stripe webhook secret provisioned into the local stack (`infra/local-secrets.json`).
pub const STRIPE_SECRET: &str = "whsec_local_stripe_test_secret";
/// The portal's Standard Webhooks secret in the local stack.
pub const PORTAL_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The intake on `stack`, with its template environment and `overrides`.
pub async fn app(stack: &LocalStack, overrides: &[(&str, &str)]) -> App {
    let mut env = stack.env("webhook-intake");
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let clients = blapi::aws::Clients::new(&stack.sdk_config().await);
    build(env, clients).await.unwrap()
}

/// The intake as Lambda builds it: config, then ports (secrets), then the app.
pub async fn build(
    env: std::collections::BTreeMap<String, String>,
    clients: blapi::aws::Clients,
) -> blapi::Result<App> {
    let config = blapi::webhook::Config::from_env(&Env::from_map(env))?;
    let ports = webhook_intake::Ports::connect(&config, &clients).await?;
    Ok(App::new(config, ports))
}

pub async fn clients(stack: &LocalStack) -> blapi::aws::Clients {
    blapi::aws::Clients::new(&stack.sdk_config().await)
}

/// Receives and deletes every message of the queue `logical_id` until it stays empty for
/// `quiet` (moto delivers at once; the wait covers in-flight sends).
pub async fn drain(stack: &LocalStack, logical_id: &str, quiet: Duration) -> Vec<EventMessage> {
    let sqs = clients(stack).await.sqs().clone();
    let url = stack.physical(logical_id);
    let mut out = Vec::new();
    let mut idle_since = std::time::Instant::now();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            if idle_since.elapsed() >= quiet {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        idle_since = std::time::Instant::now();
        for m in messages {
            out.push(serde_json::from_str(m.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

/// The archived object at `key`, if any.
pub async fn archived(stack: &LocalStack, key: &str) -> Option<Vec<u8>> {
    let s3 = clients(stack).await.s3().clone();
    match s3
        .get_object()
        .bucket(stack.physical("ArtifactsBucket"))
        .key(key)
        .send()
        .await
    {
        Ok(out) => Some(out.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(_) => None,
    }
}

/// The ledger status (`IN_PROGRESS` / `COMPLETED`) of an event, if it has an entry.
pub async fn ledger_status(stack: &LocalStack, source: &str, id: &str) -> Option<String> {
    let ddb = clients(stack).await.dynamodb().clone();
    let out = ddb
        .get_item()
        .table_name(stack.physical("IdempotencyTable"))
        .key("pk", AttributeValue::S(format!("webhook#{source}#{id}")))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.item
        .and_then(|i| i.get("status").and_then(|s| s.as_s().ok()).cloned())
}

/// A unique Stripe event id.
pub fn evt_id() -> String {
    format!("evt_{}", uuid::Uuid::new_v4().simple())
}

/// A Stripe event body.
pub fn stripe_event(id: &str, event_type: &str, created: i64) -> String {
    format!(
        r#"{{"id":"{id}","object":"event","api_version":"2024-06-20","created":{created},"livemode":false,"pending_webhooks":1,"type":"{event_type}","data":{{"object":{{"id":"obj_1","customer":"cus_1"}}}}}}"#
    )
}

/// The archive key of a Stripe event created at `created`.
pub fn stripe_key(id: &str, created: i64) -> String {
    let at = chrono::DateTime::from_timestamp(created, 0).unwrap();
    format!("raw/stripe/{}/{id}.json", at.format("%Y/%m/%d"))
}
