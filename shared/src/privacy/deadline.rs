//! Deadlines (see REFERENCE.md, "Privacy law deadlines and duties").
//!
//! - **GDPR** art. 12(3): one month from receipt, extendable by two further months. A month
//!   ends on the same day number of the next month, or on that month's last day when it has
//!   no such day (received 31 January: due 28 or 29 February), as EU Regulation 1182/71 counts.
//!   Extended, the request is due three months after receipt by the same rule.
//! - **CCPA/CPRA** §1798.130: 45 calendar days from receipt, extendable once by 45 more.

use chrono::{Days, Months, NaiveDate};
use serde::{Deserialize, Serialize};

/// The law a request is answered under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jurisdiction {
    Gdpr,
    Ccpa,
}

impl Jurisdiction {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gdpr" => Some(Self::Gdpr),
            "ccpa" | "cpra" => Some(Self::Ccpa),
            _ => None,
        }
    }
}

/// The last day to answer a request received on `received`.
pub fn due_date(jurisdiction: Jurisdiction, received: NaiveDate, extended: bool) -> NaiveDate {
    let later = match (jurisdiction, extended) {
        (Jurisdiction::Gdpr, false) => received.checked_add_months(Months::new(1)),
        (Jurisdiction::Gdpr, true) => received.checked_add_months(Months::new(3)),
        (Jurisdiction::Ccpa, false) => received.checked_add_days(Days::new(45)),
        (Jurisdiction::Ccpa, true) => received.checked_add_days(Days::new(90)),
    };
    // Only out of chrono's range (year 262 143): keep the receipt date, the strictest answer.
    later.unwrap_or(received)
}

/// How urgent an open request is on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "urgency", rename_all = "snake_case")]
pub enum Urgency {
    /// More than [`DUE_SOON_DAYS`] days left.
    OnTrack { days_left: i64 },
    /// Due within [`DUE_SOON_DAYS`] days (today included): notify and count it daily.
    DueSoon { days_left: i64 },
    /// Past its due date.
    Overdue { days_late: i64 },
}

/// Days before the due date from which a request is "due soon".
pub const DUE_SOON_DAYS: i64 = 7;

/// The urgency of a request due on `due`, on `today`.
pub fn urgency(due: NaiveDate, today: NaiveDate) -> Urgency {
    let left = (due - today).num_days();
    if left < 0 {
        Urgency::Overdue { days_late: -left }
    } else if left <= DUE_SOON_DAYS {
        Urgency::DueSoon { days_left: left }
    } else {
        Urgency::OnTrack { days_left: left }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn gdpr_counts_calendar_months_and_clamps_to_the_month_end() {
        // Hand-computed.
        let cases = [
            ("2026-03-10", false, "2026-04-10"),
            ("2026-03-10", true, "2026-06-10"),
            ("2026-01-31", false, "2026-02-28"),
            ("2028-01-31", false, "2028-02-29"), // leap year
            ("2026-01-31", true, "2026-04-30"),
            ("2026-11-30", true, "2027-02-28"),
            ("2026-12-15", false, "2027-01-15"),
            ("2026-08-31", false, "2026-09-30"),
        ];
        for (received, extended, due) in cases {
            assert_eq!(
                due_date(Jurisdiction::Gdpr, d(received), extended),
                d(due),
                "{received} extended={extended}"
            );
        }
    }

    #[test]
    fn ccpa_counts_45_days_and_45_more() {
        let cases = [
            ("2026-03-10", false, "2026-04-24"),
            ("2026-03-10", true, "2026-06-08"),
            ("2026-12-20", false, "2027-02-03"),
            ("2028-02-01", false, "2028-03-17"), // 29 days in February 2028
            ("2026-11-30", true, "2027-02-28"),
        ];
        for (received, extended, due) in cases {
            assert_eq!(
                due_date(Jurisdiction::Ccpa, d(received), extended),
                d(due),
                "{received} extended={extended}"
            );
        }
    }

    #[test]
    fn urgency_is_on_track_then_due_soon_then_overdue() {
        let due = d("2026-04-10");
        assert_eq!(
            urgency(due, d("2026-04-02")),
            Urgency::OnTrack { days_left: 8 }
        );
        assert_eq!(
            urgency(due, d("2026-04-03")),
            Urgency::DueSoon { days_left: 7 }
        );
        assert_eq!(
            urgency(due, d("2026-04-10")),
            Urgency::DueSoon { days_left: 0 }
        );
        assert_eq!(
            urgency(due, d("2026-04-12")),
            Urgency::Overdue { days_late: 2 }
        );
        assert_eq!(Jurisdiction::parse("CPRA"), Some(Jurisdiction::Ccpa));
        assert_eq!(Jurisdiction::parse("lgpd"), None);
    }
}
