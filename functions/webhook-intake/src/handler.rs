//! Translates each kind of invocation into a call of [`blapi::webhook`] and the answer back.
//!
//! - A Function URL request: path from `rawPath` (else `requestContext.http.path`), method from
//!   `requestContext.http.method`, headers case-insensitive, body as given with its
//!   `isBase64Encoded` flag. Every outcome is an HTTP answer (the handler never returns a
//!   Lambda error, which a Function URL would turn into an opaque 502); an EMF metric line for
//!   a refusal only.
//! - An SQS batch of the events queue: the archiver's records, answered with
//!   `batchItemFailures`.
//! - `{"action": "seal"}` (the hourly schedule) and `{"action": "recover_stripe"}` (the daily
//!   one): their reports.

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use blapi::archive::{self, Hour, SealReport};
use blapi::aws::Clients;
use blapi::queue::{QueueSender, SqsSender};
use blapi::storage::{ObjectStore, S3Store};
use blapi::subjects::SubjectKey;
use blapi::webhook::archiver::{Archiver, Record};
use blapi::webhook::config::Verifiers;
use blapi::webhook::{Config, Inbound, Intake, Reply, SourceSecrets, StripeSecrets};
use chrono::{DateTime, Utc};
use lambda_runtime::{Diagnostic, LambdaEvent};
use std::sync::Arc;

/// The function's name, a metric dimension (both functions of the binary count under it, so
/// the dashboard's `WebhookAccepted` reads the same).
pub const FUNCTION: &str = "webhook-intake";

/// The adapters webhook-intake runs on: [`Ports::connect`] in Lambda, fakes in tests.
pub struct Ports {
    /// The signature verifiers built from the webhook secrets (none on the archiver's
    /// function).
    pub verifiers: Verifiers,
    /// The archive (and the claim check of large messages).
    pub store: Arc<dyn ObjectStore>,
    pub sender: Arc<dyn QueueSender>,
    /// The key of the subject hashes the archiver writes (the archiver's function only).
    pub subject_key: Option<SubjectKey>,
}

impl Ports {
    /// Loads what the configuration names, once: the webhook secrets (concurrently) on the
    /// intake's function, the subject key on the archiver's; builds the S3 store and the SQS
    /// sender with claim check. No DynamoDB client.
    pub async fn connect(config: &Config, clients: &Clients) -> blapi::Result<Self> {
        let verifiers = match &config.webhook_secrets {
            Some(ids) => {
                let (stripe, sources) = tokio::try_join!(
                    blapi::secrets::load_json::<StripeSecrets>(clients.secrets(), &ids.stripe),
                    blapi::secrets::load_json::<SourceSecrets>(clients.secrets(), &ids.sources),
                )?;
                Verifiers::new(
                    stripe.expose(),
                    sources.expose(),
                    (&ids.stripe, &ids.sources),
                )?
            }
            None => Verifiers::default(),
        };
        let subject_key = match &config.archiver {
            Some(a) => {
                Some(SubjectKey::from_secret(clients.secrets(), &a.subject_key_secret_id).await?)
            }
            None => None,
        };
        let store: Arc<dyn ObjectStore> =
            Arc::new(S3Store::new(clients.s3().clone(), &config.bucket));
        tracing::info!(sources = ?verifiers.known(), archiver = subject_key.is_some(), "webhook-intake ready");
        Ok(Self {
            verifiers,
            sender: Arc::new(SqsSender::new(clients.sqs().clone(), store.clone())),
            store,
            subject_key,
        })
    }
}

/// What the function is invoked with: a webhook through the Function URL, a batch of the
/// events queue, or a direct invocation (the schedules, an operator).
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Invocation {
    Action(Action),
    /// Tried before `Url`: an SQS event always has `Records` (a Function URL request never).
    Sqs(SqsEvent),
    Url(Box<LambdaFunctionUrlRequest>),
}

/// A direct invocation (never reachable through the Function URL, whose events have no
/// `action`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Stripe's missed-event recovery over the last `days` (default 3, at most 30).
    RecoverStripe {
        #[serde(default)]
        days: Option<i64>,
        #[serde(default)]
        dry_run: bool,
    },
    /// The archive's seal: every hour with batch objects before the current one (the hourly
    /// schedule); `all` includes the current hour; `hour` (`2026-03-02T10`) seals just that
    /// one.
    Seal {
        #[serde(default)]
        hour: Option<String>,
        #[serde(default)]
        all: bool,
    },
}

/// How far back the scheduled recovery looks by default: a daily run with two days of
/// overlap, so one failed run loses nothing.
pub const DEFAULT_RECOVERY_DAYS: i64 = 3;

