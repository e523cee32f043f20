//! Event -> domain call -> response, for every trigger of usage-billing.
//!
//! Dispatch on the event's shape:
//! - `{"Records": [...]}` (SQS): each record by its body — a job (`{"action": ...}`) from
//!   billing-jobs, or an `EventMessage` from usage-events (`telemetry` / `usage.reported`) or
//!   billing-events (`stripe`). Records are handled one by one and only failures are reported
//!   (`batchItemFailures`); the queue ARN is logged, not trusted for routing.
//! - `{"action": "plan" | "bill" | "plan_shard" | "grant_credit", ...}`: a direct invocation or
//!   the monthly schedule (`{"action": "plan"}` without period = the month before now).
//! - an EventBridge `Scheduled Event`: plan the month before now.

use blapi::aws::Clients;
use blapi::billing::dunning;
use blapi::billing::dynamo::DynamoBilling;
use blapi::billing::pricebook::PriceBook;
use blapi::billing::service::{BillOutcome, Billing, BillingConfig, Job};
use blapi::billing::stripe_api::StripeInvoicing;
use blapi::billing::usage::IngestPolicy;
use blapi::billing::{Money, Period};
use blapi::config::{Env, Secret};
use blapi::error::{Error, Result};
use blapi::ledger::DynamoLedger;
use blapi::queue::{EventMessage, QueueRecord, SqsSender, process_batch};
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::StripeClient;
use blapi::telemetry::Metrics;
use chrono::{DateTime, Utc};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A clock (tests pin it).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Everything built once per cold start.
pub struct App {
    pub billing: Billing,
    store: Arc<dyn ObjectStore>,
    namespace: String,
    clock: Clock,
}

#[derive(Deserialize)]
struct StripeKey {
    api_key: String,
}

/// Options a test may override.
#[derive(Default)]
pub struct Overrides {
    /// Stripe base URL instead of `STRIPE_API_BASE` (wiremock).
    pub stripe_base: Option<String>,
    /// Stripe key instead of the secret.
    pub stripe_key: Option<String>,
    /// Artifact store instead of S3 (fault injection).
    pub artifacts: Option<Arc<dyn ObjectStore>>,
    pub clock: Option<Clock>,
    pub stripe_retry: Option<blapi::retry::RetryPolicy>,
    /// A ready Stripe client (shares its call counter with the caller: benchmarks).
    pub stripe_client: Option<StripeClient>,
}

impl App {
    /// Lambda: the process environment and clients.
    pub async fn from_env() -> Result<Self> {
        Self::new(
            &Env::process(),
            &Clients::from_env().await?,
            Overrides::default(),
        )
        .await
    }

    /// Builds the app from configuration and clients.
    pub async fn new(env: &Env, clients: &Clients, o: Overrides) -> Result<Self> {
        let table = env.required("BILLING_TABLE")?;
        let jobs = env.required("BILLING_JOBS_QUEUE_URL")?;
        let notes = env.required("NOTIFICATIONS_QUEUE_URL")?;
        let suspend_days = env.parsed::<i64>("DUNNING_SUSPEND_AFTER_DAYS")?;
        let suspend_attempts = env.parsed_or::<i64>("DUNNING_SUSPEND_AFTER_ATTEMPTS", 4)?;
        let grace_hours = env.parsed_or::<i64>("USAGE_GRACE_HOURS", 72)?;
        let bucket = env.required("ARTIFACTS_BUCKET")?;
        let ledger_table = env.required("LEDGER_TABLE")?;
        let namespace = env
            .optional("METRICS_NAMESPACE")
            .unwrap_or_else(|| "blapi".into());

        let s3: Arc<dyn ObjectStore> = Arc::new(S3Store::new(clients.s3().clone(), bucket));
        let artifacts = o.artifacts.unwrap_or_else(|| s3.clone());
        let stripe = match o.stripe_client {
            Some(c) => c,
            None => {
                let base = match o.stripe_base {
                    Some(b) => b,
                    None => env.url("STRIPE_API_BASE")?,
                };
                let key = match o.stripe_key {
                    Some(k) => Secret::new(k),
                    None => {
                        let id = env.required("STRIPE_API_KEY_SECRET_ID")?;
                        let s =
                            blapi::secrets::load_json::<StripeKey>(clients.secrets(), &id).await?;
                        Secret::new(s.expose().api_key.clone())
                    }
                };
                let mut c = StripeClient::new(base, key, Duration::from_secs(20))?;
                if let Some(p) = o.stripe_retry {
                    c = c.with_retry(p);
                }
                c
            }
        };
        let table = Arc::new(DynamoBilling::new(clients.dynamodb().clone(), table));
        let book = match table.price_book().await? {
            Some(b) => b,
            None => PriceBook::embedded()?,
        };
        tracing::info!(price_book = %book.version, "price book loaded");
        let billing = Billing {
            usage: table.clone(),
            subs: table.clone(),
            invoices: table.clone(),
            credits: table.clone(),
            dunning: table.clone(),
            stripe: Arc::new(StripeInvoicing::new(stripe)),
            artifacts,
            ledger: Arc::new(DynamoLedger::new(clients.dynamodb().clone(), ledger_table)),
            queue: Arc::new(SqsSender::new(clients.sqs().clone(), s3.clone())),
            book: Arc::new(book),
            config: BillingConfig {
                jobs_queue_url: jobs,
                notifications_queue_url: notes,
                ingest: IngestPolicy {
                    grace: chrono::Duration::hours(grace_hours),
                    ..IngestPolicy::default()
                },
                dunning: dunning::Policy {
                    suspend_after_days: suspend_days,
                    suspend_after_attempts: suspend_attempts,
                },
                lease: Duration::from_secs(300),
            },
        };
        Ok(Self::from_parts(billing, s3, namespace, o.clock))
    }

