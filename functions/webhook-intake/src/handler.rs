//! Translates a Function URL request into an intake call and the answer back.
//!
//! Path from `rawPath` (else `requestContext.http.path`), method from
//! `requestContext.http.method`, headers case-insensitive, body as given with its
//! `isBase64Encoded` flag. Every outcome is an HTTP answer (the handler never returns a Lambda
//! error, which a Function URL would turn into an opaque 502); one EMF metric line per
//! invocation.

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use blapi::aws::Clients;
use blapi::ledger::{DynamoLedger, Ledger};
use blapi::queue::{QueueSender, SqsSender};
use blapi::storage::{ObjectStore, S3Store};
use blapi::webhook::config::Verifiers;
use blapi::webhook::{Config, Inbound, Intake, Reply, SourceSecrets, StripeSecrets};
use chrono::{DateTime, Utc};
use lambda_runtime::{Diagnostic, LambdaEvent};
use std::sync::Arc;

/// The function's name, a metric dimension.
pub const FUNCTION: &str = "webhook-intake";

/// The adapters webhook-intake runs on: [`Ports::connect`] in Lambda, fakes in tests.
pub struct Ports {
    /// The signature verifiers built from the webhook secrets.
    pub verifiers: Verifiers,
    pub ledger: Arc<dyn Ledger>,
    /// The raw archive (and the claim check of large messages).
    pub store: Arc<dyn ObjectStore>,
    pub sender: Arc<dyn QueueSender>,
}

impl Ports {
    /// Loads both webhook secrets (once, concurrently) and builds the real adapters
    /// (DynamoDB ledger, S3 archive, SQS with claim check).
    pub async fn connect(config: &Config, clients: &Clients) -> blapi::Result<Self> {
        let (stripe, sources) = tokio::try_join!(
            blapi::secrets::load_json::<StripeSecrets>(clients.secrets(), &config.stripe_secret_id),
            blapi::secrets::load_json::<SourceSecrets>(clients.secrets(), &config.source_secret_id),
        )?;
        let verifiers = Verifiers::new(
            stripe.expose(),
            sources.expose(),
            (&config.stripe_secret_id, &config.source_secret_id),
        )?;
        let store: Arc<dyn ObjectStore> =
            Arc::new(S3Store::new(clients.s3().clone(), &config.bucket));
        tracing::info!(sources = ?verifiers.known(), "webhook-intake ready");
        Ok(Self {
            verifiers,
            ledger: Arc::new(DynamoLedger::new(
                clients.dynamodb().clone(),
                &config.ledger_table,
            )),
            sender: Arc::new(SqsSender::new(clients.sqs().clone(), store.clone())),
            store,
        })
    }
}

/// What the function is invoked with: a webhook through the Function URL, or the daily
/// schedule's (or an operator's) `{"action": "recover_stripe"}`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Invocation {
    Action(Action),
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
}

/// How far back the scheduled recovery looks by default: a daily run with two days of
/// overlap, so one failed run loses nothing.
pub const DEFAULT_RECOVERY_DAYS: i64 = 3;

/// The answer: the Function URL response, or the recovery's report.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Answer {
    Url(LambdaFunctionUrlResponse),
    Recovery(blapi::webhook::recovery::RecoveryReport),
}

/// Everything built once per cold start.
pub struct App {
    intake: Intake,
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
            .field("recovery", &self.recovery.is_some())
            .finish()
    }
}

impl App {
    /// The intake service (the operator's missed-event recovery feeds it directly).
    pub fn intake(&self) -> &Intake {
        &self.intake
    }

    pub fn new(config: Config, ports: Ports) -> Self {
        Self {
            intake: Intake::new(
                &config,
                ports.verifiers,
                ports.ledger,
                ports.store,
                ports.sender,
            ),
            metrics_namespace: config.metrics_namespace,
            recovery: None,
        }
    }

    /// Indexes archived events under the people they name (when the configuration names the
    /// subject index).
    pub async fn with_subjects(
        mut self,
        config: &Config,
        clients: &Clients,
    ) -> Result<Self, blapi::Error> {
        if let Some(sc) = &config.subjects {
            let subjects = blapi::subjects::Subjects::connect(sc, clients).await?;
            self.intake = self.intake.with_subjects(subjects);
        }
        Ok(self)
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
            Invocation::Url(req) if req.request_context.http.method.is_none() => Err(Diagnostic {
                error_type: "InvalidInvocation".to_owned(),
                error_message: "neither a Function URL request nor a known action \
                        ({\"action\": \"recover_stripe\", \"days\": 1-30, \"dry_run\": bool})"
                    .to_owned(),
            }),
            Invocation::Url(req) => Ok(Answer::Url(
                self.handle(LambdaEvent::new(*req, context)).await?,
            )),
            Invocation::Action(action) => self
                .act(action, Utc::now())
                .await
                .map(Answer::Recovery)
                .map_err(|e| Diagnostic {
                    error_type: "RecoveryFailed".to_owned(),
                    error_message: e.chain(),
                }),
        }
    }

    /// Runs a direct invocation's action at `now`; the count of recovered events is the
    /// `StripeEventsRecovered` metric (the alarm's and the dashboard's).
    pub async fn act(
        &self,
        action: Action,
        now: DateTime<Utc>,
    ) -> blapi::Result<blapi::webhook::recovery::RecoveryReport> {
        let Action::RecoverStripe { days, dry_run } = action;
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
