//! The handler on in-memory ports: the sample events of `events/lead-enrichment/`, partial
//! batch failures, duplicates, sticky owners, free-mail and provider outages. (The same flows
//! against moto + wiremock are in `local_stack.rs`.)

// Test helpers outside #[test] fns unwrap too (clippy.toml allows it only inside them).
#![allow(clippy::unwrap_used)]

use aws_lambda_events::event::sqs::SqsEvent;
use blapi::leads::enrichment::{Company, EnrichmentProvider, MemoryProvider};
use blapi::leads::input::LeadId;
use blapi::leads::routing::Account;
use blapi::leads::service::Outcome;
use blapi::leads::store::LeadStore;
use blapi::queue::EventMessage;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;
use std::sync::Arc;

mod support;
use support::{batch, fakes, fixture_fakes, sample};

fn event(records: Vec<(&str, serde_json::Value)>) -> LambdaEvent<SqsEvent> {
    batch(
        records
            .into_iter()
            .map(|(id, body)| (id, body.to_string()))
            .collect(),
    )
}

fn signup(id: &str, email: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut data = json!({"email": email, "name": "Test Person", "country": "FR"});
    if let (Some(d), Some(x)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(x.clone());
    }
    json!({"id": id, "source": "portal", "type": "lead.signup", "received_at": "2026-11-25T10:00:00Z",
           "raw_key": format!("raw/portal/{id}.json"), "event": {"type": "lead.signup", "data": data}})
}

