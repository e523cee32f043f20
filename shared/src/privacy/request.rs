//! A privacy request's record and its rules.
//!
//! The record holds no personal data: the person is their [`SubjectId`] (a keyed hash). The
//! audit trail is append-only: what each system found, exported, erased or kept, and the legal
//! basis of anything kept. Status moves `received` -> `in_progress` -> one of `completed`,
//! `completed_with_exceptions` (something was kept, with its basis) or `rejected`; a closed
//! request does not reopen. A request is extended at most once, with a recorded reason,
//! before its first due date.

use super::deadline::{Jurisdiction, Urgency, due_date, urgency};
use crate::error::{Error, Result};
use crate::subjects::{SubjectId, System};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// What the person asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// A copy of their data (GDPR art. 15, CCPA right to know).
    Access,
    /// Their data erased (GDPR art. 17, CCPA right to delete).
    Erasure,
    /// No sale or sharing, no marketing (CCPA opt-out, GDPR art. 21): the latest choice wins.
    OptOut,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Received,
    InProgress,
    Completed,
    CompletedWithExceptions,
    Rejected,
}

impl RequestStatus {
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::CompletedWithExceptions | Self::Rejected
        )
    }
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Epoch ms.
    pub at: i64,
    /// The system concerned (none: the request itself, e.g. its extension).
    pub system: Option<System>,
    /// `found`, `exported`, `erased`, `kept`, `extended`, `status`.
    pub action: String,
    /// What, without personal data (counts, record ids, object keys).
    pub detail: String,
    /// The legal basis of anything kept (e.g. "tax law: invoices kept 10 years").
    pub basis: Option<String>,
}

/// A request's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyRequest {
    pub id: String,
    pub kind: RequestKind,
    pub jurisdiction: Jurisdiction,
    pub subject: SubjectId,
    pub received: NaiveDate,
    /// The recorded reason of the one extension.
    pub extension: Option<String>,
    pub status: RequestStatus,
    pub audit: Vec<AuditEntry>,
    /// An opt-out request's choice: `true` opts out, `false` withdraws an earlier opt-out.
    #[serde(default)]
    pub opted_out: Option<bool>,
    /// When the person made the request (epoch ms): an opt-out's choice is dated by it.
    #[serde(default)]
    pub requested_at: i64,
    /// The places and sweeps already handled (`{system}:{locator}`): a request that failed
    /// midway resumes after them.
    #[serde(default)]
    pub done: std::collections::BTreeSet<String>,
    /// An access request's bundle (object key).
    #[serde(default)]
    pub bundle_key: Option<String>,
}

impl PrivacyRequest {
    pub fn new(
        id: impl Into<String>,
        kind: RequestKind,
        jurisdiction: Jurisdiction,
        subject: SubjectId,
        received: NaiveDate,
    ) -> Self {
        Self {
            id: id.into(),
            kind,
            jurisdiction,
            subject,
            received,
            extension: None,
            status: RequestStatus::Received,
            audit: Vec::new(),
            opted_out: None,
            requested_at: 0,
            done: Default::default(),
            bundle_key: None,
        }
    }

    /// The last day to answer.
    pub fn due(&self) -> NaiveDate {
        due_date(self.jurisdiction, self.received, self.extension.is_some())
    }

    /// How urgent it is on `today` (`None` once closed).
    pub fn urgency(&self, today: NaiveDate) -> Option<Urgency> {
        (!self.status.is_closed()).then(|| urgency(self.due(), today))
    }

    /// Appends to the audit trail.
    pub fn record(&mut self, at: i64, system: Option<System>, action: &str, detail: &str) {
        self.audit.push(AuditEntry {
            at,
            system,
            action: action.to_owned(),
            detail: detail.to_owned(),
            basis: None,
        });
    }

    /// Records data kept in `system`, with its legal basis (required).
    pub fn keep(&mut self, at: i64, system: System, detail: &str, basis: &str) -> Result<()> {
        if basis.trim().is_empty() {
            return Err(Error::Invalid(format!(
                "data kept in {} needs a legal basis",
                system.as_str()
            )));
        }
        self.audit.push(AuditEntry {
            at,
            system: Some(system),
            action: "kept".into(),
            detail: detail.to_owned(),
            basis: Some(basis.to_owned()),
        });
        Ok(())
    }

