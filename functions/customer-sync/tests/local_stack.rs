//! customer-sync against the local stack: the CustomersTable, LeadsTable and CrmTable in moto
//! (provisioned from `template.yaml`), Stripe played by localstripe (the customer and its
//! subscription are real objects there, read again by the function), and Salesforce played by
//! wiremock (requests counted). Needs `make up` (moto on 4599, localstripe on 8420).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use blapi::aws::Clients;
use blapi::config::{Env, Secret};
use blapi::crm::{CrmObject, SinkCrm};
use blapi::customers::Config;
use blapi::customers::state::{CustomerStore, DynamoCustomers};
use blapi::leads::routing::AccountDirectory;
use blapi::leads::store::DynamoLeadsTable;
use blapi::queue::EventMessage;
use blapi::retry::RetryPolicy;
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::{StripeClient, form_pairs};
use blapi::values::Email;
use customer_sync::{App, Ports};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::{batch_of, stripe_message};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn localstripe_url() -> String {
    std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into())
}

fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

async fn stripe_post(path: &str, form: &[(&str, String)]) -> Value {
    let client = StripeClient::new(
        localstripe_url(),
        Secret::new("sk_test_blapi_local".into()),
        Duration::from_secs(10),
    )
    .unwrap();
    let form = form_pairs(form.iter().map(|(k, v)| (*k, v.clone())));
    client
        .post::<Value>(path, &form, &uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_or_else(|e| panic!("localstripe POST {path}: {}", e.chain()))
}

/// A customer of `domain` on localstripe with an active 5-seat subscription at 12.00 USD a
/// month. Returns (customer, subscription, email).
async fn purchase_on_localstripe(domain: &str) -> (String, String, String) {
    let product = stripe_post("products", &[("name", "Mattermost".into())]).await;
    let plan = stripe_post(
        "plans",
        &[
            ("product", product["id"].as_str().unwrap().into()),
            ("amount", "1200".into()),
            ("currency", "usd".into()),
            ("interval", "month".into()),
            ("metadata[sku]", "professional".into()),
        ],
    )
    .await;
    let email = format!("ada.{}@{domain}", uid());
    let customer = stripe_post(
        "customers",
        &[
            ("name", "Ada Lovelace".into()),
            ("email", email.clone()),
            ("metadata[company]", "Analytical Engines".into()),
        ],
    )
    .await;
    let cus = customer["id"].as_str().unwrap().to_owned();
    stripe_post(
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
    let sub = stripe_post(
        "subscriptions",
        &[
            ("customer", cus.clone()),
            ("items[0][plan]", plan["id"].as_str().unwrap().into()),
            ("items[0][quantity]", "5".into()),
        ],
    )
    .await;
    assert_eq!(sub["status"], "active", "{sub}");
    (cus, sub["id"].as_str().unwrap().to_owned(), email)
}

fn events(cus: &str, sub: &str) -> Vec<EventMessage> {
    vec![
        stripe_message(
            &format!("evt_{}", uid()),
            "customer.created",
            json!({"object": "customer", "id": cus}),
        ),
        stripe_message(
            &format!("evt_{}", uid()),
            "customer.subscription.created",
            json!({"object": "subscription", "id": sub, "customer": cus}),
        ),
        stripe_message(
            &format!("evt_{}", uid()),
            "invoice.payment_succeeded",
            json!({"object": "invoice", "id": format!("in_{}", uid()),
            "customer": cus, "subscription": sub, "total": 6000, "currency": "usd", "created": 1_780_000_100}),
        ),
    ]
}

async fn app(env: BTreeMap<String, String>, clients: &Clients) -> App {
    let mut config = Config::from_env(&Env::from_map(env)).unwrap();
    config.http_retry = Some(RetryPolicy::immediate(3));
    let ports = Ports::connect(&config, clients).await.unwrap();
    App::new(config, ports).unwrap()
}

fn stack_env(stack: &blapi_infra::LocalStack) -> BTreeMap<String, String> {
    let mut env = stack.env("customer-sync");
    env.insert("STRIPE_API_BASE".into(), localstripe_url());
    env
}

/// Salesforce's token endpoint on `sf`, answering every call.
async fn mount_token(sf: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "tok", "instance_url": sf.uri()})),
        )
        .mount(sf)
        .await;
}

/// The stack's environment with Salesforce on `sf` (the stack's local Salesforce secret).
fn salesforce_env(stack: &blapi_infra::LocalStack, sf: &MockServer) -> BTreeMap<String, String> {
    let mut env = stack_env(stack);
    env.insert("SALESFORCE_LOGIN_URL".into(), sf.uri());
    env.insert("SALESFORCE_API_VERSION".into(), "v61.0".into());
    env.insert(
        "SALESFORCE_SECRET_ID".into(),
        format!("{}/salesforce", stack.prefix),
    );
    env
}

