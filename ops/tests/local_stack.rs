//! blapi-ops against the local stack (a fresh one per test: it moves whole queues):
//! a poison message parked in a DLQ, moved back exactly once (`--max`, dry runs, an empty
//! queue); archived events replayed through the routing table, from batched and sealed archive
//! objects and from the single-event objects of before (window, type filter, duplicates,
//! tombstones, an object that no longer parses, `--to` before `--from`); the archive sealed by
//! hand; a missed Stripe event recovered once. Needs `make up`.

#![allow(clippy::unwrap_used)]

use blapi::queue::SqsSender;
use blapi::storage::{ObjectStore, S3Store};
use blapi_infra::template::Template;
use blapi_infra::testing::{drain_queue, fresh_stack};
use blapi_ops::dlq;
use blapi_ops::replay::{self, ReplayRequest};
use blapi_ops::stack::Stack;
use serde_json::{Value, json};
use std::sync::Arc;

struct World {
    stack: Stack,
    sqs: aws_sdk_sqs::Client,
    store: Arc<dyn ObjectStore>,
}

async fn world() -> World {
    let local = fresh_stack().await;
    let sdk = local.sdk_config().await;
    let template = Template::load(&blapi_infra::repo_root().join("template.yaml")).unwrap();
    let stack = Stack::of_local(local, template).unwrap();
    let s3 = aws_sdk_s3::Client::new(&sdk);
    let store: Arc<dyn ObjectStore> =
        Arc::new(S3Store::new(s3.clone(), stack.bucket().unwrap().to_owned()));
    World {
        stack,
        sqs: aws_sdk_sqs::Client::new(&sdk),
        store,
    }
}

impl World {
    async fn send(&self, queue: &str, body: &str) {
        self.sqs
            .send_message()
            .queue_url(self.stack.physical(queue).unwrap())
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    fn quiet() -> impl Fn(&str) {
        |_: &str| {}
    }
}

#[tokio::test]
async fn a_parked_message_goes_back_to_its_queue_exactly_once() {
    let w = world().await;
    let poison = json!({"id": "evt_1", "source": "stripe", "type": "customer.created",
        "received_at": "2026-03-02T10:00:00Z", "raw_key": "raw/stripe/2026/03/02/evt_1.json",
        "event": {"data": {"object": {"email": "ada@example.com"}}}})
    .to_string();
    for _ in 0..3 {
        w.send("LicenseRequestsDLQ", &poison).await;
    }
    let states = dlq::list(&w.stack, &w.sqs, chrono::Utc::now().timestamp_millis())
        .await
        .unwrap();
    let s = states
        .iter()
        .find(|s| s.queue == "LicenseRequestsDLQ")
        .unwrap();
    assert_eq!(s.depth, 3);
    assert_eq!(s.sources, ["LicenseRequestsQueue"]);
    assert_eq!(s.sample.as_deref(), Some("stripe customer.created evt_1"));
    assert!(s.oldest_age_s.is_some_and(|a| a >= 0));
    let listed = serde_json::to_string(&states).unwrap();
    assert!(
        !listed.contains("ada@example.com"),
        "no personal data: {listed}"
    );
    assert!(
        states
            .iter()
            .any(|s| s.queue == "RevenueJobsDLQ" && s.depth == 0),
        "every DLQ is listed: {listed}"
    );

    // A dry run moves nothing.
    let dry = dlq::redrive(
        &w.stack,
        &w.sqs,
        "license-requests-dlq",
        None,
        None,
        true,
        &World::quiet(),
    )
    .await
    .unwrap();
    assert_eq!((dry.moved, dry.to.as_str()), (3, "LicenseRequestsQueue"));
    let source = w.stack.physical("LicenseRequestsQueue").unwrap().to_owned();
    assert!(drain_queue(&w.sqs, &source).await.is_empty());

    // Two, then the rest: each message arrives once, unchanged.
    let first = dlq::redrive(
        &w.stack,
        &w.sqs,
        "LicenseRequestsDLQ",
        None,
        Some(2),
        false,
        &World::quiet(),
    )
    .await
    .unwrap();
    assert_eq!((first.moved, first.left), (2, 1));
    let rest = dlq::redrive(
        &w.stack,
        &w.sqs,
        "LicenseRequestsDLQ",
        None,
        None,
        false,
        &World::quiet(),
    )
    .await
    .unwrap();
    assert_eq!((rest.moved, rest.left), (1, 0));
    let arrived = drain_queue(&w.sqs, &source).await;
    assert_eq!(arrived, vec![poison.clone(); 3]);
    // An empty queue: nothing to do, no error.
    let empty = dlq::redrive(
        &w.stack,
        &w.sqs,
        "LicenseRequestsDLQ",
        None,
        None,
        false,
        &World::quiet(),
    )
    .await
    .unwrap();
    assert_eq!(empty.moved, 0);
    // A queue that is nobody's DLQ needs --to; an unknown queue is named.
    let e = dlq::redrive(
        &w.stack,
        &w.sqs,
        "BillingScheduleDLQ",
        None,
        None,
        false,
        &World::quiet(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("--to"), "{e}");
    let e = dlq::redrive(
        &w.stack,
        &w.sqs,
        "NoSuchDLQ",
        None,
        None,
        false,
        &World::quiet(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("no queue NoSuchDLQ"), "{e}");
}

fn stripe_event(id: &str, t: &str, created: i64) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"id": id, "object": "event", "type": t, "created": created,
        "data": {"object": {"id": "sub_1", "object": "subscription", "customer": "cus_1"}}}),
    )
    .unwrap()
}

