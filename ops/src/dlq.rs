//! Dead-letter queues: what is parked where (`dlq list`) and moving it back to the queue it
//! came from (`dlq redrive`).
//!
//! Nothing personal or secret is printed: a message is shown as its source, type and event
//! id when it is one of our event messages, as its object key when it is a claim check, and
//! as its size otherwise — never its content.

use crate::stack::{Queue, Stack};
use anyhow::{Result, anyhow, bail};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use serde::Serialize;

/// One dead-letter queue's state.
#[derive(Debug, Clone, Serialize)]
pub struct DlqState {
    pub queue: String,
    /// The queues it takes failures from.
    pub sources: Vec<String>,
    /// Visible + in flight.
    pub depth: u64,
    /// Age of the oldest message among those sampled (seconds).
    pub oldest_age_s: Option<i64>,
    /// One message, redacted.
    pub sample: Option<String>,
}

/// A message, described without its content.
pub fn redact(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return format!("not JSON, {} bytes", body.len());
    };
    let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    if let Some(key) = v
        .pointer("/claim_check/key")
        .and_then(serde_json::Value::as_str)
    {
        return format!("claim check {key}");
    }
    match (s("source"), s("type"), s("id")) {
        (Some(source), Some(t), Some(id)) => format!("{source} {t} {id}"),
        // A blapi::notice::Notification: its id names no person (`to` may, and is not shown).
        (None, Some(t), Some(id)) => format!("notification {t} {id}"),
        _ => match s("action") {
            Some(a) => format!("job {a}, {} bytes", body.len()),
            None => format!("JSON without an event envelope, {} bytes", body.len()),
        },
    }
}

async fn depth(sqs: &Client, url: &str) -> Result<u64> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| anyhow!("reading the attributes of {url}: {e:?}"))?;
    Ok(out
        .attributes()
        .map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0))
}

/// Every dead-letter queue: depth, age of the oldest sampled message, a redacted sample.
pub async fn list(stack: &Stack, sqs: &Client, now_ms: i64) -> Result<Vec<DlqState>> {
    let mut out = Vec::new();
    for q in stack.dead_letter_queues()? {
        let depth = depth(sqs, &q.url).await?;
        let (mut oldest, mut sample) = (None, None);
        if depth > 0 {
            // A peek: received with no visibility timeout, so the messages stay available.
            let got = sqs
                .receive_message()
                .queue_url(&q.url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .send()
                .await
                .map_err(|e| anyhow!("peeking into {}: {e:?}", q.logical))?;
            for m in got.messages() {
                let sent = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|t| t.parse::<i64>().ok());
                if let Some(sent) = sent {
                    let age = (now_ms - sent) / 1000;
                    oldest = Some(oldest.map_or(age, |o: i64| o.max(age)));
                }
                sample.get_or_insert_with(|| redact(m.body().unwrap_or_default()));
            }
        }
        out.push(DlqState {
            queue: q.logical,
            sources: q.sources,
            depth,
            oldest_age_s: oldest,
            sample,
        });
    }
    Ok(out)
}

/// What a redrive did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Redrive {
    pub from: String,
    pub to: String,
    pub moved: u64,
    /// Left in the dead-letter queue (approximate, after the move).
    pub left: u64,
    pub dry_run: bool,
    /// How it moved: `receive-send-delete`, or SQS's move task and its handle.
    pub method: String,
}

/// The queue a dead-letter queue's messages go back to.
fn destination(stack: &Stack, dlq: &Queue, to: Option<&str>) -> Result<Queue> {
    match (to, dlq.sources.as_slice()) {
        (Some(name), _) => stack.queue(name),
        (None, [one]) => stack.queue(one),
        (None, []) => bail!(
            "{} is no queue's dead-letter queue: name the destination with --to",
            dlq.logical
        ),
        (None, many) => bail!(
            "{} takes failures from {}: name the destination with --to",
            dlq.logical,
            many.join(", ")
        ),
    }
}

