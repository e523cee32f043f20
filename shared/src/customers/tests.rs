//! The customer sync rules on in-memory ports: one account per customer whatever the order,
//! the owner given once, the records of a purchase, the bad inputs the issue names.

use super::service::{CustomerSync, Outcome, Ports};
use super::state::MemoryCustomers;
use crate::crm::{AccountStatus, MemoryCrm, OpportunityStage};
use crate::error::Error;
use crate::events::{Internal, InvoiceFinalized, LicenseChanged};
use crate::leads::input::LeadId;
use crate::leads::routing::{Account, AccountDirectory, MemoryAccounts, MemoryCounter};
use crate::leads::store::{LeadStore, MemoryLeadStore};
use crate::queue::EventMessage;
use crate::stripe::MemoryStripe;
use crate::values::{Email, Money};
use serde_json::{Value, json};
use std::sync::Arc;

const START: i64 = 1_780_000_000;
const END: i64 = START + 30 * 86_400;

struct Rig {
    sync: CustomerSync,
    stripe: Arc<MemoryStripe>,
    crm: Arc<MemoryCrm>,
    accounts: Arc<MemoryAccounts>,
    leads: Arc<MemoryLeadStore>,
    customers: Arc<MemoryCustomers>,
    subjects: crate::subjects::Subjects,
}

fn rig() -> Rig {
    let stripe = Arc::new(MemoryStripe::new());
    let crm = Arc::new(MemoryCrm::new());
    let accounts = Arc::new(MemoryAccounts::new());
    let leads = Arc::new(MemoryLeadStore::new());
    let customers = Arc::new(MemoryCustomers::new());
    let subjects = crate::subjects::Subjects::for_tests();
    let sync = CustomerSync::bundled(Ports {
        stripe: stripe.clone(),
        invoices: stripe.clone(),
        crm: crm.clone(),
        customers: customers.clone(),
        directory: accounts.clone(),
        leads: leads.clone(),
        counter: Arc::new(MemoryCounter::new()),
        subjects: subjects.clone(),
    })
    .unwrap();
    Rig {
        subjects,
        sync,
        stripe,
        crm,
        accounts,
        leads,
        customers,
    }
}

fn customer(id: &str, email: Option<&str>, name: &str, company: Option<&str>) -> Value {
    let mut c = json!({"id": id, "object": "customer", "name": name, "email": email,
        "address": {"country": "DE"}, "metadata": {}});
    if let Some(co) = company {
        c["metadata"]["company"] = json!(co);
    }
    c
}

fn subscription(id: &str, cus: &str, status: &str, seats: u64, amount: Option<i64>) -> Value {
    json!({"id": id, "object": "subscription", "customer": cus, "status": status,
        "current_period_start": START, "current_period_end": END,
        "cancellation_details": {"reason": if status == "canceled" { json!("cancellation_requested") } else { Value::Null },
                                 "feedback": if status == "canceled" { json!("too_expensive") } else { Value::Null }},
        "items": {"object": "list", "data": [{"id": "si_1", "quantity": seats,
            "plan": {"id": "plan_pro", "amount": amount, "currency": "eur", "interval": "month",
                     "metadata": {"sku": "professional"}}}]}})
}

fn stripe_event(id: &str, t: &str, object: Value) -> EventMessage {
    EventMessage {
        id: id.into(),
        source: "stripe".into(),
        event_type: t.into(),
        received_at: chrono::Utc::now(),
        raw_key: format!("raw/stripe/{id}.json"),
        event: json!({"id": id, "type": t, "created": START + 60, "data": {"object": object}}),
    }
}

fn license(cus: &str, sub: &str, id: &str) -> LicenseChanged {
    LicenseChanged {
        customer: cus.into(),
        subscription: sub.into(),
        license_id: id.into(),
        kid: "kid1".into(),
        seats: 5,
        sku: "professional".into(),
        expires_at: END * 1000,
        file_key: format!("licenses/{cus}/{id}.mattermost-license"),
    }
}

