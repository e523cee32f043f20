//! The local event-source mapper: plays the part of Lambda's SQS event-source mappings.
//!
//! It reads each function's `SQS` events from `template.yaml` (queue, batch size, batching
//! window), long-polls every queue, gathers a batch as Lambda does (up to the batch size, 10
//! messages per receive, until the batching window closes), invokes the mapped function
//! through the local Lambda invoke API
//! (`cargo lambda watch`) with a real SQS event, deletes only the records not reported in
//! `batchItemFailures`, and leaves the failures for redelivery, so the queue's redrive policy
//! moves a poison message to its DLQ after `maxReceiveCount` receives. A function error fails
//! the whole batch, as in AWS.
//!
//! Two local liberties: a failed record is made visible again after `retry_after` instead of
//! the queue's visibility timeout (minutes), so redrive happens within a demo's patience; and
//! a batching window is capped at `max_window` (the events queue's is seconds, which every
//! step of a demo would wait).

use crate::provision::{LocalStack, REGION};
use crate::template::Template;
use anyhow::{Context, Result, anyhow};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One SQS event source of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The function's binary name (what `cargo lambda watch` serves).
    pub function: String,
    /// The event's name in the template.
    pub event: String,
    /// Logical id of the queue.
    pub queue: String,
    pub batch_size: i32,
    /// `MaximumBatchingWindowInSeconds` (a number, or a `!Ref` to a parameter's default).
    pub batching_window: Duration,
}

/// Reads the SQS mappings of every function in the template.
pub fn mappings(template: &Template) -> Result<Vec<Mapping>> {
    let mut out = Vec::new();
    let defaults = template.parameter_defaults();
    for (id, kind, props) in template.resources() {
        if kind != "AWS::Serverless::Function" {
            continue;
        }
        let function = template
            .resource(&id)
            .and_then(|r| r.pointer("/Metadata/BuildProperties/Binary"))
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("function {id} has no Metadata.BuildProperties.Binary"))?
            .to_owned();
        for (event, def) in props
            .get("Events")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if def.get("Type").and_then(Value::as_str) != Some("SQS") {
                continue;
            }
            let queue = def
                .pointer("/Properties/Queue/Fn::GetAtt/0")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{id}.{event}: Queue must be !GetAtt <Queue>.Arn"))?
                .to_owned();
            let batch_size = def
                .pointer("/Properties/BatchSize")
                .and_then(Value::as_i64)
                .unwrap_or(10) as i32;
            let window = match def.pointer("/Properties/MaximumBatchingWindowInSeconds") {
                None => 0,
                Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                Some(v) => v
                    .get("Ref")
                    .and_then(Value::as_str)
                    .and_then(|p| defaults.get(p))
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| {
                        anyhow!("{id}.{event}: MaximumBatchingWindowInSeconds must be a number or !Ref a parameter with a default")
                    })?,
            };
            out.push(Mapping {
                function: function.clone(),
                event: event.clone(),
                queue,
                batch_size,
                batching_window: Duration::from_secs(window),
            });
        }
    }
    Ok(out)
}

/// The scheduled inputs of the template (`ScheduleV2` events): (function, event, input JSON).
pub fn schedules(template: &Template) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (id, kind, props) in template.resources() {
        if kind != "AWS::Serverless::Function" {
            continue;
        }
        let Some(function) = template
            .resource(&id)
            .and_then(|r| r.pointer("/Metadata/BuildProperties/Binary"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        for (event, def) in props
            .get("Events")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if def.get("Type").and_then(Value::as_str) == Some("ScheduleV2") {
                let input = def
                    .pointer("/Properties/Input")
                    .and_then(Value::as_str)
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(Value::Object(Default::default()));
                out.push((function.to_owned(), event.clone(), input));
            }
        }
    }
    out
}

/// Options of a mapper run.
#[derive(Debug, Clone)]
pub struct MapperOptions {
    /// Base URL of the local Lambda API (`cargo lambda watch`), e.g. `http://127.0.0.1:9001`.
    pub lambda_url: String,
    /// Delay before a failed record is visible again.
    pub retry_after: Duration,
    /// Long-poll wait per receive.
    pub wait: Duration,
    /// The longest batching window honoured (a template's longer one is cut to this).
    pub max_window: Duration,
    /// How many times each batch is delivered, concurrently (1 as a rule). SQS delivers at
    /// least once: the fault tests deliver every batch 3 times at once, and a record counts
    /// as failed (it is redelivered) when any delivery reports it or fails as a whole.
    pub copies: usize,
}

