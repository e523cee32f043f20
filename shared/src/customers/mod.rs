//! Customers: every Stripe purchase becomes one linked customer in the CRM (the customer-sync
//! function): an Account per Stripe customer (owner, lifecycle status, license, last invoice,
//! refund/dispute flags), a Contact for its buyer (a lead they came in as is converted), an
//! Opportunity per subscription term (won, open during a trial, the renewal lost on
//! cancellation), and the account directory that routes later sign-ups of the same company to
//! the account's owner.
//!
//! # Layout
//! - [`events`]: a queue message (Stripe webhook or internal event) -> what to do.
//! - [`state`]: what sync remembers per customer; [`state::CustomerStore`] with
//!   [`state::DynamoCustomers`] and [`state::MemoryCustomers`].
//! - [`service`]: [`service::CustomerSync`], the rules.
//! - [`config`]: [`Config`], customer-sync's environment.
//!
//! # Ports and adapters
//! | port | adapters |
//! |---|---|
//! | `state::CustomerStore` | `DynamoCustomers` (CustomersTable), `MemoryCustomers` |
//! | `crate::stripe::StripeReads`, `crate::stripe::StripeInvoices` | `StripeClient`, `MemoryStripe` |
//! | `crate::crm::CrmPort` | `SalesforceCrm` (Composite), `SinkCrm`, `MemoryCrm` |
//! | `crate::leads::routing::AccountDirectory`, `SlotCounter`, `crate::leads::store::LeadStore` | `DynamoLeadsTable`, memory fakes |
//!
//! Customer sync shares lead routing's rules (territories, round-robin counters, the account
//! directory, the free-mail list): one set of rules decides who owns a company, whether it
//! came in as a lead or as a buyer. It is the one domain that uses another (`leads`).
//!
//! # Personal data
//! The customer state holds none. The buyer's e-mail and name go to the CRM Contact (in
//! Salesforce; the built-in sink keeps the contact without them); the contact's key is a hash
//! of the e-mail. An individual buyer's account is named after them.

pub mod config;
pub mod events;
pub mod service;
pub mod state;

pub use config::Config;
pub use service::{CustomerSync, Outcome, Ports};

#[cfg(test)]
mod tests;