/// Moves up to `max` messages (all when `None`) from the dead-letter queue `name` back to its
/// source. Each message is sent before it is deleted: a crash in between delivers it twice,
/// which the consumers' idempotency absorbs; it is never lost. On AWS without `--max` SQS's
/// own move task does it (`StartMessageMoveTask`).
pub async fn redrive(
    stack: &Stack,
    sqs: &Client,
    name: &str,
    to: Option<&str>,
    max: Option<u64>,
    dry_run: bool,
    progress: &dyn Fn(&str),
) -> Result<Redrive> {
    let dlq = stack.queue(name)?;
    let dest = destination(stack, &dlq, to)?;
    let waiting = depth(sqs, &dlq.url).await?;
    let mut out = Redrive {
        from: dlq.logical.clone(),
        to: dest.logical.clone(),
        moved: 0,
        left: waiting,
        dry_run,
        method: "receive-send-delete".into(),
    };
    if dry_run {
        out.moved = max.map_or(waiting, |m| m.min(waiting));
        return Ok(out);
    }
    if stack.endpoint.is_none() && max.is_none() {
        let arn = |url: &str| {
            let url = url.to_owned();
            async move {
                sqs.get_queue_attributes()
                    .queue_url(&url)
                    .attribute_names(QueueAttributeName::QueueArn)
                    .send()
                    .await
                    .map_err(|e| anyhow!("reading the ARN of {url}: {e:?}"))?
                    .attributes()
                    .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                    .ok_or_else(|| anyhow!("{url} has no ARN"))
            }
        };
        let task = sqs
            .start_message_move_task()
            .source_arn(arn(&dlq.url).await?)
            .destination_arn(arn(&dest.url).await?)
            .send()
            .await
            .map_err(|e| anyhow!("starting the move task: {e:?}"))?;
        out.method = format!(
            "SQS move task {} (progress: aws sqs list-message-move-tasks)",
            task.task_handle().unwrap_or("?")
        );
        out.moved = waiting;
        out.left = 0;
        return Ok(out);
    }
    let limit = max.unwrap_or(u64::MAX);
    while out.moved < limit {
        let want = i32::try_from((limit - out.moved).min(10)).unwrap_or(10);
        let got = sqs
            .receive_message()
            .queue_url(&dlq.url)
            .max_number_of_messages(want)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| anyhow!("receiving from {}: {e:?}", dlq.logical))?;
        let messages = got.messages();
        if messages.is_empty() {
            break;
        }
        let entries: Vec<SendMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(m.body().unwrap_or_default())
                    .build()
                    .map_err(|e| anyhow!("{e}"))
            })
            .collect::<Result<_>>()?;
        let sent = sqs
            .send_message_batch()
            .queue_url(&dest.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| anyhow!("sending to {}: {e:?}", dest.logical))?;
        // Only what was sent is deleted; a failed entry stays in the DLQ for the next run.
        let ok: Vec<usize> = sent
            .successful()
            .iter()
            .filter_map(|s| s.id().parse().ok())
            .collect();
        let deletes: Vec<DeleteMessageBatchRequestEntry> = ok
            .iter()
            .filter_map(|i| messages.get(*i))
            .enumerate()
            .filter_map(|(n, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        if !deletes.is_empty() {
            sqs.delete_message_batch()
                .queue_url(&dlq.url)
                .set_entries(Some(deletes))
                .send()
                .await
                .map_err(|e| anyhow!("deleting from {}: {e:?}", dlq.logical))?;
        }
        out.moved += ok.len() as u64;
        progress(&format!(
            "moved {} from {} to {}",
            out.moved, dlq.logical, dest.logical
        ));
        if ok.len() < messages.len() {
            bail!(
                "{} of {} messages could not be sent to {}; they stay in {} (moved so far: {})",
                messages.len() - ok.len(),
                messages.len(),
                dest.logical,
                dlq.logical,
                out.moved
            );
        }
    }
    out.left = depth(sqs, &dlq.url).await?;
    Ok(out)
}