#[tokio::test]
async fn a_purchase_lands_in_the_sink_the_state_table_and_the_directory() {
    let stack = blapi_infra::testing::stack();
    let clients = Clients::new(&stack.sdk_config().await);
    let env = stack_env(stack);
    let a = app(env.clone(), &clients).await;
    let domain = format!("ae{}.example", uid());
    let (cus, sub, email) = purchase_on_localstripe(&domain).await;
    let purchase = events(&cus, &sub);
    let resp = a.handle(batch_of(&purchase)).await.unwrap();
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");

    let store = Arc::new(S3Store::new(
        clients.s3().clone(),
        env["ARTIFACTS_BUCKET"].clone(),
    ));
    let sink = SinkCrm::new(
        clients.dynamodb().clone(),
        env["CRM_TABLE"].clone(),
        store.clone(),
    );
    let (account, _) = sink
        .get_object(CrmObject::Account, &cus)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account["name"], "Analytical Engines");
    assert_eq!(account["status"], "customer");
    assert_eq!(account["domains"], json!([domain]));
    let owner = account["owner_id"].as_str().unwrap().to_owned();
    assert!(!owner.is_empty());

    // The contact, keyed by the e-mail's keyed hash, without the e-mail or the name in the
    // sink; the subject index knows where the buyer's data is.
    let subject_key =
        blapi::subjects::SubjectKey::from_secret(clients.secrets(), &env["PRIVACY_KEY_SECRET_ID"])
            .await
            .unwrap();
    let subject = subject_key.subject(&Email::parse(&email).unwrap());
    let key = subject.to_string();
    use blapi::subjects::SubjectIndex as _;
    let index =
        blapi::subjects::DynamoSubjectIndex::new(clients.dynamodb().clone(), &env["PRIVACY_TABLE"]);
    let places = index.locations(&subject).await.unwrap();
    for want in ["stripe", "customers", "licenses", "billing", "crm"] {
        assert!(
            places.iter().any(|l| l.system.as_str() == want),
            "{want} indexed: {places:?}"
        );
    }
    let (contact, _) = sink
        .get_object(CrmObject::Contact, &key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contact["account_external_id"], cus.as_str());
    let stored = contact.to_string();
    assert!(
        !stored.contains(&email) && !stored.contains("Ada"),
        "{stored}"
    );

    // The won opportunity: 12.00 × 5 seats × 12 months.
    let state = DynamoCustomers::new(clients.dynamodb().clone(), env["CUSTOMERS_TABLE"].clone())
        .load(&cus)
        .await
        .unwrap()
        .unwrap();
    let term = &state.subscriptions[&sub];
    let opp_id = format!(
        "{sub}:{}",
        chrono::DateTime::from_timestamp(term.start, 0)
            .unwrap()
            .format("%Y-%m-%d")
    );
    let (opp, _) = sink
        .get_object(CrmObject::Opportunity, &opp_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(opp["stage"], "Closed Won");
    assert_eq!(opp["amount"]["amount"], 72_000);
    assert_eq!(opp["seats"], 5);
    assert_eq!(state.owner_id.as_deref(), Some(owner.as_str()));

    // The export objects and the directory entry lead routing reads.
    let export = store
        .get(&format!("crm/accounts/{cus}.jsonl"))
        .await
        .unwrap()
        .expect("account export");
    assert!(String::from_utf8(export).unwrap().contains(&cus));
    let leads = DynamoLeadsTable::new(
        clients.dynamodb().clone(),
        env["LEADS_TABLE"].clone(),
        subject_key,
    );
    let dir = leads.account_for_domain(&domain).await.unwrap().unwrap();
    assert_eq!(
        (dir.account_id.as_str(), dir.owner_id.as_str()),
        (cus.as_str(), owner.as_str())
    );

    // Redelivered: nothing changes, the revision stays.
    let (_, revision) = sink
        .get_object(CrmObject::Account, &cus)
        .await
        .unwrap()
        .unwrap();
    a.handle(batch_of(&purchase)).await.unwrap();
    let (_, again) = sink
        .get_object(CrmObject::Account, &cus)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, revision, "a replay writes nothing");
}

