//! The foundation against the real local stack: provisioning from `template.yaml`, the
//! idempotency ledger under concurrency, claim checks through SQS and S3, secrets, and the
//! errors a missing emulator gives.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use blapi::ledger::{Claim, ClaimOptions, DynamoLedger, Ledger, payload_hash};
use blapi::queue::{QueueSender, SqsSender, resolve_body};
use blapi::storage::{ObjectStore, S3Store};
use blapi_system_tests::{clients, stack};
use std::sync::Arc;
use std::time::Duration;

fn key() -> String {
    format!("test#{}", uuid::Uuid::new_v4())
}

#[tokio::test]
async fn every_queue_of_the_template_has_a_dead_letter_queue() {
    let stack = stack();
    let c = clients(stack).await;
    let queues: Vec<&String> = stack
        .resources
        .keys()
        .filter(|id| id.ends_with("Queue"))
        .collect();
    assert!(
        queues.len() >= 6,
        "the template declares the flow's queues: {queues:?}"
    );
    for id in queues {
        let attrs = c
            .sqs()
            .get_queue_attributes()
            .queue_url(stack.physical(id))
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .unwrap();
        let policy = attrs
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy))
            .unwrap_or_else(|| panic!("{id} has no redrive policy"));
        let policy: serde_json::Value = serde_json::from_str(policy).unwrap();
        let dlq = id.replace("Queue", "DLQ");
        assert_eq!(
            policy["deadLetterTargetArn"],
            stack.attr(&dlq, "Arn").unwrap(),
            "{id}"
        );
        // Bill jobs are received again while they wait (settle, a lease, the deadline).
        let receives = if id == "BillingJobsQueue" { "10" } else { "5" };
        assert_eq!(
            policy["maxReceiveCount"].to_string().trim_matches('"'),
            receives,
            "{id}"
        );
    }
}

#[tokio::test]
async fn function_environments_resolve_to_provisioned_resources() {
    let stack = stack();
    // One local process serves both functions of the webhook-intake binary (the intake and
    // the archiver): the union of their environments.
    let intake = stack.env("webhook-intake");
    assert_eq!(intake["EVENTS_QUEUE_URL"], stack.physical("EventsQueue"));
    assert!(intake.contains_key("STRIPE_WEBHOOK_SECRET_ID"));
    assert!(intake.contains_key("PRIVACY_KEY_SECRET_ID"));
    assert_eq!(intake["LEDGER_TABLE"], stack.physical("IdempotencyTable"));
    assert_eq!(
        intake["LICENSE_REQUESTS_QUEUE_URL"],
        stack.physical("LicenseRequestsQueue")
    );
    assert_eq!(
        intake["ARTIFACTS_BUCKET"],
        stack.physical("ArtifactsBucket")
    );
    let minting = stack.env("license-minting");
    assert_eq!(
        minting["LICENSE_KEY_ID"],
        format!("alias/{}-license-signing", stack.prefix)
    );
    // No Salesforce configured locally: the condition resolves to the built-in sink.
    assert_eq!(stack.env("lead-enrichment")["SALESFORCE_SECRET_ID"], "");
    for (function, env) in &stack.functions {
        for (k, v) in env {
            assert!(!v.contains("${"), "{function}: {k} left unresolved: {v}");
        }
    }
}

#[tokio::test]
async fn the_signing_key_signs_rsa_pkcs1_sha512_through_its_alias() {
    let stack = stack();
    let c = clients(stack).await;
    let alias = stack.env("license-minting")["LICENSE_KEY_ID"].clone();
    let message = b"license plaintext";
    let sig = c
        .kms()
        .sign()
        .key_id(&alias)
        .message(Blob::new(message.to_vec()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha512)
        .send()
        .await
        .unwrap();
    let signature = sig.signature().unwrap().as_ref().to_vec();
    assert_eq!(signature.len(), 256, "RSA-2048 signature");
    let verified = c
        .kms()
        .verify()
        .key_id(&alias)
        .message(Blob::new(message.to_vec()))
        .message_type(MessageType::Raw)
        .signature(Blob::new(signature))
        .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha512)
        .send()
        .await
        .unwrap();
    assert!(verified.signature_valid());
}

