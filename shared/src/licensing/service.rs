//! The minting service: Stripe events and admin requests in, licenses and revocations out.
//! The rules and the write protocol are described in the [module doc](super).

use super::format::{License, LicenseCustomer, LicenseId, LicenseKey, encode_file, file_key};
use super::keyset::{
    KEY_SET_KEY, KeySet, verify_license_with_keys, verify_revocation_list_with_keys,
};
use super::revocation::{
    REVOCATION_LIST_KEY, REVOCATION_SIGNATURE_KEY, RevocationList, RevocationReason,
    SUPERSEDED_GRACE_MS,
};
use super::signer::{LicenseSigner, PublicKey};
use super::sku::Sku;
use super::store::{LicenseRecord, LicenseStatus, LicenseStore};
use super::subscription::{Standing, SubscriptionState};
use super::verify::{GRACE_PERIOD_MS, VerifyError};
use crate::error::{Error, Result};
use crate::events::{Internal, LicenseChanged};
use crate::notice::{Kind, Notification};
use crate::queue::{EventMessage, QueueSender};
use crate::storage::ObjectStore;
use crate::stripe::{StripeReads, subscription_of};
use base64::Engine;
use serde::Serialize;
use std::sync::Arc;

/// The S3 key of the current public key.
pub const PUBLIC_KEY_KEY: &str = "licenses/public-key.pem";

/// How often the compare-and-swap loops re-read before giving up (retryably).
const ROUNDS: usize = 4;

/// What handling an event or request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A new license was issued (superseding another one for the same period, maybe).
    Minted {
        license_id: LicenseId,
        customer_id: String,
        subscription_id: String,
        supersedes: Option<LicenseId>,
    },
    /// The period already has its license: nothing to do.
    Existing { license_id: LicenseId },
    /// These licenses are now revoked (empty: they already were).
    Revoked { license_ids: Vec<LicenseId> },
    /// Nothing to do, and why.
    Skipped { reason: String },
    /// The customer's standing was applied: these licenses were suspended (`suspended`), or
    /// these fresh ones issued for the rest of their terms (reinstated).
    Standing {
        suspended: bool,
        license_ids: Vec<LicenseId>,
    },
}

/// The answer of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub valid: bool,
    /// `None` when valid; otherwise [`VerifyError::code`].
    pub reason: Option<&'static str>,
    pub message: String,
    pub license: Option<License>,
    /// The record's state, when the license is known here (e.g. `SUPERSEDED`).
    pub status: Option<&'static str>,
    pub kid: String,
    pub public_key_pem: String,
}

/// Milliseconds since the epoch (injectable for tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The minting service. Build it once per cold start: it caches the public key.
pub struct LicenseService {
    stripe: Arc<dyn StripeReads>,
    signer: Arc<dyn LicenseSigner>,
    store: Arc<dyn LicenseStore>,
    files: Arc<dyn ObjectStore>,
    clock: Clock,
    /// The signing key's public half, cached; refreshed when a signature shows that the
    /// signing alias now points at another key (a rotation while this instance was warm).
    public_key: tokio::sync::RwLock<Option<PublicKey>>,
    /// The `kid` whose PEM and key-set entry this instance has published.
    key_published: tokio::sync::Mutex<Option<String>>,
    /// Where license changes are announced (customer sync), if anywhere.
    announce: Option<(Arc<dyn QueueSender>, String)>,
    /// Where the product's provisioner is told to suspend or resume workspaces, if anywhere.
    provisioning: Option<(Arc<dyn QueueSender>, String)>,
    /// Where customer notices go (license issued), if anywhere.
    notifications: Option<(Arc<dyn QueueSender>, String)>,
    /// How long a superseded license stays valid after its successor is activated, before
    /// the revocation list revokes it offline too.
    superseded_grace_ms: i64,
}

impl std::fmt::Debug for LicenseService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LicenseService")
            .field("bucket", &self.files.bucket())
            .finish()
    }
}

impl LicenseService {
    pub fn new(
        stripe: Arc<dyn StripeReads>,
        signer: Arc<dyn LicenseSigner>,
        store: Arc<dyn LicenseStore>,
        files: Arc<dyn ObjectStore>,
    ) -> Self {
        Self {
            stripe,
            signer,
            store,
            files,
            clock: Arc::new(|| chrono::Utc::now().timestamp_millis()),
            public_key: tokio::sync::RwLock::new(None),
            key_published: tokio::sync::Mutex::new(None),
            announce: None,
            provisioning: None,
            notifications: None,
            superseded_grace_ms: SUPERSEDED_GRACE_MS,
        }
    }

