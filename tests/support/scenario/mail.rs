//! The scenario's customer e-mail: what the notifications function sent through SES (moto
//! keeps what it accepted), read back per recipient. The license e-mail's link is followed
//! and must give the exact license file; the invoice e-mail's links must give the HTML and
//! the PDF.

use super::{World, until};
use anyhow::{Context, Result, anyhow};
use blapi_infra::ses::SentMail;
use std::time::Duration;

/// What one person received.
#[derive(Debug, Clone)]
pub struct Inbox {
    pub address: String,
    /// Subjects, oldest first.
    pub subjects: Vec<String>,
    pub mail: Vec<SentMail>,
}

/// What the scenario checked in the mail.
#[derive(Debug, Clone)]
pub struct MailLine {
    pub buyer: Inbox,
    pub dunning: Inbox,
    /// The license e-mail's link gave the license file, byte for byte.
    pub license_link_works: bool,
    /// The invoice e-mail's HTML and PDF links answered the documents.
    pub invoice_html_link_works: bool,
    pub invoice_pdf_link_works: bool,
}

/// The `href` values of an HTML body, with their character references undone (the
/// templates escape every value: `/` arrives as `&#x2f;`).
pub fn links(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(unescape)
        .collect()
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

async fn inbox(w: &World<'_>, address: &str, at_least: usize) -> Result<Inbox> {
    let endpoint = w.stack.endpoint.clone();
    let mail = until(
        &format!("{at_least} e-mails to {address}"),
        Duration::from_secs(120),
        || {
            let endpoint = endpoint.clone();
            async move {
                let mine: Vec<SentMail> = blapi_infra::ses::sent_messages(&endpoint)
                    .await?
                    .into_iter()
                    .filter(|m| m.is_to(address))
                    .collect();
                Ok((mine.len() >= at_least).then_some(mine))
            }
        },
    )
    .await?;
    Ok(Inbox {
        address: address.to_owned(),
        subjects: mail.iter().map(|m| m.subject.clone()).collect(),
        mail,
    })
}

/// Follows a link as a reader does: a 429, a 5xx or a lost answer is tried again (the link's
/// store may be throttling or briefly away), with backoff.
async fn fetch(w: &World<'_>, url: &str) -> Result<Vec<u8>> {
    let mut wait = std::time::Duration::from_millis(250);
    for _ in 0..8 {
        match w.http.get(url).send().await {
            Ok(resp) if resp.status().is_success() => {
                if let Ok(body) = resp.bytes().await {
                    return Ok(body.to_vec());
                }
            }
            Ok(resp) if resp.status() != 429 && !resp.status().is_server_error() => {
                anyhow::bail!("{url}: {}", resp.status())
            }
            _ => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(8));
    }
    let resp = w.http.get(url).send().await?;
    anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
    Ok(resp.bytes().await?.to_vec())
}

/// Reads both inboxes and follows the links. `license_file_key` is the buyer's license file,
/// `invoice_keys` the invoice's (HTML, PDF) objects.
pub async fn mail(
    w: &World<'_>,
    buyer: &str,
    dunning: &str,
    license_file_key: &str,
) -> Result<MailLine> {
    // The buyer: the license and the invoice (at least).
    let buyer_inbox = inbox(w, buyer, 2).await?;
    // The dunning customer: license, payment failed, 3 reminders, suspension, reinstatement,
    // the fresh license.
    let dunning_inbox = inbox(w, dunning, 8).await?;

    let license_mail = buyer_inbox
        .mail
        .iter()
        .find(|m| {
            links(&m.body)
                .iter()
                .any(|l| l.contains("mattermost-license"))
        })
        .context("the license e-mail with its link")?;
    let link = links(&license_mail.body)
        .into_iter()
        .find(|l| l.contains("mattermost-license"))
        .context("license link")?;
    let file = fetch(w, &link).await?;
    let stored = w
        .store
        .get(license_file_key)
        .await
        .map_err(|e| anyhow!("{}", e.chain()))?
        .context("the license file in S3")?;

    let invoice_mail = buyer_inbox
        .mail
        .iter()
        .find(|m| links(&m.body).iter().any(|l| l.contains(".pdf")))
        .context("the invoice e-mail with its links")?;
    let invoice_links = links(&invoice_mail.body);
    let html = match invoice_links.iter().find(|l| l.contains(".html")) {
        Some(l) => fetch(w, l).await.ok(),
        None => None,
    };
    let pdf = match invoice_links.iter().find(|l| l.contains(".pdf")) {
        Some(l) => fetch(w, l).await.ok(),
        None => None,
    };
    Ok(MailLine {
        license_link_works: file == stored,
        invoice_html_link_works: html
            .is_some_and(|h| String::from_utf8_lossy(&h).contains("<html")),
        invoice_pdf_link_works: pdf.is_some_and(|p| p.starts_with(b"%PDF")),
        buyer: buyer_inbox,
        dunning: dunning_inbox,
    })
}
