//! Data subjects: who a person is to blapi without storing who they are, where their data
//! lives, and whether they were erased.
//!
//! - [`SubjectKey`]: the secret key of the subject hash (`PRIVACY_KEY_SECRET_ID`, a secret
//!   `{"subject_key": "<at least 32 characters>"}`). A [`SubjectId`] is HMAC-SHA256(key,
//!   normalized email) in hex: stable for one person, and unlike a plain SHA-256 of the address
//!   it cannot be reversed by hashing a list of known addresses without the key.
//! - [`SubjectIndex`]: the subject index (where each person's data lives, written when the data
//!   is written, so a privacy request finds it without scanning) and the tombstones (an erased
//!   person stays erased: a redelivered or replayed event about them is not written again).
//!
//! Adapters: [`DynamoSubjectIndex`] on the PrivacyTable and [`MemorySubjectIndex`] for tests.
//!
//! PrivacyTable items (`pk` / `sk`):
//! - `SUBJECT#<id>` / `LOC#<system>#<locator>`: one place holding the person's data
//!   (`system`, `locator`, `first_seen` epoch ms). Written with a plain put: idempotent.
//! - `SUBJECT#<id>` / `TOMBSTONE`: `erased_at` (epoch ms) and `request_id`. Never expires.
//! - `SUBJECT#<id>` / `CHOICE`: the person's latest opt-out choice (`opted_out`, `at`).

use crate::aws::dynamo::{get_n, get_s, n, s};
use crate::config::Secret;
use crate::error::{Error, Result};
use crate::values::Email;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// The shortest subject key accepted.
pub const MIN_KEY_LEN: usize = 32;

/// The key of the subject hash. No `Debug` of the value, never logged.
#[derive(Clone)]
pub struct SubjectKey(Secret<Vec<u8>>);

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey([redacted])")
    }
}

#[derive(Deserialize)]
struct KeySecret {
    subject_key: String,
}

impl SubjectKey {
    /// A key of at least [`MIN_KEY_LEN`] bytes.
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self> {
        let key = key.into();
        if key.len() < MIN_KEY_LEN {
            return Err(Error::Invalid(format!(
                "the subject key must be at least {MIN_KEY_LEN} bytes"
            )));
        }
        Ok(Self(Secret::new(key)))
    }

    /// Loads the key from its secret (once per cold start).
    pub async fn from_secret(
        client: &aws_sdk_secretsmanager::Client,
        secret_id: &str,
    ) -> Result<Self> {
        let secret = crate::secrets::load_json::<KeySecret>(client, secret_id).await?;
        Self::new(secret.expose().subject_key.as_bytes().to_vec())
            .map_err(|e| Error::Invalid(format!("secret {secret_id}: {e}")))
    }

    /// The subject id of the person with this address.
    pub fn subject(&self, email: &Email) -> SubjectId {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(email.as_str().as_bytes());
        SubjectId(hex::encode(mac.finalize().into_bytes()))
    }

    /// A fixed key for tests and benchmarks.
    pub fn for_tests() -> Self {
        Self(Secret::new(
            b"blapi-test-subject-key-0123456789abcdef".to_vec(),
        ))
    }
}

impl SubjectKey {
    /// Whether `text` (a message body, an object) mentions `subject`: every e-mail-like token
    /// in it is normalised and hashed, so the address itself is never needed to find it.
    pub fn mentions(&self, text: &str, subject: &SubjectId) -> bool {
        email_tokens(text).any(|e| &self.subject(&e) == subject)
    }
}

/// The e-mail addresses in `text`: tokens of e-mail characters around one `@`.
fn email_tokens(text: &str) -> impl Iterator<Item = Email> + '_ {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.@".contains(c)))
        .filter(|t| t.contains('@'))
        .filter_map(|t| Email::parse(t.trim_matches('.')).ok())
}

