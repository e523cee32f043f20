//! One connector per system that holds personal data: what it holds of a person (access),
//! erasing it or keeping it with a legal basis (erasure), and applying an opt-out.
//!
//! Most systems are reached through the subject index: the place (`locator`) is known, so a
//! request costs requests proportional to the person's own data. Three are not indexed when
//! the data is written and are swept instead: the messages at rest in the dead-letter and
//! notification queues ([`QueueSweep`]) and the claim-checked bodies ([`ClaimCheckSweep`],
//! expired by lifecycle), both small and bounded by retention, recognise the person by hashing
//! every address they read; the event archive ([`ArchiveSweep`]) is found through the keyed
//! subject hashes its lines and its sealed hours' manifests carry (no per-event index write at
//! intake), so no body is read to find the person.

use crate::billing::ports::{DunningStore, SubscriptionView};
use crate::crm::{ConsentChange, CrmError, CrmObject, CrmPort, CrmRecord};
use crate::customers::state::CustomerStore;
use crate::error::{Error, Result};
use crate::leads::input::LeadId;
use crate::leads::store::LeadStore;
use crate::licensing::{LicenseStatus, LicenseStore};
use crate::storage::ObjectStore;
use crate::subjects::{SubjectId, SubjectKey, System};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;

/// What erasing a place did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Erased (detail: what, without personal data).
    Erased(String),
    /// Kept, with the legal basis (the law or contract that requires or allows keeping it).
    Kept { detail: String, basis: String },
    /// The index named it but nothing was there (already gone).
    NothingThere(String),
}

/// A system reached through the subject index.
#[async_trait]
pub trait Connector: Send + Sync {
    fn system(&self) -> System;
    /// What `locator` holds of the person, as JSON (`None`: nothing there).
    async fn export(&self, subject: &SubjectId, locator: &str) -> Result<Option<Value>>;
    /// Erases what `locator` holds of the person, or keeps it with its basis.
    async fn erase(&self, subject: &SubjectId, locator: &str) -> Result<Vec<Outcome>>;
    /// Applies an opt-out choice (`None`: the system keeps no such choice).
    async fn opt_out(&self, _locator: &str, _opted_out: bool) -> Result<Option<String>> {
        Ok(None)
    }
}

/// A system swept for the person (not indexed).
#[async_trait]
pub trait Sweep: Send + Sync {
    fn system(&self) -> System;
    /// Everything in it that mentions the person.
    async fn export(&self, subject: &SubjectId) -> Result<Vec<Value>>;
    /// Erases everything in it that mentions the person.
    async fn erase(&self, subject: &SubjectId) -> Result<Vec<Outcome>>;
}

fn crm_err(e: CrmError) -> Error {
    match e {
        CrmError::Unavailable(m) => Error::dependency("crm", true, m),
        CrmError::Store(e) => e,
        other => Error::dependency("crm", false, other.to_string()),
    }
}

/// The LeadsTable (locator: the lead id).
pub struct LeadsConnector(pub Arc<dyn LeadStore>);

#[async_trait]
impl Connector for LeadsConnector {
    fn system(&self) -> System {
        System::Leads
    }
    async fn export(&self, _subject: &SubjectId, locator: &str) -> Result<Option<Value>> {
        let id = LeadId::from_stored(locator);
        self.0
            .get(&id)
            .await?
            .map(|r| serde_json::to_value(r).map_err(|e| Error::Invalid(e.to_string())))
            .transpose()
    }
    async fn erase(&self, subject: &SubjectId, locator: &str) -> Result<Vec<Outcome>> {
        let n = self.0.erase_subject(subject).await?;
        Ok(vec![if n == 0 {
            Outcome::NothingThere(format!("lead {locator}"))
        } else {
            Outcome::Erased(format!("{n} lead record(s), {locator}"))
        }])
    }
}

/// The CRM (locator: `lead:<id>`, `contact:<id>` or `account:<customer id>`).
pub struct CrmConnector(pub Arc<dyn CrmPort>);