/// Every kind of event a purchase produces, for customer `cus` and subscription `sub`.
fn purchase_events(cus: &str, sub: &str) -> Vec<EventMessage> {
    let invoice = json!({"object": "invoice", "id": "in_1", "customer": cus, "subscription": sub,
        "total": 7500, "currency": "eur", "created": START + 5});
    let usage = Internal::InvoiceFinalized(InvoiceFinalized {
        customer: cus.into(),
        invoice: Some("in_usage_1".into()),
        period: "2026-05".into(),
        period_end: 1_780_272_000, // 2026-06-01
        total: Money::new(1200, "eur".parse().unwrap()),
        json_key: "invoices/x.json".into(),
        html_key: "invoices/x.html".into(),
        // Tax is not revenue: customer sync records the total before it.
        tax: Some(Money::new(228, "eur".parse().unwrap())),
        amount_due: Some(Money::new(1428, "eur".parse().unwrap())),
        pdf_key: Some("invoices/x.pdf".into()),
    });
    vec![
        stripe_event(
            "evt_1",
            "customer.created",
            json!({"object": "customer", "id": cus}),
        ),
        stripe_event(
            "evt_2",
            "checkout.session.completed",
            json!({"object": "checkout.session", "id": "cs_1", "customer": cus, "subscription": sub}),
        ),
        stripe_event(
            "evt_3",
            "customer.subscription.created",
            json!({"object": "subscription", "id": sub, "customer": cus}),
        ),
        stripe_event("evt_4", "invoice.paid", invoice),
        Internal::LicenseIssued(license(cus, sub, "lic_1")).message(chrono::Utc::now()),
        usage.message(chrono::Utc::now()),
        stripe_event(
            "evt_5",
            "customer.updated",
            json!({"object": "customer", "id": cus}),
        ),
    ]
}

fn seed_purchase(r: &Rig, cus: &str, sub: &str) {
    r.stripe.put_customer(customer(
        cus,
        Some("ada@acme.example"),
        "Ada Lovelace",
        Some("Acme GmbH"),
    ));
    r.stripe
        .put_subscription(subscription(sub, cus, "active", 5, Some(1500)));
}

#[tokio::test]
async fn a_purchase_makes_one_linked_account_contact_and_won_opportunity() {
    let r = rig();
    seed_purchase(&r, "cus_1", "sub_1");
    for msg in purchase_events("cus_1", "sub_1") {
        r.sync.handle(&msg).await.unwrap();
    }
    let accounts = r.crm.accounts();
    assert_eq!(accounts.len(), 1);
    let a = &accounts[0];
    assert_eq!(a.external_id, "cus_1");
    assert_eq!(a.name, "Acme GmbH");
    assert_eq!(a.domains, vec!["acme.example".to_owned()]);
    assert_eq!(a.status, AccountStatus::Customer);
    assert_eq!(
        a.billing_country.map(|c| c.code().to_owned()).as_deref(),
        Some("DE")
    );
    // DE without a size: the emea-commercial team; weighted round-robin slot 0.
    assert_eq!(a.owner_id, "005000000000EC1AAA");
    assert_eq!(a.license_id.as_deref(), Some("lic_1"));
    assert_eq!(a.license_expires.as_deref(), Some("2026-06-27"));
    // The usage invoice (period 2026-05, ends 2026-06-01) is later than the paid one.
    assert_eq!(a.last_invoice_id.as_deref(), Some("in_usage_1"));
    assert_eq!(
        a.last_invoice_total.as_ref().map(|m| m.amount),
        Some(1200),
        "the total before tax"
    );
    let contacts = r.crm.contacts();
    assert_eq!(contacts.len(), 1);
    let email = Email::parse("ada@acme.example").unwrap();
    assert_eq!(
        contacts[0].external_id,
        crate::subjects::SubjectKey::for_tests()
            .subject(&email)
            .to_string()
    );
    assert_eq!(contacts[0].account_external_id, "cus_1");
    assert_eq!(
        (
            contacts[0].first_name.as_deref(),
            contacts[0].last_name.as_deref()
        ),
        (Some("Ada"), Some("Lovelace"))
    );
    let opps = r.crm.opportunities();
    assert_eq!(opps.len(), 1, "{opps:?}");
    let o = &opps[0];
    assert_eq!(o.external_id, "sub_1:2026-05-28");
    assert_eq!(o.stage, OpportunityStage::ClosedWon);
    // 15.00 EUR × 5 seats × 12 months.
    assert_eq!(o.amount, Some(Money::new(90_000, "eur".parse().unwrap())));
    assert_eq!((o.seats, o.sku.as_deref()), (Some(5), Some("professional")));
    assert_eq!(o.license_id.as_deref(), Some("lic_1"));
    // The directory routes later sign-ups of the company to the owner.
    let dir = r
        .accounts
        .account_for_domain("acme.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (dir.account_id.as_str(), dir.owner_id.as_str()),
        ("cus_1", "005000000000EC1AAA")
    );
}