    /// Extends the deadline once, with a reason, before the first due date passes.
    pub fn extend(&mut self, at: i64, today: NaiveDate, reason: &str) -> Result<()> {
        if self.status.is_closed() {
            return Err(Error::Invalid(format!("request {} is closed", self.id)));
        }
        if self.extension.is_some() {
            return Err(Error::Invalid(format!(
                "request {} was already extended",
                self.id
            )));
        }
        if reason.trim().is_empty() {
            return Err(Error::Invalid("an extension needs a reason".into()));
        }
        if today > self.due() {
            return Err(Error::Invalid(format!(
                "request {} is past its due date {}: too late to extend",
                self.id,
                self.due()
            )));
        }
        self.extension = Some(reason.to_owned());
        let due = self.due();
        self.record(at, None, "extended", &format!("due {due}: {reason}"));
        Ok(())
    }

    /// Moves to `next`. Closed requests stay closed; `completed` is refused while anything was
    /// kept (that is `completed_with_exceptions`), and the reverse.
    pub fn transition(&mut self, at: i64, next: RequestStatus) -> Result<()> {
        use RequestStatus::*;
        if self.status == next {
            return Ok(());
        }
        if self.status.is_closed() {
            return Err(Error::Invalid(format!(
                "request {} is closed ({:?})",
                self.id, self.status
            )));
        }
        let kept = self.audit.iter().any(|e| e.action == "kept");
        match next {
            Received => {
                return Err(Error::Invalid(
                    "a request cannot go back to received".into(),
                ));
            }
            Completed if kept => {
                return Err(Error::Invalid(
                    "data was kept: the request completes with exceptions".into(),
                ));
            }
            CompletedWithExceptions if !kept => {
                return Err(Error::Invalid(
                    "nothing was kept: the request completes without exceptions".into(),
                ));
            }
            _ => {}
        }
        self.status = next;
        self.record(at, None, "status", &format!("{next:?}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subjects::SubjectKey;
    use crate::values::Email;

    fn request(j: Jurisdiction) -> PrivacyRequest {
        let subject = SubjectKey::for_tests().subject(&Email::parse("ada@example.com").unwrap());
        PrivacyRequest::new(
            "pr_1",
            RequestKind::Erasure,
            j,
            subject,
            NaiveDate::from_ymd_opt(2026, 1, 31).unwrap(),
        )
    }

    fn day(m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, d).unwrap()
    }

    #[test]
    fn one_extension_with_a_reason_before_the_due_date() {
        let mut r = request(Jurisdiction::Gdpr);
        assert_eq!(r.due(), day(2, 28));
        assert!(
            r.extend(1, day(2, 10), " ").is_err(),
            "a reason is required"
        );
        r.extend(2, day(2, 10), "complex: several systems").unwrap();
        assert_eq!(r.due(), day(4, 30));
        assert!(r.extend(3, day(2, 11), "again").is_err(), "only once");
        let mut late = request(Jurisdiction::Ccpa);
        assert_eq!(late.due(), day(3, 17));
        assert!(late.extend(4, day(3, 18), "late").is_err());
        assert!(!serde_json::to_string(&r).unwrap().contains("ada@"));
    }

    #[test]
    fn status_moves_forward_and_exceptions_need_a_basis() {
        let mut r = request(Jurisdiction::Gdpr);
        r.transition(1, RequestStatus::InProgress).unwrap();
        r.record(2, Some(System::Leads), "erased", "1 lead record");
        assert!(r.keep(3, System::Billing, "2 invoices", "").is_err());
        r.keep(
            3,
            System::Billing,
            "2 invoices",
            "tax law: invoices kept 10 years",
        )
        .unwrap();
        assert!(r.transition(4, RequestStatus::Completed).is_err());
        r.transition(4, RequestStatus::CompletedWithExceptions)
            .unwrap();
        assert!(
            r.transition(5, RequestStatus::InProgress).is_err(),
            "closed"
        );
        assert_eq!(
            r.urgency(day(12, 1)),
            None,
            "closed requests are not urgent"
        );
        let mut clean = request(Jurisdiction::Ccpa);
        clean.transition(1, RequestStatus::InProgress).unwrap();
        assert!(
            clean
                .transition(2, RequestStatus::CompletedWithExceptions)
                .is_err()
        );
        assert!(clean.transition(2, RequestStatus::Received).is_err());
        assert_eq!(
            clean.urgency(day(3, 20)),
            Some(Urgency::Overdue { days_late: 3 })
        );
        clean.transition(3, RequestStatus::Completed).unwrap();
        let trail: Vec<&str> = clean.audit.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(trail, ["status", "status"]);
    }
}