/// The e-mail addresses of a JSON document: string values of keys named `email` or ending in
/// `_email` (Stripe's `email`, `customer_email`, `receipt_email`, `billing_details.email`; the
/// portal's `email`), at any depth. The addresses whose keyed hashes an archived event carries.
pub fn emails_in(value: &serde_json::Value) -> Vec<Email> {
    fn walk(v: &serde_json::Value, out: &mut BTreeMap<String, Email>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let named = k.eq_ignore_ascii_case("email") || k.ends_with("_email");
                    match v {
                        serde_json::Value::String(s) if named => {
                            if let Ok(e) = Email::parse(s) {
                                out.insert(e.as_str().to_owned(), e);
                            }
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk(value, &mut out);
    out.into_values().collect()
}

/// A person, as blapi keys their data: the keyed hash of their email (64 hex characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubjectId(String);

impl SubjectId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SubjectId {
    type Error = String;
    fn try_from(v: String) -> std::result::Result<Self, String> {
        if v.len() == 64
            && v.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            Ok(Self(v))
        } else {
            Err("a subject id is 64 lower-case hex characters".into())
        }
    }
}

impl From<SubjectId> for String {
    fn from(v: SubjectId) -> String {
        v.0
    }
}

impl std::fmt::Display for SubjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A system that holds personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    /// The LeadsTable (locator: the lead id).
    Leads,
    /// The CRM (locator: `contact:<external id>` or `lead:<external id>`).
    Crm,
    /// Stripe (locator: the customer id).
    Stripe,
    /// Customer sync's CustomersTable (locator: the customer id).
    Customers,
    /// Licenses and their files (locator: the customer id).
    Licenses,
    /// Billing records and invoice artifacts (locator: the customer id).
    Billing,
    /// The event archive: found by the keyed subject hashes its lines carry (the archive
    /// sweep); an indexed locator is an object key (`raw/...`, before the archive was batched)
    /// or an event's archive locator (`archive/...#source/id`).
    Archive,
    /// Messages at rest in the dead-letter and notification queues (found by sweeping them).
    Queues,
    /// Claim-checked message bodies in the bucket (found by sweeping their prefix).
    ClaimChecks,
    /// The idempotency ledger (event ids and body digests only).
    Ledger,
    /// Access requests' bundles (locator: the object key).
    Exports,
}

impl System {
    pub const ALL: [System; 11] = [
        System::Leads,
        System::Crm,
        System::Stripe,
        System::Customers,
        System::Licenses,
        System::Billing,
        System::Archive,
        System::Queues,
        System::ClaimChecks,
        System::Ledger,
        System::Exports,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            System::Leads => "leads",
            System::Crm => "crm",
            System::Stripe => "stripe",
            System::Customers => "customers",
            System::Licenses => "licenses",
            System::Billing => "billing",
            System::Archive => "archive",
            System::Queues => "queues",
            System::ClaimChecks => "claim_checks",
            System::Ledger => "ledger",
            System::Exports => "exports",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One place holding a person's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Location {
    pub system: System,
    pub locator: String,
}

impl Location {
    pub fn new(system: System, locator: impl Into<String>) -> Self {
        Self {
            system,
            locator: locator.into(),
        }
    }
}

/// An erased person's marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub erased_at: i64,
    pub request_id: String,
}

/// The subject index and the tombstones.
#[async_trait]
pub trait SubjectIndex: Send + Sync {
    /// Records that `subject`'s data lives at each of `locations` (idempotent).
    async fn record(&self, subject: &SubjectId, locations: &[Location], now_ms: i64) -> Result<()>;
    /// Every recorded place of `subject`'s data.
    async fn locations(&self, subject: &SubjectId) -> Result<Vec<Location>>;
    /// Forgets one recorded place (after its data was erased).
    async fn forget(&self, subject: &SubjectId, location: &Location) -> Result<()>;
    /// Marks `subject` erased (idempotent: the first tombstone stays).
    async fn tombstone(&self, subject: &SubjectId, tombstone: &Tombstone) -> Result<()>;
    /// The tombstone of `subject`, if they were erased.
    async fn tombstoned(&self, subject: &SubjectId) -> Result<Option<Tombstone>>;
    /// Records `subject`'s marketing and sharing choice unless a later one is recorded (the
    /// latest choice wins, whatever order they arrive in). `true` when it was recorded.
    async fn set_choice(&self, subject: &SubjectId, choice: &Choice) -> Result<bool>;
    /// `subject`'s recorded choice, if any.
    async fn choice(&self, subject: &SubjectId) -> Result<Option<Choice>>;
}

/// A person's choice on marketing and on the sale or sharing of their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Opted out of marketing e-mail and of sale or sharing (CCPA) / direct marketing (GDPR
    /// art. 21); `false` withdraws an earlier opt-out.
    pub opted_out: bool,
    /// When the person made it (epoch ms).
    pub at: i64,
}

