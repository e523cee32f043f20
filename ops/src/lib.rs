//! `blapi-ops`: what an operator on call needs, the same against the local stack and a
//! deployed one.
//!
//! - [`stack`]: which stack, and its resources' names (`.local/stack.json` or CloudFormation).
//! - [`dlq`]: every dead-letter queue's depth, oldest message and a redacted sample; redrive.
//! - [`replay`]: archived events fed again through the routing table.
//! - [`admin`]: `license mint|revoke|list`, `billing rerun`: the functions' admin actions;
//!   `archive seal` (the hourly seal by hand) and `stripe recover`.
//! - [`rotate`]: `license rotate-key`: the next signing key, published in the key set.
//!
//! Everything that writes has a dry run; nothing personal or secret is printed.

pub mod admin;
pub mod dlq;
pub mod replay;
pub mod rotate;
pub mod stack;