fn crm_locator(locator: &str) -> Result<(CrmObject, &str)> {
    let (kind, id) = locator
        .split_once(':')
        .ok_or_else(|| Error::Invalid(format!("CRM locator {locator} has no object")))?;
    let object = match kind {
        "lead" => CrmObject::Lead,
        "contact" => CrmObject::Contact,
        "account" => CrmObject::Account,
        other => return Err(Error::Invalid(format!("CRM locator names {other}"))),
    };
    Ok((object, id))
}

#[async_trait]
impl Connector for CrmConnector {
    fn system(&self) -> System {
        System::Crm
    }
    async fn export(&self, _subject: &SubjectId, locator: &str) -> Result<Option<Value>> {
        let (object, id) = crm_locator(locator)?;
        self.0.fetch(object, id).await.map_err(crm_err)
    }
    async fn erase(&self, _subject: &SubjectId, locator: &str) -> Result<Vec<Outcome>> {
        let (object, id) = crm_locator(locator)?;
        if object == CrmObject::Account {
            return Ok(vec![Outcome::Kept {
                detail: format!("CRM account {id} (the customer's company record; no contact data, the person's contact is erased)"),
                basis: "contract and accounting records of the customer (GDPR art. 6(1)(b), art. 17(3)(b))".into(),
            }]);
        }
        Ok(vec![if self.0.erase(object, id).await.map_err(crm_err)? {
            Outcome::Erased(format!("CRM {}", object.sobject()))
        } else {
            Outcome::NothingThere(format!("CRM {}", object.sobject()))
        }])
    }
    async fn opt_out(&self, locator: &str, opted_out: bool) -> Result<Option<String>> {
        let (object, id) = crm_locator(locator)?;
        if object == CrmObject::Account {
            return Ok(None);
        }
        let change = CrmRecord::Consent(ConsentChange {
            object,
            external_id: id.to_owned(),
            opted_out,
        });
        let done = self.0.upsert(&change).await.map_err(crm_err)?;
        Ok(Some(match done.record_id {
            Some(_) => format!("CRM {} e-mail opt-out set to {opted_out}", object.sobject()),
            None => format!("CRM {} not there; nothing to set", object.sobject()),
        }))
    }
}

/// Stripe's customers, as the privacy connector needs them.
#[async_trait]
pub trait StripeCustomers: Send + Sync {
    /// The customer object, `None` when deleted or unknown.
    async fn customer(&self, id: &str) -> Result<Option<Value>>;
    /// Why the customer must stay (an active subscription, an unpaid invoice), if so.
    async fn must_keep(&self, id: &str) -> Result<Option<String>>;
    /// Deletes the customer (Stripe removes its personal data); `true` when it was there.
    async fn delete(&self, id: &str) -> Result<bool>;
}

