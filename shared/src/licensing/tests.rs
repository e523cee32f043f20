//! The minting rules, with every port faked.

use super::signer::test_signer;
use super::store::Standing as CustomerStanding;
use super::*;
use crate::error::Error;
use crate::queue::EventMessage;
use crate::storage::{MemoryStore, ObjectStore};
use crate::stripe::MemoryStripe;
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const START: i64 = 1_780_000_000;
const END: i64 = 1_782_592_000;
const NOW_MS: i64 = (START + 3600) * 1000;

struct Fixture {
    stripe: Arc<MemoryStripe>,
    signer: Arc<CountingSigner<Switchable>>,
    store: Arc<MemoryLicenseStore>,
    files: Arc<MemoryStore>,
    service: LicenseService,
}

/// The in-process signer, which can be made to fail like an unavailable KMS.
struct Switchable {
    inner: InProcessSigner,
    down: AtomicBool,
}

#[async_trait]
impl LicenseSigner for Switchable {
    async fn sign(&self, message: &[u8]) -> crate::Result<Vec<u8>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::dependency(
                "kms",
                true,
                "KMS unavailable (simulated)",
            ));
        }
        self.inner.sign(message).await
    }
    async fn public_key(&self) -> crate::Result<PublicKey> {
        self.inner.public_key().await
    }
}

fn fixture() -> Fixture {
    let stripe = Arc::new(MemoryStripe::new());
    let signer = Arc::new(CountingSigner::new(Switchable {
        inner: test_signer(),
        down: AtomicBool::new(false),
    }));
    let store = Arc::new(MemoryLicenseStore::new());
    let files = Arc::new(MemoryStore::new());
    let service = LicenseService::new(stripe.clone(), signer.clone(), store.clone(), files.clone())
        .with_clock(Arc::new(|| NOW_MS));
    stripe.put_customer(json!({"id": "cus_1", "name": "Ada Lovelace", "email": "ada@example.com", "metadata": {"company": "Analytical Engines"}}));
    stripe.put_product(
        json!({"id": "prod_1", "name": "Mattermost", "metadata": {"sku": "enterprise"}}),
    );
    Fixture {
        stripe,
        signer,
        store,
        files,
        service,
    }
}

fn subscription(
    status: &str,
    quantity: u64,
    start: i64,
    plan_meta: serde_json::Value,
) -> serde_json::Value {
    json!({
        "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
        "current_period_start": start, "current_period_end": start + (END - START),
        "items": {"object": "list", "data": [{"id": "si_1", "quantity": quantity,
            "plan": {"id": "plan_1", "product": "prod_1", "metadata": plan_meta}}]}
    })
}

/// `sub_1` on the professional SKU in the first period.
fn professional(status: &str, quantity: u64) -> serde_json::Value {
    subscription(status, quantity, START, json!({"sku": "professional"}))
}

fn event(id: &str, event_type: &str) -> EventMessage {
    let object = if event_type.starts_with("invoice.") {
        json!({"object": "invoice", "id": "in_1", "subscription": "sub_1"})
    } else {
        json!({"object": "subscription", "id": "sub_1"})
    };
    EventMessage {
        id: id.into(),
        source: "stripe".into(),
        event_type: event_type.into(),
        received_at: chrono::Utc::now(),
        raw_key: format!("raw/stripe/{id}.json"),
        event: json!({"id": id, "type": event_type, "data": {"object": object}}),
    }
}

fn active(f: &Fixture) -> Vec<LicenseRecord> {
    f.store
        .all()
        .into_iter()
        .filter(|r| r.status == LicenseStatus::Active)
        .collect()
}

#[tokio::test]
async fn duplicates_and_any_event_kind_mint_exactly_one_license() {
    let f = fixture();
    f.stripe.put_subscription(professional("active", 5));
    let first = f
        .service
        .handle_event(&event("evt_1", "customer.subscription.created"))
        .await
        .unwrap();
    let Outcome::Minted {
        license_id,
        supersedes: None,
        ..
    } = first
    else {
        panic!("expected a mint, got {first:?}")
    };
    for i in 0..5 {
        let kind = if i % 2 == 0 {
            "invoice.payment_succeeded"
        } else {
            "customer.subscription.created"
        };
        let again = f
            .service
            .handle_event(&event(&format!("evt_{i}"), kind))
            .await
            .unwrap();
        assert_eq!(
            again,
            Outcome::Existing {
                license_id: license_id.clone()
            }
        );
    }
    assert_eq!(f.store.all().len(), 1);
    assert_eq!(f.signer.signs(), 1, "one KMS Sign per license");
    assert_eq!(f.signer.public_keys(), 1, "public key fetched once");

    let rec = &f.store.all()[0];
    assert_eq!(rec.status, LicenseStatus::Active);
    assert_eq!((rec.quantity, rec.sku.as_str()), (5, "professional"));
    let file = f.files.object(&rec.file_key).expect("file written");
    assert_eq!(file, rec.file.as_bytes(), "the file is the recorded bytes");
    assert!(
        f.files.object(PUBLIC_KEY_KEY).is_some(),
        "public key published"
    );

    let pk =
        PublicKey::from_pem(&String::from_utf8(f.files.object(PUBLIC_KEY_KEY).unwrap()).unwrap())
            .unwrap();
    let license = verify_license(&rec.file, &pk, None, NOW_MS).unwrap();
    assert_eq!(license.customer.email, "ada@example.com");
    assert_eq!(license.customer.company, "Analytical Engines");
    assert_eq!(license.features.users, 5);
    assert_eq!(
        (license.starts_at, license.expires_at),
        (START * 1000, END * 1000)
    );
    assert_eq!(license.issued_at, NOW_MS);
    assert_eq!(license.sku_short_name, "professional");
    assert!(!license.is_trial);
    assert_eq!(license.kid, pk.kid());
}

