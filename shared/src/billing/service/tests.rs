use super::*;
use crate::billing::memory::MemoryBilling;
use crate::billing::ports::shard_of;
use crate::ledger::MemoryLedger;
use crate::queue::MemoryQueue;
use crate::storage::MemoryStore;
use crate::stripe::{MemoryStripe, StripeOp};
use crate::telemetry::Tally;

struct Rig {
    billing: Billing,
    table: Arc<MemoryBilling>,
    stripe: Arc<MemoryStripe>,
    store: Arc<MemoryStore>,
    queue: Arc<MemoryQueue>,
}

const JOBS: &str = "jobs";
const NOTES: &str = "notes";

/// The billing services on in-memory stores, with the given Stripe capabilities.
pub(super) fn billing_on(
    stripe: Arc<dyn Invoicing>,
    collections: Arc<dyn crate::billing::ports::Collections>,
    table: &Arc<MemoryBilling>,
    store: &Arc<MemoryStore>,
    queue: &Arc<MemoryQueue>,
) -> Billing {
    Billing {
        ports: Ports {
            usage: table.clone(),
            subs: table.clone(),
            invoices: table.clone(),
            credits: table.clone(),
            dunning: table.clone(),
            stripe,
            collections,
            artifacts: store.clone(),
            ledger: Arc::new(MemoryLedger::new()),
            queue: queue.clone(),
            book: Arc::new(PriceBook::embedded().unwrap()),
        },
        config: BillingConfig {
            jobs_queue_url: JOBS.into(),
            notifications_queue_url: NOTES.into(),
            ingest: IngestPolicy::settled(),
            dunning: dunning::Policy::default(),
            lease: Duration::from_secs(60),
            customer_events_queue_url: Some("customer-events".into()),
            license_requests_queue_url: Some("license-requests".into()),
            issuing: Default::default(),
        },
    }
}

fn rig() -> Rig {
    let table = Arc::new(MemoryBilling::new());
    let stripe = Arc::new(MemoryStripe::new());
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let billing = billing_on(stripe.clone(), stripe.clone(), &table, &store, &queue);
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
    let keys = artifact_keys("cus_a", period());
    let json: serde_json::Value =
        serde_json::from_slice(&r.store.object(&keys.json).unwrap()).unwrap();
    assert_eq!(json["invoice"]["total"], 5720);
    assert_eq!(json["stripe"]["invoice"], "in_1");
    assert_eq!(json["document"]["number"], "MEM-1", "Stripe's number");
    let html = String::from_utf8(r.store.object(&keys.html).unwrap()).unwrap();
    assert!(
        html.contains("Total (USD)</td><td class=\"n\">57.20"),
        "{html}"
    );
    assert!(
        html.contains("https://invoice.stripe.test/i/in_1"),
        "the pay link"
    );
    let pdf = crate::billing::pdf::tests::text_of(&r.store.object(&keys.pdf).unwrap());
    assert!(pdf.contains("MEM-1") && pdf.contains("57.20"), "{pdf}");
    // The customer is told once, with the documents named (links are signed when sent).
    let notes: Vec<crate::notice::Notification> = r
        .queue
        .sent(NOTES)
        .iter()
        .map(|n| serde_json::from_str(n).unwrap())
        .filter(|n: &crate::notice::Notification| n.kind == "invoice.available")
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = &notes[0];
    assert_eq!(note.id, "invoice:cus_a:2026-10:available");
    assert_eq!(note.customer.as_deref(), Some("cus_a"));
    assert_eq!(note.data["number"], "MEM-1");
    assert_eq!(note.data["total"]["amount"], 5720);
    assert_eq!(note.data["amount_due"]["amount"], 5720);
    assert_eq!(note.data["pdf_key"], "invoices/cus_a/2026-10.pdf");
    assert_eq!(note.data["html_key"], "invoices/cus_a/2026-10.html");
    assert_eq!(note.data["pay_url"], "https://invoice.stripe.test/i/in_1");
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
        assert_eq!(r.store.keys().len(), 3, "fault {n}: JSON, HTML and PDF");
        assert_eq!(
            r.billing.bill("cus_a", period()).await.unwrap(),
            BillOutcome::AlreadyBilled
        );
    }
}

