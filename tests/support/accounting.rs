//! Event accounting: every event a sender got a 2xx for is accounted for — processed (and
//! where), or parked in a dead-letter queue — counted from the event archive and the stores;
//! every event refused (a bad signature) appears nowhere; and the duplicate invariants hold:
//! one license per subscription term, one invoice per customer and period, one lead per
//! person, one CRM account per customer, each event once in the sealed archive.
//!
//! Pure data in ([`Input`]: what was sent, what each event should leave behind), a [`Report`]
//! out, with [`Report::lost`], [`Report::duplicated`], [`Report::leaked`] and a `Display`.
//! It only reads (the stack's tables, bucket, queues and localstripe); it never changes
//! anything, so it can run at any point of a test (a message being handled is visible to it
//! only once its effects are written: run it after the queues drained, [`Report::undrained`]
//! says when they did not).
//!
//! # What is read
//! - the event archive (batch and sealed objects, [`blapi::archive::read_hour`]): an accepted
//!   event is archived before anything else happens to it, so it must be there;
//! - every dead-letter queue (each message is received and made visible again at once): the
//!   event it carries, by `source` and `id` (the events DLQ holds the intake's message, the
//!   others the archiver's or a function's);
//! - every table of the stack, scanned once: the idempotency ledger, leads, the CRM sink,
//!   licenses, billing, customer-sync's state;
//! - localstripe's invoices of each customer (when [`Input::localstripe`] is given).
//!
//! # How each effect is checked, and how directly
//! - [`Effect::Lead`] — direct: lead-enrichment's ledger entry
//!   `lead-enrichment:{source}:{id}` is COMPLETED and names the lead, whose record is in the
//!   leads table and in the CRM sink ([`blapi::leads::input::LeadId::for_event`] is the lead
//!   id of a person's first event; later events of the same person land on that lead).
//! - [`Effect::Usage`] — direct, per record: its item in the billing table, or its entry in
//!   usage-billing's refused list with the reason (a refusal is a verdict, so it counts as
//!   processed; the report lists refusals by reason).
//! - [`Effect::License`] — indirect: license-minting re-reads the subscription for every
//!   event and keeps no per-event record, so the check is that the subscription's current
//!   term has a license (ACTIVE; ISSUING counts as pending). Two events of one subscription
//!   are satisfied by the same license: a lost event whose sibling was processed cannot be
//!   told apart from a processed one.
//! - [`Effect::Account`] — indirect, for the same reason (customer-sync re-reads the customer
//!   and keeps only state): the CRM account of the customer exists and, when a subscription
//!   is named, customer-sync's state of the customer holds it.
//! - [`Effect::SubscriptionView`] — indirect: usage-billing's view of the subscription exists.
//! - [`Effect::ArchiveOnly`] — an event that is archived and handled with no observable effect
//!   (an unrouted type, or a route whose consumer acts on nothing stored, such as
//!   usage-billing's handling of a paid invoice without dunning): the archive and the empty
//!   queues are the only evidence.
//!
//! A refused event ([`Verdict::Refused`]) must be in no archive object, no dead-letter queue
//! and no ledger entry, and none of its effects may be found (for effects keyed by the
//! person or the subscription, give a refused event its own unique person or record ids, or
//! leave its effects empty).

use anyhow::{Context, Result, anyhow};
use aws_sdk_sqs::types::QueueAttributeName;
use blapi::archive::{self, Hour};
use blapi::aws::dynamo::{Item, item_to_json};
use blapi::storage::{ObjectStore, S3Store};
use blapi_infra::LocalStack;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// What the sender got back for an event (over all its deliveries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// At least one delivery was answered 2xx: the system owes it.
    Accepted,
    /// Every delivery was answered 4xx (a bad signature): it must appear nowhere.
    Refused,
    /// No answer or 5xx only: the system may or may not have it (reported, not judged).
    Unknown,
}

/// What an accepted event should leave behind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Effect {
    /// A lead for the person (portal sign-up, Stripe `customer.created` with an address).
    Lead { email: String },
    /// One usage record: stored, or refused with a reason.
    Usage {
        customer: String,
        subscription: String,
        record: String,
        /// `YYYY-MM` of the record's timestamp.
        period: String,
    },
    /// A license for the subscription's current term.
    License {
        customer: String,
        subscription: String,
    },
    /// The customer's account in the CRM; with the subscription in customer-sync's state
    /// when one is named.
    Account {
        customer: String,
        subscription: Option<String>,
    },
    /// Usage-billing's view of the subscription (usage is accepted against it).
    SubscriptionView {
        customer: String,
        subscription: String,
    },
    /// Archived, and handled with no observable effect.
    ArchiveOnly,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Lead { .. } => write!(f, "lead"),
            Effect::Usage { record, .. } => write!(f, "usage record {record}"),
            Effect::License { subscription, .. } => write!(f, "license of {subscription}"),
            Effect::Account {
                customer,
                subscription,
            } => match subscription {
                Some(s) => write!(f, "CRM account {customer} with {s}"),
                None => write!(f, "CRM account {customer}"),
            },
            Effect::SubscriptionView { subscription, .. } => {
                write!(f, "billing's view of {subscription}")
            }
            Effect::ArchiveOnly => write!(f, "archive only"),
        }
    }
}

