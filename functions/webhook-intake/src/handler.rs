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

/// Everything built once per cold start.
#[derive(Debug)]
pub struct App {
    intake: Intake,
    metrics_namespace: String,
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
        }
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