#[tokio::test]
async fn exactly_one_of_many_concurrent_claimants_wins() {
    let stack = stack();
    let c = clients(stack).await;
    let ledger = Arc::new(DynamoLedger::new(
        c.dynamodb().clone(),
        stack.physical("IdempotencyTable"),
    ));
    let k = key();
    let hash = payload_hash(b"same request");
    let claims = futures::future::join_all((0..16).map(|_| {
        let ledger = ledger.clone();
        let k = k.clone();
        let hash = hash.clone();
        async move {
            ledger
                .claim(&k, &hash, ClaimOptions::default())
                .await
                .unwrap()
        }
    }))
    .await;
    let winners: Vec<_> = claims
        .iter()
        .filter(|c| matches!(c, Claim::Acquired(_)))
        .collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    assert_eq!(
        claims
            .iter()
            .filter(|c| matches!(c, Claim::InProgress { .. }))
            .count(),
        15
    );
    let Claim::Acquired(lease) = winners[0].clone() else {
        unreachable!()
    };
    ledger
        .complete(&lease, Some("{\"ok\":true}"), ClaimOptions::default())
        .await
        .unwrap();
    assert_eq!(
        ledger
            .claim(&k, &hash, ClaimOptions::default())
            .await
            .unwrap(),
        Claim::Completed {
            result: Some("{\"ok\":true}".into())
        }
    );
    // Same key, other payload: refused, whatever the state.
    let err = ledger
        .claim(&k, &payload_hash(b"other"), ClaimOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, blapi::Error::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn released_claims_can_be_retried_and_stale_leases_taken_over() {
    let stack = stack();
    let c = clients(stack).await;
    let ledger = DynamoLedger::new(c.dynamodb().clone(), stack.physical("IdempotencyTable"));
    let hash = payload_hash(b"r");

    let k = key();
    let Claim::Acquired(lease) = ledger
        .claim(&k, &hash, ClaimOptions::default())
        .await
        .unwrap()
    else {
        panic!("first claim wins")
    };
    ledger.release(&lease).await.unwrap();
    assert!(matches!(
        ledger
            .claim(&k, &hash, ClaimOptions::default())
            .await
            .unwrap(),
        Claim::Acquired(_)
    ));

    let k = key();
    let short = ClaimOptions {
        lease: Duration::from_millis(50),
        retain: None,
    };
    let Claim::Acquired(dead) = ledger.claim(&k, &hash, short).await.unwrap() else {
        panic!()
    };
    tokio::time::sleep(Duration::from_millis(120)).await;
    let Claim::Acquired(successor) = ledger
        .claim(&k, &hash, ClaimOptions::default())
        .await
        .unwrap()
    else {
        panic!("a stale lease is taken over")
    };
    // The dead worker wakes up: its completion is fenced off.
    assert!(ledger.complete(&dead, Some("late"), short).await.is_err());
    ledger
        .complete(&successor, Some("mine"), short)
        .await
        .unwrap();
    assert_eq!(
        ledger.completed(&k).await.unwrap(),
        Some(Some("mine".into()))
    );
}

#[tokio::test]
async fn table_helpers_read_one_item_and_follow_every_page() {
    use blapi::aws::dynamo::{get_item, query_all, s};
    let stack = stack();
    let c = clients(stack).await;
    let table = stack.physical("LeadsTable");
    let pk = format!("PAGETEST#{}", uuid::Uuid::new_v4());
    for i in 0..23 {
        c.dynamodb()
            .put_item()
            .table_name(table)
            .item("pk", s(&pk))
            .item("sk", s(format!("{i:03}")))
            .send()
            .await
            .unwrap();
    }
    // Five items per page: the helper must follow LastEvaluatedKey to the end, in order.
    let items = query_all(
        c.dynamodb()
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(&pk))
            .limit(5),
    )
    .await
    .unwrap();
    let sks: Vec<String> = items
        .iter()
        .map(|i| i["sk"].as_s().unwrap().clone())
        .collect();
    let expected: Vec<String> = (0..23).map(|i| format!("{i:03}")).collect();
    assert_eq!(sks, expected);

    let one = get_item(c.dynamodb(), table, pk.clone(), Some("007"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one["sk"].as_s().unwrap(), "007");
    assert!(
        get_item(c.dynamodb(), table, pk, Some("999"))
            .await
            .unwrap()
            .is_none()
    );
    // A missing table is the caller's configuration error, not a retry.
    let err = get_item(c.dynamodb(), "no-such-table", "x", None)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn oversized_messages_travel_by_claim_check() {
    let stack = stack();
    let c = clients(stack).await;
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
        c.s3().clone(),
        stack.physical("ArtifactsBucket"),
    ));
    let sender = SqsSender::new(c.sqs().clone(), store.clone());
    // A dedicated stack keeps this queue to ourselves.
    let own = blapi_system_tests::fresh_stack().await;
    let queue = own.physical("UsageEventsQueue").to_owned();

    let big = serde_json::json!({"records": "x".repeat(300 * 1024)}).to_string();
    sender.send(&queue, big.clone()).await.unwrap();
    sender
        .send(&queue, "{\"small\":true}".into())
        .await
        .unwrap();

    let mut bodies = Vec::new();
    for _ in 0..5 {
        let out = c
            .sqs()
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            bodies.push(m.body().unwrap().to_owned());
        }
        if bodies.len() == 2 {
            break;
        }
    }
    assert_eq!(bodies.len(), 2);
    let pointer = bodies
        .iter()
        .find(|b| b.contains("blapi_claim_check"))
        .expect("a claim check");
    assert!(pointer.len() < 1024, "the queued message is small");
    assert_eq!(resolve_body(store.as_ref(), pointer).await.unwrap(), big);
    let small = bodies.iter().find(|b| b.contains("small")).unwrap();
    assert_eq!(resolve_body(store.as_ref(), small).await.unwrap(), *small);
}