#[tokio::test]
async fn archived_events_are_replayed_through_the_routing_table() {
    let w = world().await;
    // 2026-03-02 10:00 and 2026-03-03 10:00 UTC.
    let (d2, d3) = (1_772_445_600, 1_772_532_000);
    let objects = [
        (
            "raw/stripe/2026/03/02/evt_a.json",
            stripe_event("evt_a", "customer.subscription.created", d2),
        ),
        (
            "raw/stripe/2026/03/02/evt_b.json",
            stripe_event("evt_b", "invoice.paid", d2),
        ),
        (
            "raw/stripe/2026/03/02/evt_c.json",
            stripe_event("evt_c", "balance.available", d2),
        ),
        (
            "raw/stripe/2026/03/02/evt_bad.json",
            b"{\"not\": \"an event\"".to_vec(),
        ),
        (
            "raw/stripe/2026/03/03/evt_d.json",
            stripe_event("evt_d", "customer.subscription.deleted", d3),
        ),
    ];
    for (key, body) in &objects {
        w.store
            .put(key, body.clone(), "application/json")
            .await
            .unwrap();
    }
    let sender = SqsSender::new(w.sqs.clone(), w.store.clone());
    let run = |from: &str, to: &str, t: Option<&str>, dry: bool| ReplayRequest {
        source: "stripe".into(),
        from: replay::parse_time(from, false).unwrap(),
        to: replay::parse_time(to, true).unwrap(),
        event_type: t.map(str::to_owned),
        dry_run: dry,
    };
    let q = |id: &str| w.stack.physical(id).unwrap().to_owned();

    let dry = replay::replay(
        &w.stack,
        w.store.as_ref(),
        &sender,
        &run("2026-03-02", "2026-03-03", None, true),
        &World::quiet(),
    )
    .await
    .unwrap();
    assert_eq!((dry.objects, dry.replayed, dry.unrouted), (5, 3, 1));
    assert_eq!(dry.unparseable, ["raw/stripe/2026/03/02/evt_bad.json"]);
    assert!(
        drain_queue(&w.sqs, &q("LicenseRequestsQueue"))
            .await
            .is_empty(),
        "a dry run sends nothing"
    );

    // One day, subscriptions only.
    let out = replay::replay(
        &w.stack,
        w.store.as_ref(),
        &sender,
        &run(
            "2026-03-02",
            "2026-03-02",
            Some("customer.subscription.*"),
            false,
        ),
        &World::quiet(),
    )
    .await
    .unwrap();
    assert_eq!(
        (out.replayed, out.filtered),
        (1, 2),
        "invoice.paid and balance.available are filtered"
    );
    let licenses = drain_queue(&w.sqs, &q("LicenseRequestsQueue")).await;
    assert_eq!(licenses.len(), 1);
    let msg: Value = serde_json::from_str(&licenses[0]).unwrap();
    assert_eq!(msg["id"], "evt_a");
    assert_eq!(msg["raw_key"], "raw/stripe/2026/03/02/evt_a.json");
    assert_eq!(msg["event"]["data"]["object"]["id"], "sub_1");
    // The same routes as intake: subscription events also reach billing and customer sync.
    assert_eq!(drain_queue(&w.sqs, &q("BillingEventsQueue")).await.len(), 1);
    assert_eq!(
        drain_queue(&w.sqs, &q("CustomerEventsQueue")).await.len(),
        1
    );
    assert_eq!(out.sent.values().sum::<u64>(), 3, "{:?}", out.sent);

    // --to before --from is refused.
    let e = replay::replay(
        &w.stack,
        w.store.as_ref(),
        &sender,
        &run("2026-03-03", "2026-03-02", None, false),
        &World::quiet(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("before --from"), "{e}");
    assert!(replay::parse_time("yesterday", false).is_err());
}

#[tokio::test]
async fn batched_archive_events_are_replayed_once_each_and_sealed_by_hand() {
    use blapi::archive::{self, Hour, Line};
    let w = world().await;
    let sdk = blapi_infra::sdk_config(w.stack.endpoint.as_deref().unwrap()).await;
    let at = |t: &str| replay::parse_time(t, false).unwrap();
    let line = |id: &str, t: &str, occurred: &str| Line {
        id: id.into(),
        source: "stripe".into(),
        event_type: t.into(),
        received_at: at(occurred) + chrono::Duration::seconds(1),
        occurred_at: Some(at(occurred)),
        subjects: vec![],
        body: Some(String::from_utf8(stripe_event(id, t, at(occurred).timestamp())).unwrap()),
        erased: false,
    };
    let (h10, h11) = (
        Hour::parse("2026-03-04T10").unwrap(),
        Hour::parse("2026-03-04T11").unwrap(),
    );
    let a = line(
        "evt_ba",
        "customer.subscription.created",
        "2026-03-04T10:05:00Z",
    );
    let b = line("evt_bb", "invoice.paid", "2026-03-04T10:06:00Z");
    let mut gone = line("evt_bx", "customer.created", "2026-03-04T11:01:00Z");
    gone = gone.tombstone();
    let c = line(
        "evt_bc",
        "customer.subscription.deleted",
        "2026-03-04T11:02:00Z",
    );
    // A batch and its redelivery (a duplicate of evt_ba); the next hour with an erased event.
    archive::write_batch(w.store.as_ref(), h10, &[a.clone(), b.clone()])
        .await
        .unwrap();
    archive::write_batch(w.store.as_ref(), h10, std::slice::from_ref(&a))
        .await
        .unwrap();
    archive::write_batch(w.store.as_ref(), h11, &[gone, c.clone()])
        .await
        .unwrap();
    let sender = SqsSender::new(w.sqs.clone(), w.store.clone());
    let req = |dry: bool, t: Option<&str>| ReplayRequest {
        source: "stripe".into(),
        from: at("2026-03-04T00:00:00Z"),
        to: replay::parse_time("2026-03-04", true).unwrap(),
        event_type: t.map(str::to_owned),
        dry_run: dry,
    };
    let q = |id: &str| w.stack.physical(id).unwrap().to_owned();
    let dry = replay::replay(
        &w.stack,
        w.store.as_ref(),
        &sender,
        &req(true, None),
        &World::quiet(),
    )
    .await
    .unwrap();
    assert_eq!(
        (dry.objects, dry.replayed, dry.duplicates, dry.erased),
        (3, 3, 1, 1),
        "{dry:?}"
    );
    assert!(
        drain_queue(&w.sqs, &q("BillingEventsQueue"))
            .await
            .is_empty()
    );
    let out = replay::replay(
        &w.stack,
        w.store.as_ref(),
        &sender,
        &req(false, Some("customer.subscription.*")),
        &World::quiet(),
    )
    .await
    .unwrap();
    // invoice.paid and the erased customer.created are of other types.
    assert_eq!((out.replayed, out.filtered), (2, 2), "{out:?}");
    let licenses = drain_queue(&w.sqs, &q("LicenseRequestsQueue")).await;
    assert_eq!(licenses.len(), 2, "evt_ba once, evt_bc once");
    let msg: Value = serde_json::from_str(&licenses[0]).unwrap();
    assert!(
        msg["raw_key"]
            .as_str()
            .unwrap()
            .starts_with("archive/batch/2026/03/04/"),
        "{msg}"
    );
    assert_eq!(msg["event"]["data"]["object"]["id"], "sub_1");
    drain_queue(&w.sqs, &q("BillingEventsQueue")).await;
    drain_queue(&w.sqs, &q("CustomerEventsQueue")).await;

    // Sealed by hand: each hour one object, each event once; replay reads the same events.
    let sealed = blapi_ops::admin::seal(&w.stack, &sdk, None, false)
        .await
        .unwrap();
    assert_eq!(
        (
            sealed.hours.len(),
            sealed.merged,
            sealed.events,
            sealed.duplicates
        ),
        (2, 3, 4, 1),
        "{sealed:?}"
    );
    assert!(
        w.store
            .list(archive::BATCH_PREFIX)
            .await
            .unwrap()
            .is_empty()
    );
    let again = replay::replay(
        &w.stack,
        w.store.as_ref(),
        &sender,
        &req(true, None),
        &World::quiet(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            again.objects,
            again.replayed,
            again.duplicates,
            again.erased
        ),
        (2, 3, 0, 1),
        "{again:?}"
    );
    let one = blapi_ops::admin::seal(&w.stack, &sdk, Some("2026-03-04T10"), false)
        .await
        .unwrap();
    assert_eq!(one.merged, 0, "idempotent");
    assert!(
        blapi_ops::admin::seal(&w.stack, &sdk, Some("yesterday"), false)
            .await
            .is_err()
    );
}

#[test]
fn type_patterns() {
    assert!(replay::type_matches(
        "customer.*",
        "customer.subscription.created"
    ));
    assert!(replay::type_matches("invoice.paid", "invoice.paid"));
    assert!(!replay::type_matches("invoice.paid", "invoice.paid_out"));
    assert!(replay::type_matches("*", "anything"));
}

#[test]
fn redaction_never_shows_content() {
    assert_eq!(
        dlq::redact(
            r#"{"id":"evt_9","source":"portal","type":"lead.signup","event":{"email":"x@y.z"}}"#
        ),
        "portal lead.signup evt_9"
    );
    assert_eq!(dlq::redact("name=Ada Lovelace"), "not JSON, 17 bytes");
    assert_eq!(
        dlq::redact(r#"{"claim_check":{"bucket":"b","key":"claim-check/1","bytes":9}}"#),
        "claim check claim-check/1"
    );
    assert_eq!(
        dlq::redact(r#"{"email":"x@y.z"}"#),
        "JSON without an event envelope, 17 bytes"
    );
    assert_eq!(
        dlq::redact(
            r#"{"id":"privacy:pr_1:closed","type":"privacy.request.completed","to":"x@y.z"}"#
        ),
        "notification privacy.request.completed privacy:pr_1:closed"
    );
}

/// A customer with an active 3-seat monthly subscription on localstripe: (customer, subscription).
async fn localstripe_subscription() -> (String, String) {
    let (cus, sub, _) = localstripe_subscription_of(Some("professional")).await;
    (cus, sub)
}

fn localstripe() -> blapi::stripe::StripeClient {
    let base = std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into());
    blapi::stripe::StripeClient::new(
        base,
        blapi::config::Secret::new("sk_test_blapi_local".into()),
        std::time::Duration::from_secs(10),
    )
    .unwrap()
}

/// As [`localstripe_subscription`], with the plan's SKU (none: a plan license-minting cannot
/// license), and the product: (customer, subscription, product).
async fn localstripe_subscription_of(sku: Option<&str>) -> (String, String, String) {
    let stripe = localstripe();
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let stripe = &stripe;
        async move {
            let form = blapi::stripe::form_pairs(form);
            stripe
                .post::<Value>(&path, &form, &uuid_like())
                .await
                .unwrap_or_else(|e| panic!("localstripe {path}: {}", e.chain()))
        }
    };
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let product = post("products".into(), vec![("name", "Mattermost".into())]).await;
    let mut plan_form = vec![
        ("product", id(&product)),
        ("amount", "1000".into()),
        ("currency", "usd".into()),
        ("interval", "month".into()),
    ];
    if let Some(sku) = sku {
        plan_form.push(("metadata[sku]", sku.to_owned()));
    }
    let plan = post("plans".into(), plan_form).await;
    let customer = post("customers".into(), vec![("name", "Ops Test".into())]).await;
    let cus = id(&customer);
    post(
        format!("customers/{cus}/sources"),
        vec![
            ("source[object]", "card".into()),
            ("source[number]", "4242424242424242".into()),
            ("source[exp_month]", "12".into()),
            ("source[exp_year]", "2040".into()),
            ("source[cvc]", "123".into()),
        ],
    )
    .await;
    let sub = post(
        "subscriptions".into(),
        vec![
            ("customer", cus.clone()),
            ("items[0][plan]", id(&plan)),
            ("items[0][quantity]", "3".into()),
        ],
    )
    .await;
    // localstripe delivers each event to the registered webhooks a second after it happened:
    // let these go out now, while this test runs, rather than into a later test's intake
    // (the end-to-end scenario registers one).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    (cus, id(&sub), id(&product))
}

fn uuid_like() -> String {
    format!(
        "ops-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test]
async fn license_and_billing_admin_run_the_functions_own_actions() {
    use blapi_ops::admin;
    let w = world().await;
    let sdk = blapi_infra::sdk_config(w.stack.endpoint.as_deref().unwrap()).await;
    let (cus, sub) = localstripe_subscription().await;
    let minted = admin::invoke(&w.stack, &sdk, admin::LICENSE_MINTING, admin::mint(&sub))
        .await
        .unwrap();
    let id = minted["license_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{minted}"))
        .to_owned();
    let again = admin::invoke(&w.stack, &sdk, admin::LICENSE_MINTING, admin::mint(&sub))
        .await
        .unwrap();
    assert_eq!(
        again["license_id"],
        id.as_str(),
        "minting twice names the same license: {again}"
    );
    let listed = admin::invoke(
        &w.stack,
        &sdk,
        admin::LICENSE_MINTING,
        admin::list(Some(&cus), None).unwrap(),
    )
    .await
    .unwrap();
    assert!(listed.to_string().contains(&id), "{listed}");
    let revoked = admin::invoke(
        &w.stack,
        &sdk,
        admin::LICENSE_MINTING,
        admin::revoke(&id, "operator"),
    )
    .await
    .unwrap();
    assert!(revoked.to_string().contains("revoked"), "{revoked}");
    let e = admin::invoke(
        &w.stack,
        &sdk,
        admin::LICENSE_MINTING,
        admin::revoke("lic_nope", "operator"),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("license-minting"), "{e}");

    // A rerun of a period with nobody to bill plans nothing, twice alike.
    let plan = admin::invoke(
        &w.stack,
        &sdk,
        admin::USAGE_BILLING,
        admin::rerun("2026-01", None).unwrap(),
    )
    .await
    .unwrap();
    let plan_again = admin::invoke(
        &w.stack,
        &sdk,
        admin::USAGE_BILLING,
        admin::rerun("2026-01", None).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(plan, plan_again);
    assert!(admin::rerun("2026-1", None).is_err());
    assert!(admin::rerun("january", Some("cus_1")).is_err());
    assert!(admin::list(None, None).is_err());
    assert!(admin::list(Some("c"), Some("s")).is_err());
}

/// What the archiver's event source does: the events queue's messages as one SQS batch to the
/// archiver's function; the ones it did not refuse are deleted. Returns how many it took.
async fn archive_events(w: &World, app: &webhook_intake::handler::App) -> usize {
    use webhook_intake::handler::{Answer, Invocation};
    let url = w.stack.physical("EventsQueue").unwrap().to_owned();
    let mut records = Vec::new();
    let mut handles = Vec::new();
    loop {
        let got = w
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            records.push(json!({"messageId": m.message_id(), "body": m.body()}));
            handles.push((
                m.message_id().unwrap_or_default().to_owned(),
                m.receipt_handle().unwrap_or_default().to_owned(),
            ));
        }
    }
    if records.is_empty() {
        return 0;
    }
    let batch: Invocation = serde_json::from_value(json!({ "Records": records })).unwrap();
    let Answer::Batch(resp) = app
        .dispatch(lambda_runtime::LambdaEvent::new(
            batch,
            lambda_runtime::Context::default(),
        ))
        .await
        .unwrap()
    else {
        panic!("a batch answer")
    };
    let mut taken = 0;
    for (id, handle) in handles {
        if resp
            .batch_item_failures
            .iter()
            .any(|f| f.item_identifier == id)
        {
            continue;
        }
        w.sqs
            .delete_message()
            .queue_url(&url)
            .receipt_handle(handle)
            .send()
            .await
            .unwrap();
        taken += 1;
    }
    taken
}

/// The bodies waiting on the events queue (drained).
async fn waiting_events(w: &World) -> Vec<String> {
    drain_queue(&w.sqs, w.stack.physical("EventsQueue").unwrap()).await
}

#[tokio::test]
async fn a_stripe_event_that_never_reached_the_intake_is_recovered_once() {
    use blapi_ops::admin;
    let w = world().await;
    let sdk = blapi_infra::sdk_config(w.stack.endpoint.as_deref().unwrap()).await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    // A customer created on localstripe: its customer.created event was never delivered here.
    let (cus, _) = localstripe_subscription().await;
    let base = std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into());
    let stripe = blapi::stripe::StripeClient::new(
        base,
        blapi::config::Secret::new("sk_test_blapi_local".into()),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let after = since.timestamp().to_string();
    let events: Value = stripe
        .get(
            "events",
            &[("limit", "100"), ("created[gte]", after.as_str())],
        )
        .await
        .unwrap();
    let ours = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "customer.created" && e["data"]["object"]["id"] == cus.as_str())
        .unwrap_or_else(|| panic!("localstripe recorded customer.created for {cus}"))
        .clone();
    let id = ours["id"].as_str().unwrap().to_owned();

    // The functions of the webhook-intake binary, as the local stack runs them (one process:
    // the recovery's configuration and the archiver's routed queues).
    use webhook_intake::handler::{Action, Answer, App, Invocation, Ports};
    let env = blapi::config::Env::from_map(
        w.stack
            .function_env_of(&sdk, admin::ARCHIVE_MAINTENANCE)
            .await
            .unwrap(),
    );
    let config = blapi::webhook::Config::from_env(&env).unwrap();
    let clients = blapi::aws::Clients::new(&sdk);
    let app = App::new(
        config.clone(),
        Ports::connect(&config, &clients).await.unwrap(),
    )
    .with_recovery(&config, &clients);

    let dry = admin::recover_stripe(&w.stack, &sdk, since, true)
        .await
        .unwrap();
    assert!(dry.listed >= 1 && dry.recovered == 0, "{dry:?}");
    let first = admin::recover_stripe(&w.stack, &sdk, since, false)
        .await
        .unwrap();
    assert!(first.recovered >= 1, "{first:?}");
    assert!(first.failed.is_empty(), "{first:?}");
    // On the events queue as a verified webhook would be; the archiver archives and routes it.
    assert!(archive_events(&w, &app).await >= 1);
    let created = chrono::DateTime::from_timestamp(ours["created"].as_i64().unwrap(), 0).unwrap();
    let hour = blapi::archive::read_hour(w.store.as_ref(), blapi::archive::Hour::of(created))
        .await
        .unwrap();
    assert!(hour.events.iter().any(|e| e.line.id == id), "{id} archived");
    let leads = drain_queue(&w.sqs, w.stack.physical("LeadEventsQueue").unwrap()).await;
    assert_eq!(leads.iter().filter(|m| m.contains(&id)).count(), 1);
    // Again: the archive has it; nothing is sent twice.
    let second = admin::recover_stripe(&w.stack, &sdk, since, false)
        .await
        .unwrap();
    assert!(second.duplicates >= 1, "{second:?}");
    assert!(
        !waiting_events(&w).await.iter().any(|m| m.contains(&id)),
        "recovered once only"
    );

    // The daily schedule's invocation does the same (three days back): the event is already
    // in, nothing is sent again.
    let scheduled: Invocation = serde_json::from_str(r#"{"action": "recover_stripe"}"#).unwrap();
    let answer = app
        .dispatch(lambda_runtime::LambdaEvent::new(
            scheduled,
            lambda_runtime::Context::default(),
        ))
        .await
        .unwrap();
    let Answer::Recovery(report) = answer else {
        panic!("a recovery report")
    };
    assert!(
        report.duplicates >= 1 && report.failed.is_empty(),
        "{report:?}"
    );
    // Ours is not sent again. (Events other tests made on the shared localstripe in the last
    // three days are not in this fresh stack's archive: those are recovered here, as they
    // would have been by the ledger of before.)
    assert!(!waiting_events(&w).await.iter().any(|m| m.contains(&id)));
    // Out-of-range windows and unknown fields are refused, named.
    for bad in [
        Action::RecoverStripe {
            days: Some(0),
            dry_run: false,
        },
        Action::RecoverStripe {
            days: Some(31),
            dry_run: false,
        },
    ] {
        let e = app.act(bad, chrono::Utc::now()).await.unwrap_err();
        assert!(e.to_string().contains("days must be 1 to 30"), "{e}");
    }
    // Without the Stripe API configured the action is refused, not half-run.
    let bare = App::new(
        config.clone(),
        Ports::connect(&config, &clients).await.unwrap(),
    );
    let e = bare
        .act(
            Action::RecoverStripe {
                days: None,
                dry_run: true,
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("STRIPE_API_KEY_SECRET_ID"), "{e}");
}

#[tokio::test]
async fn rotating_the_signing_key_twice_keeps_licenses_of_all_three_keys_verifiable() {
    use blapi::licensing::{KEY_SET_KEY, KeySet, verify_license_with_keys};
    use blapi_ops::admin;
    use blapi_ops::rotate::{Kms, Step, rotate};
    let w = world().await;
    let sdk = blapi_infra::sdk_config(w.stack.endpoint.as_deref().unwrap()).await;
    let kms_client = aws_sdk_kms::Client::new(&sdk);
    let alias = w
        .stack
        .function_env(&sdk, admin::LICENSE_MINTING)
        .await
        .unwrap()["LICENSE_KEY_ID"]
        .clone();
    let kms = Kms {
        client: &kms_client,
        alias,
    };
    let republish = || admin::invoke(&w.stack, &sdk, admin::LICENSE_MINTING, admin::publish());
    let now = || chrono::Utc::now().timestamp_millis();
    let mut licenses: Vec<(String, String)> = Vec::new();
    let mut new_keys = Vec::new();
    for round in 0..3 {
        if round == 1 {
            let dry = rotate(
                &kms,
                w.store.as_ref(),
                republish,
                now(),
                true,
                None,
                &World::quiet(),
            )
            .await
            .unwrap();
            assert!(dry.new_key_id.is_none() && dry.reached.is_none(), "{dry:?}");
            let report = rotate(
                &kms,
                w.store.as_ref(),
                republish,
                now(),
                false,
                None,
                &World::quiet(),
            )
            .await
            .unwrap();
            assert_eq!(report.reached, Some(Step::Finished), "{report:?}");
            assert!(!report.resumed);
            new_keys.push(report.new_key_id.clone().unwrap());
        }
        if round == 2 {
            // Interrupted between creating the key and publishing the set: the rerun finds the
            // pending key, creates no other, and completes.
            let cut = rotate(
                &kms,
                w.store.as_ref(),
                republish,
                now(),
                false,
                Some(Step::Created),
                &World::quiet(),
            )
            .await
            .unwrap();
            assert_eq!(cut.reached, Some(Step::Created));
            let set = KeySet::from_json(&w.store.get(KEY_SET_KEY).await.unwrap().unwrap()).unwrap();
            assert_eq!(set.keys.len(), 2, "not yet published");
            let rerun = rotate(
                &kms,
                w.store.as_ref(),
                republish,
                now(),
                false,
                None,
                &World::quiet(),
            )
            .await
            .unwrap();
            assert!(rerun.resumed, "{rerun:?}");
            assert_eq!(rerun.new_key_id, cut.new_key_id, "no second key created");
            assert_eq!(rerun.reached, Some(Step::Finished));
            new_keys.push(rerun.new_key_id.clone().unwrap());
        }
        let (cus, sub) = localstripe_subscription().await;
        let minted = admin::invoke(&w.stack, &sdk, admin::LICENSE_MINTING, admin::mint(&sub))
            .await
            .unwrap();
        let id = minted["license_id"].as_str().unwrap().to_owned();
        let listed = admin::invoke(
            &w.stack,
            &sdk,
            admin::LICENSE_MINTING,
            admin::list(Some(&cus), None).unwrap(),
        )
        .await
        .unwrap();
        let rec = listed["licenses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["license_id"] == id.as_str())
            .unwrap()
            .clone();
        let file = w
            .store
            .get(rec["file_key"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        licenses.push((
            String::from_utf8(file).unwrap(),
            rec["kid"].as_str().unwrap().to_owned(),
        ));
    }
    assert_ne!(new_keys[0], new_keys[1]);
    let set = KeySet::from_json(&w.store.get(KEY_SET_KEY).await.unwrap().unwrap()).unwrap();
    let kids: Vec<String> = set.keys.iter().map(|k| k.kid.clone()).collect();
    assert_eq!(
        kids,
        licenses.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>(),
        "three keys, each license signed by the key current at its time"
    );
    for (file, kid) in &licenses {
        let license = verify_license_with_keys(file, &set, None, now()).unwrap();
        assert_eq!(&license.kid, kid);
    }
    // The revocation list and the public key are the newest key's.
    let list: Value =
        serde_json::from_slice(&w.store.get("licenses/revoked.json").await.unwrap().unwrap())
            .unwrap();
    assert_eq!(list["kid"], kids[2].as_str());
    let pem = String::from_utf8(
        w.store
            .get("licenses/public-key.pem")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        blapi::licensing::PublicKey::from_pem(&pem).unwrap().kid(),
        kids[2]
    );
    assert!(
        w.store
            .get(blapi_ops::rotate::PENDING_KEY)
            .await
            .unwrap()
            .is_none()
    );
}

/// Delivers what `queue` holds to license-minting as Lambda's event source mapping would:
/// successes deleted, failures visible again at once (their visibility timeout played as
/// over). Returns (handled, failed).
async fn deliver(w: &World, app: &license_minting::handler::App, queue: &str) -> (usize, usize) {
    let url = w.stack.physical(queue).unwrap().to_owned();
    let got = w
        .sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let messages = got.messages.unwrap_or_default();
    if messages.is_empty() {
        return (0, 0);
    }
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(),
                "body": m.body(), "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"})
        })
        .collect();
    let event = lambda_runtime::LambdaEvent::new(
        json!({ "Records": records }),
        lambda_runtime::Context::default(),
    );
    let answer = app.handle(event).await.unwrap();
    let failed: Vec<&str> = answer["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    for m in &messages {
        if failed.contains(&m.message_id().unwrap()) {
            w.sqs
                .change_message_visibility()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap())
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        } else {
            w.sqs
                .delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    (messages.len() - failed.len(), failed.len())
}

#[tokio::test]
async fn a_poison_message_parks_in_the_dlq_and_after_the_fix_a_redrive_processes_it_once() {
    use blapi_ops::admin;
    let w = world().await;
    let sdk = blapi_infra::sdk_config(w.stack.endpoint.as_deref().unwrap()).await;
    let env = blapi::config::Env::from_map(
        w.stack
            .function_env(&sdk, admin::LICENSE_MINTING)
            .await
            .unwrap(),
    );
    let config = blapi::licensing::Config::from_env(&env).unwrap();
    let clients = blapi::aws::Clients::new(&sdk);
    let ports = license_minting::handler::Ports::connect(&config, &clients)
        .await
        .unwrap();
    let app = license_minting::handler::App::new(config, ports);

    // A subscription whose plan names no SKU: license-minting cannot license it, every time.
    let (cus, sub, product) = localstripe_subscription_of(None).await;
    let message =
        json!({"id": "evt_poison_1", "source": "stripe", "type": "customer.subscription.created",
        "received_at": "2026-03-02T10:00:00Z", "raw_key": "raw/stripe/2026/03/02/evt_poison_1.json",
        "event": {"id": "evt_poison_1", "type": "customer.subscription.created",
            "data": {"object": {"object": "subscription", "id": sub}}}})
        .to_string();
    w.send("LicenseRequestsQueue", &message).await;
    // Five failed receives (the queue's maxReceiveCount), then SQS parks it.
    let mut failures = 0;
    for _ in 0..10 {
        let (ok, failed) = deliver(&w, &app, "LicenseRequestsQueue").await;
        assert_eq!(ok, 0, "the poison message never succeeds before the fix");
        failures += failed;
        if failed == 0 {
            break;
        }
    }
    assert_eq!(failures, 5, "tried maxReceiveCount times");
    let states = dlq::list(&w.stack, &w.sqs, chrono::Utc::now().timestamp_millis())
        .await
        .unwrap();
    let parked = states
        .iter()
        .find(|s| s.queue == "LicenseRequestsDLQ")
        .unwrap();
    assert_eq!(parked.depth, 1);
    assert_eq!(
        parked.sample.as_deref(),
        Some("stripe customer.subscription.created evt_poison_1")
    );

    // The fix: the product names its SKU.
    let stripe = localstripe();
    let form = blapi::stripe::form_pairs(vec![("metadata[sku]", "professional".to_owned())]);
    stripe
        .post::<Value>(&format!("products/{product}"), &form, &uuid_like())
        .await
        .unwrap();

    let moved = dlq::redrive(
        &w.stack,
        &w.sqs,
        "LicenseRequestsDLQ",
        None,
        None,
        false,
        &World::quiet(),
    )
    .await
    .unwrap();
    assert_eq!(moved.moved, 1);
    assert_eq!(deliver(&w, &app, "LicenseRequestsQueue").await, (1, 0));
    // Redriving again moves nothing; a duplicate of the message changes nothing.
    let again = dlq::redrive(
        &w.stack,
        &w.sqs,
        "LicenseRequestsDLQ",
        None,
        None,
        false,
        &World::quiet(),
    )
    .await
    .unwrap();
    assert_eq!(again.moved, 0);
    w.send("LicenseRequestsQueue", &message).await;
    assert_eq!(deliver(&w, &app, "LicenseRequestsQueue").await, (1, 0));
    let listed = admin::invoke(
        &w.stack,
        &sdk,
        admin::LICENSE_MINTING,
        admin::list(Some(&cus), None).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(listed["count"], 1, "processed once: {listed}");
    assert_eq!(listed["licenses"][0]["status"], "ACTIVE");
    let states = dlq::list(&w.stack, &w.sqs, chrono::Utc::now().timestamp_millis())
        .await
        .unwrap();
    assert_eq!(
        states
            .iter()
            .find(|s| s.queue == "LicenseRequestsDLQ")
            .unwrap()
            .depth,
        0
    );
}
