//! portal-api's Lambda side: Function URL events in, Function URL responses out, through the
//! real handler with in-memory ports and an identity provider in the process.

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use base64::Engine as _;
use blapi::portal::api::{PortalApi, Settings};
use blapi::portal::auth::{AuthConfig, StaticKeySource, TokenVerifier};
use blapi::portal::testkit::{MemoryPorts, TestIssuer};
use lambda_runtime::{Context, LambdaEvent};
use portal_api::{App, function_url_response, request_of};
use serde_json::{Value, json};
use std::sync::Arc;

const ISS: &str = "https://idp.example.test/";
const AUD: &str = "blapi-portal";

fn app(issuer: &TestIssuer) -> (App, MemoryPorts) {
    let mem = MemoryPorts::default();
    let verifier = TokenVerifier::new(
        AuthConfig::new(ISS, AUD),
        Arc::new(StaticKeySource(issuer.jwks())),
    );
    let api = PortalApi::new(verifier, mem.ports(), Settings::default());
    (App::new(api, "blapi-test"), mem)
}

fn event(value: Value) -> LambdaFunctionUrlRequest {
    serde_json::from_value(value).expect("a Function URL event")
}

fn request(
    method: &str,
    path: &str,
    headers: Value,
    body: Option<&str>,
    b64: bool,
) -> LambdaFunctionUrlRequest {
    event(json!({
        "version": "2.0", "rawPath": path, "rawQueryString": "", "headers": headers,
        "queryStringParameters": {},
        "requestContext": {"accountId": "anonymous", "requestId": "r1", "apiId": "a", "domainName": "d",
            "domainPrefix": "d", "timeEpoch": 0,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"}},
        "body": body, "isBase64Encoded": b64,
    }))
}

#[tokio::test]
async fn every_committed_sample_gets_its_documented_answer() {
    let issuer = TestIssuer::new(ISS, AUD);
    let (app, _) = app(&issuer);
    let dir = blapi_infra::repo_root().join("events/portal-api");
    let expected = [
        ("default.json", 401, "urn:blapi:problem:token-missing"),
        ("licenses-expired-token.json", 401, ""),
        ("checkout-no-idempotency-key.json", 401, ""),
        ("unknown-route.json", 404, "urn:blapi:problem:no-such-route"),
        (
            "wrong-method.json",
            405,
            "urn:blapi:problem:method-not-allowed",
        ),
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let (_, status, kind) = expected
            .iter()
            .find(|(n, ..)| *n == name)
            .unwrap_or_else(|| panic!("{name}: add its expected answer here and in the README"));
        let ev = event(serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap());
        let out = app
            .handle(LambdaEvent::new(ev, Context::default()))
            .await
            .unwrap();
        assert_eq!(
            out.status_code,
            i64::from(*status),
            "{name}: {:?}",
            out.body
        );
        let body: Value = serde_json::from_str(out.body.as_deref().unwrap()).unwrap();
        if !kind.is_empty() {
            assert_eq!(body["type"], *kind, "{name}");
        }
        assert_eq!(
            out.headers.get("content-type").unwrap(),
            "application/problem+json",
            "{name}"
        );
        seen += 1;
    }
    assert_eq!(seen, expected.len());
}

#[tokio::test]
async fn bodies_headers_and_query_are_translated_both_ways() {
    let issuer = TestIssuer::new(ISS, AUD);
    let body = r#"{"sku": "professional", "seats": 2}"#;
    let encoded = base64::engine::general_purpose::STANDARD.encode(body);
    let mut ev = request(
        "post",
        "/v1/checkout-sessions",
        json!({"Authorization": "Bearer x", "Idempotency-Key": "k1"}),
        Some(&encoded),
        true,
    );
    ev.query_string_parameters
        .insert("customer".into(), "cus_A".into());
    let req = request_of(&ev).unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.body, body.as_bytes());
    assert_eq!(req.header("idempotency-key"), Some("k1"));
    assert_eq!(req.query.get("customer").map(String::as_str), Some("cus_A"));

    // A base64 body that does not decode is refused, not guessed at.
    let bad = request(
        "POST",
        "/v1/checkout-sessions",
        json!({}),
        Some("%%%"),
        true,
    );
    assert!(request_of(&bad).is_none());
    let (app, _) = app(&issuer);
    let out = app
        .handle(LambdaEvent::new(bad, Context::default()))
        .await
        .unwrap();
    assert_eq!(out.status_code, 400);

    // Bytes that are not text go back base64-encoded; no answer is cached by a proxy.
    let r =
        blapi::portal::http::Response::bytes("application/octet-stream", vec![0xff, 0x00, 0x10]);
    let out = function_url_response(r);
    assert!(out.is_base64_encoded);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(out.body.unwrap())
            .unwrap(),
        vec![0xff, 0x00, 0x10]
    );
    assert_eq!(out.headers.get("cache-control").unwrap(), "no-store");
}

#[tokio::test]
async fn a_signed_in_customer_gets_their_own_licenses_through_the_function_url() {
    let issuer = TestIssuer::new(ISS, AUD);
    let (app, _) = app(&issuer);
    let token = issuer.customer_token("cus_A");
    let ev = request(
        "GET",
        "/v1/licenses",
        json!({"authorization": format!("Bearer {token}")}),
        None,
        false,
    );
    let out = app
        .handle(LambdaEvent::new(ev, Context::default()))
        .await
        .unwrap();
    assert_eq!(out.status_code, 200, "{:?}", out.body);
    let v: Value = serde_json::from_str(out.body.as_deref().unwrap()).unwrap();
    assert_eq!(v, json!({"licenses": []}));
}
