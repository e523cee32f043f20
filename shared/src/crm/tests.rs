//! The adapters' tests: Salesforce against wiremock, the fake.

use super::*;
use crate::config::Secret;
use crate::error::Error;
use crate::retry::RetryPolicy;
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
    assert!(
        e.to_string()
            .contains("MALFORMED_ID [OwnerId]: Owner ID: id value of incorrect type"),
        "{e}"
    );
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
