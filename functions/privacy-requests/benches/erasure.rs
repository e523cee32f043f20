//! Erasure at scale, on the local stack: one person's erasure in a store of 10 000 customers,
//! 100 000 leads and 100 000 archived events (each archived event indexed under its person),
//! against the same erasure in a store holding nothing but that person. Prints wall time and
//! every AWS request the erasure made, by operation (counted by an SDK interceptor), and the
//! Stripe calls. The claim: the requests follow the person's own items, not the store's size.
//!
//! `infra/stack.sh run cargo bench -p privacy-requests --bench erasure` (part of `make
//! bench`). `BENCH_PRIVACY_SCALE=0.1` fills a tenth of the store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use blapi::billing::dynamo::DynamoBilling;
use blapi::config::Secret;
use blapi::crm::{CrmLead, CrmPort, CrmRecord, SinkCrm};
use blapi::customers::state::{CustomerStore, DynamoCustomers};
use blapi::leads::store::DynamoLeadsTable;
use blapi::licensing::{DynamoLicenseStore, LicenseRecord, LicenseStatus, LicenseStore};
use blapi::privacy::connectors::{
    BillingConnector, ClaimCheckSweep, Connector, CrmConnector, CustomersConnector, LeadsConnector,
    LicensesConnector, ObjectsConnector, QueueSweep, StripeConnector, Sweep,
};
use blapi::privacy::deadline::Jurisdiction;
use blapi::privacy::service::{Ports, PrivacyService, Settings, Submission};
use blapi::privacy::{DynamoRequests, RequestKind};
use blapi::queue::SqsSender;
use blapi::storage::{ObjectStore, S3Store};
use blapi::stripe::{StripeClient, form_pairs};
use blapi::subjects::{DynamoSubjectIndex, Location, SubjectKey, Subjects, System};
use blapi::values::Email;
use futures::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Counts every request the SDK transmits (retries included), by service and operation.
#[derive(Debug, Clone)]
struct Count(Counts);

impl Intercept for Count {
    fn name(&self) -> &'static str {
        "count-requests"
    }
    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg
            .load::<Metadata>()
            .map_or("?".to_owned(), |m| format!("{}.{}", m.service(), m.name()));
        *self.0.lock().unwrap().entry(op).or_default() += 1;
        Ok(())
    }
}

struct Env {
    stack: blapi_infra::LocalStack,
    ddb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    counted: Ports,
    counts: Counts,
    key: SubjectKey,
    stripe: StripeClient,
    env: BTreeMap<String, String>,
}

fn localstripe() -> StripeClient {
    StripeClient::new(
        std::env::var("LOCALSTRIPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8420".into()),
        Secret::new("sk_test_blapi_local".into()),
        Duration::from_secs(10),
    )
    .unwrap()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn setup() -> Env {
    let stack = blapi_infra::testing::fresh_stack().await;
    let sdk = stack.sdk_config().await;
    let env = stack.env("privacy-requests");
    let counts: Counts = Arc::default();
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(Count(counts.clone()))
            .build(),
    );
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .interceptor(Count(counts.clone()))
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .interceptor(Count(counts.clone()))
            .build(),
    );
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let key = SubjectKey::from_secret(&secrets, &env["PRIVACY_KEY_SECRET_ID"])
        .await
        .unwrap();
    let files: Arc<dyn ObjectStore> =
        Arc::new(S3Store::new(s3.clone(), env["ARTIFACTS_BUCKET"].clone()));
    let billing = Arc::new(DynamoBilling::new(
        ddb.clone(),
        env["BILLING_TABLE"].clone(),
    ));
    let stripe = localstripe();
    let connectors: Vec<Arc<dyn Connector>> = vec![
        Arc::new(LeadsConnector(Arc::new(DynamoLeadsTable::new(
            ddb.clone(),
            env["LEADS_TABLE"].clone(),
            key.clone(),
        )))),
        Arc::new(CrmConnector(Arc::new(SinkCrm::new(
            ddb.clone(),
            env["CRM_TABLE"].clone(),
            files.clone(),
        )))),
        Arc::new(StripeConnector(Arc::new(stripe.clone()))),
        Arc::new(CustomersConnector(Arc::new(DynamoCustomers::new(
            ddb.clone(),
            env["CUSTOMERS_TABLE"].clone(),
        )))),
        Arc::new(LicensesConnector {
            store: Arc::new(DynamoLicenseStore::new(
                ddb.clone(),
                env["LICENSES_TABLE"].clone(),
            )),
            files: files.clone(),
            now_ms,
        }),
        Arc::new(BillingConnector {
            subscriptions: billing.clone(),
            dunning: billing,
            files: files.clone(),
        }),
        Arc::new(ObjectsConnector::archive(files.clone())),
        Arc::new(ObjectsConnector::exports(files.clone())),
    ];
    let sweeps: Vec<Arc<dyn Sweep>> = vec![
        Arc::new(QueueSweep {
            sqs: sqs.clone(),
            queue_urls: env["SWEEP_QUEUE_URLS"]
                .split(',')
                .map(str::to_owned)
                .collect(),
            key: key.clone(),
        }),
        Arc::new(ClaimCheckSweep {
            files: files.clone(),
            key: key.clone(),
        }),
    ];
    let counted = Ports {
        requests: Arc::new(DynamoRequests::new(
            ddb.clone(),
            env["PRIVACY_TABLE"].clone(),
        )),
        subjects: Subjects {
            key: key.clone(),
            index: Arc::new(DynamoSubjectIndex::new(
                ddb.clone(),
                env["PRIVACY_TABLE"].clone(),
            )),
        },
        connectors,
        sweeps,
        files: files.clone(),
        queue: Arc::new(SqsSender::new(sqs, files)),
        clock: now_ms,
    };
    Env {
        stack,
        ddb,
        s3,
        counted,
        counts,
        key,
        stripe,
        env,
    }
}

