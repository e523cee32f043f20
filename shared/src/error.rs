//! The crate's error type.
//!
//! Every variant is deliberately retryable or not ([`Error::is_retryable`]): a retryable error
//! makes a queue consumer report the record as failed (SQS redelivers it, then parks it in the
//! DLQ), a non-retryable one is a permanent verdict on the input. HTTP answers carry a short
//! message; the full cause chain goes to the log.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use std::error::Error as StdError;

/// A boxed cause, kept so the log shows the whole chain.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration missing or malformed: fix the deployment, do not retry.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    /// The input is wrong and will stay wrong (bad JSON, unknown customer, invalid value).
    #[error("invalid input: {0}")]
    Invalid(String),

    /// A referenced thing does not exist (and retrying will not make it appear).
    #[error("not found: {0}")]
    NotFound(String),

    /// Someone else is doing the same work right now (an in-progress idempotency lease).
    #[error("in progress elsewhere: {0}")]
    InProgress(String),

    /// A stored fact contradicts the request (same idempotency key, different payload).
    #[error("conflict: {0}")]
    Conflict(String),

    /// A call to another system failed. `retryable` says whether trying again can help
    /// (timeouts, throttling, 5xx) or not (4xx, validation).
    #[error("{service} call failed")]
    Dependency {
        service: &'static str,
        retryable: bool,
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_) | Error::Invalid(_) | Error::NotFound(_) | Error::Conflict(_) => false,
            Error::InProgress(_) => true,
            Error::Dependency { retryable, .. } => *retryable,
        }
    }

    /// A dependency failure with an explicit verdict.
    pub fn dependency(service: &'static str, retryable: bool, source: impl Into<BoxError>) -> Self {
        Error::Dependency {
            service,
            retryable,
            source: source.into(),
        }
    }

    /// An AWS SDK failure, classified: transport failures, timeouts, throttling and 5xx are
    /// retryable; a service's 4xx verdict (validation, missing resource) is not.
    pub fn aws<E>(service: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: StdError + ProvideErrorMetadata + Send + Sync + 'static,
    {
        let retryable = match &err {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(se) => {
                se.raw().status().is_server_error()
                    || se.raw().status().as_u16() == 429
                    || se.err().code().is_some_and(is_throttling)
            }
            SdkError::ConstructionFailure(_) => false,
            _ => true,
        };
        Error::Dependency {
            service,
            retryable,
            source: Box::new(DisplayErrorContext(err)),
        }
    }

    /// The full cause chain on one line, for logs.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&(dyn StdError + 'static)> = self.source();
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

/// AWS error codes that mean "slow down" whatever the HTTP status.
fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "SlowDown"
            | "RequestThrottled"
            | "LimitExceededException"
            | "KMSInternalException"
            | "InternalError"
            | "ServiceUnavailable"
    )
}

/// Wraps an SDK error so its `Display` shows the whole context (the SDK's own `Display` is
/// terse by design).
#[derive(Debug)]
pub struct DisplayErrorContext<E>(pub E);

impl<E: StdError + 'static> std::fmt::Display for DisplayErrorContext<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", aws_smithy_types_display(&self.0))
    }
}

impl<E: StdError + 'static> StdError for DisplayErrorContext<E> {}

