//! Delivering one notification: claim, recipient, opt-out, links, render, send (see the
//! module docs of [`crate::notify`] for the order and why).
//!
//! Once per id: the claim on `notify#{id}` is taken before anything is looked up and completed
//! with the provider's message id after the send, so a redelivery, a retry or a concurrent
//! delivery of the same id sends nothing more. A failure releases the claim, so the queue's
//! next delivery tries again. The one window left is a crash between SES accepting the e-mail
//! and the ledger recording it: after the lease expires, a redelivery sends it again (SES has
//! no idempotency key); at least once, never lost.

use super::mailer::{Mail, Mailer};
use super::render::Templates;
use crate::error::{Error, Result};
use crate::ledger::{Claim, ClaimOptions, Ledger, payload_hash};
use crate::notice::{Kind, Notification};
use crate::retry::{Attempt, RetryPolicy, retry};
use crate::storage::ObjectStore;
use crate::stripe::StripeReads;
use crate::subjects::{Choice, Subjects};
use crate::telemetry::Tally;
use crate::values::Email;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The adapters the notifier runs on.
#[derive(Clone)]
pub struct Ports {
    pub mailer: Arc<dyn Mailer>,
    pub ledger: Arc<dyn Ledger>,
    /// The customer's address and name, read at send time.
    pub stripe: Arc<dyn StripeReads>,
    /// Opt-out choices (the subject index) and the key that finds a person's subject.
    pub subjects: Subjects,
    /// The bucket of the objects linked: license files, invoice artifacts, access bundles.
    pub files: Arc<dyn ObjectStore>,
    /// Now, epoch ms.
    pub clock: fn() -> i64,
}

/// What the notifier needs besides its ports.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The From address (an SES identity).
    pub from: Email,
    /// Where internal kinds go.
    pub operations: Email,
    /// How long a signed link works (at most 7 days).
    pub link_ttl: Duration,
    /// Attempts and backoff when the mailer throttles.
    pub send_retry: RetryPolicy,
    /// How long a delivery holds the id before another may take it over.
    pub lease: Duration,
}

/// What became of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent now; the provider's message id.
    Sent { message_id: String },
    /// Already sent (or suppressed) under this id: nothing done.
    Duplicate,
    /// Not sent: not transactional, and the person opted out.
    Suppressed,
}

/// The objects a message may name, each only under its own prefix (and, for a customer's
/// notification, under the customer's folder): (message field, template value, prefix,
/// scoped by customer).
const LINKS: [(&str, &str, &str, bool); 4] = [
    ("file_key", "license_url", "licenses/", true),
    ("html_key", "invoice_url", "invoices/", true),
    ("pdf_key", "invoice_pdf_url", "invoices/", true),
    ("bundle_key", "bundle_url", "privacy/exports/", false),
];

/// Values that are links given by the producer: only `http(s)` goes into an e-mail.
const URL_FIELDS: [&str; 2] = ["pay_url", "url"];

/// The longest id accepted (it is part of a DynamoDB key).
const MAX_ID_BYTES: usize = 1024;

/// The ledger record's result for a suppressed notification.
const SUPPRESSED: &str = "suppressed";

struct Recipient {
    email: Email,
    name: String,
    company: String,
    /// A person (whose choices apply), not the operations address.
    person: bool,
}

impl Recipient {
    fn person(email: Email, name: String, company: String) -> Self {
        Self {
            email,
            name,
            company,
            person: true,
        }
    }
}

/// Sends notifications, each id once.
pub struct Notifier {
    ports: Ports,
    settings: Settings,
    templates: Templates,
}