    /// How long a superseded license stays valid once its successor is active (default
    /// [`SUPERSEDED_GRACE_MS`], a week): the customer's time to install the new file. Its
    /// revocation entry takes effect then.
    pub fn with_superseded_grace(mut self, grace: std::time::Duration) -> Self {
        self.superseded_grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Tells the product's provisioner (queue `queue_url`) to suspend or resume a customer's
    /// workspaces when their standing changes.
    pub fn with_provisioning(mut self, queue: Arc<dyn QueueSender>, queue_url: String) -> Self {
        self.provisioning = Some((queue, queue_url));
        self
    }

    /// Sends the customer a notice (with a link to the file) for every license issued.
    pub fn with_notifications(mut self, queue: Arc<dyn QueueSender>, queue_url: String) -> Self {
        self.notifications = Some((queue, queue_url));
        self
    }

    pub(crate) fn store(&self) -> &dyn LicenseStore {
        self.store.as_ref()
    }

    pub(crate) fn stripe(&self) -> &dyn StripeReads {
        self.stripe.as_ref()
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.now()
    }

    /// Writes a recorded license's file (the exact recorded bytes) without activating it:
    /// a license revoked while still issuing keeps the rule that a record past ISSUING has
    /// its file.
    pub(crate) async fn store_file(&self, record: &LicenseRecord) -> Result<()> {
        self.files
            .put(
                &record.file_key,
                record.file.clone().into_bytes(),
                "text/plain",
            )
            .await
    }

    pub(crate) async fn invoice_subscription(&self, invoice: &str) -> Result<Option<String>> {
        self.stripe.invoice_subscription(invoice).await
    }

    /// Sends a workspace change to the provisioner (nothing when none is configured).
    pub(crate) async fn tell_provisioner(&self, change: Internal) -> Result<()> {
        let Some((queue, url)) = &self.provisioning else {
            tracing::warn!(
                event_type = change.event_type(),
                "no provisioning queue configured: workspace change not sent"
            );
            return Ok(());
        };
        let body = serde_json::to_string(&change.message(chrono::Utc::now()))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        queue.send(url, body).await
    }

    /// The customer's notice of a license issued (id `license:{id}:issued`: sent once).
    async fn notify_issued(&self, rec: &LicenseRecord) -> Result<()> {
        let Some((queue, url)) = &self.notifications else {
            return Ok(());
        };
        Notification::to_customer(
            format!("license:{}:issued", rec.license_id),
            Kind::LicenseIssued,
            &rec.customer_id,
        )
        .with("license_id", rec.license_id.as_str())
        .with("sku", &rec.sku)
        .with("seats", rec.quantity)
        .with("starts_at", rec.starts_at)
        .with("expires_at", rec.expires_at)
        .with("is_trial", rec.is_trial)
        .with("file_key", &rec.file_key)
        .send(queue.as_ref(), url)
        .await
    }

    /// Announces every license issued, superseded or revoked on `queue_url` (customer sync's
    /// queue) as an internal event ([`crate::events`]). A license found already issued is
    /// announced again: the send of an earlier attempt may be what failed.
    pub fn with_announcements(mut self, queue: Arc<dyn QueueSender>, queue_url: String) -> Self {
        self.announce = Some((queue, queue_url));
        self
    }

    /// Sends the internal events an outcome implies (none without announcements).
    pub async fn announce(&self, outcome: &Outcome) -> Result<()> {
        if let Outcome::Minted { license_id, .. } | Outcome::Existing { license_id } = outcome
            && let Some(rec) = self.store.find(license_id).await?
        {
            self.notify_issued(&rec).await?;
        }
        if let Outcome::Standing {
            suspended: false,
            license_ids,
        } = outcome
        {
            for id in license_ids {
                if let Some(rec) = self.store.find(id).await? {
                    self.notify_issued(&rec).await?;
                }
            }
        }
        let Some((queue, url)) = &self.announce else {
            return Ok(());
        };
        let mut events = Vec::new();
        let mut add = |rec: LicenseRecord, kind: fn(LicenseChanged) -> Internal| {
            events.push(kind(LicenseChanged {
                customer: rec.customer_id,
                subscription: rec.subscription_id,
                license_id: rec.license_id.to_string(),
                kid: rec.kid,
                seats: rec.quantity,
                sku: rec.sku,
                expires_at: rec.expires_at,
                file_key: rec.file_key,
            }))
        };
        match outcome {
            Outcome::Minted {
                license_id,
                supersedes,
                ..
            } => {
                if let Some(rec) = self.store.find(license_id).await? {
                    add(rec, Internal::LicenseIssued);
                }
                if let Some(old) = supersedes
                    && let Some(rec) = self.store.find(old).await?
                {
                    add(rec, Internal::LicenseSuperseded);
                }
            }
            Outcome::Existing { license_id } => {
                if let Some(rec) = self.store.find(license_id).await? {
                    add(rec, Internal::LicenseIssued);
                }
            }
            Outcome::Revoked { license_ids }
            | Outcome::Standing {
                suspended: true,
                license_ids,
            } => {
                for id in license_ids {
                    if let Some(rec) = self.store.find(id).await? {
                        add(rec, Internal::LicenseRevoked);
                    }
                }
            }
            Outcome::Standing {
                suspended: false,
                license_ids,
            } => {
                for id in license_ids {
                    if let Some(rec) = self.store.find(id).await? {
                        add(rec, Internal::LicenseIssued);
                    }
                }
            }
            Outcome::Skipped { .. } => {}
        }
        let now = chrono::Utc::now();
        let bodies = events
            .iter()
            .map(|e| serde_json::to_string(&e.message(now)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        queue.send_all(url, bodies).await
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// The signing key's public half: one `GetPublicKey` per cold start (and per rotation
    /// seen), then cached.
    pub async fn public_key(&self) -> Result<PublicKey> {
        if let Some(pk) = self.public_key.read().await.as_ref() {
            return Ok(pk.clone());
        }
        self.refresh_public_key().await
    }

    /// Reads the signing key's public half again (after a rotation).
    pub(crate) async fn refresh_public_key(&self) -> Result<PublicKey> {
        let pk = self.signer.public_key().await?;
        *self.public_key.write().await = Some(pk.clone());
        Ok(pk)
    }

    /// Signs `build(key)` and returns (document, signature, key). The document names its key,
    /// so when the signature is not the cached key's (the alias was rotated since), the key
    /// is read again and the document rebuilt and signed again. With `zero_tail_returned`, a
    /// signature ending in a zero byte is returned unchecked: the caller signs again anyway.
    async fn sign_named(
        &self,
        zero_tail_returned: bool,
        mut build: impl FnMut(&PublicKey) -> Result<Vec<u8>>,
    ) -> Result<(Vec<u8>, Vec<u8>, PublicKey)> {
        let mut pk = self.public_key().await?;
        for _ in 0..3 {
            let doc = build(&pk)?;
            let signature = self.signer.sign(&doc).await?;
            if (zero_tail_returned && signature.last() == Some(&0))
                || super::verify::signature_valid(&pk, &doc, &signature)
            {
                return Ok((doc, signature, pk));
            }
            tracing::info!(kid = pk.kid(), "the signing key changed; reading it again");
            pk = self.refresh_public_key().await?;
        }
        Err(Error::dependency(
            "kms",
            true,
            "signatures do not match the signing key's public key",
        ))
    }

    /// Handles one queued webhook event: finds its subscription, re-fetches it from Stripe and
    /// acts on its current state.
    pub async fn handle_event(&self, msg: &EventMessage) -> Result<Outcome> {
        if let Some(internal) = Internal::from_message(msg) {
            let outcome = match internal {
                Ok(Internal::CustomerStanding(s)) => self.apply_standing(&s).await?,
                Ok(other) => {
                    return Ok(Outcome::Skipped {
                        reason: format!("{} is not licensing's", other.event_type()),
                    });
                }
                Err(e) => {
                    return Err(Error::Invalid(format!(
                        "internal event {} is malformed: {e}",
                        msg.id
                    )));
                }
            };
            self.announce(&outcome).await?;
            tracing::info!(event_id = %msg.id, event_type = %msg.event_type, outcome = ?outcome, "standing applied");
            return Ok(outcome);
        }
        if msg.source == "stripe"
            && let Some(outcome) = self.handle_charge_event(msg).await
        {
            let outcome = outcome?;
            self.announce(&outcome).await?;
            return Ok(outcome);
        }
        if msg.source != "stripe" {
            return Ok(Outcome::Skipped {
                reason: format!("source {} is not licensing's", msg.source),
            });
        }
        let Some(sub_id) = subscription_of(&msg.event) else {
            return Ok(Outcome::Skipped {
                reason: format!("{} concerns no subscription", msg.event_type),
            });
        };
        let mut outcome = self.reconcile(&sub_id).await;
        if let Ok(o) = &outcome
            && let Err(e) = self.announce(o).await
        {
            outcome = Err(e);
        }
        match &outcome {
            Ok(o) => {
                tracing::info!(event_id = %msg.id, event_type = %msg.event_type, subscription_id = %sub_id, outcome = ?o, "event handled")
            }
            Err(e) => {
                tracing::warn!(event_id = %msg.id, event_type = %msg.event_type, subscription_id = %sub_id, error = %e.chain(), retryable = e.is_retryable(), "event failed")
            }
        }
        outcome
    }

    /// Brings the licenses of one subscription in line with its current state on Stripe.
    pub async fn reconcile(&self, subscription_id: &str) -> Result<Outcome> {
        let sub = self.stripe.subscription(subscription_id).await?;
        let state = SubscriptionState::from_subscription(&sub)?;
        match state.standing {
            Standing::Licensed { trial } => self.ensure_license(&state, trial).await,
            Standing::Ended => self.cancel_subscription(&state.id).await,
            Standing::Pending => Ok(Outcome::Skipped {
                reason: format!("subscription is {}", state.status),
            }),
        }
    }

    async fn resolve_sku(&self, state: &SubscriptionState) -> Result<Sku> {
        let item = state
            .item
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("subscription {} has no items", state.id)))?;
        if let Some(sku) = item.sku.as_deref().or(item.product_sku.as_deref()) {
            return Sku::lookup(sku);
        }
        let Some(product_id) = item.product_id.as_deref() else {
            return Err(Error::Invalid(format!(
                "subscription {}: its price names no SKU and no product",
                state.id
            )));
        };
        let product = self.stripe.product(product_id).await?;
        match product.metadata.get("sku") {
            Some(sku) => Sku::lookup(sku),
            None => Err(Error::Invalid(format!(
                "subscription {}: neither its price nor product {product_id} has metadata sku",
                state.id
            ))),
        }
    }

    async fn ensure_license(&self, state: &SubscriptionState, trial: bool) -> Result<Outcome> {
        let (Some(period), Some(item)) = (state.period, state.item.as_ref()) else {
            return Err(Error::Invalid(format!(
                "subscription {} has no period or item",
                state.id
            )));
        };
        let sku = self.resolve_sku(state).await?;
        let quantity = item.quantity;
        for _ in 0..ROUNDS {
            let current = match self.store.head(&state.id, period.start_ms).await? {
                None => None,
                Some(head) => Some(
                    self.store
                        .get(&head.customer_id, &head.license_id)
                        .await?
                        .ok_or_else(|| {
                            Error::dependency(
                                "licenses",
                                true,
                                format!("head points to missing license {}", head.license_id),
                            )
                        })?,
                ),
            };
            if let Some(cur) = &current {
                match cur.status {
                    // A worker died (or is busy) between the record and the file: finish its
                    // work with the recorded bytes, then look again.
                    LicenseStatus::Issuing => {
                        if self.finish(cur).await? {
                            continue;
                        }
                        return self.refused(cur).await;
                    }
                    // Suspended for non-payment and paid since: a fresh license replaces it.
                    LicenseStatus::Revoked
                        if cur.revoked_reason == Some(RevocationReason::Suspended)
                            && !self.suspended(&state.customer_id).await? => {}
                    LicenseStatus::Revoked => {
                        return Ok(Outcome::Skipped {
                            reason: format!(
                                "license {} of this period was revoked",
                                cur.license_id
                            ),
                        });
                    }
                    LicenseStatus::Active
                        if cur.quantity == quantity && cur.sku == sku.short_name =>
                    {
                        return Ok(Outcome::Existing {
                            license_id: cur.license_id.clone(),
                        });
                    }
                    _ => {}
                }
            }
            if self.suspended(&state.customer_id).await? {
                return Ok(Outcome::Skipped {
                    reason: format!(
                        "customer {} is suspended for non-payment",
                        state.customer_id
                    ),
                });
            }
            // The license this one replaces: an active one (seat or SKU change), or one
            // suspended for non-payment (reinstatement).
            let previous = current.filter(|c| {
                c.status == LicenseStatus::Active
                    || c.revoked_reason == Some(RevocationReason::Suspended)
            });
            let record = self
                .issue(
                    state,
                    period.start_ms,
                    period.end_ms,
                    quantity,
                    sku,
                    trial,
                    previous.as_ref(),
                )
                .await?;
            if !self
                .store
                .begin(&record, previous.as_ref().map(|p| &p.license_id))
                .await?
            {
                if self.store.ended(&state.id).await? {
                    // The store refused it: the subscription ended since it was read.
                    return self.cancel_subscription(&state.id).await;
                }
                continue; // someone else moved the head: look again
            }
            // The subscription may have been cancelled since it was read, and that
            // cancellation may have been handled before this license was recorded (it then
            // found nothing to revoke). Now that the license is recorded, read again: a
            // cancellation handled from here on sees it, and one that came before is seen here.
            let fresh = self.stripe.subscription(&state.id).await?;
            if SubscriptionState::from_subscription(&fresh)?.standing == Standing::Ended {
                tracing::warn!(subscription_id = %state.id, license_id = %record.license_id, "subscription cancelled while its license was minted; revoking it");
                return self.cancel_subscription(&state.id).await;
            }
            if !self.finish(&record).await? {
                return self.refused(&record).await;
            }
            tracing::info!(
                license_id = %record.license_id,
                subscription_id = %record.subscription_id,
                customer_id = %record.customer_id,
                seats = record.quantity,
                sku = %record.sku,
                "license minted"
            );
            return Ok(Outcome::Minted {
                license_id: record.license_id,
                customer_id: record.customer_id,
                subscription_id: record.subscription_id,
                supersedes: record.supersedes,
            });
        }
        Err(Error::InProgress(format!(
            "licenses of subscription {} are contended",
            state.id
        )))
    }

    /// Builds and signs a license (one KMS round trip). Writes nothing.
    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        state: &SubscriptionState,
        start_ms: i64,
        end_ms: i64,
        quantity: u32,
        sku: Sku,
        trial: bool,
        previous: Option<&LicenseRecord>,
    ) -> Result<LicenseRecord> {
        let key = LicenseKey {
            subscription_id: state.id.clone(),
            period_start_ms: start_ms,
            quantity,
            sku: sku.short_name.to_owned(),
            supersedes: previous.map(|p| p.license_id.clone()),
        };
        let license_id = key.license_id();
        let customer = self.stripe.customer(&state.customer_id).await?;
        let kid = self.public_key().await?.kid().to_owned();
        let mut license = License {
            id: license_id.clone(),
            issued_at: self.now(),
            starts_at: start_ms,
            expires_at: end_ms,
            customer: LicenseCustomer {
                id: state.customer_id.clone(),
                name: customer.name.clone().unwrap_or_default(),
                email: customer.email.clone().unwrap_or_default(),
                company: customer.company(),
            },
            features: sku.features(quantity),
            sku_name: sku.name.to_owned(),
            sku_short_name: sku.short_name.to_owned(),
            is_trial: trial,
            is_gov_sku: false,
            is_seat_count_enforced: sku.seat_count_enforced,
            extra_users: 0,
            signup_jwt: None,
            kid,
            subscription_id: state.id.clone(),
            supersedes: key.supersedes.clone(),
        };
        let (json, signature) = self.sign_license(&mut license).await?;
        let issued_at = license.issued_at;
        let kid = license.kid.clone();
        Ok(LicenseRecord {
            file_key: file_key(&state.customer_id, &license_id),
            file: encode_file(&json, &signature),
            license_id,
            customer_id: state.customer_id.clone(),
            subscription_id: state.id.clone(),
            period_start_ms: start_ms,
            period_end_ms: end_ms,
            quantity,
            sku: sku.short_name.to_owned(),
            status: LicenseStatus::Issuing,
            supersedes: key.supersedes,
            superseded_by: None,
            revoked_at: None,
            revoked_reason: None,
            issued_at,
            starts_at: start_ms,
            expires_at: end_ms,
            is_trial: trial,
            kid,
        })
    }

    /// Signs the license JSON. Mattermost strips trailing zero bytes from a decoded license
    /// file before it splits off the 256-byte signature (and so does [`super::verify`], to
    /// accept exactly what Mattermost accepts), so a signature that ends in `0x00` would make
    /// the file unverifiable. Such a license (1 in 256) is signed again with `issued_at` one
    /// millisecond later: a second KMS `Sign`, and a file that verifies everywhere.
    async fn sign_license(&self, license: &mut License) -> Result<(Vec<u8>, Vec<u8>)> {
        for _ in 0..8 {
            let (json, signature, pk) = self
                .sign_named(true, |pk| {
                    license.kid = pk.kid().to_owned();
                    license.to_json()
                })
                .await?;
            license.kid = pk.kid().to_owned();
            if signature.last() != Some(&0) {
                return Ok((json, signature));
            }
            tracing::info!(license_id = %license.id, "signature ends in a zero byte; signing again");
            license.issued_at += 1;
        }
        Err(Error::Invalid(format!(
            "license {}: every signature ended in a zero byte",
            license.id
        )))
    }

    /// Writes the recorded file and activates the record (superseding its predecessor).
    /// Safe to run twice, concurrently or after a crash: it writes the same bytes and the
    /// activation is conditional. `true`: the record is ACTIVE (activated here or by someone
    /// else). `false`: the store refused to activate it — the subscription ended, the
    /// predecessor was revoked, the customer is suspended or the head moved — and it is
    /// not active ([`Self::refused`] says what follows).
    async fn finish(&self, record: &LicenseRecord) -> Result<bool> {
        self.publish_public_key().await?;
        self.store_file(record).await?;
        let previous = match &record.supersedes {
            Some(prev) => self
                .store
                .get(&record.customer_id, prev)
                .await?
                .filter(|p| p.status == LicenseStatus::Active),
            None => None,
        };
        let effective = self.now().saturating_add(self.superseded_grace_ms);
        if self
            .store
            .activate(record, previous.as_ref(), effective)
            .await?
        {
            if previous.is_some() {
                // The superseded license is listed now, effective after its grace.
                self.publish_revocations().await?;
            }
            return Ok(true);
        }
        // Someone else activated it, or the state moved (a revocation, a cancellation, a
        // suspension): never activated over that.
        Ok(self
            .store
            .get(&record.customer_id, &record.license_id)
            .await?
            .is_some_and(|r| r.status == LicenseStatus::Active))
    }

    /// What follows when the store refused to activate `record`: the subscription ended
    /// (its licenses are revoked), the period's license was revoked for good while `record`
    /// was minted (`record` is revoked alike: the period stays revoked), the customer is
    /// suspended (it waits for the payment), or the state is moving (retry).
    async fn refused(&self, record: &LicenseRecord) -> Result<Outcome> {
        let sub = &record.subscription_id;
        if self.store.ended(sub).await? {
            tracing::warn!(subscription_id = %sub, license_id = %record.license_id, "subscription ended while its license was minted; revoking");
            return self.cancel_subscription(sub).await;
        }
        let predecessor = match &record.supersedes {
            Some(prev) => self.store.get(&record.customer_id, prev).await?,
            None => None,
        };
        if let Some(reason) = predecessor
            .filter(|p| p.status == LicenseStatus::Revoked)
            .and_then(|p| p.revoked_reason)
            .filter(|r| *r != RevocationReason::Suspended)
        {
            tracing::warn!(subscription_id = %sub, license_id = %record.license_id, reason = %reason, "the license it replaces was revoked meanwhile; revoking it too");
            let changed = self.store.revoke(record, reason, self.now()).await?;
            self.publish_revocations().await?;
            return Ok(Outcome::Revoked {
                license_ids: if changed {
                    vec![record.license_id.clone()]
                } else {
                    vec![]
                },
            });
        }
        if self.suspended(&record.customer_id).await? {
            return Ok(Outcome::Skipped {
                reason: format!(
                    "customer {} is suspended for non-payment",
                    record.customer_id
                ),
            });
        }
        Err(Error::InProgress(format!(
            "license {} is being activated",
            record.license_id
        )))
    }

    /// Publishes `licenses/public-key.pem`, `licenses/keys/{kid}.pem` (kept across
    /// rotations) and the key's entry in the key set `licenses/keys.json`, once per cold start
    /// and signing key, before the first file it signs.
    pub async fn publish_public_key(&self) -> Result<()> {
        let pk = self.public_key().await?;
        let mut published = self.key_published.lock().await;
        if published.as_deref() == Some(pk.kid()) {
            return Ok(());
        }
        let pem = pk.to_pem()?;
        self.files
            .put(
                &format!("licenses/keys/{}.pem", pk.kid()),
                pem.clone().into_bytes(),
                "application/x-pem-file",
            )
            .await?;
        self.files
            .put(PUBLIC_KEY_KEY, pem.into_bytes(), "application/x-pem-file")
            .await?;
        let mut set = self.key_set().await?;
        if set.find(pk.kid()).is_none() {
            // The first key of a deployment has signed since it was created; a key taking
            // over outside `blapi-ops license rotate-key` (which adds it first) does from now.
            let since = if set.keys.is_empty() { 0 } else { self.now() };
            set.add(&pk, since)?;
            self.files
                .put(KEY_SET_KEY, set.to_json()?, "application/json")
                .await?;
        }
        *published = Some(pk.kid().to_owned());
        Ok(())
    }

    /// The published key set (empty when none was published yet).
    pub async fn key_set(&self) -> Result<KeySet> {
        match self.files.get(KEY_SET_KEY).await? {
            Some(bytes) => KeySet::from_json(&bytes),
            None => Ok(KeySet::default()),
        }
    }

    /// The key set to verify with: the published one, or the current key alone.
    async fn verifying_keys(&self) -> Result<KeySet> {
        let mut set = self.key_set().await?;
        if set.keys.is_empty() {
            set.add(&self.public_key().await?, 0)?;
        }
        Ok(set)
    }

    /// The subscription ended (cancelled for good): marks it ended in the store first, so no
    /// license of it is recorded or activated from then on (the check is inside those
    /// writes), then revokes every license it has.
    pub async fn cancel_subscription(&self, subscription_id: &str) -> Result<Outcome> {
        self.store
            .end_subscription(subscription_id, self.now())
            .await?;
        self.revoke_subscription(subscription_id, RevocationReason::SubscriptionCanceled)
            .await
    }

    /// Revokes every license of a subscription that is still valid (a license still issuing
    /// is revoked without being activated), then republishes the revocation list.
    pub async fn revoke_subscription(
        &self,
        subscription_id: &str,
        reason: RevocationReason,
    ) -> Result<Outcome> {
        let mut candidates: Vec<LicenseRecord> = Vec::new();
        for head in self.store.heads(subscription_id).await? {
            if let Some(r) = self.store.get(&head.customer_id, &head.license_id).await? {
                candidates.push(r);
            }
        }
        // The heads' predecessors, read consistently (the index below may lag behind).
        for prev in candidates
            .iter()
            .filter_map(|c| c.supersedes.clone().map(|p| (c.customer_id.clone(), p)))
            .collect::<Vec<_>>()
        {
            if let Some(r) = self.store.get(&prev.0, &prev.1).await? {
                candidates.push(r);
            }
        }
        for r in self.store.by_subscription(subscription_id).await? {
            candidates.push(r);
        }
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|c| seen.insert(c.license_id.clone()));
        let now = self.now();
        let mut revoked = Vec::new();
        for rec in candidates {
            if rec.expires_at.saturating_add(GRACE_PERIOD_MS) < now {
                continue; // expired for good: no need to list it
            }
            if rec.status == LicenseStatus::Issuing {
                self.store_file(&rec).await?;
            }
            if self.store.revoke(&rec, reason, now).await? {
                tracing::info!(license_id = %rec.license_id, subscription_id = %subscription_id, reason = %reason, "license revoked");
                revoked.push(rec.license_id);
            }
        }
        self.publish_revocations().await?;
        Ok(Outcome::Revoked {
            license_ids: revoked,
        })
    }

