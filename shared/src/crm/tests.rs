//! The adapters' tests: Salesforce against wiremock, the sink against an in-memory DynamoDB
//! behind wiremock, the fake.

use super::*;
use crate::config::Secret;
use crate::error::Error;
use crate::retry::RetryPolicy;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::matchers::{body_json, body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub(crate) fn lead() -> CrmLead {
    CrmLead {
        lead_id: "ld_0123456789abcdef01234567".into(),
        email: Some("ada@acme.example".into()),
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        phone: None,
        title: Some("CTO".into()),
        company: "Acme Corporation".into(),
        company_domain: Some("acme.example".into()),
        industry: Some("Machinery".into()),
        employees: Some(12000),
        employee_band: Some("5001+".into()),
        country: crate::values::Country::parse("US"),
        lead_source: "Contact Us".into(),
        sources: vec!["portal.contact_us".into()],
        score: 88,
        grade: "A".into(),
        score_reasons: "+30 global company".into(),
        owner_id: "005000000000NE1AAA".into(),
        team: Some("na-enterprise".into()),
        routing_reason: "territory rule na-enterprise".into(),
        needs_enrichment: false,
        marketing_opt_in: true,
    }
}

fn crm(server: &MockServer) -> SalesforceCrm {
    let mut cfg = SalesforceConfig::new(server.uri(), "v61.0");
    cfg.timeout = Duration::from_secs(2);
    SalesforceCrm::new(
        cfg,
        Secret::new(SalesforceCredentials {
            client_id: "cid".into(),
            client_secret: "csecret".into(),
        }),
    )
    .unwrap()
    .with_retry(RetryPolicy::immediate(3))
}

async fn mount_token(server: &MockServer, token: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .and(body_string_contains("client_id=cid"))
        .and(body_string_contains("client_secret=csecret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": token, "instance_url": server.uri(), "token_type": "Bearer",
            "issued_at": "1700000000000"})))
        .up_to_n_times(times)
        .expect(times)
        .mount(server)
        .await;
}

const UPSERT_PATH: &str =
    "/services/data/v61.0/sobjects/Lead/Blapi_Lead_Id__c/ld_0123456789abcdef01234567";

#[tokio::test]
async fn upsert_request_shape_and_token_cache() {
    let server = MockServer::start().await;
    mount_token(&server, "tok1", 1).await;
    Mock::given(method("PATCH"))
        .and(path(UPSERT_PATH))
        .and(header("authorization", "Bearer tok1"))
        .and(header("sforce-auto-assign", "FALSE"))
        .and(header("content-type", "application/json"))
        .and(body_json(SalesforceCrm::body(&lead())))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            serde_json::json!({"id": "00Q000000000001", "success": true, "errors": [], "created": true}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(UPSERT_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"id": "00Q000000000001", "success": true, "errors": [], "created": false}),
        ))
        .mount(&server)
        .await;
    let c = crm(&server);
    let u = c.upsert(&CrmRecord::Lead(lead())).await.unwrap();
    assert_eq!(
        u,
        Upserted {
            record_id: Some("00Q000000000001".into()),
            created: true
        }
    );
    let u = c.upsert(&CrmRecord::Lead(lead())).await.unwrap();
    assert!(!u.created);
    assert_eq!(c.token_requests(), 1, "token cached between upserts");

    // The body: our owner, no external id field, individuals get required placeholders.
    let body = SalesforceCrm::body(&lead());
    assert_eq!(body["OwnerId"], "005000000000NE1AAA");
    assert_eq!(body["LastName"], "Lovelace");
    assert_eq!(body["Country"], "United States");
    assert_eq!(body["HasOptedOutOfEmail"], false);
    assert!(body.get("Blapi_Lead_Id__c").is_none());
    assert!(body.get("Phone").is_none(), "absent fields are not sent");
    let reqs: Vec<Request> = server.received_requests().await.unwrap();
    let patch = reqs.iter().find(|r| r.method.as_str() == "PATCH").unwrap();
    assert_eq!(patch.url.path(), UPSERT_PATH);
}

#[tokio::test]
async fn no_content_is_an_update() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let u = crm(&server).upsert(&CrmRecord::Lead(lead())).await.unwrap();
    assert!(!u.created);
}

#[tokio::test]
async fn unauthorized_refreshes_the_token_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"access_token": "stale", "instance_url": server.uri()}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount_token(&server, "fresh", 1).await;
    Mock::given(method("PATCH"))
        .and(header("authorization", "Bearer stale"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            serde_json::json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(header("authorization", "Bearer fresh"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"id": "00Q1", "created": true})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = crm(&server);
    assert!(c.upsert(&CrmRecord::Lead(lead())).await.unwrap().created);
    assert_eq!(c.token_requests(), 2);
}

#[tokio::test]
async fn unauthorized_twice_is_an_auth_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"access_token": "t", "instance_url": server.uri()}),
            ),
        )
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let e = crm(&server)
        .upsert(&CrmRecord::Lead(lead()))
        .await
        .unwrap_err();
    assert!(matches!(e, CrmError::Auth(_)), "{e:?}");
    assert!(!Error::from(e).is_retryable());
}