/// One event the sender sent (all its deliveries together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// `stripe`, `portal`, `telemetry`.
    pub source: String,
    /// The event id (Stripe `evt_...`, or the `webhook-id`).
    pub id: String,
    /// The sender's label of the traffic (`purchase`, `usage`, `signup`, ...): the report
    /// groups by it.
    pub kind: String,
    pub event_type: String,
    pub verdict: Verdict,
    /// Deliveries answered 2xx (a sender's retries of the same event included).
    pub accepted_deliveries: u32,
    pub effects: Vec<Effect>,
}

/// What the accounting is given.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub sent: Vec<Sent>,
    /// `(customer, period)` pairs that must have exactly one invoice (after a billing run).
    pub invoices: Vec<(String, String)>,
    /// localstripe's base URL and API key: the invoices it holds are counted too.
    pub localstripe: Option<(String, String)>,
}

/// Whether an effect was found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Yes(String),
    /// Handled with a verdict instead of a record (a refused usage record: the reason).
    Refused(String),
    /// Started and not finished (a license still ISSUING, a ledger claim in progress).
    Pending(String),
    No(String),
}

/// An effect and what was found of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub effect: Effect,
    pub found: Found,
}

/// Where an event stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Accepted, archived and every effect found (or refused with a reason).
    Processed,
    /// Accepted and parked in these dead-letter queues (accounted for, for an operator).
    Dlq(Vec<String>),
    /// Accepted, archived, an effect started and not finished.
    Pending,
    /// Accepted and not accounted for: lost.
    Missing(String),
    /// Refused and nowhere: as it should be.
    Absent,
    /// Refused, yet found here.
    Leaked(String),
    /// No 2xx and no 4xx: whether it is in the system (`true`) or not.
    Unconfirmed { archived: bool },
}

/// One event's accounting.
#[derive(Debug, Clone)]
pub struct EventLine {
    pub sent: Sent,
    /// In the archive (batch or sealed object).
    pub archived: bool,
    /// Its lines in sealed objects (1 once its hour is sealed; 0 before).
    pub sealed_copies: usize,
    /// The dead-letter queues holding a message of it.
    pub dlq: Vec<String>,
    pub checks: Vec<Check>,
    pub status: Status,
}

/// A lost, duplicated or leaked thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is about (`license term`, `invoice`, `lead`, `event`, ...).
    pub what: String,
    /// Its key (`sub_x@1700000000000`, `cus_x 2026-12`, the event id, ...).
    pub key: String,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.what, self.key, self.detail)
    }
}

/// One duplicate invariant: how many groups were counted and which hold more than one.
#[derive(Debug, Clone, Default)]
pub struct Invariant {
    pub name: String,
    /// Groups counted (terms, customer+periods, people, customers, events).
    pub groups: usize,
    pub violations: Vec<Finding>,
    /// How the count was made.
    pub note: String,
}

/// A dead-letter queue's content.
#[derive(Debug, Clone, Default)]
pub struct DlqContent {
    pub messages: usize,
    /// Messages of sent events, by `source/id`.
    pub events: Vec<String>,
    /// Other messages (internal events, malformed bodies): the first few, redacted.
    pub others: Vec<String>,
}

/// What the archive holds.
#[derive(Debug, Clone, Default)]
pub struct ArchiveStats {
    pub hours: usize,
    pub objects: usize,
    /// Distinct events.
    pub events: usize,
    /// Copies dropped by readers (an event in two objects until its hour is sealed).
    pub unsealed_duplicates: usize,
    pub unreadable: Vec<String>,
}

/// The accounting's answer.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub events: Vec<EventLine>,
    pub invariants: Vec<Invariant>,
    /// Expected invoices not found: `(customer, period)`.
    pub missing_invoices: Vec<(String, String)>,
    pub dlq: BTreeMap<String, DlqContent>,
    /// Source queues still holding messages when the accounting read the stores.
    pub undrained: Vec<(String, u64)>,
    pub archive: ArchiveStats,
    /// Refused usage records by reason.
    pub usage_refusals: BTreeMap<String, usize>,
}

impl Report {
    /// Accepted events not accounted for, and expected invoices not found.
    pub fn lost(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .events
            .iter()
            .filter_map(|e| match &e.status {
                Status::Missing(why) => Some(Finding {
                    what: format!("{} event", e.sent.kind),
                    key: format!("{}/{}", e.sent.source, e.sent.id),
                    detail: why.clone(),
                }),
                _ => None,
            })
            .collect();
        out.extend(self.missing_invoices.iter().map(|(c, p)| Finding {
            what: "invoice".into(),
            key: format!("{c} {p}"),
            detail: "expected, not found in the billing table".into(),
        }));
        out
    }

