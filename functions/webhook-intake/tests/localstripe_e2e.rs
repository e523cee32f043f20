//! End to end with localstripe: the intake behind a tiny in-test HTTP adapter (what a Lambda
//! Function URL does: HTTP request -> `LambdaFunctionUrlRequest` -> handler -> HTTP response)
//! is registered as localstripe's webhook endpoint; creating a customer and a subscription on
//! localstripe makes it send Stripe-signed events, which must arrive verified on the events
//! queue of a fresh local stack, then (the archiver's batches) archived and in their queues.
//!
//! Needs localstripe at `LOCALSTRIPE_URL` (default `http://127.0.0.1:8420`) and moto.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use base64::Engine;
use blapi::queue::EventMessage;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use webhook_intake::App;
use webhook_intake::samples::function_url_request;

const STRIPE_KEY: &str = "sk_test_blapi_local";

fn localstripe() -> String {
    std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into())
}

/// Answers counted by status.
#[derive(Default)]
struct Answers {
    ok: AtomicUsize,
    other: AtomicUsize,
}

/// Serves `app` on 127.0.0.1 (a free port), one HTTP/1.1 request per connection.
async fn serve(app: Arc<App>, answers: Arc<Answers>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (app, answers) = (app.clone(), answers.clone());
            tokio::spawn(async move {
                // A broken connection only loses that delivery; localstripe logs it.
                let _ = handle(stream, &app, &answers).await;
            });
        }
    });
    addr
}

async fn handle(stream: TcpStream, app: &App, answers: &Answers) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).await?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    // Like a Function URL: text bodies as is, anything else base64-encoded.
    let (body, b64) = match String::from_utf8(body) {
        Ok(text) => (text, false),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
            true,
        ),
    };
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let now = chrono::Utc::now();
    let req = function_url_request(
        &method,
        &path,
        &header_refs,
        Some(&body),
        b64,
        now.timestamp(),
    );
    let resp = app.respond(&req, now).await;
    if resp.status_code == 200 {
        answers.ok.fetch_add(1, Ordering::SeqCst);
    } else {
        answers.other.fetch_add(1, Ordering::SeqCst);
    }
    let out_body = resp.body.unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        resp.status_code,
        out_body.len()
    );
    let mut stream = reader.into_inner();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(out_body.as_bytes()).await?;
    stream.shutdown().await
}

async fn stripe_post(
    http: &reqwest::Client,
    path: &str,
    form: &[(&str, &str)],
) -> serde_json::Value {
    let resp = http
        .post(format!("{}{path}", localstripe()))
        .basic_auth(STRIPE_KEY, Some(""))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let json: serde_json::Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {json}");
    json
}

fn id(v: &serde_json::Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// Our customer's events of `event_type` among `msgs`.
fn of<'a>(msgs: &'a [EventMessage], event_type: &str, customer: &str) -> Vec<&'a EventMessage> {
    msgs.iter()
        .filter(|m| {
            let obj = &m.event["data"]["object"];
            m.event_type == event_type && (obj["customer"] == customer || obj["id"] == customer)
        })
        .collect()
}

