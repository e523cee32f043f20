//! What customer-sync's tests and bench share: the app on in-memory ports, SQS batches,
//! Stripe objects and events of a purchase.

#![allow(dead_code, clippy::unwrap_used)] // helpers; a panic is the failure report

use aws_lambda_events::event::sqs::SqsEvent;
use blapi::crm::MemoryCrm;
use blapi::customers::Config;
use blapi::customers::state::MemoryCustomers;
use blapi::leads::routing::{MemoryAccounts, MemoryCounter};
use blapi::leads::store::MemoryLeadStore;
use blapi::queue::EventMessage;
use blapi::storage::MemoryStore;
use blapi::stripe::MemoryStripe;
use customer_sync::{App, Ports};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use std::sync::Arc;

/// A subscription term start (seconds) the fixtures use.
pub const START: i64 = 1_780_000_000;

/// The app on fakes, and the fakes a test looks into.
pub struct Fakes {
    pub app: App,
    pub stripe: Arc<MemoryStripe>,
    pub crm: Arc<MemoryCrm>,
    pub accounts: Arc<MemoryAccounts>,
}

/// A configuration for apps on fakes (the resources it names are never reached).
pub fn fake_config() -> Config {
    Config::from_env(&blapi::config::Env::from_map([
        ("CUSTOMERS_TABLE", "customers"),
        ("LEADS_TABLE", "leads"),
        ("PRIVACY_TABLE", "privacy"),
        ("PRIVACY_KEY_SECRET_ID", "privacy-key"),
        ("CRM_TABLE", "crm"),
        ("ARTIFACTS_BUCKET", "artifacts"),
        ("STRIPE_API_BASE", "http://127.0.0.1:9"),
        ("STRIPE_API_KEY_SECRET_ID", "unused"),
    ]))
    .unwrap()
}

/// The app with the bundled routing rules on in-memory ports.
pub fn fakes() -> Fakes {
    let stripe = Arc::new(MemoryStripe::new());
    let crm = Arc::new(MemoryCrm::new());
    let accounts = Arc::new(MemoryAccounts::new());
    let leads = Arc::new(MemoryLeadStore::new());
    let ports = Ports {
        sync: blapi::customers::Ports {
            stripe: stripe.clone(),
            invoices: stripe.clone(),
            crm: crm.clone(),
            customers: Arc::new(MemoryCustomers::new()),
            directory: accounts.clone(),
            leads,
            counter: Arc::new(MemoryCounter::new()),
            subjects: blapi::subjects::Subjects::for_tests(),
        },
        store: Arc::new(MemoryStore::new()),
    };
    Fakes {
        app: App::new(fake_config(), ports).unwrap(),
        stripe,
        crm,
        accounts,
    }
}

/// A Stripe customer of company `company` with e-mail `email`, in Germany.
pub fn customer(id: &str, email: &str, company: &str) -> Value {
    json!({"id": id, "object": "customer", "name": "Ada Lovelace", "email": email,
        "address": {"country": "DE"}, "metadata": {"company": company}})
}

/// An active monthly subscription of `seats` seats at 15.00 EUR.
pub fn subscription(id: &str, customer: &str, seats: u64) -> Value {
    json!({"id": id, "object": "subscription", "customer": customer, "status": "active",
        "current_period_start": START, "current_period_end": START + 30 * 86_400,
        "items": {"object": "list", "data": [{"id": "si_1", "quantity": seats,
            "plan": {"id": "plan_pro", "amount": 1500, "currency": "eur", "interval": "month",
                     "metadata": {"sku": "professional"}}}]}})
}

/// A Stripe event message as webhook-intake enqueues it.
pub fn stripe_message(id: &str, t: &str, object: Value) -> EventMessage {
    EventMessage {
        id: id.into(),
        source: "stripe".into(),
        event_type: t.into(),
        received_at: chrono::Utc::now(),
        raw_key: format!("raw/stripe/{id}.json"),
        event: json!({"id": id, "type": t, "created": START + 60, "data": {"object": object}}),
    }
}

/// The Stripe events of one purchase.
pub fn purchase(customer: &str, sub: &str) -> Vec<EventMessage> {
    vec![
        stripe_message(
            &format!("evt_{customer}_1"),
            "customer.created",
            json!({"object": "customer", "id": customer}),
        ),
        stripe_message(
            &format!("evt_{customer}_2"),
            "checkout.session.completed",
            json!({"object": "checkout.session", "id": "cs_1", "customer": customer, "subscription": sub}),
        ),
        stripe_message(
            &format!("evt_{customer}_3"),
            "customer.subscription.created",
            json!({"object": "subscription", "id": sub, "customer": customer}),
        ),
        stripe_message(
            &format!("evt_{customer}_4"),
            "invoice.paid",
            json!({"object": "invoice", "id": format!("in_{customer}"), "customer": customer,
            "subscription": sub, "total": 7500, "currency": "eur", "created": START + 5}),
        ),
    ]
}

/// An SQS batch of (message id, body).
pub fn batch<I: Into<String>, B: Into<String>>(records: Vec<(I, B)>) -> LambdaEvent<SqsEvent> {
    LambdaEvent::new(blapi_infra::testing::sqs_batch(records), Context::default())
}

/// A batch of messages, their ids `m0`, `m1`, ...
pub fn batch_of(messages: &[EventMessage]) -> LambdaEvent<SqsEvent> {
    batch(
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("m{i}"), serde_json::to_string(m).unwrap()))
            .collect(),
    )
}