    /// Every violation of a duplicate invariant.
    pub fn duplicated(&self) -> Vec<Finding> {
        self.invariants
            .iter()
            .flat_map(|i| i.violations.iter().cloned())
            .collect()
    }

    /// Refused events found anywhere.
    pub fn leaked(&self) -> Vec<Finding> {
        self.events
            .iter()
            .filter_map(|e| match &e.status {
                Status::Leaked(wher) => Some(Finding {
                    what: format!("refused {} event", e.sent.kind),
                    key: format!("{}/{}", e.sent.source, e.sent.id),
                    detail: wher.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Accepted events whose effects were started and not finished.
    pub fn pending(&self) -> Vec<&EventLine> {
        self.events
            .iter()
            .filter(|e| e.status == Status::Pending)
            .collect()
    }

    /// Nothing lost, duplicated, leaked or pending.
    pub fn is_clean(&self) -> bool {
        self.lost().is_empty()
            && self.duplicated().is_empty()
            && self.leaked().is_empty()
            && self.pending().is_empty()
    }

    /// Counts by status name: `processed`, `dlq`, `pending`, `missing`, `absent`, `leaked`,
    /// `unconfirmed`.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for e in &self.events {
            *m.entry(status_name(&e.status)).or_insert(0) += 1;
        }
        m
    }

    /// Counts by (kind, status name).
    pub fn counts_by_kind(&self) -> BTreeMap<(String, &'static str), usize> {
        let mut m = BTreeMap::new();
        for e in &self.events {
            *m.entry((e.sent.kind.clone(), status_name(&e.status)))
                .or_insert(0) += 1;
        }
        m
    }
}

fn status_name(s: &Status) -> &'static str {
    match s {
        Status::Processed => "processed",
        Status::Dlq(_) => "dlq",
        Status::Pending => "pending",
        Status::Missing(_) => "missing",
        Status::Absent => "absent",
        Status::Leaked(_) => "leaked",
        Status::Unconfirmed { .. } => "unconfirmed",
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let accepted = self
            .events
            .iter()
            .filter(|e| e.sent.verdict == Verdict::Accepted)
            .count();
        let refused = self
            .events
            .iter()
            .filter(|e| e.sent.verdict == Verdict::Refused)
            .count();
        let c = self.counts();
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        writeln!(
            f,
            "events: {accepted} accepted -> {} processed, {} in a DLQ, {} pending, {} MISSING; \
             {refused} refused -> {} absent, {} LEAKED; {} unconfirmed",
            get("processed"),
            get("dlq"),
            get("pending"),
            get("missing"),
            get("absent"),
            get("leaked"),
            get("unconfirmed"),
        )?;
        let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ((kind, status), n) in self.counts_by_kind() {
            kinds.entry(kind).or_default().push(format!("{status} {n}"));
        }
        for (kind, parts) in &kinds {
            writeln!(f, "  {kind:<16} {}", parts.join(", "))?;
        }
        if !self.usage_refusals.is_empty() {
            let parts: Vec<String> = self
                .usage_refusals
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            writeln!(f, "usage records refused (a verdict): {}", parts.join(", "))?;
        }
        let a = &self.archive;
        writeln!(
            f,
            "archive: {} events in {} objects over {} hour(s); {} unsealed copies dropped by readers; {} unreadable object(s)",
            a.events,
            a.objects,
            a.hours,
            a.unsealed_duplicates,
            a.unreadable.len()
        )?;
        writeln!(f, "invariants:")?;
        for i in &self.invariants {
            writeln!(
                f,
                "  {:<44} {:>6} groups, {} violation(s)  ({})",
                i.name,
                i.groups,
                i.violations.len(),
                i.note
            )?;
            for v in i.violations.iter().take(20) {
                writeln!(f, "    {v}")?;
            }
        }
        writeln!(f, "dead-letter queues:")?;
        let mut any = false;
        for (q, d) in &self.dlq {
            if d.messages == 0 {
                continue;
            }
            any = true;
            writeln!(
                f,
                "  {q}: {} message(s), {} of sent events{}",
                d.messages,
                d.events.len(),
                if d.others.is_empty() {
                    String::new()
                } else {
                    format!(", others e.g. {}", d.others.join(" | "))
                }
            )?;
        }
        if !any {
            writeln!(f, "  (all empty)")?;
        }
        if !self.undrained.is_empty() {
            let parts: Vec<String> = self
                .undrained
                .iter()
                .map(|(q, n)| format!("{q} {n}"))
                .collect();
            writeln!(
                f,
                "NOT DRAINED when read (effects may be pending): {}",
                parts.join(", ")
            )?;
        }
        for (title, list) in [
            ("LOST", self.lost()),
            ("DUPLICATED", self.duplicated()),
            ("LEAKED", self.leaked()),
        ] {
            if list.is_empty() {
                continue;
            }
            writeln!(f, "{title} ({}):", list.len())?;
            for x in list.iter().take(50) {
                writeln!(f, "  {x}")?;
            }
        }
        let pending = self.pending();
        if !pending.is_empty() {
            writeln!(f, "PENDING ({}):", pending.len())?;
            for e in pending.iter().take(20) {
                writeln!(f, "  {}/{} {}", e.sent.source, e.sent.id, e.sent.kind)?;
            }
        }
        Ok(())
    }
}

/// Reads everything and accounts for `input`'s events. See the module docs.
pub async fn account(stack: &LocalStack, input: &Input) -> Result<Report> {
    let clients = blapi::aws::Clients::new(&stack.sdk_config().await);
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(
        clients.s3().clone(),
        stack.physical("ArtifactsBucket"),
    ));
    let archive = read_archive(store.as_ref()).await?;
    let (dlq, dlq_of) = read_dlqs(stack, clients.sqs()).await?;
    let undrained = undrained(stack, clients.sqs()).await?;
    let stores = Stores::read(stack, clients.dynamodb()).await?;
    let stripe_invoices = match &input.localstripe {
        Some((url, key)) => {
            let mut customers: BTreeSet<String> =
                input.invoices.iter().map(|(c, _)| c.clone()).collect();
            customers.extend(stores.invoice_records.keys().map(|(c, _)| c.clone()));
            Some(localstripe_invoices(url, key, &customers).await?)
        }
        None => None,
    };

    let mut report = Report {
        dlq,
        undrained,
        archive: archive.stats.clone(),
        ..Report::default()
    };
    for r in stores.refused_usage.values() {
        *report.usage_refusals.entry(r.clone()).or_insert(0) += 1;
    }
    // Lead ids the ledger names per person (from the events' own claims).
    let mut leads_of_person: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for sent in &input.sent {
        let key = (sent.source.clone(), sent.id.clone());
        let archived = archive.present.contains(&key);
        let sealed_copies = archive.sealed_copies.get(&key).copied().unwrap_or(0);
        let dlq: Vec<String> = dlq_of.get(&key).cloned().unwrap_or_default();
        let checks: Vec<Check> = sent
            .effects
            .iter()
            .map(|e| Check {
                effect: e.clone(),
                found: stores.find(e, sent),
            })
            .collect();
        if sent.verdict == Verdict::Accepted {
            for c in &checks {
                if let (Effect::Lead { email }, Found::Yes(_)) = (&c.effect, &c.found)
                    && let Some(lead) = stores.ledger_lead(sent)
                {
                    leads_of_person
                        .entry(email.to_lowercase())
                        .or_default()
                        .insert(lead);
                }
            }
        }
        let status = match sent.verdict {
            Verdict::Accepted => {
                if !dlq.is_empty() {
                    Status::Dlq(dlq.clone())
                } else if !archived {
                    Status::Missing("not in the archive".into())
                } else if let Some(c) = checks.iter().find(|c| matches!(c.found, Found::No(_))) {
                    let why = match &c.found {
                        Found::No(why) => why.clone(),
                        _ => String::new(),
                    };
                    Status::Missing(format!("{}: {why}", c.effect))
                } else if checks.iter().any(|c| matches!(c.found, Found::Pending(_))) {
                    Status::Pending
                } else {
                    Status::Processed
                }
            }
            Verdict::Refused => {
                let mut places = Vec::new();
                if archived {
                    places.push("the archive".to_owned());
                }
                places.extend(dlq.iter().cloned());
                if stores.ledger.contains_key(&ledger_key(sent)) {
                    places.push("the idempotency ledger".into());
                }
                for c in &checks {
                    if let Found::Yes(w) | Found::Refused(w) | Found::Pending(w) = &c.found {
                        places.push(format!("{}: {w}", c.effect));
                    }
                }
                if places.is_empty() {
                    Status::Absent
                } else {
                    Status::Leaked(places.join("; "))
                }
            }
            Verdict::Unknown => Status::Unconfirmed { archived },
        };
        report.events.push(EventLine {
            sent: sent.clone(),
            archived,
            sealed_copies,
            dlq,
            checks,
            status,
        });
    }

    report.invariants.push(stores.licenses_per_term());
    let (invoices, missing) = stores.invoices_per_period(&input.invoices, stripe_invoices.as_ref());
    report.invariants.push(invoices);
    report.missing_invoices = missing;
    report
        .invariants
        .push(stores.leads_per_person(&leads_of_person));
    report.invariants.push(stores.accounts_per_customer());
    report.invariants.push(archive_once(&archive));
    Ok(report)
}

/// The ledger key lead-enrichment claims for an event.
fn ledger_key(sent: &Sent) -> String {
    format!("lead-enrichment:{}:{}", sent.source, sent.id)
}

// ------------------------------------------------------------------------------- archive

#[derive(Debug, Default)]
struct Archive {
    present: HashSet<(String, String)>,
    sealed_copies: HashMap<(String, String), usize>,
    stats: ArchiveStats,
}

async fn read_archive(store: &dyn ObjectStore) -> Result<Archive> {
    let mut hours = BTreeSet::new();
    let mut sealed_keys = Vec::new();
    for prefix in [archive::BATCH_PREFIX, archive::SEALED_PREFIX] {
        for key in store
            .list(prefix)
            .await
            .map_err(|e| anyhow!("listing {prefix}: {}", e.chain()))?
        {
            if let Some(h) = Hour::from_key(&key) {
                hours.insert(h);
            }
            if prefix == archive::SEALED_PREFIX {
                sealed_keys.push(key);
            }
        }
    }
    let mut out = Archive::default();
    out.stats.hours = hours.len();
    for hour in hours {
        let h = archive::read_hour(store, hour)
            .await
            .map_err(|e| anyhow!("reading archive hour {hour}: {}", e.chain()))?;
        out.stats.objects += h.objects.len();
        out.stats.unsealed_duplicates += h.duplicates;
        out.stats.unreadable.extend(h.unreadable);
        for e in h.events {
            out.present.insert((e.line.source, e.line.id));
        }
    }
    out.stats.events = out.present.len();
    for key in sealed_keys {
        let Some(bytes) = store
            .get(&key)
            .await
            .map_err(|e| anyhow!("reading {key}: {}", e.chain()))?
        else {
            continue;
        };
        let lines =
            archive::decode(&key, &bytes).map_err(|e| anyhow!("decoding {key}: {}", e.chain()))?;
        for l in lines {
            *out.sealed_copies.entry((l.source, l.id)).or_insert(0) += 1;
        }
    }
    Ok(out)
}

fn archive_once(a: &Archive) -> Invariant {
    let violations = a
        .sealed_copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((source, id), n)| Finding {
            what: "sealed archive line".into(),
            key: format!("{source}/{id}"),
            detail: format!("{n} lines"),
        })
        .collect();
    Invariant {
        name: "each event once in the sealed archive".into(),
        groups: a.sealed_copies.len(),
        violations,
        note: "lines per source/id over every sealed hour".into(),
    }
}

