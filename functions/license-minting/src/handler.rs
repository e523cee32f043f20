//! Event in, domain call, answer out.
//!
//! The function receives either an SQS batch (`{"Records": [...]}`, each body an
//! [`EventMessage`]) or an admin request (`{"action": ...}`); it dispatches on that shape.
//! SQS records are handled one by one and only the failed ones are reported
//! (`batchItemFailures`), so a poison message never fails its neighbours. Admin requests
//! answer JSON or fail with a `Diagnostic` saying whether a retry can help.

use aws_lambda_events::event::sqs::SqsEvent;
use blapi::aws::Clients;
use blapi::deadline::{Deadline, within};
use blapi::error::{Error, Result};
use blapi::licensing::{
    AdminRequest, Config, DynamoLicenseStore, KmsSigner, LicenseService, LicenseSigner,
    LicenseStore, Outcome,
};
use blapi::queue::{EventMessage, QueueSender, SqsSender, process_batch};
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::{StripeClient, StripeReads};
use blapi::telemetry::Tally;
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use std::sync::Arc;

/// The function's name, a metric dimension.
pub const FUNCTION: &str = "license-minting";

/// The adapters license-minting runs on: [`Ports::connect`] in Lambda, fakes in tests.
#[derive(Clone)]
pub struct Ports {
    pub stripe: Arc<dyn StripeReads>,
    pub signer: Arc<dyn LicenseSigner>,
    pub store: Arc<dyn LicenseStore>,
    /// License files, the revocation list, and claim-checked message bodies.
    pub files: Arc<dyn ObjectStore>,
    /// Where license changes are announced (customer-events), workspace changes sent
    /// (provisioning) and notices sent (notifications), when configured.
    pub queue: Option<Arc<dyn QueueSender>>,
}

impl Ports {
    /// KMS signer on `LICENSE_KEY_ID`, Stripe with the key from Secrets Manager, the licenses
    /// table, S3.
    pub async fn connect(config: &Config, clients: &Clients) -> Result<Self> {
        let files: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
            clients.s3().clone(),
            config.artifacts_bucket.clone(),
        ));
        Ok(Self {
            stripe: Arc::new(StripeClient::from_secret(&config.stripe, clients.secrets()).await?),
            signer: Arc::new(KmsSigner::new(clients.kms().clone(), config.key_id.clone())),
            store: Arc::new(DynamoLicenseStore::new(
                clients.dynamodb().clone(),
                config.licenses_table.clone(),
            )),
            files: files.clone(),
            queue: (config.customer_events_queue_url.is_some()
                || config.provisioning_queue_url.is_some()
                || config.notifications_queue_url.is_some())
            .then(|| {
                Arc::new(SqsSender::new(clients.sqs().clone(), files)) as Arc<dyn QueueSender>
            }),
        })
    }
}

/// Everything built once per cold start.
pub struct App {
    service: LicenseService,
    files: Arc<dyn ObjectStore>,
    metrics_namespace: String,
}

impl App {
    pub fn new(config: Config, ports: Ports) -> Self {
        let mut service =
            LicenseService::new(ports.stripe, ports.signer, ports.store, ports.files.clone())
                .with_superseded_grace(config.superseded_grace);
        if let Some(queue) = ports.queue {
            if let Some(url) = config.customer_events_queue_url {
                service = service.with_announcements(queue.clone(), url);
            }
            if let Some(url) = config.provisioning_queue_url {
                service = service.with_provisioning(queue.clone(), url);
            }
            if let Some(url) = config.notifications_queue_url {
                service = service.with_notifications(queue, url);
            }
        }
        Self {
            service,
            files: ports.files,
            metrics_namespace: config.metrics_namespace,
        }
    }

    /// Fetches the public key once, so every license then costs one KMS call. A failure is
    /// not fatal: the first request tries again and reports it.
    pub async fn warm(self) -> Self {
        if let Err(e) = self.service.public_key().await {
            tracing::warn!(error = %e.chain(), "public key not available at start");
        }
        self
    }

    /// The domain service.
    pub fn service(&self) -> &LicenseService {
        &self.service
    }

