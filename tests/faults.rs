//! The business flow under faults: the end-to-end scenario on a stack of its own, with every
//! call of the functions to moto and to localstripe going through a fault-injecting proxy
//! (connection resets before and after the request, answers held past the client's timeout,
//! 500 and 429 answers, and outages that refuse and cut every connection, as an emulator
//! killed and restarted), every SQS batch delivered three times at once, every Stripe webhook
//! and every first-party event delivered three times at once by senders that retry.
//!
//! Afterwards the invariants hold, counted from the stores, localstripe and the archive
//! ([`blapi_system_tests::accounting`]): one license per subscription term, one invoice per
//! customer and period, one lead per person, one CRM account per customer, and every event
//! the intake accepted is archived and processed or parked in a dead-letter queue.
//!
//! The faults are drawn from a fixed seed per proxy; which request meets which fault still
//! depends on timing, so each run differs in detail and the invariants must hold in all.

use blapi_system_tests::accounting::{self, Input, Sent, Verdict};
use blapi_system_tests::faults::{FaultPlan, Proxy, Relay};
use blapi_system_tests::harness::{Functions, StartOptions};
use blapi_system_tests::scenario::{STRIPE_KEY, World, run};
use std::sync::Arc;
use std::time::Duration;

/// Per mille of requests: 2 % reset before, 2 % reset after, 0.5 % stalled, 2 % 500, 2 % 429.
fn plan(seed: u64) -> FaultPlan {
    FaultPlan {
        reset_before: 20,
        reset_after: 20,
        stall: 5,
        error_500: 20,
        throttle_429: 20,
        // Past the 3 s read timeout the functions are given here.
        stall_for: Duration::from_secs(5),
        seed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_business_flow_keeps_its_invariants_under_faults_and_triple_delivery() {
    let stack = blapi_system_tests::fresh_stack().await;
    let localstripe = blapi_system_tests::localstripe_url();
    let aws = Arc::new(
        Proxy::start("moto", &stack.endpoint, plan(0x5eed_0001))
            .await
            .expect("moto proxy"),
    );
    let stripe = Arc::new(
        Proxy::start("localstripe", &localstripe, plan(0x5eed_0002))
            .await
            .expect("localstripe proxy"),
    );
    let options = StartOptions {
        env: [
            ("AWS_ENDPOINT_URL", aws.url.as_str()),
            ("STRIPE_API_BASE", stripe.url.as_str()),
            ("AWS_READ_TIMEOUT_MS", "3000"),
            ("STRIPE_TIMEOUT_MS", "3000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        copies: 3,
    };
    let logs = blapi_infra::repo_root().join("target/e2e");
    let functions = Functions::start_with(&stack, &logs, &options)
        .await
        .expect("functions start");
    let relay = Relay::start(
        functions.url("webhook-intake", "webhooks/stripe"),
        3,
        Duration::from_secs(120),
    )
    .await
    .expect("webhook relay");
    let mut world = World::new(&stack, &functions, &localstripe)
        .await
        .expect("world");
    world.stripe_webhook_url = Some(relay.url.clone());
    world.deliveries = 3;

    // Outages: moto and localstripe each gone for 2 s, every 40 s, out of step.
    let outages = {
        let (aws, stripe) = (aws.clone(), stripe.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(20)).await;
                aws.blackout(Duration::from_secs(2));
                tokio::time::sleep(Duration::from_secs(20)).await;
                stripe.blackout(Duration::from_secs(2));
            }
        })
    };
    let quiet = |_: &str| {};
    let outcome = run(&world, &quiet).await;
    outages.abort();
    let summaries = format!("{}\n{}", aws.summary(), stripe.summary());
    let summary = match outcome {
        Ok(s) => s,
        Err(e) => panic!(
            "scenario failed under faults: {e:#}\n{summaries}\n(function logs in target/e2e/{}-watch.log)",
            stack.prefix
        ),
    };
    world
        .settle(Duration::from_secs(180))
        .await
        .expect("the queues drain");
    for _ in 0..240 {
        if relay.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The faults really happened, on both emulators.
    for s in [aws.summary(), stripe.summary()] {
        assert!(s.faulted() > 0, "no request met a fault: {s}");
        assert!(s.blackouts > 0, "no outage: {s}");
    }
    println!("{summaries}");

    // What the senders got accepted: every Stripe webhook the relay delivered (its event id
    // from the body) and every first-party event the scenario posted.
    let mut sent = Vec::new();
    for r in relay.delivered() {
        let event: serde_json::Value = serde_json::from_slice(&r.body).expect("webhook JSON");
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        // localstripe sends every stack's events to every registered endpoint; this run's
        // customers are the ones its scenario made, the rest are not this test's to count.
        let accepted = r.accepted();
        sent.push(Sent {
            source: "stripe".to_owned(),
            kind: "stripe".to_owned(),
            event_type: event["type"].as_str().unwrap_or_default().to_owned(),
            verdict: if accepted {
                Verdict::Accepted
            } else {
                Verdict::Unknown
            },
            accepted_deliveries: r
                .statuses
                .iter()
                .filter(|s| (200..300).contains(*s))
                .count() as u32,
            effects: Vec::new(),
            id,
        });
    }
    let stripe_events = sent.len();
    for (source, id) in world.accepted.lock().expect("accepted").iter() {
        sent.push(Sent {
            source: source.clone(),
            id: id.clone(),
            kind: source.clone(),
            event_type: String::new(),
            verdict: Verdict::Accepted,
            accepted_deliveries: 3,
            effects: Vec::new(),
        });
    }
    let first_party = sent.len() - stripe_events;
    assert!(
        stripe_events >= 5 && first_party >= 5,
        "the scenario's traffic went through the senders: {stripe_events} Stripe, {first_party} first-party"
    );
    let report = accounting::account(
        &stack,
        &Input {
            sent,
            invoices: vec![(
                summary.invoice.customer.clone(),
                summary.invoice.period.clone(),
            )],
            localstripe: Some((localstripe.clone(), STRIPE_KEY.to_owned())),
        },
    )
    .await
    .expect("accounting");
    println!("{report}");
    assert!(
        report.lost().is_empty(),
        "lost: {:?}\n{report}",
        report.lost()
    );
    assert!(
        report.duplicated().is_empty(),
        "duplicated: {:?}\n{report}",
        report.duplicated()
    );
    assert!(report.is_clean(), "{report}");
    assert_eq!(summary.licenses.len(), 1, "{:?}", summary.licenses);
}
