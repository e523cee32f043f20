//! `blapi-soak`: a load soak of the running system, with accounting (`make soak`).
//!
//! On a stack of its own (provisioned from `template.yaml` under a random prefix, the
//! functions under `cargo lambda watch` with the event-source mapper, as the end-to-end test
//! runs them), it sends a steady `SOAK_RATE` requests a second (default 10) for `SOAK_SECONDS`
//! (default 600) to the intake's Function URL, open loop (a request leaves on its tick whatever
//! the answers before it), a fixed mix of:
//! - `purchase`: Stripe events of localstripe purchases made beforehand (`customer.created`,
//!   `customer.subscription.created`, `invoice.payment_succeeded`), signed with the stack's
//!   Stripe webhook secret: licenses, the customer in the CRM, billing's subscription view;
//! - `stripe-ignored`: a Stripe type nothing routes (`charge.succeeded`): archived only;
//! - `usage`: telemetry `usage.reported` (Standard Webhooks), five records each, for
//!   customers whose subscription event was sent at least `SOAK_USAGE_DELAY` seconds before
//!   (20), else for an unknown customer (refused with a reason: a verdict, not a loss);
//! - `signup`: portal `lead.signup`, some from people who signed up before or bought;
//! - `duplicate`: an earlier event sent again (same id, same bytes, a fresh signature);
//! - `bad-signature`: a wrong secret, a body changed after signing, another source's secret,
//!   a stale timestamp: each must be answered 4xx and appear nowhere.
//!
//! Every request's latency and status are recorded, and every queue's backlog (visible, in
//! flight, delayed; DLQs included) is sampled every `SOAK_SAMPLE_SECONDS` (5). After the
//! traffic it waits for the queues to drain (at most `SOAK_DRAIN_SECONDS`, 900), bills the
//! period (closed early) and bills it again (a rerun must create nothing), seals the archive,
//! and runs the accounting ([`blapi_system_tests::accounting`]). It writes
//! `target/soak/report.md`, `backlog.svg` (the backlog over time), `samples.csv`,
//! `requests.csv` and `marks.csv`, and exits non-zero if an accepted event is lost or pending,
//! anything is duplicated, or a refused event got through (or was answered 2xx).
//! `blapi-soak --replot DIR` draws `DIR/backlog.svg` again from its `samples.csv` and
//! `marks.csv` (title from `SOAK_TITLE`).
//!
//! Needs moto and localstripe (`infra/stack.sh run`, as `make soak` does) and the binaries of
//! `cargo build --workspace --bins --tests`.

use anyhow::{Context, Result, anyhow, bail};
use blapi_system_tests::accounting::{self, Effect, Input, Sent, Verdict};
use blapi_system_tests::harness::Functions;
use chrono::{Datelike, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Stripe API key of the local stack (`infra/local-secrets.json`).
const STRIPE_KEY: &str = "sk_test_blapi_local";
const PLAN: &str = "plan_cloud_pro";
/// The traffic mix: one kind per tick, in this order, round and round (20 slots).
const MIX: [Kind; 20] = {
    use Kind::*;
    [
        Purchase,
        Signup,
        Usage,
        Duplicate,
        Purchase,
        Usage,
        Signup,
        BadSignature,
        Purchase,
        Usage,
        Signup,
        Ignored,
        Purchase,
        Signup,
        Usage,
        Duplicate,
        Purchase,
        Usage,
        Signup,
        BadSignature,
    ]
};
/// Most requests in flight at once (beyond it a tick is counted as not sent).
const MAX_IN_FLIGHT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Warmup,
    Purchase,
    Ignored,
    Usage,
    Signup,
    Duplicate,
    BadSignature,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Warmup => "warmup",
            Kind::Purchase => "purchase",
            Kind::Ignored => "stripe-ignored",
            Kind::Usage => "usage",
            Kind::Signup => "signup",
            Kind::Duplicate => "duplicate",
            Kind::BadSignature => "bad-signature",
        }
    }
}

struct Config {
    seconds: u64,
    rate: f64,
    drain: Duration,
    sample_every: Duration,
    usage_delay: Duration,
    out: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("{name}={v:?} is not a valid value")),
        _ => Ok(default),
    }
}

impl Config {
    fn from_env() -> Result<Self> {
        let rate: f64 = env_or("SOAK_RATE", 10.0)?;
        if !(rate > 0.0 && rate <= 500.0) {
            bail!("SOAK_RATE must be in (0, 500]");
        }
        Ok(Self {
            seconds: env_or("SOAK_SECONDS", 600)?,
            rate,
            drain: Duration::from_secs(env_or("SOAK_DRAIN_SECONDS", 900)?),
            sample_every: Duration::from_secs(env_or("SOAK_SAMPLE_SECONDS", 5)?.max(1)),
            usage_delay: Duration::from_secs(env_or("SOAK_USAGE_DELAY", 20)?),
            out: blapi_infra::repo_root().join("target/soak"),
        })
    }
}

/// A small deterministic generator (xorshift64*): the mix needs no statistics, only variety.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// How a request is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    Stripe,
    Standard,
    /// Stripe scheme with a secret that is not the endpoint's.
    StripeWrongSecret,
    /// Stripe scheme, correctly signed for a timestamp ten minutes old.
    StripeStale,
    /// Standard scheme over other bytes than the ones sent.
    StandardTampered,
    /// Standard scheme with another source's secret.
    StandardOtherSource,
}

/// One event as the sender keeps it (resent as is by a duplicate).
#[derive(Debug, Clone)]
struct Event {
    source: &'static str,
    id: String,
    event_type: String,
    body: Vec<u8>,
    effects: Vec<Effect>,
}

/// One request on its way.
#[derive(Debug, Clone)]
struct Request {
    kind: Kind,
    event: Arc<Event>,
    signing: Signing,
}

/// What a request got.
#[derive(Debug, Clone)]
struct Outcome {
    /// Milliseconds since the traffic started (when it left).
    at_ms: u64,
    kind: Kind,
    source: &'static str,
    id: String,
    /// 0: no answer (transport error or timeout).
    status: u16,
    latency_us: u64,
}

/// A localstripe purchase made before the traffic: its Stripe objects.
#[derive(Debug, Clone)]
struct Purchase {
    customer: Value,
    subscription: Value,
    invoice: Value,
    email: String,
}

