//! Normalisation: turns what a form or Stripe sent into typed values.
//!
//! "Parse, don't validate": an [`Email`] can only exist trimmed, lower-cased and well formed; a
//! [`Country`] is an ISO 3166-1 alpha-2 code from the bundled table (`shared/data/countries.tsv`,
//! origin noted in its header), found from a code (alpha-2 or alpha-3), a name or a common alias,
//! whatever the case, accents or punctuation.

pub use crate::values::Country;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an e-mail address was refused. The text never repeats the address (it is personal data
/// and error texts reach logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email is missing")]
    Missing,
    #[error("email is longer than 254 characters")]
    TooLong,
    #[error("email must contain exactly one '@'")]
    At,
    #[error("email has an empty or over-long local part")]
    LocalPart,
    #[error("email local part has a character that is not allowed")]
    LocalChar,
    #[error("email domain is not a valid host name with a dot")]
    Domain,
}

/// A normalised e-mail address: trimmed, lower-cased, `local@domain` with a dotted domain.
/// Its `Debug` hides the address (it must not reach logs by accident).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Parses and normalises an address.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err(EmailError::Missing);
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let mut parts = s.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EmailError::At);
        };
        if local.is_empty() || local.len() > 64 {
            return Err(EmailError::LocalPart);
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return Err(EmailError::LocalChar);
        }
        if !valid_domain(domain) {
            return Err(EmailError::Domain);
        }
        Ok(Self(s))
    }

    /// The whole address (use it only where it is needed: the lead store, the CRM payload).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part, lower-case.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }

    /// The SHA-256 of the address (hex): the key under which a data subject's leads are found
    /// (and erased) without storing the address in a key.
    pub fn subject_hash(&self) -> String {
        crate::ledger::payload_hash(self.0.as_bytes())
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email(***@{})", self.domain())
    }
}

impl TryFrom<String> for Email {
    type Error = EmailError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

fn valid_domain(domain: &str) -> bool {
    if domain.len() > 253 || !domain.contains('.') {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let tld_ok = labels.last().is_some_and(|t| {
        t.len() >= 2 && t.chars().all(|c| c.is_ascii_alphabetic()) || t.starts_with("xn--")
    });
    tld_ok
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A person's name split for the CRM (`FirstName`, `LastName`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonName {
    pub first: Option<String>,
    pub last: Option<String>,
}

/// Builds a name from explicit first/last fields, else splits a full name: the last word is
/// the last name, the rest the first name ("Ana María López" -> "Ana María" / "López"); a
/// "Last, First" form is understood; a single word is a last name (Salesforce requires one).
pub fn split_name(first: Option<&str>, last: Option<&str>, full: Option<&str>) -> PersonName {
    let clean = |s: Option<&str>| {
        s.map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|v| !v.is_empty())
    };
    let (first, last) = (clean(first), clean(last));
    if first.is_some() || last.is_some() {
        return PersonName { first, last };
    }
    let Some(full) = clean(full) else {
        return PersonName::default();
    };
    if let Some((l, f)) = full.split_once(',') {
        let (f, l) = (f.trim(), l.trim());
        if !f.is_empty() && !l.is_empty() {
            return PersonName {
                first: Some(f.to_owned()),
                last: Some(l.to_owned()),
            };
        }
    }
    match full.rsplit_once(' ') {
        Some((f, l)) => PersonName {
            first: Some(f.to_owned()),
            last: Some(l.to_owned()),
        },
        None => PersonName {
            first: None,
            last: Some(full),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        let e = Email::parse("  Ada.Lovelace+Beta@Example.CO.UK ").unwrap();
        assert_eq!(e.as_str(), "ada.lovelace+beta@example.co.uk");
        assert_eq!(e.domain(), "example.co.uk");
        assert_eq!(Email::parse(""), Err(EmailError::Missing));
        assert_eq!(Email::parse("   "), Err(EmailError::Missing));
        assert_eq!(Email::parse("no-at.example.com"), Err(EmailError::At));
        assert_eq!(Email::parse("a@b@c.com"), Err(EmailError::At));
        assert_eq!(Email::parse("@example.com"), Err(EmailError::LocalPart));
        assert_eq!(Email::parse("a..b@example.com"), Err(EmailError::LocalChar));
        assert_eq!(Email::parse("a b@example.com"), Err(EmailError::LocalChar));
        assert_eq!(Email::parse("ann@localhost"), Err(EmailError::Domain));
        assert_eq!(Email::parse("ann@-bad.com"), Err(EmailError::Domain));
        assert_eq!(Email::parse("ann@example.c0m"), Err(EmailError::Domain));
        assert_eq!(
            Email::parse(&format!("{}@x.com", "a".repeat(300))),
            Err(EmailError::TooLong)
        );
    }

    #[test]
    fn email_debug_and_errors_hide_the_address() {
        let e = Email::parse("secret.person@acme.example").unwrap();
        assert_eq!(format!("{e:?}"), "Email(***@acme.example)");
        let err = Email::parse("secret.person@nodot").unwrap_err();
        assert!(!err.to_string().contains("secret"));
        assert_eq!(e.subject_hash().len(), 64);
        assert_eq!(
            e.subject_hash(),
            Email::parse("SECRET.person@ACME.example")
                .unwrap()
                .subject_hash()
        );
    }

    #[test]
    fn names_are_split() {
        let n = split_name(None, None, Some("  Ana  María López "));
        assert_eq!(
            (n.first.as_deref(), n.last.as_deref()),
            (Some("Ana María"), Some("López"))
        );
        let n = split_name(None, None, Some("Lovelace, Ada"));
        assert_eq!(
            (n.first.as_deref(), n.last.as_deref()),
            (Some("Ada"), Some("Lovelace"))
        );
        let n = split_name(None, None, Some("Prince"));
        assert_eq!((n.first, n.last.as_deref()), (None, Some("Prince")));
        let n = split_name(Some(" Grace "), Some("Hopper"), Some("ignored name"));
        assert_eq!(
            (n.first.as_deref(), n.last.as_deref()),
            (Some("Grace"), Some("Hopper"))
        );
        assert_eq!(split_name(None, Some(" "), None), PersonName::default());
    }
}