// ---------------------------------------------------------------------------------- queues

/// Every queue of the stack: `(logical id, url)`.
pub fn queues(stack: &LocalStack) -> Vec<(String, String)> {
    stack
        .resources
        .keys()
        .filter(|id| id.ends_with("Queue") || id.ends_with("DLQ"))
        .map(|id| (id.clone(), stack.physical(id).to_owned()))
        .collect()
}

/// A queue's messages: (visible, in flight, delayed).
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<(u64, u64, u64)> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .with_context(|| format!("attributes of {url}"))?;
    let get = |a: QueueAttributeName| -> u64 {
        out.attributes()
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    ))
}

async fn undrained(stack: &LocalStack, sqs: &aws_sdk_sqs::Client) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for (id, url) in queues(stack) {
        if id.ends_with("DLQ") {
            continue;
        }
        let (v, i, d) = depth(sqs, &url).await?;
        if v + i + d > 0 {
            out.push((id, v + i + d));
        }
    }
    Ok(out)
}

type DlqIndex = HashMap<(String, String), Vec<String>>;

/// Every DLQ's messages, read and made visible again.
async fn read_dlqs(
    stack: &LocalStack,
    sqs: &aws_sdk_sqs::Client,
) -> Result<(BTreeMap<String, DlqContent>, DlqIndex)> {
    let mut contents = BTreeMap::new();
    let mut index: DlqIndex = HashMap::new();
    for (id, url) in queues(stack) {
        if !id.ends_with("DLQ") {
            continue;
        }
        let mut content = DlqContent::default();
        let mut handles = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let out = sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .send()
                .await
                .with_context(|| format!("receiving from {id}"))?;
            if out.messages().is_empty() {
                break;
            }
            for m in out.messages() {
                handles.extend(m.receipt_handle().map(str::to_owned));
                if !seen.insert(m.message_id().unwrap_or_default().to_owned()) {
                    continue;
                }
                content.messages += 1;
                let body = m.body().unwrap_or_default();
                let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                match (v["source"].as_str(), v["id"].as_str()) {
                    (Some(source), Some(event)) if source != blapi::events::SOURCE => {
                        content.events.push(format!("{source}/{event}"));
                        index
                            .entry((source.to_owned(), event.to_owned()))
                            .or_default()
                            .push(id.clone());
                    }
                    _ => {
                        if content.others.len() < 3 {
                            content
                                .others
                                .push(blapi_ops::dlq::redact(body).chars().take(100).collect());
                        }
                    }
                }
            }
        }
        for h in handles {
            sqs.change_message_visibility()
                .queue_url(&url)
                .receipt_handle(h)
                .visibility_timeout(0)
                .send()
                .await
                .with_context(|| format!("releasing a message of {id}"))?;
        }
        contents.insert(id, content);
    }
    Ok((contents, index))
}

