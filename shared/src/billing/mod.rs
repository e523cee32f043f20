//! Usage billing: metered usage in, correct monthly invoices out, exactly once.
//!
//! The rules are pure and tested against hand-computed tables; the services drive them through
//! ports (traits with a DynamoDB/Stripe adapter and an in-memory fake).
//!
//! # Layout
//! - [`money`]: integer minor units + currency, decimal quantities and rates, round half to even.
//! - [`period`]: the `YYYY-MM` billing period.
//! - [`usage`]: usage records, validation, rejection reasons (late / rejected lists).
//! - [`aggregate`]: count, sum, max, unique count, latest, time-weighted sum.
//! - [`pricing`]: per-unit, graduated, volume, package and flat price models.
//! - [`pricebook`]: the versioned price book (JSON in the repo, overridable from the table).
//! - [`subscription`]: the local view of Stripe subscriptions, proration by active days.
//! - [`invoice`]: composition (price, prorate, minimum, credits) and JSON/HTML rendering.
//! - [`dunning`]: the active / past_due / suspended state machine.
//! - [`ports`]: the capabilities the services need, with in-memory fakes.
//! - [`dynamo`]: the billing-table adapters (item layout documented there).
//! - [`stripe_api`]: invoice items, invoices and finalize on Stripe.
//! - [`service`]: ingest, plan, bill and billing-event services.

pub mod aggregate;
pub mod dunning;
pub mod dynamo;
pub mod invoice;
pub mod money;
pub mod period;
pub mod ports;
pub mod pricebook;
pub mod pricing;
pub mod service;
pub mod stripe_api;
pub mod subscription;
pub mod usage;

pub use money::{Currency, Money, Quantity, Rate};
pub use period::Period;
