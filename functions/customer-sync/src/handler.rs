//! The customer-sync handler: an SQS batch of [`EventMessage`]s in, a partial batch response
//! out. Each record goes through [`CustomerSync::handle`] on its own: a bad message fails
//! alone, and SQS redelivers (then dead-letters) only that one.
//!
//! The shape every function shares: [`Config`] from the environment (in `blapi::customers`),
//! [`Ports`] (connected once per cold start, or fakes in tests), [`App::new`],
//! [`App::handle`], one [`Tally`] of outcomes per invocation.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use blapi::Result;
use blapi::aws::Clients;
use blapi::customers::state::DynamoCustomers;
use blapi::customers::{Config, CustomerSync, Outcome, Ports as SyncPorts};
use blapi::deadline::Deadline;
use blapi::leads::store::DynamoLeadsTable;
use blapi::queue::{EventMessage, process_batch};
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::StripeClient;
use blapi::telemetry::Tally;
use lambda_runtime::LambdaEvent;
use std::sync::Arc;

/// The function's name, a metric dimension.
pub const FUNCTION: &str = "customer-sync";

/// The adapters customer-sync runs on: [`Ports::connect`] in Lambda, fakes in tests.
#[derive(Clone)]
pub struct Ports {
    pub sync: SyncPorts,
    /// Where claim-checked message bodies are read.
    pub store: Arc<dyn ObjectStore>,
}

impl Ports {
    /// Stripe (key from Secrets Manager), Salesforce or the sink, the CustomersTable, the
    /// LeadsTable (directory, leads, counters).
    pub async fn connect(config: &Config, clients: &Clients) -> Result<Self> {
        let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
            clients.s3().clone(),
            config.artifacts_bucket.clone(),
        ));
        let stripe = Arc::new(StripeClient::from_secret(&config.stripe, clients.secrets()).await?);
        let subjects = blapi::subjects::Subjects::connect(&config.subjects, clients).await?;
        let leads = Arc::new(DynamoLeadsTable::new(
            clients.dynamodb().clone(),
            config.leads_table.clone(),
            subjects.key.clone(),
        ));
        let crm = config
            .crm
            .connect(clients, store.clone(), config.http_retry)
            .await?;
        Ok(Self {
            sync: SyncPorts {
                stripe: stripe.clone(),
                invoices: stripe,
                crm,
                customers: Arc::new(DynamoCustomers::new(
                    clients.dynamodb().clone(),
                    config.customers_table.clone(),
                )),
                directory: leads.clone(),
                leads: leads.clone(),
                counter: leads,
                subjects,
            },
            store,
        })
    }
}

/// Everything built once per cold start.
pub struct App {
    sync: CustomerSync,
    store: Arc<dyn ObjectStore>,
    metrics_namespace: String,
}

impl App {
    /// The service with the bundled routing rules on `ports`.
    pub fn new(config: Config, ports: Ports) -> Result<Self> {
        Ok(Self {
            sync: CustomerSync::bundled(ports.sync)?,
            store: ports.store,
            metrics_namespace: config.metrics_namespace,
        })
    }

    /// Handles one SQS batch; only failed records are reported.
    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse> {
        let tally = Tally::new(self.metrics_namespace.clone(), FUNCTION);
        let deadline = Deadline::from_context(&event.context);
        let response = process_batch(event.payload, self.store.as_ref(), deadline, |record| {
            let tally = &tally;
            async move {
                let msg: EventMessage = record.json()?;
                match self.sync.handle(&msg).await? {
                    Outcome::Synced {
                        records,
                        account_created,
                        ..
                    } => {
                        tally.one("CustomersSynced");
                        tally.count("CrmRecordsWritten", records as u64);
                        tally.count("AccountsCreated", u64::from(account_created));
                    }
                    Outcome::Skipped { .. } => tally.one("CustomerEventsSkipped"),
                }
                Ok(())
            }
        })
        .await;
        tally.count(
            "CustomerEventsFailed",
            response.batch_item_failures.len() as u64,
        );
        tally.flush();
        Ok(response)
    }
}
