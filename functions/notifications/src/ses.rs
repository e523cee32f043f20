//! The [`Mailer`] on Amazon SES (API v2, `SendEmail` with a simple text + HTML message).
//!
//! Only this function links the SES SDK. Errors are classified like every AWS call
//! ([`Error::aws`]): throttling (`TooManyRequestsException`, `LimitExceededException`), 5xx and
//! transport failures are retryable; a refusal of this e-mail (`MessageRejected`, an
//! unverified sender, a paused account) is not. The local stack reaches moto through
//! `AWS_ENDPOINT_URL`, like every other client.

use async_trait::async_trait;
use aws_sdk_sesv2::config::http::HttpResponse;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use blapi::error::{Error, Result};
use blapi::notify::{Mail, Mailer};

/// Sends through SES v2.
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client) -> Self {
        Self { client }
    }
}

/// The failure, classified as every AWS call is, but described by its error code only: SES
/// error messages can quote the addresses (`MessageRejected: Email address is not verified ...
/// <address>`), and error texts reach the logs and the DLQ's story.
fn redacted<E>(e: SdkError<E, HttpResponse>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let what = match e.code() {
        Some(code) => format!("SendEmail refused: {code}"),
        None => "SendEmail got no answer from SES (timeout, connection or a malformed response)"
            .to_owned(),
    };
    let retryable = Error::aws("ses", e).is_retryable();
    Error::dependency("ses", retryable, what)
}

fn utf8(text: &str) -> Result<Content> {
    Content::builder()
        .data(text)
        .charset("UTF-8")
        .build()
        .map_err(|e| Error::dependency("ses", false, e))
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, mail: &Mail) -> Result<String> {
        let message = Message::builder()
            .subject(utf8(&mail.subject)?)
            .body(
                Body::builder()
                    .text(utf8(&mail.text)?)
                    .html(utf8(&mail.html)?)
                    .build(),
            )
            .build();
        let out = self
            .client
            .send_email()
            .from_email_address(mail.from.as_str())
            .destination(
                Destination::builder()
                    .to_addresses(mail.to.as_str())
                    .build(),
            )
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(redacted)?;
        Ok(out.message_id.unwrap_or_default())
    }
}
