//! The event-source mapper against moto and a stand-in for the local Lambda API: good records
//! are deleted, a poison record is redelivered until the redrive policy parks it in the DLQ,
//! a function error retries the whole batch, and each batch can be delivered several times at
//! once (at-least-once delivery, as the fault tests use it).

#![allow(clippy::unwrap_used)] // test helpers: a failed expectation should panic

use blapi_infra::mapper::{MapperOptions, run};
use blapi_infra::template::Template;
use blapi_infra::testing::fresh_stack;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Fails the records whose body says "poison", like a consumer using partial batch responses.
struct PartialFailures {
    invocations: Arc<AtomicUsize>,
}

impl Respond for PartialFailures {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.invocations.fetch_add(1, Ordering::SeqCst);
        let event: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        let failures: Vec<serde_json::Value> = event["Records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["body"].as_str().unwrap().contains("poison"))
            .map(|r| serde_json::json!({"itemIdentifier": r["messageId"]}))
            .collect();
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"batchItemFailures": failures}))
    }
}

async fn count(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .send()
        .await
        .unwrap();
    out.attributes()
        .unwrap()
        .values()
        .map(|v| v.parse::<usize>().unwrap())
        .sum()
}

#[tokio::test]
async fn poison_goes_to_the_dlq_and_good_records_are_deleted() {
    let stack = fresh_stack().await;
    let template = Template::load(&blapi_infra::repo_root().join("template.yaml")).unwrap();
    let lambda = MockServer::start().await;
    let invocations = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/2015-03-31/functions/lead-enrichment/invocations"))
        .respond_with(PartialFailures {
            invocations: invocations.clone(),
        })
        .mount(&lambda)
        .await;
    // Other functions' queues stay empty; answer them anyway.
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"batchItemFailures": []})),
        )
        .mount(&lambda)
        .await;

    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let queue = stack.physical("LeadEventsQueue").to_owned();
    let dlq = stack.physical("LeadEventsDLQ").to_owned();
    for body in ["{\"lead\":1}", "{\"lead\":\"poison\"}", "{\"lead\":3}"] {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let opts = MapperOptions {
        retry_after: Duration::ZERO,
        ..MapperOptions::local(lambda.uri())
    };
    let mapper = {
        let stop = stop.clone();
        let stack = stack.clone();
        tokio::spawn(async move { run(&stack, &template, opts, stop).await })
    };
    // Wait (bounded) until the poison message is parked.
    for _ in 0..120 {
        if count(&sqs, &dlq).await == 1 && count(&sqs, &queue).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let counters = mapper.await.unwrap().unwrap();

    assert_eq!(
        count(&sqs, &queue).await,
        0,
        "nothing left on the source queue"
    );
    let parked = sqs.receive_message().queue_url(&dlq).send().await.unwrap();
    let bodies: Vec<&str> = parked.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(
        bodies,
        vec!["{\"lead\":\"poison\"}"],
        "only the poison message is in the DLQ"
    );
    assert_eq!(
        counters.deleted, 2,
        "both good records were deleted: {counters:?}"
    );
    assert!(
        counters.failed >= 5,
        "the poison record was retried up to maxReceiveCount: {counters:?}"
    );
    assert!(invocations.load(Ordering::SeqCst) >= 5);
}

#[tokio::test]
async fn a_function_error_leaves_the_whole_batch_for_redelivery() {
    let stack = fresh_stack().await;
    let template = Template::load(&blapi_infra::repo_root().join("template.yaml")).unwrap();
    let lambda = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Amz-Function-Error", "Unhandled")
                .set_body_json(serde_json::json!({"errorType": "Retryable", "errorMessage": "dynamodb call failed"})),
        )
        .mount(&lambda)
        .await;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let queue = stack.physical("UsageEventsQueue").to_owned();
    sqs.send_message()
        .queue_url(&queue)
        .message_body("{}")
        .send()
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let opts = MapperOptions {
        retry_after: Duration::from_secs(30),
        ..MapperOptions::local(lambda.uri())
    };
    let mapper = {
        let stop = stop.clone();
        let stack = stack.clone();
        tokio::spawn(async move { run(&stack, &template, opts, stop).await })
    };
    for _ in 0..40 {
        if !lambda
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let counters = mapper.await.unwrap().unwrap();
    assert_eq!(counters.deleted, 0);
    assert_eq!(counters.failed, 1);
    assert_eq!(
        count(&sqs, &queue).await,
        1,
        "the message is kept for redelivery"
    );
}

/// Answers the first delivery of each batch with a failure of every record and the others
/// with success: a record one concurrent delivery failed is redelivered, not deleted.
struct FirstDeliveryFails {
    seen: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Respond for FirstDeliveryFails {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let event: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        let ids: Vec<String> = event["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["messageId"].as_str().unwrap().to_owned())
            .collect();
        let mut seen = self.seen.lock().unwrap();
        let n = seen.entry(ids.join(",")).or_default();
        *n += 1;
        let failures: Vec<serde_json::Value> = if *n % 3 == 1 {
            ids.iter()
                .map(|id| serde_json::json!({"itemIdentifier": id}))
                .collect()
        } else {
            Vec::new()
        };
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"batchItemFailures": failures}))
    }
}

#[tokio::test]
async fn every_batch_goes_out_as_many_times_as_asked_and_any_failure_redelivers_it() {
    let stack = fresh_stack().await;
    let template = Template::load(&blapi_infra::repo_root().join("template.yaml")).unwrap();
    let lambda = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2015-03-31/functions/customer-sync/invocations"))
        .respond_with(FirstDeliveryFails {
            seen: Default::default(),
        })
        .mount(&lambda)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"batchItemFailures": []})),
        )
        .mount(&lambda)
        .await;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let queue = stack.physical("CustomerEventsQueue").to_owned();
    sqs.send_message()
        .queue_url(&queue)
        .message_body("{\"customer\":1}")
        .send()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = MapperOptions {
        retry_after: Duration::from_secs(30),
        copies: 3,
        ..MapperOptions::local(lambda.uri())
    };
    let mapper = {
        let stop = stop.clone();
        let stack = stack.clone();
        tokio::spawn(async move { run(&stack, &template, opts, stop).await })
    };
    let delivered = || async {
        lambda
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path().contains("customer-sync"))
            .count()
    };
    for _ in 0..40 {
        if delivered().await >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Give a fourth delivery (there must be none: the record waits 30 s) a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let counters = mapper.await.unwrap().unwrap();
    assert_eq!(delivered().await, 3, "one batch, three deliveries at once");
    assert_eq!(
        (counters.invocations, counters.deleted, counters.failed),
        (1, 0, 1),
        "{counters:?}"
    );
    assert_eq!(count(&sqs, &queue).await, 1, "kept for redelivery");
}