impl MapperOptions {
    /// The options `make functions` and the tests use: quick retries, short windows, each
    /// batch delivered once.
    pub fn local(lambda_url: impl Into<String>) -> Self {
        Self {
            lambda_url: lambda_url.into(),
            retry_after: Duration::from_secs(1),
            wait: Duration::from_secs(1),
            max_window: Duration::from_secs(1),
            copies: 1,
        }
    }
}

/// Outcome counters of the mapper (for summaries).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counters {
    pub invocations: u64,
    pub records: u64,
    pub deleted: u64,
    pub failed: u64,
}

/// Invokes a function through the local Lambda API and returns its JSON response.
/// A function error (the runtime's error document or a non-2xx) is an `Err`.
pub async fn invoke(
    http: &reqwest::Client,
    lambda_url: &str,
    function: &str,
    payload: &Value,
) -> Result<Value> {
    let url = format!("{lambda_url}/2015-03-31/functions/{function}/invocations");
    let resp = http
        .post(&url)
        .json(payload)
        .send()
        .await
        .with_context(|| format!("invoking {function} at {url}"))?;
    let status = resp.status();
    let function_error = resp.headers().get("x-amz-function-error").is_some();
    let body = resp.text().await?;
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    let looks_like_error = value.get("errorType").is_some() && value.get("errorMessage").is_some();
    if !status.is_success() || function_error || looks_like_error {
        return Err(anyhow!("{function} failed ({status}): {body}"));
    }
    Ok(value)
}

/// Runs the mapper until `stop` is set.
pub async fn run(
    stack: &LocalStack,
    template: &Template,
    opts: MapperOptions,
    stop: Arc<AtomicBool>,
) -> Result<Counters> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let maps = mappings(template)?;
    let mut tasks = Vec::new();
    for m in maps {
        let url = stack.physical(&m.queue).to_owned();
        let arn = stack.attr(&m.queue, "Arn").unwrap_or_default().to_owned();
        let sqs = sqs.clone();
        let http = http.clone();
        let opts = opts.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            poll(m, url, arn, sqs, http, opts, stop).await
        }));
    }
    let mut total = Counters::default();
    for t in tasks {
        let c = t.await??;
        total.invocations += c.invocations;
        total.records += c.records;
        total.deleted += c.deleted;
        total.failed += c.failed;
    }
    Ok(total)
}

