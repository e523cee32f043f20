//! The DynamoDB store's conditions on moto: the compare-and-swap on the period head,
//! concurrent deliveries, the recovery of a license recorded before its file was written, and
//! the `ConditionCheck`s that keep a mint racing a cancellation or a revocation from
//! activating its license.
//! Stripe and the object store are fakes here so a failure can be injected between the steps;
//! the table is the template's `LicensesTable` on moto.

use blapi::licensing::{
    CountingSigner, DynamoLicenseStore, InProcessSigner, LicenseService, LicenseStatus,
    LicenseStore, Outcome, RevocationReason,
};
use blapi::storage::MemoryStore;
use blapi::stripe::MemoryStripe;
use serde_json::json;
use std::sync::{Arc, OnceLock};

fn key() -> InProcessSigner {
    static KEY: OnceLock<InProcessSigner> = OnceLock::new();
    KEY.get_or_init(|| InProcessSigner::generate().expect("key"))
        .clone()
}

struct Parts {
    stripe: Arc<MemoryStripe>,
    store: Arc<DynamoLicenseStore>,
    files: Arc<MemoryStore>,
    signer: Arc<CountingSigner<InProcessSigner>>,
    /// This file's tests run one at a time: moto undoes a transaction whose condition fails
    /// by restoring the whole table as it was when that transaction began, which also undoes
    /// writes other requests made meanwhile (a revocation of another test's license). These
    /// tests fail conditions on purpose; DynamoDB itself isolates transactions.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn parts() -> Parts {
    let serial = SERIAL.lock().await;
    let stack = blapi_infra::testing::stack();
    let clients = blapi::aws::Clients::new(&stack.sdk_config().await);
    let table = stack.physical("LicensesTable").to_owned();
    Parts {
        stripe: Arc::new(MemoryStripe::new()),
        store: Arc::new(DynamoLicenseStore::new(clients.dynamodb().clone(), table)),
        files: Arc::new(MemoryStore::new()),
        signer: Arc::new(CountingSigner::new(key())),
        _serial: serial,
    }
}

impl Parts {
    fn service(&self) -> LicenseService {
        LicenseService::new(
            self.stripe.clone(),
            self.signer.clone(),
            self.store.clone(),
            self.files.clone(),
        )
    }

    /// A fresh active subscription with random ids; also returns its period start, which later
    /// changes of the same term must reuse (a different start is a different term).
    fn subscription(&self, quantity: u64) -> (String, String, i64) {
        let n = uuid::Uuid::new_v4().simple().to_string();
        let (cus, sub) = (format!("cus_{}", &n[..14]), format!("sub_{}", &n[..14]));
        let now = chrono::Utc::now().timestamp();
        self.stripe
            .put_customer(json!({"id": cus, "name": "Grace", "email": "grace@example.com"}));
        self.set(&sub, &cus, "active", quantity, now - 60);
        (cus, sub, now - 60)
    }

    fn set(&self, sub: &str, cus: &str, status: &str, quantity: u64, start: i64) {
        self.stripe.put_subscription(json!({
            "id": sub, "customer": cus, "status": status,
            "current_period_start": start, "current_period_end": start + 30 * 86400,
            "items": {"data": [{"id": "si_1", "quantity": quantity, "plan": {"id": "plan_1", "metadata": {"sku": "enterprise"}}}]}
        }));
    }
}