    /// Revokes one license (admin).
    pub async fn revoke_license(
        &self,
        license_id: &LicenseId,
        reason: RevocationReason,
    ) -> Result<Outcome> {
        let rec = self
            .store
            .find(license_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("license {license_id}")))?;
        if rec.status == LicenseStatus::Issuing {
            // Finished first where the store allows it, so its predecessor is superseded
            // (listed); refused (the state moved), it is revoked as it is.
            self.finish(&rec).await?;
        }
        let changed = self.store.revoke(&rec, reason, self.now()).await?;
        self.publish_revocations().await?;
        Ok(Outcome::Revoked {
            license_ids: if changed {
                vec![rec.license_id]
            } else {
                vec![]
            },
        })
    }

    /// The published revocation list, verified; `None` when none was published yet.
    pub async fn published_revocations(&self) -> Result<Option<RevocationList>> {
        let Some(json) = self.files.get(REVOCATION_LIST_KEY).await? else {
            return Ok(None);
        };
        let Some(sig) = self.files.get(REVOCATION_SIGNATURE_KEY).await? else {
            return Ok(None);
        };
        let keys = self.verifying_keys().await?;
        match verify_revocation_list_with_keys(&json, &String::from_utf8_lossy(&sig), &keys) {
            Ok(list) => Ok(Some(list)),
            // Half-published (crash between the two writes) or signed by an older key.
            Err(e) => {
                tracing::warn!(
                    reason = e.code(),
                    "published revocation list does not verify; it will be republished"
                );
                Ok(None)
            }
        }
    }

    /// Makes `licenses/revoked.json` (+ `.sig`) say what the table says. No-op when it
    /// already does; re-checks after writing so a concurrent revocation is never lost.
    pub async fn publish_revocations(&self) -> Result<bool> {
        self.publish_public_key().await?;
        let mut wrote = false;
        for _ in 0..ROUNDS {
            let entries = self.store.revocations().await?;
            let kid = self.public_key().await?.kid().to_owned();
            if let Some(current) = self.published_revocations().await? {
                // Same entries, signed by the current key: nothing to do.
                if current.same_entries(&entries) && current.kid == kid {
                    return Ok(wrote);
                }
            }
            let now = self.now();
            let (json, sig, _) = self
                .sign_named(false, |pk| {
                    serde_json::to_vec(&RevocationList::new(pk.kid(), now, entries.clone()))
                        .map_err(|e| Error::Invalid(format!("revocation list: {e}")))
                })
                .await?;
            let count = entries.len();
            let sig_b64 = base64::engine::general_purpose::STANDARD.encode(sig);
            self.files
                .put(REVOCATION_LIST_KEY, json, "application/json")
                .await?;
            self.files
                .put(REVOCATION_SIGNATURE_KEY, sig_b64.into_bytes(), "text/plain")
                .await?;
            wrote = true;
            tracing::info!(entries = count, "revocation list published");
        }
        Err(Error::InProgress("revocation list keeps changing".into()))
    }

    /// Verifies a license file with our public key and the published revocation list.
    pub async fn verify_file(&self, file: &str) -> Result<VerifyReport> {
        let pk = self.public_key().await?;
        let keys = self.verifying_keys().await?;
        let revocations = self.published_revocations().await?;
        let result = verify_license_with_keys(file, &keys, revocations.as_ref(), self.now());
        let status = match &result {
            Ok(l) => self.store.find(&l.id).await?.map(|r| r.status.as_str()),
            Err(_) => None,
        };
        report(result, status, &pk)
    }

    /// Verifies a stored license by id.
    pub async fn verify_id(&self, license_id: &LicenseId) -> Result<VerifyReport> {
        let rec = self
            .store
            .find(license_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("license {license_id}")))?;
        let pk = self.public_key().await?;
        let keys = self.verifying_keys().await?;
        let revocations = self.published_revocations().await?;
        let result = verify_license_with_keys(&rec.file, &keys, revocations.as_ref(), self.now());
        report(result, Some(rec.status.as_str()), &pk)
    }

    /// A customer's licenses.
    pub async fn list_customer(&self, customer_id: &str) -> Result<Vec<LicenseRecord>> {
        self.store.by_customer(customer_id).await
    }

    /// A subscription's licenses.
    pub async fn list_subscription(&self, subscription_id: &str) -> Result<Vec<LicenseRecord>> {
        self.store.by_subscription(subscription_id).await
    }
}

fn report(
    result: std::result::Result<License, VerifyError>,
    status: Option<&'static str>,
    pk: &PublicKey,
) -> Result<VerifyReport> {
    let pem = pk.to_pem()?;
    Ok(match result {
        Ok(license) => VerifyReport {
            valid: true,
            reason: None,
            message: "valid".into(),
            license: Some(license),
            status,
            kid: pk.kid().to_owned(),
            public_key_pem: pem,
        },
        Err(e) => VerifyReport {
            valid: false,
            reason: Some(e.code()),
            message: e.to_string(),
            license: None,
            status,
            kid: pk.kid().to_owned(),
            public_key_pem: pem,
        },
    })
}
