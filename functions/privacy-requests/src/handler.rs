//! Event -> domain call -> response, for every trigger of privacy-requests.
//!
//! Dispatch on the event's shape only; what a request does is `blapi::privacy`:
//! - `{"Records": [...]}` (SQS privacy-requests): each body is an intake
//!   [`EventMessage`](blapi::queue::EventMessage) of a portal `privacy.request`; a malformed
//!   one fails alone (and reaches the DLQ after its retries), a failing connector leaves its
//!   request in progress and the message is retried (the request resumes where it stopped).
//! - `{"action": "sweep", "date"?: "YYYY-MM-DD"}` (the daily schedule, or an operator):
//!   resume every open request; warn of those due within 7 days or overdue.
//! - `{"action": "submit", "email", "kind", "jurisdiction", "opted_out"?, "request_id"?}`
//!   (operator): a request received by other means (mail, phone), after the operator
//!   verified the requester.
//! - `{"action": "status" | "resume", "request_id"}`, and `{"action": "extend" | "reject",
//!   "request_id", "reason"}` (operator: the one extension; a refusal, e.g. an unverifiable
//!   requester).
//!
//! The shape every function shares: [`Config`] from the environment (in `blapi`), [`Ports`]
//! (connected once per cold start, or fakes in tests), [`App::new`], [`App::handle`], one
//! [`Tally`] of outcomes per invocation.

use aws_lambda_events::event::sqs::SqsEvent;
use blapi::aws::Clients;
use blapi::billing::dynamo::DynamoBilling;
use blapi::customers::state::DynamoCustomers;
use blapi::deadline::{Deadline, in_invocation};
use blapi::error::{Error, Result};
use blapi::leads::store::DynamoLeadsTable;
use blapi::licensing::DynamoLicenseStore;
use blapi::privacy::connectors::{
    ArchiveSweep, BillingConnector, ClaimCheckSweep, Connector, CrmConnector, CustomersConnector,
    LeadsConnector, LicensesConnector, ObjectsConnector, QueueSweep, StripeConnector, Sweep,
};
use blapi::privacy::input::{RequestFields, from_event};
use blapi::privacy::{Config, DynamoRequests, Ports as PrivacyPorts, PrivacyService};
use blapi::queue::{EventMessage, SqsSender, process_batch};
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::StripeClient;
use blapi::subjects::Subjects;
use blapi::telemetry::Tally;
use chrono::{DateTime, NaiveDate, Utc};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The function's name, a metric dimension.
pub const FUNCTION: &str = "privacy-requests";

/// A clock (tests pin it).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The adapters privacy-requests runs on: [`Ports::connect`] in Lambda, fakes in tests.
#[derive(Clone)]
pub struct Ports {
    pub privacy: PrivacyPorts,
    /// Where claim-checked message bodies are read.
    pub store: Arc<dyn ObjectStore>,
    pub clock: Clock,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Ports {
    /// Every store that holds personal data, the subject index, Stripe, the CRM, S3 and SQS.
    pub async fn connect(config: &Config, clients: &Clients) -> Result<Self> {
        let s3: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
            clients.s3().clone(),
            config.artifacts_bucket.clone(),
        ));
        let subjects = Subjects::connect(&config.subjects, clients).await?;
        let ddb = clients.dynamodb().clone();
        let mut stripe = StripeClient::from_secret(&config.stripe, clients.secrets()).await?;
        if let Some(p) = config.http_retry {
            stripe = stripe.with_retry(p);
        }
        let crm = config
            .crm
            .connect(clients, s3.clone(), config.http_retry)
            .await?;
        let billing = Arc::new(DynamoBilling::new(
            ddb.clone(),
            config.billing_table.clone(),
        ));
        let connectors: Vec<Arc<dyn Connector>> = vec![
            Arc::new(LeadsConnector(Arc::new(DynamoLeadsTable::new(
                ddb.clone(),
                config.leads_table.clone(),
                subjects.key.clone(),
            )))),
            Arc::new(CrmConnector(crm)),
            Arc::new(StripeConnector(Arc::new(stripe))),
            Arc::new(CustomersConnector(Arc::new(DynamoCustomers::new(
                ddb.clone(),
                config.customers_table.clone(),
            )))),
            Arc::new(LicensesConnector {
                store: Arc::new(DynamoLicenseStore::new(
                    ddb.clone(),
                    config.licenses_table.clone(),
                )),
                files: s3.clone(),
                now_ms,
            }),
            Arc::new(BillingConnector {
                subscriptions: billing.clone(),
                dunning: billing,
                files: s3.clone(),
            }),
            Arc::new(ObjectsConnector::archive(s3.clone())),
            Arc::new(ObjectsConnector::exports(s3.clone())),
        ];
        let sweeps: Vec<Arc<dyn Sweep>> = vec![
            Arc::new(QueueSweep {
                sqs: clients.sqs().clone(),
                queue_urls: config.sweep_queue_urls.clone(),
                key: subjects.key.clone(),
            }),
            Arc::new(ClaimCheckSweep {
                files: s3.clone(),
                key: subjects.key.clone(),
            }),
            // The event archive: found by the subject hashes it carries, not by the index.
            Arc::new(ArchiveSweep { files: s3.clone() }),
        ];
        Ok(Self {
            privacy: PrivacyPorts {
                requests: Arc::new(DynamoRequests::new(ddb, config.subjects.table.clone())),
                subjects,
                connectors,
                sweeps,
                files: s3.clone(),
                queue: Arc::new(SqsSender::new(clients.sqs().clone(), s3.clone())),
                clock: now_ms,
            },
            store: s3,
            clock: Arc::new(Utc::now),
        })
    }
}