#[tokio::test]
async fn ambiguous_match_and_field_errors_are_reported_clearly() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("PATCH"))
        .and(path(UPSERT_PATH))
        .respond_with(ResponseTemplate::new(300).set_body_json(serde_json::json!([
            "/services/data/v61.0/sobjects/Lead/00Q1",
            "/services/data/v61.0/sobjects/Lead/00Q2"
        ])))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(UPSERT_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!([
            {"message": "Owner ID: id value of incorrect type", "errorCode": "MALFORMED_ID", "fields": ["OwnerId"]}])))
        .mount(&server)
        .await;
    let c = crm(&server);
    let e = c.upsert(&CrmRecord::Lead(lead())).await.unwrap_err();
    assert!(matches!(e, CrmError::Ambiguous { count: 2, .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("2 CRM records match external id ld_0123456789abcdef01234567")
    );
    assert!(!Error::from(e).is_retryable());
    let e = c.upsert(&CrmRecord::Lead(lead())).await.unwrap_err();
    assert!(matches!(e, CrmError::Rejected { .. }), "{e:?}");
    // The code and the field, never Salesforce's message (it may quote a value).
    assert!(e.to_string().contains("MALFORMED_ID [OwnerId]"), "{e}");
    assert!(!e.to_string().contains("incorrect type"), "{e}");
    assert!(!Error::from(e).is_retryable());
}

#[tokio::test]
async fn unavailable_is_retried_then_retryable() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(503).set_body_json(
            serde_json::json!([{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}]),
        ))
        .expect(3)
        .mount(&server)
        .await;
    let e = crm(&server)
        .upsert(&CrmRecord::Lead(lead()))
        .await
        .unwrap_err();
    assert!(matches!(e, CrmError::Unavailable(_)), "{e:?}");
    assert!(
        Error::from(e).is_retryable(),
        "SQS redelivers the lead later"
    );
}

#[tokio::test]
async fn bad_credentials_are_an_auth_error_without_the_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            serde_json::json!({"error": "invalid_client", "error_description": "invalid client credentials"}),
        ))
        .mount(&server)
        .await;
    let e = crm(&server)
        .upsert(&CrmRecord::Lead(lead()))
        .await
        .unwrap_err();
    assert!(matches!(e, CrmError::Auth(_)));
    assert!(e.to_string().contains("invalid_client") && !e.to_string().contains("csecret"));
}

#[tokio::test]
async fn memory_crm_counts_upserts() {
    let c = MemoryCrm::new();
    assert!(c.upsert(&CrmRecord::Lead(lead())).await.unwrap().created);
    assert!(!c.upsert(&CrmRecord::Lead(lead())).await.unwrap().created);
    assert_eq!(c.len(), 1);
    assert_eq!(c.get(&lead().lead_id).unwrap().1, 2);
    let m = lead().without_contact_data();
    assert!(
        m.email.is_none() && m.first_name.is_none() && m.last_name.is_none() && m.title.is_none()
    );
}

fn customer_records() -> Vec<CrmRecord> {
    let eur: crate::values::Currency = "eur".parse().unwrap();
    vec![
        CrmRecord::Account(CrmAccount {
            external_id: "cus_1".into(),
            name: "Acme GmbH".into(),
            domains: vec!["acme.example".into()],
            billing_country: crate::values::Country::parse("DE"),
            owner_id: "005OWNER".into(),
            status: AccountStatus::Customer,
            license_id: Some("lic_1".into()),
            license_expires: Some("2026-06-27".into()),
            last_invoice_id: Some("in_1".into()),
            last_invoice_total: Some(crate::values::Money::new(7500, eur.clone())),
            flags: vec![],
        }),
        CrmRecord::Contact(CrmContact {
            external_id: "0f3a".into(),
            account_external_id: "cus_1".into(),
            email: Some("ada@acme.example".into()),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            lead_id: Some("ld_1".into()),
        }),
        CrmRecord::Opportunity(CrmOpportunity {
            external_id: "sub_1:2026-05-28".into(),
            account_external_id: "cus_1".into(),
            name: "Acme GmbH · professional · 2026-05-28".into(),
            stage: OpportunityStage::ClosedWon,
            amount: Some(crate::values::Money::new(90_000, eur)),
            seats: Some(5),
            sku: Some("professional".into()),
            close_date: "2026-05-28".into(),
            subscription_id: "sub_1".into(),
            license_id: Some("lic_1".into()),
            loss_reason: None,
            flags: vec![],
            owner_id: "005OWNER".into(),
        }),
        CrmRecord::LeadConversion(LeadConversion {
            lead_id: "ld_1".into(),
            account_external_id: "cus_1".into(),
        }),
    ]
}

fn composite_ok(n: usize) -> serde_json::Value {
    let results: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"body": {"id": format!("001{i}"), "success": true, "created": true},
            "httpHeaders": {}, "httpStatusCode": 201, "referenceId": format!("r{i}")})
        })
        .collect();
    serde_json::json!({ "compositeResponse": results })
}

const COMPOSITE_PATH: &str = "/services/data/v61.0/composite";

