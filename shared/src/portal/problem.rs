//! Errors as `application/problem+json` (RFC 9457): a stable `type` URI per kind of problem, the
//! HTTP status, a short `title`, a `detail` that says what to fix, and — for invalid input — the
//! offending field by name. Never a stack trace, never a value the caller sent (it may be
//! personal data), never a dependency's own message.

use super::auth::{AuthError, VerifyError};
use serde::Serialize;
use std::time::Duration;

/// Each `type` is this URN plus the code (absolute, as RFC 9457 asks, and never a dead link);
/// the codes are listed in the OpenAPI document.
pub const TYPE_BASE: &str = "urn:blapi:problem:";

/// One problem document, with the headers it needs (`WWW-Authenticate`, `Retry-After`,
/// `Allow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The stable code; serialized as the `type` URI ([`TYPE_BASE`] + code).
    #[serde(rename = "type", serialize_with = "type_uri")]
    pub code: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The field at fault, for invalid input (`seats`, `customer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    #[serde(skip)]
    pub allow: Option<&'static str>,
}

fn type_uri<S: serde::Serializer>(code: &&'static str, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&format!("{TYPE_BASE}{code}"))
}

impl Problem {
    /// A problem of kind `code` with `status`.
    pub fn new(
        status: u16,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            code,
            title,
            status,
            detail: detail.into(),
            field: None,
            retry_after: None,
            allow: None,
        }
    }

    /// The stable code (the last part of `type`).
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400: the request is wrong in `field`.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(400, "invalid-request", "Invalid request", detail).with_field(field)
    }

    /// 404: no such resource *for this caller* (another customer's answers exactly the same).
    pub fn not_found(what: &str) -> Self {
        Self::new(404, "not-found", "Not found", format!("no such {what}"))
    }

    /// 405 with the methods the path takes (`"GET"`, `"GET, POST"`).
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut p = Self::new(
            405,
            "method-not-allowed",
            "Method not allowed",
            format!("this resource takes {allow}"),
        );
        p.allow = Some(allow);
        p
    }

    /// 413: the body is over `max` bytes.
    pub fn too_large(max: usize) -> Self {
        Self::new(
            413,
            "body-too-large",
            "Request body too large",
            format!("the body may be at most {max} bytes"),
        )
    }

    /// 409: the same idempotency key with another request.
    pub fn idempotency_conflict() -> Self {
        Self::new(
            409,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was used with a different request; use a new key",
        )
    }

    /// 503 with `Retry-After`: a dependency is down; nothing was done.
    pub fn unavailable(service: &str, retry_after: Duration) -> Self {
        let mut p = Self::new(
            503,
            "dependency-unavailable",
            "Service unavailable",
            format!("{service} is unavailable; nothing was changed, try again later"),
        );
        p.retry_after = Some(retry_after);
        p
    }

    /// 500: something of ours failed; the detail is generic on purpose.
    pub fn internal() -> Self {
        Self::new(
            500,
            "internal",
            "Internal error",
            "the request could not be completed; it has been logged",
        )
    }

    /// The headers beyond `Content-Type`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if self.status == 401 {
            h.push((
                "WWW-Authenticate",
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    self.code()
                ),
            ));
        }
        if let Some(d) = self.retry_after {
            h.push(("Retry-After", d.as_secs().max(1).to_string()));
        }
        if let Some(a) = self.allow {
            h.push(("Allow", a.to_string()));
        }
        h
    }
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        Problem::new(401, e.code(), "Unauthorized", e.to_string())
    }
}

impl From<VerifyError> for Problem {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Refused(r) => r.into(),
            VerifyError::KeysUnavailable(_) => {
                Problem::unavailable("the identity provider", Duration::from_secs(5))
            }
        }
    }
}
