//! lead-enrichment against the local stack: DynamoDB, S3 and Secrets Manager in moto (the
//! tables and secrets provisioned from `template.yaml`), the enrichment provider and Salesforce
//! played by wiremock. Every test uses random e-mails and domains, so tests run in parallel
//! and repeatedly on the shared stack; the round-robin test provisions a stack of its own.

// Test helpers outside #[test] fns unwrap too (clippy.toml allows it only inside them).
#![allow(clippy::unwrap_used)]

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use blapi::aws::Clients;
use blapi::config::Env;
use blapi::crm::SinkCrm;
use blapi::leads::Config;
use blapi::leads::input::LeadId;
use blapi::leads::normalize::Email;
use blapi::leads::routing::{Account, AccountDirectory};
use blapi::leads::store::{DynamoLeadsTable, LeadStore};
use blapi::retry::RetryPolicy;
use blapi::storage::{ObjectStore, S3Store};
use blapi_infra::LocalStack;
use blapi_infra::testing::{fresh_stack, stack};
use lambda_runtime::{Context, LambdaEvent};
use lead_enrichment::{App, Ports};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{header, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct Harness {
    app: App,
    sink: SinkCrm,
    leads: DynamoLeadsTable,
    artifacts: S3Store,
    subject_key: blapi::subjects::SubjectKey,
}

async fn harness(stack: &LocalStack, overrides: &[(&str, String)]) -> Harness {
    let mut env: BTreeMap<String, String> = stack.env("lead-enrichment");
    for (k, v) in overrides {
        env.insert((*k).to_owned(), v.clone());
    }
    let clients = Clients::new(&stack.sdk_config().await);
    let artifacts = S3Store::new(clients.s3().clone(), env["ARTIFACTS_BUCKET"].clone());
    let sink = SinkCrm::new(
        clients.dynamodb().clone(),
        env["CRM_TABLE"].clone(),
        Arc::new(artifacts.clone()),
    );
    let subject_key =
        blapi::subjects::SubjectKey::from_secret(clients.secrets(), &env["PRIVACY_KEY_SECRET_ID"])
            .await
            .unwrap();
    let leads = DynamoLeadsTable::new(
        clients.dynamodb().clone(),
        env["LEADS_TABLE"].clone(),
        subject_key.clone(),
    );
    let mut config = Config::from_env(&Env::from_map(env)).unwrap();
    config.http_retry = Some(RetryPolicy::immediate(3));
    let ports = Ports::connect(&config, &clients).await.unwrap();
    let app = App::new(config, ports).unwrap();
    Harness {
        app,
        sink,
        leads,
        artifacts,
        subject_key,
    }
}

fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn lead_msg(event_id: &str, email: &str, country: &str) -> serde_json::Value {
    json!({"id": event_id, "source": "portal", "type": "lead.signup",
        "received_at": "2026-11-25T10:00:00Z", "raw_key": format!("raw/portal/{event_id}.json"),
        "event": {"type": "lead.signup", "timestamp": "2026-11-25T10:00:00Z", "data": {
            "email": email, "first_name": "Test", "last_name": "Person", "country": country,
            "phone": "+33 1 00 00 00 00", "job_title": "Head of Data", "form": "demo-request",
            "consent": {"marketing": true, "terms": true}}}})
}

fn batch(records: Vec<(String, String)>) -> LambdaEvent<SqsEvent> {
    let mut e = SqsEvent::default();
    e.records = records
        .into_iter()
        .map(|(id, body)| {
            let mut m = SqsMessage::default();
            m.message_id = Some(id);
            m.body = Some(body);
            m
        })
        .collect();
    LambdaEvent::new(e, Context::default())
}

async fn send(app: &App, msg: &serde_json::Value) -> SqsBatchResponse {
    app.handle(batch(vec![(uid(), msg.to_string())]))
        .await
        .unwrap()
}

fn company(domain: &str, employees: u64, country: &str) -> serde_json::Value {
    json!({"domain": domain, "name": format!("Company {domain}"),
        "category": {"sector": "Information Technology", "industry": "Software"},
        "metrics": {"employees": employees, "employeesRange": "251-1K", "annualRevenue": 50000000},
        "geo": {"country": country, "countryCode": country}})
}

fn provider_mock(domain: &str) -> wiremock::MockBuilder {
    Mock::given(method("GET"))
        .and(path("/v2/companies/find"))
        .and(query_param("domain", domain))
        .and(header("authorization", "Bearer local-enrichment-key"))
}

#[tokio::test]
async fn sink_path_enriches_once_per_domain_and_keeps_contact_data_out_of_the_crm_table() {
    let provider = MockServer::start().await;
    let domain = format!("{}.example", uid());
    provider_mock(&domain)
        .respond_with(ResponseTemplate::new(200).set_body_json(company(&domain, 300, "FR")))
        .expect(1)
        .mount(&provider)
        .await;
    let h = harness(stack(), &[("ENRICHMENT_API_BASE", provider.uri())]).await;

    let (e1, e2) = (uid(), uid());
    let email1 = format!("first.{}@{domain}", uid());
    let email2 = format!("second.{}@{domain}", uid());
    assert!(
        send(&h.app, &lead_msg(&e1, &email1, "France"))
            .await
            .batch_item_failures
            .is_empty()
    );
    assert!(
        send(&h.app, &lead_msg(&e2, &email2, "FR"))
            .await
            .batch_item_failures
            .is_empty()
    );
    provider.verify().await; // the second lead of the domain cost no provider call

    let id1 = LeadId::for_event("portal", &e1);
    let (crm, revision) = h.sink.get(id1.as_str()).await.unwrap().unwrap();
    assert_eq!(revision, 1);
    assert_eq!(crm.company, "Company ".to_owned() + &domain);
    assert_eq!(crm.employee_band.as_deref(), Some("201-1000"));
    assert_eq!(crm.team.as_deref(), Some("emea-commercial"));
    assert_eq!(
        crm.country.map(|c| c.code().to_owned()).as_deref(),
        Some("FR")
    );
    assert!(!crm.needs_enrichment);
    assert!(crm.score > 0 && !crm.score_reasons.is_empty());
    assert!(
        crm.email.is_none() && crm.first_name.is_none() && crm.phone.is_none(),
        "no contact data in the CRM sink"
    );
    let export = h
        .artifacts
        .get(&SinkCrm::export_key(id1.as_str()))
        .await
        .unwrap()
        .unwrap();
    let export = String::from_utf8(export).unwrap();
    assert_eq!(export.lines().count(), 1);
    assert!(export.contains(id1.as_str()) && !export.contains(&email1) && !export.contains("+33"));

    // The LeadsTable holds the personal data, erasable by subject.
    let rec = h.leads.get(&id1).await.unwrap().unwrap();
    assert_eq!(rec.person.email.as_str(), email1);
    assert_eq!(rec.person.phone.as_deref(), Some("+33 1 00 00 00 00"));
    assert_eq!(rec.route.owner_id, crm.owner_id);
    let erased = h
        .leads
        .erase_subject(&h.subject_key.subject(&Email::parse(&email1).unwrap()))
        .await
        .unwrap();
    assert_eq!(erased, 1);
    assert!(h.leads.get(&id1).await.unwrap().is_none());
    // And the CRM sink's record and export object (every version) by the lead's id.
    use blapi::crm::{CrmObject, CrmPort};
    assert!(h.sink.erase(CrmObject::Lead, id1.as_str()).await.unwrap());
    assert!(h.sink.get(id1.as_str()).await.unwrap().is_none());
    assert!(
        h.artifacts
            .get(&SinkCrm::export_key(id1.as_str()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !h.sink.erase(CrmObject::Lead, id1.as_str()).await.unwrap(),
        "idempotent"
    );
}

#[tokio::test]
async fn same_lead_twice_is_one_crm_record_updated_not_duplicated() {
    let h = harness(stack(), &[("ENRICHMENT_API_BASE", "fixture:".into())]).await;
    let email = format!("dup.{}@globex.example", uid());
    let first = lead_msg(&uid(), &email, "US");
    send(&h.app, &first).await;
    send(&h.app, &first).await; // redelivery of the same event
    let later = lead_msg(&uid(), &email.to_uppercase(), "US"); // same person, new event
    send(&h.app, &later).await;

    let id = LeadId::for_event("portal", first["id"].as_str().unwrap());
    let (crm, revision) = h.sink.get(id.as_str()).await.unwrap().unwrap();
    assert_eq!(
        revision, 2,
        "one record: created, then updated once; the redelivery was a no-op"
    );
    let second_id = LeadId::for_event("portal", later["id"].as_str().unwrap());
    assert!(
        h.sink.get(second_id.as_str()).await.unwrap().is_none(),
        "no second record"
    );
    assert_eq!(
        crm.employees,
        Some(2400),
        "enriched from the bundled fixture"
    );
}

#[tokio::test]
async fn twenty_concurrent_leads_into_one_territory_follow_the_weights_without_collision() {
    let stack = fresh_stack().await;
    let provider = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&provider)
        .await;
    let h = harness(&stack, &[("ENRICHMENT_API_BASE", provider.uri())]).await;
    // Unknown companies in France -> territory rule emea-commercial (weights 5/3/2).
    let msgs: Vec<serde_json::Value> = (0..20)
        .map(|i| lead_msg(&uid(), &format!("p{i}@{}.example", uid()), "FR"))
        .collect();
    let results = futures::future::join_all(msgs.iter().map(|m| send(&h.app, m))).await;
    assert!(results.iter().all(|r| r.batch_item_failures.is_empty()));

    let mut slots = Vec::new();
    let mut owners: HashMap<String, usize> = HashMap::new();
    for m in &msgs {
        let id = LeadId::for_event("portal", m["id"].as_str().unwrap());
        let rec = h.leads.get(&id).await.unwrap().unwrap();
        assert_eq!(rec.route.team.as_deref(), Some("emea-commercial"));
        slots.push(rec.route.slot.unwrap());
        let (crm, _) = h.sink.get(id.as_str()).await.unwrap().unwrap();
        assert_eq!(crm.owner_id, rec.route.owner_id);
        *owners.entry(crm.owner_id).or_default() += 1;
    }
    slots.sort_unstable();
    assert_eq!(
        slots,
        (0..20).collect::<Vec<u64>>(),
        "every lead got its own slot"
    );
    assert_eq!(h.leads.counter_value("emea-commercial").await.unwrap(), 20);
    // 20 slots = two full rotations of weights 5/3/2.
    assert_eq!(owners["005000000000EC1AAA"], 10);
    assert_eq!(owners["005000000000EC2AAA"], 6);
    assert_eq!(owners["005000000000EC3AAA"], 4);
}

#[tokio::test]
async fn salesforce_upsert_request_shape() {
    let sf = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "00Dtoken", "instance_url": sf.uri(), "token_type": "Bearer"})))
        .expect(1)
        .mount(&sf)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex(
            r"^/services/data/v61\.0/sobjects/Lead/Blapi_Lead_Id__c/ld_[0-9a-f]{24}$",
        ))
        .and(header("authorization", "Bearer 00Dtoken"))
        .and(header("sforce-auto-assign", "FALSE"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"id": "00Q5e000001", "created": true})),
        )
        .expect(2)
        .mount(&sf)
        .await;
    let h = harness(
        stack(),
        &[
            ("ENRICHMENT_API_BASE", "fixture:".into()),
            ("SALESFORCE_LOGIN_URL", sf.uri()),
            (
                "SALESFORCE_SECRET_ID",
                format!("{}/salesforce", stack().prefix),
            ),
        ],
    )
    .await;
    let email = format!("sf.{}@umbrella.example", uid());
    let msg = lead_msg(&uid(), &email, "Germany");
    assert!(send(&h.app, &msg).await.batch_item_failures.is_empty());
    assert!(
        send(
            &h.app,
            &lead_msg(&uid(), &format!("b{}@gmail.com", uid()), "DE")
        )
        .await
        .batch_item_failures
        .is_empty()
    );
    sf.verify().await;

    let reqs = sf.received_requests().await.unwrap();
    let token = &reqs[0];
    let form = String::from_utf8_lossy(&token.body);
    assert!(form.contains("grant_type=client_credentials"));
    assert!(
        form.contains("client_id=local-client")
            && form.contains("client_secret=local-client-secret")
    );
    let patch = &reqs[1];
    let id = LeadId::for_event("portal", msg["id"].as_str().unwrap());
    assert!(patch.url.path().ends_with(id.as_str()));
    let body: serde_json::Value = serde_json::from_slice(&patch.body).unwrap();
    assert_eq!(body["Email"], email);
    assert_eq!(body["FirstName"], "Test");
    assert_eq!(body["LastName"], "Person");
    assert_eq!(body["Company"], "Umbrella GmbH");
    assert_eq!(body["Country"], "Germany");
    assert_eq!(body["NumberOfEmployees"], 8000);
    assert_eq!(body["LeadSource"], "Web Sign-up");
    assert_eq!(body["Territory_Team__c"], "dach-enterprise");
    assert!(
        body["OwnerId"]
            .as_str()
            .unwrap()
            .starts_with("005000000000DE")
    );
    assert!(body["Lead_Score__c"].as_u64().unwrap() > 0);
    assert_eq!(body["Needs_Enrichment__c"], false);
    assert!(body.get("Blapi_Lead_Id__c").is_none());
    // Nothing went to the built-in sink.
    assert!(h.sink.get(id.as_str()).await.unwrap().is_none());
}

