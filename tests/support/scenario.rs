//! The business scenario that `make demo` plays and the end-to-end test asserts.
//!
//! Everything goes through the running system: localstripe sends signed webhooks to the
//! intake's Function URL (served by `cargo lambda watch`), the mapper feeds the queues to the
//! functions, and results are read back from the stores and the functions' admin actions.
//!
//! Steps: a Stripe subscription -> a license (verified offline with the published key);
//! portal sign-ups (company, free-mail, existing account) -> routed leads in the CRM sink;
//! telemetry usage -> billing for the period -> an invoice on localstripe + JSON/HTML in S3;
//! the buyer as one linked customer in the CRM (account with owner, status, license and
//! invoice; contact; won opportunity; their lead converted; a later sign-up from the same
//! company routed to the account's owner); one Stripe event delivered twice (accepted twice,
//! archived once once the hour is sealed, nothing new downstream) and one poison message (DLQ).

mod dunning;
mod mail;
mod portal;
pub use dunning::DunningLine;
pub use mail::{Inbox, MailLine, links};
pub use portal::{PortalLine, fuzz_subject};

use crate::harness::Functions;
use anyhow::{Context, Result, anyhow, bail, ensure};
use blapi::config::Secret;
use blapi::crm::CrmObject;
use blapi::leads::input::LeadId;
use blapi::leads::routing::AccountDirectory;
use blapi::leads::store::LeadStore;
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::{StripeClient, form_pairs};
use blapi_infra::LocalStack;
use chrono::{Datelike, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Stripe API key of the local stack (`infra/local-secrets.json`).
pub const STRIPE_KEY: &str = "sk_test_blapi_local";
/// The plan the scenario sells: billed by usage-billing (`cloud-pro` in the price book), licensed
/// as `professional` (its metadata); its own Stripe amount is 0 so seats are not charged twice.
const PLAN: &str = "plan_cloud_pro";
const SEATS: u32 = 5;

/// What a step prints while it runs.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// One minted license as the summary shows it.
#[derive(Debug, Clone)]
pub struct LicenseLine {
    pub id: String,
    pub customer: String,
    pub subscription: String,
    pub seats: u64,
    pub sku: String,
    pub expires: String,
    pub status: String,
    pub signature_ok: bool,
}

/// One lead as it landed in the CRM sink.
#[derive(Debug, Clone)]
pub struct LeadLine {
    pub label: String,
    pub lead_id: String,
    pub owner: String,
    pub team: String,
    pub score: u32,
    pub grade: String,
    pub reason: String,
    pub enriched_company: Option<String>,
}

/// The invoice of the period.
#[derive(Debug, Clone)]
pub struct InvoiceSummary {
    pub customer: String,
    pub period: String,
    pub stripe_invoices: usize,
    pub stripe_invoice: Option<String>,
    pub stripe_total: i64,
    pub artifact_total: i64,
    pub currency: String,
    pub lines: Vec<(String, String, i64)>,
    pub json_key: String,
    pub html_key: String,
}

/// The demo customer as customer-sync left it in the CRM sink.
#[derive(Debug, Clone)]
pub struct CustomerLine {
    pub customer: String,
    /// The Account record (JSON as the sink stores it).
    pub account: Value,
    /// The Contact record (no e-mail or name in the sink).
    pub contact: Value,
    /// The subscription's Opportunity.
    pub opportunity: Value,
    /// The lead the buyer came in as, converted and linked to the account.
    pub converted_lead: String,
    /// A later sign-up from the customer's company: its owner and why.
    pub follow_up_owner: String,
    pub follow_up_reason: String,
}

/// The day's revenue operations as revenue-ops left them.
#[derive(Debug, Clone)]
pub struct RevenueLine {
    /// The plan's answer (date, jobs, snapshot and report keys, MRR).
    pub plan: Value,
    /// The snapshot as written to S3.
    pub snapshot: Value,
    pub report_bytes: usize,
    /// The demo customer's health as written onto its account.
    pub health: blapi::crm::AccountHealth,
    /// The demo subscription's renewal opportunity.
    pub renewal: Value,
}

/// An operator's replay of the day's archived Stripe events.
#[derive(Debug, Clone)]
pub struct ReplayLine {
    pub replayed: u64,
    pub messages: u64,
    pub licenses: (usize, usize),
    pub invoices: (usize, usize),
}

/// One Stripe event delivered twice (a sender's retry after a lost 2xx).
#[derive(Debug, Clone)]
pub struct RedeliveryLine {
    /// Both answers (each a 200: intake does not dedupe).
    pub answers: Vec<Value>,
    /// Lines of the event in its archive hour once sealed.
    pub archived_lines: usize,
    /// The seal's report of that hour.
    pub seal: Value,
    /// The customer's licenses before and after (the consumers are idempotent).
    pub licenses: (usize, usize),
}

/// The privacy requests of the scenario's people (privacy-requests).
#[derive(Debug, Clone)]
pub struct PrivacyLine {
    /// The buyer's access request: its answer (record, due date, link) and the bundle.
    pub access: Value,
    pub bundle: Value,
    /// Each erasure's record, by who asked ("buyer", "lead").
    pub erasures: Vec<(String, Value)>,
    /// Occurrences of the erased people's addresses, names or unkeyed address hashes left
    /// anywhere (every table item, every object version, every queued message) after the
    /// erasures: `(where, what matched)`.
    pub leftovers: Vec<(String, String)>,
    /// Their archived events replayed (as fresh deliveries) after the erasures.
    pub replayed: usize,
    /// The same scan after the replay.
    pub leftovers_after_replay: Vec<(String, String)>,
}

/// Everything the scenario produced.
#[derive(Debug, Clone)]
pub struct Summary {
    pub licenses: Vec<LicenseLine>,
    pub leads: Vec<LeadLine>,
    pub customer: CustomerLine,
    pub revenue: RevenueLine,
    pub replay: ReplayLine,
    pub privacy: PrivacyLine,
    pub portal: PortalLine,
    pub dunning: DunningLine,
    pub mail: MailLine,
    pub usage_records: usize,
    pub invoice: InvoiceSummary,
    /// One Stripe event delivered twice.
    pub redelivery: RedeliveryLine,
    pub dlq: Vec<(String, usize, String)>,
    pub bucket: String,
    pub endpoint: String,
}

/// The running system the scenario talks to.
pub struct World<'a> {
    pub stack: &'a LocalStack,
    pub functions: &'a Functions,
    pub localstripe: String,
    http: reqwest::Client,
    stripe: StripeClient,
    clients: blapi::aws::Clients,
    store: Arc<dyn ObjectStore>,
    run: String,
    /// Where localstripe sends the webhooks (the intake's Function URL unless a relay stands
    /// in front of it).
    pub stripe_webhook_url: Option<String>,
    /// How many times each first-party event is posted at once (each delivery retried on a 5xx
    /// or a lost answer with the same id, as a Standard Webhooks sender does).
    pub deliveries: usize,
    /// The (source, webhook id) of every first-party event the intake accepted.
    pub accepted: std::sync::Mutex<Vec<(String, String)>>,
}