#[tokio::test]
async fn customer_records_go_in_one_composite_request_keyed_by_external_ids() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("POST"))
        .and(path(COMPOSITE_PATH))
        .and(header("authorization", "Bearer tok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(composite_ok(4)))
        .expect(1)
        .mount(&server)
        .await;
    let c = crm(&server);
    let out = c.upsert_all(&customer_records()).await.unwrap();
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|u| u.created));
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 2, "one token request, one composite request");
    let body: serde_json::Value = serde_json::from_slice(&reqs[1].body).unwrap();
    assert_eq!(body["allOrNone"], false);
    let subs = body["compositeRequest"].as_array().unwrap();
    let urls: Vec<&str> = subs.iter().map(|s| s["url"].as_str().unwrap()).collect();
    assert_eq!(
        urls,
        vec![
            "/services/data/v61.0/sobjects/Account/Blapi_Stripe_Customer_Id__c/cus_1",
            "/services/data/v61.0/sobjects/Contact/Blapi_Contact_Key__c/0f3a",
            "/services/data/v61.0/sobjects/Opportunity/Blapi_Opportunity_Key__c/sub_1:2026-05-28",
            "/services/data/v61.0/sobjects/Lead/Blapi_Lead_Id__c/ld_1",
        ]
    );
    assert!(subs.iter().all(|s| s["method"] == "PATCH"));
    let account = &subs[0]["body"];
    assert_eq!(account["Name"], "Acme GmbH");
    assert_eq!(account["BillingCountry"], "Germany");
    assert_eq!(account["Lifecycle_Status__c"], "customer");
    assert_eq!(account["Last_Invoice_Total__c"].to_string(), "75.0");
    // Lookups by the account's external id: no Salesforce id needed first.
    assert_eq!(
        subs[1]["body"]["Account"]["Blapi_Stripe_Customer_Id__c"],
        "cus_1"
    );
    assert_eq!(subs[2]["body"]["StageName"], "Closed Won");
    assert_eq!(subs[2]["body"]["Amount"].to_string(), "900.0");
    assert_eq!(subs[2]["body"]["CloseDate"], "2026-05-28");
    assert_eq!(subs[3]["body"]["Status"], "Converted");
    assert_eq!(
        subs[3]["body"]["Converted_Account__r"]["Blapi_Stripe_Customer_Id__c"],
        "cus_1"
    );
}

#[tokio::test]
async fn a_refused_record_fails_alone_named_by_its_field_without_the_message() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    let mut resp = composite_ok(4);
    resp["compositeResponse"][1] = serde_json::json!({"httpStatusCode": 400, "referenceId": "r1",
        "body": [{"errorCode": "INVALID_EMAIL_ADDRESS", "fields": ["Email"],
                  "message": "Email: invalid email address: ada@acme.example"}]});
    Mock::given(method("POST"))
        .and(path(COMPOSITE_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(resp))
        .expect(1)
        .mount(&server)
        .await;
    let e = crm(&server)
        .upsert_all(&customer_records())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, CrmError::Rejected { .. }), "{e:?}");
    assert!(
        text.contains("Contact:0f3a") && text.contains("INVALID_EMAIL_ADDRESS [Email]"),
        "{text}"
    );
    assert!(
        !text.contains("ada@acme.example"),
        "no personal data: {text}"
    );
    assert!(!Error::from(e).is_retryable());
}

#[tokio::test]
async fn composite_refreshes_the_token_once_and_retries_unavailability() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"access_token": "stale", "instance_url": server.uri()}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount_token(&server, "fresh", 1).await;
    Mock::given(method("POST"))
        .and(path(COMPOSITE_PATH))
        .and(header("authorization", "Bearer stale"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(COMPOSITE_PATH))
        .and(header("authorization", "Bearer fresh"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(COMPOSITE_PATH))
        .and(header("authorization", "Bearer fresh"))
        .respond_with(ResponseTemplate::new(200).set_body_json(composite_ok(4)))
        .mount(&server)
        .await;
    let c = crm(&server);
    assert_eq!(c.upsert_all(&customer_records()).await.unwrap().len(), 4);
    assert_eq!(c.token_requests(), 2);

    // Down for good: retried, then reported retryable (SQS brings the message back).
    let down = MockServer::start().await;
    mount_token(&down, "t", 1).await;
    Mock::given(method("POST"))
        .and(path(COMPOSITE_PATH))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&down)
        .await;
    let e = crm(&down)
        .upsert_all(&customer_records())
        .await
        .unwrap_err();
    assert!(Error::from(e).is_retryable());
}

#[tokio::test]
async fn more_than_25_records_take_one_composite_request_per_25() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("POST"))
        .and(path(COMPOSITE_PATH))
        .respond_with(|req: &Request| {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let n = body["compositeRequest"].as_array().unwrap().len();
            ResponseTemplate::new(200).set_body_json(composite_ok(n))
        })
        .expect(2)
        .mount(&server)
        .await;
    let records: Vec<CrmRecord> = (0..30)
        .map(|i| {
            let mut l = lead();
            l.lead_id = format!("ld_{i}");
            CrmRecord::Lead(l)
        })
        .collect();
    assert_eq!(crm(&server).upsert_all(&records).await.unwrap().len(), 30);
}