#[tokio::test]
async fn batches_of_more_than_ten_are_all_sent() {
    let stack = blapi_system_tests::fresh_stack().await;
    let c = clients(&stack).await;
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
        c.s3().clone(),
        stack.physical("ArtifactsBucket"),
    ));
    let sender = SqsSender::new(c.sqs().clone(), store);
    let queue = stack.physical("BillingJobsQueue");
    let bodies: Vec<String> = (0..25).map(|i| format!("{{\"job\":{i}}}")).collect();
    sender.send_all(queue, bodies).await.unwrap();
    let attrs = c
        .sqs()
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    let n = attrs
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .unwrap();
    assert_eq!(n, "25");
}

#[tokio::test]
async fn secrets_are_read_from_the_secret_store() {
    #[derive(serde::Deserialize)]
    struct StripeKey {
        api_key: String,
    }
    let stack = stack();
    let c = clients(stack).await;
    let id = &stack.env("usage-billing")["STRIPE_API_KEY_SECRET_ID"];
    let secret = blapi::secrets::load_json::<StripeKey>(c.secrets(), id)
        .await
        .unwrap();
    assert!(secret.expose().api_key.starts_with("sk_test_"));
    assert_eq!(format!("{secret:?}"), "[redacted]");

    let missing = blapi::secrets::load_json::<StripeKey>(c.secrets(), "no/such/secret")
        .await
        .unwrap_err();
    assert!(
        !missing.is_retryable(),
        "a missing secret is a deployment error: {missing:?}"
    );
}

#[tokio::test]
async fn an_unreachable_emulator_is_a_clear_retryable_error() {
    let sdk = blapi_infra::sdk_config("http://127.0.0.1:9").await;
    let c = blapi::aws::Clients::new(&sdk);
    let ledger = DynamoLedger::new(c.dynamodb().clone(), "any");
    let err = ledger
        .claim("k", "h", ClaimOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("dynamodb"), "{err}");

    let provisioning = blapi_infra::provision(&blapi_infra::ProvisionOptions::new(
        "tdown",
        "http://127.0.0.1:9",
    ))
    .await
    .unwrap_err();
    assert!(
        format!("{provisioning:#}").contains("make up"),
        "{provisioning:#}"
    );
}
