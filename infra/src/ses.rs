//! Amazon SES on the local stack: the sender identities the template's functions send from,
//! verified in the emulator, and the e-mail the emulator accepted, read back.
//!
//! In AWS the sender identity is verified out of band (a domain with DKIM records, like the
//! secrets' values, it is not a stack resource); moto refuses to send from an unverified
//! address, so provisioning verifies the `MAIL_FROM` of every function that has one.
//!
//! moto keeps what it "sent" in memory and shows it at `/moto-api/data.json` (`ses.Message`:
//! `id`, `source`, `subject`, `body`, `destinations`; `ses.RawMessage` for raw MIME). moto
//! keeps one body per e-mail: the HTML part when there is one, else the text. [`sent_messages`]
//! reads that: the one way tests and the demo see the mail.

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The environment variable naming a function's From address.
pub const SENDER_VARIABLE: &str = "MAIL_FROM";

/// Verifies each sender address in the emulator (idempotent).
pub async fn verify_senders<'a>(
    sdk: &aws_config::SdkConfig,
    senders: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    let ses = aws_sdk_sesv2::Client::new(sdk);
    let mut done = std::collections::BTreeSet::new();
    for sender in senders {
        if sender.is_empty() || !done.insert(sender.clone()) {
            continue;
        }
        match ses
            .create_email_identity()
            .email_identity(sender)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_already_exists_exception()) => {}
            Err(e) => {
                return Err(anyhow!(
                    "verifying the SES sender {sender}: {}",
                    aws_sdk_sesv2::error::DisplayErrorContext(e)
                ));
            }
        }
    }
    Ok(())
}

/// One e-mail the emulator accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMail {
    /// SES's message id (what `SendEmail` answered).
    pub id: String,
    pub from: String,
    /// Every recipient: To, Cc and Bcc.
    pub to: Vec<String>,
    pub subject: String,
    /// The HTML part when the e-mail has one, else its text (moto keeps one); the whole MIME
    /// message for a raw e-mail.
    pub body: String,
}

impl SentMail {
    /// Whether `address` is among the recipients (case-insensitive).
    pub fn is_to(&self, address: &str) -> bool {
        self.to.iter().any(|t| t.eq_ignore_ascii_case(address))
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Every e-mail the emulator at `endpoint` (moto server) accepted, oldest first, all
/// accounts and regions together (filter by recipient or id).
pub async fn sent_messages(endpoint: &str) -> Result<Vec<SentMail>> {
    let url = format!("{}/moto-api/data.json", endpoint.trim_end_matches('/'));
    let data: Value = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("reading {url} (is moto running?)"))?
        .json()
        .await
        .with_context(|| format!("{url} is not JSON"))?;
    Ok(parse_sent(&data))
}

/// The sent e-mail in moto's `/moto-api/data.json` document.
pub fn parse_sent(data: &Value) -> Vec<SentMail> {
    let ses = data.get("ses");
    let list = |kind: &str| {
        ses.and_then(|s| s.get(kind))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut out: Vec<SentMail> = list("Message")
        .iter()
        .map(|m| {
            let d = m.get("destinations");
            let mut to = strings(d.and_then(|d| d.get("ToAddresses")));
            to.extend(strings(d.and_then(|d| d.get("CcAddresses"))));
            to.extend(strings(d.and_then(|d| d.get("BccAddresses"))));
            SentMail {
                id: text(m, "id"),
                from: text(m, "source"),
                to,
                subject: text(m, "subject"),
                body: text(m, "body"),
            }
        })
        .collect();
    out.extend(list("RawMessage").iter().map(|m| {
        let raw = text(m, "raw_data");
        let subject = raw
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| l.strip_prefix("Subject:"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        SentMail {
            id: text(m, "id"),
            from: text(m, "source"),
            to: strings(m.get("destinations")),
            subject,
            body: raw,
        }
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moto_data_json_is_read_into_sent_mail() {
        let data = serde_json::json!({"ses": {
            "Message": [{"id": "m1", "source": "billing@blapi.local",
                "subject": "Your license", "body": "<p>hi</p>",
                "destinations": {"ToAddresses": ["ada@example.com"], "BccAddresses": ["audit@example.com"]}}],
            "RawMessage": [{"id": "m2", "source": "billing@blapi.local",
                "destinations": ["bob@example.com"],
                "raw_data": "From: billing@blapi.local\r\nSubject: Raw one\r\n\r\nbody"}]
        }});
        let sent = parse_sent(&data);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].subject, "Your license");
        assert!(sent[0].is_to("ADA@example.com") && sent[0].is_to("audit@example.com"));
        assert_eq!(sent[1].subject, "Raw one");
        assert_eq!(sent[1].to, vec!["bob@example.com"]);
        assert!(parse_sent(&serde_json::json!({})).is_empty());
    }
}
