//! Event -> domain call -> response, for every trigger of revenue-ops.
//!
//! Dispatch on the event's shape only; what each job does is `blapi::revenue`:
//! - `{"Records": [...]}` (SQS revenue-jobs): each body is a [`Job`], handled one by one;
//!   only failures are reported (`batchItemFailures`), so one customer's CRM error never
//!   fails its neighbours.
//! - the daily EventBridge `Scheduled Event`: plan yesterday (the last complete day).
//! - `{"action": "run", "date": "YYYY-MM-DD"}` (operator): plan that date (rerun or
//!   backfill); `{"action": "customer", ...}` runs one customer's job directly.
//!
//! The shape every function shares: [`Config`] from the environment (in `blapi`), [`Ports`]
//! (connected once per cold start, or fakes in tests), [`App::new`], [`App::handle`], one
//! [`Tally`] of outcomes per invocation.

use aws_lambda_events::event::sqs::SqsEvent;
use blapi::aws::Clients;
use blapi::billing::dynamo::DynamoBilling;
use blapi::billing::pricebook::PriceBook;
use blapi::customers::state::DynamoCustomers;
use blapi::deadline::{Deadline, in_invocation};
use blapi::error::{Error, Result};
use blapi::queue::{SqsSender, process_batch};
use blapi::revenue::store::DynamoRevenue;
use blapi::revenue::{Config, Job, Ports as RevenuePorts, RevenueOps};
use blapi::storage::{ObjectStore, S3Store};
use blapi::telemetry::Tally;
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use std::sync::Arc;

/// The function's name, a metric dimension.
pub const FUNCTION: &str = "revenue-ops";

/// A clock (tests pin it).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The adapters revenue-ops runs on: [`Ports::connect`] in Lambda, fakes in tests.
#[derive(Clone)]
pub struct Ports {
    pub revenue: RevenuePorts,
    /// Where claim-checked message bodies are read.
    pub store: Arc<dyn ObjectStore>,
    pub clock: Clock,
}

impl Ports {
    /// The CustomersTable, the billing table, the RevenueTable, S3, SQS, and Salesforce or
    /// the CRM sink.
    pub async fn connect(config: &Config, clients: &Clients) -> Result<Self> {
        let s3: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
            clients.s3().clone(),
            config.artifacts_bucket.clone(),
        ));
        let billing = Arc::new(DynamoBilling::new(
            clients.dynamodb().clone(),
            config.billing_table.clone(),
        ));
        let book = match billing.price_book().await? {
            Some(b) => b,
            None => PriceBook::embedded()?,
        };
        let crm = config
            .crm
            .connect(clients, s3.clone(), config.http_retry)
            .await?;
        Ok(Self {
            revenue: RevenuePorts {
                customers: Arc::new(DynamoCustomers::new(
                    clients.dynamodb().clone(),
                    config.customers_table.clone(),
                )),
                revenue: Arc::new(DynamoRevenue::new(
                    clients.dynamodb().clone(),
                    config.revenue_table.clone(),
                )),
                usage: billing.clone(),
                dunning: billing,
                crm,
                queue: Arc::new(SqsSender::new(clients.sqs().clone(), s3.clone())),
                files: s3.clone(),
                book: Arc::new(book),
            },
            store: s3,
            clock: Arc::new(Utc::now),
        })
    }
}

/// Everything built once per cold start.
pub struct App {
    pub ops: RevenueOps,
    store: Arc<dyn ObjectStore>,
    namespace: String,
    clock: Clock,
}

impl App {
    pub fn new(config: Config, ports: Ports) -> Self {
        Self {
            ops: RevenueOps::new(ports.revenue, config.settings),
            store: ports.store,
            namespace: config.metrics_namespace,
            clock: ports.clock,
        }
    }

    /// The Lambda entry point.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value> {
        let tally = Tally::new(self.namespace.clone(), FUNCTION);
        // Jobs and batches alike run in the invocation's deadline (retries never wait past it).
        let out = in_invocation(&event.context, self.dispatch(event.payload, &tally)).await;
        tally.flush();
        out
    }

    async fn dispatch(&self, payload: Value, tally: &Tally) -> Result<Value> {
        let today = (self.clock)().date_naive();
        // The invocation's, set by `handle`: `process_batch` stops starting records near it.
        let deadline = Deadline::current();
        if !payload.get("Records").is_some_and(Value::is_array) {
            return self
                .ops
                .run(Job::from_invocation(payload)?, today, tally)
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
            let job: Job = rec.json()?;
            self.ops.run(job, today, tally).await.map(|_| ())
        })
        .await;
        tally.count("RevenueJobsFailed", resp.batch_item_failures.len() as u64);
        tracing::info!(
            records = total,
            failed = resp.batch_item_failures.len(),
            "batch done"
        );
        serde_json::to_value(resp).map_err(|e| Error::Invalid(e.to_string()))
    }
}
