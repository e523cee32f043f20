//! The lead-enrichment handler: an SQS batch of [`EventMessage`]s in, a partial batch
//! response out. Each record goes through [`LeadService::handle`] on its own: one bad message
//! fails alone and SQS redelivers (then dead-letters) only that one.
//!
//! # Configuration (template.yaml)
//! - `LEADS_TABLE`, `CRM_TABLE`, `LEDGER_TABLE`, `ARTIFACTS_BUCKET`: resources.
//! - `ENRICHMENT_API_BASE`: the provider's base URL (`https://...`, with the key from
//!   `ENRICHMENT_SECRET_ID`, JSON `{"api_key"}`), **or** `fixture:` to answer from the bundled
//!   fixture `shared/data/enrichment-fixture.json` (the demo, no HTTP and no key), or
//!   `fixture:<path>` for a fixture file of the same shape.
//! - `ENRICHMENT_TIMEOUT_MS` (optional, default 3000): per provider attempt.
//! - `SALESFORCE_LOGIN_URL`: My Domain URL; empty = the built-in CRM sink. With it,
//!   `SALESFORCE_API_VERSION` (e.g. `v61.0`) and `SALESFORCE_SECRET_ID` (JSON
//!   `{"client_id", "client_secret"}`) are required; `SALESFORCE_EXTERNAL_ID_FIELD` is optional
//!   (default `Blapi_Lead_Id__c`).
//! - `METRICS_NAMESPACE` (optional, default `blapi`).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use blapi::aws::Clients;
use blapi::config::{ConfigError, Env, Secret};
use blapi::crm::{CrmPort, SalesforceConfig, SalesforceCredentials, SalesforceCrm, SinkCrm};
use blapi::leads::enrichment::{
    CacheTtl, Enricher, EnrichmentProvider, FixtureProvider, HttpProvider,
};
use blapi::leads::service::{LeadPorts, LeadService, Outcome};
use blapi::leads::store::DynamoLeadsTable;
use blapi::ledger::DynamoLedger;
use blapi::queue::{EventMessage, process_batch};
use blapi::retry::RetryPolicy;
use blapi::storage::{ObjectStore, S3Store};
use blapi::telemetry::Metrics;
use blapi::{Error, Result};
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The value of `ENRICHMENT_API_BASE` that selects the bundled fixture.
pub const FIXTURE_SCHEME: &str = "fixture:";

/// Knobs tests turn (retry delays); production uses the defaults.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    pub provider_retry: Option<RetryPolicy>,
    pub crm_retry: Option<RetryPolicy>,
}

#[derive(Deserialize)]
struct ApiKey {
    api_key: String,
}

/// Everything built once per cold start.
pub struct App {
    service: LeadService,
    store: Arc<dyn ObjectStore>,
    metrics_namespace: String,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.service)
            .finish()
    }
}

/// Counts of one batch, turned into EMF metrics.
#[derive(Default)]
struct BatchCounts {
    upserted: AtomicU64,
    created: AtomicU64,
    duplicates: AtomicU64,
    needs_enrichment: AtomicU64,
    provider_calls: AtomicU64,
}

impl App {
    /// Reads the configuration, loads the secrets and builds the ports.
    pub async fn new(env: Env, clients: Clients, opts: AppOptions) -> Result<Self> {
        let leads_table = env.required("LEADS_TABLE")?;
        let crm_table = env.required("CRM_TABLE")?;
        let ledger_table = env.required("LEDGER_TABLE")?;
        let bucket = env.required("ARTIFACTS_BUCKET")?;
        let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(clients.s3().clone(), bucket));
        let table = Arc::new(DynamoLeadsTable::new(
            clients.dynamodb().clone(),
            leads_table,
        ));

