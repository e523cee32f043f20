//! Lead input: what the queue brings (an [`EventMessage`]) turned into a normalised [`Lead`].
//!
//! Accepted events (see the BRIEFING contracts):
//! - `portal` `lead.signup` / `lead.contact_us`: `event.data = {email, first_name?, last_name?,
//!   name?, company?, country?, phone?, job_title?, form?, product?, consent?}`;
//! - `stripe` `customer.created`: `event.data.object = {id, email, name, address.country,
//!   metadata}` (a self-serve buyer; `metadata.company` / `metadata.job_title` are used when set).

use super::normalize::{Country, Email, EmailError, PersonName, split_name};
use crate::queue::EventMessage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why an event could not become a lead (permanent: retrying will not help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("event type {source_name}/{event_type} is not a lead event")]
    Unsupported {
        source_name: String,
        event_type: String,
    },
    #[error("lead event has no {0}")]
    MissingField(&'static str),
    #[error("lead event field {field} is malformed: {reason}")]
    Malformed { field: &'static str, reason: String },
    #[error("invalid email: {0}")]
    Email(#[from] EmailError),
}

impl From<InputError> for crate::Error {
    fn from(e: InputError) -> Self {
        crate::Error::Invalid(e.to_string())
    }
}

/// Where a lead came from. Its string form (`portal.signup`, ...) is what rules files match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum LeadSource {
    #[serde(rename = "portal.signup")]
    PortalSignup,
    #[serde(rename = "portal.contact_us")]
    PortalContactUs,
    #[serde(rename = "stripe.customer")]
    StripeCustomer,
}

impl LeadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadSource::PortalSignup => "portal.signup",
            LeadSource::PortalContactUs => "portal.contact_us",
            LeadSource::StripeCustomer => "stripe.customer",
        }
    }

    /// The Salesforce `LeadSource` picklist value.
    pub fn crm_label(self) -> &'static str {
        match self {
            LeadSource::PortalSignup => "Web Sign-up",
            LeadSource::PortalContactUs => "Contact Us",
            LeadSource::StripeCustomer => "Self-serve Purchase",
        }
    }
}

/// Consent flags as the form sent them (absent = not given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    #[serde(default)]
    pub marketing: bool,
    #[serde(default)]
    pub terms: bool,
}

/// A stable lead id (`ld_` + 24 hex). The first event of a person mints it from
/// (source, event id); later events of the same person reuse it (see the lead store).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct LeadId(String);

impl LeadId {
    /// The id minted for an event: deterministic, so a redelivery yields the same id.
    pub fn for_event(source: &str, event_id: &str) -> Self {
        let digest = Sha256::digest(format!("{source}:{event_id}").as_bytes());
        Self(format!("ld_{}", &hex::encode(digest)[..24]))
    }