async fn poll(
    m: Mapping,
    queue_url: String,
    queue_arn: String,
    sqs: aws_sdk_sqs::Client,
    http: reqwest::Client,
    opts: MapperOptions,
    stop: Arc<AtomicBool>,
) -> Result<Counters> {
    let mut counters = Counters::default();
    let window = m.batching_window.min(opts.max_window);
    tracing::info!(function = %m.function, queue = %m.queue, batch = m.batch_size, window_ms = window.as_millis() as u64, "mapping");
    let batch_size = usize::try_from(m.batch_size.max(1)).unwrap_or(1);
    while !stop.load(Ordering::SeqCst) {
        let mut messages = match receive(&sqs, &queue_url, batch_size, opts.wait).await {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!(queue = %m.queue, error = %format!("{e:#}"), "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        // Like Lambda: more receives (10 at most each) until the batch is full or the window
        // opened by the first message closes.
        let closes = tokio::time::Instant::now() + window;
        while messages.len() < batch_size && tokio::time::Instant::now() < closes {
            let left = closes - tokio::time::Instant::now();
            match receive(&sqs, &queue_url, batch_size - messages.len(), left).await {
                Ok(more) if more.is_empty() => {}
                Ok(more) => messages.extend(more),
                Err(_) => break,
            }
        }
        let mut handles: HashMap<String, String> = HashMap::new();
        let mut event = SqsEvent::default();
        for msg in &messages {
            let id = msg.message_id().unwrap_or_default().to_owned();
            handles.insert(
                id.clone(),
                msg.receipt_handle().unwrap_or_default().to_owned(),
            );
            let mut record = SqsMessage::default();
            record.message_id = Some(id);
            record.receipt_handle = msg.receipt_handle().map(str::to_owned);
            record.body = msg.body().map(str::to_owned);
            record.md5_of_body = msg.md5_of_body().map(str::to_owned);
            record.event_source = Some("aws:sqs".to_owned());
            record.event_source_arn = Some(queue_arn.clone());
            record.aws_region = Some(REGION.to_owned());
            if let Some(attrs) = msg.attributes() {
                for (k, v) in attrs {
                    record.attributes.insert(k.as_str().to_owned(), v.clone());
                }
            }
            event.records.push(record);
        }
        counters.invocations += 1;
        counters.records += messages.len() as u64;
        let payload = serde_json::to_value(&event)?;
        let deliveries =
            (0..opts.copies.max(1)).map(|_| invoke(&http, &opts.lambda_url, &m.function, &payload));
        let mut failed: Vec<String> = Vec::new();
        for outcome in futures::future::join_all(deliveries).await {
            let ids: Vec<String> = match outcome {
                Ok(resp) => serde_json::from_value::<SqsBatchResponse>(resp)
                    .map(|r| {
                        r.batch_item_failures
                            .into_iter()
                            .map(|f| f.item_identifier)
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(function = %m.function, error = %format!("{e:#}"), "invocation failed: the whole batch is retried");
                    handles.keys().cloned().collect()
                }
            };
            for id in ids {
                if !failed.contains(&id) {
                    failed.push(id);
                }
            }
        }
        let mut deleted = 0;
        for (id, handle) in &handles {
            if failed.contains(id) {
                // Visible again soon; the redrive policy counts the receives.
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(&queue_url)
                    .receipt_handle(handle)
                    .visibility_timeout(opts.retry_after.as_secs() as i32)
                    .send()
                    .await;
            } else if sqs
                .delete_message()
                .queue_url(&queue_url)
                .receipt_handle(handle)
                .send()
                .await
                .is_ok()
            {
                deleted += 1;
            }
        }
        counters.deleted += deleted;
        counters.failed += failed.len() as u64;
        tracing::info!(
            function = %m.function,
            queue = %m.queue,
            records = messages.len(),
            deleted,
            failed = failed.len(),
            "invoked"
        );
    }
    Ok(counters)
}

/// One receive of up to `max` (at most 10) messages, long-polling up to `wait` (whole
/// seconds; under a second, a short sleep then a short poll).
async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    max: usize,
    wait: Duration,
) -> Result<Vec<aws_sdk_sqs::types::Message>> {
    if wait < Duration::from_secs(1) {
        tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
    }
    let out = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
        .wait_time_seconds(wait.as_secs().clamp(0, 20) as i32)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    Ok(out.messages.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_sqs_mapping_and_the_schedule_from_the_template() {
        let t = Template::load(&crate::repo_root().join("template.yaml")).unwrap();
        let maps = mappings(&t).unwrap();
        let pairs: Vec<(&str, &str)> = maps
            .iter()
            .map(|m| (m.function.as_str(), m.queue.as_str()))
            .collect();
        for expected in [
            ("usage-billing", "UsageEventsQueue"),
            ("usage-billing", "BillingEventsQueue"),
            ("usage-billing", "BillingJobsQueue"),
            ("license-minting", "LicenseRequestsQueue"),
            ("lead-enrichment", "LeadEventsQueue"),
            ("customer-sync", "CustomerEventsQueue"),
            ("revenue-ops", "RevenueJobsQueue"),
            ("privacy-requests", "PrivacyRequestsQueue"),
            ("notifications", "CustomerNotificationsQueue"),
            ("webhook-intake", "EventsQueue"),
        ] {
            assert!(
                pairs.contains(&expected),
                "{expected:?} missing from {pairs:?}"
            );
        }
        let all = schedules(&t);
        let s: Vec<(&str, &str)> = all
            .iter()
            .map(|(f, _, input)| (f.as_str(), input["action"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(s.len(), 6, "{s:?}");
        assert!(s.contains(&("webhook-intake", "seal")), "{s:?}");
        // The archiver's mapping: large batches gathered over the template's window.
        let events = maps.iter().find(|m| m.queue == "EventsQueue").unwrap();
        assert_eq!(events.batch_size, 500);
        let default = t.parameter_defaults()["ArchiveBatchingWindowSeconds"].clone();
        assert_eq!(events.batching_window.as_secs().to_string(), default);
        assert!(events.batching_window > Duration::ZERO);
        assert!(s.contains(&("privacy-requests", "sweep")), "{s:?}");
        assert!(s.contains(&("usage-billing", "sweep_dunning")), "{s:?}");
        assert!(s.contains(&("usage-billing", "plan")), "{s:?}");
        assert!(s.contains(&("webhook-intake", "recover_stripe")), "{s:?}");
        assert!(s.contains(&("revenue-ops", "run")), "{s:?}");
    }
}
