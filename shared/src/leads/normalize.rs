//! Normalisation: turns what a form or Stripe sent into typed values.
//!
//! "Parse, don't validate": an [`Email`] can only exist trimmed, lower-cased and well formed; a
//! [`Country`] is an ISO 3166-1 alpha-2 code from the bundled table (`shared/data/countries.tsv`,
//! origin noted in its header), found from a code (alpha-2 or alpha-3), a name or a common alias,
//! whatever the case, accents or punctuation.

pub use crate::values::{Country, Email, EmailError};
use serde::{Deserialize, Serialize};

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
        let key = crate::subjects::SubjectKey::for_tests();
        assert_eq!(
            key.subject(&e),
            key.subject(&Email::parse("SECRET.person@ACME.example").unwrap())
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
