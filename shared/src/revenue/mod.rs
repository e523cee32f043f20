//! revenue-ops: the company's daily revenue operations, from what the other functions store.
//!
//! - [`metrics`]: MRR, ARR, movements, customers, churn, retention, seats, pipeline as of a
//!   date, from every subscription's history (the definitions are written there and in
//!   `docs/metrics.md`); [`report`]: the CSV for the BI tool and the monthly HTML report.
//! - [`renewals`]: one renewal opportunity per (subscription, next term), its window and
//!   stages.
//! - [`health`]: the customer health score, its bands and reasons, from rules that are data
//!   (`health.json`).
//! - [`store`]: renewals, scores, warnings and snapshots (RevenueTable).
//! - [`service`]: the daily plan and the per-customer job.
//!
//! Inputs: customer-sync's states (subscriptions with their history, licenses, owners,
//! refunds and disputes), billing's usage by day and dunning state. The snapshot does not
//! depend on the CRM: a CRM outage fails customer jobs (retried by the queue), never the day's
//! metrics.

pub mod config;
pub mod health;
pub mod metrics;
pub mod renewals;
pub mod report;
pub mod service;
pub mod store;

pub use config::{Config, Settings};
pub use service::{Job, Ports, RevenueOps};

#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod tests;