impl Choice {
    /// Whether `opted_in` (a sign-up form's consent, made at `at`) still stands against this
    /// recorded choice: the later one wins.
    pub fn marketing_allowed(recorded: Option<&Choice>, opted_in: bool, at: i64) -> bool {
        match recorded {
            Some(c) if c.at > at => !c.opted_out,
            _ => opted_in,
        }
    }
}

fn pk(subject: &SubjectId) -> String {
    format!("SUBJECT#{subject}")
}

fn loc_sk(l: &Location) -> String {
    format!("LOC#{}#{}", l.system.as_str(), l.locator)
}

/// The DynamoDB adapter (PrivacyTable).
#[derive(Debug, Clone)]
pub struct DynamoSubjectIndex {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoSubjectIndex {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl SubjectIndex for DynamoSubjectIndex {
    async fn record(&self, subject: &SubjectId, locations: &[Location], now_ms: i64) -> Result<()> {
        for l in locations {
            // Keeps the first sighting; a rewrite of the same place changes nothing else.
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(pk(subject)))
                .key("sk", s(loc_sk(l)))
                .update_expression(
                    "SET #sys = :sys, #loc = :loc, first_seen = if_not_exists(first_seen, :now)",
                )
                // Both are DynamoDB reserved words.
                .expression_attribute_names("#sys", "system")
                .expression_attribute_names("#loc", "locator")
                .expression_attribute_values(":sys", s(l.system.as_str()))
                .expression_attribute_values(":loc", s(&l.locator))
                .expression_attribute_values(":now", n(now_ms))
                .send()
                .await
                .map_err(|e| Error::aws("dynamodb", e))?;
        }
        Ok(())
    }

    async fn locations(&self, subject: &SubjectId) -> Result<Vec<Location>> {
        let items = crate::aws::dynamo::query_all(
            self.client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND begins_with(sk, :loc)")
                .expression_attribute_values(":pk", s(pk(subject)))
                .expression_attribute_values(":loc", s("LOC#")),
        )
        .await?;
        items
            .iter()
            .map(|i| {
                let system = get_s(i, "system")
                    .and_then(|x| System::parse(&x))
                    .ok_or_else(|| Error::Invalid("subject index item without a system".into()))?;
                let locator = get_s(i, "locator")
                    .ok_or_else(|| Error::Invalid("subject index item without a locator".into()))?;
                Ok(Location { system, locator })
            })
            .collect()
    }

    async fn forget(&self, subject: &SubjectId, location: &Location) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk(subject)))
            .key("sk", s(loc_sk(location)))
            .send()
            .await
            .map_err(|e| Error::aws("dynamodb", e))?;
        Ok(())
    }

    async fn tombstone(&self, subject: &SubjectId, t: &Tombstone) -> Result<()> {
        crate::aws::dynamo::put_once(
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(pk(subject)))
                .item("sk", s("TOMBSTONE"))
                .item("erased_at", n(t.erased_at))
                .item("request_id", s(&t.request_id))
                .condition_expression("attribute_not_exists(pk)"),
        )
        .await
    }

    async fn tombstoned(&self, subject: &SubjectId) -> Result<Option<Tombstone>> {
        let item =
            crate::aws::dynamo::get_item(&self.client, &self.table, pk(subject), Some("TOMBSTONE"))
                .await?;
        Ok(item.map(|i| Tombstone {
            erased_at: get_n(&i, "erased_at").unwrap_or(0),
            request_id: get_s(&i, "request_id").unwrap_or_default(),
        }))
    }

    async fn set_choice(&self, subject: &SubjectId, c: &Choice) -> Result<bool> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk(subject)))
            .item("sk", s("CHOICE"))
            .item("opted_out", AttributeValue::Bool(c.opted_out))
            .item("at", n(c.at))
            .condition_expression("attribute_not_exists(pk) OR #at < :at")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":at", n(c.at))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if crate::aws::dynamo::is_conditional_check_failed(&e) => Ok(false),
            Err(e) => Err(Error::aws("dynamodb", e)),
        }
    }

    async fn choice(&self, subject: &SubjectId) -> Result<Option<Choice>> {
        let item =
            crate::aws::dynamo::get_item(&self.client, &self.table, pk(subject), Some("CHOICE"))
                .await?;
        Ok(item.map(|i| Choice {
            opted_out: matches!(i.get("opted_out"), Some(AttributeValue::Bool(true))),
            at: get_n(&i, "at").unwrap_or(0),
        }))
    }
}

