//! Event -> domain call -> response, for every trigger of usage-billing.
//!
//! Dispatch on the event's shape only; what each message means is `blapi::billing::dispatch`:
//! - `{"Records": [...]}` (SQS): each record's body goes to [`Billing::handle_message`], one
//!   by one, and only failures are reported (`batchItemFailures`); the queue ARN is logged,
//!   not trusted for routing.
//! - anything else is a direct invocation or the monthly schedule: [`Job::from_invocation`].
//!
//! The shape every function shares: [`Config`] from the environment (in `blapi`), [`Ports`]
//! (connected once per cold start, or fakes in tests), [`App::new`], [`App::handle`], one
//! [`Tally`] of outcomes per invocation.

use aws_lambda_events::event::sqs::SqsEvent;
use blapi::aws::Clients;
use blapi::billing::Config;
use blapi::billing::dynamo::DynamoBilling;
use blapi::billing::pricebook::PriceBook;
use blapi::billing::service::{Billing, Job, Ports as BillingPorts};
use blapi::deadline::{Deadline, in_invocation};
use blapi::error::{Error, Result};
use blapi::ledger::DynamoLedger;
use blapi::queue::{SqsSender, process_batch};
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::StripeClient;
use blapi::telemetry::Tally;
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use std::sync::Arc;

/// The function's name, a metric dimension.
pub const FUNCTION: &str = "usage-billing";

/// A clock (tests pin it).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The adapters usage-billing runs on: [`Ports::connect`] in Lambda, fakes in tests.
#[derive(Clone)]
pub struct Ports {
    /// The billing services' ports.
    pub billing: BillingPorts,
    /// Where claim-checked message bodies are read.
    pub store: Arc<dyn ObjectStore>,
    pub clock: Clock,
}

impl Ports {
    /// The production adapters: the billing table (its price book, else the embedded one),
    /// Stripe with the key from Secrets Manager, S3, SQS, the ledger.
    pub async fn connect(config: &Config, clients: &Clients) -> Result<Self> {
        let s3: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
            clients.s3().clone(),
            config.artifacts_bucket.clone(),
        ));
        let stripe = Arc::new(StripeClient::from_secret(&config.stripe, clients.secrets()).await?);
        let table = Arc::new(DynamoBilling::new(
            clients.dynamodb().clone(),
            config.table.clone(),
        ));
        let book = match table.price_book().await? {
            Some(b) => b,
            None => PriceBook::embedded()?,
        };
        tracing::info!(price_book = %book.version, "price book loaded");
        Ok(Self {
            billing: BillingPorts {
                usage: table.clone(),
                subs: table.clone(),
                invoices: table.clone(),
                credits: table.clone(),
                dunning: table,
                stripe: stripe.clone(),
                collections: stripe,
                artifacts: s3.clone(),
                ledger: Arc::new(DynamoLedger::new(
                    clients.dynamodb().clone(),
                    config.ledger_table.clone(),
                )),
                queue: Arc::new(SqsSender::new(clients.sqs().clone(), s3.clone())),
                book: Arc::new(book),
            },
            store: s3,
            clock: Arc::new(Utc::now),
        })
    }
}

/// Everything built once per cold start.
pub struct App {
    pub billing: Billing,
    store: Arc<dyn ObjectStore>,
    namespace: String,
    clock: Clock,
}

impl App {
    pub fn new(config: Config, ports: Ports) -> Self {
        Self {
            billing: Billing {
                ports: ports.billing,
                config: config.service,
            },
            store: ports.store,
            namespace: config.metrics_namespace,
            clock: ports.clock,
        }
    }

    /// The Lambda entry point.
    pub async fn handle(&self, event: LambdaEvent<serde_json::Value>) -> Result<serde_json::Value> {
        let tally = Tally::new(self.namespace.clone(), FUNCTION);
        // Jobs and batches alike run in the invocation's deadline (retries never wait past it).
        let out = in_invocation(&event.context, self.dispatch(event.payload, &tally)).await;
        tally.flush();
        out
    }

    async fn dispatch(
        &self,
        payload: serde_json::Value,
        tally: &Tally,
    ) -> Result<serde_json::Value> {
        let now = (self.clock)();
        // The invocation's, set by `handle`: `process_batch` stops starting records near it.
        let deadline = Deadline::current();
        if !payload
            .get("Records")
            .is_some_and(serde_json::Value::is_array)
        {
            return self
                .billing
                .run_job(Job::from_invocation(payload)?, now, tally)
                .await;
        }
        let sqs: SqsEvent = serde_json::from_value(payload).map_err(|e| {
            Error::Invalid(format!(
                "not an SQS event: {}",
                blapi::error::json_error(&e)
            ))
        })?;
        let total = sqs.records.len();
        let resp = process_batch(sqs, self.store.as_ref(), deadline, |rec| async move {
            let body: serde_json::Value = rec.json()?;
            self.billing
                .handle_message(body, &rec.message_id, now, tally)
                .await
        })
        .await;
        tracing::info!(
            records = total,
            failed = resp.batch_item_failures.len(),
            "batch done"
        );
        serde_json::to_value(resp).map_err(|e| Error::Invalid(e.to_string()))
    }
}