#[tokio::test]
async fn seat_change_supersedes_and_stale_events_do_not_undo_it() {
    let f = fixture();
    f.stripe.put_subscription(professional("active", 5));
    let Outcome::Minted {
        license_id: first, ..
    } = f.service.reconcile("sub_1").await.unwrap()
    else {
        panic!()
    };
    f.stripe.put_subscription(professional("active", 12));
    let out = f
        .service
        .handle_event(&event("evt_upd", "customer.subscription.updated"))
        .await
        .unwrap();
    let Outcome::Minted {
        license_id: second,
        supersedes,
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(supersedes.as_ref(), Some(&first));
    // The old "created" event arrives late: the current state has 12 seats.
    let late = f
        .service
        .handle_event(&event("evt_created", "customer.subscription.created"))
        .await
        .unwrap();
    assert_eq!(
        late,
        Outcome::Existing {
            license_id: second.clone()
        }
    );

    let old = f.store.get("cus_1", &first).await.unwrap().unwrap();
    assert_eq!(old.status, LicenseStatus::Superseded);
    assert_eq!(old.superseded_by.as_ref(), Some(&second));
    let new = f.store.get("cus_1", &second).await.unwrap().unwrap();
    assert_eq!((new.status, new.quantity), (LicenseStatus::Active, 12));
    assert_eq!(active(&f).len(), 1);
    let report = f.service.verify_id(&first).await.unwrap();
    assert!(
        report.valid,
        "a superseded license still verifies during its week to install the successor"
    );
    assert_eq!(report.status, Some("SUPERSEDED"));
    // It is on the published revocation list, effective a week after its successor.
    let list = f.service.published_revocations().await.unwrap().unwrap();
    let entry = list.find(&first).expect("the superseded license is listed");
    assert_eq!(entry.reason, RevocationReason::Superseded);
    assert_eq!(entry.revoked_at, NOW_MS + SUPERSEDED_GRACE_MS);
    let pk = f.service.public_key().await.unwrap().clone();
    let offline = |file: &str, at: i64| verify_license(file, &pk, Some(&list), at);
    assert!(offline(&old.file, entry.revoked_at - 1).is_ok());
    assert!(
        matches!(
            offline(&old.file, entry.revoked_at),
            Err(VerifyError::Revoked { ref reason, .. }) if reason == "superseded"
        ),
        "offline, the old seat count stops working after the grace"
    );
    assert!(
        offline(&new.file, entry.revoked_at).is_ok(),
        "the successor stays valid"
    );

    // Back to 5 seats: a third license, not the first one again.
    f.stripe.put_subscription(professional("active", 5));
    let Outcome::Minted {
        license_id: third, ..
    } = f.service.reconcile("sub_1").await.unwrap()
    else {
        panic!()
    };
    assert_ne!(third, first);
    assert_eq!(active(&f).len(), 1);
}

#[tokio::test]
async fn renewal_mints_the_next_period_and_trials_are_flagged() {
    let f = fixture();
    f.stripe.put_subscription(subscription(
        "trialing",
        3,
        START,
        json!({"sku": "enterprise"}),
    ));
    f.service.reconcile("sub_1").await.unwrap();
    let next = START + (END - START);
    f.stripe.put_subscription(subscription(
        "active",
        3,
        next,
        json!({"sku": "enterprise"}),
    ));
    let out = f
        .service
        .handle_event(&event("evt_inv", "invoice.paid"))
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            Outcome::Minted {
                supersedes: None,
                ..
            }
        ),
        "{out:?}"
    );
    let mut all = f.store.all();
    all.sort_by_key(|r| r.period_start_ms);
    assert_eq!(all.len(), 2);
    assert!(all[0].is_trial && !all[1].is_trial);
    assert_eq!(all[1].period_start_ms, next * 1000);
    assert!(all.iter().all(|r| r.status == LicenseStatus::Active));
}

#[tokio::test]
async fn cancellation_revokes_and_publishes_a_verifiable_list() {
    let f = fixture();
    f.stripe.put_subscription(professional("active", 5));
    let Outcome::Minted { license_id, .. } = f.service.reconcile("sub_1").await.unwrap() else {
        panic!()
    };
    f.stripe.put_subscription(professional("canceled", 5));
    let out = f
        .service
        .handle_event(&event("evt_del", "customer.subscription.deleted"))
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Revoked {
            license_ids: vec![license_id.clone()]
        }
    );
    // Duplicate cancellation: nothing new, list not rewritten (no extra signature).
    let signs = f.signer.signs();
    let again = f
        .service
        .handle_event(&event("evt_del", "customer.subscription.deleted"))
        .await
        .unwrap();
    assert_eq!(
        again,
        Outcome::Revoked {
            license_ids: vec![]
        }
    );
    assert_eq!(f.signer.signs(), signs);
    // A stale "created" event after the cancellation does not mint again.
    let stale = f
        .service
        .handle_event(&event("evt_c", "customer.subscription.created"))
        .await
        .unwrap();
    assert_eq!(
        stale,
        Outcome::Revoked {
            license_ids: vec![]
        }
    );

    let pk = f.service.public_key().await.unwrap().clone();
    let json_bytes = f.files.object(REVOCATION_LIST_KEY).unwrap();
    let sig = String::from_utf8(f.files.object(REVOCATION_SIGNATURE_KEY).unwrap()).unwrap();
    let list = verify_revocation_list(&json_bytes, &sig, &pk).unwrap();
    assert_eq!(list.revoked.len(), 1);
    assert_eq!(
        list.revoked[0].reason,
        RevocationReason::SubscriptionCanceled
    );
    let rec = f.store.get("cus_1", &license_id).await.unwrap().unwrap();
    assert_eq!(rec.status, LicenseStatus::Revoked);
    assert!(matches!(
        verify_license(&rec.file, &pk, Some(&list), NOW_MS),
        Err(VerifyError::Revoked { .. })
    ));
    let report = f.service.verify_file(&rec.file).await.unwrap();
    assert_eq!((report.valid, report.reason), (false, Some("revoked")));
}