/// In memory (unit tests).
#[derive(Debug, Default)]
pub struct MemorySubjectIndex {
    locations: Mutex<BTreeMap<SubjectId, BTreeSet<Location>>>,
    tombstones: Mutex<BTreeMap<SubjectId, Tombstone>>,
    choices: Mutex<BTreeMap<SubjectId, Choice>>,
}

impl MemorySubjectIndex {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SubjectIndex for MemorySubjectIndex {
    async fn record(&self, subject: &SubjectId, locations: &[Location], _now: i64) -> Result<()> {
        let mut all = self.locations.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(subject.clone())
            .or_default()
            .extend(locations.iter().cloned());
        Ok(())
    }
    async fn locations(&self, subject: &SubjectId) -> Result<Vec<Location>> {
        let all = self.locations.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all
            .get(subject)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default())
    }
    async fn forget(&self, subject: &SubjectId, location: &Location) -> Result<()> {
        let mut all = self.locations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = all.get_mut(subject) {
            l.remove(location);
        }
        Ok(())
    }
    async fn tombstone(&self, subject: &SubjectId, t: &Tombstone) -> Result<()> {
        let mut all = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(subject.clone()).or_insert_with(|| t.clone());
        Ok(())
    }
    async fn tombstoned(&self, subject: &SubjectId) -> Result<Option<Tombstone>> {
        let all = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all.get(subject).cloned())
    }
    async fn set_choice(&self, subject: &SubjectId, c: &Choice) -> Result<bool> {
        let mut all = self.choices.lock().unwrap_or_else(|p| p.into_inner());
        if all.get(subject).is_some_and(|old| old.at >= c.at) {
            return Ok(false);
        }
        all.insert(subject.clone(), *c);
        Ok(true)
    }
    async fn choice(&self, subject: &SubjectId) -> Result<Option<Choice>> {
        let all = self.choices.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all.get(subject).copied())
    }
}

/// The subject key and index together: what a function that writes personal data needs.
#[derive(Clone)]
pub struct Subjects {
    pub key: SubjectKey,
    pub index: std::sync::Arc<dyn SubjectIndex>,
}

impl std::fmt::Debug for Subjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subjects")
    }
}

impl Subjects {
    /// The test key and an in-memory index.
    pub fn for_tests() -> Self {
        Self {
            key: SubjectKey::for_tests(),
            index: std::sync::Arc::new(MemorySubjectIndex::new()),
        }
    }

    /// The key from its secret and the index on the PrivacyTable.
    pub async fn connect(config: &SubjectsConfig, clients: &crate::aws::Clients) -> Result<Self> {
        Ok(Self {
            key: SubjectKey::from_secret(clients.secrets(), &config.key_secret_id).await?,
            index: std::sync::Arc::new(DynamoSubjectIndex::new(
                clients.dynamodb().clone(),
                &config.table,
            )),
        })
    }

    /// `email`'s subject, unless they were erased (then `Err` names the tombstone).
    pub async fn live(&self, email: &Email) -> Result<std::result::Result<SubjectId, Tombstone>> {
        let id = self.key.subject(email);
        Ok(match self.index.tombstoned(&id).await? {
            Some(t) => Err(t),
            None => Ok(id),
        })
    }
}

/// `PRIVACY_TABLE` and `PRIVACY_KEY_SECRET_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectsConfig {
    pub table: String,
    pub key_secret_id: String,
}