impl Notifier {
    /// Compiles the bundled templates (a missing or broken one fails here, at cold start).
    pub fn new(ports: Ports, settings: Settings) -> Result<Self> {
        Ok(Self {
            ports,
            settings,
            templates: Templates::bundled()?,
        })
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// Delivers `n` once: sent, a duplicate of an id already handled, or suppressed by the
    /// person's opt-out. Counts `NotificationsSent`, `NotificationsDuplicate` and
    /// `NotificationsSuppressed`.
    pub async fn deliver(&self, n: &Notification, tally: &Tally) -> Result<Outcome> {
        let kind = n.known_kind()?;
        if n.id.trim().is_empty() || n.id.len() > MAX_ID_BYTES {
            return Err(Error::Invalid(format!(
                "a {} notification needs an id of 1 to {MAX_ID_BYTES} bytes",
                n.kind
            )));
        }
        let key = format!("notify#{}", n.id);
        // The id is the notification's identity: the same id with other data is still the
        // same notification (sent once); only another type under it is a conflict.
        let hash = payload_hash(format!("{}\n{}", n.kind, n.id).as_bytes());
        let opts = ClaimOptions {
            lease: self.settings.lease,
            ..ClaimOptions::default()
        };
        let lease = match self.ports.ledger.claim(&key, &hash, opts).await? {
            Claim::Acquired(lease) => lease,
            Claim::Completed { .. } => {
                tally.one("NotificationsDuplicate");
                tracing::info!(notification_id = %n.id, kind = kind.as_str(), "already sent: duplicate acknowledged");
                return Ok(Outcome::Duplicate);
            }
            Claim::InProgress { .. } => {
                return Err(Error::InProgress(format!(
                    "notification {} is being sent by another delivery",
                    n.id
                )));
            }
        };
        let outcome = match self.send_claimed(n, kind).await {
            Ok(o) => o,
            Err(e) => {
                if let Err(r) = self.ports.ledger.release(&lease).await {
                    tracing::warn!(notification_id = %n.id, error = %r.chain(), "claim not released; it expires with its lease");
                }
                return Err(e);
            }
        };
        let (result, metric) = match &outcome {
            Outcome::Sent { message_id } => (message_id.as_str(), "NotificationsSent"),
            _ => (SUPPRESSED, "NotificationsSuppressed"),
        };
        if let Err(e) = self.ports.ledger.complete(&lease, Some(result), opts).await {
            // Sent: answering with an error would make SQS deliver it again for certain.
            tracing::warn!(notification_id = %n.id, error = %e.chain(), "sent, but not recorded in the ledger");
        }
        tally.one(metric);
        match &outcome {
            Outcome::Sent { message_id } => {
                tracing::info!(notification_id = %n.id, kind = kind.as_str(), customer_id = ?n.customer, message_id = %message_id, "notification sent");
            }
            _ => {
                tracing::info!(notification_id = %n.id, kind = kind.as_str(), customer_id = ?n.customer, "not sent: not transactional, and the person opted out");
            }
        }
        Ok(outcome)
    }

    async fn send_claimed(&self, n: &Notification, kind: Kind) -> Result<Outcome> {
        let to = self.recipient(n, kind).await?;
        if to.person && !kind.transactional() && self.opted_out(&to.email).await? {
            return Ok(Outcome::Suppressed);
        }
        let data = self.context(n, &to).await?;
        let rendered = self.templates.render(kind, data)?;
        let mail = Mail {
            from: self.settings.from.clone(),
            to: to.email,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        };
        let mail = &mail;
        let message_id = retry(self.settings.send_retry, |attempt| async move {
            match self.ports.mailer.send(mail).await {
                Ok(id) => Attempt::Done(id),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(notification_id = %n.id, attempt, error = %e.chain(), "mail not accepted (throttled or unavailable); retrying");
                    Attempt::Retry(e, None)
                }
                Err(e) => Attempt::Fail(e),
            }
        })
        .await?;
        Ok(Outcome::Sent { message_id })
    }

