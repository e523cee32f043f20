//! Licensing: signed, offline-verifiable licenses from Stripe purchases, renewals, seat
//! changes and cancellations (the domain of the `license-minting` function).
//!
//! A license is a Mattermost license file: `base64(JSON ‖ RSASSA-PKCS1-v1_5 SHA-512
//! signature)`, signed by an RSA-2048 key that lives in AWS KMS. Anyone holding the public
//! key (`licenses/public-key.pem`) can verify a license and the signed revocation list
//! (`licenses/revoked.json` + `.sig`) offline.
//!
//! # Layout
//!
//! - [`format`]: the license JSON (Mattermost field names, ms timestamps), the file encoding,
//!   license ids derived from the idempotency key.
//! - [`sku`]: the SKU table (short name -> display name, feature flags).
//! - [`signer`]: the signer port; [`KmsSigner`], a counting wrapper, and an in-process key for
//!   unit tests and benches (feature `test-signer`).
//! - [`verify`]: offline verification with one [`VerifyError`] per failure.
//! - [`keyset`]: the published key set (`licenses/keys.json`): every signing key with its
//!   validity, so licenses of rotated-out keys keep verifying.
//! - [`revocation`]: the signed revocation list.
//! - [`store`]: the store port; [`DynamoLicenseStore`] and [`MemoryLicenseStore`].
//! - [`subscription`]: what a Stripe subscription means for its license ([`SubscriptionState`]).
//! - [`service`]: [`LicenseService`], the minting rules.
//! - [`standing`]: suspension for non-payment and reinstatement, revocation after a refund or a
//!   lost dispute.
//! - [`admin`]: operator requests ([`AdminRequest`]: mint, revoke, list, verify, publish).
//! - [`config`]: [`Config`], license-minting's environment.
//!
//! # Ports and adapters
//! | port | adapters |
//! |---|---|
//! | [`LicenseSigner`] | [`KmsSigner`], [`CountingSigner`] (wrapper), `InProcessSigner` (tests) |
//! | [`LicenseStore`] | [`DynamoLicenseStore`], [`MemoryLicenseStore`] |
//! | [`crate::stripe::StripeReads`] | [`crate::stripe::StripeClient`], [`crate::stripe::MemoryStripe`] |
//! | [`crate::storage::ObjectStore`] | S3, in memory |
//!
//! # Rules
//!
//! For every Stripe event (duplicated, unordered) the service takes the subscription id from
//! it (`data.object.id` for `customer.subscription.*`, `data.object.subscription` for
//! invoices and checkout sessions), **re-fetches the subscription** and acts on its current
//! state, never on the event's copy:
//! - `active` / `trialing`: the current period must have one ACTIVE license for the current
//!   quantity and SKU. None yet -> mint. One for another quantity or SKU -> mint a license
//!   that `supersedes` it (the old one becomes SUPERSEDED, `superseded_by` the new one).
//!   `is_trial` follows `trialing`. `starts_at`/`expires_at` are the period's bounds; the
//!   verifier grants Mattermost's 10-day grace after `expires_at` ([`GRACE_PERIOD_MS`]), so a
//!   renewal paid late never locks a customer out, and the next period's license is minted
//!   when its invoice is paid.
//! - `canceled` / `incomplete_expired`: the subscription is marked *ended* in the store, then
//!   every license of the subscription that is not expired beyond grace is revoked (one still
//!   ISSUING too, without being activated), and the revocation list republished.
//! - `incomplete`, `past_due`, `unpaid`, `paused`: nothing now; the event that settles the
//!   payment (invoice paid, subscription deleted) decides.
//! - A period whose license an operator revoked is not minted again automatically, and a
//!   license minted while its predecessor was revoked for good (a refund, an operator, a
//!   cancellation racing the mint) is never activated: it is revoked alike.
//! - A superseded license (a seat or SKU change) is put on the revocation list when its
//!   successor is activated, in the same transaction, with reason `superseded` and an
//!   effective time a week later ([`SUPERSEDED_GRACE_MS`]; license-minting's
//!   `LICENSE_SUPERSEDED_GRACE_DAYS`, [`LicenseService::with_superseded_grace`]): the customer
//!   has that long to install the new file, then an offline verifier with the list refuses the
//!   old one (which would otherwise stay valid until its own expiry, with the old seat count).
//!   Revoking it later (a cancellation) replaces the entry with one effective at once.
//!
//! localstripe models plans (not prices) and sends `customer.subscription.created|deleted`
//! and `invoice.payment_succeeded` only; both shapes parse, and since the state is re-fetched
//! any of these events is enough.
//!
//! # Idempotency and the write protocol
//!
//! The idempotency key of a license is (subscription, period start, quantity, SKU, the
//! license it supersedes or none) — [`LicenseKey`]; the license id is derived from it, so a
//! retry or a duplicate that sees the same state names the same license and the same S3 key.
//! A license costs one KMS `Sign`; the public key is fetched once per cold start. (Duplicates
//! handled at the very same moment by different workers may each sign before one of them wins
//! the head; the losers' signatures are dropped, never written.)
//!
//! 1. Sign (KMS). A KMS failure is retryable and nothing has been written.
//! 2. `begin`: one DynamoDB transaction puts the license record with status ISSUING (holding
//!    the signed file itself) if it does not exist, and moves the period's *head* item from
//!    the previous license (or from nothing) to it — a compare-and-swap on a strongly
//!    consistent item, so two workers can never both mint for the same period state; the
//!    loser re-reads and finds the winner's license.
//! 3. Write the file to S3 (`licenses/{customer}/{license}.mattermost-license`, SSE).
//! 4. `activate`: one transaction ISSUING -> ACTIVE and predecessor ACTIVE -> SUPERSEDED,
//!    with `ConditionCheck`s in the same write: the subscription is not marked ended, the
//!    record is still its period's head, the customer is not suspended, and a predecessor
//!    that is not superseded here is one suspended for non-payment (a reinstatement), never
//!    one revoked for good. `begin` checks the ended mark too. So a mint racing a
//!    cancellation either commits before the mark (and the cancellation's sweep, which reads
//!    after writing it, revokes its license) or is refused; it never activates behind it.
//!
//! A cancelled transaction is a lost race only when a condition failed
//! (`ConditionalCheckFailed`); cancelled by a `TransactionConflict`, throttling or a capacity
//! limit it is a retryable error, so the message is redelivered, never acknowledged with the
//! work undone ([`crate::aws::dynamo::cancelled_by_condition`]).
//!
//! A crash or an S3 failure after step 2 leaves an ISSUING record with the exact signed
//! bytes; the next delivery (or any event of the subscription) finds it through the head,
//! rewrites the same bytes and activates it. So there is never a file without a record, a
//! record is ACTIVE only once its file exists, and an ISSUING record is never handed out.
//! Rewrites are byte-identical (the bytes come from the record), so concurrent finishers are
//! harmless.
//!
//! # Item layout (`LICENSES_TABLE`: pk/sk, gsi1, gsi2; all strings)
//!
//! | item            | pk                 | sk                  | gsi1pk / gsi1sk                                | gsi2pk / gsi2sk            |
//! |-----------------|--------------------|---------------------|------------------------------------------------|----------------------------|
//! | license         | `CUSTOMER#{cus}`   | `LICENSE#{id}`      | `SUB#{sub}` / `PERIOD#{start ms:013}#{issued ms:013}#{id}` | `LICENSE#{id}` / `LICENSE` |
//! | period head     | `SUB#{sub}`        | `TERM#{start ms:013}` | —                                            | —                          |
//! | revocation      | `REVOKED`          | `LICENSE#{id}`      | —                                              | —                          |
//! | ended mark      | `SUB#{sub}`        | `ENDED`             | —                                              | —                          |
//!
//! A customer's licenses are one consistent Query; a subscription's history is gsi1; a
//! license by id alone is gsi2 (then a consistent GetItem). License attributes: `license_id,
//! customer_id, subscription_id, period_start, period_end, quantity, sku, status
//! (ISSUING|ACTIVE|SUPERSEDED|REVOKED), supersedes, superseded_by, revoked_at,
//! revoked_reason, issued_at, starts_at, expires_at, is_trial, kid, file_key, file`.
//! The revocation items are what `licenses/revoked.json` is rebuilt from (one consistent
//! Query); publication re-reads after writing, so concurrent revocations are never lost.