    /// Wraps a stored id.
    pub fn from_stored(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LeadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who the lead is: the personal data an event describes and the lead record keeps (flattened
/// into both, so the stored JSON has the same fields as before).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Person {
    pub email: Email,
    pub name: PersonName,
    pub company: Option<String>,
    pub country: Option<Country>,
    /// The country as sent when it could not be mapped (kept for a human, not routed on).
    pub country_unmapped: Option<String>,
    pub phone: Option<String>,
    pub job_title: Option<String>,
    pub form: Option<String>,
    pub product: Option<String>,
    pub consent: Consent,
}

/// A normalised lead, as one event describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    /// The id minted from this event (the store may map it to an existing lead's id).
    pub event_lead_id: LeadId,
    pub source: LeadSource,
    pub event_id: String,
    #[serde(flatten)]
    pub person: Person,
    /// The Stripe customer id for self-serve buyers.
    pub stripe_customer: Option<String>,
}

#[derive(Deserialize)]
struct PortalData {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    name: Option<String>,
    company: Option<String>,
    country: Option<String>,
    phone: Option<String>,
    job_title: Option<String>,
    form: Option<String>,
    product: Option<String>,
    #[serde(default)]
    consent: Option<Consent>,
}

#[derive(Deserialize)]
struct StripeCustomer {
    id: Option<String>,
    email: Option<String>,
    name: Option<String>,
    phone: Option<String>,
    address: Option<StripeAddress>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct StripeAddress {
    country: Option<String>,
}

fn text(v: Option<String>) -> Option<String> {
    v.map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
}

fn malformed(field: &'static str) -> impl Fn(serde_json::Error) -> InputError {
    move |e| InputError::Malformed {
        field,
        reason: crate::error::json_error(&e),
    }
}

/// Parses and normalises a queue message into a lead.
pub fn parse_event(msg: &EventMessage) -> Result<Lead, InputError> {
    let source = match (msg.source.as_str(), msg.event_type.as_str()) {
        ("portal", "lead.signup") => LeadSource::PortalSignup,
        ("portal", "lead.contact_us") => LeadSource::PortalContactUs,
        ("stripe", "customer.created") => LeadSource::StripeCustomer,
        (s, t) => {
            return Err(InputError::Unsupported {
                source_name: s.to_owned(),
                event_type: t.to_owned(),
            });
        }
    };
    if msg.id.trim().is_empty() {
        return Err(InputError::MissingField("event id"));
    }
    let event_lead_id = LeadId::for_event(&msg.source, &msg.id);
    match source {
        LeadSource::PortalSignup | LeadSource::PortalContactUs => {
            let data = msg
                .event
                .get("data")
                .cloned()
                .ok_or(InputError::MissingField("data"))?;
            let d: PortalData = serde_json::from_value(data).map_err(malformed("data"))?;
            let email = Email::parse(d.email.as_deref().unwrap_or(""))?;
            let (country, country_unmapped) = country(d.country);
            Ok(Lead {
                event_lead_id,
                source,
                event_id: msg.id.clone(),
                person: Person {
                    email,
                    name: split_name(
                        d.first_name.as_deref(),
                        d.last_name.as_deref(),
                        d.name.as_deref(),
                    ),
                    company: text(d.company),
                    country,
                    country_unmapped,
                    phone: text(d.phone),
                    job_title: text(d.job_title),
                    form: text(d.form).map(|f| f.to_lowercase()),
                    product: text(d.product).map(|p| p.to_lowercase()),
                    consent: d.consent.unwrap_or_default(),
                },
                stripe_customer: None,
            })
        }
        LeadSource::StripeCustomer => {
            let object = msg
                .event
                .pointer("/data/object")
                .cloned()
                .ok_or(InputError::MissingField("data.object"))?;
            let c: StripeCustomer =
                serde_json::from_value(object).map_err(malformed("data.object"))?;
            let email = Email::parse(c.email.as_deref().unwrap_or(""))?;
            let meta = |k: &str| {
                c.metadata
                    .get(k)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let (country, country_unmapped) = country(
                c.address
                    .and_then(|a| a.country)
                    .or_else(|| meta("country")),
            );
            Ok(Lead {
                event_lead_id,
                source,
                event_id: msg.id.clone(),
                person: Person {
                    email,
                    name: split_name(None, None, c.name.as_deref()),
                    company: text(meta("company")),
                    country,
                    country_unmapped,
                    phone: text(c.phone),
                    job_title: text(meta("job_title")),
                    form: None,
                    product: text(meta("product")).map(|p| p.to_lowercase()),
                    // Buying from us is not a marketing opt-in.
                    consent: Consent {
                        marketing: meta("marketing_consent").is_some_and(|v| v == "true"),
                        terms: true,
                    },
                },
                stripe_customer: text(c.id),
            })
        }
    }
}

fn country(raw: Option<String>) -> (Option<Country>, Option<String>) {
    match text(raw) {
        None => (None, None),
        Some(r) => match Country::parse(&r) {
            Some(c) => (Some(c), None),
            None => (None, Some(r)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn msg(source: &str, ty: &str, id: &str, event: serde_json::Value) -> EventMessage {
        EventMessage {
            id: id.into(),
            source: source.into(),
            event_type: ty.into(),
            received_at: chrono::Utc::now(),
            raw_key: format!("raw/{source}/{id}.json"),
            event,
        }
    }

    #[test]
    fn portal_signup_is_normalised() {
        let m = msg(
            "portal",
            "lead.signup",
            "msg_1",
            json!({"type": "lead.signup", "timestamp": "2026-11-25T10:00:00Z", "data": {
                "email": " Ada@Acme.Example ", "name": "Ada  Lovelace", "company": " Acme  Corp ",
                "country": "Deutschland", "job_title": "CTO", "form": "Demo-Request", "product": "Enterprise",
                "consent": {"marketing": true, "terms": true}}}),
        );
        let l = parse_event(&m).unwrap();
        assert_eq!(l.person.email.as_str(), "ada@acme.example");
        assert_eq!(l.person.name.first.as_deref(), Some("Ada"));
        assert_eq!(l.person.name.last.as_deref(), Some("Lovelace"));
        assert_eq!(l.person.company.as_deref(), Some("Acme Corp"));
        assert_eq!(
            l.person.country.map(|c| c.code().to_owned()).as_deref(),
            Some("DE")
        );
        assert_eq!(l.person.form.as_deref(), Some("demo-request"));
        assert_eq!(l.person.product.as_deref(), Some("enterprise"));
        assert!(l.person.consent.marketing);
        assert_eq!(l.source, LeadSource::PortalSignup);
        assert_eq!(l.event_lead_id, LeadId::for_event("portal", "msg_1"));
        assert!(
            l.event_lead_id.as_str().starts_with("ld_") && l.event_lead_id.as_str().len() == 27
        );
    }

    #[test]
    fn stripe_customer_is_a_lead() {
        let m = msg(
            "stripe",
            "customer.created",
            "evt_1",
            json!({"id": "evt_1", "type": "customer.created", "data": {"object": {
                "id": "cus_1", "object": "customer", "email": "bob@globex.example", "name": "Bob Builder",
                "address": {"country": "US"}, "metadata": {"company": "Globex"}}}}),
        );
        let l = parse_event(&m).unwrap();
        assert_eq!(l.source, LeadSource::StripeCustomer);
        assert_eq!(l.stripe_customer.as_deref(), Some("cus_1"));
        assert_eq!(l.person.company.as_deref(), Some("Globex"));
        assert_eq!(l.person.country.unwrap().code(), "US");
        assert!(!l.person.consent.marketing);
    }

    #[test]
    fn bad_input_is_refused_clearly() {
        let e = parse_event(&msg(
            "portal",
            "lead.signup",
            "m",
            json!({"data": {"name": "x"}}),
        ))
        .unwrap_err();
        assert_eq!(e, InputError::Email(EmailError::Missing));
        let e = parse_event(&msg(
            "portal",
            "lead.signup",
            "m",
            json!({"data": {"email": "nope"}}),
        ))
        .unwrap_err();
        assert_eq!(e, InputError::Email(EmailError::At));
        let e = parse_event(&msg("portal", "lead.deleted", "m", json!({}))).unwrap_err();
        assert!(matches!(e, InputError::Unsupported { .. }));
        let e = parse_event(&msg("portal", "lead.signup", "m", json!({"nodata": 1}))).unwrap_err();
        assert_eq!(e, InputError::MissingField("data"));
        let e = parse_event(&msg(
            "portal",
            "lead.signup",
            "m",
            json!({"data": {"email": 5}}),
        ))
        .unwrap_err();
        assert!(matches!(e, InputError::Malformed { field: "data", .. }));
        let e = parse_event(&msg(
            "stripe",
            "customer.created",
            "e",
            json!({"data": {"object": {"id": "cus"}}}),
        ))
        .unwrap_err();
        assert_eq!(e, InputError::Email(EmailError::Missing));
        let err: crate::Error = e.into();
        assert!(!err.is_retryable());
    }

    #[test]
    fn unknown_country_is_kept_not_routed() {
        let l = parse_event(&msg(
            "portal",
            "lead.contact_us",
            "m",
            json!({"data": {"email": "a@b.example", "country": "Atlantis"}}),
        ))
        .unwrap();
        assert_eq!(l.person.country, None);
        assert_eq!(l.person.country_unmapped.as_deref(), Some("Atlantis"));
    }
}