    /// The Lambda entry point: an SQS batch or an admin request.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value> {
        let deadline = Deadline::from_context(&event.context);
        let payload = event.payload;
        if payload.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(payload).map_err(|e| {
                Error::Invalid(format!(
                    "not an SQS event: {}",
                    blapi::error::json_error(&e)
                ))
            })?;
            return self.handle_batch(batch, deadline).await;
        }
        if payload.get("action").is_some() {
            let request: AdminRequest = serde_json::from_value(payload)
                .map_err(|e| Error::Invalid(format!("bad admin request: {e}")))?;
            return within(deadline, self.service.admin(request)).await;
        }
        Err(Error::Invalid(
            "expected an SQS event (Records) or an admin request (action)".into(),
        ))
    }

    async fn handle_batch(&self, batch: SqsEvent, deadline: Option<Deadline>) -> Result<Value> {
        let tally = Tally::new(&self.metrics_namespace, FUNCTION);
        tally.count("Records", batch.records.len() as u64);
        let service = &self.service;
        let response = process_batch(batch, self.files.as_ref(), deadline, |record| {
            let tally = &tally;
            async move {
                let msg: EventMessage = record.json()?;
                match service.handle_event(&msg).await? {
                    Outcome::Minted { .. } => tally.one("LicensesMinted"),
                    Outcome::Revoked { license_ids } => {
                        tally.count("LicensesRevoked", license_ids.len() as u64)
                    }
                    _ => {}
                };
                Ok(())
            }
        })
        .await;
        tally.count("RecordFailures", response.batch_item_failures.len() as u64);
        tally.flush();
        serde_json::to_value(&response).map_err(|e| Error::Invalid(format!("batch response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blapi::licensing::{InProcessSigner, LicenseStatus, MemoryLicenseStore};
    use blapi::storage::MemoryStore;
    use blapi::stripe::MemoryStripe;
    use lambda_runtime::Context;
    use serde_json::json;

    fn app() -> (App, Arc<MemoryStripe>, Arc<MemoryLicenseStore>) {
        let stripe = Arc::new(MemoryStripe::new());
        let store = Arc::new(MemoryLicenseStore::new());
        let files = Arc::new(MemoryStore::new());
        let signer = Arc::new(InProcessSigner::generate().expect("key"));
        stripe.put_customer(json!({"id": "cus_1", "name": "Ada", "email": "ada@example.com"}));
        let now = chrono_now();
        stripe.put_subscription(json!({"id": "sub_1", "customer": "cus_1", "status": "active",
            "current_period_start": now - 60, "current_period_end": now + 30 * 86400,
            "items": {"data": [{"id": "si_1", "quantity": 4, "plan": {"id": "plan_1", "metadata": {"sku": "professional"}}}]}}));
        let ports = Ports {
            stripe: stripe.clone(),
            signer,
            store: store.clone(),
            files,
            queue: None,
        };
        (App::new(test_config(), ports), stripe, store)
    }

    fn test_config() -> Config {
        Config::from_env(&blapi::config::Env::from_map([
            ("LICENSES_TABLE", "licenses"),
            ("LICENSE_KEY_ID", "alias/test"),
            ("STRIPE_API_BASE", "http://127.0.0.1:9"),
            ("STRIPE_API_KEY_SECRET_ID", "unused"),
            ("ARTIFACTS_BUCKET", "artifacts"),
        ]))
        .expect("config")
    }

    fn chrono_now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn sqs(bodies: &[&str]) -> Value {
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| json!({"messageId": format!("m{i}"), "body": b, "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs"}))
            .collect();
        json!({ "Records": records })
    }

    fn message(event_id: &str, sub: &str) -> String {
        json!({"id": event_id, "source": "stripe", "type": "customer.subscription.created",
            "received_at": "2026-11-25T10:00:00Z", "raw_key": format!("raw/stripe/{event_id}.json"),
            "event": {"id": event_id, "type": "customer.subscription.created", "data": {"object": {"object": "subscription", "id": sub}}}})
        .to_string()
    }

    async fn call(app: &App, payload: Value) -> Result<Value> {
        app.handle(LambdaEvent::new(payload, Context::default()))
            .await
    }

    #[tokio::test]
    async fn batch_reports_only_the_bad_records() {
        let (app, _, store) = app();
        let good = message("evt_1", "sub_1");
        let unknown = message("evt_2", "sub_unknown");
        let resp = call(&app, sqs(&[&good, "{not json", &unknown, &good]))
            .await
            .unwrap();
        let failed: Vec<&str> = resp["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap())
            .collect();
        assert_eq!(failed, vec!["m1", "m2"]);
        assert_eq!(store.all().len(), 1, "the duplicate did not mint twice");
    }

    #[tokio::test]
    async fn admin_actions() {
        let (app, _, store) = app();
        let minted = call(&app, json!({"action": "mint", "subscription": "sub_1"}))
            .await
            .unwrap();
        assert_eq!(minted["outcome"], "minted");
        let id = minted["license_id"].as_str().unwrap().to_owned();

        let list = call(&app, json!({"action": "list", "customer": "cus_1"}))
            .await
            .unwrap();
        assert_eq!(list["count"], 1);
        assert_eq!(list["licenses"][0]["status"], "ACTIVE");
        assert!(
            list["licenses"][0].get("file").is_none(),
            "files are not listed"
        );

        let ok = call(&app, json!({"action": "verify", "license_id": id}))
            .await
            .unwrap();
        assert_eq!(ok["valid"], true, "{ok}");
        assert!(
            ok["public_key_pem"]
                .as_str()
                .unwrap()
                .contains("BEGIN PUBLIC KEY")
        );

        let file = store.all()[0].file.clone();
        let by_file = call(&app, json!({"action": "verify", "license": file}))
            .await
            .unwrap();
        assert_eq!(by_file["valid"], true);
        let bad = call(&app, json!({"action": "verify", "license": "AAAA"}))
            .await
            .unwrap();
        assert_eq!(
            (bad["valid"].as_bool(), bad["reason"].as_str()),
            (Some(false), Some("truncated"))
        );

        let revoked = call(
            &app,
            json!({"action": "revoke", "license_id": id, "reason": "refunded"}),
        )
        .await
        .unwrap();
        assert_eq!(revoked["outcome"], "revoked");
        assert_eq!(store.all()[0].status, LicenseStatus::Revoked);
        let after = call(&app, json!({"action": "verify", "license_id": id}))
            .await
            .unwrap();
        assert_eq!(after["reason"], "revoked");

        let published = call(&app, json!({"action": "publish"})).await.unwrap();
        assert_eq!(
            published["revocation_list_rewritten"], false,
            "already current"
        );
    }

    #[tokio::test]
    async fn bad_requests_are_permanent_errors() {
        let (app, _, _) = app();
        for bad in [
            json!({"hello": 1}),
            json!({"action": "explode"}),
            json!({"action": "list"}),
            json!({"action": "revoke", "license_id": "nope"}),
            json!({"action": "verify", "license": "x", "license_id": "y"}),
        ] {
            let e = call(&app, bad.clone()).await.unwrap_err();
            assert!(!e.is_retryable(), "{bad}: {e:?}");
        }
    }

    fn sample(name: &str) -> Value {
        let path = format!(
            "{}/../../events/license-minting/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[tokio::test]
    async fn sample_events_drive_the_handler() {
        let (app, stripe, store) = app();
        let now = chrono_now();
        let sub = |status: &str, qty: u64| {
            json!({"id": "sub_SampleLicense0001", "customer": "cus_SampleLicense0001", "status": status,
                "current_period_start": now - 60, "current_period_end": now + 30 * 86400,
                "items": {"data": [{"id": "si_SampleLicense0001", "quantity": qty,
                    "price": {"id": "price_SampleProfessional", "product": "prod_SampleMattermost", "metadata": {"sku": "professional"}}}]}})
        };
        stripe.put_customer(
            json!({"id": "cus_SampleLicense0001", "name": "Sample Co", "email": "ops@example.com"}),
        );
        stripe.put_subscription(sub("active", 5));
        let ok = |v: &Value| v["batchItemFailures"].as_array().map(Vec::len) == Some(0);
        for name in [
            "sqs-subscription-created.json",
            "sqs-invoice-paid.json",
            "sqs-invoice-payment-succeeded.json",
            "sqs-checkout-session-completed.json",
        ] {
            let resp = call(&app, sample(name)).await.unwrap();
            assert!(ok(&resp), "{name}: {resp}");
        }
        assert_eq!(store.all().len(), 1);

        let resp = call(&app, sample("sqs-batch-duplicates-and-poison.json"))
            .await
            .unwrap();
        let failed: Vec<&str> = resp["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap())
            .collect();
        assert_eq!(
            failed,
            vec!["0e4f7c2a-0000-4000-8000-000000000002"],
            "only the poison record"
        );

        stripe.put_subscription(sub("active", 12));
        assert!(ok(&call(
            &app,
            sample("sqs-subscription-updated-seats.json")
        )
        .await
        .unwrap()));
        assert_eq!(store.all().len(), 2, "seat change superseded");

        let listed = call(&app, sample("admin-list-subscription.json"))
            .await
            .unwrap();
        assert_eq!(listed["count"], 2);
        assert_eq!(
            call(&app, sample("admin-list-customer.json"))
                .await
                .unwrap()["count"],
            2
        );
        assert_eq!(
            call(&app, sample("admin-mint.json")).await.unwrap()["outcome"],
            "existing"
        );
        let verify = call(&app, sample("admin-verify-file.json")).await.unwrap();
        assert_eq!(verify["reason"], "truncated");
        // The sample ids name no stored license.
        assert!(matches!(
            call(&app, sample("admin-verify-id.json")).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            call(&app, sample("admin-revoke.json")).await,
            Err(Error::NotFound(_))
        ));

        stripe.put_subscription(sub("canceled", 12));
        assert!(ok(&call(&app, sample("sqs-subscription-deleted.json"))
            .await
            .unwrap()));
        assert!(
            store
                .all()
                .iter()
                .all(|r| r.status == LicenseStatus::Revoked),
            "both revoked"
        );
        assert_eq!(
            call(&app, sample("admin-publish.json")).await.unwrap()["published"],
            true
        );
    }

    #[test]
    fn config_names_the_missing_variable() {
        let e =
            Config::from_env(&blapi::config::Env::from_map([("LICENSES_TABLE", "t")])).unwrap_err();
        assert!(e.to_string().contains("LICENSE_KEY_ID"), "{e}");
    }
}
