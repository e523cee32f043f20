use super::*;
use crate::billing::memory::MemoryBilling;
use crate::billing::ports::shard_of;
use crate::ledger::MemoryLedger;
use crate::queue::MemoryQueue;
use crate::storage::MemoryStore;
use crate::stripe::{MemoryStripe, StripeOp};

struct Rig {
    billing: Billing,
    table: Arc<MemoryBilling>,
    stripe: Arc<MemoryStripe>,
    store: Arc<MemoryStore>,
    queue: Arc<MemoryQueue>,
}

const JOBS: &str = "jobs";
const NOTES: &str = "notes";

fn rig() -> Rig {
    let table = Arc::new(MemoryBilling::new());
    let stripe = Arc::new(MemoryStripe::new());
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let billing = Billing {
        ports: Ports {
            usage: table.clone(),
            subs: table.clone(),
            invoices: table.clone(),
            credits: table.clone(),
            dunning: table.clone(),
            stripe: stripe.clone(),
            artifacts: store.clone(),
            ledger: Arc::new(MemoryLedger::new()),
            queue: queue.clone(),
            book: Arc::new(PriceBook::embedded().unwrap()),
        },
        config: BillingConfig {
            jobs_queue_url: JOBS.into(),
            notifications_queue_url: NOTES.into(),
            ingest: IngestPolicy::default(),
            dunning: dunning::Policy {
                suspend_after_days: 14,
                suspend_after_attempts: 4,
            },
            lease: Duration::from_secs(60),
            customer_events_queue_url: Some("customer-events".into()),
        },
    };
    Rig {
        billing,
        table,
        stripe,
        store,
        queue,
    }
}

fn period() -> Period {
    "2026-10".parse().unwrap()
}

fn now() -> DateTime<Utc> {
    "2026-10-20T00:00:00Z".parse().unwrap()
}

fn ts(s: &str) -> i64 {
    s.parse::<DateTime<Utc>>().unwrap().timestamp()
}

async fn subscribe(r: &Rig, customer: &str, plan: &str, qty: i64) {
    let sub = Subscription {
        customer: customer.into(),
        subscription: format!("sub_{customer}"),
        plan: plan.into(),
        quantity: qty,
        status: "active".into(),
        currency: None,
        start: ts("2026-01-01T00:00:00Z"),
        end: None,
        updated_at: 1,
    };
    r.table.upsert(&sub).await.unwrap();
}

fn rec(
    id: &str,
    customer: &str,
    metric: &str,
    value: serde_json::Value,
    t: &str,
) -> serde_json::Value {
    serde_json::json!({"id": id, "customer": customer, "subscription": format!("sub_{customer}"),
        "metric": metric, "value": value, "timestamp": t, "installation": "i-1"})
}