        let provider = provider(&env, &clients, &opts).await?;
        let crm = crm(&env, &clients, &opts, crm_table, store.clone()).await?;
        let ports = LeadPorts {
            store: table.clone(),
            accounts: table.clone(),
            counter: table.clone(),
            enricher: Enricher::new(provider, table, CacheTtl::default()),
            crm,
            ledger: Arc::new(DynamoLedger::new(clients.dynamodb().clone(), ledger_table)),
        };
        Ok(Self {
            service: LeadService::bundled(ports)?,
            store,
            metrics_namespace: env
                .optional("METRICS_NAMESPACE")
                .unwrap_or_else(|| "blapi".into()),
        })
    }

    /// An app on given ports (unit tests, benchmarks).
    pub fn with_service(service: LeadService, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            service,
            store,
            metrics_namespace: "blapi".into(),
        }
    }

    /// The service (tests reach the ports through it).
    pub fn service(&self) -> &LeadService {
        &self.service
    }

    /// Handles one SQS batch; only failed records are reported.
    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse> {
        let counts = BatchCounts::default();
        let response = process_batch(event.payload, self.store.as_ref(), |record| {
            let counts = &counts;
            async move {
                let msg: EventMessage = record.json()?;
                match self.service.handle(&msg).await? {
                    Outcome::Upserted {
                        crm_created,
                        needs_enrichment,
                        provider_called,
                        ..
                    } => {
                        counts.upserted.fetch_add(1, Ordering::Relaxed);
                        counts
                            .created
                            .fetch_add(u64::from(crm_created), Ordering::Relaxed);
                        counts
                            .needs_enrichment
                            .fetch_add(u64::from(needs_enrichment), Ordering::Relaxed);
                        counts
                            .provider_calls
                            .fetch_add(u64::from(provider_called), Ordering::Relaxed);
                    }
                    Outcome::Duplicate { .. } => {
                        counts.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
        })
        .await;
        let mut m = Metrics::new(self.metrics_namespace.clone(), "lead-enrichment");
        m.count("LeadsUpserted", counts.upserted.load(Ordering::Relaxed));
        m.count("LeadsCreatedInCrm", counts.created.load(Ordering::Relaxed));
        m.count("LeadsDuplicate", counts.duplicates.load(Ordering::Relaxed));
        m.count(
            "LeadsNeedingEnrichment",
            counts.needs_enrichment.load(Ordering::Relaxed),
        );
        m.count(
            "EnrichmentLookups",
            counts.provider_calls.load(Ordering::Relaxed),
        );
        m.count("LeadsFailed", response.batch_item_failures.len() as u64);
        m.flush();
        Ok(response)
    }
}

async fn provider(
    env: &Env,
    clients: &Clients,
    opts: &AppOptions,
) -> Result<Arc<dyn EnrichmentProvider>> {
    let base = env.required("ENRICHMENT_API_BASE")?;
    if let Some(path) = base.trim().strip_prefix(FIXTURE_SCHEME) {
        let fixture = if path.trim().is_empty() {
            FixtureProvider::bundled()?
        } else {
            FixtureProvider::from_file(path.trim())?
        };
        tracing::info!(
            domains = fixture.domains().len(),
            "enrichment answers from a fixture"
        );
        return Ok(Arc::new(fixture));
    }
    let base = env.url("ENRICHMENT_API_BASE")?;
    let secret_id = env.required("ENRICHMENT_SECRET_ID")?;
    let key = blapi::secrets::load_json::<ApiKey>(clients.secrets(), &secret_id).await?;
    let timeout = Duration::from_millis(env.parsed_or("ENRICHMENT_TIMEOUT_MS", 3000u64)?);
    let mut p = HttpProvider::new(base, Secret::new(key.expose().api_key.clone()), timeout)?;
    if let Some(policy) = opts.provider_retry {
        p = p.with_retry(policy);
    }
    Ok(Arc::new(p))
}

async fn crm(
    env: &Env,
    clients: &Clients,
    opts: &AppOptions,
    crm_table: String,
    store: Arc<dyn ObjectStore>,
) -> Result<Arc<dyn CrmPort>> {
    if env.optional("SALESFORCE_LOGIN_URL").is_none() {
        tracing::info!("no SALESFORCE_LOGIN_URL: leads go to the built-in CRM sink");
        return Ok(Arc::new(SinkCrm::new(
            clients.dynamodb().clone(),
            crm_table,
            store,
        )));
    }
    let login = env.url("SALESFORCE_LOGIN_URL")?;
    let version = env.required("SALESFORCE_API_VERSION")?;
    if !version.starts_with('v') {
        return Err(Error::Config(ConfigError::Malformed {
            name: "SALESFORCE_API_VERSION".into(),
            reason: "expected the form v61.0".into(),
        }));
    }
    let secret_id = env.required("SALESFORCE_SECRET_ID")?;
    let creds =
        blapi::secrets::load_json::<SalesforceCredentials>(clients.secrets(), &secret_id).await?;
    let mut cfg = SalesforceConfig::new(login, version);
    if let Some(field) = env.optional("SALESFORCE_EXTERNAL_ID_FIELD") {
        cfg.external_id_field = field;
    }
    let mut sf = SalesforceCrm::new(cfg, creds)?;
    if let Some(policy) = opts.crm_retry {
        sf = sf.with_retry(policy);
    }
    Ok(Arc::new(sf))
}