#[tokio::test]
async fn concurrent_deliveries_mint_once() {
    let p = parts().await;
    let (cus, sub, _) = p.subscription(5);
    // Five cold starts handle the same event at the same time.
    let services: Vec<LicenseService> = (0..5).map(|_| p.service()).collect();
    let outcomes = futures::future::join_all(services.iter().map(|s| s.reconcile(&sub))).await;
    let minted: std::collections::BTreeSet<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Ok(Outcome::Minted { license_id, .. }) => Some(license_id.to_string()),
            _ => None,
        })
        .collect();
    // Never two licenses. (On a loaded machine the winner itself can time out on a dependency
    // after recording the license; the others then finish its record and it reports a
    // retryable error, so none says "minted" in this round. moto applies two concurrent
    // transactions without isolating them, so two workers may both report minting the *same*
    // license — one id, one record, one file: still one license.)
    assert!(minted.len() <= 1, "{outcomes:?}");
    for o in &outcomes {
        // The others found it done, or (racing the winner's last step) reported a retryable
        // error: never a second license.
        match o {
            Ok(Outcome::Minted { .. } | Outcome::Existing { .. }) => {}
            Err(e) => assert!(e.is_retryable(), "{e:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The redelivery converges on the one license.
    let again = p.service().reconcile(&sub).await.unwrap();
    if minted.len() == 1 {
        assert!(matches!(again, Outcome::Existing { .. }), "{again:?}");
    } else {
        assert!(
            matches!(again, Outcome::Existing { .. } | Outcome::Minted { .. }),
            "{again:?}"
        );
    }
    let all = p.store.by_customer(&cus).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, LicenseStatus::Active);
    assert_eq!(p.store.heads(&sub).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_license_recorded_before_its_file_is_completed_by_the_next_delivery() {
    let p = parts().await;
    let (cus, sub, _) = p.subscription(7);
    let service = p.service();
    service.publish_public_key().await.unwrap();
    p.files.set_failing(true);
    let e = service.reconcile(&sub).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    let recs = p.store.by_customer(&cus).await.unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].status, LicenseStatus::Issuing);
    assert!(p.files.object(&recs[0].file_key).is_none());

    p.files.set_failing(false);
    // A new cold start (no shared memory) picks it up from the table.
    let again = p.service().reconcile(&sub).await.unwrap();
    assert_eq!(
        again,
        Outcome::Existing {
            license_id: recs[0].license_id.clone()
        }
    );
    let rec = p
        .store
        .get(&cus, &recs[0].license_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, LicenseStatus::Active);
    assert_eq!(p.files.object(&rec.file_key).unwrap(), rec.file.as_bytes());
    assert_eq!(p.signer.signs(), 1, "completed with the recorded signature");
}

#[tokio::test]
async fn head_compare_and_swap_and_revocation_on_dynamodb() {
    let p = parts().await;
    let (cus, sub, start) = p.subscription(5);
    let service = p.service();
    let Outcome::Minted {
        license_id: first, ..
    } = service.reconcile(&sub).await.unwrap()
    else {
        panic!("mint")
    };
    let rec = p.store.get(&cus, &first).await.unwrap().unwrap();
    // Recording the same license again, or moving the head from a stale predecessor, fails.
    assert!(!p.store.begin(&rec, None).await.unwrap());
    // Same term, more seats: the new license supersedes the first.
    p.set(&sub, &cus, "active", 9, start);
    let Outcome::Minted {
        license_id: second,
        supersedes,
        ..
    } = service.reconcile(&sub).await.unwrap()
    else {
        panic!("supersede")
    };
    assert_eq!(supersedes.as_ref(), Some(&first));
    // The superseded license is listed in the same transaction, effective in a week.
    let listed = p.store.revocations().await.unwrap();
    let entry = listed
        .iter()
        .find(|r| r.id == first)
        .expect("the superseded license on the revocation list");
    assert_eq!(entry.reason, RevocationReason::Superseded);
    assert!(entry.revoked_at > chrono::Utc::now().timestamp_millis() + 6 * 86_400_000);
    assert_eq!(
        p.store.get(&cus, &first).await.unwrap().unwrap().status,
        LicenseStatus::Superseded
    );
    let by_sub = p.store.by_subscription(&sub).await.unwrap();
    assert_eq!(by_sub.len(), 2, "gsi1 lists the subscription's history");
    assert_eq!(
        p.store.find(&second).await.unwrap().unwrap().quantity,
        9,
        "gsi2 finds by id"
    );

    p.set(&sub, &cus, "canceled", 9, start);
    let Outcome::Revoked { license_ids } = service.reconcile(&sub).await.unwrap() else {
        panic!("revoke")
    };
    assert_eq!(
        license_ids.len(),
        2,
        "the superseded one too: {license_ids:?}"
    );
    let revocations = p.store.revocations().await.unwrap();
    assert!(
        license_ids
            .iter()
            .all(|id| revocations.iter().any(|r| &r.id == id))
    );
    assert!(
        matches!(service.reconcile(&sub).await.unwrap(), Outcome::Revoked { license_ids } if license_ids.is_empty())
    );
}

/// The subscription's license after a seat change (`quantity` seats) whose file write failed:
/// recorded (ISSUING) and the period's head, not yet activated.
async fn successor_left_issuing(p: &Parts, sub: &str, cus: &str, start: i64, quantity: u64) {
    p.set(sub, cus, "active", quantity, start);
    p.files.set_failing(true);
    match p.service().reconcile(sub).await {
        Err(e) => assert!(e.is_retryable(), "{e:?}"),
        Ok(out) => panic!("the file write failed, yet {out:?}"),
    }
    p.files.set_failing(false);
}

fn active_of(recs: &[blapi::licensing::LicenseRecord]) -> usize {
    recs.iter()
        .filter(|r| r.status == LicenseStatus::Active)
        .count()
}

#[tokio::test]
async fn a_mint_racing_a_cancellation_is_refused_inside_the_write_on_dynamodb() {
    let p = parts().await;
    let (cus, sub, start) = p.subscription(5);
    let service = p.service();
    let Outcome::Minted {
        license_id: first, ..
    } = service.reconcile(&sub).await.unwrap()
    else {
        panic!("mint")
    };
    successor_left_issuing(&p, &sub, &cus, start, 9).await;
    let head = p.store.head(&sub, start * 1000).await.unwrap().unwrap();
    let second = p.store.get(&cus, &head.license_id).await.unwrap().unwrap();
    assert_eq!(second.status, LicenseStatus::Issuing);
    let first_rec = p.store.get(&cus, &first).await.unwrap().unwrap();

    // The cancellation is handled now; the minter still believes the subscription active.
    p.store.end_subscription(&sub, 1).await.unwrap();
    p.store.end_subscription(&sub, 2).await.unwrap(); // idempotent
    assert!(p.store.ended(&sub).await.unwrap());
    // The ConditionCheck on the ended mark refuses the activation and any new record.
    assert!(
        !p.store
            .activate(&second, Some(&first_rec), 1)
            .await
            .unwrap()
    );
    let mut third = second.clone();
    third.period_start_ms += 1;
    third.license_id = blapi::licensing::LicenseKey {
        subscription_id: sub.clone(),
        period_start_ms: third.period_start_ms,
        quantity: 9,
        sku: third.sku.clone(),
        supersedes: None,
    }
    .license_id();
    assert!(!p.store.begin(&third, None).await.unwrap());

    // The redelivery of the seat change (Stripe still says active) revokes, never activates.
    let out = p.service().reconcile(&sub).await.unwrap();
    let Outcome::Revoked { license_ids } = out else {
        panic!("{out:?}")
    };
    assert_eq!(license_ids.len(), 2, "{license_ids:?}");
    let recs = p.store.by_customer(&cus).await.unwrap();
    assert_eq!(active_of(&recs), 0, "{recs:?}");
    assert!(recs.iter().all(|r| r.status == LicenseStatus::Revoked));
    assert!(
        p.files.object(&second.file_key).is_some(),
        "a revoked record has its file"
    );
}

/// A subscription minted once, then a seat change left ISSUING, then its first license
/// revoked for `reason` before the successor is activated: (customer, subscription, period
/// start in seconds).
async fn predecessor_revoked_under_a_seat_change(
    p: &Parts,
    reason: RevocationReason,
) -> (String, String, i64) {
    let (cus, sub, start) = p.subscription(5);
    let Outcome::Minted {
        license_id: first, ..
    } = p.service().reconcile(&sub).await.expect("mint")
    else {
        panic!("mint")
    };
    successor_left_issuing(p, &sub, &cus, start, 9).await;
    let first_rec = p
        .store
        .get(&cus, &first)
        .await
        .expect("read")
        .expect("the first license");
    assert!(p.store.revoke(&first_rec, reason, 1).await.expect("revoke"));
    (cus, sub, start)
}

#[tokio::test]
async fn a_seat_change_never_activates_over_a_predecessor_revoked_meanwhile_on_dynamodb() {
    let p = parts().await;
    // A full refund revokes the first license before the successor is activated.
    let (cus, sub, start) =
        predecessor_revoked_under_a_seat_change(&p, RevocationReason::Refunded).await;
    let head = p.store.head(&sub, start * 1000).await.unwrap().unwrap();
    let second = p.store.get(&cus, &head.license_id).await.unwrap().unwrap();
    assert!(
        !p.store.activate(&second, None, 1).await.unwrap(),
        "the ConditionCheck on the predecessor refuses it"
    );
    let out = p.service().reconcile(&sub).await.unwrap();
    assert!(
        matches!(&out, Outcome::Revoked { license_ids } if license_ids == &vec![second.license_id.clone()]),
        "{out:?}"
    );
    let recs = p.store.by_customer(&cus).await.unwrap();
    assert_eq!(active_of(&recs), 0, "{recs:?}");

    // A predecessor suspended for non-payment (a reinstatement) is replaced as before.
    let (cus, sub, _) =
        predecessor_revoked_under_a_seat_change(&p, RevocationReason::Suspended).await;
    let out = p.service().reconcile(&sub).await.unwrap();
    assert!(matches!(out, Outcome::Existing { .. }), "{out:?}");
    let recs = p.store.by_customer(&cus).await.unwrap();
    assert_eq!(active_of(&recs), 1, "{recs:?}");
}