    /// Builds the app from ready ports (unit tests with fakes).
    pub fn from_parts(
        billing: Billing,
        store: Arc<dyn ObjectStore>,
        namespace: String,
        clock: Option<Clock>,
    ) -> Self {
        Self {
            billing,
            store,
            namespace,
            clock: clock.unwrap_or_else(|| Arc::new(Utc::now)),
        }
    }

    /// The Lambda entry point.
    pub async fn handle(&self, event: LambdaEvent<serde_json::Value>) -> Result<serde_json::Value> {
        let mut metrics = Metrics::new(self.namespace.clone(), "usage-billing");
        let out = self.dispatch(event.payload, &mut metrics).await;
        metrics.flush();
        out
    }

    async fn dispatch(
        &self,
        payload: serde_json::Value,
        metrics: &mut Metrics,
    ) -> Result<serde_json::Value> {
        if payload
            .get("Records")
            .is_some_and(serde_json::Value::is_array)
        {
            let sqs: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(payload)
                .map_err(|e| Error::Invalid(format!("not an SQS event: {e}")))?;
            let total = sqs.records.len();
            let m = Mutex::new(std::mem::replace(
                metrics,
                Metrics::new(self.namespace.clone(), "usage-billing"),
            ));
            let resp = process_batch(sqs, self.store.as_ref(), |rec| self.record(rec, &m)).await;
            *metrics = m.into_inner().unwrap_or_else(|p| p.into_inner());
            tracing::info!(
                records = total,
                failed = resp.batch_item_failures.len(),
                "batch done"
            );
            return serde_json::to_value(resp).map_err(|e| Error::Invalid(e.to_string()));
        }
        let job: Job = if payload.get("action").is_some() {
            serde_json::from_value(payload)
                .map_err(|e| Error::Invalid(format!("not a billing action: {e}")))?
        } else if payload.get("detail-type").and_then(|d| d.as_str()) == Some("Scheduled Event") {
            Job::Plan {
                period: None,
                close_early: false,
            }
        } else {
            return Err(Error::Invalid("unrecognised event shape".into()));
        };
        let m = Mutex::new(std::mem::replace(
            metrics,
            Metrics::new(self.namespace.clone(), "usage-billing"),
        ));
        let out = self.job(job, &m).await;
        *metrics = m.into_inner().unwrap_or_else(|p| p.into_inner());
        out
    }

    fn count(m: &Mutex<Metrics>, name: &str, v: u64) {
        m.lock().unwrap_or_else(|p| p.into_inner()).count(name, v);
    }