#[tokio::test]
async fn ten_events_in_any_order_converge_to_the_same_records_and_duplicates_cost_nothing() {
    let mut events = purchase_events("cus_1", "sub_1");
    events.extend(purchase_events("cus_1", "sub_1").into_iter().take(3)); // redeliveries
    let mut results = Vec::new();
    for seed in 0..6u64 {
        let r = rig();
        seed_purchase(&r, "cus_1", "sub_1");
        let mut order = events.clone();
        // A deterministic shuffle per seed.
        order.sort_by_key(|m| crate::ledger::payload_hash(format!("{seed}{}", m.id).as_bytes()));
        for m in &order {
            r.sync.handle(m).await.unwrap();
        }
        assert_eq!(r.crm.accounts().len(), 1, "seed {seed}: one account");
        assert_eq!(r.crm.contacts().len(), 1);
        assert_eq!(r.crm.opportunities().len(), 1);
        let calls = r.crm.calls();
        // Every event once more: nothing changed, no CRM request.
        for m in &order {
            r.sync.handle(m).await.unwrap();
        }
        assert_eq!(r.crm.calls(), calls, "seed {seed}: replays write nothing");
        results.push((r.crm.accounts(), r.crm.contacts(), r.crm.opportunities()));
    }
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "every order ends alike"
    );
}

#[tokio::test]
async fn an_internal_event_before_any_stripe_event_creates_the_account_itself() {
    let r = rig();
    seed_purchase(&r, "cus_1", "sub_1");
    let msg =
        Internal::LicenseIssued(license("cus_1", "sub_1", "lic_9")).message(chrono::Utc::now());
    let out = r.sync.handle(&msg).await.unwrap();
    assert!(
        matches!(
            out,
            Outcome::Synced {
                account_created: true,
                ..
            }
        ),
        "{out:?}"
    );
    let a = &r.crm.accounts()[0];
    assert_eq!(
        (a.status, a.license_id.as_deref()),
        (AccountStatus::Customer, Some("lic_9"))
    );
    // The Stripe events that follow update the same account.
    for m in purchase_events("cus_1", "sub_1") {
        r.sync.handle(&m).await.unwrap();
    }
    assert_eq!(r.crm.accounts().len(), 1);
}

#[tokio::test]
async fn a_free_mail_buyer_gets_a_pseudonymous_account_and_no_directory_entry() {
    let r = rig();
    r.stripe.put_customer(customer(
        "cus_2",
        Some("sam.smith@gmail.com"),
        "Sam Smith",
        None,
    ));
    r.stripe
        .put_subscription(subscription("sub_2", "cus_2", "active", 1, Some(900)));
    r.sync
        .handle(&stripe_event(
            "e",
            "customer.subscription.created",
            json!({"id": "sub_2", "object": "subscription", "customer": "cus_2"}),
        ))
        .await
        .unwrap();
    let a = &r.crm.accounts()[0];
    // The account outlives an erasure (accounting): no personal data in it; the person is
    // the contact.
    assert_eq!(a.name, "Individual customer cus_2");
    assert_eq!(r.crm.contacts()[0].last_name.as_deref(), Some("Smith"));
    assert!(a.domains.is_empty());
    assert_eq!(
        a.owner_id, "005000000000SS1AAA",
        "individuals: the self-serve team"
    );
    assert!(
        r.accounts
            .account_for_domain("gmail.com")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn no_email_no_company_and_an_unknown_price_still_sync_what_is_known() {
    let r = rig();
    r.stripe
        .put_customer(json!({"id": "cus_3", "object": "customer", "name": null, "email": null}));
    r.stripe
        .put_subscription(subscription("sub_3", "cus_3", "trialing", 3, None));
    let out = r
        .sync
        .handle(&stripe_event(
            "e",
            "customer.subscription.created",
            json!({"id": "sub_3", "object": "subscription", "customer": "cus_3"}),
        ))
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Synced { records: 2, .. }), "{out:?}");
    let a = &r.crm.accounts()[0];
    assert_eq!(
        (a.name.as_str(), a.status),
        ("Individual customer cus_3", AccountStatus::Trial)
    );
    assert!(r.crm.contacts().is_empty(), "no e-mail, no contact");
    let o = &r.crm.opportunities()[0];
    assert_eq!((o.stage, o.amount.clone()), (OpportunityStage::Open, None));
}

