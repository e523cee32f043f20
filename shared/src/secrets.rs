//! Secret values from AWS Secrets Manager, fetched once per cold start.
//!
//! The template passes each function the *name* of its secrets (`*_SECRET_ID`); the values
//! never appear in the template, the environment or a log.

use crate::config::Secret;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;

/// Fetches a JSON secret and parses it into `T` (itself wrapped, so it cannot be printed).
pub async fn load_json<T: DeserializeOwned>(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<Secret<T>> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| Error::aws("secretsmanager", e))?;
    let text = out
        .secret_string()
        .ok_or_else(|| Error::Invalid(format!("secret {secret_id} has no string value")))?;
    // The parse error would quote the secret: report only where it failed.
    serde_json::from_str::<T>(text)
        .map(Secret::new)
        .map_err(|e| {
            Error::Invalid(format!(
                "secret {secret_id} is not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
}
