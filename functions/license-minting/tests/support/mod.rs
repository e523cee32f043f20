//! What license-minting's local-stack tests share: the app as Lambda wires it on the
//! provisioned stack (with a counting KMS signer), localstripe purchases, SQS batches of
//! Stripe events, and an independent license verifier.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // helpers; a panic is the failure report

use base64::Engine;
use blapi::aws::Clients;
use blapi::config::{Env, Secret};
use blapi::licensing::Config;
use blapi::licensing::{CountingSigner, KmsSigner, LicenseSigner};
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::{StripeClient, form_pairs};
use lambda_runtime::{Context, LambdaEvent};
use license_minting::handler::{App, Ports};
use rsa::pkcs8::DecodePublicKey;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub fn localstripe_url() -> String {
    std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into())
}

pub struct Local {
    pub app: App,
    pub signer: Arc<CountingSigner<KmsSigner>>,
    pub clients: Clients,
    pub bucket: String,
}

pub async fn local_with_key(key_override: Option<&str>) -> Local {
    let stack = blapi_infra::testing::stack();
    let clients = Clients::new(&stack.sdk_config().await);
    let mut env = stack.env("license-minting");
    env.insert("STRIPE_API_BASE".into(), localstripe_url());
    let mut config = Config::from_env(&Env::from_map(env)).expect("config from the template");
    if let Some(k) = key_override {
        config.key_id = k.to_owned();
    }
    let bucket = config.artifacts_bucket.clone();
    let signer = Arc::new(CountingSigner::new(KmsSigner::new(
        clients.kms().clone(),
        config.key_id.clone(),
    )));
    let mut ports = Ports::connect(&config, &clients).await.expect("ports");
    ports.signer = signer.clone() as Arc<dyn LicenseSigner>;
    let app = App::new(config, ports).warm().await;
    Local {
        app,
        signer,
        clients,
        bucket,
    }
}

pub async fn local() -> Local {
    local_with_key(None).await
}

impl Local {
    pub async fn invoke(&self, payload: Value) -> blapi::Result<Value> {
        self.app
            .handle(LambdaEvent::new(payload, Context::default()))
            .await
    }
    pub fn files(&self) -> S3Store {
        S3Store::new(self.clients.s3().clone(), self.bucket.clone())
    }
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.files().get(key).await.expect("s3 get")
    }
    pub async fn keys_under(&self, prefix: &str) -> Vec<String> {
        let out = self
            .clients
            .s3()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }
    pub async fn licenses_of(&self, customer: &str) -> Vec<Value> {
        let v = self
            .invoke(json!({"action": "list", "customer": customer}))
            .await
            .expect("list");
        v["licenses"].as_array().cloned().unwrap_or_default()
    }
}

/// localstripe, through the same client the function uses.
pub struct Stripe(pub StripeClient);

impl Stripe {
    pub fn new() -> Self {
        Self(
            StripeClient::new(
                localstripe_url(),
                Secret::new("sk_test_blapi_local".into()),
                Duration::from_secs(10),
            )
            .expect("client"),
        )
    }
    pub async fn post(&self, path: &str, form: &[(&str, String)]) -> Value {
        let form = form_pairs(form.iter().map(|(k, v)| (*k, v.clone())));
        self.0
            .post::<Value>(path, &form, &uuid::Uuid::new_v4().to_string())
            .await
            .unwrap_or_else(|e| panic!("localstripe POST {path}: {}", e.chain()))
    }

    /// A paying customer with an active subscription of `quantity` seats of `sku`.
    pub async fn subscription(&self, sku: &str, quantity: u32) -> (String, String, String) {
        let product = self
            .post(
                "products",
                &[
                    ("name", "Mattermost".into()),
                    ("metadata[sku]", "enterprise".into()),
                ],
            )
            .await;
        let plan = self
            .post(
                "plans",
                &[
                    ("product", id_of(&product)),
                    ("amount", "1000".into()),
                    ("currency", "usd".into()),
                    ("interval", "month".into()),
                    ("metadata[sku]", sku.into()),
                ],
            )
            .await;
        let customer = self
            .post(
                "customers",
                &[
                    ("name", "Ada Lovelace".into()),
                    ("email", "ada@example.com".into()),
                    ("metadata[company]", "Analytical Engines".into()),
                ],
            )
            .await;
        let cus = id_of(&customer);
        self.post(
            &format!("customers/{cus}/sources"),
            &[
                ("source[object]", "card".into()),
                ("source[number]", "4242424242424242".into()),
                ("source[exp_month]", "12".into()),
                ("source[exp_year]", "2040".into()),
                ("source[cvc]", "123".into()),
            ],
        )
        .await;
        let sub = self
            .post(
                "subscriptions",
                &[
                    ("customer", cus.clone()),
                    ("items[0][plan]", id_of(&plan)),
                    ("items[0][quantity]", quantity.to_string()),
                ],
            )
            .await;
        assert_eq!(sub["status"], "active", "{sub}");
        let item = id_of(&sub["items"]["data"][0]);
        (cus, id_of(&sub), item)
    }

    pub async fn set_quantity(&self, sub: &str, item: &str, quantity: u32) {
        self.post(
            &format!("subscriptions/{sub}"),
            &[
                ("items[0][id]", item.into()),
                ("items[0][quantity]", quantity.to_string()),
            ],
        )
        .await;
    }

    pub async fn cancel(&self, sub: &str) {
        self.0
            .delete::<Value>(&format!("subscriptions/{sub}"))
            .await
            .unwrap_or_else(|e| panic!("cancel: {}", e.chain()));
    }
}

pub fn id_of(object: &Value) -> String {
    object["id"]
        .as_str()
        .expect("a Stripe object with an id")
        .to_owned()
}

/// An EventMessage body as webhook-intake enqueues it.
pub fn message(event_type: &str, sub: &str) -> String {
    let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let object = if event_type.starts_with("invoice.") {
        json!({"object": "invoice", "id": "in_x", "subscription": sub})
    } else {
        json!({"object": "subscription", "id": sub, "status": "stale copy: never trusted"})
    };
    json!({"id": id, "source": "stripe", "type": event_type, "received_at": "2026-11-25T10:00:00Z",
        "raw_key": format!("raw/stripe/{id}.json"),
        "event": {"id": id, "object": "event", "type": event_type, "created": 1_795_000_000, "data": {"object": object}}})
    .to_string()
}

pub fn batch(bodies: &[String]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            json!({"messageId": format!("m{i}"), "body": b, "eventSource": "aws:sqs",
                "attributes": {"ApproximateReceiveCount": "1"}})
        })
        .collect();
    json!({ "Records": records })
}

pub fn failures(resp: &Value) -> usize {
    resp["batchItemFailures"].as_array().map_or(0, Vec::len)
}

/// Verification written against the `rsa` crate directly: not the signing path's code.
pub fn independent_verify(pem: &str, file: &str) -> Value {
    let key = rsa::RsaPublicKey::from_public_key_pem(pem).expect("published PEM");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(file.trim())
        .expect("base64");
    assert!(raw.len() > 256);
    let (json, sig) = raw.split_at(raw.len() - 256);
    use sha2::Digest;
    key.verify(
        rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
        &sha2::Sha512::digest(json),
        sig,
    )
    .expect("signature verifies with the published key");
    serde_json::from_slice(json).expect("license JSON")
}