#[tokio::test]
async fn salesforce_faults_fail_the_record_with_the_right_verdict() {
    let sf = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "tok", "instance_url": sf.uri()})))
        .mount(&sf)
        .await;
    // First lead: 503 three times (retried) -> the record fails, the ledger is released,
    // and the redelivery goes through.
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .expect(3)
        .mount(&sf)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&sf)
        .await;
    let h = harness(
        stack(),
        &[
            ("ENRICHMENT_API_BASE", "fixture:".into()),
            ("SALESFORCE_LOGIN_URL", sf.uri()),
            (
                "SALESFORCE_SECRET_ID",
                format!("{}/salesforce", stack().prefix),
            ),
        ],
    )
    .await;
    let msg = lead_msg(&uid(), &format!("x{}@globex.example", uid()), "US");
    let record = (uid(), msg.to_string());
    let resp = h.app.handle(batch(vec![record.clone()])).await.unwrap();
    assert_eq!(resp.batch_item_failures.len(), 1);
    let resp = h.app.handle(batch(vec![record])).await.unwrap();
    assert!(
        resp.batch_item_failures.is_empty(),
        "the redelivery succeeds"
    );
}

#[tokio::test]
async fn provider_faults_never_lose_the_lead() {
    let provider = MockServer::start().await;
    let d = |tag: &str| format!("{tag}-{}.example", uid());
    let (throttled, broken, slow, unknown) = (d("throttled"), d("broken"), d("slow"), d("unknown"));
    provider_mock(&throttled)
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&provider)
        .await;
    provider_mock(&throttled)
        .respond_with(ResponseTemplate::new(200).set_body_json(company(&throttled, 40, "US")))
        .expect(1)
        .mount(&provider)
        .await;
    provider_mock(&broken)
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&provider)
        .await;
    provider_mock(&slow)
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(company(&slow, 40, "US"))
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&provider)
        .await;
    provider_mock(&unknown)
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&provider)
        .await;
    let h = harness(
        stack(),
        &[
            ("ENRICHMENT_API_BASE", provider.uri()),
            ("ENRICHMENT_TIMEOUT_MS", "200".into()),
        ],
    )
    .await;

    let mut ids = BTreeMap::new();
    for domain in [&throttled, &broken, &slow, &unknown] {
        let msg = lead_msg(&uid(), &format!("p@{domain}"), "US");
        let started = std::time::Instant::now();
        let resp = send(&h.app, &msg).await;
        assert!(resp.batch_item_failures.is_empty(), "{domain}: not lost");
        if domain == &throttled {
            // Lower bound only: the 429's Retry-After (1 s) was waited before the retry.
            assert!(started.elapsed() >= Duration::from_millis(900));
        }
        ids.insert(
            domain.clone(),
            LeadId::for_event("portal", msg["id"].as_str().unwrap()),
        );
    }
    provider.verify().await;
    let crm = |d: &String| {
        let id = ids[d].clone();
        let sink = h.sink.clone();
        async move { sink.get(id.as_str()).await.unwrap().unwrap().0 }
    };
    let t = crm(&throttled).await;
    assert!(!t.needs_enrichment && t.employees == Some(40));
    let b = crm(&broken).await;
    assert!(b.needs_enrichment && b.team.as_deref() == Some("na-commercial"));
    let s = crm(&slow).await;
    assert!(s.needs_enrichment, "a timeout is an outage");
    let u = crm(&unknown).await;
    assert!(!u.needs_enrichment && u.employees.is_none());
    assert_eq!(
        u.company, unknown,
        "an unknown company is named by its domain"
    );
}