#[tokio::test]
async fn the_json_artifact_is_written_last_so_its_documents_are_there_when_it_is() {
    let r = rig();
    subscribe(&r, "cus_a", "cloud-pro", 2).await;
    usage_for(&r, "cus_a").await;
    let keys = artifact_keys("cus_a", period());
    // The store goes away after one document: the JSON (what readers look for) is not there.
    r.store.set_failing_after(1);
    let first = r.billing.bill("cus_a", period()).await;
    assert!(first.as_ref().is_err_and(Error::is_retryable), "{first:?}");
    assert!(r.store.object(&keys.html).is_some());
    assert!(r.store.object(&keys.pdf).is_none());
    assert!(
        r.store.object(&keys.json).is_none(),
        "no JSON without its HTML and PDF"
    );
    r.store.set_failing(false);
    let second = r.billing.bill("cus_a", period()).await.unwrap();
    assert!(matches!(second, BillOutcome::Invoiced { .. }), "{second:?}");
    for key in [&keys.html, &keys.pdf, &keys.json] {
        assert!(r.store.object(key).is_some(), "{key}");
    }
    assert_eq!(r.stripe.invoices("cus_a").len(), 1, "one invoice");
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

/// A Stripe subscription object of `sub_1` (2 seats of cloud-pro since 2026-09-01) in
/// `status`, cancelled at `canceled_at` when it is `canceled`.
fn sub_obj(status: &str, canceled_at: i64) -> serde_json::Value {
    serde_json::json!({"id": "sub_1", "customer": "cus_1", "status": status,
        "start_date": ts("2026-09-01T00:00:00Z"),
        "canceled_at": if status == "canceled" { serde_json::json!(canceled_at) } else { serde_json::Value::Null },
        "items": {"data": [{"quantity": 2, "plan": {"id": "plan_cloud_pro", "currency": "usd"}}]}})
}

#[tokio::test]
async fn a_same_second_update_after_the_deletion_does_not_bill_the_whole_period() {
    // Stripe sends `deleted` and a last `updated` (still `active`) in the same second; the
    // `updated` is applied second. The bill must stop at the cancellation: 10 of 31 days.
    let cancelled = ts("2026-10-10T12:00:00Z");
    let r = rig();
    for (id, t, status) in [
        ("evt_del", "customer.subscription.deleted", "canceled"),
        ("evt_upd", "customer.subscription.updated", "active"),
    ] {
        r.billing
            .apply_event(&stripe_msg(id, t, cancelled, sub_obj(status, cancelled)))
            .await
            .unwrap();
    }
    let view = r.table.get("cus_1", "sub_1").await.unwrap().unwrap();
    assert_eq!(
        (view.status.as_str(), view.end),
        ("canceled", Some(cancelled))
    );
    let out = r.billing.bill("cus_1", period()).await.unwrap();
    let prorated = crate::billing::money::scale_amount(2 * 1500, 10, 31);
    assert!(
        matches!(out, BillOutcome::Invoiced { total, .. } if total == prorated),
        "{out:?}: 2 seats x 15.00 for 10 of 31 days is {prorated}"
    );
}

#[tokio::test]
async fn a_cancelled_subscription_stays_cancelled_whatever_arrives_later() {
    let cancelled = ts("2026-10-10T12:00:00Z");
    let r = rig();
    let apply = |id: &'static str, t: &'static str, created: i64, status: &'static str| {
        let msg = stripe_msg(id, t, created, sub_obj(status, cancelled));
        let billing = &r.billing;
        async move { billing.apply_event(&msg).await.unwrap() }
    };
    apply(
        "evt_del",
        "customer.subscription.deleted",
        cancelled,
        "canceled",
    )
    .await;
    // A later `updated` of a live status (a clock skew, a replay, a hand-made event), an
    // older one redelivered, and the `created` redelivered: none brings it back.
    apply(
        "evt_late",
        "customer.subscription.updated",
        cancelled + 5,
        "active",
    )
    .await;
    apply(
        "evt_old",
        "customer.subscription.updated",
        cancelled - 86_400,
        "past_due",
    )
    .await;
    apply(
        "evt_new",
        "customer.subscription.created",
        cancelled - 40 * 86_400,
        "incomplete",
    )
    .await;
    let view = r.table.get("cus_1", "sub_1").await.unwrap().unwrap();
    assert_eq!(view.status, "canceled");
    assert_eq!(view.end, Some(cancelled));
    assert_eq!(view.updated_at, cancelled, "the deletion's view, untouched");
}