#[async_trait]
impl StripeCustomers for crate::stripe::StripeClient {
    async fn customer(&self, id: &str) -> Result<Option<Value>> {
        crate::stripe::client::checked_id("customer", "cus_", id)?;
        match self.get::<Value>(&format!("customers/{id}"), &[]).await {
            Ok(c) if c.get("deleted").and_then(Value::as_bool) == Some(true) => Ok(None),
            Ok(c) => Ok(Some(c)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
    async fn must_keep(&self, id: &str) -> Result<Option<String>> {
        let subs: Value = self
            .get("subscriptions", &[("customer", id), ("status", "all")])
            .await?;
        let live = subs["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                matches!(
                    s["status"].as_str(),
                    Some("active" | "trialing" | "past_due" | "unpaid" | "incomplete")
                )
            })
            .count();
        if live > 0 {
            return Ok(Some(format!("{live} live subscription(s)")));
        }
        let invoices: Value = self.get("invoices", &[("customer", id)]).await?;
        let unpaid = invoices["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["status"].as_str() == Some("open"))
            .count();
        Ok((unpaid > 0).then(|| format!("{unpaid} unpaid invoice(s)")))
    }
    async fn delete(&self, id: &str) -> Result<bool> {
        crate::stripe::client::checked_id("customer", "cus_", id)?;
        match self.delete::<Value>(&format!("customers/{id}")).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Stripe (locator: the customer id).
pub struct StripeConnector(pub Arc<dyn StripeCustomers>);

#[async_trait]
impl Connector for StripeConnector {
    fn system(&self) -> System {
        System::Stripe
    }
    async fn export(&self, _subject: &SubjectId, locator: &str) -> Result<Option<Value>> {
        self.0.customer(locator).await
    }
    async fn erase(&self, _subject: &SubjectId, locator: &str) -> Result<Vec<Outcome>> {
        if let Some(why) = self.0.must_keep(locator).await? {
            return Ok(vec![Outcome::Kept {
                detail: format!("Stripe customer {locator} ({why})"),
                basis: "contract in force or payment due: performing the contract and collecting what is owed (GDPR art. 6(1)(b), art. 17(3)(e)); erase once it ends".into(),
            }]);
        }
        Ok(vec![if self.0.delete(locator).await? {
            Outcome::Erased(format!("Stripe customer {locator} deleted"))
        } else {
            Outcome::NothingThere(format!("Stripe customer {locator}"))
        }])
    }
}

/// customer-sync's CustomersTable (locator: the customer id). Its state holds no contact data.
pub struct CustomersConnector(pub Arc<dyn CustomerStore>);

#[async_trait]
impl Connector for CustomersConnector {
    fn system(&self) -> System {
        System::Customers
    }
    async fn export(&self, _subject: &SubjectId, locator: &str) -> Result<Option<Value>> {
        self.0
            .load(locator)
            .await?
            .map(|s| serde_json::to_value(s).map_err(|e| Error::Invalid(e.to_string())))
            .transpose()
    }
    async fn erase(&self, _subject: &SubjectId, locator: &str) -> Result<Vec<Outcome>> {
        Ok(match self.0.load(locator).await? {
            None => vec![Outcome::NothingThere(format!("customer state {locator}"))],
            Some(_) => vec![Outcome::Kept {
                detail: format!("customer state {locator}: subscriptions, terms and values; pseudonymous (customer id, no contact data)"),
                basis: "accounting records of the contract and its revenue (commercial and tax law retention, GDPR art. 17(3)(b))".into(),
            }],
        })
    }
}

/// Licenses and their files (locator: the customer id).
pub struct LicensesConnector {
    pub store: Arc<dyn LicenseStore>,
    pub files: Arc<dyn ObjectStore>,
    /// Now, epoch ms (a license past its end binds no one).
    pub now_ms: fn() -> i64,
}

#[async_trait]
impl Connector for LicensesConnector {
    fn system(&self) -> System {
        System::Licenses
    }
    async fn export(&self, _subject: &SubjectId, locator: &str) -> Result<Option<Value>> {
        let records = self.store.by_customer(locator).await?;
        if records.is_empty() {
            return Ok(None);
        }
        serde_json::to_value(records)
            .map(Some)
            .map_err(|e| Error::Invalid(e.to_string()))
    }
    async fn erase(&self, _subject: &SubjectId, locator: &str) -> Result<Vec<Outcome>> {
        let now = (self.now_ms)();
        let mut out = Vec::new();
        for r in self.store.by_customer(locator).await? {
            let binding = matches!(r.status, LicenseStatus::Active | LicenseStatus::Issuing)
                && r.expires_at > now;
            if binding {
                out.push(Outcome::Kept {
                    detail: format!("license {} and its file {} (signed: names the licensee)", r.license_id, r.file_key),
                    basis: "contract in force: the signed license is the customer's contract until it expires (GDPR art. 6(1)(b), art. 17(3)(b)); erase after expiry".into(),
                });
                continue;
            }
            let copy = self.store.forget_file(locator, &r.license_id).await?;
            let versions = self.files.erase_all_versions(&r.file_key).await?;
            out.push(Outcome::Erased(format!(
                "license {} ({}): file erased ({versions} object version(s){}); its facts kept without the licensee",
                r.license_id,
                r.status.as_str(),
                if copy { ", stored copy" } else { "" }
            )));
        }
        if out.is_empty() {
            out.push(Outcome::NothingThere(format!("licenses of {locator}")));
        }
        Ok(out)
    }
}

/// Billing records and invoice artifacts (locator: the customer id). They carry the customer
/// id, never contact data; invoices must be kept.
pub struct BillingConnector {
    pub subscriptions: Arc<dyn SubscriptionView>,
    pub dunning: Arc<dyn DunningStore>,
    pub files: Arc<dyn ObjectStore>,
}

#[async_trait]
impl Connector for BillingConnector {
    fn system(&self) -> System {
        System::Billing
    }
    async fn export(&self, _subject: &SubjectId, locator: &str) -> Result<Option<Value>> {
        let subs = self.subscriptions.for_customer(locator).await?;
        let (dunning, _) = self.dunning.load(locator).await?;
        let mut invoices = Vec::new();
        for key in self.files.list(&format!("invoices/{locator}/")).await? {
            if key.ends_with(".json")
                && let Some(body) = self.files.get(&key).await?
            {
                invoices.push(serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null));
            }
        }
        Ok(Some(json!({
            "subscriptions": subs,
            "dunning": dunning,
            "invoices": invoices,
        })))
    }
    async fn erase(&self, _subject: &SubjectId, locator: &str) -> Result<Vec<Outcome>> {
        let artifacts = self.files.list(&format!("invoices/{locator}/")).await?;
        Ok(vec![Outcome::Kept {
            detail: format!(
                "billing records and {} invoice artifact(s) under invoices/{locator}/ (pseudonymous: customer id, no contact data)",
                artifacts.len()
            ),
            basis: "tax law: invoices and their records are kept for the statutory period (e.g. 10 years, German AO §147; 6 years, UK VAT) (GDPR art. 17(3)(b))".into(),
        }])
    }
}

/// Objects holding a person's data whole (locator: the object key): access bundles
/// ([`System::Exports`]) and the single-event objects of the archive before it was batched
/// (`raw/...`, [`System::Archive`]). Every version is erased. An index entry naming an event
/// of today's archive (`archive/...#source/id`, which lead-enrichment records) is left to
/// [`ArchiveSweep`], which finds every event of the person whether indexed or not.
pub struct ObjectsConnector {
    pub system: System,
    pub files: Arc<dyn ObjectStore>,
}

impl ObjectsConnector {
    pub fn archive(files: Arc<dyn ObjectStore>) -> Self {
        Self {
            system: System::Archive,
            files,
        }
    }
    pub fn exports(files: Arc<dyn ObjectStore>) -> Self {
        Self {
            system: System::Exports,
            files,
        }
    }
}

#[async_trait]
impl Connector for ObjectsConnector {
    fn system(&self) -> System {
        self.system
    }
    async fn export(&self, _subject: &SubjectId, locator: &str) -> Result<Option<Value>> {
        if self.system == System::Exports || in_archive(locator) {
            // An earlier bundle is not exported into the next one; an archived event is
            // exported by the archive sweep (once).
            return Ok(None);
        }
        Ok(self
            .files
            .get(locator)
            .await?
            .map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null)))
    }
    async fn erase(&self, _subject: &SubjectId, locator: &str) -> Result<Vec<Outcome>> {
        if in_archive(locator) {
            return Ok(vec![Outcome::NothingThere(
                "an event of the event archive: erased by the archive sweep".into(),
            )]);
        }
        let what = if self.system == System::Exports {
            "access bundle"
        } else {
            "archived event"
        };
        let n = self.files.erase_all_versions(locator).await?;
        Ok(vec![if n == 0 {
            Outcome::NothingThere(format!("{what} {locator}"))
        } else {
            Outcome::Erased(format!("{what} {locator}: {n} version(s)"))
        }])
    }
}

/// Whether `locator` names an event of the batched event archive (not a whole object).
fn in_archive(locator: &str) -> bool {
    locator.starts_with("archive/")
}

/// The event archive ([`crate::archive`]), swept by keyed subject hash: the manifests of
/// sealed hours and the unsealed batch objects say which hours name the person. Access exports
/// each of their events once (`place`: its locator, `data`: the event); erasure seals the
/// unsealed hours naming them, then rewrites each sealed hour with their events replaced by
/// tombstones (id, source, type and times kept, no body), rebuilds its manifest and erases
/// every older version. Other people's events in the same objects are untouched.
pub struct ArchiveSweep {
    pub files: Arc<dyn ObjectStore>,
}

#[async_trait]
impl Sweep for ArchiveSweep {
    fn system(&self) -> System {
        System::Archive
    }
    async fn export(&self, subject: &SubjectId) -> Result<Vec<Value>> {
        Ok(crate::archive::events_of(self.files.as_ref(), subject)
            .await?
            .into_iter()
            .map(|e| {
                json!({
                    "place": e.locator(),
                    "received_at": e.line.received_at,
                    "data": e.line.event(),
                })
            })
            .collect())
    }
    async fn erase(&self, subject: &SubjectId) -> Result<Vec<Outcome>> {
        Ok(crate::archive::erase_subject(self.files.as_ref(), subject)
            .await?
            .into_iter()
            .filter(|h| h.erased > 0 || h.versions > 0)
            .map(|h| {
                Outcome::Erased(format!(
                    "archive hour {}: {} event(s) replaced by tombstones, {} older version(s) erased",
                    h.hour, h.erased, h.versions
                ))
            })
            .collect())
    }
}

/// Claim-checked message bodies (`claim-check/`): swept, every version of a match erased.
pub struct ClaimCheckSweep {
    pub files: Arc<dyn ObjectStore>,
    pub key: SubjectKey,
}

impl ClaimCheckSweep {
    async fn matches(&self, subject: &SubjectId) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for k in self.files.list(crate::queue::CLAIM_CHECK_PREFIX).await? {
            if let Some(body) = self.files.get(&k).await?
                && self.key.mentions(&String::from_utf8_lossy(&body), subject)
            {
                out.push((k, body));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Sweep for ClaimCheckSweep {
    fn system(&self) -> System {
        System::ClaimChecks
    }
    async fn export(&self, subject: &SubjectId) -> Result<Vec<Value>> {
        Ok(self
            .matches(subject)
            .await?
            .into_iter()
            .map(|(k, b)| json!({"key": k, "body": serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null)}))
            .collect())
    }
    async fn erase(&self, subject: &SubjectId) -> Result<Vec<Outcome>> {
        let mut out = Vec::new();
        for (k, _) in self.matches(subject).await? {
            let n = self.files.erase_all_versions(&k).await?;
            out.push(Outcome::Erased(format!(
                "claim-checked body {k}: {n} version(s)"
            )));
        }
        Ok(out)
    }
}

/// Messages at rest in the dead-letter queues and the notifications queue: swept, each
/// message mentioning the person deleted, the others made visible again at once.
pub struct QueueSweep {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_urls: Vec<String>,
    pub key: SubjectKey,
}

impl QueueSweep {
    /// Every message of `url` mentioning `subject` (deleted when `erase`); the rest are
    /// released at once. A message is held invisible for the sweep's duration only.
    async fn sweep(&self, url: &str, subject: &SubjectId, erase: bool) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut release = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(120)
                .wait_time_seconds(0)
                .send()
                .await
                .map_err(|e| Error::aws("sqs", e))?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let body = m.body.unwrap_or_default();
                let handle = m.receipt_handle.unwrap_or_default();
                if self.key.mentions(&body, subject) {
                    if erase {
                        self.sqs
                            .delete_message()
                            .queue_url(url)
                            .receipt_handle(&handle)
                            .send()
                            .await
                            .map_err(|e| Error::aws("sqs", e))?;
                    } else {
                        release.push(handle);
                    }
                    found.push(body);
                } else {
                    release.push(handle);
                }
            }
        }
        for handle in release {
            self.sqs
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(|e| Error::aws("sqs", e))?;
        }
        Ok(found)
    }
}

fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

#[async_trait]
impl Sweep for QueueSweep {
    fn system(&self) -> System {
        System::Queues
    }
    async fn export(&self, subject: &SubjectId) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for url in &self.queue_urls {
            for body in self.sweep(url, subject, false).await? {
                out.push(json!({"queue": queue_name(url), "body": serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body))}));
            }
        }
        Ok(out)
    }
    async fn erase(&self, subject: &SubjectId) -> Result<Vec<Outcome>> {
        let mut out = Vec::new();
        for url in &self.queue_urls {
            let n = self.sweep(url, subject, true).await?.len();
            if n > 0 {
                out.push(Outcome::Erased(format!(
                    "{n} message(s) in {}",
                    queue_name(url)
                )));
            }
        }
        Ok(out)
    }
}
