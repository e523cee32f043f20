//! The OpenAPI document and the route table say the same thing: every documented operation
//! routes to the endpoint it names (`x-blapi-route`), every endpoint is documented, and a
//! documented path answers 405 with `Allow` listing exactly its documented methods.

use blapi::portal::http::route;
use serde_json::Value;
use std::collections::BTreeSet;

const ROUTES: [&str; 11] = [
    "account",
    "licenses",
    "license",
    "license_file",
    "invoices",
    "invoice",
    "usage",
    "checkout",
    "seat_preview",
    "seat_change",
    "privacy_request",
];

fn document() -> Value {
    let text =
        std::fs::read_to_string(blapi_infra::repo_root().join("docs/portal-api.openapi.yaml"))
            .expect("docs/portal-api.openapi.yaml");
    serde_norway::from_str(&text).expect("the document is YAML")
}

/// A documented path with its parameters filled in (`{license_id}` -> a valid id).
fn concrete(path: &str) -> String {
    path.replace("{invoice_id}", "2026-11")
        .replace("{license_id}", "lic_example")
        .replace("{subscription_id}", "sub_example")
}

#[test]
fn every_operation_routes_to_its_endpoint_and_every_endpoint_is_documented() {
    let doc = document();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let methods: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
            .map(|k| k.to_ascii_uppercase())
            .collect();
        for m in &methods {
            let op = &item[m.to_ascii_lowercase()];
            let name = op["x-blapi-route"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {path}: no x-blapi-route"));
            let r = route(m, &concrete(path)).unwrap_or_else(|p| panic!("{m} {path}: {p:?}"));
            assert_eq!(r.name(), name, "{m} {path}");
            assert!(op["operationId"].is_string(), "{m} {path}: operationId");
            assert!(
                op["responses"]["401"].is_object(),
                "{m} {path}: 401 documented"
            );
            if r.mutates() {
                let header = op["parameters"].as_array().into_iter().flatten().any(|p| {
                    p["name"] == "Idempotency-Key"
                        || p["$ref"]
                            .as_str()
                            .is_some_and(|r| r.ends_with("IdempotencyKey"))
                });
                assert!(
                    header,
                    "{m} {path}: the Idempotency-Key header is documented"
                );
            }
            documented.insert(name.to_owned());
        }
        // Any other method: 405 naming exactly the documented ones.
        let p = route("DELETE", &concrete(path)).expect_err("DELETE is never routed");
        assert_eq!(p.status, 405, "{path}");
        let allow: BTreeSet<String> = p.allow.unwrap().split(", ").map(str::to_owned).collect();
        assert_eq!(allow, methods, "{path}: Allow");
    }
    let all: BTreeSet<String> = ROUTES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(documented, all, "documented operations vs the route table");
}

#[test]
fn every_problem_code_the_api_answers_is_listed() {
    let text =
        std::fs::read_to_string(blapi_infra::repo_root().join("docs/portal-api.openapi.yaml"))
            .unwrap();
    for code in [
        "invalid-request",
        "not-found",
        "no-such-route",
        "body-too-large",
        "idempotency-key-reused",
        "idempotency-in-progress",
        "dependency-unavailable",
        "internal",
        "subscription-not-active",
        "not-self-service",
        "no-verified-email",
        "token-missing",
        "token-expired",
        "token-signature",
    ] {
        assert!(
            text.contains(code),
            "problem code {code} is not in the document"
        );
    }
}
