//! The handler on the sample events in `events/usage-billing/`, with in-memory ports.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use blapi::billing::ports::SubscriptionView;
use blapi::billing::service::Job;
use blapi::billing::usage::RejectReason;
use lambda_runtime::{Context, LambdaEvent};

mod support;
use support::{call, event, failures, rig};

#[tokio::test]
async fn sample_events_flow_through_every_trigger() {
    let r = rig("2026-10-20T12:00:00Z");
    // billing events: the subscription view, then dunning past_due -> active
    let resp = call(&r.app, event("billing-events.json")).await;
    assert!(failures(&resp).is_empty(), "{resp}");
    assert!(
        r.table
            .get("cus_demo1", "sub_demo1")
            .await
            .unwrap()
            .is_some()
    );
    let notes: Vec<serde_json::Value> = r
        .queue
        .sent("notes")
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    // the failed payment is told once; the payment (never suspended) needs no notice
    assert_eq!(
        notes
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["billing.payment_failed"]
    );
    assert_eq!(notes[0]["customer"], "cus_demo1");
    assert_eq!(notes[0]["invoice"], "in_demo1");

    // usage: 3 accepted, the negative one refused (stored), the message itself succeeds
    let resp = call(&r.app, event("usage-events.json")).await;
    assert!(failures(&resp).is_empty(), "{resp}");
    let rejected = r.table.rejected();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, RejectReason::NegativeValue);
    // a redelivery is all duplicates (the refusal is stored again under the same key in DynamoDB)
    call(&r.app, event("usage-events.json")).await;

    // direct bill
    let out = call(&r.app, event("bill.json")).await;
    assert_eq!(out["outcome"], "invoiced", "{out}");
    // starter: 2900 platform + api 1200 -> 200 × 0.5 = 100 + storage 12.5 GB × 12/31 days weighted
    // + 1 installation × 500
    assert!(out["total"].as_i64().unwrap() > 3500, "{out}");
    let again = call(&r.app, event("bill.json")).await;
    assert_eq!(again["outcome"], "already_billed");
}

#[tokio::test]
async fn a_malformed_job_fails_alone() {
    let r = rig("2026-10-20T12:00:00Z");
    call(&r.app, event("billing-events.json")).await;
    let resp = call(&r.app, event("billing-jobs-malformed.json")).await;
    assert_eq!(failures(&resp), vec!["m2", "m3"]);
}

#[tokio::test]
async fn the_schedule_plans_the_previous_month() {
    for name in ["schedule.json", "scheduled-event.json"] {
        let r = rig("2026-11-01T03:00:00Z");
        let out = call(&r.app, event(name)).await;
        assert_eq!(out["period"], "2026-10", "{name}");
        let jobs = r.queue.sent("jobs");
        assert_eq!(jobs.len(), 16);
        let first: Job = serde_json::from_str(&jobs[0]).unwrap();
        assert_eq!(
            first,
            Job::PlanShard {
                period: "2026-10".parse().unwrap(),
                shard: 0
            }
        );
    }
    let r = rig("2026-11-01T03:00:00Z");
    assert!(
        r.app
            .handle(LambdaEvent::new(
                serde_json::json!({"hello": 1}),
                Context::default()
            ))
            .await
            .is_err()
    );
    assert!(
        r.app
            .handle(LambdaEvent::new(
                serde_json::json!({"action": "explode"}),
                Context::default()
            ))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn payment_method_events_keep_the_card_and_the_sweep_walks_the_ladder() {
    use blapi::billing::ports::DunningStore;
    let r = rig("2026-12-03T10:00:00Z");
    r.stripe.put_customer(serde_json::json!({"id": "cus_demo1",
        "invoice_settings": {"default_payment_method": "pm_demo1"}}));
    r.stripe.put_payment_method(
        serde_json::json!({"id": "pm_demo1", "customer": "cus_demo1",
        "card": {"brand": "visa", "last4": "4242", "exp_month": 1, "exp_year": 2027}}),
    );
    let resp = call(&r.app, event("payment-method-events.json")).await;
    assert!(failures(&resp).is_empty(), "{resp}");
    let (state, _) = r.table.load("cus_demo1").await.unwrap();
    let card = state.payment_method.unwrap().card.unwrap();
    assert_eq!((card.last4.as_str(), card.exp_year), ("4242", 2027));
    // the card expires end of January 2027: the 30-day notice is due on 2027-01-02
    let out = call(&r.app, event("sweep-dunning.json")).await;
    assert_eq!(out["report"]["due"], 0, "{out}");
    let at = serde_json::json!({"action": "sweep_dunning", "at": "2027-01-03T06:00:00Z"});
    let out = call(&r.app, at.clone()).await;
    assert_eq!(out["report"]["due"], 1, "{out}");
    assert_eq!(out["report"]["effects"], 1, "{out}");
    let notes = r.queue.sent("notes");
    assert_eq!(notes.len(), 1);
    let note: serde_json::Value = serde_json::from_str(&notes[0]).unwrap();
    assert_eq!(note["type"], "billing.card_expiring");
    assert_eq!(note["days"], 30);
    // the same day again: nothing new
    let out = call(&r.app, at).await;
    assert_eq!(out["report"]["due"], 0, "{out}");
    assert_eq!(r.queue.sent("notes").len(), 1);
}