#[tokio::test]
async fn localstripe_events_arrive_verified_in_the_queues() {
    let stack = blapi_infra::testing::fresh_stack().await;
    let app = Arc::new(app(&stack, &[]).await);
    let archiver = app.clone();
    let answers = Arc::new(Answers::default());
    let addr = serve(app, answers.clone()).await;

    let http = reqwest::Client::new();
    // Register the adapter (a unique id: localstripe keeps every registration).
    let hook = format!("blapi-intake-{}", uuid::Uuid::new_v4().simple());
    let url = format!("http://{addr}/webhooks/stripe");
    let events = [
        "customer.created",
        "customer.subscription.created",
        "invoice.created",
        "invoice.payment_succeeded",
    ];
    let mut form = vec![("url", url.as_str()), ("secret", STRIPE_SECRET)];
    form.extend(events.iter().map(|e| ("events[]", *e)));
    let resp = http
        .post(format!("{}/_config/webhooks/{hook}", localstripe()))
        .basic_auth(STRIPE_KEY, Some(""))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "registering the webhook: {}",
        resp.status()
    );

    // A product and plan, a customer with a card, a subscription.
    let product = id(&stripe_post(&http, "/v1/products", &[("name", "blapi e2e")]).await);
    let plan = id(&stripe_post(
        &http,
        "/v1/plans",
        &[
            ("amount", "1000"),
            ("currency", "usd"),
            ("interval", "month"),
            ("product", &product),
        ],
    )
    .await);
    let token = id(&stripe_post(
        &http,
        "/v1/tokens",
        &[
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ],
    )
    .await);
    let email = format!("e2e-{}@example.com", uuid::Uuid::new_v4().simple());
    let customer = id(&stripe_post(
        &http,
        "/v1/customers",
        &[("email", &email), ("source", &token)],
    )
    .await);
    let subscription = stripe_post(
        &http,
        "/v1/subscriptions",
        &[("customer", &customer), ("items[0][plan]", &plan)],
    )
    .await;
    assert_eq!(subscription["status"], "active");

    // localstripe sends each event about a second after it happens.
    let mut queues: BTreeMap<&str, Vec<EventMessage>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // What the archiver's event source does: the events queue's batch to the archiver.
        archive_pending(&stack, &archiver, Duration::from_millis(0)).await;
        for q in [
            "LeadEventsQueue",
            "LicenseRequestsQueue",
            "BillingEventsQueue",
        ] {
            let got = drain(&stack, q, Duration::from_millis(0)).await;
            queues.entry(q).or_default().extend(got);
        }
        let done = !of(&queues["LeadEventsQueue"], "customer.created", &customer).is_empty()
            && !of(
                &queues["LicenseRequestsQueue"],
                "customer.subscription.created",
                &customer,
            )
            .is_empty()
            && !of(
                &queues["BillingEventsQueue"],
                "customer.subscription.created",
                &customer,
            )
            .is_empty()
            && !of(
                &queues["BillingEventsQueue"],
                "invoice.payment_succeeded",
                &customer,
            )
            .is_empty()
            && !of(
                &queues["LicenseRequestsQueue"],
                "invoice.payment_succeeded",
                &customer,
            )
            .is_empty();
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events did not all arrive; answers ok={} other={}; got {:?}",
            answers.ok.load(Ordering::SeqCst),
            answers.other.load(Ordering::SeqCst),
            queues
                .iter()
                .map(|(q, m)| (
                    q,
                    m.iter().map(|m| m.event_type.clone()).collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let created = of(&queues["LeadEventsQueue"], "customer.created", &customer);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].event["data"]["object"]["email"], email.as_str());
    assert_eq!(created[0].source, "stripe");
    // invoice.created goes to billing only.
    let invoice_created = of(&queues["BillingEventsQueue"], "invoice.created", &customer);
    assert!(
        of(
            &queues["LicenseRequestsQueue"],
            "invoice.created",
            &customer
        )
        .is_empty()
    );
    // Every message of ours is archived byte for byte as signed (the signature was verified
    // on those bytes), found by its archive locator.
    let ours: Vec<&EventMessage> = created
        .into_iter()
        .chain(of(
            &queues["LicenseRequestsQueue"],
            "customer.subscription.created",
            &customer,
        ))
        .chain(of(
            &queues["BillingEventsQueue"],
            "invoice.payment_succeeded",
            &customer,
        ))
        .chain(invoice_created)
        .collect();
    let s3 = store(&stack).await;
    for m in ours {
        assert!(m.id.starts_with("evt_"), "{}", m.id);
        let raw = blapi::archive::find(&s3, &m.raw_key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} not archived", m.raw_key));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(raw.line.body.as_deref().unwrap()).unwrap(),
            m.event
        );
    }
    assert_eq!(
        answers.other.load(Ordering::SeqCst),
        0,
        "every delivery was accepted"
    );
}