impl<'a> World<'a> {
    pub async fn new(
        stack: &'a LocalStack,
        functions: &'a Functions,
        localstripe: &str,
    ) -> Result<Self> {
        let clients = blapi::aws::Clients::new(&stack.sdk_config().await);
        let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
            clients.s3().clone(),
            stack.physical("ArtifactsBucket"),
        ));
        Ok(Self {
            stack,
            functions,
            localstripe: localstripe.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            stripe: StripeClient::new(
                localstripe,
                Secret::new(STRIPE_KEY.to_owned()),
                Duration::from_secs(30),
            )?,
            clients,
            store,
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            stripe_webhook_url: None,
            deliveries: 1,
            accepted: Default::default(),
        })
    }

    async fn stripe_post(&self, path: &str, form: &[(&str, String)]) -> Result<Value> {
        let form = form_pairs(form.iter().map(|(k, v)| (*k, v.clone())));
        self.stripe
            .post::<Value>(path, &form, &uuid::Uuid::new_v4().to_string())
            .await
            .map_err(|e| anyhow!("localstripe POST {path}: {}", e.chain()))
    }

    /// A localstripe customer with a card and a `seats`-seat subscription of the scenario's
    /// plan (the product and plan created when missing): (customer id, subscription).
    pub(crate) async fn subscribe(
        &self,
        name: &str,
        email: Option<&str>,
        company: &str,
        seats: u32,
    ) -> Result<(String, Value)> {
        let product = self
            .stripe_post(
                "products",
                &[
                    ("name", "blapi Cloud Pro".into()),
                    ("metadata[sku]", "professional".into()),
                ],
            )
            .await?;
        // The plan id is fixed (the price book knows it); it survives from earlier runs.
        let _ = self
            .stripe_post(
                "plans",
                &[
                    ("id", PLAN.into()),
                    ("product", product["id"].as_str().unwrap_or_default().into()),
                    ("amount", "0".into()),
                    ("currency", "usd".into()),
                    ("interval", "month".into()),
                    ("metadata[sku]", "professional".into()),
                ],
            )
            .await;
        let mut fields = vec![
            ("name", name.to_owned()),
            ("metadata[company]", company.to_owned()),
        ];
        if let Some(e) = email {
            fields.push(("email", e.to_owned()));
        }
        let customer = self.stripe_post("customers", &fields).await?;
        let cus = customer["id"].as_str().context("customer id")?.to_owned();
        self.stripe_post(
            &format!("customers/{cus}/sources"),
            &[
                ("source[object]", "card".into()),
                ("source[number]", "4242424242424242".into()),
                ("source[exp_month]", "12".into()),
                ("source[exp_year]", "2040".into()),
                ("source[cvc]", "123".into()),
            ],
        )
        .await?;
        let sub = self
            .stripe_post(
                "subscriptions",
                &[
                    ("customer", cus.clone()),
                    ("items[0][plan]", PLAN.into()),
                    ("items[0][quantity]", seats.to_string()),
                    ("metadata[blapi_plan]", "cloud-pro".into()),
                ],
            )
            .await?;
        Ok((cus, sub))
    }

    /// The invoices usage-billing made on localstripe for (customer, period): its invoice
    /// description carries the `customer:period` reference.
    pub async fn stripe_invoices(&self, customer: &str, period: &str) -> Result<Vec<Value>> {
        let list: Value = self
            .http
            .get(format!("{}/v1/invoices", self.localstripe))
            .basic_auth(STRIPE_KEY, Some(""))
            .query(&[("customer", customer), ("limit", "100")])
            .send()
            .await?
            .json()
            .await?;
        let reference = format!("{customer}:{period}");
        Ok(list["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|i| i["description"].as_str().unwrap_or("").contains(&reference))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Invokes a function through the local Lambda API. A `Retryable` error (a dependency
    /// down) is retried with backoff, as a schedule's retry policy or an operator would; every
    /// action is idempotent, so a retry after a partial run finishes it.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Result<Value> {
        let mut wait = Duration::from_millis(500);
        for _ in 0..7 {
            match blapi_infra::mapper::invoke(
                &self.http,
                &self.functions.lambda_url,
                function,
                payload,
            )
            .await
            {
                Err(e) if format!("{e:#}").contains("\"errorType\":\"Retryable\"") => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(8));
                }
                other => return other,
            }
        }
        blapi_infra::mapper::invoke(&self.http, &self.functions.lambda_url, function, payload).await
    }

    fn secrets(&self) -> Result<Value> {
        let path = blapi_infra::repo_root().join("infra/local-secrets.json");
        Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
    }

    /// Posts a first-party event signed the Standard Webhooks way; returns (webhook id, answer).
    async fn post_source(
        &self,
        source: &str,
        event_type: &str,
        data: Value,
    ) -> Result<(String, Value)> {
        let secrets = self.secrets()?;
        let secret = secrets["SourceWebhookSecretName"][source][0]
            .as_str()
            .ok_or_else(|| anyhow!("no local secret for {source}"))?;
        let key = blapi::webhook::standard_scheme::StandardSecret::parse(secret)
            .map_err(|e| anyhow!("{e}"))?;
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let now = Utc::now();
        let body = serde_json::to_vec(
            &json!({"type": event_type, "timestamp": now.to_rfc3339(), "data": data}),
        )?;
        let url = self
            .functions
            .url("webhook-intake", &format!("webhooks/{source}"));
        // One delivery: a 5xx or a lost answer is retried with the same id and body, signed
        // afresh, with backoff (a 4xx is final).
        let deliver = || async {
            let mut wait = Duration::from_millis(250);
            let mut tries = 0;
            loop {
                tries += 1;
                let at = Utc::now().timestamp();
                let sent = self
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", at.to_string())
                    .header("webhook-signature", key.sign(&id, at, &body))
                    .body(body.clone())
                    .send()
                    .await;
                let retry = match sent {
                    Ok(resp) if !resp.status().is_server_error() => {
                        let status = resp.status();
                        let answer: Value = resp.json().await.unwrap_or(Value::Null);
                        return Ok::<_, anyhow::Error>((status, answer));
                    }
                    Ok(resp) => format!("{}", resp.status()),
                    Err(e) => format!("{e}"),
                };
                ensure!(
                    tries < 8,
                    "intake did not take the {source} event after {tries} tries: {retry}"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(8));
            }
        };
        let answers =
            futures::future::join_all((0..self.deliveries.max(1)).map(|_| deliver())).await;
        let mut first = None;
        for answer in answers {
            let (status, answer) = answer?;
            ensure!(
                status.is_success(),
                "intake refused the {source} event: {status} {answer}"
            );
            first.get_or_insert(answer);
        }
        if let Ok(mut accepted) = self.accepted.lock() {
            accepted.push((source.to_owned(), id.clone()));
        }
        Ok((id, first.unwrap_or(Value::Null)))
    }

    async fn queue_depth(&self, logical: &str) -> Result<usize> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .clients
            .sqs()
            .get_queue_attributes()
            .queue_url(self.stack.physical(logical))
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await?;
        Ok(out
            .attributes()
            .map(|a| a.values().filter_map(|v| v.parse::<usize>().ok()).sum())
            .unwrap_or(0))
    }

    /// Waits until every source queue is drained (the functions have caught up): a message
    /// being handled still counts (in flight until the mapper deletes it on success).
    pub async fn settle(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let queues = [
            // Accepted webhooks wait here for the archiver's batch.
            "EventsQueue",
            "LicenseRequestsQueue",
            "BillingEventsQueue",
            "UsageEventsQueue",
            "LeadEventsQueue",
            "BillingJobsQueue",
            "CustomerEventsQueue",
            "RevenueJobsQueue",
        ];
        loop {
            let mut busy = 0;
            for q in queues {
                busy += self.queue_depth(q).await?;
            }
            if busy == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{busy} messages still queued after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The archived events of the last day (sealed and batch objects, each event once).
async fn archived_today(w: &World<'_>) -> Result<Vec<blapi::archive::Located>> {
    let now = Utc::now();
    let mut out = Vec::new();
    let store = w.store.as_ref();
    for hour in blapi::archive::hours_between(store, now - chrono::Duration::days(1), now)
        .await
        .map_err(|e| anyhow!("{}", e.chain()))?
    {
        out.extend(
            blapi::archive::read_hour(store, hour)
                .await
                .map_err(|e| anyhow!("{}", e.chain()))?
                .events,
        );
    }
    Ok(out)
}

/// The raw bytes intake archived for the Stripe event of `event_type` about `object_id`.
async fn archived_event(w: &World<'_>, event_type: &str, object_id: &str) -> Result<Vec<u8>> {
    for e in archived_today(w).await? {
        let v = e.line.event();
        if e.line.source == "stripe"
            && v["type"] == event_type
            && v["data"]["object"]["id"] == object_id
        {
            return Ok(e.line.body.unwrap_or_default().into_bytes());
        }
    }
    bail!("no archived {event_type} event for {object_id}")
}

async fn until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Plays the whole scenario and returns what it produced. Fails on the first step that does
/// not do what it should.
pub async fn run(w: &World<'_>, progress: Progress<'_>) -> Result<Summary> {
    let run = &w.run;
    let stripe_secret = w.secrets()?["StripeWebhookSecretName"]["secrets"][0]
        .as_str()
        .ok_or_else(|| anyhow!("no local Stripe webhook secret"))?
        .to_owned();

    // 1. localstripe -> intake.
    progress("registering the intake's Function URL as localstripe's webhook endpoint");
    let hook_url = w
        .stripe_webhook_url
        .clone()
        .unwrap_or_else(|| w.functions.url("webhook-intake", "webhooks/stripe"));
    let mut form = vec![
        ("url".to_owned(), hook_url.clone()),
        ("secret".to_owned(), stripe_secret.clone()),
    ];
    for e in [
        "customer.created",
        "customer.subscription.created",
        "customer.subscription.deleted",
        "invoice.created",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
    ] {
        form.push(("events[]".to_owned(), e.to_owned()));
    }
    let resp = w
        .http
        .post(format!(
            "{}/_config/webhooks/blapi-{}-{run}",
            w.localstripe, w.stack.prefix
        ))
        .basic_auth(STRIPE_KEY, Some(""))
        .form(&form)
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "registering the webhook: {}",
        resp.status()
    );

    // 2. A purchase: product, plan, customer with a card, subscription.
    progress("creating a product, a plan and a customer with a 5-seat subscription on localstripe");
    let buyer_email = format!("ada+{run}@analytical-engines.example");
    let (cus, sub) = w
        .subscribe(
            "Ada Lovelace",
            Some(&buyer_email),
            "Analytical Engines",
            SEATS,
        )
        .await?;
    let sub_id = sub["id"].as_str().context("subscription id")?.to_owned();
    ensure!(
        sub["status"] == "active",
        "subscription is {}",
        sub["status"]
    );

    // 3. The signed webhooks flow: intake -> license-requests -> license-minting.
    progress("waiting for the signed webhooks to mint the license");
    let licenses = until("the license", Duration::from_secs(180), || async {
        let v = w
            .invoke(
                "license-minting",
                &json!({"action": "list", "customer": cus}),
            )
            .await?;
        let list = v["licenses"].as_array().cloned().unwrap_or_default();
        // A license still ISSUING has no file yet: its minting invocation is running.
        let done = !list.is_empty() && list.iter().all(|l| l["status"] != "ISSUING");
        Ok(done.then_some(list))
    })
    .await?;
    let pem = w
        .store
        .get("licenses/public-key.pem")
        .await
        .map_err(|e| anyhow!("{}", e.chain()))?
        .context("licenses/public-key.pem is published")?;
    let key = blapi::licensing::PublicKey::from_pem(std::str::from_utf8(&pem)?)
        .map_err(|e| anyhow!("{}", e.chain()))?;
    let mut license_lines = Vec::new();
    for l in &licenses {
        let id = l["license_id"].as_str().context("license id")?.to_owned();
        let file_key = l["file_key"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("licenses/{cus}/{id}.mattermost-license"));
        let file = w
            .store
            .get(&file_key)
            .await
            .map_err(|e| anyhow!("{}", e.chain()))?
            .with_context(|| format!("license file {file_key}"))?;
        // Offline: only the published public key, not KMS.
        let verified = blapi::licensing::verify_license(
            std::str::from_utf8(&file)?.trim(),
            &key,
            None,
            Utc::now().timestamp_millis(),
        );
        let lic = verified.as_ref().ok();
        license_lines.push(LicenseLine {
            id,
            customer: cus.clone(),
            subscription: l["subscription_id"].as_str().unwrap_or_default().to_owned(),
            seats: lic.map(|x| u64::from(x.features.users)).unwrap_or_default(),
            sku: lic.map(|x| x.sku_short_name.clone()).unwrap_or_default(),
            expires: lic
                .and_then(|x| chrono::DateTime::from_timestamp_millis(x.expires_at))
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
            status: l["status"].as_str().unwrap_or_default().to_owned(),
            signature_ok: verified.is_ok(),
        });
    }

    // 4. Portal sign-ups.
    progress(
        "posting signed portal sign-ups: a company lead, a free-mail lead, a lead of an existing account",
    );
    let leads_table = blapi::leads::store::DynamoLeadsTable::new(
        w.clients.dynamodb().clone(),
        w.stack.physical("LeadsTable"),
        subject_key(w).await?,
    );
    leads_table
        .put_account(&blapi::leads::routing::Account {
            domain: "initech.example".into(),
            account_id: "acct_initech".into(),
            name: "Initech".into(),
            owner_id: "owner-maria".into(),
        })
        .await
        .map_err(|e| anyhow!("{}", e.chain()))?;
    let signups = [
        (
            "company (enriched)",
            json!({"email": format!("jane.doe+{run}@globex.example"), "first_name": "Jane", "last_name": "Doe",
                   "company": "Globex", "country": "United States", "form": "signup", "product": "cloud",
                   "consent": {"marketing": true, "terms": true}}),
        ),
        (
            "free-mail (individual)",
            json!({"email": format!("sam.smith.{run}@gmail.com"), "name": "Sam Smith", "country": "GB",
                   "form": "signup", "consent": {"marketing": false, "terms": true}}),
        ),
        (
            "existing account",
            json!({"email": format!("peter+{run}@initech.example"), "first_name": "Peter", "last_name": "Gibbons",
                   "company": "Initech", "country": "US", "form": "contact_us", "product": "enterprise",
                   "consent": {"marketing": true, "terms": true}}),
        ),
    ];
    let mut posted = Vec::new();
    for (label, data) in signups {
        let kind = if data["form"] == "contact_us" {
            "lead.contact_us"
        } else {
            "lead.signup"
        };
        let (id, _) = w.post_source("portal", kind, data).await?;
        posted.push((label, LeadId::for_event("portal", &id)));
    }
    let crm = blapi::crm::SinkCrm::new(
        w.clients.dynamodb().clone(),
        w.stack.physical("CrmTable"),
        w.store.clone(),
    );
    let mut leads = Vec::new();
    for (label, lead_id) in &posted {
        let lead = until(
            &format!("lead {label} in the CRM sink"),
            Duration::from_secs(120),
            || async {
                crm.get(lead_id.as_str())
                    .await
                    .map_err(|e| anyhow!("{}", e.chain()))
            },
        )
        .await?
        .0;
        leads.push(LeadLine {
            label: (*label).to_owned(),
            lead_id: lead.lead_id.clone(),
            owner: lead.owner_id.clone(),
            team: lead.team.clone().unwrap_or_else(|| "-".into()),
            score: lead.score,
            grade: lead.grade.clone(),
            reason: lead.routing_reason.clone(),
            enriched_company: lead.company_domain.as_ref().map(|_| lead.company.clone()),
        });
    }

    // 5. Telemetry usage over the period.
    let now = Utc::now();
    let period = format!("{:04}-{:02}", now.year(), now.month());
    progress(&format!("posting signed telemetry usage for {period}"));
    let start = now
        .with_day(1)
        .context("first day")?
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc();
    let span = (now - start).num_seconds().max(60);
    let mut records = Vec::new();
    for i in 0..30i64 {
        let at = start + chrono::Duration::seconds(span * i / 30);
        records.push(json!({"id": format!("u-{run}-api-{i}"), "customer": cus, "subscription": sub_id,
            "metric": "api_calls", "value": 1000 + i * 10, "timestamp": at.to_rfc3339(), "installation": "inst-1"}));
        if i % 3 == 0 {
            records.push(json!({"id": format!("u-{run}-build-{i}"), "customer": cus, "subscription": sub_id,
                "metric": "builds", "value": 1, "timestamp": at.to_rfc3339(), "installation": "inst-1"}));
        }
        if i % 5 == 0 {
            records.push(json!({"id": format!("u-{run}-nodes-{i}"), "customer": cus, "subscription": sub_id,
                "metric": "peak_nodes", "value": 2 + i / 5, "timestamp": at.to_rfc3339(), "installation": "inst-1"}));
        }
    }
    records.push(
        json!({"id": format!("u-{run}-capacity"), "customer": cus, "subscription": sub_id,
        "metric": "capacity", "value": 8, "timestamp": now.to_rfc3339(), "installation": "inst-1"}),
    );
    let usage_records = records.len();
    for chunk in records.chunks(20) {
        w.post_source("telemetry", "usage.reported", json!({"records": chunk}))
            .await?;
    }
    w.settle(Duration::from_secs(120)).await?;

    // 6. Billing for the period.
    progress(&format!(
        "billing {period} (closed early, as an operator may): plan -> billing-jobs -> invoice on localstripe + JSON/HTML in S3"
    ));
    w.invoke(
        "usage-billing",
        &json!({"action": "plan", "period": period, "close_early": true}),
    )
    .await?;
    let json_key = format!("invoices/{cus}/{period}.json");
    let html_key = format!("invoices/{cus}/{period}.html");
    let artifact = until("the invoice artifact", Duration::from_secs(180), || async {
        w.store
            .get(&json_key)
            .await
            .map_err(|e| anyhow!("{}", e.chain()))
    })
    .await?;
    ensure!(
        w.store
            .get(&html_key)
            .await
            .map_err(|e| anyhow!("{}", e.chain()))?
            .is_some(),
        "{html_key} missing"
    );
    let artifact: Value = serde_json::from_slice(&artifact)?;
    let inv = &artifact["invoice"];
    let ours = w.stripe_invoices(&cus, &period).await?;
    let invoice = InvoiceSummary {
        customer: cus.clone(),
        period: period.clone(),
        stripe_invoices: ours.len(),
        stripe_invoice: ours
            .first()
            .and_then(|i| i["id"].as_str())
            .map(str::to_owned),
        stripe_total: ours.first().and_then(|i| i["total"].as_i64()).unwrap_or(-1),
        artifact_total: inv["total"].as_i64().unwrap_or(-1),
        currency: inv["currency"].as_str().unwrap_or("usd").to_owned(),
        lines: inv["lines"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| {
                        (
                            l["description"].as_str().unwrap_or_default().to_owned(),
                            l["quantity"]
                                .as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| l["quantity"].to_string()),
                            l["amount"].as_i64().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        json_key,
        html_key,
    };

    // 7. The customer in the CRM: customer-sync heard the Stripe events, the license and the
    // invoice, and keeps one account, contact and opportunity.
    progress(
        "waiting for customer-sync: account (owner, status, license, invoice), contact, opportunity, converted lead",
    );
    let license_id = license_lines.first().map(|l| l.id.clone());
    let stripe_invoice = ours
        .first()
        .and_then(|i| i["id"].as_str())
        .map(str::to_owned);
    let account = until(
        "the customer's account in the CRM sink",
        Duration::from_secs(180),
        || async {
            let got = crm
                .get_object(CrmObject::Account, &cus)
                .await
                .map_err(|e| anyhow!("{}", e.chain()))?;
            Ok(got.map(|(a, _)| a).filter(|a| {
                a["status"] == "customer"
                    && a["license_id"].as_str() == license_id.as_deref()
                    && a["last_invoice_id"].as_str() == stripe_invoice.as_deref()
            }))
        },
    )
    .await?;
    let buyer = blapi::values::Email::parse(&buyer_email).map_err(|e| anyhow!("{e}"))?;
    let contact = crm
        .get_object(
            CrmObject::Contact,
            subject_key(w).await?.subject(&buyer).as_str(),
        )
        .await
        .map_err(|e| anyhow!("{}", e.chain()))?
        .context("the buyer's contact")?
        .0;
    let term_start = sub["current_period_start"].as_i64().context("term start")?;
    let opp_id = format!(
        "{sub_id}:{}",
        chrono::DateTime::from_timestamp(term_start, 0)
            .context("term start")?
            .format("%Y-%m-%d")
    );
    let opportunity = until("the won opportunity", Duration::from_secs(60), || async {
        Ok(crm
            .get_object(CrmObject::Opportunity, &opp_id)
            .await
            .map_err(|e| anyhow!("{}", e.chain()))?
            .map(|(o, _)| o)
            .filter(|o| o["license_id"].as_str() == license_id.as_deref()))
    })
    .await?;
    let converted_lead = until(
        "the buyer's lead, converted",
        Duration::from_secs(120),
        || async {
            let Some(lead) = leads_table
                .find_subject(&buyer)
                .await
                .map_err(|e| anyhow!("{}", e.chain()))?
            else {
                return Ok(None);
            };
            let account = crm
                .conversion(lead.as_str())
                .await
                .map_err(|e| anyhow!("{}", e.chain()))?;
            Ok((account.as_deref() == Some(cus.as_str())).then(|| lead.to_string()))
        },
    )
    .await?;
    progress("posting a second sign-up from the customer's company: routed to the account's owner");
    let (follow_id, _) = w
        .post_source(
            "portal",
            "lead.signup",
            json!({"email": format!("charles+{run}@analytical-engines.example"), "first_name": "Charles",
                   "last_name": "Babbage", "country": "GB", "form": "signup", "consent": {"marketing": false, "terms": true}}),
        )
        .await?;
    let follow_up = until(
        "the follow-up lead in the CRM sink",
        Duration::from_secs(120),
        || async {
            crm.get(LeadId::for_event("portal", &follow_id).as_str())
                .await
                .map_err(|e| anyhow!("{}", e.chain()))
        },
    )
    .await?
    .0;
    let customer_line = CustomerLine {
        customer: cus.clone(),
        account,
        contact,
        opportunity,
        converted_lead,
        follow_up_owner: follow_up.owner_id.clone(),
        follow_up_reason: follow_up.routing_reason.clone(),
    };

    // 8. The day's revenue operations: the operator runs today (the schedule would run
    // yesterday, before the demo customer existed).
    let today = Utc::now().date_naive();
    progress(&format!(
        "revenue-ops for {today}: metrics snapshot + monthly report in S3, then one job per customer -> renewal opportunity + health score in the CRM"
    ));
    let plan = w
        .invoke("revenue-ops", &json!({"action": "run", "date": today}))
        .await?;
    let snapshot_key = plan["snapshot_key"]
        .as_str()
        .with_context(|| format!("revenue-ops answered {plan}"))?
        .to_owned();
    let report_key = plan["report_key"].as_str().unwrap_or_default().to_owned();
    let snapshot: Value = serde_json::from_slice(
        &w.store
            .get(&snapshot_key)
            .await
            .map_err(|e| anyhow!("{}", e.chain()))?
            .context("the snapshot in S3")?,
    )?;
    let report_bytes = w
        .store
        .get(&report_key)
        .await
        .map_err(|e| anyhow!("{}", e.chain()))?
        .context("the monthly report in S3")?
        .len();
    let day = today.format("%Y-%m-%d").to_string();
    let health = until(
        "the customer's health on its account",
        Duration::from_secs(120),
        || async {
            Ok(crm
                .health(&cus)
                .await
                .map_err(|e| anyhow!("{}", e.chain()))?
                .filter(|h| h.scored_on == day))
        },
    )
    .await?;
    let term_end = sub["current_period_end"].as_i64().context("term end")?;
    let renewal_id = format!(
        "{sub_id}:{}",
        chrono::DateTime::from_timestamp(term_end, 0)
            .context("term end")?
            .format("%Y-%m-%d")
    );
    let renewal = until(
        "the renewal opportunity",
        Duration::from_secs(60),
        || async {
            Ok(crm
                .get_object(CrmObject::Opportunity, &renewal_id)
                .await
                .map_err(|e| anyhow!("{}", e.chain()))?
                .map(|(o, _)| o))
        },
    )
    .await?;
    let revenue = RevenueLine {
        plan,
        snapshot,
        report_bytes,
        health,
        renewal,
    };

    // 9. An operator replays the day's archived Stripe events: the consumers are idempotent,
    // so nothing new appears.
    progress(
        "replaying today's archived Stripe events through the routing table (blapi-ops replay): nothing new",
    );
    let licenses_of = || async {
        let v = w
            .invoke(
                "license-minting",
                &json!({"action": "list", "customer": cus}),
            )
            .await?;
        anyhow::Ok(v["licenses"].as_array().map_or(0, Vec::len))
    };
    let before = (
        licenses_of().await?,
        w.stripe_invoices(&cus, &period).await?.len(),
    );
    let template =
        blapi_infra::template::Template::load(&blapi_infra::repo_root().join("template.yaml"))?;
    let ops_stack = blapi_ops::stack::Stack::of_local(w.stack.clone(), template)?;
    let sender = blapi::queue::SqsSender::new(w.clients.sqs().clone(), w.store.clone());
    let start_of_day = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc();
    let report = blapi_ops::replay::replay(
        &ops_stack,
        w.store.as_ref(),
        &sender,
        &blapi_ops::replay::ReplayRequest {
            source: "stripe".into(),
            from: start_of_day,
            to: Utc::now(),
            event_type: None,
            dry_run: false,
        },
        &|_: &str| {},
    )
    .await?;
    w.settle(Duration::from_secs(180)).await?;
    let after = (
        licenses_of().await?,
        w.stripe_invoices(&cus, &period).await?.len(),
    );
    let replay = ReplayLine {
        replayed: report.replayed,
        messages: report.sent.values().sum(),
        licenses: (before.0, after.0),
        invoices: (before.1, after.1),
    };

    // 10. A redelivery and the DLQ.
    progress(
        "delivering one Stripe event twice (accepted twice, archived once) and one poison message",
    );
    // Stripe retries a delivery: the same bytes, the same event id, a fresh signature.
    let body = archived_event(w, "customer.subscription.created", &sub_id).await?;
    let event_id = serde_json::from_slice::<Value>(&body)?["id"]
        .as_str()
        .context("the event's id")?
        .to_owned();
    let licenses_before = licenses_of().await?;
    let mut answers = Vec::new();
    let intake_url = w.functions.url("webhook-intake", "webhooks/stripe");
    for _ in 0..2 {
        // A 5xx (a dependency of the intake down) is retried, as Stripe does.
        let mut tries = 0;
        let resp = loop {
            tries += 1;
            let t = Utc::now().timestamp();
            let header = blapi::webhook::stripe_scheme::header(&[stripe_secret.as_str()], t, &body);
            let resp = w
                .http
                .post(&intake_url)
                .header("Stripe-Signature", header)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            if !resp.status().is_server_error() || tries >= 8 {
                break resp;
            }
            tokio::time::sleep(Duration::from_millis(500 * tries)).await;
        };
        ensure!(
            resp.status().is_success(),
            "intake answered {}",
            resp.status()
        );
        answers.push(resp.json::<Value>().await?);
    }
    ensure!(
        answers
            .iter()
            .all(|a| a["received"] == true && a["id"] == event_id.as_str()),
        "a redelivered event is accepted again: {answers:?}"
    );
    w.settle(Duration::from_secs(120)).await?;
    // The hourly seal, now (the current hour too): the event's copies become one line.
    let seal = w
        .invoke("webhook-intake", &json!({"action": "seal", "all": true}))
        .await?;
    let archived_lines = archived_today(w)
        .await?
        .iter()
        .filter(|e| e.line.id == event_id)
        .count();
    let sealed_lines = {
        let mut n = 0;
        for key in w
            .store
            .list(blapi::archive::SEALED_PREFIX)
            .await
            .map_err(|e| anyhow!("{}", e.chain()))?
        {
            let bytes = w
                .store
                .get(&key)
                .await
                .map_err(|e| anyhow!("{}", e.chain()))?
                .unwrap_or_default();
            n += blapi::archive::decode(&key, &bytes)
                .map_err(|e| anyhow!("{}", e.chain()))?
                .iter()
                .filter(|l| l.id == event_id)
                .count();
        }
        n
    };
    ensure!(
        archived_lines == 1 && sealed_lines == 1,
        "the event is archived once: {archived_lines} visible, {sealed_lines} sealed line(s)"
    );
    let redelivery = RedeliveryLine {
        answers,
        archived_lines: sealed_lines,
        seal,
        licenses: (licenses_before, licenses_of().await?),
    };
    w.clients
        .sqs()
        .send_message()
        .queue_url(w.stack.physical("LicenseRequestsQueue"))
        .message_body("{\"this is\": \"not an EventMessage\"")
        .send()
        .await?;
    until(
        "the poison message in the DLQ",
        Duration::from_secs(120),
        || async { Ok((w.queue_depth("LicenseRequestsDLQ").await? >= 1).then_some(())) },
    )
    .await?;
    w.settle(Duration::from_secs(60)).await?;
    let mut dlq = Vec::new();
    for (id, _) in w
        .stack
        .resources
        .iter()
        .filter(|(id, _)| id.ends_with("DLQ"))
    {
        let n = w.queue_depth(id).await?;
        if n > 0 {
            let peek = w
                .clients
                .sqs()
                .receive_message()
                .queue_url(w.stack.physical(id))
                .visibility_timeout(0)
                .send()
                .await?;
            let sample = peek
                .messages()
                .first()
                .and_then(|m| m.body())
                .unwrap_or_default()
                .chars()
                .take(60)
                .collect();
            dlq.push((id.clone(), n, sample));
        }
    }

    // 11. The customer portal: what the buyer sees and does, and what another customer cannot.
    let portal = portal::portal(w, progress, &cus, &sub_id, &buyer_email, &period, &key).await?;

    // 12. Collections: a second customer's card fails; the ladder suspends them (license and
    // workspace), payment reinstates them.
    let dunning = dunning::dunning(w, progress, &key).await?;

    // 13. Customer e-mail: what the notifications function sent both customers through SES;
    // the license e-mail's link gives the license file, the invoice e-mail's its documents.
    progress("reading the customers' e-mail from SES and following its links");
    let license_key = licenses
        .first()
        .and_then(|l| l["file_key"].as_str())
        .context("the buyer's license file")?
        .to_owned();
    let mail = mail::mail(w, &buyer_email, &dunning.email, &license_key).await?;

    // 14. Privacy: the buyer asks for her data (through the portal), then to be erased; a lead
    // asks to be erased.
    let jane = format!("jane.doe+{run}@globex.example");
    let privacy = privacy_requests(w, progress, &cus, &buyer_email, &jane).await?;

    Ok(Summary {
        licenses: license_lines,
        leads,
        customer: customer_line,
        revenue,
        replay,
        privacy,
        portal,
        dunning,
        mail,
        usage_records,
        invoice,
        redelivery,
        dlq,
        bucket: w.stack.physical("ArtifactsBucket").to_owned(),
        endpoint: w.stack.endpoint.clone(),
    })
}

fn money(minor: i64, currency: &str) -> String {
    format!(
        "{}{}.{:02} {}",
        if minor < 0 { "-" } else { "" },
        minor.abs() / 100,
        minor.abs() % 100,
        currency.to_uppercase()
    )
}

impl Summary {
    /// The readable report `make demo` ends with.
    pub fn render(&self) -> String {
        let mut o = String::new();
        o.push_str("\n== Licenses (Stripe subscription -> license-minting, KMS-signed) ==\n");
        for l in &self.licenses {
            o.push_str(&format!(
                "  {}  customer {}  {} seats  {}  expires {}  {}  signature {}\n",
                l.id,
                l.customer,
                l.seats,
                l.sku,
                l.expires,
                l.status,
                if l.signature_ok {
                    "OK (offline, published public key)"
                } else {
                    "INVALID"
                }
            ));
        }
        o.push_str("\n== Leads (portal sign-ups -> lead-enrichment -> built-in CRM sink) ==\n");
        for l in &self.leads {
            o.push_str(&format!(
                "  {:<24} owner {:<14} team {:<16} score {:>3} ({})  {}{}\n",
                l.label,
                l.owner,
                l.team,
                l.score,
                l.grade,
                l.reason,
                l.enriched_company
                    .as_ref()
                    .map(|c| format!("  [enriched: {c}]"))
                    .unwrap_or_default()
            ));
        }
        let c = &self.customer;
        let a = &c.account;
        let opp = &c.opportunity;
        o.push_str(&format!(
            "\n== Customer {} in the CRM (Stripe + license + invoice -> customer-sync -> built-in CRM sink) ==\n\
             \x20 Account      {}  status {}  owner {}  domains {}\n\
             \x20              license {} (expires {})  last invoice {}\n\
             \x20 Contact      key {}… (e-mail and name stay out of the sink)\n\
             \x20 Opportunity  {}  {}  {} seats  {}  license {}\n\
             \x20 Lead         {} converted -> account {}\n\
             \x20 Next sign-up from the same company -> owner {} ({})\n",
            c.customer,
            a["name"].as_str().unwrap_or_default(),
            a["status"].as_str().unwrap_or_default(),
            a["owner_id"].as_str().unwrap_or_default(),
            a["domains"],
            a["license_id"].as_str().unwrap_or("-"),
            a["license_expires"].as_str().unwrap_or("-"),
            a["last_invoice_id"].as_str().unwrap_or("-"),
            c.contact["external_id"].as_str().unwrap_or_default().chars().take(12).collect::<String>(),
            opp["external_id"].as_str().unwrap_or_default(),
            opp["stage"].as_str().unwrap_or_default(),
            opp["seats"],
            opp["sku"].as_str().unwrap_or_default(),
            opp["license_id"].as_str().unwrap_or("-"),
            c.converted_lead,
            c.customer,
            c.follow_up_owner,
            c.follow_up_reason,
        ));
        let r = &self.revenue;
        let s = &r.snapshot;
        let cur = s["currency"].as_str().unwrap_or("usd");
        let h = &r.health;
        o.push_str(&format!(
            "\n== Revenue operations {} (revenue-ops: daily plan -> revenue-jobs -> CRM sink + S3) ==\n\
             \x20 MRR {}  ARR {}  paying customers {}  trialing {}  seats licensed {}\n\
             \x20 movements today: new {}  expansion {}  churn {}   renewal pipeline {} ({} open)\n\
             \x20 {} health {} ({})  {}\n\
             \x20              telemetry: {}\n\
             \x20 Renewal      {}  {}  close {}  amount {}\n\
             \x20 s3://{}/{}  s3://{}/{} ({} bytes, HTML + SVG)\n",
            s["date"].as_str().unwrap_or_default(),
            money(s["mrr"].as_i64().unwrap_or(0), cur),
            money(s["arr"].as_i64().unwrap_or(0), cur),
            s["customers"]["paying"],
            s["customers"]["trialing"],
            s["seats_licensed"],
            money(s["movements"]["new"].as_i64().unwrap_or(0), cur),
            money(s["movements"]["expansion"].as_i64().unwrap_or(0), cur),
            money(s["movements"]["churn"].as_i64().unwrap_or(0), cur),
            money(s["renewal_pipeline"]["amount"].as_i64().unwrap_or(0), cur),
            s["renewal_pipeline"]["count"],
            self.customer.customer,
            h.score.map_or("n/a".to_owned(), |s| s.to_string()),
            h.band,
            h.reasons,
            if h.usage_summary.is_empty() { "-" } else { &h.usage_summary },
            r.renewal["external_id"].as_str().unwrap_or_default(),
            r.renewal["stage"].as_str().unwrap_or_default(),
            r.renewal["close_date"].as_str().unwrap_or_default(),
            money(
                r.renewal["amount"]["amount"].as_i64().unwrap_or(0),
                r.renewal["amount"]["currency"].as_str().unwrap_or(cur)
            ),
            self.bucket,
            r.plan["snapshot_key"].as_str().unwrap_or_default(),
            self.bucket,
            r.plan["report_key"].as_str().unwrap_or_default(),
            r.report_bytes,
        ));
        let p = &self.replay;
        o.push_str(&format!(
            "\n== Replay (blapi-ops replay --source stripe --from today) ==\n\
             \x20 {} archived events replayed as {} queue messages; licenses {} -> {}, invoices {} -> {} (idempotent consumers: nothing new)\n",
            p.replayed, p.messages, p.licenses.0, p.licenses.1, p.invoices.0, p.invoices.1
        ));
        let p = &self.portal;
        o.push_str("\n== Customer portal (the buyer's bearer token -> portal-api) ==\n");
        o.push_str(&format!(
            "  account      status {}  card {} ****{} exp {}/{}  dunning {}\n",
            p.account["status"].as_str().unwrap_or_default(),
            p.account["payment_method"]["brand"].as_str().unwrap_or("-"),
            p.account["payment_method"]["last4"].as_str().unwrap_or("-"),
            p.account["payment_method"]["exp_month"],
            p.account["payment_method"]["exp_year"],
            p.account["dunning"]["status"].as_str().unwrap_or_default(),
        ));
        for l in p.licenses["licenses"].as_array().into_iter().flatten() {
            o.push_str(&format!(
                "  license      {}  {} seats  {}  file {} bytes, signature {}\n",
                l["id"].as_str().unwrap_or_default(),
                l["seats"],
                l["status"].as_str().unwrap_or_default(),
                p.license_file_bytes,
                if p.license_file_verified {
                    "OK (offline)"
                } else {
                    "INVALID"
                },
            ));
        }
        o.push_str(&format!(
            "  invoices     {} listed; {} total {} {}, links to JSON and HTML (expiring)\n",
            p.invoices["invoices"].as_array().map_or(0, Vec::len),
            p.invoice["id"].as_str().unwrap_or_default(),
            p.invoice["total"]["amount"],
            p.invoice["currency"].as_str().unwrap_or_default(),
        ));
        o.push_str(&format!(
            "  usage        {}: {} lines, total {} (priced by billing's own composition)\n",
            p.usage["period"].as_str().unwrap_or_default(),
            p.usage["lines"].as_array().map_or(0, Vec::len),
            p.usage["total"]["amount"],
        ));
        o.push_str(&format!(
            "  purchase     3 x professional -> Checkout Session {} ({})\n",
            p.checkout["id"].as_str().unwrap_or_default(),
            p.checkout["url"].as_str().unwrap_or_default(),
        ));
        o.push_str(&format!(
            "  seats        preview {} -> {}: proration {}, annual value {} -> {}: {}; applied (Stripe now {}), retry replayed: {}\n",
            p.seat_preview["current_seats"],
            p.seat_preview["seats"],
            p.seat_preview["proration"]["amount"],
            p.seat_preview["annual_value"]["current"]["amount"],
            p.seat_preview["annual_value"]["proposed"]["amount"],
            p.seat_preview["action"].as_str().unwrap_or_default(),
            p.seats_in_stripe,
            p.seat_change_replayed,
        ));
        o.push_str(&format!(
            "  40 seats     {}: opportunity {} for {} (not applied)\n",
            p.large_change["status"].as_str().unwrap_or_default(),
            p.large_change["opportunity"]["external_id"]
                .as_str()
                .unwrap_or_default(),
            p.large_change["opportunity"]["owner"]
                .as_str()
                .unwrap_or_default(),
        ));
        o.push_str(&format!(
            "  another customer's token: {}; no token: {}\n",
            p.other_customer
                .iter()
                .map(|(w, s)| format!("{w} {s}"))
                .collect::<Vec<_>>()
                .join(", "),
            p.without_token,
        ));
        let d = &self.dunning;
        o.push_str(
            "\n== Collections (a failed payment -> usage-billing's dunning ladder -> license-minting, the provisioner) ==\n",
        );
        o.push_str(&format!(
            "  customer {}  invoice {} declined on localstripe (invoice.payment_failed)\n",
            d.customer, d.invoice
        ));
        for ((day, answer), (_, status)) in d.sweeps.iter().zip(d.statuses.iter().skip(1)) {
            let steps = answer["report"]["steps"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k} x{v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "nothing due".into());
            o.push_str(&format!("  sweep day {day:>2}: {steps:<14} -> {status}\n"));
        }
        o.push_str(&format!(
            "  license {}: listed as {} in the signed revocation list; offline verifier: {}\n\
             \x20 provisioner received: {}\n\
             \x20 paid with a working card -> {}; fresh license {} verifies offline: {}\n",
            d.license,
            d.listed_as,
            d.suspended_verdict,
            d.provisioning.join(", "),
            d.status_after_payment,
            d.fresh_license,
            if d.fresh_license_valid { "OK" } else { "NO" },
        ));
        let m = &self.mail;
        o.push_str(
            "\n== Customer e-mail (notifications -> Amazon SES, read back from the emulator) ==\n",
        );
        for inbox in [&m.buyer, &m.dunning] {
            o.push_str(&format!("  to {}:\n", inbox.address));
            for s in &inbox.subjects {
                o.push_str(&format!("    - {s}\n"));
            }
        }
        o.push_str(&format!(
            "  license link -> the exact license file: {}; invoice links -> HTML {}, PDF {}\n",
            if m.license_link_works { "yes" } else { "NO" },
            if m.invoice_html_link_works {
                "yes"
            } else {
                "NO"
            },
            if m.invoice_pdf_link_works {
                "yes"
            } else {
                "NO"
            },
        ));
        let pv = &self.privacy;
        o.push_str(
            "\n== Privacy requests (the buyer through portal-api, a lead by signed privacy.request -> intake; both -> privacy-requests) ==\n",
        );
        let systems: Vec<&str> = pv.bundle["systems"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        o.push_str(&format!(
            "  access   {}  {}  due {}  bundle: {}\n           link (expires): {}…\n",
            pv.access["request"]["id"].as_str().unwrap_or_default(),
            pv.access["request"]["status"].as_str().unwrap_or_default(),
            pv.access["due"].as_str().unwrap_or_default(),
            systems.join(", "),
            pv.access["link"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(72)
                .collect::<String>(),
        ));
        for (who, r) in &pv.erasures {
            let audit = r["request"]["audit"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let count = |a: &str| audit.iter().filter(|e| e["action"] == a).count();
            o.push_str(&format!(
                "  erasure  {} ({who})  {}  erased {}  kept {}\n",
                r["request"]["id"].as_str().unwrap_or_default(),
                r["request"]["status"].as_str().unwrap_or_default(),
                count("erased"),
                count("kept"),
            ));
            for e in audit.iter().filter(|e| e["action"] == "kept") {
                o.push_str(&format!(
                    "           kept in {}: {}\n             basis: {}\n",
                    e["system"].as_str().unwrap_or_default(),
                    e["detail"].as_str().unwrap_or_default(),
                    e["basis"].as_str().unwrap_or_default()
                ));
            }
        }
        o.push_str(&format!(
            "  scan of every table item, object version and queued message: {} occurrence(s) left; after replaying their {} archived event(s): {}\n",
            pv.leftovers.len(),
            pv.replayed,
            pv.leftovers_after_replay.len()
        ));
        for (place, what) in pv.leftovers.iter().chain(&pv.leftovers_after_replay) {
            o.push_str(&format!(
                "    {place}: {}\n",
                if what.contains('@') {
                    "address"
                } else {
                    "name or hash"
                }
            ));
        }
        let i = &self.invoice;
        o.push_str(&format!(
            "\n== Invoice {} for {} ({} usage records -> usage-billing) ==\n",
            i.period, i.customer, self.usage_records
        ));
        for (desc, qty, amount) in &i.lines {
            o.push_str(&format!(
                "  {:<48} qty {:>12}  {:>14}\n",
                desc,
                qty,
                money(*amount, &i.currency)
            ));
        }
        o.push_str(&format!(
            "  total {} (artifact) / {} (localstripe, {} invoice)\n  s3://{}/{}\n  s3://{}/{}\n",
            money(i.artifact_total, &i.currency),
            money(i.stripe_total, &i.currency),
            i.stripe_invoices,
            self.bucket,
            i.json_key,
            self.bucket,
            i.html_key
        ));
        let r = &self.redelivery;
        o.push_str(&format!(
            "\n== Redelivery ==\n  the same Stripe event delivered twice, both answered {}\n  \
             archived once: {} line in its sealed hour (seal: {})\n  licenses {} -> {} (idempotent consumers)\n",
            r.answers.last().cloned().unwrap_or(Value::Null),
            r.archived_lines,
            r.seal,
            r.licenses.0,
            r.licenses.1
        ));
        o.push_str("\n== Dead-letter queues ==\n");
        if self.dlq.is_empty() {
            o.push_str("  (empty)\n");
        }
        for (q, n, sample) in &self.dlq {
            o.push_str(&format!("  {q}: {n} message(s), e.g. {sample}\n"));
        }
        o.push_str(&format!(
            "\n== Look further ==\n  export AWS_ENDPOINT_URL={e} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1\n  aws s3 ls --recursive s3://{b}/\n  aws s3 cp s3://{b}/{h} - \n  aws dynamodb scan --table-name <name from .local/stack.json>\n  make down   # stops everything\n",
            e = self.endpoint,
            b = self.bucket,
            h = self.invoice.html_key
        ));
        o
    }
}

/// The deployment's subject key (the local secret lead-enrichment reads).
async fn subject_key(w: &World<'_>) -> Result<blapi::subjects::SubjectKey> {
    let env = w.stack.env("lead-enrichment");
    blapi::subjects::SubjectKey::from_secret(w.clients.secrets(), &env["PRIVACY_KEY_SECRET_ID"])
        .await
        .map_err(|e| anyhow!("{}", e.chain()))
}

/// Posts a portal `privacy.request` and waits for privacy-requests to close it.
async fn privacy_request(w: &World<'_>, email: &str, kind: &str) -> Result<Value> {
    let (event_id, _) = w
        .post_source(
            "portal",
            "privacy.request",
            json!({"email": email, "kind": kind, "jurisdiction": "gdpr"}),
        )
        .await?;
    let id = blapi::privacy::input::request_id_for_event("portal", &event_id);
    wait_closed(w, &id, kind).await
}

/// Waits until privacy-requests closed request `id`; its status record.
async fn wait_closed(w: &World<'_>, id: &str, kind: &str) -> Result<Value> {
    until(
        &format!("the {kind} request closed"),
        Duration::from_secs(180),
        || async {
            let v = w
                .invoke(
                    "privacy-requests",
                    &json!({"action": "status", "request_id": id}),
                )
                .await;
            Ok(v.ok().filter(|v| {
                v["request"]["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("completed"))
            }))
        },
    )
    .await
}

/// What identifies a person in stored text: the address, the name, and the address's plain
/// SHA-256 (what an unkeyed hash would have stored).
fn needles(email: &str, names: &[&str]) -> Vec<String> {
    use sha2::Digest;
    let mut n = vec![
        email.to_owned(),
        hex::encode(sha2::Sha256::digest(email.as_bytes())),
    ];
    n.extend(names.iter().map(|s| (*s).to_owned()));
    n
}

/// Every table item, every object version of the bucket and every queued message, searched
/// for `needles`: `(where, needle)` for each hit.
pub async fn scan_everything(w: &World<'_>, needles: &[String]) -> Result<Vec<(String, String)>> {
    let mut hits = Vec::new();
    let mut check = |place: String, text: &str| {
        for n in needles {
            if text.contains(n.as_str()) {
                hits.push((place.clone(), n.clone()));
            }
        }
    };
    for (id, _) in w
        .stack
        .resources
        .iter()
        .filter(|(id, _)| id.ends_with("Table"))
    {
        let table = w.stack.physical(id).to_owned();
        let mut start = None;
        loop {
            let out = w
                .clients
                .dynamodb()
                .scan()
                .table_name(&table)
                .set_exclusive_start_key(start.take())
                .send()
                .await?;
            for item in out.items() {
                let text = blapi::aws::dynamo::item_to_json(item).to_string();
                let key = format!(
                    "{id} {}/{}",
                    blapi::aws::dynamo::get_s(item, "pk").unwrap_or_default(),
                    blapi::aws::dynamo::get_s(item, "sk").unwrap_or_default()
                );
                check(key, &text);
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
    }
    let bucket = w.stack.physical("ArtifactsBucket").to_owned();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let out = w
            .clients
            .s3()
            .list_object_versions()
            .bucket(&bucket)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await?;
        for v in out.versions() {
            let (Some(key), Some(version)) = (v.key(), v.version_id()) else {
                continue;
            };
            let body = w
                .clients
                .s3()
                .get_object()
                .bucket(&bucket)
                .key(key)
                .version_id(version)
                .send()
                .await?
                .body
                .collect()
                .await?
                .into_bytes();
            // Archive objects are gzip NDJSON: read what they hold, not their compressed bytes.
            let text = if body.starts_with(&[0x1f, 0x8b]) {
                blapi::archive::decode(key, &body)
                    .map(|lines| {
                        lines
                            .iter()
                            .map(|l| {
                                // The line, and its body as sent (unescaped).
                                format!(
                                    "{} {}\n",
                                    serde_json::to_string(l).unwrap_or_default(),
                                    l.body.as_deref().unwrap_or_default()
                                )
                            })
                            .collect::<String>()
                    })
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned())
            } else {
                String::from_utf8_lossy(&body).into_owned()
            };
            check(format!("s3://{bucket}/{key}?versionId={version}"), &text);
        }
        if out.is_truncated() != Some(true) {
            break;
        }
        key_marker = out.next_key_marker().map(str::to_owned);
        version_marker = out.next_version_id_marker().map(str::to_owned);
    }
    for (id, _) in w
        .stack
        .resources
        .iter()
        .filter(|(id, _)| id.ends_with("Queue") || id.ends_with("DLQ"))
    {
        let url = w.stack.physical(id).to_owned();
        let mut handles = Vec::new();
        loop {
            let out = w
                .clients
                .sqs()
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .send()
                .await?;
            if out.messages().is_empty() {
                break;
            }
            for m in out.messages() {
                check(format!("{id} message"), m.body().unwrap_or_default());
                handles.extend(m.receipt_handle().map(str::to_owned));
            }
        }
        for h in handles {
            w.clients
                .sqs()
                .change_message_visibility()
                .queue_url(&url)
                .receipt_handle(h)
                .visibility_timeout(0)
                .send()
                .await?;
        }
    }
    Ok(hits)
}

/// The archived events naming `email`, as the archiver forwarded them (to replay after
/// erasure).
async fn archived_of(w: &World<'_>, email: &str) -> Result<Vec<blapi::queue::EventMessage>> {
    let mut out = Vec::new();
    for e in archived_today(w).await? {
        let Some(body) = e.line.body.as_deref().filter(|b| b.contains(email)) else {
            continue;
        };
        out.push(blapi::queue::EventMessage {
            // A fresh id: a new delivery, past every idempotency record; only the tombstone
            // stands between it and the person's data.
            id: format!("{}-replayed-after-erasure", e.line.id),
            source: e.line.source.clone(),
            event_type: e.line.event_type.clone(),
            received_at: Utc::now(),
            raw_key: e.locator(),
            event: serde_json::from_str(body)?,
        });
    }
    Ok(out)
}

async fn privacy_requests(
    w: &World<'_>,
    progress: Progress<'_>,
    customer: &str,
    buyer: &str,
    lead: &str,
) -> Result<PrivacyLine> {
    progress(
        "privacy: the buyer asks for her data through the portal -> one bundle, every system, behind an expiring link",
    );
    let access = portal::privacy_request(w, customer, buyer, "access").await?;
    let link = access["link"].as_str().context("the bundle's link")?;
    let bundle: Value = w.http.get(link).send().await?.json().await?;

    // Kept before the erasure, to replay afterwards.
    let mut replay = archived_of(w, buyer).await?;
    replay.extend(archived_of(w, lead).await?);

    progress(
        "privacy: the buyer and a lead ask to be erased -> every store, every object version, every queued message",
    );
    let mut erasures = Vec::new();
    erasures.push((
        "buyer".to_owned(),
        privacy_request(w, buyer, "erasure").await?,
    ));
    erasures.push((
        "lead".to_owned(),
        privacy_request(w, lead, "erasure").await?,
    ));
    let mut looking = needles(buyer, &["Lovelace"]);
    looking.extend(needles(lead, &["\"Doe\"", "Jane Doe"]));
    let leftovers = scan_everything(w, &looking).await?;

    progress(
        "privacy: their archived events replayed as new deliveries -> nothing comes back (tombstones)",
    );
    let sender = blapi::queue::SqsSender::new(w.clients.sqs().clone(), w.store.clone());
    use blapi::queue::QueueSender;
    use blapi::webhook::routing::{Route, routes};
    let mut replayed = 0;
    for m in &replay {
        for route in routes(&m.source, &m.event_type).iter() {
            // Only the consumers that write personal data; billing and licensing are keyed
            // by Stripe's ids and idempotent on them.
            let logical = match route {
                Route::LeadEvents => "LeadEventsQueue",
                Route::CustomerEvents => "CustomerEventsQueue",
                _ => continue,
            };
            sender
                .send(w.stack.physical(logical), serde_json::to_string(m)?)
                .await
                .map_err(|e| anyhow!("{}", e.chain()))?;
            replayed += 1;
        }
    }
    w.settle(Duration::from_secs(120)).await?;
    let leftovers_after_replay = scan_everything(w, &looking).await?;
    Ok(PrivacyLine {
        access,
        bundle,
        erasures,
        leftovers,
        replayed,
        leftovers_after_replay,
    })
}