#[tokio::test]
async fn a_composite_that_times_out_is_retried_then_reported_retryable() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("POST"))
        .and(path(COMPOSITE_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(composite_ok(4))
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    let mut cfg = SalesforceConfig::new(server.uri(), "v61.0");
    cfg.timeout = Duration::from_millis(200);
    let c = SalesforceCrm::new(
        cfg,
        Secret::new(SalesforceCredentials {
            client_id: "cid".into(),
            client_secret: "csecret".into(),
        }),
    )
    .unwrap()
    .with_retry(RetryPolicy::immediate(2));
    let e = c.upsert_all(&customer_records()).await.unwrap_err();
    assert!(matches!(e, CrmError::Unavailable(_)), "{e:?}");
    assert!(Error::from(e).is_retryable(), "SQS brings the message back");
    let composites = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == COMPOSITE_PATH)
        .count();
    assert_eq!(composites, 2, "tried, then retried once");
}

fn health() -> AccountHealth {
    AccountHealth {
        account_external_id: "cus_1".into(),
        score: Some(42),
        band: "at_risk".into(),
        reasons: "active users down 60% in 30 days; license expires in 12 days".into(),
        scored_on: "2026-06-15".into(),
        active_users: Some(3),
        licensed_seats: Some(25),
        usage_summary: "api_calls 12 345; storage_gb 12.5".into(),
    }
}

/// The same account with nothing to score.
fn no_data() -> AccountHealth {
    AccountHealth {
        score: None,
        band: "no_data".into(),
        reasons: "no telemetry".into(),
        scored_on: "2026-06-16".into(),
        active_users: None,
        licensed_seats: None,
        usage_summary: String::new(),
        ..health()
    }
}

fn task() -> CrmTask {
    CrmTask {
        external_id: "cus_1:at_risk:2026-06-15".into(),
        account_external_id: "cus_1".into(),
        owner_id: "005OWNER".into(),
        subject: "Acme GmbH is at risk".into(),
        description: "Health 42 (at_risk): active users down 60% in 30 days".into(),
        due_date: "2026-06-18".into(),
        priority: "High".into(),
    }
}

fn account() -> CrmAccount {
    match customer_records().remove(0) {
        CrmRecord::Account(a) => a,
        other => panic!("the first customer record is the account, not {other:?}"),
    }
}

const ACCOUNT_PATH: &str =
    "/services/data/v61.0/sobjects/Account/Blapi_Stripe_Customer_Id__c/cus_1";
const TASK_PATH: &str =
    "/services/data/v61.0/sobjects/Task/Blapi_Task_Key__c/cus_1:at_risk:2026-06-15";

fn required_field_missing() -> serde_json::Value {
    serde_json::json!([{"message": "Required fields are missing: [Name]",
        "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["Name"]}])
}

#[test]
fn health_and_tasks_are_named_apart_from_accounts() {
    let h = CrmRecord::AccountHealth(health());
    let t = CrmRecord::Task(task());
    assert_eq!(h.object(), CrmObject::Account);
    assert_eq!(h.external_id(), "cus_1");
    assert_eq!(h.key(), "AccountHealth:cus_1");
    assert_ne!(h.key(), CrmRecord::Account(account()).key());
    assert_eq!(t.object(), CrmObject::Task);
    assert_eq!(t.external_id(), "cus_1:at_risk:2026-06-15");
    assert_eq!(t.key(), "Task:cus_1:at_risk:2026-06-15");
    assert_eq!(CrmObject::Task.sobject(), "Task");
    assert_eq!(
        SinkCrm::record_key(CrmObject::Task, "k"),
        "TASK#k".to_owned()
    );
    assert_eq!(
        SinkCrm::export_key_of(CrmObject::Task, "k"),
        "crm/tasks/k.jsonl"
    );
}

#[tokio::test]
async fn account_health_patches_only_its_fields_on_the_account_by_its_stripe_id() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("PATCH"))
        .and(path(ACCOUNT_PATH))
        .and(header("sforce-auto-assign", "FALSE"))
        .and(body_json(serde_json::json!({
            "Blapi_Health_Score__c": 42,
            "Blapi_Health_Band__c": "at_risk",
            "Blapi_Health_Reasons__c": "active users down 60% in 30 days; license expires in 12 days",
            "Blapi_Health_Scored_On__c": "2026-06-15",
            "Blapi_Active_Users__c": 3,
            "Blapi_Licensed_Seats__c": 25,
            "Blapi_Usage_Summary__c": "api_calls 12 345; storage_gb 12.5",
        })))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    // Nothing to score: the score and the telemetry are cleared, not left as they were.
    Mock::given(method("PATCH"))
        .and(path(ACCOUNT_PATH))
        .and(body_json(serde_json::json!({
            "Blapi_Health_Score__c": null,
            "Blapi_Health_Band__c": "no_data",
            "Blapi_Health_Reasons__c": "no telemetry",
            "Blapi_Health_Scored_On__c": "2026-06-16",
            "Blapi_Active_Users__c": null,
            "Blapi_Licensed_Seats__c": null,
            "Blapi_Usage_Summary__c": "",
        })))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"id": "001A", "success": true, "created": false}),
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = crm(&server);
    let u = c.upsert(&CrmRecord::AccountHealth(health())).await.unwrap();
    assert_eq!(
        u,
        Upserted {
            record_id: None,
            created: false
        }
    );
    let u = c
        .upsert(&CrmRecord::AccountHealth(no_data()))
        .await
        .unwrap();
    assert_eq!(u.record_id.as_deref(), Some("001A"));
    // Only the health fields: never the account's own (customer-sync's).
    let body = c.record_body(&CrmRecord::AccountHealth(health()));
    for field in [
        "Name",
        "OwnerId",
        "Lifecycle_Status__c",
        "Blapi_Stripe_Customer_Id__c",
    ] {
        assert!(body.get(field).is_none(), "{field} in {body}");
    }
}