#[tokio::test]
async fn ingest_dedupes_and_refuses_with_reasons() {
    let r = rig();
    subscribe(&r, "cus_a", "cloud-pro", 1).await;
    let t = "2026-10-10T10:00:00Z";
    let records = vec![
        rec("u1", "cus_a", "builds", serde_json::json!(1), t),
        rec("u1", "cus_a", "builds", serde_json::json!(1), t), // duplicate id
        rec("u2", "cus_a", "builds", serde_json::json!(1), t),
        rec("u3", "cus_zz", "builds", serde_json::json!(1), t),
        rec("u4", "cus_a", "bogus", serde_json::json!(1), t),
        rec("u5", "cus_a", "builds", serde_json::json!(-3), t),
        rec("u6", "cus_a", "builds", serde_json::json!("many"), t),
        rec(
            "u7",
            "cus_a",
            "builds",
            serde_json::json!(1),
            "2026-08-01T00:00:00Z",
        ),
        rec(
            "u8",
            "cus_a",
            "builds",
            serde_json::json!(1),
            "2026-10-21T00:00:00Z",
        ),
        serde_json::json!({"id": "u9", "nonsense": true}),
    ];
    let rep = r.billing.ingest(&records, now()).await.unwrap();
    assert_eq!(rep.accepted, 2);
    assert_eq!(rep.duplicates, 1);
    let reasons: Vec<(String, RejectReason)> = rep
        .rejected
        .iter()
        .map(|x| (x.record_id.clone(), x.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("u3".into(), RejectReason::UnknownCustomer),
            ("u4".into(), RejectReason::UnknownMetric),
            ("u5".into(), RejectReason::NegativeValue),
            ("u6".into(), RejectReason::NonNumericValue),
            ("u7".into(), RejectReason::Late),
            ("u8".into(), RejectReason::FutureTimestamp),
            ("u9".into(), RejectReason::Malformed),
        ]
    );
    assert_eq!(
        r.table.rejected().len(),
        7,
        "refusals are stored, not dropped"
    );
    // closed period: late
    r.billing
        .plan(period(), "2026-11-01T03:00:00Z".parse().unwrap())
        .await
        .unwrap();
    let rep = r
        .billing
        .ingest(
            &[rec("u10", "cus_a", "builds", serde_json::json!(1), t)],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(rep.rejected[0].reason, RejectReason::PeriodClosed);
}

async fn usage_for(r: &Rig, customer: &str) {
    let t = "2026-10-10T10:00:00Z";
    let recs: Vec<_> = (0..10)
        .map(|i| {
            rec(
                &format!("{customer}-b{i}"),
                customer,
                "builds",
                serde_json::json!(1),
                t,
            )
        })
        .chain([rec(
            &format!("{customer}-api"),
            customer,
            "api_calls",
            serde_json::json!(25_000),
            t,
        )])
        .collect();
    r.billing.ingest(&recs, now()).await.unwrap();
}

#[tokio::test]
async fn bill_creates_one_invoice_and_reruns_skip() {
    let r = rig();
    subscribe(&r, "cus_a", "cloud-pro", 2).await;
    usage_for(&r, "cus_a").await;
    // seats 2 × 1500 + api 3 × 900 + builds 10 × 2 = 5720
    let out = r.billing.bill("cus_a", period()).await.unwrap();
    assert_eq!(
        out,
        BillOutcome::Invoiced {
            stripe_invoice: Some("in_1".into()),
            total: 5720,
            resumed: false
        }
    );
    assert_eq!(
        r.stripe.invoices("cus_a"),
        vec![("in_1".into(), 5720, true, 3)]
    );
    assert_eq!(
        r.stripe.calls(),
        5,
        "3 items + invoice + finalize, no lookups on a first run"
    );
    let (j, h) = artifact_keys("cus_a", period());
    let json: serde_json::Value = serde_json::from_slice(&r.store.object(&j).unwrap()).unwrap();
    assert_eq!(json["invoice"]["total"], 5720);
    assert_eq!(json["stripe"]["invoice"], "in_1");
    assert!(
        String::from_utf8(r.store.object(&h).unwrap())
            .unwrap()
            .contains("57.20 USD")
    );
    for _ in 0..2 {
        assert_eq!(
            r.billing.bill("cus_a", period()).await.unwrap(),
            BillOutcome::AlreadyBilled
        );
    }
    assert_eq!(r.stripe.invoices("cus_a").len(), 1);
    assert_eq!(
        r.billing.bill("cus_nobody", period()).await.unwrap(),
        BillOutcome::NothingToBill
    );
    // Customer sync heard of the invoice once: its Stripe id, total and artifacts.
    let sent = r.queue.sent("customer-events");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let msg: crate::queue::EventMessage = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(
        (msg.source.as_str(), msg.event_type.as_str()),
        ("blapi", "invoice.finalized")
    );
    assert_eq!(msg.id, "invoice.finalized:cus_a:2026-10");
    assert_eq!(msg.event["data"]["invoice"], "in_1");
    assert_eq!(msg.event["data"]["total"]["amount"], 5720);
    assert_eq!(
        msg.event["data"]["period_end"], 1_793_491_200,
        "2026-11-01T00:00:00Z"
    );
}

enum Fault {
    Stripe(StripeOp),
    Save(BillState),
    Artifacts,
}

#[tokio::test]
async fn a_crash_at_any_step_then_rerun_yields_one_invoice_and_one_credit_use() {
    let faults = [
        Fault::Stripe(StripeOp::CreateItem),
        Fault::Stripe(StripeOp::CreateInvoice),
        Fault::Stripe(StripeOp::Finalize),
        Fault::Save(BillState::Planned),
        Fault::Save(BillState::Credited),
        Fault::Save(BillState::ItemsCreated),
        Fault::Save(BillState::InvoiceCreated),
        Fault::Save(BillState::Finalized),
        Fault::Save(BillState::ArtifactsWritten),
        Fault::Save(BillState::Done),
        Fault::Artifacts,
    ];
    for (n, fault) in faults.iter().enumerate() {
        let r = rig();
        subscribe(&r, "cus_a", "cloud-pro", 2).await;
        usage_for(&r, "cus_a").await;
        let usd: Currency = "usd".parse().unwrap();
        r.billing
            .grant_credit("cus_a", "promo-1", Money::new(1000, usd))
            .await
            .unwrap();
        match fault {
            Fault::Stripe(op) => r.stripe.crash_after(*op),
            Fault::Save(s) => r.table.fail_next_save_into(*s),
            Fault::Artifacts => r.store.set_failing(true),
        }
        let first = r.billing.bill("cus_a", period()).await;
        assert!(
            first.as_ref().is_err_and(Error::is_retryable),
            "fault {n}: {first:?}"
        );
        r.store.set_failing(false);
        let second = r.billing.bill("cus_a", period()).await.unwrap();
        assert!(
            matches!(second, BillOutcome::Invoiced { total: 4720, .. }),
            "fault {n}: {second:?}"
        );
        let invoices = r.stripe.invoices("cus_a");
        assert_eq!(invoices.len(), 1, "fault {n}: one invoice");
        assert_eq!(invoices[0].1, 4720, "fault {n}: total");
        assert!(invoices[0].2, "fault {n}: finalized");
        assert_eq!(
            invoices[0].3, 4,
            "fault {n}: 3 charge lines + 1 credit line"
        );
        assert_eq!(r.stripe.item_count(), 4, "fault {n}: no duplicate item");
        assert_eq!(
            r.table.credit_balance("cus_a"),
            0,
            "fault {n}: credit used once"
        );
        assert_eq!(r.store.keys().len(), 2, "fault {n}: both artifacts");
        assert_eq!(
            r.billing.bill("cus_a", period()).await.unwrap(),
            BillOutcome::AlreadyBilled
        );
    }
}

#[tokio::test]
async fn credit_larger_than_the_invoice_leaves_the_rest() {
    let r = rig();
    subscribe(&r, "cus_a", "cloud-pro", 1).await;
    let usd: Currency = "usd".parse().unwrap();
    r.billing
        .grant_credit("cus_a", "g1", Money::new(10_000, usd.clone()))
        .await
        .unwrap();
    assert!(
        !r.billing
            .grant_credit("cus_a", "g1", Money::new(10_000, usd.clone()))
            .await
            .unwrap(),
        "grant once"
    );
    let out = r.billing.bill("cus_a", period()).await.unwrap();
    assert!(
        matches!(out, BillOutcome::Invoiced { total: 0, .. }),
        "{out:?}"
    );
    assert_eq!(r.table.credit_balance("cus_a"), 8_500);
    assert!(
        r.billing
            .grant_credit("cus_a", "g2", Money::new(0, usd))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn plan_fans_out_by_shard_and_enqueues_each_billable_customer_once() {
    let r = rig();
    let customers: Vec<String> = (0..40).map(|i| format!("cus_{i}")).collect();
    for c in &customers {
        subscribe(&r, c, "cloud-pro", 1).await;
    }
    // a second subscription of one customer, and one not billable in the period
    let mut extra = r.table.get("cus_1", "sub_cus_1").await.unwrap().unwrap();
    extra.subscription = "sub_cus_1_b".into();
    r.table.upsert(&extra).await.unwrap();
    let mut later = extra.clone();
    later.customer = "cus_late".into();
    later.start = ts("2026-11-05T00:00:00Z");
    r.table.upsert(&later).await.unwrap();

    assert!(
        r.billing.plan(period(), now()).await.is_err(),
        "an open period cannot be planned"
    );
    assert_eq!(
        r.billing
            .plan(period(), "2026-11-01T03:00:00Z".parse().unwrap())
            .await
            .unwrap(),
        SHARDS as usize
    );
    let shard_jobs = r.queue.sent(JOBS);
    assert_eq!(shard_jobs.len(), SHARDS as usize);
    let mut total = 0;
    for body in shard_jobs {
        let Job::PlanShard { period: p, shard } = serde_json::from_str(&body).unwrap() else {
            panic!("{body}")
        };
        total += r.billing.plan_shard(p, shard).await.unwrap();
    }
    assert_eq!(total, 40);
    let bills: HashSet<String> = r
        .queue
        .sent(JOBS)
        .iter()
        .filter_map(|b| match serde_json::from_str::<Job>(b).unwrap() {
            Job::Bill { customer, .. } => Some(customer),
            _ => None,
        })
        .collect();
    assert_eq!(bills.len(), 40);
    assert!(r.billing.plan_shard(period(), SHARDS).await.is_err());
    assert!(customers.iter().all(|c| shard_of(c) < SHARDS));
}

fn stripe_msg(id: &str, t: &str, created: i64, object: serde_json::Value) -> EventMessage {
    EventMessage {
        id: id.into(),
        source: "stripe".into(),
        event_type: t.into(),
        received_at: now(),
        raw_key: "raw/x".into(),
        event: serde_json::json!({"id": id, "type": t, "created": created, "data": {"object": object}}),
    }
}

#[tokio::test]
async fn within_one_second_a_cancellation_wins_whatever_the_order() {
    let obj = |status: &str| {
        serde_json::json!({"id": "sub_1", "customer": "cus_1", "status": status, "start_date": 1_780_000_000,
        "canceled_at": if status == "canceled" { serde_json::json!(1_780_100_000) } else { serde_json::Value::Null },
        "items": {"data": [{"quantity": 2, "plan": {"id": "plan_cloud_pro", "currency": "usd"}}]}})
    };
    for order in [["deleted", "updated"], ["updated", "deleted"]] {
        let r = rig();
        for t in order {
            let status = if t == "deleted" { "canceled" } else { "active" };
            r.billing
                .apply_event(&stripe_msg(
                    t,
                    &format!("customer.subscription.{t}"),
                    300,
                    obj(status),
                ))
                .await
                .unwrap();
        }
        let view = r.table.get("cus_1", "sub_1").await.unwrap().unwrap();
        assert_eq!(view.status, "canceled", "{order:?}");
    }
}

#[tokio::test]
async fn subscription_events_keep_the_newest_view() {
    let r = rig();
    let obj = |qty: i64| {
        serde_json::json!({"id": "sub_1", "customer": "cus_1", "status": "active", "start_date": 1_780_000_000,
        "items": {"data": [{"quantity": qty, "plan": {"id": "plan_cloud_pro", "currency": "usd"}}]}})
    };
    r.billing
        .apply_event(&stripe_msg(
            "e2",
            "customer.subscription.updated",
            200,
            obj(5),
        ))
        .await
        .unwrap();
    r.billing
        .apply_event(&stripe_msg(
            "e1",
            "customer.subscription.created",
            100,
            obj(1),
        ))
        .await
        .unwrap();
    assert_eq!(
        r.table
            .get("cus_1", "sub_1")
            .await
            .unwrap()
            .unwrap()
            .quantity,
        5
    );
    assert!(
        !r.billing
            .apply_event(&stripe_msg(
                "e3",
                "invoice.created",
                300,
                serde_json::json!({"id": "in_1", "customer": "cus_1"})
            ))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn dunning_events_notify_on_changes_only() {
    let r = rig();
    let inv = |n: i64| serde_json::json!({"id": "in_1", "customer": "cus_1", "attempt_count": n});
    let day = 86_400;
    r.billing
        .apply_event(&stripe_msg("f1", "invoice.payment_failed", 1000, inv(1)))
        .await
        .unwrap();
    r.billing
        .apply_event(&stripe_msg("f1", "invoice.payment_failed", 1000, inv(1)))
        .await
        .unwrap(); // duplicate
    r.billing
        .apply_event(&stripe_msg(
            "f2",
            "invoice.payment_failed",
            1000 + 14 * day,
            inv(2),
        ))
        .await
        .unwrap();
    let paid = serde_json::json!({"id": "in_1", "customer": "cus_1", "status_transitions": {"paid_at": 1000 + 15 * day}});
    r.billing
        .apply_event(&stripe_msg(
            "p1",
            "invoice.paid",
            1000 + 15 * day,
            paid.clone(),
        ))
        .await
        .unwrap();
    r.billing
        .apply_event(&stripe_msg(
            "p2",
            "invoice.payment_succeeded",
            1000 + 15 * day,
            paid,
        ))
        .await
        .unwrap();
    let notes: Vec<serde_json::Value> = r
        .queue
        .sent(NOTES)
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let statuses: Vec<&str> = notes
        .iter()
        .map(|n| n["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["past_due", "suspended", "active"]);
    assert_eq!(
        DunningStore::load(r.table.as_ref(), "cus_1")
            .await
            .unwrap()
            .0
            .status,
        Status::Active
    );
}

#[tokio::test]
async fn nothing_to_bill_is_not_final() {
    let r = rig();
    assert_eq!(
        r.billing.bill("cus_late", period()).await.unwrap(),
        BillOutcome::NothingToBill
    );
    subscribe(&r, "cus_late", "cloud-pro", 1).await;
    assert!(matches!(
        r.billing.bill("cus_late", period()).await.unwrap(),
        BillOutcome::Invoiced { total: 1500, .. }
    ));
}