fn failed(resp: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    resp.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn sample_batch_upserts_four_and_fails_only_the_bad_two() {
    let f = fixture_fakes();
    let resp = f
        .app
        .handle(LambdaEvent::new(
            sample("batch-mixed.json"),
            Context::default(),
        ))
        .await
        .unwrap();
    assert_eq!(
        failed(&resp),
        vec![
            "6c2a0f3e-0015-4c1e-9a53-batch-invalid-email",
            "6c2a0f3e-0016-4c1e-9a53-batch-malformed"
        ]
    );
    assert_eq!(f.crm.len(), 4);
    let by_domain = |d: &str| {
        f.crm
            .all()
            .into_iter()
            .find(|l| l.email.as_deref().is_some_and(|e| e.ends_with(d)))
            .unwrap()
    };
    let globex = by_domain("@globex.example");
    assert_eq!(globex.team.as_deref(), Some("na-enterprise"));
    assert_eq!(globex.employees, Some(2400));
    assert_eq!(globex.email.as_deref(), Some("ada.lovelace@globex.example"));
    let umbrella = by_domain("@umbrella.example");
    assert_eq!(
        umbrella.country.map(|c| c.code().to_owned()).as_deref(),
        Some("DE")
    );
    assert_eq!(umbrella.team.as_deref(), Some("dach-enterprise"));
    assert_eq!(umbrella.lead_source, "Contact Us");
    let tyrell = by_domain("@tyrell.example");
    assert_eq!(tyrell.team.as_deref(), Some("apac"));
    assert_eq!(tyrell.lead_source, "Self-serve Purchase");
    assert_eq!(tyrell.title.as_deref(), Some("CTO"));
    let gmail = by_domain("@gmail.com");
    assert_eq!(gmail.team.as_deref(), Some("self-serve"));
    assert_eq!(gmail.company, "[individual]");
    assert_eq!(gmail.company_domain, None);
    assert!(!gmail.needs_enrichment);
    assert!(
        globex.score > gmail.score,
        "a company lead outranks a free-mail one"
    );
    assert!(globex.score_reasons.contains("technology industry"));
}

#[tokio::test]
async fn every_single_sample_event_is_processed() {
    for (name, leads) in [
        ("default.json", 4),
        ("portal-signup.json", 1),
        ("contact-us.json", 1),
        ("stripe-customer-created.json", 1),
    ] {
        let f = fixture_fakes();
        let resp = f
            .app
            .handle(LambdaEvent::new(sample(name), Context::default()))
            .await
            .unwrap();
        assert!(resp.batch_item_failures.is_empty(), "{name}");
        assert_eq!(f.crm.len(), leads, "{name}");
    }
}

#[tokio::test]
async fn redelivery_is_acknowledged_without_a_second_upsert() {
    let f = fixture_fakes();
    let ev = || event(vec![("m1", signup("evt-a", "x@globex.example", json!({})))]);
    f.app.handle(ev()).await.unwrap();
    let resp = f.app.handle(ev()).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let (rec, upserts) = f
        .crm
        .all()
        .pop()
        .map(|l| f.crm.get(&l.lead_id).unwrap())
        .unwrap();
    assert_eq!(upserts, 1, "the ledger short-circuits the same event");
    let msg: EventMessage =
        serde_json::from_value(signup("evt-a", "x@globex.example", json!({}))).unwrap();
    assert!(matches!(
        f.app.service().handle(&msg).await.unwrap(),
        Outcome::Duplicate { lead_id: Some(id) } if id == rec.lead_id
    ));
}

#[tokio::test]
async fn same_person_twice_is_one_crm_record_with_a_sticky_owner() {
    let f = fixture_fakes();
    f.app
        .handle(event(vec![(
            "m1",
            signup(
                "evt-1",
                "Pat@Initech.example",
                json!({"job_title": "Engineer"}),
            ),
        )]))
        .await
        .unwrap();
    let first_owner = f.crm.all().pop().unwrap().owner_id;
    // Other leads advance the team's counter in between.
    for i in 0..3 {
        f.app
            .handle(event(vec![(
                "mx",
                signup(
                    &format!("evt-x{i}"),
                    &format!("p{i}@initech.example"),
                    json!({}),
                ),
            )]))
            .await
            .unwrap();
    }
    let stripe = json!({"id": "evt_2", "source": "stripe", "type": "customer.created",
        "received_at": "2026-11-25T10:00:00Z", "raw_key": "raw/stripe/evt_2.json",
        "event": {"id": "evt_2", "type": "customer.created", "data": {"object": {
            "id": "cus_9", "email": "pat@initech.example", "name": "Pat Smith", "address": {"country": "US"}}}}});
    f.app.handle(event(vec![("m2", stripe)])).await.unwrap();
    assert_eq!(f.crm.len(), 4, "4 people, 5 events");
    let pat = f
        .crm
        .all()
        .into_iter()
        .find(|l| l.email.as_deref() == Some("pat@initech.example"))
        .unwrap();
    let (_, upserts) = f.crm.get(&pat.lead_id).unwrap();
    assert_eq!(upserts, 2, "updated, not duplicated");
    assert_eq!(
        pat.sources,
        vec!["portal.signup", "stripe.customer"],
        "intent accumulates"
    );
    assert_eq!(
        pat.title.as_deref(),
        Some("Engineer"),
        "known values are kept"
    );
    assert_eq!(pat.last_name.as_deref(), Some("Smith"), "new values win");
    assert_eq!(pat.owner_id, first_owner, "the owner is sticky");
    let record = f
        .leads
        .get(&LeadId::from_stored(pat.lead_id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.events.len(), 2);
    assert_eq!(record.stripe_customer.as_deref(), Some("cus_9"));
}

#[tokio::test]
async fn existing_account_owner_wins_and_free_mail_is_never_looked_up() {
    let provider = Arc::new(MemoryProvider::new());
    provider.insert(Company {
        domain: "acme.example".into(),
        employees: Some(20_000),
        ..Company::default()
    });
    let f = fakes(provider.clone());
    f.accounts.insert(Account {
        domain: "acme.example".into(),
        account_id: "001ACME".into(),
        name: "Acme".into(),
        owner_id: "005ACCOUNTOWNER".into(),
    });
    let resp = f
        .app
        .handle(event(vec![
            ("m1", signup("e1", "wile@acme.example", json!({}))),
            ("m2", signup("e2", "someone@gmail.com", json!({}))),
            ("m3", signup("e3", "throwaway@mailinator.com", json!({}))),
        ]))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(provider.calls(), 1, "only the company domain is looked up");
    let all = f.crm.all();
    let acme = all
        .iter()
        .find(|l| l.company_domain.as_deref() == Some("acme.example"))
        .unwrap();
    assert_eq!(acme.owner_id, "005ACCOUNTOWNER");
    assert!(acme.routing_reason.contains("existing account"));
    let disposable = all
        .iter()
        .find(|l| l.email.as_deref() == Some("throwaway@mailinator.com"))
        .unwrap();
    assert_eq!(disposable.grade, "D");
    assert_eq!(disposable.team.as_deref(), Some("self-serve"));
}

#[tokio::test]
async fn provider_down_routes_with_what_is_known_and_flags_the_lead() {
    let provider = Arc::new(MemoryProvider::new());
    provider.set_down(true);
    let f = fakes(provider);
    let resp = f
        .app
        .handle(event(vec![(
            "m1",
            signup("e1", "a@unknown-co.example", json!({"country": "Canada"})),
        )]))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty(), "the lead is not lost");
    let l = f.crm.all().pop().unwrap();
    assert!(l.needs_enrichment);
    assert_eq!(
        l.team.as_deref(),
        Some("na-commercial"),
        "routed by country"
    );
    assert_eq!(l.employees, None);
}

#[tokio::test]
async fn crm_outage_fails_the_record_for_redelivery_and_the_retry_succeeds() {
    let f = fixture_fakes();
    f.crm.set_failing(true);
    let ev = || event(vec![("m1", signup("e1", "a@globex.example", json!({})))]);
    let resp = f.app.handle(ev()).await.unwrap();
    assert_eq!(failed(&resp), vec!["m1"]);
    f.crm.set_failing(false);
    let resp = f.app.handle(ev()).await.unwrap();
    assert!(
        resp.batch_item_failures.is_empty(),
        "the ledger claim was released"
    );
    assert_eq!(f.crm.len(), 1);
}

#[tokio::test]
async fn a_lead_is_indexed_under_its_keyed_subject_and_an_erased_person_is_never_written_again() {
    use blapi::subjects::{Location, System, Tombstone};
    use blapi::values::Email;
    let f = fixture_fakes();
    let email = Email::parse("grace@globex.example").unwrap();
    let subject = f.subjects.key.subject(&email);
    f.app
        .handle(event(vec![(
            "m1",
            signup("evt-g1", "grace@globex.example", json!({})),
        )]))
        .await
        .unwrap();
    let lead_id = f.leads.find_subject(&email).await.unwrap().unwrap();
    let mut places = f.subjects.index.locations(&subject).await.unwrap();
    places.sort();
    assert_eq!(
        places,
        vec![
            Location::new(System::Leads, lead_id.as_str()),
            Location::new(System::Crm, format!("lead:{lead_id}")),
            Location::new(System::Archive, "raw/portal/evt-g1.json"),
        ]
    );
    // Erased (what privacy-requests does last): the data goes, the tombstone stays.
    f.leads
        .erase_subject(&f.subjects.key.subject(&email))
        .await
        .unwrap();
    assert!(f.crm.remove(blapi::crm::CrmObject::Lead, lead_id.as_str()));
    f.subjects
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
    // A replay of the same event (the ledger knows it) and a new one (the tombstone stops it)
    // write nothing about them.
    let replay: EventMessage =
        serde_json::from_value(signup("evt-g1", "grace@globex.example", json!({}))).unwrap();
    assert!(matches!(
        f.app.service().handle(&replay).await.unwrap(),
        Outcome::Duplicate { .. }
    ));
    let new: EventMessage =
        serde_json::from_value(signup("evt-g2", "GRACE@globex.example", json!({}))).unwrap();
    assert_eq!(f.app.service().handle(&new).await.unwrap(), Outcome::Erased);
    let resp = f
        .app
        .handle(event(vec![(
            "m3",
            signup("evt-g3", "grace@globex.example", json!({})),
        )]))
        .await
        .unwrap();
    assert!(
        resp.batch_item_failures.is_empty(),
        "acknowledged, not retried"
    );
    assert!(f.leads.find_subject(&email).await.unwrap().is_none());
    assert!(f.crm.all().is_empty(), "nothing in the CRM");
    // Someone else is still processed.
    f.app
        .handle(event(vec![(
            "m4",
            signup("evt-h1", "hopper@globex.example", json!({})),
        )]))
        .await
        .unwrap();
    assert_eq!(f.crm.all().len(), 1);
}

#[tokio::test]
async fn a_privacy_opt_out_made_after_the_form_wins_and_a_later_form_wins_over_it() {
    use blapi::subjects::Choice;
    use blapi::values::Email;
    let f = fixture_fakes();
    let email = "hopper@globex.example";
    let subject = f.subjects.key.subject(&Email::parse(email).unwrap());
    // Received 2026-11-25T10:00Z; the person opted out (privacy request) an hour later.
    let form_at = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
        .unwrap()
        .timestamp_millis();
    f.subjects
        .index
        .set_choice(
            &subject,
            &Choice {
                opted_out: true,
                at: form_at + 3_600_000,
            },
        )
        .await
        .unwrap();
    let opted_in = json!({"consent": {"marketing": true, "terms": true}});
    f.app
        .handle(event(vec![(
            "m1",
            signup("evt-h1", email, opted_in.clone()),
        )]))
        .await
        .unwrap();
    let lead = || {
        f.crm
            .all()
            .into_iter()
            .find(|l| l.email.as_deref() == Some(email))
            .unwrap()
    };
    assert!(!lead().marketing_opt_in, "the later opt-out stands");
    // A form sent after the opt-out: the person's latest word is to be contacted.
    let mut later = signup("evt-h2", email, opted_in);
    later["received_at"] = json!("2026-11-26T09:00:00Z");
    f.app.handle(event(vec![("m2", later)])).await.unwrap();
    assert!(
        lead().marketing_opt_in,
        "a later form withdraws the opt-out"
    );
}