    /// Who receives `n`: operations for internal kinds, else `to`, else the customer.
    async fn recipient(&self, n: &Notification, kind: Kind) -> Result<Recipient> {
        if kind.internal() {
            return Ok(Recipient {
                email: self.settings.operations.clone(),
                name: String::new(),
                company: String::new(),
                person: false,
            });
        }
        let what = format!("notification {} ({})", n.id, n.kind);
        if let Some(to) = &n.to {
            let email = Email::parse(to)
                .map_err(|e| Error::Invalid(format!("{what}: `to` is not usable: {e}")))?;
            return Ok(Recipient::person(email, String::new(), String::new()));
        }
        let Some(id) = &n.customer else {
            return Err(Error::Invalid(format!(
                "{what} names no recipient: neither `customer` nor `to`"
            )));
        };
        let customer = self.ports.stripe.customer(id).await.map_err(|e| match e {
            Error::NotFound(_) => Error::Invalid(format!("{what}: customer {id} does not exist")),
            other => other,
        })?;
        if customer.deleted {
            return Err(Error::Invalid(format!(
                "{what}: customer {id} is deleted, no address to send to"
            )));
        }
        let email = customer
            .email
            .as_deref()
            .and_then(|e| Email::parse(e).ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{what}: customer {id} has no usable e-mail address"
                ))
            })?;
        let company = customer.company();
        Ok(Recipient::person(
            email,
            customer.name.unwrap_or_default(),
            company,
        ))
    }

    /// Whether the person behind `email` opted out (their latest recorded choice).
    async fn opted_out(&self, email: &Email) -> Result<bool> {
        let subject = self.ports.subjects.key.subject(email);
        let choice = self.ports.subjects.index.choice(&subject).await?;
        Ok(!Choice::marketing_allowed(choice.as_ref(), true, i64::MIN))
    }

    /// The templates' values: the message's data, the recipient's name and company, and a
    /// fresh signed link for each object the message names.
    async fn context(&self, n: &Notification, to: &Recipient) -> Result<Map<String, Value>> {
        let what = format!("notification {} ({})", n.id, n.kind);
        let mut data = n.data.clone();
        // Older producers named the variant in the type (`customer.health.entered_at_risk`,
        // `privacy.request.overdue`): it is the value the template reads.
        for (prefix, field) in [
            ("customer.health.", "warning"),
            ("privacy.request.", "urgency"),
        ] {
            if let Some(variant) = n.kind.strip_prefix(prefix)
                && !data.contains_key(field)
                && matches!(
                    variant,
                    "entered_at_risk" | "score_dropped" | "due_soon" | "overdue"
                )
            {
                data.insert(field.into(), Value::String(variant.to_owned()));
            }
        }
        for field in URL_FIELDS {
            let Some(v) = data.get(field).filter(|v| !v.is_null()) else {
                continue;
            };
            let ok = v
                .as_str()
                .and_then(|s| reqwest::Url::parse(s).ok())
                .is_some_and(|u| matches!(u.scheme(), "https" | "http"));
            if !ok {
                return Err(Error::Invalid(format!(
                    "{what}: {field} is not an http(s) link"
                )));
            }
        }
        let ttl = self.settings.link_ttl;
        for (field, value, prefix, per_customer) in LINKS {
            let Some(v) = n.data.get(field) else {
                continue;
            };
            let key = v
                .as_str()
                .ok_or_else(|| Error::Invalid(format!("{what}: {field} must be an object key")))?;
            let folder = match (per_customer, &n.customer) {
                (true, Some(c)) => format!("{prefix}{c}/"),
                _ => prefix.to_owned(),
            };
            if !key.starts_with(&folder) || key.contains("..") {
                return Err(Error::Invalid(format!(
                    "{what}: {field} {key:?} is not under {folder}; no link is signed for it"
                )));
            }
            let url = self.ports.files.presign_get(key, ttl).await?;
            data.insert(value.into(), Value::String(url));
        }
        let expires = (self.ports.clock)() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires = DateTime::<Utc>::from_timestamp_millis(expires)
            .map(|d| d.format("%-d %B %Y, %H:%M UTC").to_string())
            .unwrap_or_default();
        for (k, v) in [
            ("link_expires_at", Value::String(expires)),
            ("link_valid_hours", Value::from(ttl.as_secs() / 3600)),
            ("name", Value::String(to.name.clone())),
            ("company", Value::String(to.company.clone())),
            (
                "customer",
                Value::String(n.customer.clone().unwrap_or_default()),
            ),
            ("notification_id", Value::String(n.id.clone())),
        ] {
            data.insert(k.into(), v);
        }
        Ok(data)
    }
}
