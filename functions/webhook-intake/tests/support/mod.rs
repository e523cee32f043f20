//! Shared helpers of the integration tests: the intake (and archiver) built on a provisioned
//! local stack, queue draining, the events queue handed to the archiver as Lambda's event
//! source would, archive reads.

#![allow(clippy::unwrap_used, dead_code)] // test helpers

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
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

/// The artifacts bucket as an object store.
pub async fn store(stack: &LocalStack) -> blapi::storage::S3Store {
    blapi::storage::S3Store::new(
        clients(stack).await.s3().clone(),
        stack.physical("ArtifactsBucket"),
    )
}

/// Receives what waits on the events queue (until it stays empty for `quiet`), hands it to
/// `app`'s archiver as one SQS batch, deletes the records not reported as failures (as
/// Lambda's event source does) and returns the answer with the batch's message ids.
pub async fn archive_pending(
    stack: &LocalStack,
    app: &App,
    quiet: Duration,
) -> (SqsBatchResponse, Vec<String>) {
    let sqs = clients(stack).await.sqs().clone();
    let url = stack.physical("EventsQueue");
    let mut event = SqsEvent::default();
    let mut handles = Vec::new();
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
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        idle_since = std::time::Instant::now();
        for m in messages {
            let mut record = SqsMessage::default();
            record.message_id = m.message_id.clone();
            record.body = m.body.clone();
            event.records.push(record);
            handles.push((
                m.message_id.unwrap_or_default(),
                m.receipt_handle.unwrap_or_default(),
            ));
        }
    }
    let ids: Vec<String> = handles.iter().map(|(id, _)| id.clone()).collect();
    let resp = app.archive(event).await.unwrap();
    for (id, handle) in handles {
        let failed = resp
            .batch_item_failures
            .iter()
            .any(|f| f.item_identifier == id);
        if failed {
            // Visible again at once: redelivered to the next batch.
            sqs.change_message_visibility()
                .queue_url(url)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        } else {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(handle)
                .send()
                .await
                .unwrap();
        }
    }
    (resp, ids)
}

/// The events of the archive hour that `created` (unix seconds) falls in.
pub async fn archived_hour(stack: &LocalStack, created: i64) -> blapi::archive::HourEvents {
    let hour = blapi::archive::Hour::of(chrono::DateTime::from_timestamp(created, 0).unwrap());
    blapi::archive::read_hour(&store(stack).await, hour)
        .await
        .unwrap()
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