impl Purchase {
    fn customer_id(&self) -> String {
        self.customer["id"].as_str().unwrap_or_default().to_owned()
    }
    fn subscription_id(&self) -> String {
        self.subscription["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// The webhook secrets of the local stack.
struct Secrets {
    stripe: String,
    portal: blapi::webhook::standard_scheme::StandardSecret,
    telemetry: blapi::webhook::standard_scheme::StandardSecret,
}

impl Secrets {
    fn load() -> Result<Self> {
        let path = blapi_infra::repo_root().join("infra/local-secrets.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let standard = |source: &str| {
            let raw = v["SourceWebhookSecretName"][source][0]
                .as_str()
                .ok_or_else(|| anyhow!("no local secret for {source}"))?;
            blapi::webhook::standard_scheme::StandardSecret::parse(raw)
                .map_err(|e| anyhow!("{source} secret: {e}"))
        };
        Ok(Self {
            stripe: v["StripeWebhookSecretName"]["secrets"][0]
                .as_str()
                .context("no local Stripe webhook secret")?
                .to_owned(),
            portal: standard("portal")?,
            telemetry: standard("telemetry")?,
        })
    }
}

/// Sends one request and times it.
async fn send(
    http: &reqwest::Client,
    url: &str,
    secrets: &Secrets,
    req: &Request,
) -> (u16, Duration) {
    let now = Utc::now().timestamp();
    let e = &req.event;
    let mut body = e.body.clone();
    let mut builder = http.post(url).header("content-type", "application/json");
    match req.signing {
        Signing::Stripe => {
            builder = builder.header(
                "Stripe-Signature",
                blapi::webhook::stripe_scheme::header(&[secrets.stripe.as_str()], now, &body),
            );
        }
        Signing::StripeWrongSecret => {
            builder = builder.header(
                "Stripe-Signature",
                blapi::webhook::stripe_scheme::header(&["whsec_not_the_endpoint_s"], now, &body),
            );
        }
        Signing::StripeStale => {
            builder = builder.header(
                "Stripe-Signature",
                blapi::webhook::stripe_scheme::header(&[secrets.stripe.as_str()], now - 600, &body),
            );
        }
        Signing::Standard | Signing::StandardTampered | Signing::StandardOtherSource => {
            let secret = match (req.signing, e.source) {
                (Signing::StandardOtherSource, "telemetry") => &secrets.portal,
                (Signing::StandardOtherSource, _) => &secrets.telemetry,
                (_, "telemetry") => &secrets.telemetry,
                _ => &secrets.portal,
            };
            let signature = secret.sign(&e.id, now, &body);
            if req.signing == Signing::StandardTampered {
                // One byte changed after signing: the consent flips.
                let text = String::from_utf8_lossy(&body)
                    .replace("\"marketing\":false", "\"marketing\":true");
                body = text.into_bytes();
                body.push(b' ');
            }
            builder = builder
                .header("webhook-id", &e.id)
                .header("webhook-timestamp", now.to_string())
                .header("webhook-signature", signature);
        }
    }
    let started = Instant::now();
    let status = match builder.body(body).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // The whole answer, as a sender reads it.
            let _ = resp.bytes().await;
            status
        }
        Err(_) => 0,
    };
    (status, started.elapsed())
}

/// Every queue's depth every `every`, until `stop`.
#[derive(Debug, Clone)]
struct Sample {
    at_s: f64,
    queue: String,
    visible: u64,
    in_flight: u64,
    delayed: u64,
}

async fn sample_queues(
    sqs: aws_sdk_sqs::Client,
    queues: Vec<(String, String)>,
    started: Instant,
    every: Duration,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let at_s = started.elapsed().as_secs_f64();
        let got =
            futures::future::join_all(queues.iter().map(|(_, url)| accounting::depth(&sqs, url)))
                .await;
        let mut batch = Vec::new();
        for ((id, _), d) in queues.iter().zip(got) {
            if let Ok((visible, in_flight, delayed)) = d {
                batch.push(Sample {
                    at_s,
                    queue: id.clone(),
                    visible,
                    in_flight,
                    delayed,
                });
            }
        }
        if let Ok(mut s) = samples.lock() {
            s.extend(batch);
        }
    }
}