#[tokio::test]
async fn account_health_before_its_account_is_retryable_other_refusals_are_not() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("PATCH"))
        .and(path(ACCOUNT_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(required_field_missing()))
        .expect(2)
        .mount(&server)
        .await;
    let c = crm(&server);
    let e = c
        .upsert(&CrmRecord::AccountHealth(health()))
        .await
        .unwrap_err();
    assert!(matches!(e, CrmError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("AccountHealth:cus_1"), "{e}");
    assert!(
        Error::from(e).is_retryable(),
        "customer-sync creates the account"
    );
    // The same answer to the account itself is a refusal: its own fields are missing.
    let e = c.upsert(&CrmRecord::Account(account())).await.unwrap_err();
    assert!(matches!(e, CrmError::Rejected { .. }), "{e:?}");
    assert!(!Error::from(e).is_retryable());
    // As for a lead conversion before its lead, alone as in a Composite request.
    Mock::given(method("PATCH"))
        .and(path(
            "/services/data/v61.0/sobjects/Lead/Blapi_Lead_Id__c/ld_1",
        ))
        .respond_with(ResponseTemplate::new(400).set_body_json(required_field_missing()))
        .expect(1)
        .mount(&server)
        .await;
    let conversion = CrmRecord::LeadConversion(LeadConversion {
        lead_id: "ld_1".into(),
        account_external_id: "cus_1".into(),
    });
    let e = c.upsert(&conversion).await.unwrap_err();
    assert!(matches!(e, CrmError::Unavailable(_)), "{e:?}");

    // Any other refusal of the health fields stays a refusal.
    let refused = MockServer::start().await;
    mount_token(&refused, "tok", 1).await;
    Mock::given(method("PATCH"))
        .and(path(ACCOUNT_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!([
            {"message": "No such column 'Blapi_Health_Band__c' on sobject of type Account",
             "errorCode": "INVALID_FIELD"}])))
        .expect(1)
        .mount(&refused)
        .await;
    let e = crm(&refused)
        .upsert(&CrmRecord::AccountHealth(health()))
        .await
        .unwrap_err();
    assert!(matches!(e, CrmError::Rejected { .. }), "{e:?}");
    assert!(!Error::from(e).is_retryable());
}

#[tokio::test]
async fn a_task_is_upserted_by_its_key_and_linked_to_its_account_by_the_stripe_id() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("PATCH"))
        .and(path(TASK_PATH))
        .and(header("sforce-auto-assign", "FALSE"))
        .and(body_json(serde_json::json!({
            "Subject": "Acme GmbH is at risk",
            "Description": "Health 42 (at_risk): active users down 60% in 30 days",
            "ActivityDate": "2026-06-18",
            "Priority": "High",
            "Status": "Not Started",
            "OwnerId": "005OWNER",
            "What": {"attributes": {"type": "Account"}, "Blapi_Stripe_Customer_Id__c": "cus_1"},
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            serde_json::json!({"id": "00T000000000001", "success": true, "created": true}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let u = crm(&server).upsert(&CrmRecord::Task(task())).await.unwrap();
    assert_eq!(
        u,
        Upserted {
            record_id: Some("00T000000000001".into()),
            created: true
        }
    );
}

#[tokio::test]
async fn health_and_tasks_go_in_a_composite_request_and_a_missing_account_is_retryable() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("POST"))
        .and(path(COMPOSITE_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(composite_ok(3)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    // Then the second health's account is not there: its subrequest alone fails.
    let mut resp = composite_ok(3);
    resp["compositeResponse"][2] = serde_json::json!({"httpStatusCode": 400,
        "referenceId": "r2", "body": required_field_missing()});
    Mock::given(method("POST"))
        .and(path(COMPOSITE_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(resp))
        .expect(1)
        .mount(&server)
        .await;
    let other = AccountHealth {
        account_external_id: "cus_2".into(),
        ..health()
    };
    let records = vec![
        CrmRecord::AccountHealth(health()),
        CrmRecord::Task(task()),
        CrmRecord::AccountHealth(other),
    ];
    let c = crm(&server);
    assert_eq!(c.upsert_all(&records).await.unwrap().len(), 3);

    let reqs = server.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reqs[1].body).unwrap();
    let subs = body["compositeRequest"].as_array().unwrap();
    let urls: Vec<&str> = subs.iter().map(|s| s["url"].as_str().unwrap()).collect();
    assert_eq!(
        urls,
        vec![
            ACCOUNT_PATH,
            TASK_PATH,
            "/services/data/v61.0/sobjects/Account/Blapi_Stripe_Customer_Id__c/cus_2",
        ]
    );
    assert!(subs.iter().all(|s| s["method"] == "PATCH"));
    let health_body = subs[0]["body"].as_object().unwrap();
    let mut fields: Vec<&str> = health_body.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        vec![
            "Blapi_Active_Users__c",
            "Blapi_Health_Band__c",
            "Blapi_Health_Reasons__c",
            "Blapi_Health_Score__c",
            "Blapi_Health_Scored_On__c",
            "Blapi_Licensed_Seats__c",
            "Blapi_Usage_Summary__c",
        ]
    );
    assert_eq!(health_body["Blapi_Health_Score__c"], 42);
    assert_eq!(health_body["Blapi_Health_Scored_On__c"], "2026-06-15");
    let task_body = &subs[1]["body"];
    assert_eq!(task_body["Status"], "Not Started");
    assert_eq!(task_body["ActivityDate"], "2026-06-18");
    assert_eq!(task_body["What"]["attributes"]["type"], "Account");
    assert_eq!(task_body["What"]["Blapi_Stripe_Customer_Id__c"], "cus_1");

    let e = c.upsert_all(&records).await.unwrap_err();
    assert!(matches!(e, CrmError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("AccountHealth:cus_2"), "{e}");
    assert!(Error::from(e).is_retryable());
}

/// DynamoDB in memory behind wiremock, for the sink: GetItem, and UpdateItem in the forms the
/// sink writes (`SET a = :v`, `SET a = if_not_exists(a, :v)`, `REMOVE a`, `ADD a :n`, names
/// through `#placeholders`, `UPDATED_NEW`). Like DynamoDB it refuses an undefined or unused
/// placeholder and two actions on one attribute, and writes nothing then; anything else it
/// does not know (conditions, other operations) is refused too, never ignored.
#[derive(Clone, Default)]
struct FakeDynamo {
    items: Arc<Mutex<BTreeMap<(String, String), JsonMap>>>,
}

type JsonMap = serde_json::Map<String, serde_json::Value>;

impl FakeDynamo {
    /// A client of this table behind `server`.
    async fn client(&self, server: &MockServer) -> aws_sdk_dynamodb::Client {
        Mock::given(method("POST"))
            .respond_with(self.clone())
            .mount(server)
            .await;
        crate::aws::dynamo::test_client(&server.uri())
    }

    /// The stored item `pk` (`sk = CRM`), in DynamoDB's JSON.
    fn item(&self, pk: &str) -> Option<JsonMap> {
        let items = self.items.lock().unwrap();
        items.get(&(pk.to_owned(), "CRM".to_owned())).cloned()
    }

    fn keys(&self) -> Vec<String> {
        let items = self.items.lock().unwrap();
        items.keys().map(|(pk, _)| pk.clone()).collect()
    }

    fn update(
        &self,
        key: (String, String),
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        if body.get("ConditionExpression").is_some() {
            return Err("the fake evaluates no conditions".into());
        }
        let expr = body["UpdateExpression"]
            .as_str()
            .ok_or("no UpdateExpression")?;
        let names = body["ExpressionAttributeNames"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let values = body["ExpressionAttributeValues"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut used_names = BTreeSet::new();
        let mut used_values = BTreeSet::new();
        let mut name = |token: &str| -> Result<String, String> {
            if !token.starts_with('#') {
                return Ok(token.to_owned());
            }
            used_names.insert(token.to_owned());
            names
                .get(token)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| format!("undefined attribute name {token}"))
        };
        let mut value = |token: &str| -> Result<serde_json::Value, String> {
            used_values.insert(token.to_owned());
            values
                .get(token)
                .cloned()
                .ok_or_else(|| format!("undefined attribute value {token}"))
        };
        let mut sections: Vec<(String, String)> = Vec::new();
        for word in expr.split_whitespace() {
            let upper = word.to_ascii_uppercase();
            if ["SET", "REMOVE", "ADD", "DELETE"].contains(&upper.as_str()) {
                sections.push((upper, String::new()));
            } else {
                let (_, text) = sections.last_mut().ok_or("no clause")?;
                text.push_str(word);
                text.push(' ');
            }
        }
        let mut items = self.items.lock().unwrap();
        let before = items.get(&key).cloned().unwrap_or_else(|| {
            let mut m = JsonMap::new();
            m.insert("pk".into(), serde_json::json!({"S": key.0}));
            m.insert("sk".into(), serde_json::json!({"S": key.1}));
            m
        });
        let mut item = before.clone();
        let mut touched = BTreeSet::new();
        let mut updated = JsonMap::new();
        for (verb, text) in sections {
            for action in split_top_level(&text) {
                let action = action.trim();
                let path = match verb.as_str() {
                    "SET" => {
                        let (lhs, rhs) = action.split_once('=').ok_or("SET without =")?;
                        let path = name(lhs.trim())?;
                        let rhs = rhs.trim();
                        let v = match rhs
                            .strip_prefix("if_not_exists(")
                            .and_then(|r| r.strip_suffix(')'))
                        {
                            Some(inner) => {
                                let (p, default) =
                                    inner.split_once(',').ok_or("if_not_exists arguments")?;
                                let p = name(p.trim())?;
                                let default = value(default.trim())?;
                                before.get(&p).cloned().unwrap_or(default)
                            }
                            None => value(rhs)?,
                        };
                        item.insert(path.clone(), v.clone());
                        updated.insert(path.clone(), v);
                        path
                    }
                    "REMOVE" => {
                        let path = name(action)?;
                        item.remove(&path);
                        path
                    }
                    "ADD" => {
                        let (p, v) = action.split_once(' ').ok_or("ADD without a value")?;
                        let path = name(p)?;
                        let n = |v: Option<&serde_json::Value>| {
                            v.and_then(|v| v["N"].as_str())
                                .and_then(|n| n.parse::<i64>().ok())
                        };
                        let add = n(Some(&value(v.trim())?)).ok_or("ADD of no number")?;
                        let sum = n(before.get(&path)).unwrap_or(0) + add;
                        let v = serde_json::json!({"N": sum.to_string()});
                        item.insert(path.clone(), v.clone());
                        updated.insert(path.clone(), v);
                        path
                    }
                    other => return Err(format!("the fake does not do {other}")),
                };
                if !touched.insert(path.clone()) {
                    return Err(format!("two document paths overlap: {path}"));
                }
            }
        }
        if let Some(k) = names.keys().find(|k| !used_names.contains(*k)) {
            return Err(format!(
                "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{k}}}"
            ));
        }
        if let Some(k) = values.keys().find(|k| !used_values.contains(*k)) {
            return Err(format!(
                "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{k}}}"
            ));
        }
        items.insert(key, item);
        Ok(match body["ReturnValues"].as_str() {
            Some("UPDATED_NEW") => serde_json::json!({ "Attributes": updated }),
            _ => serde_json::json!({}),
        })
    }
}

/// The actions of one clause: split at the commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, ch) in text.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

impl wiremock::Respond for FakeDynamo {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let target = req
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let key = (
            body["Key"]["pk"]["S"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body["Key"]["sk"]["S"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        let answer = match target {
            "DynamoDB_20120810.GetItem" => {
                let items = self.items.lock().unwrap();
                Ok(match items.get(&key) {
                    Some(item) => serde_json::json!({ "Item": item }),
                    None => serde_json::json!({}),
                })
            }
            "DynamoDB_20120810.UpdateItem" => self.update(key, &body),
            other => Err(format!("the fake does not do {other}")),
        };
        let (status, body) = match answer {
            Ok(v) => (200, v),
            Err(message) => (
                400,
                serde_json::json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
                    "message": message,
                }),
            ),
        };
        ResponseTemplate::new(status).set_body_raw(
            serde_json::to_vec(&body).unwrap(),
            "application/x-amz-json-1.0",
        )
    }
}

async fn sink() -> (
    MockServer,
    FakeDynamo,
    Arc<crate::storage::MemoryStore>,
    SinkCrm,
) {
    let server = MockServer::start().await;
    let table = FakeDynamo::default();
    let store = Arc::new(crate::storage::MemoryStore::new());
    let sink = SinkCrm::new(table.client(&server).await, "crm", store.clone());
    (server, table, store, sink)
}

#[tokio::test]
async fn the_sink_keeps_health_beside_the_account_without_touching_it() {
    let (_server, table, store, sink) = sink().await;

    // Health before its account: kept, but no account reads back yet.
    let u = sink
        .upsert(&CrmRecord::AccountHealth(health()))
        .await
        .unwrap();
    assert_eq!(u.record_id.as_deref(), Some("ACCOUNT#cus_1"));
    assert!(!u.created);
    assert!(
        sink.get_object(CrmObject::Account, "cus_1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(sink.health("cus_1").await.unwrap(), Some(health()));
    assert!(
        store.keys().is_empty(),
        "health has no export line of its own"
    );

    // The account arrives: a new record, and the health stays.
    let acc = account();
    assert!(
        sink.upsert(&CrmRecord::Account(acc.clone()))
            .await
            .unwrap()
            .created
    );
    assert_eq!(sink.health("cus_1").await.unwrap(), Some(health()));

    // New health (nothing to score): the account's record, revision and attributes are as
    // the account wrote them; the absent values are gone, not kept from the day before.
    let item_before = table.item("ACCOUNT#cus_1").unwrap();
    sink.upsert(&CrmRecord::AccountHealth(no_data()))
        .await
        .unwrap();
    let (stored, revision) = sink
        .get_object(CrmObject::Account, "cus_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, serde_json::to_value(&acc).unwrap());
    assert_eq!(revision, 1);
    let item = table.item("ACCOUNT#cus_1").unwrap();
    for attr in [
        "record",
        "owner_id",
        "status",
        "revision",
        "created_at",
        "updated_at",
    ] {
        assert_eq!(item.get(attr), item_before.get(attr), "{attr}");
    }
    assert!(item.get("health_score").is_none() && item.get("health_active_users").is_none());
    assert_eq!(sink.health("cus_1").await.unwrap(), Some(no_data()));
    assert_eq!(table.keys(), vec!["ACCOUNT#cus_1".to_owned()]);

    // The account's export line is the account alone.
    assert_eq!(store.keys(), vec!["crm/accounts/cus_1.jsonl".to_owned()]);
    let line = String::from_utf8(store.object("crm/accounts/cus_1.jsonl").unwrap()).unwrap();
    assert_eq!(line, format!("{}\n", serde_json::to_string(&acc).unwrap()));

    // An account upserted again keeps the health.
    sink.upsert(&CrmRecord::Account(acc)).await.unwrap();
    assert_eq!(sink.health("cus_1").await.unwrap(), Some(no_data()));
    assert_eq!(sink.health("cus_2").await.unwrap(), None);
}

#[tokio::test]
async fn a_task_upserted_twice_stays_one_item_in_the_sink() {
    let (_server, table, store, sink) = sink().await;
    let first = sink.upsert(&CrmRecord::Task(task())).await.unwrap();
    assert!(first.created);
    assert_eq!(
        first.record_id.as_deref(),
        Some("TASK#cus_1:at_risk:2026-06-15")
    );
    let changed = CrmTask {
        priority: "Normal".into(),
        ..task()
    };
    let again = sink
        .upsert(&CrmRecord::Task(changed.clone()))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(
        table.keys(),
        vec!["TASK#cus_1:at_risk:2026-06-15".to_owned()]
    );
    let (stored, revision) = sink
        .get_object(CrmObject::Task, &task().external_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, serde_json::to_value(&changed).unwrap());
    assert_eq!(revision, 2);
    let item = table.item("TASK#cus_1:at_risk:2026-06-15").unwrap();
    assert_eq!(item["account"]["S"], "cus_1");
    assert_eq!(item["owner_id"]["S"], "005OWNER");
    assert_eq!(
        store.keys(),
        vec!["crm/tasks/cus_1:at_risk:2026-06-15.jsonl".to_owned()]
    );
    let line = String::from_utf8(
        store
            .object("crm/tasks/cus_1:at_risk:2026-06-15.jsonl")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        line,
        format!("{}\n", serde_json::to_string(&changed).unwrap())
    );
}

#[tokio::test]
async fn memory_crm_keeps_health_beside_accounts_and_tasks() {
    let c = MemoryCrm::new();
    let acc = account();
    c.upsert_all(&[
        CrmRecord::Account(acc.clone()),
        CrmRecord::AccountHealth(health()),
        CrmRecord::Task(task()),
    ])
    .await
    .unwrap();
    assert!(
        !c.upsert(&CrmRecord::AccountHealth(no_data()))
            .await
            .unwrap()
            .created
    );
    let changed = CrmTask {
        subject: "Acme GmbH needs a call".into(),
        ..task()
    };
    assert!(
        !c.upsert(&CrmRecord::Task(changed.clone()))
            .await
            .unwrap()
            .created
    );
    assert_eq!(
        c.account("cus_1"),
        Some((acc, 1)),
        "the health left the account alone"
    );
    assert_eq!(c.health("cus_1"), Some(no_data()), "the latest health");
    assert_eq!(c.health("cus_2"), None);
    assert_eq!(c.tasks(), vec![changed]);
    assert_eq!(c.calls(), 3);
    assert_eq!(c.writes(), 5);
    assert!(c.opportunities().is_empty() && c.contacts().is_empty());
}

#[tokio::test]
async fn erase_deletes_by_external_id_and_a_missing_record_is_no_error() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("DELETE"))
        .and(path(UPSERT_PATH))
        .and(header("authorization", "Bearer tok"))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(UPSERT_PATH))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            serde_json::json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]),
        ))
        .mount(&server)
        .await;
    let sf = crm(&server);
    let id = "ld_0123456789abcdef01234567";
    assert!(sf.erase(CrmObject::Lead, id).await.unwrap(), "erased");
    assert!(
        !sf.erase(CrmObject::Lead, id).await.unwrap(),
        "already gone"
    );
    // An expired session: one fresh token, then the delete.
    let server = MockServer::start().await;
    mount_token(&server, "tok", 2).await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    assert!(crm(&server).erase(CrmObject::Contact, "abc").await.unwrap());
    // A refusal names the error code, never Salesforce's message (it may quote values).
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!([
            {"errorCode": "DELETE_FAILED", "message": "ada@acme.example is referenced"}
        ])))
        .mount(&server)
        .await;
    let e = crm(&server)
        .erase(CrmObject::Lead, "x")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("DELETE_FAILED"), "{e}");
    assert!(!e.contains("ada@"), "{e}");
}

