//! What a privacy request arrives as: the portal's signed `privacy.request` event (through
//! intake; the portal has verified the requester) or an operator's direct invocation.
//!
//! Portal event (`data`): `email`, `kind` (`access` | `erasure` | `opt_out`),
//! `jurisdiction` (`gdpr` | `ccpa`), optional `opted_out` (opt-out only; `false` withdraws an
//! earlier opt-out). Unknown fields are refused, and errors never quote the address.

use super::deadline::Jurisdiction;
use super::request::RequestKind;
use super::service::Submission;
use crate::error::{Error, Result};
use crate::queue::EventMessage;
use crate::values::Email;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A request's fields, however it arrived.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFields {
    pub email: String,
    pub kind: String,
    pub jurisdiction: String,
    #[serde(default)]
    pub opted_out: Option<bool>,
}

impl RequestFields {
    /// Checks every field (the address is named, never quoted).
    pub fn submission(self, id: String, at: DateTime<Utc>) -> Result<Submission> {
        let kind = match self.kind.as_str() {
            "access" => RequestKind::Access,
            "erasure" => RequestKind::Erasure,
            "opt_out" => RequestKind::OptOut,
            other => {
                return Err(Error::Invalid(format!(
                    "kind {other:?} is not one of access, erasure, opt_out"
                )));
            }
        };
        let jurisdiction = Jurisdiction::parse(&self.jurisdiction).ok_or_else(|| {
            Error::Invalid(format!(
                "jurisdiction {:?} is not one of gdpr, ccpa",
                self.jurisdiction
            ))
        })?;
        if self.opted_out.is_some() && kind != RequestKind::OptOut {
            return Err(Error::Invalid(
                "opted_out belongs to an opt_out request only".into(),
            ));
        }
        let email = Email::parse(&self.email)
            .map_err(|e| Error::Invalid(format!("email is not a usable address ({e})")))?;
        Ok(Submission {
            id,
            kind,
            jurisdiction,
            email,
            received: at.date_naive(),
            at_ms: at.timestamp_millis(),
            opted_out: self.opted_out,
        })
    }
}

/// The request id of a portal event: stable for the event, so a redelivery is the same
/// request.
pub fn request_id_for_event(source: &str, event_id: &str) -> String {
    let digest = Sha256::digest(format!("{source}:{event_id}").as_bytes());
    format!("pr_{}", &hex::encode(digest)[..24])
}

/// A portal `privacy.request` event as intake enqueued it.
pub fn from_event(msg: &EventMessage) -> Result<Submission> {
    if (msg.source.as_str(), msg.event_type.as_str()) != ("portal", "privacy.request") {
        return Err(Error::Invalid(format!(
            "{} {} is not a privacy request",
            msg.source, msg.event_type
        )));
    }
    if msg.id.trim().is_empty() {
        return Err(Error::Invalid("the event has no id".into()));
    }
    let data = msg
        .event
        .get("data")
        .cloned()
        .ok_or_else(|| Error::Invalid("the event has no data".into()))?;
    let fields: RequestFields = serde_json::from_value(data)
        .map_err(|e| Error::Invalid(format!("data: {}", crate::error::json_error(&e))))?;
    fields.submission(request_id_for_event(&msg.source, &msg.id), msg.received_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(data: serde_json::Value) -> EventMessage {
        EventMessage {
            id: "msg_1".into(),
            source: "portal".into(),
            event_type: "privacy.request".into(),
            received_at: "2026-03-01T10:00:00Z".parse().unwrap(),
            raw_key: "raw/portal/2026/03/01/msg_1.json".into(),
            event: json!({"type": "privacy.request", "data": data}),
        }
    }

    #[test]
    fn a_portal_event_becomes_a_submission_with_a_stable_id() {
        let s = from_event(&msg(
            json!({"email": "Ada@Example.com", "kind": "erasure", "jurisdiction": "gdpr"}),
        ))
        .unwrap();
        assert_eq!(s.kind, RequestKind::Erasure);
        assert_eq!(s.jurisdiction, Jurisdiction::Gdpr);
        assert_eq!(s.email.as_str(), "ada@example.com");
        assert_eq!(s.received.to_string(), "2026-03-01");
        assert_eq!(s.id, request_id_for_event("portal", "msg_1"));
        assert!(s.id.starts_with("pr_") && s.id.len() == 27);
        let again = from_event(&msg(
            json!({"email": "ada@example.com", "kind": "erasure", "jurisdiction": "gdpr"}),
        ))
        .unwrap();
        assert_eq!(again.id, s.id);
    }

    #[test]
    fn bad_requests_are_refused_without_quoting_the_address() {
        let cases = [
            (
                json!({"email": "ada.example.com", "kind": "access", "jurisdiction": "gdpr"}),
                "email",
            ),
            (
                json!({"email": "ada@example.com", "kind": "delete_all", "jurisdiction": "gdpr"}),
                "kind",
            ),
            (
                json!({"email": "ada@example.com", "kind": "access", "jurisdiction": "mars"}),
                "jurisdiction",
            ),
            (
                json!({"email": "ada@example.com", "kind": "access", "jurisdiction": "gdpr", "opted_out": true}),
                "opted_out",
            ),
            (
                json!({"email": "ada@example.com", "kind": "access", "jurisdiction": "gdpr", "phone": "+1 555"}),
                "phone",
            ),
            (json!({"kind": "access", "jurisdiction": "gdpr"}), "email"),
        ];
        for (data, field) in cases {
            let e = from_event(&msg(data.clone())).unwrap_err().to_string();
            assert!(e.contains(field), "{data}: {e}");
            assert!(
                !e.contains("ada@example.com")
                    && !e.contains("ada.example.com")
                    && !e.contains("+1 555"),
                "{e}"
            );
        }
        let mut other = msg(json!({}));
        other.event_type = "lead.signup".into();
        assert!(from_event(&other).is_err());
    }
}
