//! Leads: every sign-up normalised, enriched, scored, routed to the right owner and upserted
//! into the CRM once (the lead-enrichment function).
//!
//! # Layout
//!
//! - [`normalize`]: the [`Email`](normalize::Email) newtype, name splitting, country -> ISO
//!   3166-1 alpha-2 (bundled table `shared/data/countries.tsv`).
//! - [`input`]: queue message ([`EventMessage`](crate::queue::EventMessage)) -> [`Lead`](input::Lead)
//!   (portal `lead.signup` / `lead.contact_us`, Stripe `customer.created`); the lead id.
//! - [`domains`]: free-mail / disposable / corporate (bundled lists `shared/data/freemail.txt`,
//!   `shared/data/disposable.txt`, origins in their headers).
//! - [`enrichment`]: the provider port (HTTP, fixture, memory adapters), the per-domain cache
//!   port, and the [`Enricher`](enrichment::Enricher) that never fails a lead.
//! - [`rules`]: the facts leads are judged on and the conditions rules files use.
//! - [`scoring`]: fit + intent from `shared/data/scoring.json`, with reasons.
//! - [`routing`]: account owner by domain -> territory rules (`shared/data/territories.json`)
//!   -> weighted round-robin on an atomic counter.
//! - [`store`]: the LeadsTable adapter (lead records, subject index, enrichment cache,
//!   accounts, counters) and its in-memory twin.
//! - [`service`]: the [`LeadService`](service::LeadService) running one queue message through
//!   all of the above and the CRM port ([`crate::crm`]).
//! - [`config`]: [`Config`], lead-enrichment's environment.
//!
//! # Ports and adapters
//! | port | adapters |
//! |---|---|
//! | `store::LeadStore`, `routing::AccountDirectory`, `routing::SlotCounter`, `enrichment::EnrichmentCache` | `store::DynamoLeadsTable`, and `MemoryLeadStore` / `MemoryAccounts` / `MemoryCounter` / `MemoryCache` |
//! | `enrichment::EnrichmentProvider` | `HttpProvider`, `FixtureProvider`, `MemoryProvider` |
//! | `crate::crm::CrmPort` | `SalesforceCrm`, `SinkCrm`, `MemoryCrm` |
//! | `crate::ledger::Ledger` | `DynamoLedger`, `MemoryLedger` |
//!
//! # Personal data
//!
//! Lead personal data (email, names, phone, title) lives only in the LeadsTable lead record
//! (and in Salesforce when configured). It is found by subject through
//! `SUBJECT#<sha256(email)>` (see [`store`]), so the privacy process can erase it by e-mail.
//! Logs carry the lead id, never the e-mail; the built-in CRM sink keeps no contact data.

pub mod config;
pub mod domains;
pub mod enrichment;
pub mod input;
pub mod normalize;
pub mod routing;
pub mod rules;
pub mod scoring;
pub mod service;
pub mod store;

pub use config::Config;