#[tokio::test]
async fn admin_revoke_and_no_automatic_remint() {
    let f = fixture();
    f.stripe.put_subscription(professional("active", 5));
    let Outcome::Minted { license_id, .. } = f.service.reconcile("sub_1").await.unwrap() else {
        panic!()
    };
    let out = f
        .service
        .revoke_license(&license_id, RevocationReason::Fraud)
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Revoked {
            license_ids: vec![license_id.clone()]
        }
    );
    let again = f.service.reconcile("sub_1").await.unwrap();
    assert!(matches!(again, Outcome::Skipped { .. }), "{again:?}");
    let missing: LicenseId = LicenseKey {
        subscription_id: "sub_x".into(),
        period_start_ms: 0,
        quantity: 1,
        sku: "professional".into(),
        supersedes: None,
    }
    .license_id();
    assert!(matches!(
        f.service
            .revoke_license(&missing, RevocationReason::Operator)
            .await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn sku_from_product_metadata_and_unknown_sku_is_permanent() {
    let f = fixture();
    f.stripe
        .put_subscription(subscription("active", 2, START, json!({})));
    f.service.reconcile("sub_1").await.unwrap();
    assert_eq!(
        f.store.all()[0].sku,
        "enterprise",
        "from the product's metadata"
    );

    let f = fixture();
    f.stripe
        .put_subscription(subscription("active", 2, START, json!({"sku": "platinum"})));
    let e = f.service.reconcile("sub_1").await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("unknown SKU"), "{e}");
    assert!(f.store.all().is_empty() && f.files.keys().is_empty());
    assert_eq!(f.signer.signs(), 0);
}

#[tokio::test]
async fn unknown_subscription_is_permanent_and_stripe_outage_retryable() {
    let f = fixture();
    let e = f
        .service
        .handle_event(&event("evt_1", "customer.subscription.created"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::NotFound(_)) && !e.is_retryable(),
        "{e:?}"
    );
    f.stripe.set_unavailable(true);
    let e = f.service.reconcile("sub_1").await.unwrap_err();
    assert!(e.is_retryable());
}

#[tokio::test]
async fn kms_failure_writes_nothing_and_the_retry_mints() {
    let f = fixture();
    f.stripe.put_subscription(professional("active", 5));
    f.signer_down(true);
    let e = f.service.reconcile("sub_1").await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(f.store.all().is_empty(), "no record");
    assert!(
        f.files
            .keys()
            .iter()
            .all(|k| !k.ends_with(".mattermost-license")),
        "no file"
    );
    f.signer_down(false);
    assert!(matches!(
        f.service.reconcile("sub_1").await.unwrap(),
        Outcome::Minted { .. }
    ));
    assert_eq!(active(&f).len(), 1);
}

#[tokio::test]
async fn s3_failure_leaves_an_issuing_record_that_the_retry_completes_with_the_same_bytes() {
    let f = fixture();
    f.stripe.put_subscription(professional("active", 5));
    f.service.publish_public_key().await.unwrap();
    f.files.set_failing(true);
    assert!(
        f.service
            .reconcile("sub_1")
            .await
            .unwrap_err()
            .is_retryable()
    );
    let rec = f.store.all().pop().unwrap();
    assert_eq!(
        rec.status,
        LicenseStatus::Issuing,
        "recorded, not handed out"
    );
    assert!(f.files.object(&rec.file_key).is_none());
    f.files.set_failing(false);
    let out = f.service.reconcile("sub_1").await.unwrap();
    assert_eq!(
        out,
        Outcome::Existing {
            license_id: rec.license_id.clone()
        }
    );
    assert_eq!(f.files.object(&rec.file_key).unwrap(), rec.file.as_bytes());
    assert_eq!(f.store.all()[0].status, LicenseStatus::Active);
    assert_eq!(f.signer.signs(), 1, "the retry reuses the signed bytes");
}

#[tokio::test]
async fn pending_subscriptions_and_foreign_events_are_skipped() {
    let f = fixture();
    f.stripe.put_subscription(professional("past_due", 5));
    assert!(matches!(
        f.service.reconcile("sub_1").await.unwrap(),
        Outcome::Skipped { .. }
    ));
    let mut portal = event("evt_p", "lead.signup");
    portal.source = "portal".into();
    assert!(matches!(
        f.service.handle_event(&portal).await.unwrap(),
        Outcome::Skipped { .. }
    ));
    let mut one_off = event("evt_i", "invoice.paid");
    one_off.event = json!({"type": "invoice.paid", "data": {"object": {"object": "invoice", "subscription": null}}});
    assert!(matches!(
        f.service.handle_event(&one_off).await.unwrap(),
        Outcome::Skipped { .. }
    ));
    assert!(f.store.all().is_empty());
}

impl Fixture {
    fn signer_down(&self, down: bool) {
        self.signer.inner().down.store(down, Ordering::SeqCst);
    }
}

/// A signer whose first signature ends in a zero byte, as 1 in 256 real ones do.
struct TrailingZeroOnce {
    inner: InProcessSigner,
    used: AtomicBool,
}

#[async_trait]
impl LicenseSigner for TrailingZeroOnce {
    async fn sign(&self, message: &[u8]) -> crate::Result<Vec<u8>> {
        let mut sig = self.inner.sign(message).await?;
        if !self.used.swap(true, Ordering::SeqCst)
            && let Some(last) = sig.last_mut()
        {
            *last = 0;
        }
        Ok(sig)
    }
    async fn public_key(&self) -> crate::Result<PublicKey> {
        self.inner.public_key().await
    }
}

#[tokio::test]
async fn a_signature_ending_in_a_zero_byte_is_signed_again_so_the_file_verifies() {
    // Mattermost strips trailing zero bytes before splitting off the signature: a file whose
    // signature ends in 0x00 would never verify.
    let f = fixture();
    let signer = Arc::new(CountingSigner::new(TrailingZeroOnce {
        inner: test_signer(),
        used: AtomicBool::new(false),
    }));
    let service = LicenseService::new(
        f.stripe.clone(),
        signer.clone(),
        f.store.clone(),
        f.files.clone(),
    )
    .with_clock(Arc::new(|| NOW_MS));
    f.stripe.put_subscription(professional("active", 5));
    let out = service
        .handle_event(&event("evt_z", "customer.subscription.created"))
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Minted { .. }), "{out:?}");
    assert_eq!(signer.signs(), 2, "signed again once");
    assert_eq!(signer.zero_tailed(), 1);
    let rec = active(&f).pop().unwrap();
    assert_eq!(
        rec.issued_at,
        NOW_MS + 1,
        "the second signing moved issued_at"
    );
    let key = test_signer().public_key().await.unwrap();
    let license = super::verify_license(&rec.file, &key, None, NOW_MS).unwrap();
    assert_eq!(license.issued_at, NOW_MS + 1);
}

