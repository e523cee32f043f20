//! The customer portal's back end (`functions/portal-api`): what a signed-in customer may see
//! and do — licenses, invoices, usage to date, self-service purchase and seat changes, privacy
//! requests — every resource scoped to the customer of the caller's token.
//!
//! - [`auth`]: the portal's bearer JWT verified against the identity provider's JWKS (cached,
//!   refetched on an unknown `kid`), and the [`auth::Principal`] it speaks for.
//! - [`jwt_crypto`]: the signature checks behind it, on ring (jsonwebtoken's `CryptoProvider`).
//! - [`problem`]: every error as an RFC 9457 problem document with a stable `type`.
//! - [`http`]: the request and response shapes and the route table (404/405).
//! - [`api`]: [`api::PortalApi`], one answer per request, scoped to the caller's customer;
//!   mutating requests once per `Idempotency-Key`.
//! - [`commerce`]: usage to date, self-service purchase, seat changes, privacy requests.
//! - `testkit` (feature `test-issuer`, and this crate's tests): an identity provider in the
//!   process, for tests and benches.

pub mod api;
pub mod auth;
pub mod commerce;
pub mod config;
pub mod http;
pub mod jwt_crypto;
pub mod problem;
#[cfg(any(test, feature = "test-issuer"))]
pub mod testkit;

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod tests;