#[tokio::test]
async fn a_deleted_event_is_terminal_whatever_its_object_says() {
    let r = rig();
    let at = ts("2026-10-10T12:00:00Z");
    r.billing
        .apply_event(&stripe_msg(
            "evt_del",
            "customer.subscription.deleted",
            at,
            sub_obj("active", at),
        ))
        .await
        .unwrap();
    r.billing
        .apply_event(&stripe_msg(
            "evt_upd",
            "customer.subscription.updated",
            at,
            sub_obj("active", at),
        ))
        .await
        .unwrap();
    let view = r.table.get("cus_1", "sub_1").await.unwrap().unwrap();
    assert_eq!((view.status.as_str(), view.end), ("canceled", Some(at)));
}

#[tokio::test]
async fn within_one_second_the_activation_wins_over_the_incomplete_creation() {
    // `created` (incomplete, awaiting the first payment) and `updated` (active, paid) in one
    // second: whatever the order, the subscription is billed as active.
    let at = ts("2026-10-02T08:00:00Z");
    for order in [["created", "updated"], ["updated", "created"]] {
        let r = rig();
        for t in order {
            let status = if t == "created" {
                "incomplete"
            } else {
                "active"
            };
            r.billing
                .apply_event(&stripe_msg(
                    t,
                    &format!("customer.subscription.{t}"),
                    at,
                    sub_obj(status, at),
                ))
                .await
                .unwrap();
        }
        let view = r.table.get("cus_1", "sub_1").await.unwrap().unwrap();
        assert_eq!(view.status, "active", "{order:?}");
        assert!(view.billable_in(period()), "{order:?}");
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

fn sent(r: &Rig, queue: &str) -> Vec<serde_json::Value> {
    r.queue
        .sent(queue)
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect()
}

#[tokio::test]
async fn a_failed_payment_walks_the_ladder_with_one_notice_per_step() {
    use crate::billing::dunning::Status;
    let r = rig();
    r.stripe
        .put_subscription(serde_json::json!({"id": "sub_1", "object": "subscription",
        "customer": "cus_1", "status": "past_due", "items": {"object": "list", "data": []}}));
    let day = 86_400;
    let t0 = 1_780_000_000;
    let inv = |n: i64| {
        serde_json::json!({"id": "in_1", "customer": "cus_1", "attempt_count": n,
        "amount_due": 4200, "currency": "usd", "subscription": "sub_1",
        "hosted_invoice_url": "https://pay.example/in_1"})
    };
    for (id, n) in [("f1", 1), ("f1", 1), ("f2", 2)] {
        r.billing
            .apply_event(&stripe_msg(
                id,
                "invoice.payment_failed",
                t0 + (n - 1) * day,
                inv(n),
            ))
            .await
            .unwrap();
    }
    let tally = Tally::new("test", "usage-billing");
    let at = |d: i64| chrono::DateTime::from_timestamp(t0 + d * day + 3600, 0).unwrap();
    let mut steps = Vec::new();
    for d in 0..=31 {
        // twice a day: the second run finds nothing to do
        let first = r.billing.sweep_dunning(at(d), &tally).await.unwrap();
        let again = r.billing.sweep_dunning(at(d), &tally).await.unwrap();
        assert!(again.steps.is_empty(), "day {d}: {again:?}");
        steps.extend(first.steps.into_keys().map(|a| (d, a)));
    }
    assert_eq!(
        steps,
        [
            (1, "remind".to_string()),
            (3, "remind".into()),
            (7, "remind".into()),
            (14, "suspend".into()),
            (30, "cancel".into())
        ]
    );
    let kinds: Vec<String> = sent(&r, NOTES)
        .iter()
        .map(|n| n["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "billing.payment_failed",
            "billing.payment_failed",
            "billing.dunning_reminder",
            "billing.dunning_reminder",
            "billing.dunning_reminder",
            "billing.suspended",
            "billing.cancelled"
        ]
    );
    // the subscription was cancelled in Stripe, once
    assert_eq!(
        crate::stripe::StripeReads::subscription(r.stripe.as_ref(), "sub_1")
            .await
            .unwrap()
            .status,
        "canceled"
    );
    let standing = sent(&r, "license-requests");
    assert_eq!(standing.len(), 1);
    assert_eq!(standing[0]["type"], "customer.standing");
    assert_eq!(standing[0]["event"]["data"]["suspended"], true);
    assert_eq!(standing[0]["event"]["data"]["seq"], 1);

    // Paid (twice, two event types): active, the standing is lifted with a newer seq.
    let paid = serde_json::json!({"id": "in_1", "customer": "cus_1", "status_transitions": {"paid_at": t0 + 32 * day}});
    for (id, t) in [("p1", "invoice.paid"), ("p2", "invoice.payment_succeeded")] {
        r.billing
            .apply_event(&stripe_msg(id, t, t0 + 32 * day, paid.clone()))
            .await
            .unwrap();
    }
    let standing = sent(&r, "license-requests");
    assert_eq!(standing.len(), 2);
    assert_eq!(standing[1]["event"]["data"]["suspended"], false);
    assert_eq!(standing[1]["event"]["data"]["seq"], 2);
    assert_eq!(
        sent(&r, NOTES).last().unwrap()["type"],
        "billing.reinstated"
    );
    let (state, _) = DunningStore::load(r.table.as_ref(), "cus_1").await.unwrap();
    assert_eq!(state.status, Status::Active);
    assert!(state.outbox.is_empty());
    assert_eq!(state.next_at, None);
    assert!(
        DunningStore::due(r.table.as_ref(), i64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_effect_that_fails_stays_in_the_outbox_until_it_is_carried_out() {
    let r = rig();
    let inv = serde_json::json!({"id": "in_1", "customer": "cus_1", "attempt_count": 1});
    r.queue.set_failing(true);
    assert!(
        r.billing
            .apply_event(&stripe_msg(
                "f1",
                "invoice.payment_failed",
                1000,
                inv.clone()
            ))
            .await
            .unwrap_err()
            .is_retryable()
    );
    r.queue.set_failing(false);
    assert!(r.queue.sent(NOTES).is_empty());
    let (state, _) = DunningStore::load(r.table.as_ref(), "cus_1").await.unwrap();
    assert_eq!(state.outbox.len(), 1, "stored before it was attempted");
    assert_eq!(state.next_at, Some(0), "the sweep picks it up");
    // the redelivery finds the state unchanged and carries the outbox out
    r.billing
        .apply_event(&stripe_msg("f1", "invoice.payment_failed", 1000, inv))
        .await
        .unwrap();
    assert_eq!(r.queue.sent(NOTES).len(), 1);
    let (state, _) = DunningStore::load(r.table.as_ref(), "cus_1").await.unwrap();
    assert!(state.outbox.is_empty());
}

#[tokio::test]
async fn payment_method_events_keep_the_card_and_unknown_customers_are_acknowledged() {
    let r = rig();
    r.stripe.put_customer(
        serde_json::json!({"id": "cus_1", "invoice_settings": {"default_payment_method": "pm_1"}}),
    );
    r.stripe
        .put_payment_method(serde_json::json!({"id": "pm_1", "customer": "cus_1",
        "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2026}}));
    let pm = serde_json::json!({"id": "pm_1", "customer": "cus_1"});
    assert!(
        r.billing
            .apply_event(&stripe_msg("a1", "payment_method.attached", 500, pm))
            .await
            .unwrap()
    );
    let (state, _) = DunningStore::load(r.table.as_ref(), "cus_1").await.unwrap();
    let card = state.payment_method.unwrap().card.unwrap();
    assert_eq!((card.last4.as_str(), card.exp_month), ("4242", 12));
    // detached: the customer is only in previous_attributes; the re-read says no card
    r.stripe.put_customer(
        serde_json::json!({"id": "cus_1", "invoice_settings": {"default_payment_method": null}}),
    );
    let mut msg = stripe_msg(
        "d1",
        "payment_method.detached",
        600,
        serde_json::json!({"id": "pm_1", "customer": null}),
    );
    msg.event["data"]["previous_attributes"] = serde_json::json!({"customer": "cus_1"});
    r.billing.apply_event(&msg).await.unwrap();
    let (state, _) = DunningStore::load(r.table.as_ref(), "cus_1").await.unwrap();
    assert_eq!(state.payment_method.unwrap().card, None);
    // a card-expiry event for a customer Stripe does not know: acknowledged, nothing stored
    let src = serde_json::json!({"id": "card_1", "object": "card", "customer": "cus_nobody"});
    assert!(
        !r.billing
            .apply_event(&stripe_msg("x1", "customer.source.expiring", 700, src))
            .await
            .unwrap()
    );
    assert_eq!(
        DunningStore::load(r.table.as_ref(), "cus_nobody")
            .await
            .unwrap()
            .1,
        0
    );
    // a forged customer id is refused
    let bad = serde_json::json!({"id": "pm_2", "customer": "../cus_1"});
    assert!(
        r.billing
            .apply_event(&stripe_msg("x2", "payment_method.attached", 700, bad))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_invoice_for_a_customer_without_a_payment_method_starts_dunning_at_once() {
    let r = rig();
    r.stripe.put_customer(
        serde_json::json!({"id": "cus_1", "invoice_settings": {"default_payment_method": null}}),
    );
    // known from the customer's events: no card on file
    r.billing
        .apply_event(&stripe_msg(
            "c1",
            "customer.created",
            100,
            serde_json::json!({"id": "cus_1", "object": "customer"}),
        ))
        .await
        .unwrap();
    subscribe(&r, "cus_1", "cloud-pro", 1).await;
    assert!(matches!(
        r.billing.bill("cus_1", period()).await.unwrap(),
        BillOutcome::Invoiced { .. }
    ));
    let missing = |r: &Rig| {
        sent(r, NOTES)
            .into_iter()
            .filter(|n| n["type"] == "billing.payment_method_missing")
            .count()
    };
    assert_eq!(missing(&r), 1);
    let (state, _) = DunningStore::load(r.table.as_ref(), "cus_1").await.unwrap();
    assert_eq!(state.status, crate::billing::dunning::Status::PastDue);
    assert!(state.next_at.is_some());
    // a rerun starts nothing twice
    r.billing.bill("cus_1", period()).await.unwrap();
    assert_eq!(missing(&r), 1);
    // a customer never seen counts as able to pay: no Stripe call to find out
    subscribe(&r, "cus_2", "cloud-pro", 1).await;
    let calls = r.stripe.calls();
    r.billing.bill("cus_2", period()).await.unwrap();
    assert_eq!(missing(&r), 1);
    let (state, _) = DunningStore::load(r.table.as_ref(), "cus_2").await.unwrap();
    assert_eq!(state.status, crate::billing::dunning::Status::Active);
    assert!(r.stripe.calls() > calls);
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

/// A dunning store where a payment lands (a concurrent worker saves it) just as the first
/// suspension is being saved.
struct PaidDuringSuspension {
    inner: Arc<MemoryBilling>,
    fired: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl DunningStore for PaidDuringSuspension {
    async fn load(&self, customer: &str) -> crate::Result<(crate::billing::dunning::Dunning, u64)> {
        DunningStore::load(self.inner.as_ref(), customer).await
    }
    async fn save(
        &self,
        customer: &str,
        state: &crate::billing::dunning::Dunning,
        version: u64,
    ) -> crate::Result<()> {
        use crate::billing::dunning::{InvoiceEvent, Status};
        if state.status == Status::Suspended
            && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let (mut paid, v) = DunningStore::load(self.inner.as_ref(), customer).await?;
            paid.apply(
                customer,
                &InvoiceEvent::Paid {
                    invoice: "in_1".into(),
                    at: 1_780_000_000 + 14 * 86_400,
                },
            );
            paid.outbox.clear();
            DunningStore::save(self.inner.as_ref(), customer, &paid, v).await?;
        }
        DunningStore::save(self.inner.as_ref(), customer, state, version).await
    }
    async fn due(&self, now: i64) -> crate::Result<Vec<String>> {
        DunningStore::due(self.inner.as_ref(), now).await
    }
}

#[tokio::test]
async fn a_payment_landing_while_the_suspension_is_saved_leaves_the_customer_active() {
    use crate::billing::dunning::Status;
    let mut r = rig();
    let store = Arc::new(PaidDuringSuspension {
        inner: r.table.clone(),
        fired: std::sync::atomic::AtomicBool::new(false),
    });
    r.billing.ports.dunning = store.clone();
    let t0 = 1_780_000_000;
    let inv = serde_json::json!({"id": "in_1", "customer": "cus_1", "attempt_count": 1});
    r.billing
        .apply_event(&stripe_msg("f1", "invoice.payment_failed", t0, inv))
        .await
        .unwrap();
    let tally = Tally::new("test", "usage-billing");
    let at = chrono::DateTime::from_timestamp(t0 + 14 * 86_400 + 60, 0).unwrap();
    let report = r.billing.sweep_dunning(at, &tally).await.unwrap();
    assert!(store.fired.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(report.failed, 0);
    let (state, _) = DunningStore::load(r.table.as_ref(), "cus_1").await.unwrap();
    assert_eq!(
        state.status,
        Status::Active,
        "never suspended after payment"
    );
    assert!(
        r.queue.sent("license-requests").is_empty(),
        "no suspension sent to licensing"
    );
    assert!(
        !sent(&r, NOTES)
            .iter()
            .any(|n| n["type"] == "billing.suspended"),
        "no suspension notice"
    );
}