fn aws_smithy_types_display(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// The Lambda runtime reports handler errors as a `Diagnostic`: its type says whether the
/// failure is worth a retry, its message is the short text (never a secret or a payload).
impl From<Error> for lambda_runtime::Diagnostic {
    fn from(e: Error) -> Self {
        tracing::error!(error = %e.chain(), retryable = e.is_retryable(), "invocation failed");
        lambda_runtime::Diagnostic {
            error_type: if e.is_retryable() {
                "Retryable"
            } else {
                "NonRetryable"
            }
            .to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// One of two alternatives (see [`exactly_one`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOf<A, B> {
    First(A),
    Second(B),
}

/// Exactly one of two optional request fields, or an [`Error::Invalid`] naming both: the
/// check every "either this or that" request makes.
pub fn exactly_one<A, B>(
    what: &str,
    (first_name, first): (&str, Option<A>),
    (second_name, second): (&str, Option<B>),
) -> Result<OneOf<A, B>> {
    match (first, second) {
        (Some(a), None) => Ok(OneOf::First(a)),
        (None, Some(b)) => Ok(OneOf::Second(b)),
        _ => Err(Error::Invalid(format!(
            "{what} needs exactly one of {first_name}, {second_name}"
        ))),
    }
}

/// A JSON parse error described without quoting the input: serde's own text can carry a
/// field's value (`invalid type: string "ada@example.com", expected ...`), which is personal
/// data in a log line or a dead-letter reason. Quoted values become `…`; field names in
/// `missing field`/`unknown field`/`duplicate field` are schema, not data, and stay.
pub fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let schema = ["missing field", "unknown field", "duplicate field"]
        .iter()
        .any(|p| text.starts_with(p));
    // Field names (and an "expected one of" list) are backticked schema words.
    strip_quoted(&text, !schema)
}

/// `text` with every `"…"` span (and with `backticks`, every `…` span) replaced by `…`.
fn strip_quoted(text: &str, backticks: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<char> = None;
    for c in text.chars() {
        match open {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None if c == '"' || (backticks && c == '`') => {
                out.push(c);
                open = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_of_two_fields() {
        fn one(a: Option<u8>, b: Option<&'static str>) -> Result<OneOf<u8, &'static str>> {
            exactly_one("list", ("customer", a), ("subscription", b))
        }
        assert_eq!(one(Some(1), None).unwrap(), OneOf::First(1));
        assert_eq!(one(None, Some("s")).unwrap(), OneOf::Second("s"));
        for e in [one(None, None), one(Some(1), Some("s"))] {
            assert_eq!(
                e.unwrap_err().to_string(),
                Error::Invalid("list needs exactly one of customer, subscription".into())
                    .to_string()
            );
        }
    }

    #[test]
    fn classification_is_deliberate() {
        assert!(!Error::Invalid("x".into()).is_retryable());
        assert!(!Error::NotFound("x".into()).is_retryable());
        assert!(!Error::Conflict("x".into()).is_retryable());
        assert!(Error::InProgress("x".into()).is_retryable());
        assert!(Error::dependency("stripe", true, "503").is_retryable());
        assert!(!Error::dependency("stripe", false, "400").is_retryable());
        let cfg: Error = crate::config::ConfigError::Missing { name: "X".into() }.into();
        assert!(!cfg.is_retryable());
    }

    #[test]
    fn chain_keeps_the_cause() {
        let e = Error::dependency("s3", true, "connection refused");
        assert_eq!(e.chain(), "s3 call failed: connection refused");
    }

    #[test]
    fn diagnostic_says_retryable_or_not() {
        let d: lambda_runtime::Diagnostic = Error::dependency("sqs", true, "timeout").into();
        assert_eq!(d.error_type, "Retryable");
        let d: lambda_runtime::Diagnostic = Error::Invalid("bad".into()).into();
        assert_eq!(d.error_type, "NonRetryable");
        assert_eq!(d.error_message, "invalid input: bad");
    }

    #[test]
    fn json_errors_never_quote_the_input() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct P {
            seats: u32,
            email: String,
        }
        for (input, kept) in [
            (
                r#"{"seats": "ada@example.com", "email": "x"}"#,
                "invalid type",
            ),
            (r#"{"seats": 1}"#, "missing field `email`"),
            (r#"{"seats": 1, "email": 7}"#, "invalid type: integer"),
            (r#"{"seats": 1, "email": "ada@example.com""#, "EOF"),
        ] {
            let e = serde_json::from_str::<P>(input).unwrap_err();
            let text = super::json_error(&e);
            assert!(!text.contains("ada@"), "{text}");
            assert!(!text.contains("7,"), "{text}");
            assert!(text.contains(kept), "{text}");
        }
        let e = serde_json::from_str::<P>(r#"{"seats": "secret", "email": "x"}"#).unwrap_err();
        assert!(super::json_error(&e).starts_with("invalid type: string \"…\""));
    }
}