async fn batch_write(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<BTreeMap<&'static str, AttributeValue>>,
) {
    let chunks: Vec<Vec<_>> = items.chunks(25).map(<[_]>::to_vec).collect();
    futures::stream::iter(chunks)
        .for_each_concurrent(16, |chunk| async move {
            let mut reqs: Vec<WriteRequest> = chunk
                .into_iter()
                .map(|item| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(
                                    item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                                ))
                                .build()
                                .unwrap(),
                        )
                        .build()
                })
                .collect();
            while !reqs.is_empty() {
                let out = ddb
                    .batch_write_item()
                    .request_items(table, reqs.clone())
                    .send()
                    .await
                    .unwrap();
                reqs = out
                    .unprocessed_items()
                    .and_then(|u| u.get(table).cloned())
                    .unwrap_or_default();
            }
        })
        .await;
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// Fills the store: customers, leads, archived events and their index entries.
async fn fill(e: &Env, customers: usize, leads: usize, archived: usize) {
    let subject = |i: usize| {
        e.key
            .subject(&Email::parse(&format!("person{i}@example.com")).unwrap())
    };
    let t = Instant::now();
    batch_write(
        &e.ddb,
        &e.env["CUSTOMERS_TABLE"],
        (0..customers)
            .map(|i| {
                let id = format!("cus_fill{i}");
                BTreeMap::from([
                    ("pk", s(format!("CUSTOMER#{id}"))),
                    ("sk", s("STATE")),
                    (
                        "doc",
                        s(
                            serde_json::to_string(&blapi::customers::state::CustomerState::new(
                                &id,
                            ))
                            .unwrap(),
                        ),
                    ),
                    ("version", AttributeValue::N("1".into())),
                ])
            })
            .collect(),
    )
    .await;
    batch_write(
        &e.ddb,
        &e.env["LEADS_TABLE"],
        (0..leads)
            .map(|i| {
                BTreeMap::from([
                    ("pk", s(format!("LEAD#ld_fill{i}"))),
                    ("sk", s("PROFILE")),
                    ("gsi1pk", s(format!("SUBJECT#{}", subject(i)))),
                    ("gsi1sk", s(format!("LEAD#ld_fill{i}"))),
                    ("record", s(json!({"email": format!("person{i}@example.com"), "first_name": "Filler"}).to_string())),
                ])
            })
            .collect(),
    )
    .await;
    let bucket = e.env["ARTIFACTS_BUCKET"].clone();
    futures::stream::iter(0..archived)
        .for_each_concurrent(32, |i| {
            let (s3, bucket) = (e.s3.clone(), bucket.clone());
            async move {
                s3.put_object()
                    .bucket(bucket)
                    .key(format!("raw/stripe/2026/11/{:02}/evt_fill{i}.json", 1 + i % 28))
                    .body(json!({"id": format!("evt_fill{i}"), "data": {"object": {"customer_email": format!("person{i}@example.com")}}}).to_string().into_bytes().into())
                    .send()
                    .await
                    .unwrap();
            }
        })
        .await;
    batch_write(
        &e.ddb,
        &e.env["PRIVACY_TABLE"],
        (0..archived)
            .map(|i| {
                let key = format!("raw/stripe/2026/11/{:02}/evt_fill{i}.json", 1 + i % 28);
                BTreeMap::from([
                    ("pk", s(format!("SUBJECT#{}", subject(i)))),
                    ("sk", s(format!("LOC#archive#{key}"))),
                    ("system", s("archive")),
                    ("locator", s(key)),
                ])
            })
            .collect(),
    )
    .await;
    println!(
        "filled {customers} customers, {leads} leads, {archived} archived events (+ index) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// The person's own data: a Stripe customer, a lead, 3 archived events (2 versions each), a
/// revoked license with its file, a customer state, a CRM lead; all indexed.
async fn seed(e: &Env, who: &str) -> (String, usize) {
    let email = format!("{who}@analytical-engines.example");
    let id = e.key.subject(&Email::parse(&email).unwrap());
    let form = form_pairs([
        ("email", email.clone()),
        ("name", "Ada Lovelace".to_owned()),
    ]);
    let cus: serde_json::Value = e
        .stripe
        .post("customers", &form, &format!("bench-{who}-{}", now_ms()))
        .await
        .unwrap();
    let cus = cus["id"].as_str().unwrap().to_owned();
    let lead = format!("ld_{who}");
    e.ddb
        .put_item()
        .table_name(&e.env["LEADS_TABLE"])
        .item("pk", s(format!("LEAD#{lead}")))
        .item("sk", s("PROFILE"))
        .item("gsi1pk", s(format!("SUBJECT#{id}")))
        .item("gsi1sk", s(format!("LEAD#{lead}")))
        .item("record", s(json!({"email": email}).to_string()))
        .send()
        .await
        .unwrap();
    let files = S3Store::new(e.s3.clone(), e.env["ARTIFACTS_BUCKET"].clone());
    let mut places = vec![
        Location::new(System::Stripe, &cus),
        Location::new(System::Leads, &lead),
        Location::new(System::Crm, format!("lead:{lead}")),
        Location::new(System::Customers, &cus),
        Location::new(System::Licenses, &cus),
        Location::new(System::Billing, &cus),
    ];
    for n in 0..3 {
        let key = format!("raw/portal/2026/11/30/{who}-{n}.json");
        for v in 0..2 {
            files
                .put(
                    &key,
                    json!({"data": {"email": email}, "v": v})
                        .to_string()
                        .into_bytes(),
                    "application/json",
                )
                .await
                .unwrap();
        }
        places.push(Location::new(System::Archive, key));
    }
    let lic = LicenseRecord {
        license_id: "ybndrfg8ejkmcpqxot1uwisza5".parse().unwrap(),
        customer_id: cus.clone(),
        subscription_id: format!("sub_{who}"),
        period_start_ms: 1_700_000_000_000,
        period_end_ms: 1_710_000_000_000,
        quantity: 5,
        sku: "professional".into(),
        status: LicenseStatus::Revoked,
        supersedes: None,
        superseded_by: None,
        revoked_at: Some(1_705_000_000_000),
        revoked_reason: None,
        issued_at: 1_700_000_000_000,
        starts_at: 1_700_000_000_000,
        expires_at: 1_710_000_000_000,
        is_trial: false,
        kid: "k1".into(),
        file_key: format!("licenses/{cus}/ybndrfg8ejkmcpqxot1uwisza5.mattermost-license"),
        file: "c2lnbmVk".into(),
    };
    DynamoLicenseStore::new(e.ddb.clone(), e.env["LICENSES_TABLE"].clone())
        .begin(&lic, None)
        .await
        .unwrap();
    files
        .put(&lic.file_key, b"c2lnbmVk".to_vec(), "text/plain")
        .await
        .unwrap();
    DynamoCustomers::new(e.ddb.clone(), e.env["CUSTOMERS_TABLE"].clone())
        .save(&blapi::customers::state::CustomerState::new(&cus))
        .await
        .unwrap();
    SinkCrm::new(e.ddb.clone(), e.env["CRM_TABLE"].clone(), Arc::new(files))
        .upsert(&CrmRecord::Lead(CrmLead {
            lead_id: lead,
            ..CrmLead::default()
        }))
        .await
        .unwrap();
    e.counted
        .subjects
        .index
        .record(&id, &places, now_ms())
        .await
        .unwrap();
    (email, places.len())
}

async fn erase(e: &Env, who: &str, label: &str) {
    let (email, places) = seed(e, who).await;
    e.counts.lock().unwrap().clear();
    let calls = e.stripe.calls();
    let service = PrivacyService::new(
        e.counted.clone(),
        Settings {
            notifications_queue_url: e.env["NOTIFICATIONS_QUEUE_URL"].clone(),
            link_ttl: Duration::from_secs(3600),
        },
    );
    let tally = blapi::telemetry::Tally::new("bench", "privacy-requests");
    let t = Instant::now();
    let r = service
        .submit(
            Submission {
                id: format!("pr_bench_{who}"),
                kind: RequestKind::Erasure,
                jurisdiction: Jurisdiction::Gdpr,
                email: Email::parse(&email).unwrap(),
                received: chrono::Utc::now().date_naive(),
                at_ms: now_ms(),
                opted_out: None,
            },
            &tally,
        )
        .await
        .unwrap();
    let wall = t.elapsed();
    let counts = e.counts.lock().unwrap().clone();
    let total: u64 = counts.values().sum();
    println!(
        "\n{label}: erasure of one person ({places} indexed places) in {:.0} ms, {:?}; {total} AWS requests + {} Stripe calls",
        wall.as_secs_f64() * 1000.0,
        r.status,
        e.stripe.calls() - calls
    );
    for (op, n) in &counts {
        println!("  {op:<40} {n}");
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let scale: f64 = std::env::var("BENCH_PRIVACY_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0);
        let n = |full: usize| ((full as f64) * scale).round() as usize;
        let e = setup().await;
        println!("privacy erasure bench on stack {}", e.stack.prefix);
        erase(&e, "empty-store-person", "store holding only this person").await;
        fill(&e, n(10_000), n(100_000), n(100_000)).await;
        erase(
            &e,
            "full-store-person",
            &format!(
                "store of {} customers, {} leads, {} archived events",
                n(10_000),
                n(100_000),
                n(100_000)
            ),
        )
        .await;
    });
}
