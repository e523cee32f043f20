//! Event -> domain call -> response, for notifications.
//!
//! The one trigger is SQS `notifications` (`{"Records": [...]}`): each body is a
//! [`Notification`], delivered one by one by [`Notifier::deliver`] (`blapi::notify`); only the
//! failures are reported (`batchItemFailures`). An unknown type, a customer without an address,
//! a value a template needs and the message lacks: the message fails alone and reaches the DLQ
//! after its retries. SES still throttling after the notifier's own retries: the message is
//! reported and SQS delivers it again later. A duplicate id is acknowledged, not sent.
//!
//! The shape every function shares: [`Config`] from the environment (in `blapi`), [`Ports`]
//! (connected once per cold start, or fakes in tests), [`App::new`], [`App::handle`], one
//! [`Tally`] of outcomes per invocation (`NotificationsSent`, `NotificationsDuplicate`,
//! `NotificationsSuppressed`, `NotificationsFailed`).

pub mod ses;

use aws_lambda_events::event::sqs::SqsEvent;
use blapi::aws::Clients;
use blapi::deadline::Deadline;
use blapi::error::{Error, Result};
use blapi::ledger::DynamoLedger;
use blapi::notice::Notification;
use blapi::notify::{Config, Notifier, Ports as NotifyPorts};
use blapi::queue::process_batch;
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::StripeClient;
use blapi::subjects::Subjects;
use blapi::telemetry::Tally;
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use ses::SesMailer;
use std::sync::Arc;

/// The function's name, a metric dimension.
pub const FUNCTION: &str = "notifications";

/// The adapters notifications runs on: [`Ports::connect`] in Lambda, fakes in tests.
#[derive(Clone)]
pub struct Ports {
    pub notify: NotifyPorts,
    /// Where claim-checked message bodies are read.
    pub store: Arc<dyn ObjectStore>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Ports {
    /// SES, the ledger, Stripe (read only), the subject index and key, the artifacts bucket.
    pub async fn connect(config: &Config, clients: &Clients) -> Result<Self> {
        let files: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
            clients.s3().clone(),
            config.artifacts_bucket.clone(),
        ));
        let mut stripe = StripeClient::from_secret(&config.stripe, clients.secrets()).await?;
        if let Some(policy) = config.http_retry {
            stripe = stripe.with_retry(policy);
        }
        let ses = aws_sdk_sesv2::Client::new(clients.sdk_config());
        Ok(Self {
            notify: NotifyPorts {
                mailer: Arc::new(SesMailer::new(ses)),
                ledger: Arc::new(DynamoLedger::new(
                    clients.dynamodb().clone(),
                    config.ledger_table.clone(),
                )),
                stripe: Arc::new(stripe),
                subjects: Subjects::connect(&config.subjects, clients).await?,
                files: files.clone(),
                clock: now_ms,
            },
            store: files,
        })
    }
}

/// Everything built once per cold start.
pub struct App {
    pub notifier: Notifier,
    store: Arc<dyn ObjectStore>,
    namespace: String,
}

impl App {
    /// Fails when a bundled template does not compile (caught by the tests, never in Lambda).
    pub fn new(config: Config, ports: Ports) -> Result<Self> {
        Ok(Self {
            notifier: Notifier::new(ports.notify, config.settings)?,
            store: ports.store,
            namespace: config.metrics_namespace,
        })
    }

    /// The Lambda entry point.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value> {
        let tally = Tally::new(self.namespace.clone(), FUNCTION);
        let deadline = Deadline::from_context(&event.context);
        let out = self.deliver_batch(event.payload, deadline, &tally).await;
        tally.flush();
        out
    }

    async fn deliver_batch(
        &self,
        payload: Value,
        deadline: Option<Deadline>,
        tally: &Tally,
    ) -> Result<Value> {
        let batch: SqsEvent = serde_json::from_value(payload).map_err(|e| {
            Error::Invalid(format!(
                "notifications is triggered by its SQS queue only; not an SQS event: {}",
                blapi::error::json_error(&e)
            ))
        })?;
        let records = batch.records.len();
        let response = process_batch(batch, self.store.as_ref(), deadline, |record| async move {
            let notification: Notification = record.json()?;
            self.notifier
                .deliver(&notification, tally)
                .await
                .map(|_| ())
        })
        .await;
        let failed = response.batch_item_failures.len();
        tally.count("NotificationsFailed", failed as u64);
        tracing::info!(records, failed, "notifications batch done");
        serde_json::to_value(response).map_err(|e| Error::Invalid(e.to_string()))
    }
}