// ---------------------------------------------------------------------------------- stores

/// Every table item, scanned.
pub async fn scan(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .with_context(|| format!("scanning {table}"))?;
        out.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => return Ok(out),
        }
    }
}

#[derive(Debug, Clone)]
struct License {
    id: String,
    subscription: String,
    period_start: i64,
    quantity: i64,
    sku: String,
    status: String,
    /// Why a REVOKED license was revoked (`suspended`, `subscription_canceled`, ...).
    revoked_reason: String,
}

/// What the tables hold, indexed for the checks.
#[derive(Debug, Default)]
struct Stores {
    /// Ledger key -> (status, result).
    ledger: HashMap<String, (String, Option<String>)>,
    /// Lead id -> subject (`gsi1pk`).
    lead_profiles: HashMap<String, String>,
    crm_leads: HashSet<String>,
    /// Account record key -> the record's `external_id`.
    crm_accounts: HashMap<String, String>,
    licenses: Vec<License>,
    /// (customer, subscription, period, record id).
    usage: HashSet<(String, String, String, String)>,
    /// Refused record id -> reason.
    refused_usage: HashMap<String, String>,
    /// (customer, subscription).
    subscription_views: HashSet<(String, String)>,
    /// (customer, period) -> records (one by key).
    invoice_records: BTreeMap<(String, String), usize>,
    /// Customer -> subscriptions in customer-sync's state.
    customer_state: HashMap<String, BTreeSet<String>>,
}