#[tokio::test]
async fn the_lead_a_buyer_came_in_as_is_converted_and_linked() {
    let r = rig();
    seed_purchase(&r, "cus_1", "sub_1");
    let email = Email::parse("ada@acme.example").unwrap();
    let lead = LeadId::for_event("portal", "evt_signup");
    r.leads.lead_id_for_subject(&email, &lead).await.unwrap();
    r.sync
        .handle(&purchase_events("cus_1", "sub_1")[1])
        .await
        .unwrap();
    assert_eq!(r.crm.conversion(lead.as_str()).as_deref(), Some("cus_1"));
    assert_eq!(r.crm.contacts()[0].lead_id.as_deref(), Some(lead.as_str()));
}

#[tokio::test]
async fn an_existing_account_on_the_domain_keeps_its_owner() {
    let r = rig();
    seed_purchase(&r, "cus_1", "sub_1");
    r.accounts.insert(Account {
        domain: "acme.example".into(),
        account_id: "acct_old".into(),
        name: "Acme".into(),
        owner_id: "005OWNER".into(),
    });
    r.sync
        .handle(&purchase_events("cus_1", "sub_1")[1])
        .await
        .unwrap();
    assert_eq!(r.crm.accounts()[0].owner_id, "005OWNER");
}

#[tokio::test]
async fn cancellation_churns_and_loses_the_renewal_with_stripes_reason() {
    let r = rig();
    seed_purchase(&r, "cus_1", "sub_1");
    r.sync
        .handle(&purchase_events("cus_1", "sub_1")[1])
        .await
        .unwrap();
    r.stripe
        .put_subscription(subscription("sub_1", "cus_1", "canceled", 5, Some(1500)));
    r.sync
        .handle(&stripe_event(
            "evt_del",
            "customer.subscription.deleted",
            json!({"id": "sub_1", "object": "subscription", "customer": "cus_1"}),
        ))
        .await
        .unwrap();
    assert_eq!(r.crm.accounts()[0].status, AccountStatus::Churned);
    let mut opps = r.crm.opportunities();
    opps.sort_by(|a, b| a.close_date.cmp(&b.close_date));
    assert_eq!(opps.len(), 2);
    assert_eq!(
        opps[0].stage,
        OpportunityStage::ClosedWon,
        "the paid term stays won"
    );
    assert_eq!(opps[1].external_id, "sub_1:2026-06-27");
    assert_eq!(opps[1].stage, OpportunityStage::ClosedLost);
    assert_eq!(
        opps[1].loss_reason.as_deref(),
        Some("cancellation_requested: too_expensive")
    );
}

#[tokio::test]
async fn refunds_and_disputes_flag_the_account_and_the_opportunity() {
    let r = rig();
    seed_purchase(&r, "cus_1", "sub_1");
    r.sync
        .handle(&purchase_events("cus_1", "sub_1")[1])
        .await
        .unwrap();
    r.stripe
        .put_charge(json!({"id": "ch_1", "customer": "cus_1", "invoice": null, "refunded": true}));
    r.sync
        .handle(&stripe_event(
            "evt_r",
            "charge.refunded",
            json!({"object": "charge", "id": "ch_1", "customer": "cus_1"}),
        ))
        .await
        .unwrap();
    assert_eq!(r.crm.accounts()[0].flags, vec!["refund".to_owned()]);
    // A dispute names only its charge: the charge names the customer.
    r.sync
        .handle(&stripe_event(
            "evt_d",
            "charge.dispute.created",
            json!({"object": "dispute", "id": "dp_1", "charge": "ch_1"}),
        ))
        .await
        .unwrap();
    assert_eq!(
        r.crm.accounts()[0].flags,
        vec!["dispute".to_owned(), "refund".to_owned()]
    );
}