/// The answer: the Function URL response, the batch response, or an action's report.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Answer {
    Url(LambdaFunctionUrlResponse),
    Batch(SqsBatchResponse),
    Recovery(blapi::webhook::recovery::RecoveryReport),
    Sealed(SealReport),
}

/// Everything built once per cold start.
pub struct App {
    intake: Intake,
    archiver: Option<Archiver>,
    store: Arc<dyn ObjectStore>,
    metrics_namespace: String,
    /// The Stripe API client of the recovery: loaded on its first use only, so a webhook's
    /// cold start never waits for the API key.
    recovery: Option<(
        blapi::stripe::StripeConfig,
        aws_sdk_secretsmanager::Client,
        tokio::sync::OnceCell<blapi::stripe::StripeClient>,
    )>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("intake", &self.intake)
            .field("archiver", &self.archiver)
            .field("recovery", &self.recovery.is_some())
            .finish()
    }
}

fn invalid(error_type: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        error_type: error_type.to_owned(),
        error_message: message.into(),
    }
}

impl App {
    /// The intake service (the operator's missed-event recovery feeds it directly).
    pub fn intake(&self) -> &Intake {
        &self.intake
    }

    /// The archive's store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn new(config: Config, ports: Ports) -> Self {
        let archiver = match (&config.archiver, ports.subject_key) {
            (Some(a), Some(key)) => Some(Archiver::new(
                a,
                ports.store.clone(),
                ports.sender.clone(),
                key,
            )),
            _ => None,
        };
        Self {
            intake: Intake::new(&config, ports.verifiers, ports.sender),
            archiver,
            store: ports.store,
            metrics_namespace: config.metrics_namespace,
            recovery: None,
        }
    }

    /// Enables the missed-event recovery action (when the configuration names the Stripe API).
    pub fn with_recovery(mut self, config: &Config, clients: &Clients) -> Self {
        self.recovery = config.stripe_api.clone().map(|stripe| {
            (
                stripe,
                clients.secrets().clone(),
                tokio::sync::OnceCell::new(),
            )
        });
        self
    }

    /// The Lambda entry point of every invocation.
    pub async fn dispatch(&self, event: LambdaEvent<Invocation>) -> Result<Answer, Diagnostic> {
        let (payload, context) = event.into_parts();
        match payload {
            // Every Function URL event names its method; a direct invocation without one is
            // a mistyped action, refused rather than answered as a webhook.
            Invocation::Url(req) if req.request_context.http.method.is_none() => Err(invalid(
                "InvalidInvocation",
                "neither a Function URL request, an SQS batch nor a known action \
                        ({\"action\": \"recover_stripe\", \"days\": 1-30, \"dry_run\": bool} or \
                        {\"action\": \"seal\", \"hour\": \"YYYY-MM-DDTHH\", \"all\": bool})",
            )),
            Invocation::Url(req) => Ok(Answer::Url(
                self.handle(LambdaEvent::new(*req, context)).await?,
            )),
            Invocation::Sqs(batch) => Ok(Answer::Batch(self.archive(batch).await?)),
            Invocation::Action(Action::Seal { hour, all }) => self
                .seal(hour.as_deref(), all, Utc::now())
                .await
                .map(Answer::Sealed)
                .map_err(|e| invalid("SealFailed", e.chain())),
            Invocation::Action(action) => self
                .act(action, Utc::now())
                .await
                .map(Answer::Recovery)
                .map_err(|e| invalid("RecoveryFailed", e.chain())),
        }
    }

    /// An events-queue batch: archived, forwarded, answered with the records to redeliver.
    /// One log line and a few metric lines per batch, none per event.
    pub async fn archive(&self, batch: SqsEvent) -> Result<SqsBatchResponse, Diagnostic> {
        let archiver = self.archiver.as_ref().ok_or_else(|| {
            invalid(
                "NotTheArchiver",
                "this function has no routed queues configured (the *_QUEUE_URL of each route and PRIVACY_KEY_SECRET_ID)",
            )
        })?;
        let records = batch
            .records
            .into_iter()
            .map(|r| Record {
                message_id: r.message_id.unwrap_or_default(),
                body: r.body,
            })
            .collect();
        let report = archiver.archive(records).await;
        for mut m in report.metrics(&self.metrics_namespace, FUNCTION) {
            m.flush();
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = report
            .failed
            .into_iter()
            .map(|id| {
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                f
            })
            .collect();
        Ok(response)
    }

    /// The seal: one hour, or every hour with batch objects (the current one too with `all`).
    pub async fn seal(
        &self,
        hour: Option<&str>,
        all: bool,
        now: DateTime<Utc>,
    ) -> blapi::Result<SealReport> {
        let store = self.store.as_ref();
        let report = match hour {
            Some(text) => {
                let hour = Hour::parse(text).ok_or_else(|| {
                    blapi::Error::Invalid(format!("hour {text:?} is not YYYY-MM-DDTHH"))
                })?;
                let done = archive::seal_hour(store, hour).await?;
                SealReport {
                    merged: done.merged,
                    events: done.events,
                    duplicates: done.duplicates,
                    hours: vec![done],
                    skipped: Vec::new(),
                }
            }
            None => archive::seal(store, now, all).await?,
        };
        let mut m = blapi::telemetry::Metrics::new(&self.metrics_namespace, FUNCTION);
        m.count("ArchiveHoursSealed", report.hours.len() as u64);
        m.count("ArchiveDuplicatesDropped", report.duplicates as u64);
        m.flush();
        Ok(report)
    }

    /// Runs the recovery at `now`; the count of recovered events is the
    /// `StripeEventsRecovered` metric (the alarm's and the dashboard's).
    pub async fn act(
        &self,
        action: Action,
        now: DateTime<Utc>,
    ) -> blapi::Result<blapi::webhook::recovery::RecoveryReport> {
        let Action::RecoverStripe { days, dry_run } = action else {
            return Err(blapi::Error::Invalid(
                "act runs the recovery; the seal is App::seal".into(),
            ));
        };
        let days = days.unwrap_or(DEFAULT_RECOVERY_DAYS);
        if !(1..=blapi::webhook::recovery::MAX_LOOKBACK_DAYS).contains(&days) {
            return Err(blapi::Error::Invalid(format!(
                "days must be 1 to {}, not {days}",
                blapi::webhook::recovery::MAX_LOOKBACK_DAYS
            )));
        }
        let Some((config, secrets, client)) = &self.recovery else {
            return Err(blapi::Error::Invalid(
                "recover_stripe needs STRIPE_API_KEY_SECRET_ID and STRIPE_API_BASE".into(),
            ));
        };
        let stripe = client
            .get_or_try_init(|| blapi::stripe::StripeClient::from_secret(config, secrets))
            .await?;
        let report = blapi::webhook::recovery::recover_stripe(
            stripe,
            &self.intake,
            Some(self.store.as_ref()),
            now - chrono::Duration::days(days),
            now,
            dry_run,
        )
        .await?;
        let mut m = blapi::telemetry::Metrics::new(&self.metrics_namespace, FUNCTION);
        m.count("StripeEventsRecovered", report.recovered);
        m.count("StripeRecoveryFailures", report.failed.len() as u64);
        m.flush();
        Ok(report)
    }

    /// The Lambda entry point.
    pub async fn handle(
        &self,
        event: LambdaEvent<LambdaFunctionUrlRequest>,
    ) -> Result<LambdaFunctionUrlResponse, Diagnostic> {
        let reply = self.reply(&event.payload, Utc::now()).await;
        reply
            .outcome
            .metrics(&self.metrics_namespace, FUNCTION)
            .flush();
        Ok(response(reply))
    }

    /// The intake's answer to `req` received at `now` (no metrics written).
    pub async fn reply(&self, req: &LambdaFunctionUrlRequest, now: DateTime<Utc>) -> Reply {
        let path = req
            .raw_path
            .as_deref()
            .or(req.request_context.http.path.as_deref())
            .unwrap_or("/");
        let method = req.request_context.http.method.as_deref().unwrap_or("");
        let inbound = Inbound {
            method,
            path,
            headers: &req.headers,
            body: req.body.as_deref(),
            is_base64_encoded: req.is_base64_encoded,
        };
        self.intake.receive(&inbound, now).await
    }

    /// [`App::reply`] as a Function URL response.
    pub async fn respond(
        &self,
        req: &LambdaFunctionUrlRequest,
        now: DateTime<Utc>,
    ) -> LambdaFunctionUrlResponse {
        response(self.reply(req, now).await)
    }
}

/// The Function URL response of an intake reply: JSON body and headers.
pub fn response(reply: Reply) -> LambdaFunctionUrlResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in &reply.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(*name, v);
        }
    }
    let mut resp = LambdaFunctionUrlResponse::default();
    resp.status_code = i64::from(reply.status);
    resp.headers = headers;
    resp.body = Some(reply.body);
    resp.is_base64_encoded = false;
    resp
}