#[tokio::test]
async fn license_changes_are_announced_to_customer_sync_again_on_a_duplicate() {
    let Wired { f, service, queue } = wired();
    service
        .handle_event(&event("evt_1", "customer.subscription.created"))
        .await
        .unwrap();
    service
        .handle_event(&event("evt_2", "invoice.payment_succeeded"))
        .await
        .unwrap();
    let sent: Vec<EventMessage> = queue
        .sent("customer-events")
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(
        sent.len(),
        2,
        "issued, then issued again (the first send may have failed)"
    );
    assert!(
        sent.iter()
            .all(|m| m.event_type == "license.issued" && m.source == "blapi")
    );
    assert_eq!(sent[0].id, sent[1].id, "the same fact, the same id");
    assert_eq!(sent[0].event["data"]["customer"], "cus_1");
    assert_eq!(sent[0].event["data"]["seats"], 5);

    // A failed send fails the event, so SQS brings it back.
    queue.set_failing(true);
    let e = service
        .handle_event(&event("evt_3", "invoice.payment_succeeded"))
        .await
        .unwrap_err();
    assert!(e.is_retryable());
    queue.set_failing(false);

    f.stripe.put_subscription(professional("canceled", 5));
    service
        .handle_event(&event("evt_4", "customer.subscription.deleted"))
        .await
        .unwrap();
    let last: EventMessage =
        serde_json::from_str(queue.sent("customer-events").last().unwrap()).unwrap();
    assert_eq!(last.event_type, "license.revoked");
}

/// A signer that cancels the subscription in Stripe while it signs: the cancellation lands
/// between the minter's read of the subscription and its write of the license.
struct CancelWhileSigning {
    inner: InProcessSigner,
    stripe: Arc<MemoryStripe>,
}

#[async_trait]
impl LicenseSigner for CancelWhileSigning {
    async fn sign(&self, message: &[u8]) -> crate::Result<Vec<u8>> {
        self.stripe.put_subscription(professional("canceled", 5));
        self.inner.sign(message).await
    }
    async fn public_key(&self) -> crate::Result<PublicKey> {
        self.inner.public_key().await
    }
}

#[tokio::test]
async fn a_cancellation_racing_a_mint_never_leaves_an_active_license() {
    let f = fixture();
    let service = LicenseService::new(
        f.stripe.clone(),
        Arc::new(CancelWhileSigning {
            inner: test_signer(),
            stripe: f.stripe.clone(),
        }),
        f.store.clone(),
        f.files.clone(),
    )
    .with_clock(Arc::new(|| NOW_MS));
    f.stripe.put_subscription(professional("active", 5));
    let out = service
        .handle_event(&event("evt_1", "customer.subscription.created"))
        .await
        .unwrap();
    assert!(
        matches!(out, Outcome::Revoked { ref license_ids } if license_ids.len() == 1),
        "{out:?}"
    );
    assert!(
        active(&f).is_empty(),
        "no ACTIVE license for a cancelled subscription"
    );
    // The revocation list names it.
    let list = service.published_revocations().await.unwrap().unwrap();
    assert_eq!(list.revoked.len(), 1);
}

/// A signer behind an alias that an operator can point at another key.
struct Rotatable(std::sync::Mutex<InProcessSigner>);

#[async_trait]
impl LicenseSigner for Rotatable {
    async fn sign(&self, message: &[u8]) -> crate::Result<Vec<u8>> {
        let key = self.0.lock().unwrap().clone();
        key.sign(message).await
    }
    async fn public_key(&self) -> crate::Result<PublicKey> {
        Ok(self.0.lock().unwrap().public().clone())
    }
}

