//! # blapi-infra — the template outside AWS
//!
//! Runs `template.yaml` on one machine: provisions its tables, queues (with redrive), bucket,
//! signing key and secrets into the local emulator (moto server), and resolves each
//! function's `Environment.Variables` to the local names, so a function runs locally with
//! exactly the configuration the template gives it in AWS. There is no second list of
//! resources: what the template declares is what gets created.
//!
//! # Layout
//! - [`template`]: YAML with CloudFormation short forms -> long-form JSON; intrinsic functions.
//! - [`provision`]: creates the resources and returns a [`LocalStack`].
//! - [`testing`]: a provisioned stack per test process (random prefix), for integration tests.
//! - [`capacity`]: DynamoDB write units counted from the requests (benchmarks).
//! - [`idp`]: the local stand-in for the portal's identity provider (key, JWKS, tokens).
//! - [`ses`]: the SES sender identities verified in the emulator, and the e-mail it accepted
//!   ([`ses::sent_messages`]: how tests and the demo read what was sent).
//! - [`mapper`]: the local event-source mapper (SQS -> function, partial batch failures).
//! - `main.rs` (`blapi-local`): the CLI behind `make up`.

pub mod capacity;
pub mod idp;
pub mod mapper;
pub mod provision;
pub mod ses;
pub mod template;
pub mod testing;

pub use provision::{
    LocalStack, ProvisionOptions, default_endpoint, provision, repo_root, sdk_config,
};
