//! usage-billing: metered usage in, monthly invoices out, exactly once.
//!
//! The Lambda's translation layer ([`handler`]); every rule lives in `blapi::billing`.

pub mod handler;