#[tokio::test]
async fn a_customer_who_bought_nothing_yet_gets_no_account() {
    let r = rig();
    r.stripe.put_customer(customer(
        "cus_4",
        Some("x@initech.example"),
        "X",
        Some("Initech"),
    ));
    let out = r
        .sync
        .handle(&stripe_event(
            "e",
            "customer.created",
            json!({"object": "customer", "id": "cus_4"}),
        ))
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Skipped { .. }), "{out:?}");
    assert_eq!(r.crm.calls(), 0);
}

#[tokio::test]
async fn crm_or_stripe_down_is_retryable_and_the_owner_survives_the_retry() {
    let r = rig();
    seed_purchase(&r, "cus_1", "sub_1");
    let msg = purchase_events("cus_1", "sub_1")[1].clone();
    r.crm.set_failing(true);
    let e = r.sync.handle(&msg).await.unwrap_err();
    assert!(e.is_retryable());
    let owner = r.customers.all()[0].owner_id.clone();
    assert!(owner.is_some(), "the owner was saved before the CRM write");
    r.crm.set_failing(false);
    r.sync.handle(&msg).await.unwrap();
    assert_eq!(Some(r.crm.accounts()[0].owner_id.clone()), owner);
    r.stripe.set_unavailable(true);
    assert!(r.sync.handle(&msg).await.unwrap_err().is_retryable());
}

#[tokio::test]
async fn a_subscription_of_another_customer_is_refused() {
    let r = rig();
    seed_purchase(&r, "cus_1", "sub_1");
    r.stripe
        .put_customer(customer("cus_5", Some("e@evil.example"), "E", None));
    let forged = stripe_event(
        "e",
        "checkout.session.completed",
        json!({"id": "cs_9", "customer": "cus_5", "subscription": "sub_1"}),
    );
    assert!(matches!(
        r.sync.handle(&forged).await,
        Err(Error::Invalid(_))
    ));
    assert!(r.crm.accounts().is_empty());
}

