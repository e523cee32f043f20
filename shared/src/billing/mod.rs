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
//! - [`invoice`]: composition (price, prorate, minimum, credits).
//! - [`document`]: the invoice a customer receives (seller, buyer, number, dates, lines in the
//!   currency's units, tax per line and per rate, amount due, pay link) as JSON and HTML.
//! - [`pdf`]: the same document as a PDF, made in-process.
//! - [`dunning`]: the active / past_due / suspended rules, the ladder, card-expiry notices and
//!   the outbox of effects.
//! - [`collection`]: invoice and payment-method events into dunning, the daily sweep, and
//!   carrying out the effects (notices, license standing, cancellations).
//! - [`ports`]: the capabilities the services need and the records they exchange.
//! - [`dynamo`]: the billing-table adapter of every storage port (item layout documented there).
//! - [`memory`]: the in-memory fake of the storage ports.
//! - [`invoicing`]: the [`ports::Invoicing`] port on any [`crate::stripe::StripeInvoices`].
//! - [`service`]: ingest, plan, bill and billing-event services.
//! - [`dispatch`]: what each message and invocation means ([`service::Job`], usage, Stripe
//!   events) and the outcome counters.
//! - [`config`]: [`Config`], usage-billing's environment.
//!
//! # Ports and adapters
//! | port | adapters |
//! |---|---|
//! | `UsageStore`, `SubscriptionView`, `InvoiceStore`, `Credits`, `DunningStore` | `DynamoBilling`, `MemoryBilling` |
//! | `Invoicing`, `Collections` | `crate::stripe::StripeClient`, `crate::stripe::MemoryStripe` (one implementation for both) |
//! | `crate::storage::ObjectStore`, `crate::ledger::Ledger`, `crate::queue::QueueSender` | S3 / DynamoDB / SQS and their fakes |

pub mod aggregate;
pub mod collection;
pub mod config;
pub mod dispatch;
pub mod document;
pub mod dunning;
pub mod dynamo;
pub mod invoice;
pub mod invoicing;
pub mod memory;
pub mod money;
pub mod pdf;
pub mod period;
pub mod ports;
pub mod pricebook;
pub mod pricing;
pub mod service;
pub mod subscription;
pub mod usage;

pub use config::Config;
pub use money::{Currency, Money, Quantity, Rate};
pub use period::Period;