pub mod admin;
pub mod config;
pub mod format;
pub mod keyset;
pub mod revocation;
pub mod service;
pub mod signer;
pub mod sku;
pub mod standing;
pub mod store;
pub mod subscription;
pub mod verify;

pub use admin::AdminRequest;
pub use config::Config;
pub use format::{Features, License, LicenseCustomer, LicenseId, LicenseKey, file_key};
pub use keyset::{
    KEY_SET_KEY, KeyEntry, KeySet, verify_license_with_keys, verify_revocation_list_with_keys,
};
pub use revocation::{
    REVOCATION_LIST_KEY, REVOCATION_SIGNATURE_KEY, RevocationList, RevocationReason,
    RevokedLicense, SUPERSEDED_GRACE_MS,
};
pub use service::{LicenseService, Outcome, PUBLIC_KEY_KEY, VerifyReport};
#[cfg(any(test, feature = "test-signer"))]
pub use signer::InProcessSigner;
pub use signer::{CountingSigner, KmsSigner, LicenseSigner, PublicKey};
pub use sku::Sku;
pub use store::{
    DynamoLicenseStore, LicenseRecord, LicenseStatus, LicenseStore, MemoryLicenseStore, TermHead,
};
pub use subscription::SubscriptionState;
pub use verify::{
    GRACE_PERIOD_MS, VerifyError, split_file, verify_license, verify_revocation_list,
};

#[cfg(test)]
mod tests;