/// Waits until every source queue (not the DLQs) is empty three reads in a row; the time it
/// took, or `None` after `timeout`.
async fn drain(
    sqs: &aws_sdk_sqs::Client,
    queues: &[(String, String)],
    timeout: Duration,
) -> Result<Option<Duration>> {
    let started = Instant::now();
    let mut quiet = 0;
    loop {
        let mut busy = 0;
        for (id, url) in queues {
            if id.ends_with("DLQ") {
                continue;
            }
            let (v, i, d) = accounting::depth(sqs, url).await?;
            busy += v + i + d;
        }
        quiet = if busy == 0 { quiet + 1 } else { 0 };
        if quiet >= 3 {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > timeout {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Creates what localstripe needs, then `n` customers with a card and a subscription.
async fn make_purchases(
    http: &reqwest::Client,
    localstripe: &str,
    run: &str,
    n: usize,
) -> Result<Vec<Purchase>> {
    use futures::StreamExt;
    let post = |path: String, form: Vec<(String, String)>| {
        let http = http.clone();
        let url = format!("{localstripe}/v1/{path}");
        async move {
            let resp = http
                .post(&url)
                .basic_auth(STRIPE_KEY, Some(""))
                .form(&form)
                .send()
                .await?;
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("localstripe POST {url}: {status} {v}");
            }
            Ok(v)
        }
    };
    let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let product = post(
        "products".into(),
        f(&[
            ("name", "blapi Cloud Pro"),
            ("metadata[sku]", "professional"),
        ]),
    )
    .await?;
    let product_id = product["id"].as_str().context("product id")?.to_owned();
    // The plan's id is fixed (the price book knows it); it may exist already.
    let _ = post(
        "plans".into(),
        f(&[
            ("id", PLAN),
            ("product", &product_id),
            ("amount", "0"),
            ("currency", "usd"),
            ("interval", "month"),
            ("metadata[sku]", "professional"),
        ]),
    )
    .await;
    let one = |i: usize| {
        let post = &post;
        let http = http.clone();
        let run = run.to_owned();
        async move {
            let company = format!("Soak Co {}", i % 40);
            let email = format!("buyer{i}.{run}@soakco{}.example", i % 40);
            let name = format!("Buyer {i}");
            let customer = post(
                "customers".into(),
                f(&[
                    ("name", &name),
                    ("email", &email),
                    ("metadata[company]", &company),
                ]),
            )
            .await?;
            let cus = customer["id"].as_str().context("customer id")?.to_owned();
            post(
                format!("customers/{cus}/sources"),
                f(&[
                    ("source[object]", "card"),
                    ("source[number]", "4242424242424242"),
                    ("source[exp_month]", "12"),
                    ("source[exp_year]", "2040"),
                    ("source[cvc]", "123"),
                ]),
            )
            .await?;
            let seats = (1 + i % 9).to_string();
            let subscription = post(
                "subscriptions".into(),
                f(&[
                    ("customer", &cus),
                    ("items[0][plan]", PLAN),
                    ("items[0][quantity]", &seats),
                    ("metadata[blapi_plan]", "cloud-pro"),
                ]),
            )
            .await?;
            let invoice_id = subscription["latest_invoice"]
                .as_str()
                .context("the subscription's first invoice")?;
            let invoice: Value = http
                .get(format!("{localstripe}/v1/invoices/{invoice_id}"))
                .basic_auth(STRIPE_KEY, Some(""))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            // The customer as Stripe shows it now (with its default source).
            let customer: Value = http
                .get(format!("{localstripe}/v1/customers/{cus}"))
                .basic_auth(STRIPE_KEY, Some(""))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok(Purchase {
                customer,
                subscription,
                invoice,
                email,
            })
        }
    };
    let made: Vec<Result<Purchase>> = futures::stream::iter(0..n)
        .map(one)
        .buffered(4)
        .collect()
        .await;
    made.into_iter().collect()
}

fn stripe_event(id: &str, event_type: &str, object: &Value) -> Vec<u8> {
    let body = json!({
        "id": id,
        "object": "event",
        "api_version": "2020-08-27",
        "created": Utc::now().timestamp(),
        "type": event_type,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": object},
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn standard_event(event_type: &str, data: &Value) -> Vec<u8> {
    let body = json!({"type": event_type, "timestamp": Utc::now().to_rfc3339(), "data": data});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A (customer, subscription) pair.
type CustomerSub = (String, String);

/// A moment of the run drawn on the plot: (seconds since the traffic started, label).
type Mark = (f64, String);

/// The traffic's state: what is left to send and what was sent.
struct Traffic {
    run: String,
    rng: Rng,
    n: u64,
    /// Stripe events of the purchases, in order.
    purchase_events: VecDeque<(Arc<Event>, Option<CustomerSub>)>,
    /// Subscriptions whose `customer.subscription.created` left, and when.
    subscribed: Vec<(Instant, String, String)>,
    buyers: Vec<String>,
    signed_up: Vec<String>,
    /// Every genuine event sent (a duplicate picks one).
    sent: Vec<Arc<Event>>,
    /// Every event, by (source, id): kind and effects, for the accounting.
    events: HashMap<(String, String), (Kind, Arc<Event>)>,
    usage_delay: Duration,
    bad_variant: usize,
}

impl Traffic {
    fn next_id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}_soak{}_{}", self.run, self.n)
    }

    fn record(&mut self, kind: Kind, event: Event) -> Arc<Event> {
        let event = Arc::new(event);
        self.events.insert(
            (event.source.to_owned(), event.id.clone()),
            (kind, event.clone()),
        );
        event
    }

    fn purchase_events(&mut self, purchases: &[Purchase]) {
        for p in purchases {
            let (cus, sub) = (p.customer_id(), p.subscription_id());
            let items = [
                (
                    "customer.created",
                    &p.customer,
                    vec![
                        Effect::Lead {
                            email: p.email.clone(),
                        },
                        Effect::Account {
                            customer: cus.clone(),
                            subscription: None,
                        },
                    ],
                    None,
                ),
                (
                    "customer.subscription.created",
                    &p.subscription,
                    vec![
                        Effect::License {
                            customer: cus.clone(),
                            subscription: sub.clone(),
                        },
                        Effect::Account {
                            customer: cus.clone(),
                            subscription: Some(sub.clone()),
                        },
                        Effect::SubscriptionView {
                            customer: cus.clone(),
                            subscription: sub.clone(),
                        },
                    ],
                    Some((cus.clone(), sub.clone())),
                ),
                (
                    "invoice.payment_succeeded",
                    &p.invoice,
                    vec![
                        Effect::License {
                            customer: cus.clone(),
                            subscription: sub.clone(),
                        },
                        Effect::Account {
                            customer: cus.clone(),
                            subscription: Some(sub.clone()),
                        },
                    ],
                    None,
                ),
            ];
            for (event_type, object, effects, subscribes) in items {
                let id = self.next_id("evt");
                // The body is made when it is first sent (its `created` is then).
                let event = Arc::new(Event {
                    source: "stripe",
                    id,
                    event_type: event_type.to_owned(),
                    body: serde_json::to_vec(object).unwrap_or_default(),
                    effects,
                });
                self.purchase_events.push_back((event, subscribes));
            }
            self.buyers.push(p.email.clone());
        }
    }

    fn signup_data(&mut self, email: &str, marketing: bool) -> Value {
        let n = self.n;
        let country = ["US", "GB", "DE", "FR"][(n % 4) as usize];
        json!({"email": email, "first_name": format!("Soak{n}"), "last_name": "Person",
               "company": "Soak Test", "country": country,
               "form": "signup", "product": "cloud",
               "consent": {"marketing": marketing, "terms": true}})
    }

    fn fresh_email(&mut self) -> String {
        let n = self.n;
        let domain = match n % 5 {
            0 => "gmail.com".to_owned(),
            1 => "globex.example".to_owned(),
            _ => format!("soakco{}.example", n % 40),
        };
        format!("person{n}.{}@{domain}", self.run)
    }

    fn usage_event(
        &mut self,
        id: &str,
        customer: &str,
        subscription: &str,
    ) -> (Vec<u8>, Vec<Effect>) {
        let now = Utc::now();
        let period = format!("{:04}-{:02}", now.year(), now.month());
        let metrics = ["api_calls", "builds", "peak_nodes", "capacity", "api_calls"];
        let mut records = Vec::new();
        let mut effects = Vec::new();
        for (k, metric) in metrics.iter().enumerate() {
            let record = format!("u-{id}-{k}");
            let value = match *metric {
                "api_calls" => 100 + self.rng.below(900) as u64,
                "builds" => 1,
                _ => 1 + self.rng.below(8) as u64,
            };
            records.push(
                json!({"id": record, "customer": customer, "subscription": subscription,
                "metric": metric, "value": value,
                "timestamp": (now - chrono::Duration::seconds(k as i64)).to_rfc3339(),
                "installation": "inst-soak"}),
            );
            effects.push(Effect::Usage {
                customer: customer.to_owned(),
                subscription: subscription.to_owned(),
                record,
                period: period.clone(),
            });
        }
        (
            standard_event("usage.reported", &json!({"records": records})),
            effects,
        )
    }

    /// The request of the tick, or `None` when the kind has nothing left to send.
    fn next(&mut self, kind: Kind) -> Option<Request> {
        match kind {
            Kind::Warmup => None,
            Kind::Purchase => {
                let (template, subscribes) = self.purchase_events.pop_front()?;
                let object: Value = serde_json::from_slice(&template.body).unwrap_or(Value::Null);
                let event = Event {
                    body: stripe_event(&template.id, &template.event_type, &object),
                    ..(*template).clone()
                };
                if let Some((cus, sub)) = subscribes {
                    self.subscribed.push((Instant::now(), cus, sub));
                }
                let event = self.record(Kind::Purchase, event);
                self.sent.push(event.clone());
                Some(Request {
                    kind,
                    event,
                    signing: Signing::Stripe,
                })
            }
            Kind::Ignored => {
                let id = self.next_id("evt");
                let customer = self
                    .subscribed
                    .first()
                    .map(|(_, c, _)| c.clone())
                    .unwrap_or_else(|| "cus_soak_none".into());
                let body = stripe_event(
                    &id,
                    "charge.succeeded",
                    &json!({"id": format!("ch_{id}"), "object": "charge", "amount": 1000,
                            "currency": "usd", "customer": customer, "paid": true}),
                );
                let event = self.record(
                    kind,
                    Event {
                        source: "stripe",
                        id,
                        event_type: "charge.succeeded".into(),
                        body,
                        effects: vec![Effect::ArchiveOnly],
                    },
                );
                self.sent.push(event.clone());
                Some(Request {
                    kind,
                    event,
                    signing: Signing::Stripe,
                })
            }
            Kind::Usage => {
                let id = self.next_id("msg");
                let ready: Vec<&(Instant, String, String)> = self
                    .subscribed
                    .iter()
                    .filter(|(at, _, _)| at.elapsed() >= self.usage_delay)
                    .collect();
                let (customer, subscription) = if ready.is_empty() {
                    // Nobody to meter yet: an unknown customer, refused with its reason.
                    ("cus_soak_unknown".to_owned(), "sub_soak_unknown".to_owned())
                } else {
                    let (_, c, s) = ready[self.rng.below(ready.len())];
                    (c.clone(), s.clone())
                };
                let (body, effects) = self.usage_event(&id, &customer, &subscription);
                let event = self.record(
                    kind,
                    Event {
                        source: "telemetry",
                        id,
                        event_type: "usage.reported".into(),
                        body,
                        effects,
                    },
                );
                self.sent.push(event.clone());
                Some(Request {
                    kind,
                    event,
                    signing: Signing::Standard,
                })
            }
            Kind::Signup => {
                let id = self.next_id("msg");
                let roll = self.rng.below(100);
                let email = if roll < 15 && !self.signed_up.is_empty() {
                    // Someone signing up again.
                    self.signed_up[self.rng.below(self.signed_up.len())].clone()
                } else if roll < 30 && !self.buyers.is_empty() {
                    // A buyer (before or after their purchase reaches us).
                    self.buyers[self.rng.below(self.buyers.len())].clone()
                } else {
                    self.fresh_email()
                };
                let data = self.signup_data(&email, roll.is_multiple_of(2));
                self.signed_up.push(email.clone());
                let event = self.record(
                    kind,
                    Event {
                        source: "portal",
                        id,
                        event_type: "lead.signup".into(),
                        body: standard_event("lead.signup", &data),
                        effects: vec![Effect::Lead { email }],
                    },
                );
                self.sent.push(event.clone());
                Some(Request {
                    kind,
                    event,
                    signing: Signing::Standard,
                })
            }
            Kind::Duplicate => {
                if self.sent.is_empty() {
                    return None;
                }
                let event = self.sent[self.rng.below(self.sent.len())].clone();
                let signing = if event.source == "stripe" {
                    Signing::Stripe
                } else {
                    Signing::Standard
                };
                Some(Request {
                    kind,
                    event,
                    signing,
                })
            }
            Kind::BadSignature => {
                self.bad_variant += 1;
                let (source, id, event_type, body, effects, signing) = match self.bad_variant % 4 {
                    0 | 3 => {
                        // A Stripe event of a customer nobody has (its effects are unique).
                        let id = self.next_id("evt");
                        let cus = format!("cus_{id}");
                        let email = format!("forged.{id}@soak.example");
                        let body = stripe_event(
                            &id,
                            "customer.created",
                            &json!({"id": cus, "object": "customer", "email": email, "name": "Forged"}),
                        );
                        let signing = if self.bad_variant.is_multiple_of(4) {
                            Signing::StripeWrongSecret
                        } else {
                            Signing::StripeStale
                        };
                        (
                            "stripe",
                            id,
                            "customer.created",
                            body,
                            vec![Effect::Lead { email }],
                            signing,
                        )
                    }
                    1 => {
                        let id = self.next_id("msg");
                        let email = format!("forged.{id}@soak.example");
                        let data = self.signup_data(&email, false);
                        (
                            "portal",
                            id,
                            "lead.signup",
                            standard_event("lead.signup", &data),
                            vec![Effect::Lead { email }],
                            Signing::StandardTampered,
                        )
                    }
                    _ => {
                        let id = self.next_id("msg");
                        let (body, effects) =
                            self.usage_event(&id, "cus_soak_forged", "sub_soak_forged");
                        (
                            "telemetry",
                            id,
                            "usage.reported",
                            body,
                            effects,
                            Signing::StandardOtherSource,
                        )
                    }
                };
                let event = self.record(
                    kind,
                    Event {
                        source,
                        id,
                        event_type: event_type.into(),
                        body,
                        effects,
                    },
                );
                Some(Request {
                    kind,
                    event,
                    signing,
                })
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// The backlog plot: one polyline per queue that ever held a message, time on x; the whole
/// run above, the traffic phase alone (its own scale) below.
fn svg(samples: &[Sample], marks: &[Mark], title: &str) -> String {
    let mut series: BTreeMap<&str, Vec<(f64, u64)>> = BTreeMap::new();
    for s in samples {
        series
            .entry(s.queue.as_str())
            .or_default()
            .push((s.at_s, s.visible + s.in_flight + s.delayed));
    }
    series.retain(|_, pts| pts.iter().any(|(_, n)| *n > 0));
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#e7ba52",
    ];
    let (w, h) = (1100.0_f64, 900.0_f64);
    let (left, right) = (70.0, 300.0);
    let pw = w - left - right;
    let end = samples
        .iter()
        .map(|s| s.at_s)
        .chain(marks.iter().map(|(t, _)| *t))
        .fold(1.0, f64::max);
    let traffic_end = marks.first().map_or(end, |(t, _)| *t);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{left}" y="22" font-size="15">{}</text>"#,
        xml(title)
    );
    let panels = [
        ("the whole run", end, 50.0),
        ("the traffic phase (own scale)", traffic_end, 480.0),
    ];
    for (name, t_end, top) in panels {
        let ph = 360.0;
        let t_step = nice_ceiling(t_end / 6.0);
        let t_max = (t_end / t_step).ceil() * t_step;
        let y_max = nice_ceiling(
            series
                .values()
                .flat_map(|p| p.iter().filter(|(t, _)| *t <= t_max).map(|(_, n)| *n))
                .max()
                .unwrap_or(0)
                .max(1) as f64,
        );
        let x = |t: f64| left + t / t_max * pw;
        let y = |n: f64| top + ph - n / y_max * ph;
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            top - 6.0,
            xml(name)
        );
        for i in 0..=5 {
            let v = y_max * f64::from(i) / 5.0;
            let yy = y(v);
            let _ = writeln!(
                o,
                r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + pw,
                left - 6.0,
                yy + 4.0,
                v.round()
            );
        }
        let mut t = 0.0;
        while t <= t_max + 0.5 {
            let xx = x(t);
            let _ = writeln!(
                o,
                r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#999"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>"##,
                top + ph,
                top + ph + 5.0,
                top + ph + 18.0,
                t
            );
            t += t_step;
        }
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="#333"/><line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
            top + ph,
            top + ph,
            left + pw,
            top + ph
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the traffic started</text>"#,
            left + pw / 2.0,
            top + ph + 34.0
        );
        let _ = writeln!(
            o,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">messages (visible + in flight + delayed)</text>"#,
            top + ph / 2.0
        );
        for (i, (t, label)) in marks.iter().enumerate() {
            if *t > t_max {
                continue;
            }
            let xx = x(*t);
            let _ = writeln!(
                o,
                r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="4 4"/><text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##,
                top + ph,
                xx + 4.0,
                top + 12.0 + 14.0 * i as f64,
                xml(label)
            );
        }
        for (i, pts) in series.values().enumerate() {
            let color = colors[i % colors.len()];
            let points: Vec<String> = pts
                .iter()
                .filter(|(t, _)| *t <= t_max)
                .map(|(t, n)| format!("{:.1},{:.1}", x(*t), y(*n as f64)))
                .collect();
            let _ = writeln!(
                o,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
                points.join(" ")
            );
        }
    }
    let lx = left + pw + 20.0;
    for (i, (queue, pts)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let ly = 60.0 + 18.0 * i as f64;
        let peak = pts.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let in_traffic = pts
            .iter()
            .filter(|(t, _)| *t <= traffic_end)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            o,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{} (peak {peak}; {in_traffic} in traffic)</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            xml(queue)
        );
    }
    if series.is_empty() {
        let _ = writeln!(
            o,
            r#"<text x="{lx:.1}" y="60">every queue stayed empty</text>"#
        );
    }
    let _ = writeln!(
        o,
        r##"<text x="{lx:.1}" y="{:.1}" fill="#555">queues not listed (every DLQ</text><text x="{lx:.1}" y="{:.1}" fill="#555">included) held nothing</text>"##,
        80.0 + 18.0 * series.len() as f64,
        96.0 + 18.0 * series.len() as f64
    );
    o.push_str("</svg>\n");
    o
}

/// Reads `samples.csv` and `marks.csv` of a run directory.
fn read_run(dir: &Path) -> Result<(Vec<Sample>, Vec<Mark>)> {
    let text = std::fs::read_to_string(dir.join("samples.csv"))
        .with_context(|| format!("{}/samples.csv", dir.display()))?;
    let mut samples = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 5 {
            continue;
        }
        samples.push(Sample {
            at_s: f[0].parse().unwrap_or(0.0),
            queue: f[1].to_owned(),
            visible: f[2].parse().unwrap_or(0),
            in_flight: f[3].parse().unwrap_or(0),
            delayed: f[4].parse().unwrap_or(0),
        });
    }
    let marks = std::fs::read_to_string(dir.join("marks.csv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .filter_map(|(t, label)| Some((t.parse().ok()?, label.to_owned())))
        .collect();
    Ok((samples, marks))
}

fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<()> {
    let cfg = Config::from_env()?;
    // `blapi-soak --replot DIR`: draws DIR/backlog.svg again from DIR/samples.csv.
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, dir, ..] = args.as_slice()
        && flag == "--replot"
    {
        let dir = PathBuf::from(dir);
        let (samples, marks) = read_run(&dir)?;
        let title = std::env::var("SOAK_TITLE").unwrap_or_else(|_| "Queue backlog".into());
        return write(&dir.join("backlog.svg"), &svg(&samples, &marks, &title));
    }
    std::fs::create_dir_all(&cfg.out)?;
    let say = |msg: &str| {
        println!("[{}] {msg}", Utc::now().format("%H:%M:%S"));
    };
    let secrets = Arc::new(Secrets::load()?);
    let localstripe = blapi_system_tests::localstripe_url()
        .trim_end_matches('/')
        .to_owned();
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let requests_total = (cfg.seconds as f64 * cfg.rate).ceil() as usize;
    let purchase_slots = MIX.iter().filter(|k| **k == Kind::Purchase).count();
    let purchases_needed = (requests_total * purchase_slots).div_ceil(MIX.len() * 3) + 1;

    say(&format!(
        "provisioning a stack of its own; {}s at {}/s = {requests_total} requests; {purchases_needed} localstripe purchases",
        cfg.seconds, cfg.rate
    ));
    let stack = blapi_system_tests::fresh_stack().await;
    let logs = cfg.out.join("logs");
    let mut functions = Functions::start(&stack, &logs).await?;
    let clients = blapi_system_tests::clients(&stack).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()?;
    let made = Instant::now();
    let purchases = make_purchases(&http, &localstripe, &run, purchases_needed).await?;
    say(&format!(
        "stack {} up (function logs in {}); {} purchases made on localstripe in {:.0}s",
        stack.prefix,
        logs.join(format!("{}-watch.log", stack.prefix)).display(),
        purchases.len(),
        made.elapsed().as_secs_f64()
    ));

    let mut traffic = Traffic {
        run: run.clone(),
        rng: Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from_str_radix(&run, 16).unwrap_or(1)),
        n: 0,
        purchase_events: VecDeque::new(),
        subscribed: Vec::new(),
        buyers: Vec::new(),
        signed_up: Vec::new(),
        sent: Vec::new(),
        events: HashMap::new(),
        usage_delay: cfg.usage_delay,
        bad_variant: 0,
    };
    traffic.purchase_events(&purchases);
    let stripe_url = functions.url("webhook-intake", "webhooks/stripe");
    let portal_url = functions.url("webhook-intake", "webhooks/portal");
    let telemetry_url = functions.url("webhook-intake", "webhooks/telemetry");
    let url_of = move |source: &str| -> String {
        match source {
            "stripe" => stripe_url.clone(),
            "portal" => portal_url.clone(),
            _ => telemetry_url.clone(),
        }
    };

    // Warm-up: one event per source, one at a time (cold starts, cached secrets); accounted
    // for like the rest, kept out of the latency figures.
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::new()));
    for kind in [Kind::Signup, Kind::Usage, Kind::Ignored] {
        let Some(mut req) = traffic.next(kind) else {
            continue;
        };
        req.kind = Kind::Warmup;
        if let Some(entry) = traffic
            .events
            .get_mut(&(req.event.source.to_owned(), req.event.id.clone()))
        {
            entry.0 = Kind::Warmup;
        }
        let (status, took) = send(&http, &url_of(req.event.source), &secrets, &req).await;
        say(&format!(
            "warm-up {} -> {status} in {:.0} ms",
            req.event.source,
            took.as_secs_f64() * 1000.0
        ));
        if let Ok(mut o) = outcomes.lock() {
            o.push(Outcome {
                at_ms: 0,
                kind: Kind::Warmup,
                source: req.event.source,
                id: req.event.id.clone(),
                status,
                latency_us: took.as_micros() as u64,
            });
        }
    }

    // The sampler runs from here to the end of the billing run.
    let queues = accounting::queues(&stack);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample_queues(
        clients.sqs().clone(),
        queues.clone(),
        started,
        cfg.sample_every,
        stop.clone(),
        samples.clone(),
    ));

    say(&format!(
        "traffic: {requests_total} requests at {}/s for {}s",
        cfg.rate, cfg.seconds
    ));
    let gate = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / cfg.rate);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut not_sent: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut last_progress = Instant::now();
    for tick in 0..requests_total {
        ticker.tick().await;
        let mut kind = MIX[tick % MIX.len()];
        let req = match traffic.next(kind) {
            Some(r) => r,
            None => {
                // Out of purchases (or nothing to duplicate yet): a sign-up instead.
                kind = Kind::Signup;
                match traffic.next(kind) {
                    Some(r) => r,
                    None => continue,
                }
            }
        };
        let Ok(permit) = gate.clone().try_acquire_owned() else {
            *not_sent.entry(kind.label()).or_insert(0) += 1;
            continue;
        };
        let at_ms = started.elapsed().as_millis() as u64;
        let http = http.clone();
        let secrets = secrets.clone();
        let url = url_of(req.event.source);
        let sink = outcomes.clone();
        tasks.spawn(async move {
            let (status, took) = send(&http, &url, &secrets, &req).await;
            drop(permit);
            if let Ok(mut o) = sink.lock() {
                o.push(Outcome {
                    at_ms,
                    kind: req.kind,
                    source: req.event.source,
                    id: req.event.id.clone(),
                    status,
                    latency_us: took.as_micros() as u64,
                });
            }
        });
        while tasks.try_join_next().is_some() {}
        if last_progress.elapsed() >= Duration::from_secs(30) {
            last_progress = Instant::now();
            let done = outcomes.lock().map(|o| o.len()).unwrap_or(0);
            let backlog: u64 = samples
                .lock()
                .map(|s| {
                    let last = s.last().map_or(0.0, |x| x.at_s);
                    s.iter()
                        .filter(|x| x.at_s == last && !x.queue.ends_with("DLQ"))
                        .map(|x| x.visible + x.in_flight + x.delayed)
                        .sum()
                })
                .unwrap_or(0);
            say(&format!(
                "{:>4.0}s: {} sent, {done} answered, backlog {backlog}",
                started.elapsed().as_secs_f64(),
                tick + 1,
            ));
        }
    }
    while tasks.join_next().await.is_some() {}
    let traffic_end_s = started.elapsed().as_secs_f64();
    say(&format!(
        "traffic done in {traffic_end_s:.0}s; waiting for the queues to drain (at most {}s)",
        cfg.drain.as_secs()
    ));
    let drained = drain(clients.sqs(), &queues, cfg.drain).await?;
    let drained_s = started.elapsed().as_secs_f64();
    say(&match drained {
        Some(d) => format!("drained {:.0}s after the traffic", d.as_secs_f64()),
        None => "NOT drained in time".to_owned(),
    });

    // The month's invoices: the period closed early, billed, then billed again (a rerun).
    let now = Utc::now();
    let month = format!("{:04}-{:02}", now.year(), now.month());
    let mut billing = Vec::new();
    for attempt in ["bill", "rerun"] {
        let t = Instant::now();
        let answer = blapi_infra::mapper::invoke(
            &http,
            &functions.lambda_url,
            "usage-billing",
            &json!({"action": "plan", "period": month, "close_early": true}),
        )
        .await;
        let drained = drain(clients.sqs(), &queues, cfg.drain).await?;
        let line = format!(
            "{attempt}: plan answered {} ; queues {} in {:.0}s",
            match &answer {
                Ok(v) => v.to_string().chars().take(300).collect::<String>(),
                Err(e) => format!("ERROR {e:#}"),
            },
            if drained.is_some() {
                "drained"
            } else {
                "NOT drained"
            },
            t.elapsed().as_secs_f64()
        );
        say(&line);
        billing.push(line);
    }
    let billed_s = started.elapsed().as_secs_f64();
    let seal = blapi_infra::mapper::invoke(
        &http,
        &functions.lambda_url,
        "webhook-intake",
        &json!({"action": "seal", "all": true}),
    )
    .await
    .map_or_else(|e| format!("ERROR {e:#}"), |v| v.to_string());
    say(&format!("archive sealed: {seal}"));
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    let counters = functions.stop_mapper().await.ok();

    // What each event got.
    let outcomes = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    let mut per_event: HashMap<(String, String), (u32, u32, u32)> = HashMap::new();
    for o in &outcomes {
        let e = per_event
            .entry((o.source.to_owned(), o.id.clone()))
            .or_default();
        match o.status {
            200..=299 => e.0 += 1,
            400..=499 => e.1 += 1,
            _ => e.2 += 1,
        }
    }
    let mut sent = Vec::new();
    let mut accepted_customers = std::collections::BTreeSet::new();
    for ((source, id), (kind, event)) in &traffic.events {
        let Some((ok, refused, _)) = per_event.get(&(source.clone(), id.clone())) else {
            continue;
        };
        let verdict = if *ok > 0 {
            Verdict::Accepted
        } else if *refused > 0 {
            Verdict::Refused
        } else {
            Verdict::Unknown
        };
        if verdict == Verdict::Accepted && event.event_type == "customer.subscription.created" {
            for e in &event.effects {
                if let Effect::SubscriptionView { customer, .. } = e {
                    accepted_customers.insert(customer.clone());
                }
            }
        }
        sent.push(Sent {
            source: source.clone(),
            id: id.clone(),
            kind: kind.label().to_owned(),
            event_type: event.event_type.clone(),
            verdict,
            accepted_deliveries: *ok,
            effects: event.effects.clone(),
        });
    }
    sent.sort_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
    say("accounting: reading the archive, every table, every DLQ and localstripe");
    let input = Input {
        sent,
        invoices: accepted_customers
            .iter()
            .map(|c| (c.clone(), month.clone()))
            .collect(),
        localstripe: Some((localstripe.clone(), STRIPE_KEY.to_owned())),
    };
    let report = accounting::account(&stack, &input).await?;

    // The figures.
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Soak: {}s at {}/s on the local stack\n",
        cfg.seconds, cfg.rate
    );
    let _ = writeln!(
        md,
        "Stack `{}` (moto {} + localstripe {}), the functions under `cargo lambda watch` (two processes each) with the event-source mapper; run {} at {} UTC.\n",
        stack.prefix,
        stack.endpoint,
        localstripe,
        run,
        now.format("%Y-%m-%d %H:%M")
    );
    let traffic_outcomes: Vec<&Outcome> =
        outcomes.iter().filter(|o| o.kind != Kind::Warmup).collect();
    let achieved = traffic_outcomes.len() as f64 / traffic_end_s.max(1.0);
    let _ = writeln!(
        md,
        "Traffic: {} requests sent in {traffic_end_s:.0}s ({achieved:.2}/s achieved){}; drained {}; billing done at {billed_s:.0}s.\n",
        traffic_outcomes.len(),
        if not_sent.is_empty() {
            String::new()
        } else {
            format!(", not sent (over {MAX_IN_FLIGHT} in flight): {not_sent:?}")
        },
        match drained {
            Some(d) => format!(
                "{:.0}s after the traffic ended (at {drained_s:.0}s)",
                d.as_secs_f64()
            ),
            None => "NOT within the bound".into(),
        },
    );
    let _ = writeln!(
        md,
        "## Requests and intake latency (ms, send to full answer)\n"
    );
    let _ = writeln!(
        md,
        "| kind | requests | 2xx | 4xx | 5xx | no answer | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut by_kind: BTreeMap<Kind, Vec<&Outcome>> = BTreeMap::new();
    for o in &outcomes {
        by_kind.entry(o.kind).or_default().push(o);
    }
    let mut all_lat: Vec<u64> = traffic_outcomes.iter().map(|o| o.latency_us).collect();
    all_lat.sort_unstable();
    let row = |label: &str, os: &[&Outcome], md: &mut String| {
        let mut lat: Vec<u64> = os.iter().map(|o| o.latency_us).collect();
        lat.sort_unstable();
        let count =
            |r: std::ops::RangeInclusive<u16>| os.iter().filter(|o| r.contains(&o.status)).count();
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            os.len(),
            count(200..=299),
            count(400..=499),
            count(500..=599),
            count(0..=0),
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 90.0)),
            ms(percentile(&lat, 99.0)),
            ms(lat.last().copied().unwrap_or(0)),
        );
    };
    for (kind, os) in &by_kind {
        row(kind.label(), os, &mut md);
    }
    row("**all (no warm-up)**", &traffic_outcomes, &mut md);
    // Per 60 s window: is latency steady over the soak?
    let _ = writeln!(md, "\n## Latency over time (all kinds but warm-up, ms)\n");
    let _ = writeln!(
        md,
        "| window (s) | requests | p50 | p99 | max |\n|---|---:|---:|---:|---:|"
    );
    let window_ms = 60_000u64;
    let last_window = traffic_outcomes
        .iter()
        .map(|o| o.at_ms / window_ms)
        .max()
        .unwrap_or(0);
    for w in 0..=last_window {
        let mut lat: Vec<u64> = traffic_outcomes
            .iter()
            .filter(|o| o.at_ms / window_ms == w)
            .map(|o| o.latency_us)
            .collect();
        lat.sort_unstable();
        let _ = writeln!(
            md,
            "| {}-{} | {} | {} | {} | {} |",
            w * 60,
            (w + 1) * 60,
            lat.len(),
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0)),
            ms(lat.last().copied().unwrap_or(0))
        );
    }
    // Usage refused although its subscription was bought (billing had not seen it yet).
    let mut live_refusals: BTreeMap<String, usize> = BTreeMap::new();
    for e in &report.events {
        for c in &e.checks {
            if let (Effect::Usage { customer, .. }, accounting::Found::Refused(reason)) =
                (&c.effect, &c.found)
                && !customer.starts_with("cus_soak_")
            {
                *live_refusals.entry(reason.clone()).or_insert(0) += 1;
            }
        }
    }
    let bad_accepted: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.kind == Kind::BadSignature && (200..300).contains(&o.status))
        .collect();
    let genuine_refused: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.kind != Kind::BadSignature && (400..500).contains(&o.status))
        .collect();

    let _ = writeln!(
        md,
        "\n## Queue backlog (messages: visible + in flight + delayed)\n"
    );
    let _ = writeln!(md, "![backlog over time](backlog.svg)\n");
    let _ = writeln!(
        md,
        "| queue | peak | at (s) | at traffic end | final |\n|---|---:|---:|---:|---:|"
    );
    let mut per_queue: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in &samples {
        per_queue.entry(s.queue.as_str()).or_default().push(s);
    }
    for (q, ss) in &per_queue {
        let total = |s: &Sample| s.visible + s.in_flight + s.delayed;
        let peak = ss.iter().max_by_key(|s| total(s));
        let at_end = ss
            .iter()
            .rfind(|s| s.at_s <= traffic_end_s)
            .map_or(0, |s| total(s));
        let last = ss.last().map_or(0, |s| total(s));
        let peak_n = peak.map_or(0, |s| total(s));
        if peak_n == 0 {
            continue;
        }
        let _ = writeln!(
            md,
            "| {q} | {peak_n} | {:.0} | {at_end} | {last} |",
            peak.map_or(0.0, |s| s.at_s)
        );
    }
    let quiet: Vec<&str> = per_queue
        .iter()
        .filter(|(_, ss)| ss.iter().all(|s| s.visible + s.in_flight + s.delayed == 0))
        .map(|(q, _)| *q)
        .collect();
    let _ = writeln!(md, "\nEmpty throughout: {}.\n", quiet.join(", "));
    let _ = writeln!(md, "## Billing and the archive\n");
    for b in &billing {
        let _ = writeln!(md, "- {b}");
    }
    let _ = writeln!(
        md,
        "- seal: `{}`",
        seal.chars().take(400).collect::<String>()
    );
    if let Some(c) = counters {
        let _ = writeln!(
            md,
            "- mapper: {} invocations, {} records, {} deleted, {} reported failed (each retried, a DLQ after the queue's maxReceiveCount)",
            c.invocations, c.records, c.deleted, c.failed
        );
    }
    let _ = writeln!(md, "\n## Accounting\n\n```\n{report}```\n");
    let _ = writeln!(
        md,
        "Usage records refused for a subscription that was bought (sent at least {}s after its `customer.subscription.created`): {}.\n",
        cfg.usage_delay.as_secs(),
        if live_refusals.is_empty() {
            "none".to_owned()
        } else {
            format!("{live_refusals:?}")
        }
    );
    let lost = report.lost();
    let duplicated = report.duplicated();
    let leaked = report.leaked();
    let pending = report.pending();
    let mut verdicts = Vec::new();
    if !lost.is_empty() {
        verdicts.push(format!("{} lost", lost.len()));
    }
    if !duplicated.is_empty() {
        verdicts.push(format!("{} duplicated", duplicated.len()));
    }
    if !leaked.is_empty() {
        verdicts.push(format!(
            "{} refused events found in the system",
            leaked.len()
        ));
    }
    if !pending.is_empty() {
        verdicts.push(format!("{} pending", pending.len()));
    }
    if !bad_accepted.is_empty() {
        verdicts.push(format!(
            "{} bad signatures answered 2xx",
            bad_accepted.len()
        ));
    }
    if !genuine_refused.is_empty() {
        verdicts.push(format!(
            "{} genuine deliveries answered 4xx (e.g. {}/{})",
            genuine_refused.len(),
            genuine_refused[0].source,
            genuine_refused[0].id
        ));
    }
    let _ = writeln!(
        md,
        "## Verdict\n\n{}\n",
        if verdicts.is_empty() {
            "PASS: every accepted event is accounted for, nothing is duplicated, every bad signature was refused and appears nowhere.".to_owned()
        } else {
            format!("FAIL: {}.", verdicts.join(", "))
        }
    );

    let mut csv = String::from("t_s,queue,visible,in_flight,delayed\n");
    for s in &samples {
        let _ = writeln!(
            csv,
            "{:.1},{},{},{},{}",
            s.at_s, s.queue, s.visible, s.in_flight, s.delayed
        );
    }
    let mut req_csv = String::from("t_ms,kind,source,id,status,latency_ms\n");
    for o in &outcomes {
        let _ = writeln!(
            req_csv,
            "{},{},{},{},{},{}",
            o.at_ms,
            o.kind.label(),
            o.source,
            o.id,
            o.status,
            ms(o.latency_us)
        );
    }
    let title = format!(
        "Queue backlog during a {}s soak at {}/s (p50 {} ms, p99 {} ms)",
        cfg.seconds,
        cfg.rate,
        ms(percentile(&all_lat, 50.0)),
        ms(percentile(&all_lat, 99.0))
    );
    write(&cfg.out.join("report.md"), &md)?;
    let marks = vec![
        (traffic_end_s, "traffic ends".to_owned()),
        (drained_s, "drained; billing".to_owned()),
    ];
    let mut marks_csv = String::from("t_s,label\n");
    for (t, label) in &marks {
        let _ = writeln!(marks_csv, "{t:.1},{label}");
    }
    write(&cfg.out.join("marks.csv"), &marks_csv)?;
    write(&cfg.out.join("backlog.svg"), &svg(&samples, &marks, &title))?;
    write(&cfg.out.join("samples.csv"), &csv)?;
    write(&cfg.out.join("requests.csv"), &req_csv)?;
    println!("{md}");
    say(&format!(
        "wrote {}/report.md, backlog.svg, samples.csv, requests.csv",
        cfg.out.display()
    ));
    drop(functions);
    if verdicts.is_empty() {
        Ok(())
    } else {
        bail!("soak failed: {}", verdicts.join(", "))
    }
}