#[tokio::test]
async fn licenses_of_three_rotated_keys_all_verify_with_the_key_set() {
    let f = fixture();
    let now = Arc::new(std::sync::atomic::AtomicI64::new(NOW_MS));
    let clock = now.clone();
    let signer = Arc::new(CountingSigner::new(Rotatable(std::sync::Mutex::new(
        test_signer(),
    ))));
    // One warm instance throughout: it must notice each rotation by itself.
    let service = LicenseService::new(
        f.stripe.clone(),
        signer.clone(),
        f.store.clone(),
        f.files.clone(),
    )
    .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    let mut files = Vec::new();
    let mut kids = Vec::new();
    for (round, seats) in [5u64, 6, 7].into_iter().enumerate() {
        if round > 0 {
            // What `blapi-ops license rotate-key` does: the new key enters the set (the
            // current one retires now), then the alias points at it.
            let next = InProcessSigner::generate().unwrap();
            let t = now.fetch_add(3_600_000, Ordering::SeqCst) + 3_600_000;
            let mut set = service.key_set().await.unwrap();
            assert!(set.add(next.public(), t).unwrap());
            f.files
                .put(KEY_SET_KEY, set.to_json().unwrap(), "application/json")
                .await
                .unwrap();
            *signer.inner().0.lock().unwrap() = next;
        }
        f.stripe.put_subscription(subscription(
            "active",
            seats,
            START,
            json!({"sku": "professional"}),
        ));
        let out = service.reconcile("sub_1").await.unwrap();
        assert!(matches!(out, Outcome::Minted { .. }), "{out:?}");
        let rec = f
            .store
            .all()
            .into_iter()
            .find(|r| r.quantity == seats as u32)
            .unwrap();
        files.push(rec.file.clone());
        kids.push(rec.kid.clone());
    }
    let set = KeySet::from_json(&f.files.get(KEY_SET_KEY).await.unwrap().unwrap()).unwrap();
    assert_eq!(set.keys.len(), 3);
    assert_eq!(
        set.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(),
        kids,
        "each license names the key that was current when it was issued"
    );
    assert_eq!(
        set.keys[0].not_before, 0,
        "the first key signed since it exists"
    );
    assert_eq!(set.current().unwrap().kid, kids[2]);
    let at = now.load(Ordering::SeqCst);
    for (file, kid) in files.iter().zip(&kids) {
        let license = verify_license_with_keys(file, &set, None, at).unwrap();
        assert_eq!(&license.kid, kid);
    }
    // The revocation list (the superseded licenses) is signed by the newest key.
    let list = service.published_revocations().await.unwrap().unwrap();
    assert_eq!(list.kid, kids[2]);
    assert_eq!(list.revoked.len(), 2);
    // A key that is not in the set, and a retired key used after it retired, are refused.
    let mut without_first = set.clone();
    without_first.keys.remove(0);
    assert!(matches!(
        verify_license_with_keys(&files[0], &without_first, None, at),
        Err(VerifyError::UnknownKey { .. })
    ));
    let mut late = set.clone();
    late.keys[0].not_after = Some(NOW_MS - 3_600_000);
    assert!(matches!(
        verify_license_with_keys(&files[0], &late, None, at),
        Err(VerifyError::KeyNotValid { .. })
    ));
    // The service's own verification uses the set too.
    for file in &files[2..] {
        assert!(service.verify_file(file).await.unwrap().valid);
    }
    let tampered = KeySet::from_json(
        &serde_json::to_vec(&json!({"keys": [{"kid": kids[0], "public_key_pem": set.keys[1].public_key_pem, "not_before": 0, "not_after": null}]})).unwrap(),
    );
    assert!(
        tampered.is_err(),
        "an entry must hold the key its kid names"
    );
}

// ------------------------------------------------------------- suspension and refunds

struct Wired {
    f: Fixture,
    service: LicenseService,
    queue: Arc<crate::queue::MemoryQueue>,
}

fn wired() -> Wired {
    let f = fixture();
    let queue = Arc::new(crate::queue::MemoryQueue::new());
    let service = LicenseService::new(
        f.stripe.clone(),
        f.signer.clone(),
        f.store.clone(),
        f.files.clone(),
    )
    .with_clock(Arc::new(|| NOW_MS))
    .with_announcements(queue.clone(), "customer-events".into())
    .with_provisioning(queue.clone(), "provisioning".into())
    .with_notifications(queue.clone(), "notifications".into());
    f.stripe.put_subscription(professional("active", 5));
    Wired { f, service, queue }
}

fn standing(suspended: bool, seq: u64) -> EventMessage {
    crate::events::Internal::CustomerStanding(crate::events::CustomerStanding {
        customer: "cus_1".into(),
        suspended,
        seq,
        invoice: "in_9".into(),
    })
    .message(chrono::Utc::now())
}

