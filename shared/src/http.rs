//! Outgoing HTTP clients (Stripe, enrichment provider, Salesforce): rustls with the trust store
//! of [`crate::tls`], explicit connect and request timeouts, a `User-Agent` naming us. Build one
//! per cold start and reuse it.

use crate::config::Env;
use crate::error::{Error, Result};
use crate::tls::Roots;
use std::time::Duration;

/// A client with the given overall request timeout.
pub fn client(timeout: Duration) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("blapi/", env!("CARGO_PKG_VERSION")));
    if let Some(tls) = Roots::from_env(&Env::process())?.rustls_config()? {
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder
        .build()
        .map_err(|e| Error::dependency("http", false, e))
}

/// Whether an HTTP status is worth retrying (throttling or a server error).
pub fn retryable_status(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Whether a transport error is worth retrying (timeouts, refused or reset connections).
pub fn retryable_transport(err: &reqwest::Error) -> bool {
    err.is_timeout() || err.is_connect() || err.is_request()
}