    async fn record(&self, rec: QueueRecord, m: &Mutex<Metrics>) -> Result<()> {
        let body: serde_json::Value = rec.json()?;
        if body.get("action").is_some() {
            let job: Job = serde_json::from_value(body).map_err(|e| {
                Error::Invalid(format!(
                    "message {} is not a valid job: {e}",
                    rec.message_id
                ))
            })?;
            return self.job(job, m).await.map(|_| ());
        }
        let msg: EventMessage = serde_json::from_value(body).map_err(|e| {
            Error::Invalid(format!(
                "message {} is neither a job nor an event: {e}",
                rec.message_id
            ))
        })?;
        match msg.source.as_str() {
            "telemetry" if msg.event_type == "usage.reported" => {
                let records = msg
                    .event
                    .pointer("/data/records")
                    .and_then(|r| r.as_array())
                    .ok_or_else(|| {
                        Error::Invalid(format!("usage event {} has no data.records", msg.id))
                    })?;
                let rep = self.billing.ingest(records, (self.clock)()).await?;
                let late = rep
                    .rejected
                    .iter()
                    .filter(|r| r.reason.list() == "late")
                    .count() as u64;
                Self::count(m, "UsageAccepted", rep.accepted);
                Self::count(m, "UsageDuplicates", rep.duplicates);
                Self::count(m, "UsageLate", late);
                Self::count(m, "UsageRejected", rep.rejected.len() as u64 - late);
                tracing::info!(event_id = %msg.id, accepted = rep.accepted, duplicates = rep.duplicates, refused = rep.rejected.len(), "usage ingested");
                Ok(())
            }
            "stripe" => {
                let handled = self.billing.apply_event(&msg).await?;
                Self::count(
                    m,
                    if handled {
                        "BillingEventsApplied"
                    } else {
                        "BillingEventsIgnored"
                    },
                    1,
                );
                Ok(())
            }
            other => Err(Error::Invalid(format!(
                "event {} from {other}/{} is not for usage-billing",
                msg.id, msg.event_type
            ))),
        }
    }

    async fn job(&self, job: Job, m: &Mutex<Metrics>) -> Result<serde_json::Value> {
        match job {
            Job::Plan {
                period,
                close_early,
            } => {
                let period = period.unwrap_or_else(|| Period::of((self.clock)()).prev());
                let n = if close_early {
                    tracing::warn!(%period, "closing the period before its end, as asked");
                    self.billing.plan_closing_early(period).await?
                } else {
                    self.billing.plan(period, (self.clock)()).await?
                };
                Self::count(m, "PlanShardsSent", n as u64);
                Ok(serde_json::json!({"action": "plan", "period": period, "shard_jobs": n}))
            }
            Job::PlanShard { period, shard } => {
                let n = self.billing.plan_shard(period, shard).await?;
                Self::count(m, "BillJobsSent", n as u64);
                Ok(
                    serde_json::json!({"action": "plan_shard", "period": period, "shard": shard, "bill_jobs": n}),
                )
            }
            Job::Bill { customer, period } => match self.billing.bill(&customer, period).await {
                Ok(outcome) => {
                    let (name, v) = match &outcome {
                        BillOutcome::Invoiced { .. } => {
                            ("InvoicesCreated", serde_json::json!("invoiced"))
                        }
                        BillOutcome::AlreadyBilled => {
                            ("InvoicesSkipped", serde_json::json!("already_billed"))
                        }
                        BillOutcome::NothingToBill => {
                            ("InvoicesEmpty", serde_json::json!("nothing_to_bill"))
                        }
                    };
                    Self::count(m, name, 1);
                    let (invoice, total) = match outcome {
                        BillOutcome::Invoiced {
                            stripe_invoice,
                            total,
                            ..
                        } => (stripe_invoice, Some(total)),
                        _ => (None, None),
                    };
                    Ok(
                        serde_json::json!({"action": "bill", "customer": customer, "period": period,
                        "outcome": v, "stripe_invoice": invoice, "total": total}),
                    )
                }
                Err(e) => {
                    Self::count(m, "InvoicesFailed", 1);
                    tracing::error!(customer_id = %customer, %period, error = %e.chain(), retryable = e.is_retryable(), "bill failed");
                    Err(e)
                }
            },
            Job::GrantCredit {
                customer,
                grant_id,
                amount,
                currency,
            } => {
                let added = self
                    .billing
                    .grant_credit(&customer, &grant_id, Money::new(amount, currency))
                    .await?;
                Ok(
                    serde_json::json!({"action": "grant_credit", "customer": customer, "grant_id": grant_id, "added": added}),
                )
            }
        }
    }
}
