//! The lead-enrichment handler: an SQS batch of [`EventMessage`]s in, a partial batch
//! response out. Each record goes through [`LeadService::handle`] on its own: one bad message
//! fails alone and SQS redelivers (then dead-letters) only that one.
//!
//! The shape every function shares: [`Config`] from the environment (in `blapi::leads`, where
//! the variables are listed), [`Ports`] (connected once per cold start, or fakes in tests),
//! [`App::new`], [`App::handle`], one [`Tally`] of outcomes per invocation.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use blapi::Result;
use blapi::aws::Clients;
use blapi::config::Secret;
use blapi::deadline::Deadline;
use blapi::leads::Config;
use blapi::leads::config::EnrichmentSource;
use blapi::leads::enrichment::{
    CacheTtl, Enricher, EnrichmentProvider, FixtureProvider, HttpProvider,
};
use blapi::leads::service::{LeadPorts, LeadService, Outcome};
use blapi::leads::store::DynamoLeadsTable;
use blapi::ledger::DynamoLedger;
use blapi::queue::{EventMessage, process_batch};
use blapi::storage::{ObjectStore, S3Store};
use blapi::telemetry::Tally;
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use std::sync::Arc;

pub use blapi::leads::config::FIXTURE_SCHEME;

/// The function's name, a metric dimension.
pub const FUNCTION: &str = "lead-enrichment";

#[derive(Deserialize)]
struct ApiKey {
    api_key: String,
}

/// The adapters lead-enrichment runs on: [`Ports::connect`] in Lambda, fakes in tests.
#[derive(Clone)]
pub struct Ports {
    pub leads: LeadPorts,
    /// Where claim-checked message bodies are read.
    pub store: Arc<dyn ObjectStore>,
}

impl Ports {
    /// The LeadsTable, the enrichment provider (or fixture), Salesforce (or the built-in sink),
    /// the ledger; secrets read once.
    pub async fn connect(config: &Config, clients: &Clients) -> Result<Self> {
        let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
            clients.s3().clone(),
            config.artifacts_bucket.clone(),
        ));
        let subjects = blapi::subjects::Subjects::connect(&config.subjects, clients).await?;
        let table = Arc::new(DynamoLeadsTable::new(
            clients.dynamodb().clone(),
            config.leads_table.clone(),
            subjects.key.clone(),
        ));
        let provider = provider(config, clients).await?;
        let crm = config
            .crm
            .connect(clients, store.clone(), config.http_retry)
            .await?;
        Ok(Self {
            leads: LeadPorts {
                store: table.clone(),
                accounts: table.clone(),
                counter: table.clone(),
                enricher: Enricher::new(provider, table, CacheTtl::default()),
                crm,
                ledger: Arc::new(DynamoLedger::new(
                    clients.dynamodb().clone(),
                    config.ledger_table.clone(),
                )),
                subjects,
            },
            store,
        })
    }
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

impl App {
    /// The service with the bundled rules (scoring, territories) on `ports`.
    pub fn new(config: Config, ports: Ports) -> Result<Self> {
        Ok(Self {
            service: LeadService::bundled(ports.leads)?,
            store: ports.store,
            metrics_namespace: config.metrics_namespace,
        })
    }

    /// The service (tests reach the ports through it).
    pub fn service(&self) -> &LeadService {
        &self.service
    }

    /// Handles one SQS batch; only failed records are reported.
    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse> {
        let tally = Tally::new(self.metrics_namespace.clone(), FUNCTION);
        for name in [
            "LeadsUpserted",
            "LeadsCreatedInCrm",
            "LeadsDuplicate",
            "LeadsNeedingEnrichment",
            "EnrichmentLookups",
        ] {
            tally.count(name, 0);
        }
        let deadline = Deadline::from_context(&event.context);
        let response = process_batch(event.payload, self.store.as_ref(), deadline, |record| {
            let tally = &tally;
            async move {
                let msg: EventMessage = record.json()?;
                match self.service.handle(&msg).await? {
                    Outcome::Upserted {
                        crm_created,
                        needs_enrichment,
                        provider_called,
                        ..
                    } => {
                        tally.one("LeadsUpserted");
                        tally.count("LeadsCreatedInCrm", u64::from(crm_created));
                        tally.count("LeadsNeedingEnrichment", u64::from(needs_enrichment));
                        tally.count("EnrichmentLookups", u64::from(provider_called));
                    }
                    Outcome::Duplicate { .. } => tally.one("LeadsDuplicate"),
                    Outcome::Erased => tally.one("LeadsOfErasedPeople"),
                }
                Ok(())
            }
        })
        .await;
        tally.count("LeadsFailed", response.batch_item_failures.len() as u64);
        tally.flush();
        Ok(response)
    }
}

async fn provider(config: &Config, clients: &Clients) -> Result<Arc<dyn EnrichmentProvider>> {
    match &config.enrichment {
        EnrichmentSource::Fixture(path) => {
            let fixture = match path {
                None => FixtureProvider::bundled()?,
                Some(p) => FixtureProvider::from_file(p)?,
            };
            tracing::info!(
                domains = fixture.domains().len(),
                "enrichment answers from a fixture"
            );
            Ok(Arc::new(fixture))
        }
        EnrichmentSource::Http {
            base_url,
            secret_id,
            timeout,
        } => {
            let key = blapi::secrets::load_json::<ApiKey>(clients.secrets(), secret_id).await?;
            let mut p = HttpProvider::new(
                base_url.clone(),
                Secret::new(key.expose().api_key.clone()),
                *timeout,
            )?;
            if let Some(policy) = config.http_retry {
                p = p.with_retry(policy);
            }
            Ok(Arc::new(p))
        }
    }
}