#[tokio::test]
async fn fetch_reads_a_record_by_external_id_and_consent_patches_only_the_opt_out() {
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("GET"))
        .and(path(UPSERT_PATH))
        .and(header("authorization", "Bearer tok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"Id": "00Q1", "Email": "ada@acme.example", "HasOptedOutOfEmail": false}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(UPSERT_PATH))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    // The opt-out is the only field sent: nothing else of the lead is overwritten.
    Mock::given(method("PATCH"))
        .and(path(UPSERT_PATH))
        .and(body_json(serde_json::json!({"HasOptedOutOfEmail": true})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let sf = crm(&server);
    let id = "ld_0123456789abcdef01234567";
    let got = sf.fetch(CrmObject::Lead, id).await.unwrap().unwrap();
    assert_eq!(got["Email"], "ada@acme.example");
    assert!(sf.fetch(CrmObject::Lead, id).await.unwrap().is_none());
    sf.upsert(&CrmRecord::Consent(crate::crm::ConsentChange {
        object: CrmObject::Lead,
        external_id: id.into(),
        opted_out: true,
    }))
    .await
    .unwrap();
    // A body that is not JSON is an error that quotes nothing.
    let server = MockServer::start().await;
    mount_token(&server, "tok", 1).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ada@acme.example <html>"))
        .mount(&server)
        .await;
    let e = crm(&server)
        .fetch(CrmObject::Contact, "c1")
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("ada@"), "{e}");
}