#[tokio::test]
async fn through_salesforce_ten_shuffled_events_upsert_one_account_by_its_external_id() {
    use crate::crm::{SalesforceConfig, SalesforceCredentials, SalesforceCrm};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "tok", "instance_url": server.uri()})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/services/data/v61.0/composite"))
        .respond_with(|req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            let n = body["compositeRequest"].as_array().unwrap().len();
            let results: Vec<Value> = (0..n)
                .map(|i| json!({"httpStatusCode": 200, "referenceId": format!("r{i}"), "body": {"id": "001x", "created": false}}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({ "compositeResponse": results }))
        })
        .mount(&server)
        .await;
    let sf = SalesforceCrm::new(
        SalesforceConfig::new(server.uri(), "v61.0"),
        crate::config::Secret::new(SalesforceCredentials {
            client_id: "cid".into(),
            client_secret: "cs".into(),
        }),
    )
    .unwrap()
    .with_retry(crate::retry::RetryPolicy::immediate(2));
    let r = rig();
    let sync = CustomerSync::bundled(Ports {
        stripe: r.stripe.clone(),
        invoices: r.stripe.clone(),
        crm: Arc::new(sf),
        customers: r.customers.clone(),
        directory: r.accounts.clone(),
        leads: r.leads.clone(),
        counter: Arc::new(MemoryCounter::new()),
        subjects: crate::subjects::Subjects::for_tests(),
    })
    .unwrap();
    seed_purchase(&r, "cus_1", "sub_1");
    let mut events = purchase_events("cus_1", "sub_1");
    events.extend(purchase_events("cus_1", "sub_1").into_iter().take(3));
    assert_eq!(events.len(), 10);
    events.sort_by_key(|m| crate::ledger::payload_hash(m.id.as_bytes()));
    for m in &events {
        sync.handle(m).await.unwrap();
    }
    let reqs = server.received_requests().await.unwrap();
    let composites: Vec<Value> = reqs
        .iter()
        .filter(|r| r.url.path().ends_with("/composite"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert!(
        !composites.is_empty() && composites.len() <= 6,
        "{}",
        composites.len()
    );
    let account_urls: std::collections::BTreeSet<String> = composites
        .iter()
        .flat_map(|c| c["compositeRequest"].as_array().unwrap().clone())
        .map(|s| s["url"].as_str().unwrap().to_owned())
        .filter(|u| u.contains("/sobjects/Account/"))
        .collect();
    assert_eq!(
        account_urls.into_iter().collect::<Vec<_>>(),
        vec!["/services/data/v61.0/sobjects/Account/Blapi_Stripe_Customer_Id__c/cus_1".to_owned()],
        "one account, always by its external id"
    );
    let tokens = reqs
        .iter()
        .filter(|r| r.url.path().ends_with("/token"))
        .count();
    assert_eq!(tokens, 1, "the token is cached");
}

fn priced(
    interval: &str,
    count: u32,
    amount: i64,
    qty: u64,
    discount: Value,
) -> crate::stripe::Subscription {
    serde_json::from_value(
        json!({"id": "sub_v", "customer": "cus_v", "status": "active",
        "items": {"object": "list", "data": [{"id": "si_1", "quantity": qty,
            "price": {"id": "price_1", "unit_amount": amount, "currency": "usd",
                      "recurring": {"interval": interval, "interval_count": count}}}]},
        "discount": discount}),
    )
    .unwrap()
}

#[test]
fn monthly_value_normalises_every_interval_and_applies_recurring_discounts() {
    use super::service::monthly_value;
    let m = |s: &crate::stripe::Subscription| monthly_value(s, START).map(|m| m.amount);
    let none = Value::Null;
    // Yearly / 12, every 3 months / 3, weekly x 52 / 12, daily x 365 / 12; per seat.
    assert_eq!(
        m(&priced("year", 1, 120_000, 1, none.clone())),
        Some(10_000)
    );
    assert_eq!(m(&priced("month", 3, 3_000, 2, none.clone())), Some(2_000));
    assert_eq!(m(&priced("week", 1, 1_200, 1, none.clone())), Some(5_200));
    assert_eq!(
        m(&priced("day", 1, 100, 1, none.clone())),
        Some(3_042),
        "36 500 / 12 rounds half up"
    );
    assert_eq!(m(&priced("month", 1, 999, 3, none.clone())), Some(2_997));
    // 25 % off forever; 10.00 off each monthly invoice; a yearly 120.00 off is 10.00 a month.
    let pct = json!({"coupon": {"percent_off": 25.0, "duration": "forever"}});
    assert_eq!(m(&priced("month", 1, 10_000, 1, pct)), Some(7_500));
    let off = json!({"coupon": {"amount_off": 1_000, "currency": "usd", "duration": "forever"}});
    assert_eq!(m(&priced("month", 1, 10_000, 1, off)), Some(9_000));
    let yearly_off =
        json!({"coupon": {"amount_off": 12_000, "currency": "usd", "duration": "forever"}});
    assert_eq!(m(&priced("year", 1, 120_000, 1, yearly_off)), Some(9_000));
    // A one-off coupon is not recurring; a repeating one counts until it ends.
    let once = json!({"coupon": {"percent_off": 50.0, "duration": "once"}});
    assert_eq!(m(&priced("month", 1, 10_000, 1, once)), Some(10_000));
    let running =
        json!({"coupon": {"percent_off": 50.0, "duration": "repeating"}, "end": START + 10});
    assert_eq!(
        m(&priced("month", 1, 10_000, 1, running.clone())),
        Some(5_000)
    );
    assert_eq!(
        monthly_value(&priced("month", 1, 10_000, 1, running), START + 10).map(|m| m.amount),
        Some(10_000)
    );
    // Never below zero; no price, no value.
    let huge = json!({"coupon": {"amount_off": 99_999, "currency": "usd", "duration": "forever"}});
    assert_eq!(m(&priced("month", 1, 10_000, 1, huge)), Some(0));
    let mut unpriced = priced("month", 1, 1, 1, Value::Null);
    unpriced.items.data[0].price.as_mut().unwrap().unit_amount = None;
    assert_eq!(m(&unpriced), None);
}

#[test]
fn values_past_an_amount_are_none_never_wrapped() {
    use super::service::{annual_value, monthly_value};
    // i64::MAX x u64::MAX x 365 overflows even i128: no value, no panic, no wrapped figure.
    let daily = priced("day", 1, i64::MAX, u64::MAX, Value::Null);
    assert_eq!(annual_value(&daily), None);
    assert_eq!(monthly_value(&daily, START), None);
    // Past i64 but inside i128: still no value (an amount is i64).
    let big = priced("month", 1, i64::MAX, 2, Value::Null);
    assert_eq!(annual_value(&big), None);
    assert_eq!(monthly_value(&big, START), None);
    // A percentage on the largest sum and an amount off on many intervals: checked too.
    let pct = json!({"coupon": {"percent_off": 33.33, "duration": "forever"}});
    assert_eq!(
        monthly_value(&priced("week", 7, i64::MAX, u64::MAX, pct), START),
        None
    );
    let off = json!({"coupon": {"amount_off": i64::MAX, "currency": "usd", "duration": "forever"}});
    assert_eq!(
        monthly_value(&priced("day", u32::MAX, 1, 1, off), START).map(|m| m.amount),
        Some(0),
        "an amount off larger than the price leaves zero"
    );
    // The largest real price still has its value.
    let real = priced("year", 1, 99_999_999, 10_000, Value::Null);
    assert_eq!(annual_value(&real).map(|m| m.amount), Some(999_999_990_000));
}

#[tokio::test]
async fn each_change_of_a_subscription_is_kept_in_its_history_once() {
    let r = rig();
    seed_purchase(&r, "cus_1", "sub_1");
    let events = purchase_events("cus_1", "sub_1");
    r.sync.handle(&events[1]).await.unwrap();
    r.sync.handle(&events[1]).await.unwrap();
    let term = |r: &Rig| r.customers.all()[0].subscriptions["sub_1"].clone();
    assert_eq!(term(&r).history.len(), 1, "a replay adds nothing");
    let first = term(&r).history[0].clone();
    assert_eq!((first.status.as_str(), first.seats), ("active", Some(5)));
    assert_eq!(first.mrr, Some(Money::new(7_500, "eur".parse().unwrap())));
    // Seats go up: a second point, later or at the same time, never before the first.
    r.stripe
        .put_subscription(subscription("sub_1", "cus_1", "active", 8, Some(1500)));
    let mut up = events[1].clone();
    up.id = "evt_up".into();
    up.received_at -= chrono::Duration::days(1);
    r.sync.handle(&up).await.unwrap();
    let h = term(&r).history;
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].seats, Some(8));
    assert_eq!(h[1].mrr, Some(Money::new(12_000, "eur".parse().unwrap())));
    assert!(h[1].at >= h[0].at, "history is ordered");
}