fn text(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(v: &Value, k: &str) -> i64 {
    match &v[k] {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

impl Stores {
    async fn read(stack: &LocalStack, ddb: &aws_sdk_dynamodb::Client) -> Result<Self> {
        let mut s = Stores::default();
        let table = |logical: &str| stack.physical(logical).to_owned();
        for item in scan(ddb, &table("IdempotencyTable")).await? {
            let v = item_to_json(&item);
            s.ledger.insert(
                text(&v, "pk"),
                (text(&v, "status"), v["result"].as_str().map(str::to_owned)),
            );
        }
        for item in scan(ddb, &table("LeadsTable")).await? {
            let v = item_to_json(&item);
            if text(&v, "sk") == "PROFILE"
                && let Some(id) = text(&v, "pk").strip_prefix("LEAD#")
            {
                s.lead_profiles.insert(id.to_owned(), text(&v, "gsi1pk"));
            }
        }
        for item in scan(ddb, &table("CrmTable")).await? {
            let v = item_to_json(&item);
            let pk = text(&v, "pk");
            if v.get("record").is_none() {
                continue;
            }
            if let Some(id) = pk.strip_prefix("LEAD#") {
                s.crm_leads.insert(id.to_owned());
            } else if pk.starts_with("ACCOUNT#") {
                let external = text(&v["record"], "external_id");
                s.crm_accounts.insert(pk, external);
            }
        }
        for item in scan(ddb, &table("LicensesTable")).await? {
            let v = item_to_json(&item);
            if !text(&v, "sk").starts_with("LICENSE#") || !text(&v, "pk").starts_with("CUSTOMER#") {
                continue;
            }
            s.licenses.push(License {
                id: text(&v, "license_id"),
                subscription: text(&v, "subscription_id"),
                period_start: number(&v, "period_start"),
                quantity: number(&v, "quantity"),
                sku: text(&v, "sku"),
                status: text(&v, "status"),
                revoked_reason: text(&v, "revoked_reason"),
            });
        }
        for item in scan(ddb, &table("BillingTable")).await? {
            let v = item_to_json(&item);
            let (pk, sk) = (text(&v, "pk"), text(&v, "sk"));
            if let Some(rest) = pk.strip_prefix("USAGE#") {
                let (customer, subscription) = rest.split_once('#').unwrap_or((rest, ""));
                if let Some((period, id)) = sk.strip_prefix("U#").and_then(|r| r.split_once('#')) {
                    s.usage.insert((
                        customer.to_owned(),
                        subscription.to_owned(),
                        period.to_owned(),
                        id.to_owned(),
                    ));
                }
            } else if pk.starts_with("REJECTED#") {
                // `{list}#{reason}#{record id}`
                let mut parts = sk.splitn(3, '#');
                let (_, reason, id) = (parts.next(), parts.next(), parts.next());
                if let (Some(reason), Some(id)) = (reason, id) {
                    s.refused_usage.insert(id.to_owned(), reason.to_owned());
                }
            } else if let Some(customer) = pk.strip_prefix("CUST#") {
                if let Some(sub) = sk.strip_prefix("SUB#") {
                    s.subscription_views
                        .insert((customer.to_owned(), sub.to_owned()));
                } else if let Some(period) = sk.strip_prefix("INVOICE#") {
                    *s.invoice_records
                        .entry((customer.to_owned(), period.to_owned()))
                        .or_insert(0) += 1;
                }
            }
        }
        for item in scan(ddb, &table("CustomersTable")).await? {
            let v = item_to_json(&item);
            if text(&v, "sk") != "STATE" {
                continue;
            }
            let Some(customer) = text(&v, "pk").strip_prefix("CUSTOMER#").map(str::to_owned) else {
                continue;
            };
            let subs = v["doc"]["subscriptions"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            s.customer_state.insert(customer, subs);
        }
        Ok(s)
    }

    /// The lead id lead-enrichment's ledger stored for `sent`, once completed.
    fn ledger_lead(&self, sent: &Sent) -> Option<String> {
        match self.ledger.get(&ledger_key(sent)) {
            Some((status, Some(lead))) if status == "COMPLETED" => Some(lead.clone()),
            _ => None,
        }
    }

    fn find(&self, effect: &Effect, sent: &Sent) -> Found {
        match effect {
            Effect::Lead { .. } => match self.ledger.get(&ledger_key(sent)) {
                None => Found::No("no ledger entry".into()),
                Some((status, _)) if status != "COMPLETED" => {
                    Found::Pending(format!("ledger entry {status}"))
                }
                Some((_, None)) => Found::Yes("handled, no lead written (erased person)".into()),
                Some((_, Some(lead))) => {
                    match (
                        self.lead_profiles.contains_key(lead),
                        self.crm_leads.contains(lead),
                    ) {
                        (true, true) => Found::Yes(format!("lead {lead}")),
                        (false, _) => Found::No(format!("lead {lead} has no record")),
                        (true, false) => Found::No(format!("lead {lead} is not in the CRM")),
                    }
                }
            },
            Effect::Usage {
                customer,
                subscription,
                record,
                period,
            } => {
                let key = (
                    customer.clone(),
                    subscription.clone(),
                    period.clone(),
                    record.clone(),
                );
                if self.usage.contains(&key) {
                    Found::Yes("usage record".into())
                } else if let Some(reason) = self.refused_usage.get(record) {
                    Found::Refused(reason.clone())
                } else {
                    Found::No("neither stored nor refused".into())
                }
            }
            Effect::License { subscription, .. } => {
                let mine: Vec<&License> = self
                    .licenses
                    .iter()
                    .filter(|l| &l.subscription == subscription)
                    .collect();
                if let Some(l) = mine.iter().find(|l| l.status == "ACTIVE") {
                    Found::Yes(format!("license {} ACTIVE", l.id))
                } else if let Some(l) = mine.iter().find(|l| l.status == "ISSUING") {
                    Found::Pending(format!("license {} ISSUING", l.id))
                } else if let Some(l) = mine.first() {
                    Found::Yes(format!("license {} {}", l.id, l.status))
                } else {
                    Found::No("no license".into())
                }
            }
            Effect::Account {
                customer,
                subscription,
            } => {
                if !self
                    .crm_accounts
                    .contains_key(&format!("ACCOUNT#{customer}"))
                {
                    return Found::No("no CRM account".into());
                }
                match subscription {
                    None => Found::Yes("CRM account".into()),
                    Some(sub) => match self.customer_state.get(customer) {
                        Some(subs) if subs.contains(sub) => {
                            Found::Yes("CRM account, subscription in its state".into())
                        }
                        _ => Found::No(format!("customer-sync's state lacks {sub}")),
                    },
                }
            }
            Effect::SubscriptionView {
                customer,
                subscription,
            } => {
                if self
                    .subscription_views
                    .contains(&(customer.clone(), subscription.clone()))
                {
                    Found::Yes("billing's subscription view".into())
                } else {
                    Found::No("no subscription view in billing".into())
                }
            }
            Effect::ArchiveOnly => Found::Yes("archived".into()),
        }
    }

    fn licenses_per_term(&self) -> Invariant {
        let mut terms: BTreeMap<(String, i64), Vec<&License>> = BTreeMap::new();
        for l in &self.licenses {
            terms
                .entry((l.subscription.clone(), l.period_start))
                .or_default()
                .push(l);
        }
        let mut violations = Vec::new();
        for ((sub, start), ls) in &terms {
            let live = ls
                .iter()
                .filter(|l| matches!(l.status.as_str(), "ACTIVE" | "ISSUING"))
                .count();
            // A license revoked for a suspension is followed, on reinstatement, by a fresh
            // one of the same seats and SKU (by design); any other repeat is a duplicate.
            let counted: Vec<&&License> = ls
                .iter()
                .filter(|l| !(l.status == "REVOKED" && l.revoked_reason == "suspended"))
                .collect();
            let same: BTreeSet<(i64, &str)> = counted
                .iter()
                .map(|l| (l.quantity, l.sku.as_str()))
                .collect();
            if live > 1 || same.len() < counted.len() {
                violations.push(Finding {
                    what: "license term".into(),
                    key: format!("{sub}@{start}"),
                    detail: ls
                        .iter()
                        .map(|l| {
                            format!(
                                "{} {}{} {}x{}",
                                l.id,
                                l.status,
                                if l.revoked_reason.is_empty() {
                                    String::new()
                                } else {
                                    format!(" ({})", l.revoked_reason)
                                },
                                l.quantity,
                                l.sku
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Invariant {
            name: "one license per subscription term".into(),
            groups: terms.len(),
            violations,
            note: "licenses table: at most one ACTIVE/ISSUING per term, and no two of a term for the same seats and SKU (but one revoked for a suspension and its reinstatement)".into(),
        }
    }

    fn invoices_per_period(
        &self,
        expected: &[(String, String)],
        stripe: Option<&HashMap<String, Vec<String>>>,
    ) -> (Invariant, Vec<(String, String)>) {
        let mut keys: BTreeSet<(String, String)> = self.invoice_records.keys().cloned().collect();
        keys.extend(expected.iter().cloned());
        let mut violations = Vec::new();
        for (customer, period) in &keys {
            let records = self
                .invoice_records
                .get(&(customer.clone(), period.clone()))
                .copied()
                .unwrap_or(0);
            let reference = format!("{customer}:{period}");
            let in_stripe = stripe.map(|m| {
                m.get(customer)
                    .map(|ds| ds.iter().filter(|d| d.contains(&reference)).count())
                    .unwrap_or(0)
            });
            if records > 1 || in_stripe.is_some_and(|n| n > 1) {
                violations.push(Finding {
                    what: "invoice".into(),
                    key: format!("{customer} {period}"),
                    detail: format!(
                        "{records} billing record(s), {} Stripe invoice(s)",
                        in_stripe.map_or("?".into(), |n| n.to_string())
                    ),
                });
            }
        }
        let missing = expected
            .iter()
            .filter(|k| !self.invoice_records.contains_key(*k))
            .cloned()
            .collect();
        (
            Invariant {
                name: "one invoice per customer and period".into(),
                groups: keys.len(),
                violations,
                note: if stripe.is_some() {
                    "billing table records + localstripe invoices whose description names customer:period".into()
                } else {
                    "billing table records (localstripe not read)".into()
                },
            },
            missing,
        )
    }

    fn leads_per_person(&self, by_ledger: &BTreeMap<String, BTreeSet<String>>) -> Invariant {
        let mut by_subject: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (lead, subject) in &self.lead_profiles {
            by_subject
                .entry(subject.as_str())
                .or_default()
                .push(lead.as_str());
        }
        let mut violations: Vec<Finding> = by_subject
            .iter()
            .filter(|(_, leads)| leads.len() > 1)
            .map(|(subject, leads)| Finding {
                what: "lead".into(),
                key: subject.chars().take(20).collect(),
                detail: format!("{} lead records: {}", leads.len(), leads.join(", ")),
            })
            .collect();
        for (i, (_, leads)) in by_ledger.iter().enumerate() {
            if leads.len() > 1 {
                violations.push(Finding {
                    what: "lead".into(),
                    key: format!("person #{i} of the input"),
                    detail: format!(
                        "their events were handled into {} leads: {}",
                        leads.len(),
                        leads.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        for lead in &self.crm_leads {
            if !self.lead_profiles.contains_key(lead) {
                violations.push(Finding {
                    what: "CRM lead".into(),
                    key: lead.clone(),
                    detail: "in the CRM without a lead record".into(),
                });
            }
        }
        Invariant {
            name: "one lead per person".into(),
            groups: by_subject.len(),
            violations,
            note: "lead records per keyed subject; lead ids per input address from the ledger; CRM leads without a record".into(),
        }
    }

    fn accounts_per_customer(&self) -> Invariant {
        let mut by_customer: BTreeMap<&str, usize> = BTreeMap::new();
        for external in self.crm_accounts.values() {
            *by_customer.entry(external.as_str()).or_insert(0) += 1;
        }
        let violations = by_customer
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(c, n)| Finding {
                what: "CRM account".into(),
                key: (*c).to_owned(),
                detail: format!("{n} account records"),
            })
            .collect();
        Invariant {
            name: "one CRM account per customer".into(),
            groups: by_customer.len(),
            violations,
            note: "CRM sink account records by the Stripe customer they name (keyed by it, so this also checks the key and the record agree)".into(),
        }
    }
}

/// localstripe's invoice descriptions per customer.
async fn localstripe_invoices(
    url: &str,
    key: &str,
    customers: &BTreeSet<String>,
) -> Result<HashMap<String, Vec<String>>> {
    use futures::StreamExt;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    let url = url.trim_end_matches('/').to_owned();
    let results: Vec<Result<(String, Vec<String>)>> =
        futures::stream::iter(customers.iter().cloned())
            .map(|customer| {
                let http = http.clone();
                let url = url.clone();
                async move {
                    let list: Value = http
                        .get(format!("{url}/v1/invoices"))
                        .basic_auth(key, Some(""))
                        .query(&[("customer", customer.as_str()), ("limit", "100")])
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    let descriptions = list["data"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|i| i["description"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok((customer, descriptions))
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    results.into_iter().collect()
}