/// The types of the distinct messages (by id: consumers dedupe on it) sent to `url`.
fn sent_types(q: &crate::queue::MemoryQueue, url: &str) -> Vec<String> {
    let mut ids = std::collections::HashSet::new();
    q.sent(url)
        .iter()
        .filter_map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            ids.insert(v["id"].as_str().unwrap_or_default().to_owned())
                .then(|| v["type"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn suspension_lists_the_license_as_suspended_and_payment_issues_a_fresh_one() {
    let w = wired();
    let Outcome::Minted { license_id, .. } = w
        .service
        .handle_event(&event("evt_1", "customer.subscription.created"))
        .await
        .unwrap()
    else {
        panic!("minted")
    };
    assert_eq!(sent_types(&w.queue, "notifications"), ["license.issued"]);
    let file = String::from_utf8(
        w.f.files
            .get(&file_key("cus_1", &license_id))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(w.service.verify_file(&file).await.unwrap().valid);

    let out = w.service.handle_event(&standing(true, 1)).await.unwrap();
    assert_eq!(
        out,
        Outcome::Standing {
            suspended: true,
            license_ids: vec![license_id.clone()]
        }
    );
    let report = w.service.verify_file(&file).await.unwrap();
    assert!(!report.valid);
    assert_eq!(report.reason, Some("suspended"));
    assert_eq!(sent_types(&w.queue, "provisioning"), ["workspace.suspend"]);
    // nothing is minted for a suspended customer, whatever Stripe event arrives
    assert!(matches!(
        w.service
            .handle_event(&event("evt_2", "invoice.payment_succeeded"))
            .await
            .unwrap(),
        Outcome::Skipped { .. }
    ));
    // a duplicate of the suspension changes nothing more
    w.service.handle_event(&standing(true, 1)).await.unwrap();
    assert!(active(&w.f).is_empty());

    // paid: a fresh license for the rest of the term, the old one stays suspended
    let Outcome::Standing {
        suspended: false,
        license_ids,
    } = w.service.handle_event(&standing(false, 2)).await.unwrap()
    else {
        panic!("reinstated")
    };
    assert_eq!(license_ids.len(), 1);
    assert_ne!(license_ids[0], license_id);
    let fresh = active(&w.f);
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].supersedes.as_ref(), Some(&license_id));
    assert_eq!(fresh[0].quantity, 5);
    let fresh_file =
        String::from_utf8(w.f.files.get(&fresh[0].file_key).await.unwrap().unwrap()).unwrap();
    assert!(w.service.verify_file(&fresh_file).await.unwrap().valid);
    assert_eq!(
        w.service.verify_file(&file).await.unwrap().reason,
        Some("suspended")
    );
    assert_eq!(
        sent_types(&w.queue, "provisioning"),
        ["workspace.suspend", "workspace.resume"]
    );
    assert_eq!(
        sent_types(&w.queue, "notifications"),
        ["license.issued", "license.issued"]
    );
    // a late, stale suspension (seq 1) changes nothing
    assert!(matches!(
        w.service.handle_event(&standing(true, 1)).await.unwrap(),
        Outcome::Skipped { .. }
    ));
    assert_eq!(active(&w.f).len(), 1);

    // cancelled later: the suspended license is revoked for good, with its successor
    w.f.stripe.put_subscription(professional("canceled", 5));
    w.service
        .handle_event(&event("evt_3", "customer.subscription.deleted"))
        .await
        .unwrap();
    assert_eq!(
        w.service.verify_file(&file).await.unwrap().reason,
        Some("revoked")
    );
    assert_eq!(
        w.service.verify_file(&fresh_file).await.unwrap().reason,
        Some("revoked")
    );
}

#[tokio::test]
async fn a_reinstatement_that_arrives_first_wins_over_the_late_suspension() {
    let w = wired();
    w.service
        .handle_event(&event("evt_1", "customer.subscription.created"))
        .await
        .unwrap();
    w.service.handle_event(&standing(false, 2)).await.unwrap();
    let late = w.service.handle_event(&standing(true, 1)).await.unwrap();
    assert!(matches!(late, Outcome::Skipped { .. }), "{late:?}");
    assert_eq!(active(&w.f).len(), 1);
}

#[tokio::test]
async fn a_payment_recorded_while_the_suspension_is_written_ends_active() {
    let w = wired();
    w.service
        .handle_event(&event("evt_1", "customer.subscription.created"))
        .await
        .unwrap();
    // The reinstatement (seq 2) is recorded by a concurrent worker as the suspension is
    // written; its own message found the licenses still active and did nothing.
    w.f.store.record_standing_during_next_suspension(
        "cus_1",
        CustomerStanding {
            suspended: false,
            seq: 2,
        },
    );
    let out = w.service.handle_event(&standing(true, 1)).await.unwrap();
    assert!(
        matches!(out, Outcome::Standing { suspended: false, ref license_ids } if license_ids.len() == 1),
        "{out:?}"
    );
    let live = active(&w.f);
    assert_eq!(live.len(), 1);
    let file = String::from_utf8(w.f.files.get(&live[0].file_key).await.unwrap().unwrap()).unwrap();
    assert!(w.service.verify_file(&file).await.unwrap().valid);
}

fn charge_event(id: &str, event_type: &str, object: serde_json::Value) -> EventMessage {
    EventMessage {
        id: id.into(),
        source: "stripe".into(),
        event_type: event_type.into(),
        received_at: chrono::Utc::now(),
        raw_key: format!("raw/stripe/{id}.json"),
        event: json!({"id": id, "type": event_type, "data": {"object": object}}),
    }
}

#[tokio::test]
async fn a_full_refund_or_a_lost_dispute_revokes_and_a_partial_refund_does_not() {
    let w = wired();
    w.service
        .handle_event(&event("evt_1", "customer.subscription.created"))
        .await
        .unwrap();
    w.f.stripe.put_invoice(json!({"id": "in_1", "object": "invoice", "customer": "cus_1", "subscription": "sub_1", "status": "paid"}));
    w.f.stripe.put_charge(json!({"id": "ch_1", "customer": "cus_1", "invoice": "in_1", "amount": 5000, "amount_refunded": 1000, "refunded": false}));
    let partial = w
        .service
        .handle_event(&charge_event(
            "e1",
            "charge.refunded",
            json!({"id": "ch_1"}),
        ))
        .await
        .unwrap();
    assert!(matches!(partial, Outcome::Skipped { .. }), "{partial:?}");
    let won = w
        .service
        .handle_event(&charge_event(
            "e2",
            "charge.dispute.closed",
            json!({"id": "dp_1", "charge": "ch_1", "status": "won"}),
        ))
        .await
        .unwrap();
    assert!(matches!(won, Outcome::Skipped { .. }), "{won:?}");
    assert_eq!(active(&w.f).len(), 1);
    let lost = w
        .service
        .handle_event(&charge_event(
            "e3",
            "charge.dispute.closed",
            json!({"id": "dp_1", "charge": "ch_1", "status": "lost"}),
        ))
        .await
        .unwrap();
    assert!(matches!(lost, Outcome::Revoked { ref license_ids } if license_ids.len() == 1));
    assert!(active(&w.f).is_empty());
    let list = w.service.published_revocations().await.unwrap().unwrap();
    assert_eq!(list.revoked[0].reason, RevocationReason::Refunded);
    // a forged charge id is refused, not looked up
    let e = w
        .service
        .handle_event(&charge_event(
            "e4",
            "charge.refunded",
            json!({"id": "../ch_1"}),
        ))
        .await
        .unwrap_err();
    assert!(!e.is_retryable());
}

// ------------------------------------------------------------- races with revocations

/// Something another worker does while this one signs, between the minter's read of the
/// period's head and its writes, given the store and the first license.
type Race = Box<
    dyn FnOnce(Arc<MemoryLicenseStore>, LicenseRecord) -> futures::future::BoxFuture<'static, ()>
        + Send,
>;

/// A signer that runs a race during its next signature.
struct RacingSigner {
    inner: InProcessSigner,
    race: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

#[async_trait]
impl LicenseSigner for RacingSigner {
    async fn sign(&self, message: &[u8]) -> crate::Result<Vec<u8>> {
        let race = self.race.lock().unwrap().take();
        if let Some(race) = race {
            race.await;
        }
        self.inner.sign(message).await
    }
    async fn public_key(&self) -> crate::Result<PublicKey> {
        self.inner.public_key().await
    }
}

/// A fixture whose service runs `race` during the next signature, and the first license of
/// `sub_1` (5 seats, active) already minted.
async fn racing(race: Race) -> (Fixture, LicenseService, LicenseRecord) {
    let f = fixture();
    let signer = Arc::new(RacingSigner {
        inner: test_signer(),
        race: std::sync::Mutex::new(None),
    });
    let service = LicenseService::new(
        f.stripe.clone(),
        signer.clone(),
        f.store.clone(),
        f.files.clone(),
    )
    .with_clock(Arc::new(|| NOW_MS));
    f.stripe.put_subscription(professional("active", 5));
    let Outcome::Minted { license_id, .. } = service.reconcile("sub_1").await.unwrap() else {
        panic!("first license")
    };
    let first = f.store.get("cus_1", &license_id).await.unwrap().unwrap();
    *signer.race.lock().unwrap() = Some(race(f.store.clone(), first.clone()));
    (f, service, first)
}

fn seat_change(f: &Fixture) {
    f.stripe.put_subscription(professional("active", 12));
}

#[tokio::test]
async fn a_seat_change_racing_a_refund_never_activates_over_the_revoked_license() {
    // The refund revokes the first license after the seat change read it as ACTIVE and
    // before its successor is activated. (The service used to activate the successor anyway
    // once the predecessor had left ACTIVE: a refunded period with a valid license.)
    let (f, service, first) = racing(Box::new(|store, first| {
        Box::pin(async move {
            assert!(
                store
                    .revoke(&first, RevocationReason::Refunded, NOW_MS)
                    .await
                    .unwrap()
            );
        })
    }))
    .await;
    seat_change(&f);
    let out = service.reconcile("sub_1").await.unwrap();
    let Outcome::Revoked { license_ids } = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        license_ids.len(),
        1,
        "the successor, revoked like its predecessor"
    );
    assert!(
        active(&f).is_empty(),
        "no ACTIVE license in a refunded period"
    );
    let successor = f
        .store
        .get("cus_1", &license_ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(successor.supersedes.as_ref(), Some(&first.license_id));
    assert_eq!(
        (successor.status, successor.revoked_reason),
        (LicenseStatus::Revoked, Some(RevocationReason::Refunded))
    );
    let list = service.published_revocations().await.unwrap().unwrap();
    assert!(list.find(&first.license_id).is_some() && list.find(&successor.license_id).is_some());
    // A redelivery changes nothing: the period stays revoked.
    assert!(matches!(
        service.reconcile("sub_1").await.unwrap(),
        Outcome::Skipped { .. }
    ));
    assert!(active(&f).is_empty());
}

#[tokio::test]
async fn a_subscription_ended_in_the_store_is_never_minted_even_when_stripe_still_says_active() {
    // The cancellation is handled (the subscription marked ended) while a seat change signs;
    // the minter's own reads of Stripe still say active (a stale copy). The mark is checked
    // inside the write, so nothing is recorded or activated, and every license is revoked.
    let (f, service, first) = racing(Box::new(|store, _first| {
        Box::pin(async move {
            store.end_subscription("sub_1", NOW_MS).await.unwrap();
        })
    }))
    .await;
    seat_change(&f);
    let out = service.reconcile("sub_1").await.unwrap();
    assert_eq!(
        out,
        Outcome::Revoked {
            license_ids: vec![first.license_id.clone()]
        }
    );
    assert!(active(&f).is_empty());
    assert_eq!(f.store.all().len(), 1, "nothing recorded after the end");
}

#[tokio::test]
async fn a_seat_change_racing_a_suspension_waits_for_the_payment() {
    // The customer is suspended (standing recorded, licenses revoked as suspended) while a
    // seat change signs: its license must not become ACTIVE until the customer pays.
    let (f, service, first) = racing(Box::new(|store, first| {
        Box::pin(async move {
            let suspended = CustomerStanding {
                suspended: true,
                seq: 1,
            };
            assert!(store.set_standing("cus_1", suspended).await.unwrap());
            assert!(
                store
                    .revoke(&first, RevocationReason::Suspended, NOW_MS)
                    .await
                    .unwrap()
            );
        })
    }))
    .await;
    seat_change(&f);
    let out = service.reconcile("sub_1").await.unwrap();
    assert!(matches!(out, Outcome::Skipped { .. }), "{out:?}");
    assert!(active(&f).is_empty(), "nothing valid while suspended");
    // Paid: the waiting license (12 seats) becomes the one ACTIVE license.
    service.handle_event(&standing(false, 2)).await.unwrap();
    let live = active(&f);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].quantity, 12);
    assert_eq!(live[0].supersedes.as_ref(), Some(&first.license_id));
}

#[tokio::test]
async fn a_cancellation_whose_transaction_is_cancelled_by_a_conflict_is_retried_not_acknowledged() {
    // DynamoDB cancels the revocation's transaction (TransactionConflict): the message must
    // fail retryably so SQS redelivers it, never succeed with the license still ACTIVE.
    let f = fixture();
    f.stripe.put_subscription(professional("active", 5));
    let Outcome::Minted { license_id, .. } = f.service.reconcile("sub_1").await.unwrap() else {
        panic!()
    };
    f.stripe.put_subscription(professional("canceled", 5));
    f.store.conflict_next(1);
    let err = f
        .service
        .handle_event(&event("evt_del", "customer.subscription.deleted"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        active(&f).len(),
        1,
        "not revoked yet: the redelivery must do it"
    );
    let out = f
        .service
        .handle_event(&event("evt_del", "customer.subscription.deleted"))
        .await
        .unwrap();
    assert_eq!(
        out,
        Outcome::Revoked {
            license_ids: vec![license_id]
        }
    );
    assert!(active(&f).is_empty());
}

#[tokio::test]
async fn a_mint_whose_activation_is_cancelled_by_a_conflict_is_retried_and_completes() {
    let f = fixture();
    f.stripe.put_subscription(professional("active", 5));
    f.store.conflict_next(1); // `begin`
    let err = f.service.reconcile("sub_1").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(f.store.all().is_empty());
    let out = f.service.reconcile("sub_1").await.unwrap();
    assert!(matches!(out, Outcome::Minted { .. }), "{out:?}");
    assert_eq!(active(&f).len(), 1);
}

#[tokio::test]
async fn the_superseded_grace_is_configurable() {
    let f = fixture();
    let three_days = std::time::Duration::from_secs(3 * 86_400);
    let service = LicenseService::new(
        f.stripe.clone(),
        f.signer.clone(),
        f.store.clone(),
        f.files.clone(),
    )
    .with_clock(Arc::new(|| NOW_MS))
    .with_superseded_grace(three_days);
    f.stripe.put_subscription(professional("active", 5));
    let Outcome::Minted {
        license_id: first, ..
    } = service.reconcile("sub_1").await.unwrap()
    else {
        panic!()
    };
    seat_change(&f);
    service.reconcile("sub_1").await.unwrap();
    let list = service.published_revocations().await.unwrap().unwrap();
    let entry = list.find(&first).expect("the superseded license is listed");
    assert_eq!(entry.reason, RevocationReason::Superseded);
    assert_eq!(entry.revoked_at, NOW_MS + 3 * 86_400_000);
}

#[tokio::test]
async fn the_memory_store_refuses_to_activate_after_the_end_or_over_a_revoked_predecessor() {
    // The fake keeps the DynamoDB adapter's conditions (its moto test checks the same).
    let f = fixture();
    f.stripe.put_subscription(professional("active", 5));
    let Outcome::Minted { license_id, .. } = f.service.reconcile("sub_1").await.unwrap() else {
        panic!()
    };
    let first = f.store.get("cus_1", &license_id).await.unwrap().unwrap();
    let mut second = first.clone();
    second.license_id = LicenseKey {
        subscription_id: "sub_1".into(),
        period_start_ms: first.period_start_ms,
        quantity: 12,
        sku: first.sku.clone(),
        supersedes: Some(first.license_id.clone()),
    }
    .license_id();
    second.quantity = 12;
    second.status = LicenseStatus::Issuing;
    second.supersedes = Some(first.license_id.clone());
    assert!(
        f.store
            .begin(&second, Some(&first.license_id))
            .await
            .unwrap()
    );
    // The predecessor revoked for good: not activated without it, nor with it.
    assert!(
        f.store
            .revoke(&first, RevocationReason::Fraud, NOW_MS)
            .await
            .unwrap()
    );
    let revoked = f
        .store
        .get("cus_1", &first.license_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!f.store.activate(&second, None, NOW_MS).await.unwrap());
    assert!(
        !f.store
            .activate(&second, Some(&revoked), NOW_MS)
            .await
            .unwrap()
    );
    // Ended: nothing begins.
    f.store.end_subscription("sub_1", NOW_MS).await.unwrap();
    assert!(f.store.ended("sub_1").await.unwrap());
    let mut other = second.clone();
    other.period_start_ms += 1;
    assert!(!f.store.begin(&other, None).await.unwrap());
    // A license still issuing can be revoked.
    assert!(
        f.store
            .revoke(&second, RevocationReason::SubscriptionCanceled, NOW_MS)
            .await
            .unwrap()
    );
}