#[tokio::test]
async fn a_seeded_account_owner_keeps_leads_of_its_domain() {
    let provider = MockServer::start().await;
    let domain = format!("{}.example", uid());
    provider_mock(&domain)
        .respond_with(ResponseTemplate::new(200).set_body_json(company(&domain, 9000, "US")))
        .mount(&provider)
        .await;
    let h = harness(stack(), &[("ENRICHMENT_API_BASE", provider.uri())]).await;
    h.leads
        .put_account(&Account {
            domain: domain.clone(),
            account_id: "001SEEDED".into(),
            name: "Seeded Customer".into(),
            owner_id: "005SEEDEDOWNER".into(),
        })
        .await
        .unwrap();
    let msg = lead_msg(&uid(), &format!("new.user@{domain}"), "US");
    assert!(send(&h.app, &msg).await.batch_item_failures.is_empty());
    let id = LeadId::for_event("portal", msg["id"].as_str().unwrap());
    let (crm, _) = h.sink.get(id.as_str()).await.unwrap().unwrap();
    assert_eq!(crm.owner_id, "005SEEDEDOWNER");
    assert_eq!(crm.team, None);
    assert!(crm.routing_reason.contains("001SEEDED"));
}

#[tokio::test]
async fn a_malformed_message_fails_alone() {
    let h = harness(stack(), &[("ENRICHMENT_API_BASE", "fixture:".into())]).await;
    let good = lead_msg(&uid(), &format!("ok.{}@hooli.example", uid()), "US");
    let bad_email = lead_msg(&uid(), "not an email", "US");
    let resp = h
        .app
        .handle(batch(vec![
            ("good".into(), good.to_string()),
            ("garbage".into(), "{not json".into()),
            ("bad-email".into(), bad_email.to_string()),
        ]))
        .await
        .unwrap();
    let failed: Vec<&str> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, vec!["garbage", "bad-email"]);
    let id = LeadId::for_event("portal", good["id"].as_str().unwrap());
    assert!(h.sink.get(id.as_str()).await.unwrap().is_some());
}

#[tokio::test]
async fn configuration_errors_name_the_variable() {
    let stack = stack();
    let clients = Clients::new(&stack.sdk_config().await);
    let mut env = stack.env("lead-enrichment");
    env.insert("ENRICHMENT_API_BASE".into(), "ftp://nope".into());
    let err = build(&env, &clients).await.unwrap_err();
    assert!(err.to_string().contains("ENRICHMENT_API_BASE"), "{err}");
    env.insert("ENRICHMENT_API_BASE".into(), "fixture:".into());
    env.insert(
        "SALESFORCE_LOGIN_URL".into(),
        "https://acme.my.salesforce.com".into(),
    );
    env.insert("SALESFORCE_SECRET_ID".into(), String::new());
    let err = build(&env, &clients).await.unwrap_err();
    assert!(err.to_string().contains("SALESFORCE_SECRET_ID"), "{err}");
}

/// The app as Lambda builds it: config, then ports, then the app.
async fn build(env: &BTreeMap<String, String>, clients: &Clients) -> blapi::Result<App> {
    let config = Config::from_env(&Env::from_map(env.clone()))?;
    let ports = Ports::connect(&config, clients).await?;
    App::new(config, ports)
}