#[tokio::test]
async fn a_buyer_is_indexed_and_once_erased_their_contact_is_never_written_again() {
    use crate::subjects::{System, Tombstone};
    let r = rig();
    seed_purchase(&r, "cus_1", "sub_1");
    for msg in purchase_events("cus_1", "sub_1") {
        r.sync.handle(&msg).await.unwrap();
    }
    let subject = r
        .subjects
        .key
        .subject(&Email::parse("ada@acme.example").unwrap());
    let places = r.subjects.index.locations(&subject).await.unwrap();
    for system in [System::Stripe, System::Customers, System::Crm] {
        assert!(places.iter().any(|l| l.system == system), "{system:?}");
    }
    assert_eq!(r.crm.contacts().len(), 1);
    // Erased: the contact removed, the tombstone written.
    assert!(
        r.crm
            .remove(crate::crm::CrmObject::Contact, subject.as_str())
    );
    r.subjects
        .index
        .tombstone(
            &subject,
            &Tombstone {
                erased_at: 1,
                request_id: "pr_1".into(),
            },
        )
        .await
        .unwrap();
    // Every later event (a renewal, a replay) keeps the account but writes no contact.
    r.stripe
        .put_subscription(subscription("sub_1", "cus_1", "active", 7, Some(1500)));
    for msg in purchase_events("cus_1", "sub_1") {
        r.sync.handle(&msg).await.unwrap();
    }
    assert!(r.crm.contacts().is_empty(), "the erased buyer stays erased");
    assert_eq!(r.crm.accounts().len(), 1);
}
