//! The license-minting function as a library, so tests and benches can drive its handler.
//!
//! # Layout
//! - [`handler`]: the [`handler::App`] built once per cold start, and the translation of SQS
//!   batches and admin requests into calls of [`blapi::licensing::LicenseService`].

pub mod handler;
