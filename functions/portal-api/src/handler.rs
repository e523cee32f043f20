//! portal-api's Lambda side: the Function URL event (payload 2.0) translated to the portal's
//! [`Request`], the [`PortalApi`]'s [`Response`] translated back, and [`connect`], which
//! builds the production adapters once per cold start.
//!
//! The API itself (routes, authentication, scoping, endpoints, problems) is
//! `blapi::portal`; this crate only adapts it to Lambda and AWS.

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use blapi::aws::Clients;
use blapi::billing::dynamo::DynamoBilling;
use blapi::billing::pricebook::PriceBook;
use blapi::customers::state::DynamoCustomers;
use blapi::error::Result;
use blapi::ledger::DynamoLedger;
use blapi::licensing::store::DynamoLicenseStore;
use blapi::portal::api::{PortalApi, Ports};
use blapi::portal::auth::{HttpKeySource, TokenVerifier};
use blapi::portal::config::Config;
use blapi::portal::http::{Request, Response};
use blapi::queue::SqsSender;
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::StripeClient;
use blapi::telemetry::Tally;
use lambda_runtime::{Diagnostic, LambdaEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The function's name in logs and metrics.
pub const FUNCTION: &str = "portal-api";

/// The production adapters: DynamoDB (customers, licenses, billing, the idempotency ledger),
/// S3 (license files, invoice artifacts), Stripe with its key from Secrets Manager, the CRM,
/// SQS (privacy requests), and the identity provider's JWKS over HTTPS.
pub async fn connect(config: &Config, clients: &Clients) -> Result<PortalApi> {
    let files: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
        clients.s3().clone(),
        config.artifacts_bucket.clone(),
    ));
    let billing = Arc::new(DynamoBilling::new(
        clients.dynamodb().clone(),
        config.billing_table.clone(),
    ));
    let (stripe, book, crm) = tokio::try_join!(
        StripeClient::from_secret(&config.stripe, clients.secrets()),
        billing.price_book(),
        config.crm.connect(clients, files.clone(), None),
    )?;
    let book = match book {
        Some(b) => b,
        None => PriceBook::embedded()?,
    };
    let verifier = TokenVerifier::new(
        config.auth.clone(),
        Arc::new(HttpKeySource::new(
            blapi::http::client(Duration::from_secs(5))?,
            config.jwks_url.clone(),
        )),
    );
    let ports = Ports {
        customers: Arc::new(DynamoCustomers::new(
            clients.dynamodb().clone(),
            config.customers_table.clone(),
        )),
        licenses: Arc::new(DynamoLicenseStore::new(
            clients.dynamodb().clone(),
            config.licenses_table.clone(),
        )),
        files: files.clone(),
        invoices: billing.clone(),
        dunning: billing.clone(),
        usage: billing.clone(),
        subscriptions: billing.clone(),
        credits: billing,
        book: Arc::new(book),
        stripe: Arc::new(stripe),
        crm,
        ledger: Arc::new(DynamoLedger::new(
            clients.dynamodb().clone(),
            config.ledger_table.clone(),
        )),
        queue: Arc::new(SqsSender::new(clients.sqs().clone(), files)),
        clock: Arc::new(chrono::Utc::now),
    };
    Ok(PortalApi::new(verifier, ports, config.settings.clone()))
}

/// Everything built once per cold start.
pub struct App {
    api: PortalApi,
    namespace: String,
}

impl App {
    /// `namespace`: where the request metrics go (`METRICS_NAMESPACE`).
    pub fn new(api: PortalApi, namespace: impl Into<String>) -> Self {
        Self {
            api,
            namespace: namespace.into(),
        }
    }

    /// The Lambda entry point: every request gets an HTTP answer (errors as problem
    /// documents), so the invocation itself never fails.
    pub async fn handle(
        &self,
        event: LambdaEvent<LambdaFunctionUrlRequest>,
    ) -> std::result::Result<LambdaFunctionUrlResponse, Diagnostic> {
        let started = Instant::now();
        let tally = Tally::new(self.namespace.clone(), FUNCTION);
        // Stripe retries inside give up rather than wait past the invocation's deadline.
        let deadline = blapi::deadline::Deadline::from_context(&event.context);
        let response = blapi::deadline::within(deadline, self.answer(&event.payload)).await;
        tally.one("PortalRequests");
        match response.status {
            500.. => tally.one("PortalServerErrors"),
            400..=499 => tally.one("PortalClientErrors"),
            _ => {}
        }
        // The status and time only: paths carry ids, bodies and headers may carry personal data.
        tracing::info!(
            status = response.status,
            ms = started.elapsed().as_millis() as u64,
            "portal request"
        );
        tally.flush();
        Ok(function_url_response(response))
    }

    /// The API's answer to one Function URL request.
    pub async fn answer(&self, event: &LambdaFunctionUrlRequest) -> Response {
        match request_of(event) {
            Some(req) => self.api.handle(&req).await,
            None => Response::problem(&blapi::portal::problem::Problem::invalid(
                "body",
                "the body is not valid base64",
            )),
        }
    }
}

/// The portal's request from a Function URL event: method, raw path, the decoded query
/// parameters, lower-cased headers, and the body (base64-decoded when Lambda encoded it).
/// `None` when a base64 body does not decode.
pub fn request_of(event: &LambdaFunctionUrlRequest) -> Option<Request> {
    let http = &event.request_context.http;
    let path = event
        .raw_path
        .as_deref()
        .or(http.path.as_deref())
        .unwrap_or("/");
    let body = match (&event.body, event.is_base64_encoded) {
        (None, _) => Vec::new(),
        (Some(b), false) => b.clone().into_bytes(),
        (Some(b), true) => base64::engine::general_purpose::STANDARD.decode(b).ok()?,
    };
    let headers = event
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
        .collect::<BTreeMap<_, _>>();
    Some(Request {
        method: http.method.clone().unwrap_or_default().to_ascii_uppercase(),
        path: path.to_owned(),
        query: event
            .query_string_parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        headers,
        body,
    })
}

/// A Function URL response: text bodies as they are, anything else base64.
pub fn function_url_response(r: Response) -> LambdaFunctionUrlResponse {
    let mut headers = HeaderMap::new();
    for (k, v) in &r.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    let mut out = LambdaFunctionUrlResponse::default();
    out.status_code = i64::from(r.status);
    out.headers = headers;
    match String::from_utf8(r.body) {
        Ok(text) => {
            out.body = Some(text);
            out.is_base64_encoded = false;
        }
        Err(e) => {
            out.body = Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()));
            out.is_base64_encoded = true;
        }
    }
    out
}
