//! Usage records: the wire shape, validation, and the reasons a record is refused.
//!
//! A record (`{id, customer, subscription, metric, value, timestamp, installation}`) is
//! parsed into a [`Usage`] or refused with a [`Rejection`]. Refusals are permanent verdicts
//! (never retried): they are stored in the billing table's rejected list and counted, never
//! silently dropped. The checks that need no lookup live here ([`parse`]); the ones that need
//! the subscription view (unknown customer / metric, closed period) are in the ingest service.

use super::money::{Quantity, parse_micros};
use super::period::Period;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A usage record as telemetry sends it (`usage.reported` -> `data.records[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawUsage {
    pub id: String,
    pub customer: String,
    pub subscription: String,
    pub metric: String,
    /// Kept raw so a non-numeric value is refused with its reason, not a parse error of the
    /// whole batch.
    pub value: serde_json::Value,
    pub timestamp: String,
    #[serde(default)]
    pub installation: Option<String>,
}

/// A record that passed the lookup-free checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub id: String,
    pub customer: String,
    pub subscription: String,
    pub metric: String,
    pub value: Quantity,
    pub timestamp: DateTime<Utc>,
    pub installation: Option<String>,
}

impl Usage {
    pub fn period(&self) -> Period {
        Period::of(self.timestamp)
    }
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    #[error("record is malformed (missing id, customer, subscription or metric)")]
    Malformed,
    #[error("value is not a number")]
    NonNumericValue,
    #[error("value is negative")]
    NegativeValue,
    #[error("timestamp is not RFC 3339")]
    BadTimestamp,
    #[error("timestamp is in the future")]
    FutureTimestamp,
    #[error("record is older than the open period's grace window")]
    Late,
    #[error("the period of the record is already closed (billed)")]
    PeriodClosed,
    #[error("unknown customer or subscription")]
    UnknownCustomer,
    #[error("metric is not priced by the subscription's plan")]
    UnknownMetric,
}

impl RejectReason {
    /// `late` for records that came too late, `rejected` for the rest.
    pub fn list(self) -> &'static str {
        match self {
            RejectReason::Late | RejectReason::PeriodClosed => "late",
            _ => "rejected",
        }
    }
}

/// A refused record with its reason, as stored and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub record_id: String,
    pub customer: String,
    pub reason: RejectReason,
    pub record: serde_json::Value,
}

impl Rejection {
    pub fn new(raw: &RawUsage, reason: RejectReason) -> Self {
        Self {
            record_id: raw.id.clone(),
            customer: raw.customer.clone(),
            reason,
            record: serde_json::to_value(raw).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Time rules of ingestion, and the two that close the period-close race.
///
/// Usage written while a period closes must be billed or listed as late, never neither, and
/// the write path has no transaction to make "the period is open" and "the record is written"
/// one atomic step. Time does it instead:
/// - the ingest reads the period's close marker (strongly consistent) and then writes within
///   `write_window` of that read: no write request starts after the window, and records not
///   written by then go back through the check (a closed period now lists them as late);
/// - a bill run composes an invoice only once `settle` has passed since the period's close
///   (earlier it answers "in progress" and the job is retried; the plan step delays its jobs
///   by `settle`), and `settle` is longer than `write_window`.
///
/// So a record whose check saw the period open was written before the period closed plus
/// `write_window`, which is before any invoice of the period was composed: it is billed. A
/// record whose check saw it closed is listed as late. Clock skew between functions (NTP,
/// milliseconds) and request latency are covered by the margin between the two.
#[derive(Debug, Clone, Copy)]
pub struct IngestPolicy {
    /// How long after a period ends its records are still accepted (until the plan step
    /// closes it, whichever comes first).
    pub grace: Duration,
    /// Clock skew tolerated for timestamps ahead of now.
    pub future_skew: Duration,
    /// How long after reading "the period is open" the ingest may still start writes.
    pub write_window: Duration,
    /// How long after a period closes before its invoices are composed (> `write_window`).
    pub settle: Duration,
}

impl Default for IngestPolicy {
    fn default() -> Self {
        Self {
            grace: Duration::hours(72),
            future_skew: Duration::minutes(5),
            write_window: Duration::seconds(60),
            settle: Duration::seconds(120),
        }
    }
}

impl IngestPolicy {
    /// No waiting after a close (unit tests that bill right away; nothing ingests meanwhile).
    pub fn settled() -> Self {
        Self {
            settle: Duration::zero(),
            ..Self::default()
        }
    }

    /// Refuses a settle that does not outlast the write window (the race would reopen).
    pub fn validated(self) -> Result<Self, String> {
        if self.write_window <= Duration::zero() {
            return Err("the usage write window must be positive".into());
        }
        if self.settle <= self.write_window {
            return Err(format!(
                "the usage settle time ({} s) must be longer than the write window ({} s)",
                self.settle.num_seconds(),
                self.write_window.num_seconds()
            ));
        }
        Ok(self)
    }
}

/// The lookup-free checks: shape, value, timestamp, and the grace window. The open period is
/// the one containing `now`; the previous one is accepted until `grace` after its end.
pub fn parse(
    raw: &RawUsage,
    now: DateTime<Utc>,
    policy: &IngestPolicy,
) -> Result<Usage, RejectReason> {
    let nonempty = |s: &str| !s.trim().is_empty() && s.len() <= 200;
    if !(nonempty(&raw.id)
        && nonempty(&raw.customer)
        && nonempty(&raw.subscription)
        && nonempty(&raw.metric))
    {
        return Err(RejectReason::Malformed);
    }
    let micros = match &raw.value {
        serde_json::Value::Number(n) => {
            parse_micros(&n.to_string()).ok_or(RejectReason::NonNumericValue)?
        }
        _ => return Err(RejectReason::NonNumericValue),
    };
    if micros < 0 {
        return Err(RejectReason::NegativeValue);
    }
    let timestamp = DateTime::parse_from_rfc3339(raw.timestamp.trim())
        .map_err(|_| RejectReason::BadTimestamp)?
        .with_timezone(&Utc);
    if timestamp > now + policy.future_skew {
        return Err(RejectReason::FutureTimestamp);
    }
    let open = Period::of(now);
    let period = Period::of(timestamp);
    let in_window = period == open || (period == open.prev() && now < open.start() + policy.grace);
    // A timestamp within the skew just after a period start belongs to the open period.
    if !in_window && period != open.next() {
        return Err(RejectReason::Late);
    }
    Ok(Usage {
        id: raw.id.clone(),
        customer: raw.customer.clone(),
        subscription: raw.subscription.clone(),
        metric: raw.metric.clone(),
        value: Quantity::from_micros(micros),
        timestamp,
        installation: raw.installation.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(value: serde_json::Value, ts: &str) -> RawUsage {
        RawUsage {
            id: "u1".into(),
            customer: "cus_1".into(),
            subscription: "sub_1".into(),
            metric: "api_calls".into(),
            value,
            timestamp: ts.into(),
            installation: Some("inst-1".into()),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-02T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn accepts_open_and_grace_period() {
        let p = IngestPolicy::default();
        let u = parse(
            &raw(serde_json::json!(2.5), "2026-11-01T10:00:00Z"),
            now(),
            &p,
        )
        .unwrap();
        assert_eq!(u.value, Quantity::from_micros(2_500_000));
        assert_eq!(u.period().to_string(), "2026-11");
        // previous period, within 72 h of its end
        assert!(
            parse(
                &raw(serde_json::json!(1), "2026-10-31T23:59:59Z"),
                now(),
                &p
            )
            .is_ok()
        );
        // previous period after the grace window
        let late_now: DateTime<Utc> = "2026-11-04T00:00:01Z".parse().unwrap();
        assert_eq!(
            parse(
                &raw(serde_json::json!(1), "2026-10-31T23:59:59Z"),
                late_now,
                &p
            ),
            Err(RejectReason::Late)
        );
        assert_eq!(
            parse(
                &raw(serde_json::json!(1), "2026-09-15T00:00:00Z"),
                now(),
                &p
            ),
            Err(RejectReason::Late)
        );
    }

    #[test]
    fn refuses_bad_values_and_times() {
        let p = IngestPolicy::default();
        let t = "2026-11-02T11:00:00Z";
        assert_eq!(
            parse(&raw(serde_json::json!(-1), t), now(), &p),
            Err(RejectReason::NegativeValue)
        );
        assert_eq!(
            parse(&raw(serde_json::json!("12"), t), now(), &p),
            Err(RejectReason::NonNumericValue)
        );
        assert_eq!(
            parse(&raw(serde_json::json!(null), t), now(), &p),
            Err(RejectReason::NonNumericValue)
        );
        assert_eq!(
            parse(&raw(serde_json::json!(1), "yesterday"), now(), &p),
            Err(RejectReason::BadTimestamp)
        );
        assert_eq!(
            parse(
                &raw(serde_json::json!(1), "2026-11-02T12:06:00Z"),
                now(),
                &p
            ),
            Err(RejectReason::FutureTimestamp)
        );
        assert!(
            parse(
                &raw(serde_json::json!(1), "2026-11-02T12:04:00Z"),
                now(),
                &p
            )
            .is_ok()
        );
        let mut r = raw(serde_json::json!(1), t);
        r.metric = " ".into();
        assert_eq!(parse(&r, now(), &p), Err(RejectReason::Malformed));
        assert_eq!(RejectReason::Late.list(), "late");
        assert_eq!(RejectReason::NegativeValue.list(), "rejected");
    }
}
