//! Test support: a stack provisioned from `template.yaml` under a random prefix.
//!
//! [`stack`] provisions once per test process (on its own thread and runtime, so any test's
//! runtime can use it) and hands out the names; tests build their own clients from
//! [`LocalStack::sdk_config`]. [`fresh_stack`] provisions a new isolated stack for a test that
//! needs empty queues or tables to itself. The emulator must be running (`make up`, which
//! `make test` does).

use crate::provision::{LocalStack, ProvisionOptions, default_endpoint, provision};
use std::sync::OnceLock;

static STACK: OnceLock<LocalStack> = OnceLock::new();

/// A random, valid resource-name prefix (`t` + 10 hex digits).
pub fn random_prefix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}", &id[..10])
}

/// The stack shared by all tests of this process.
///
/// # Panics
/// When the emulator is not reachable — with a message saying to run `make up`.
pub fn stack() -> &'static LocalStack {
    STACK.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(provision(&ProvisionOptions::new(
                random_prefix(),
                default_endpoint(),
            )))
        })
        .join()
        .expect("provisioning thread")
        .unwrap_or_else(|e| panic!("provisioning the local stack failed: {e:#}"))
    })
}

/// A new stack of its own, for tests that need empty resources.
///
/// # Panics
/// When the emulator is not reachable.
pub async fn fresh_stack() -> LocalStack {
    provision(&ProvisionOptions::new(random_prefix(), default_endpoint()))
        .await
        .unwrap_or_else(|e| panic!("provisioning the local stack failed: {e:#}"))
}

/// An SQS event of `(message id, body)` records, as Lambda delivers a batch (the handler
/// tests of every SQS-triggered function build theirs with it).
pub fn sqs_batch<I: Into<String>, B: Into<String>>(
    records: Vec<(I, B)>,
) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut e = aws_lambda_events::event::sqs::SqsEvent::default();
    e.records = records
        .into_iter()
        .map(|(id, body)| {
            let mut m = aws_lambda_events::event::sqs::SqsMessage::default();
            m.message_id = Some(id.into());
            m.body = Some(body.into());
            m
        })
        .collect();
    e
}

/// Every message body on a queue, received and deleted until a receive comes back empty.
///
/// # Panics
/// When SQS answers an error (a test failure).
pub async fn drain_queue(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive from {queue_url}: {e:?}"));
        if got.messages().is_empty() {
            return out;
        }
        for m in got.messages() {
            out.push(m.body().unwrap_or_default().to_owned());
            if let Some(handle) = m.receipt_handle() {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("delete from {queue_url}: {e:?}"));
            }
        }
    }
}
