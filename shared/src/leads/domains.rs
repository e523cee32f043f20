//! Domain classification: is an e-mail domain a company's, a free-mail provider's or a
//! throw-away one?
//!
//! Free-mail and disposable domains are never sent to the enrichment provider (it bills per
//! lookup and would answer "Google" for gmail.com) and never matched to an account. The lists
//! are bundled data files with their origin in their header: `shared/data/freemail.txt` and
//! `shared/data/disposable.txt` (the latter in the upstream block list's format, so it can be
//! replaced by the full upstream file).

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::OnceLock;

/// What kind of mailbox a domain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainClass {
    /// A company's own domain: enrich it, match it to accounts.
    Corporate,
    /// A consumer mailbox provider: the lead is an individual.
    FreeMail,
    /// A throw-away mailbox: the lead is flagged and scored down.
    Disposable,
}

impl DomainClass {
    /// `true` for a company domain (the only kind looked up or matched).
    pub fn is_corporate(self) -> bool {
        self == DomainClass::Corporate
    }

    /// The name used in rules files (`corporate`, `free_mail`, `disposable`).
    pub fn as_str(self) -> &'static str {
        match self {
            DomainClass::Corporate => "corporate",
            DomainClass::FreeMail => "free_mail",
            DomainClass::Disposable => "disposable",
        }
    }
}

/// A set of domains read from a list file (one per line, `#` comments, blank lines ignored).
#[derive(Debug, Clone, Default)]
pub struct DomainList(HashSet<String>);

impl DomainList {
    /// Parses a list file's text.
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim().to_lowercase())
                .filter(|l| !l.is_empty())
                .collect(),
        )
    }

    /// Whether `domain` or one of its parent domains is listed (`mail.yopmail.com` matches
    /// `yopmail.com`).
    pub fn contains(&self, domain: &str) -> bool {
        let mut d = domain.trim_end_matches('.');
        loop {
            if self.0.contains(d) {
                return true;
            }
            match d.split_once('.') {
                Some((_, rest)) if rest.contains('.') => d = rest,
                _ => return false,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Classifies domains with the free-mail and disposable lists.
#[derive(Debug, Clone)]
pub struct DomainClassifier {
    free: DomainList,
    disposable: DomainList,
}

impl DomainClassifier {
    /// A classifier over the given lists.
    pub fn new(free: DomainList, disposable: DomainList) -> Self {
        Self { free, disposable }
    }

    /// The classifier over the bundled lists (parsed once per process).
    pub fn bundled() -> &'static Self {
        static BUNDLED: OnceLock<DomainClassifier> = OnceLock::new();
        BUNDLED.get_or_init(|| {
            Self::new(
                DomainList::parse(include_str!("../../data/freemail.txt")),
                DomainList::parse(include_str!("../../data/disposable.txt")),
            )
        })
    }

    /// The class of a (lower-case) domain. Disposable wins over free-mail.
    pub fn classify(&self, domain: &str) -> DomainClass {
        if self.disposable.contains(domain) {
            DomainClass::Disposable
        } else if self.free.contains(domain) {
            DomainClass::FreeMail
        } else {
            DomainClass::Corporate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_lists_classify() {
        let c = DomainClassifier::bundled();
        assert_eq!(c.classify("gmail.com"), DomainClass::FreeMail);
        assert_eq!(c.classify("outlook.com"), DomainClass::FreeMail);
        assert_eq!(c.classify("yahoo.co.uk"), DomainClass::FreeMail);
        assert_eq!(c.classify("proton.me"), DomainClass::FreeMail);
        assert_eq!(c.classify("mailinator.com"), DomainClass::Disposable);
        assert_eq!(c.classify("yopmail.com"), DomainClass::Disposable);
        assert_eq!(
            c.classify("mx.guerrillamail.com"),
            DomainClass::Disposable,
            "subdomains match"
        );
        assert_eq!(c.classify("acme.example"), DomainClass::Corporate);
        assert_eq!(
            c.classify("gmail.com.acme.example"),
            DomainClass::Corporate,
            "suffix, not substring"
        );
        assert_eq!(c.classify("notgmail.com"), DomainClass::Corporate);
        assert!(c.classify("acme.example").is_corporate());
        assert!(!c.classify("gmail.com").is_corporate());
    }

    #[test]
    fn list_format_has_comments_and_blanks() {
        let l = DomainList::parse("# header\n\nA.example  # trailing\nb.example\n");
        assert_eq!(l.len(), 2);
        assert!(l.contains("a.example"));
        assert!(l.contains("x.b.example"));
        assert!(!l.contains("example"));
        assert!(DomainClassifier::bundled().free.len() > 100);
    }
}
