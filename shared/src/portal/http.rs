//! The API's HTTP shapes, independent of how Lambda delivers them: a [`Request`] (method, path,
//! query, lower-cased headers, body bytes), a [`Response`], and the [`Route`] table that maps a
//! method and path to an endpoint — 404 for an unknown path, 405 (with `Allow`) for a known path
//! and another method.

use super::problem::Problem;
use serde::Serialize;
use std::collections::BTreeMap;

/// One request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Without the query string.
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// `value` as `application/json`.
    pub fn json<T: Serialize>(status: u16, value: &T) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// Bytes with a content type (a license file).
    pub fn bytes(content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    /// A problem document.
    pub fn problem(p: &Problem) -> Self {
        let mut headers = vec![(
            "Content-Type".to_string(),
            "application/problem+json".to_string(),
        )];
        headers.extend(p.headers().into_iter().map(|(k, v)| (k.to_string(), v)));
        Self {
            status: p.status,
            headers,
            body: serde_json::to_vec(p).unwrap_or_default(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (tests and the idempotency record).
    pub fn json_body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Every endpoint of the API, with its path parameter where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Account,
    Licenses,
    License(String),
    LicenseFile(String),
    Invoices,
    Invoice(String),
    /// Usage to date of a period, priced by the billing code.
    Usage,
    /// Start a self-service purchase (a Stripe Checkout Session).
    Checkout,
    /// A seat change's proration preview (`GET`) ...
    SeatPreview(String),
    /// ... and the change (`POST`).
    SeatChange(String),
    /// A privacy request for the signed-in person.
    PrivacyRequest,
}

impl Route {
    /// A stable name for logs and metrics (no ids).
    pub fn name(&self) -> &'static str {
        match self {
            Route::Account => "account",
            Route::Licenses => "licenses",
            Route::License(_) => "license",
            Route::LicenseFile(_) => "license_file",
            Route::Invoices => "invoices",
            Route::Invoice(_) => "invoice",
            Route::Usage => "usage",
            Route::Checkout => "checkout",
            Route::SeatPreview(_) => "seat_preview",
            Route::SeatChange(_) => "seat_change",
            Route::PrivacyRequest => "privacy_request",
        }
    }

    /// Whether the endpoint changes something (it takes an `Idempotency-Key`).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Route::Checkout | Route::SeatChange(_) | Route::PrivacyRequest
        )
    }
}

/// Whether `s` can be an id of ours or Stripe's: ASCII letters, digits, '_' and '-', 1 to 64
/// long. Anything else names no resource.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The route of `method path`: the endpoint, or a 404/405 problem.
pub fn route(method: &str, path: &str) -> Result<Route, Problem> {
    let segments: Vec<&str> = path
        .trim_end_matches('/')
        .split('/')
        .skip(1) // the empty segment before the leading '/'
        .collect();
    let id = |s: &str| valid_id(s).then(|| s.to_string());
    let (allow, route): (&'static str, Option<Route>) = match segments.as_slice() {
        ["v1", "account"] => ("GET", Some(Route::Account)),
        ["v1", "licenses"] => ("GET", Some(Route::Licenses)),
        ["v1", "licenses", l] => ("GET", id(l).map(Route::License)),
        ["v1", "licenses", l, "file"] => ("GET", id(l).map(Route::LicenseFile)),
        ["v1", "invoices"] => ("GET", Some(Route::Invoices)),
        ["v1", "invoices", i] => ("GET", id(i).map(Route::Invoice)),
        ["v1", "usage"] => ("GET", Some(Route::Usage)),
        ["v1", "checkout-sessions"] => ("POST", Some(Route::Checkout)),
        ["v1", "subscriptions", s, "seats"] => (
            "GET, POST",
            id(s).map(|s| match method {
                "POST" => Route::SeatChange(s),
                _ => Route::SeatPreview(s),
            }),
        ),
        ["v1", "privacy-requests"] => ("POST", Some(Route::PrivacyRequest)),
        _ => ("", None),
    };
    let Some(route) = route else {
        return Err(Problem::new(
            404,
            "no-such-route",
            "Not found",
            "no such endpoint; see the OpenAPI document",
        ));
    };
    if allow.split(", ").any(|m| m == method) {
        Ok(route)
    } else {
        Err(Problem::method_not_allowed(allow))
    }
}