impl SubjectsConfig {
    pub fn from_env(
        env: &crate::config::Env,
    ) -> std::result::Result<Self, crate::config::ConfigError> {
        Ok(Self {
            table: env.required("PRIVACY_TABLE")?,
            key_secret_id: env.required("PRIVACY_KEY_SECRET_ID")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(s: &str) -> Email {
        Email::parse(s).unwrap()
    }

    #[test]
    fn the_subject_id_is_keyed_stable_and_not_the_plain_hash() {
        let k = SubjectKey::for_tests();
        let a = k.subject(&email("Ada@Example.com"));
        assert_eq!(a, k.subject(&email("ada@example.com")), "normalized first");
        assert_eq!(a.as_str().len(), 64);
        let plain = crate::ledger::payload_hash(b"ada@example.com");
        assert_ne!(a.as_str(), plain, "not reversible without the key");
        let other = SubjectKey::new(vec![7u8; 32]).unwrap();
        assert_ne!(a, other.subject(&email("ada@example.com")));
        assert!(SubjectKey::new(vec![1u8; 31]).is_err());
        assert_eq!(format!("{k:?}"), "SubjectKey([redacted])");
        assert!(SubjectId::try_from("AB".repeat(32)).is_err());
        assert!(SubjectId::try_from(a.to_string()).is_ok());
    }

    #[tokio::test]
    async fn the_memory_index_records_forgets_and_keeps_the_first_tombstone() {
        let idx = MemorySubjectIndex::new();
        let id = SubjectKey::for_tests().subject(&email("ada@example.com"));
        let lead = Location::new(System::Leads, "lead_1");
        idx.record(&id, &[lead.clone(), lead.clone()], 1)
            .await
            .unwrap();
        idx.record(&id, &[Location::new(System::Crm, "contact:x")], 2)
            .await
            .unwrap();
        assert_eq!(idx.locations(&id).await.unwrap().len(), 2);
        idx.forget(&id, &lead).await.unwrap();
        assert_eq!(idx.locations(&id).await.unwrap().len(), 1);
        assert!(idx.tombstoned(&id).await.unwrap().is_none());
        let first = Tombstone {
            erased_at: 5,
            request_id: "pr_1".into(),
        };
        idx.tombstone(&id, &first).await.unwrap();
        idx.tombstone(
            &id,
            &Tombstone {
                erased_at: 9,
                request_id: "pr_2".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(idx.tombstoned(&id).await.unwrap(), Some(first));
    }

    #[test]
    fn emails_are_found_under_email_keys_and_mentions_by_their_hash() {
        let event = serde_json::json!({
            "data": {"object": {
                "email": "Ada@Example.com",
                "customer_email": "ops@example.com",
                "billing_details": {"email": "not an address"},
                "lines": [{"receipt_email": "ada@example.com"}],
                "description": "from bob@example.com"
            }}
        });
        let found: Vec<String> = emails_in(&event)
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect();
        assert_eq!(found, vec!["ada@example.com", "ops@example.com"]);

        let key = SubjectKey::for_tests();
        let ada = key.subject(&email("ada@example.com"));
        assert!(key.mentions(r#"{"to":"ADA@example.com."}"#, &ada));
        assert!(key.mentions("x,<ada@example.com>;", &ada));
        assert!(!key.mentions(r#"{"to":"ada@example.org"}"#, &ada));
        assert!(!key.mentions("no address at all @ here", &ada));
    }

    #[tokio::test]
    async fn the_latest_choice_wins_whatever_order_it_arrives_in() {
        let idx = MemorySubjectIndex::new();
        let id = SubjectKey::for_tests().subject(&email("ada@example.com"));
        let out = Choice {
            opted_out: true,
            at: 20,
        };
        assert!(idx.set_choice(&id, &out).await.unwrap());
        let older = Choice {
            opted_out: false,
            at: 10,
        };
        assert!(!idx.set_choice(&id, &older).await.unwrap());
        assert_eq!(idx.choice(&id).await.unwrap(), Some(out));
        // A form's consent made before the opt-out loses; one made after wins.
        assert!(!Choice::marketing_allowed(Some(&out), true, 15));
        assert!(Choice::marketing_allowed(Some(&out), true, 25));
        assert!(Choice::marketing_allowed(None, true, 25));
        assert!(!Choice::marketing_allowed(None, false, 25));
    }
}
