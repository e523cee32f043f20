//! The handler on in-memory ports: a purchase batch, partial batch failures (malformed,
//! forged, unknown customer, Stripe down), internal events before Stripe's, replays.

#![allow(clippy::unwrap_used)]

mod support;

use blapi::crm::{AccountStatus, OpportunityStage};
use blapi::events::{Internal, LicenseChanged};
use blapi::leads::routing::AccountDirectory;
use serde_json::json;
use support::{batch, batch_of, customer, fakes, purchase, stripe_message, subscription};

fn failed(resp: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    resp.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn a_purchase_batch_yields_one_account_contact_and_opportunity() {
    let f = fakes();
    f.stripe
        .put_customer(customer("cus_1", "ada@acme.example", "Acme GmbH"));
    f.stripe.put_subscription(subscription("sub_1", "cus_1", 5));
    let resp = f
        .app
        .handle(batch_of(&purchase("cus_1", "sub_1")))
        .await
        .unwrap();
    assert!(failed(&resp).is_empty(), "{resp:?}");
    let accounts = f.crm.accounts();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].status, AccountStatus::Customer);
    assert_eq!(accounts[0].last_invoice_id.as_deref(), Some("in_cus_1"));
    assert_eq!(f.crm.contacts().len(), 1);
    let opps = f.crm.opportunities();
    assert_eq!(opps.len(), 1);
    assert_eq!(opps[0].stage, OpportunityStage::ClosedWon);
    let dir = f
        .accounts
        .account_for_domain("acme.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dir.owner_id, accounts[0].owner_id);
}

#[tokio::test]
async fn bad_records_fail_alone() {
    let f = fakes();
    f.stripe
        .put_customer(customer("cus_1", "ada@acme.example", "Acme GmbH"));
    f.stripe.put_subscription(subscription("sub_1", "cus_1", 5));
    f.stripe
        .put_customer(customer("cus_2", "eve@evil.example", "Evil"));
    let good = serde_json::to_string(&purchase("cus_1", "sub_1")[1]).unwrap();
    let forged = serde_json::to_string(&stripe_message(
        "evt_f",
        "checkout.session.completed",
        json!({"id": "cs_f", "customer": "cus_2", "subscription": "sub_1"}),
    ))
    .unwrap();
    let unknown = serde_json::to_string(&stripe_message(
        "evt_u",
        "customer.subscription.created",
        json!({"id": "sub_404", "customer": "cus_404"}),
    ))
    .unwrap();
    let bad_internal = json!({"id": "x", "source": "blapi", "type": "license.issued",
        "received_at": "2026-11-25T10:00:00Z", "raw_key": "", "event": {"type": "license.issued", "data": {"customer": 1}}})
    .to_string();
    let resp = f
        .app
        .handle(batch(vec![
            ("m0", good.as_str()),
            ("m1", "{not json"),
            ("m2", forged.as_str()),
            ("m3", unknown.as_str()),
            ("m4", bad_internal.as_str()),
        ]))
        .await
        .unwrap();
    assert_eq!(failed(&resp), vec!["m1", "m2", "m3", "m4"]);
    assert_eq!(f.crm.accounts().len(), 1, "the good one went through");

    // Stripe down: every record fails and comes back.
    f.stripe.set_unavailable(true);
    let resp = f
        .app
        .handle(batch_of(&purchase("cus_1", "sub_1")))
        .await
        .unwrap();
    assert_eq!(failed(&resp).len(), 4);
}

#[tokio::test]
async fn an_internal_license_event_first_creates_the_account_and_replays_write_nothing() {
    let f = fakes();
    f.stripe
        .put_customer(customer("cus_1", "ada@acme.example", "Acme GmbH"));
    f.stripe.put_subscription(subscription("sub_1", "cus_1", 5));
    let license = Internal::LicenseIssued(LicenseChanged {
        customer: "cus_1".into(),
        subscription: "sub_1".into(),
        license_id: "lic_1".into(),
        kid: "k".into(),
        seats: 5,
        sku: "professional".into(),
        expires_at: (support::START + 30 * 86_400) * 1000,
        file_key: "licenses/cus_1/lic_1.mattermost-license".into(),
    })
    .message(chrono::Utc::now());
    let mut all = vec![license];
    all.extend(purchase("cus_1", "sub_1"));
    f.app.handle(batch_of(&all)).await.unwrap();
    assert_eq!(f.crm.accounts().len(), 1);
    assert_eq!(f.crm.accounts()[0].license_id.as_deref(), Some("lic_1"));
    assert_eq!(
        f.crm.opportunities()[0].license_id.as_deref(),
        Some("lic_1")
    );
    let calls = f.crm.calls();
    f.app.handle(batch_of(&all)).await.unwrap();
    assert_eq!(
        f.crm.calls(),
        calls,
        "a replay changes nothing and writes nothing"
    );
}

fn sample(name: &str) -> aws_lambda_events::event::sqs::SqsEvent {
    let path = format!(
        "{}/../../events/customer-sync/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_committed_samples_do_what_their_readme_says() {
    let f = fakes();
    f.stripe.put_customer(customer(
        "cus_SampleCustomer0001",
        "ops@sample-co.example",
        "Sample Co",
    ));
    f.stripe.put_subscription(subscription(
        "sub_SampleCustomer0001",
        "cus_SampleCustomer0001",
        5,
    ));
    f.stripe
        .put_charge(json!({"id": "ch_SampleCharge0001", "customer": "cus_SampleCustomer0001"}));
    let ctx = lambda_runtime::Context::default();
    let resp = f
        .app
        .handle(lambda_runtime::LambdaEvent::new(
            sample("default.json"),
            ctx.clone(),
        ))
        .await
        .unwrap();
    assert!(failed(&resp).is_empty(), "{resp:?}");
    let a = &f.crm.accounts()[0];
    assert_eq!(
        (a.status, a.license_id.as_deref()),
        (AccountStatus::Customer, Some("lic_SampleLicense0001"))
    );
    assert_eq!(f.crm.contacts().len(), 1);
    assert_eq!(f.crm.opportunities()[0].stage, OpportunityStage::ClosedWon);
    let resp = f
        .app
        .handle(lambda_runtime::LambdaEvent::new(
            sample("batch-mixed.json"),
            ctx,
        ))
        .await
        .unwrap();
    assert_eq!(failed(&resp), vec!["m-poison"]);
    assert_eq!(f.crm.accounts()[0].flags, vec!["refund".to_owned()]);
}