/// An operator's (or the schedule's) direct invocation.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    Sweep {
        #[serde(default)]
        date: Option<NaiveDate>,
    },
    Submit {
        #[serde(default)]
        request_id: Option<String>,
        email: String,
        kind: String,
        jurisdiction: String,
        #[serde(default)]
        opted_out: Option<bool>,
    },
    Status {
        request_id: String,
    },
    Resume {
        request_id: String,
    },
    Extend {
        request_id: String,
        reason: String,
    },
    Reject {
        request_id: String,
        reason: String,
    },
}

/// Everything built once per cold start.
pub struct App {
    pub service: PrivacyService,
    store: Arc<dyn ObjectStore>,
    namespace: String,
    clock: Clock,
}

impl App {
    pub fn new(config: Config, ports: Ports) -> Self {
        Self {
            service: PrivacyService::new(ports.privacy, config.settings),
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
        if !payload.get("Records").is_some_and(Value::is_array) {
            const ACTIONS: [&str; 6] = ["sweep", "submit", "status", "resume", "extend", "reject"];
            match payload.get("action").and_then(Value::as_str) {
                Some(a) if ACTIONS.contains(&a) => {}
                other => {
                    return Err(Error::Invalid(format!(
                        "not a privacy-requests invocation: action {} is not one of {}",
                        other.map_or("(none)".to_owned(), |a| format!("{a:?}")),
                        ACTIONS.join(", ")
                    )));
                }
            }
            let action: Action = serde_json::from_value(payload).map_err(|e| {
                Error::Invalid(format!(
                    "not a privacy-requests invocation: {}",
                    blapi::error::json_error(&e)
                ))
            })?;
            return self.act(action, tally).await;
        }
        // The invocation's, set by `handle`: `process_batch` stops starting records near it.
        let deadline = Deadline::current();
        let sqs: SqsEvent = serde_json::from_value(payload).map_err(|e| {
            Error::Invalid(format!(
                "not an SQS event: {}",
                blapi::error::json_error(&e)
            ))
        })?;
        let total = sqs.records.len();
        let resp = process_batch(sqs, self.store.as_ref(), deadline, |rec| async move {
            let msg: EventMessage = rec.json()?;
            let submission = from_event(&msg)?;
            self.service.submit(submission, tally).await.map(|_| ())
        })
        .await;
        tally.count(
            "PrivacyMessagesFailed",
            resp.batch_item_failures.len() as u64,
        );
        tracing::info!(
            records = total,
            failed = resp.batch_item_failures.len(),
            "batch done"
        );
        serde_json::to_value(resp).map_err(|e| Error::Invalid(e.to_string()))
    }

    async fn act(&self, action: Action, tally: &Tally) -> Result<Value> {
        let now = (self.clock)();
        match action {
            Action::Sweep { date } => {
                let today = date.unwrap_or_else(|| now.date_naive());
                let report = self.service.sweep(today, tally).await?;
                Ok(json!({"swept": today, "report": report}))
            }
            Action::Submit {
                request_id,
                email,
                kind,
                jurisdiction,
                opted_out,
            } => {
                let id = request_id
                    .unwrap_or_else(|| format!("pr_op_{}", now.format("%Y%m%dT%H%M%S%3f")));
                let submission = RequestFields {
                    email,
                    kind,
                    jurisdiction,
                    opted_out,
                }
                .submission(id, now)?;
                let r = self.service.submit(submission, tally).await?;
                self.service.status(&r.id).await
            }
            Action::Status { request_id } => self.service.status(&request_id).await,
            Action::Resume { request_id } => {
                self.service.process(&request_id, tally).await?;
                self.service.status(&request_id).await
            }
            Action::Reject { request_id, reason } => {
                self.service.reject(&request_id, &reason).await?;
                self.service.status(&request_id).await
            }
            Action::Extend { request_id, reason } => {
                self.service
                    .extend(&request_id, &reason, now.date_naive())
                    .await?;
                self.service.status(&request_id).await
            }
        }
    }
}
