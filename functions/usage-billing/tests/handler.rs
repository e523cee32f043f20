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
    assert_eq!(
        notes
            .iter()
            .map(|n| n["status"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["past_due", "active"]
    );

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