#[tokio::test]
async fn with_salesforce_a_purchase_event_costs_one_token_and_one_composite_request() {
    let stack = blapi_infra::testing::stack();
    let clients = Clients::new(&stack.sdk_config().await);
    let sf = MockServer::start().await;
    mount_token(&sf).await;
    Mock::given(method("POST"))
        .and(path("/services/data/v61.0/composite"))
        .respond_with(|req: &wiremock::Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            let n = body["compositeRequest"].as_array().unwrap().len();
            let results: Vec<Value> = (0..n)
                .map(|i| json!({"httpStatusCode": 201, "referenceId": format!("r{i}"), "body": {"id": format!("001{i}"), "created": true}}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({"compositeResponse": results}))
        })
        .mount(&sf)
        .await;
    let env = salesforce_env(stack, &sf);
    let a = app(env, &clients).await;
    let (cus, sub, _) = purchase_on_localstripe(&format!("sf{}.example", uid())).await;
    let purchase = stripe_message(
        "evt_checkout",
        "checkout.session.completed",
        json!({"object": "checkout.session", "id": "cs_1", "customer": cus, "subscription": sub}),
    );
    let resp = a
        .handle(batch_of(std::slice::from_ref(&purchase)))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    let reqs = sf.received_requests().await.unwrap();
    assert_eq!(
        reqs.len(),
        2,
        "a purchase: one token request and one Composite request"
    );
    let body: Value = serde_json::from_slice(&reqs[1].body).unwrap();
    let objects: Vec<&str> = body["compositeRequest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap().split('/').nth(5).unwrap())
        .collect();
    assert_eq!(objects, vec!["Account", "Contact", "Opportunity"]);
    // The same event again: nothing changed, no Salesforce request at all.
    a.handle(batch_of(&[purchase])).await.unwrap();
    assert_eq!(sf.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn salesforce_refusing_a_field_fails_the_message_with_the_field_named() {
    let stack = blapi_infra::testing::stack();
    let clients = Clients::new(&stack.sdk_config().await);
    let sf = MockServer::start().await;
    mount_token(&sf).await;
    Mock::given(method("POST"))
        .and(path("/services/data/v61.0/composite"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"compositeResponse": [
            {"httpStatusCode": 400, "referenceId": "r0", "body": [{"errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                "fields": ["Lifecycle_Status__c"], "message": "bad value for restricted picklist field: customer"}]},
            {"httpStatusCode": 201, "referenceId": "r1", "body": {"id": "003", "created": true}},
            {"httpStatusCode": 201, "referenceId": "r2", "body": {"id": "006", "created": true}}]})))
        .mount(&sf)
        .await;
    let env = salesforce_env(stack, &sf);
    let a = app(env, &clients).await;
    let (cus, sub, _) = purchase_on_localstripe(&format!("sf{}.example", uid())).await;
    let resp = a
        .handle(batch_of(&[stripe_message(
            "evt_co",
            "checkout.session.completed",
            json!({"customer": cus, "subscription": sub}),
        )]))
        .await
        .unwrap();
    assert_eq!(
        resp.batch_item_failures.len(),
        1,
        "the message goes back, then to the DLQ"
    );
}

#[tokio::test]
async fn a_lead_converted_before_it_reaches_the_sink_keeps_its_conversion() {
    use blapi::crm::{CrmLead, CrmPort, CrmRecord, LeadConversion};
    let stack = blapi_infra::testing::stack();
    let clients = Clients::new(&stack.sdk_config().await);
    let env = stack_env(stack);
    let store = Arc::new(S3Store::new(
        clients.s3().clone(),
        env["ARTIFACTS_BUCKET"].clone(),
    ));
    let sink = SinkCrm::new(clients.dynamodb().clone(), env["CRM_TABLE"].clone(), store);
    let lead_id = format!("ld_{}", uid());
    sink.upsert(&CrmRecord::LeadConversion(LeadConversion {
        lead_id: lead_id.clone(),
        account_external_id: "cus_early".into(),
    }))
    .await
    .unwrap();
    assert!(sink.get(&lead_id).await.unwrap().is_none(), "no lead yet");
    assert_eq!(
        sink.conversion(&lead_id).await.unwrap().as_deref(),
        Some("cus_early")
    );
    let lead = CrmLead {
        lead_id: lead_id.clone(),
        email: None,
        first_name: None,
        last_name: None,
        phone: None,
        title: None,
        company: "Analytical Engines".into(),
        company_domain: Some("analytical-engines.example".into()),
        industry: None,
        employees: None,
        employee_band: None,
        country: None,
        lead_source: "Web".into(),
        sources: vec!["portal.signup".into()],
        score: 10,
        grade: "D".into(),
        score_reasons: String::new(),
        owner_id: "005OWNER".into(),
        team: None,
        routing_reason: "test".into(),
        needs_enrichment: false,
        marketing_opt_in: false,
    };
    sink.upsert(&CrmRecord::Lead(lead)).await.unwrap();
    let (stored, revision) = sink.get(&lead_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.company.as_str(), revision),
        ("Analytical Engines", 1)
    );
    assert_eq!(
        sink.conversion(&lead_id).await.unwrap().as_deref(),
        Some("cus_early"),
        "the lead's upsert kept the conversion"
    );
}
