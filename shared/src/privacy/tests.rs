//! The service's rules on in-memory ports: a fake connector per system (with a failure
//! switch), the memory index, requests store, object store and queue. The real connectors
//! run against the local stack in privacy-requests' tests.

use super::connectors::{Connector, CrmConnector, ObjectsConnector, Outcome, Sweep};
use super::deadline::Jurisdiction;
use super::request::{RequestKind, RequestStatus};
use super::service::{Ports, PrivacyService, Settings, Submission};
use super::store::MemoryRequests;
use crate::crm::{CrmLead, CrmObject, CrmPort, CrmRecord, MemoryCrm};
use crate::error::{Error, Result};
use crate::queue::MemoryQueue;
use crate::storage::{MemoryStore, ObjectStore};
use crate::subjects::{Location, SubjectId, Subjects, System};
use crate::telemetry::Tally;
use crate::values::Email;
use async_trait::async_trait;
use chrono::NaiveDate;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A system holding records by locator; `keep` locators are kept with a basis.
struct Fake {
    system: System,
    data: Mutex<BTreeMap<String, Value>>,
    keep: Vec<String>,
    down: AtomicBool,
    erase_calls: AtomicUsize,
}

impl Fake {
    fn new(system: System, data: &[(&str, Value)], keep: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            system,
            data: Mutex::new(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            ),
            keep: keep.iter().map(|k| (*k).to_owned()).collect(),
            down: AtomicBool::new(false),
            erase_calls: AtomicUsize::new(0),
        })
    }
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::dependency("fake", true, "down (simulated)"));
        }
        Ok(())
    }
    fn len(&self) -> usize {
        self.data.lock().unwrap().len()
    }
}

#[async_trait]
impl Connector for Fake {
    fn system(&self) -> System {
        self.system
    }
    async fn export(&self, _s: &SubjectId, locator: &str) -> Result<Option<Value>> {
        self.check()?;
        Ok(self.data.lock().unwrap().get(locator).cloned())
    }
    async fn erase(&self, _s: &SubjectId, locator: &str) -> Result<Vec<Outcome>> {
        self.check()?;
        self.erase_calls.fetch_add(1, Ordering::SeqCst);
        if self.keep.iter().any(|k| k == locator) {
            return Ok(vec![Outcome::Kept {
                detail: format!("{locator} kept"),
                basis: "tax law".into(),
            }]);
        }
        Ok(vec![match self.data.lock().unwrap().remove(locator) {
            Some(_) => Outcome::Erased(locator.to_owned()),
            None => Outcome::NothingThere(locator.to_owned()),
        }])
    }
}

struct FakeSweep(Mutex<Vec<String>>, crate::subjects::SubjectKey);

#[async_trait]
impl Sweep for FakeSweep {
    fn system(&self) -> System {
        System::Queues
    }
    async fn export(&self, s: &SubjectId) -> Result<Vec<Value>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|b| self.1.mentions(b, s))
            .map(|b| json!(b))
            .collect())
    }
    async fn erase(&self, s: &SubjectId) -> Result<Vec<Outcome>> {
        let mut all = self.0.lock().unwrap();
        let before = all.len();
        all.retain(|b| !self.1.mentions(b, s));
        let n = before - all.len();
        Ok(if n == 0 {
            vec![]
        } else {
            vec![Outcome::Erased(format!("{n} message(s)"))]
        })
    }
}

struct World {
    service: PrivacyService,
    subjects: Subjects,
    leads: Arc<Fake>,
    billing: Arc<Fake>,
    files: Arc<MemoryStore>,
    crm: Arc<MemoryCrm>,
    queue: Arc<MemoryQueue>,
    sweep: Arc<FakeSweep>,
}

const ADA: &str = "ada@example.com";
const NOW: i64 = 1_772_000_000_000;

fn now() -> i64 {
    NOW
}

fn ada() -> Email {
    Email::parse(ADA).unwrap()
}

async fn world() -> World {
    let subjects = Subjects::for_tests();
    let id = subjects.key.subject(&ada());
    let leads = Fake::new(
        System::Leads,
        &[("ld_1", json!({"email": ADA, "name": "Ada"}))],
        &[],
    );
    let billing = Fake::new(
        System::Billing,
        &[("cus_1", json!({"invoices": 2}))],
        &["cus_1"],
    );
    let files = Arc::new(MemoryStore::new());
    files
        .put(
            "raw/portal/e1.json",
            json!({"email": ADA}).to_string().into_bytes(),
            "application/json",
        )
        .await
        .unwrap();
    files
        .put(
            "raw/portal/other.json",
            json!({"email": "bob@example.com"}).to_string().into_bytes(),
            "application/json",
        )
        .await
        .unwrap();
    let crm = Arc::new(MemoryCrm::new());
    crm.upsert(&CrmRecord::Lead(CrmLead {
        lead_id: "ld_1".into(),
        ..CrmLead::default()
    }))
    .await
    .unwrap();
    subjects
        .index
        .record(
            &id,
            &[
                Location::new(System::Leads, "ld_1"),
                Location::new(System::Crm, "lead:ld_1"),
                Location::new(System::Billing, "cus_1"),
                Location::new(System::Archive, "raw/portal/e1.json"),
            ],
            1,
        )
        .await
        .unwrap();
    let sweep = Arc::new(FakeSweep(
        Mutex::new(vec![
            format!(r#"{{"to":"{ADA}"}}"#),
            r#"{"to":"bob@example.com"}"#.to_owned(),
        ]),
        subjects.key.clone(),
    ));
    let queue = Arc::new(MemoryQueue::new());
    let ports = Ports {
        requests: Arc::new(MemoryRequests::new()),
        subjects: subjects.clone(),
        connectors: vec![
            leads.clone(),
            billing.clone(),
            Arc::new(CrmConnector(crm.clone())),
            Arc::new(ObjectsConnector::archive(files.clone())),
            Arc::new(ObjectsConnector::exports(files.clone())),
        ],
        sweeps: vec![sweep.clone()],
        files: files.clone(),
        queue: queue.clone(),
        clock: now,
    };
    World {
        service: PrivacyService::new(
            ports,
            Settings {
                notifications_queue_url: "q/notify".into(),
                link_ttl: std::time::Duration::from_secs(3600),
            },
        ),
        subjects,
        leads,
        billing,
        files,
        crm,
        queue,
        sweep,
    }
}

fn submission(id: &str, kind: RequestKind, email: &str) -> Submission {
    Submission {
        id: id.into(),
        kind,
        jurisdiction: Jurisdiction::Gdpr,
        email: Email::parse(email).unwrap(),
        received: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
        at_ms: NOW,
        opted_out: None,
    }
}

fn tally() -> Tally {
    Tally::new("blapi", "privacy-requests")
}

#[tokio::test]
async fn erasure_erases_every_place_keeps_what_the_law_requires_and_tombstones() {
    let w = world().await;
    let t = tally();
    let r = w
        .service
        .submit(submission("pr_1", RequestKind::Erasure, ADA), &t)
        .await
        .unwrap();
    assert_eq!(
        r.status,
        RequestStatus::CompletedWithExceptions,
        "{:#?}",
        r.audit
    );
    let kept: Vec<_> = r.audit.iter().filter(|e| e.action == "kept").collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].system, Some(System::Billing));
    assert_eq!(kept[0].basis.as_deref(), Some("tax law"));
    let mut erased: Vec<_> = r
        .audit
        .iter()
        .filter(|e| e.action == "erased")
        .map(|e| e.system.unwrap())
        .collect();
    erased.sort();
    assert_eq!(
        erased,
        vec![System::Leads, System::Crm, System::Archive, System::Queues]
    );
    // Gone: the lead, the CRM lead, the archived event, the queued message; bob untouched.
    assert_eq!(w.leads.len(), 0);
    assert!(
        w.crm
            .fetch(CrmObject::Lead, "ld_1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(w.files.keys(), vec!["raw/portal/other.json"]);
    assert_eq!(w.sweep.0.lock().unwrap().len(), 1);
    // Kept data stays findable; erased places leave the index; the person stays erased.
    let id = w.subjects.key.subject(&ada());
    assert_eq!(
        w.subjects.index.locations(&id).await.unwrap(),
        vec![Location::new(System::Billing, "cus_1")]
    );
    assert_eq!(
        w.subjects
            .index
            .tombstoned(&id)
            .await
            .unwrap()
            .unwrap()
            .request_id,
        "pr_1"
    );
    assert!(!r.audit.iter().any(|e| e.detail.contains(ADA)));
    // Not e-mailed: after the tombstone no address is written anywhere (no Stripe customer
    // was kept to reach her through); the audit trail says so, the portal shows the outcome.
    assert!(w.queue.sent("q/notify").is_empty());
    assert!(
        r.audit
            .iter()
            .any(|e| e.action == "notice" && e.detail.contains("after an erasure"))
    );
    assert_eq!(t.get("PrivacyRequestsCompleted"), Some(1.0));
}

#[tokio::test]
async fn an_unknown_person_completes_with_nothing_found_and_is_audited() {
    let w = world().await;
    let r = w
        .service
        .submit(
            submission("pr_2", RequestKind::Erasure, "nobody@example.com"),
            &tally(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, RequestStatus::Completed);
    assert!(
        r.audit.iter().any(|e| e.detail == "nothing indexed"),
        "{:#?}",
        r.audit
    );
    assert_eq!(w.leads.len(), 1, "someone else's data is untouched");
    let a = w
        .service
        .submit(
            submission("pr_3", RequestKind::Access, "nobody@example.com"),
            &tally(),
        )
        .await
        .unwrap();
    assert!(a.audit.iter().any(|e| e.detail == "nothing found"));
}

#[tokio::test]
async fn a_request_repeated_while_open_is_the_same_request() {
    let w = world().await;
    w.leads.down.store(true, Ordering::SeqCst);
    let t = tally();
    assert!(
        w.service
            .submit(submission("pr_a", RequestKind::Erasure, ADA), &t)
            .await
            .is_err()
    );
    // Another submission (another event id) while the first is open: the same request.
    assert!(
        w.service
            .submit(submission("pr_b", RequestKind::Erasure, ADA), &t)
            .await
            .is_err()
    );
    assert!(
        w.service
            .ports()
            .requests
            .get("pr_b")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(t.get("PrivacyRequestsRepeated"), Some(1.0));
    w.leads.down.store(false, Ordering::SeqCst);
    let r = w
        .service
        .submit(submission("pr_b", RequestKind::Erasure, ADA), &t)
        .await
        .unwrap();
    assert_eq!(r.id, "pr_a");
    assert!(r.status.is_closed());
    // Redelivered after it closed: returned as it stands, nothing runs again.
    let calls = w.billing.erase_calls.load(Ordering::SeqCst);
    let again = w
        .service
        .submit(submission("pr_a", RequestKind::Erasure, ADA), &t)
        .await
        .unwrap();
    assert_eq!(again, r);
    assert_eq!(w.billing.erase_calls.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn a_connector_failing_midway_leaves_the_request_in_progress_and_it_resumes() {
    let w = world().await;
    w.billing.down.store(true, Ordering::SeqCst);
    let t = tally();
    let err = w
        .service
        .submit(submission("pr_f", RequestKind::Erasure, ADA), &t)
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    let (r, _) = w
        .service
        .ports()
        .requests
        .get("pr_f")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, RequestStatus::InProgress);
    assert!(
        r.audit
            .iter()
            .any(|e| e.action == "failed" && e.detail.contains("fake unavailable"))
    );
    // What ran before the failure is done and recorded; the rest waits.
    assert!(r.done.contains("tombstone"));
    assert!(r.done.contains("leads:ld_1"));
    assert!(!r.done.contains("billing:cus_1"));
    assert_eq!(w.leads.len(), 0);
    assert!(
        w.queue.sent("q/notify").is_empty(),
        "never reported complete"
    );
    // The daily sweep resumes it after the last step done.
    w.billing.down.store(false, Ordering::SeqCst);
    let report = w
        .service
        .sweep(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(), &t)
        .await
        .unwrap();
    assert_eq!((report.open, report.completed, report.failed), (1, 1, 0));
    let (r, _) = w
        .service
        .ports()
        .requests
        .get("pr_f")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, RequestStatus::CompletedWithExceptions);
    assert_eq!(
        w.leads.erase_calls.load(Ordering::SeqCst),
        1,
        "not repeated"
    );
    assert_eq!(w.billing.erase_calls.load(Ordering::SeqCst), 1);
    assert_eq!(w.files.keys(), vec!["raw/portal/other.json"]);
}

#[tokio::test]
async fn access_writes_one_bundle_with_a_section_per_system_and_a_link() {
    let w = world().await;
    let r = w
        .service
        .submit(submission("pr_x", RequestKind::Access, ADA), &tally())
        .await
        .unwrap();
    assert_eq!(r.status, RequestStatus::Completed);
    let key = r.bundle_key.clone().unwrap();
    assert_eq!(key, "privacy/exports/pr_x.json");
    let bundle: Value = serde_json::from_slice(&w.files.object(&key).unwrap()).unwrap();
    let systems = bundle["systems"].as_object().unwrap();
    for s in ["leads", "billing", "crm", "archive", "queues"] {
        assert!(systems.contains_key(s), "{s} missing: {bundle:#}");
    }
    assert_eq!(bundle["systems"]["leads"][0]["data"]["email"], ADA);
    assert_eq!(bundle["systems"]["queues"].as_array().unwrap().len(), 1);
    // Nothing was erased; the link is fresh on each status read.
    assert_eq!(w.leads.len(), 1);
    let status = w.service.status("pr_x").await.unwrap();
    assert!(
        status["link"]
            .as_str()
            .unwrap()
            .contains("privacy/exports/pr_x.json")
    );
    assert_eq!(status["due"], "2026-04-01");
    // She is told, at the address her request came with; the bundle is named by its key (the
    // notifications function signs a fresh link when it sends).
    let sent = w.queue.sent("q/notify");
    assert_eq!(sent.len(), 1);
    let note: crate::notice::Notification = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(
        note.known_kind().unwrap(),
        crate::notice::Kind::PrivacyCompleted
    );
    assert_eq!(
        (
            note.id.as_str(),
            note.to.as_deref(),
            note.customer.as_deref()
        ),
        ("privacy:pr_x:closed", Some(ADA), None)
    );
    assert_eq!(note.data["bundle_key"], "privacy/exports/pr_x.json");
    assert_eq!(note.data["request_kind"], "access");
    assert!(
        !sent[0].contains("memory://"),
        "no link in the message: {}",
        sent[0]
    );
    // The bundle is the person's data too: a later erasure takes it.
    let e = w
        .service
        .submit(submission("pr_y", RequestKind::Erasure, ADA), &tally())
        .await
        .unwrap();
    assert!(w.files.object(&key).is_none(), "{:#?}", e.audit);
    assert!(
        e.audit
            .iter()
            .any(|a| a.system == Some(System::Exports) && a.action == "erased")
    );
}

#[tokio::test]
async fn opt_out_is_recorded_written_to_the_crm_and_the_latest_choice_wins() {
    let w = world().await;
    let id = w.subjects.key.subject(&ada());
    let mut out = submission("pr_o1", RequestKind::OptOut, ADA);
    out.at_ms = NOW;
    let r = w.service.submit(out, &tally()).await.unwrap();
    assert_eq!(r.status, RequestStatus::Completed);
    assert_eq!(w.crm.opted_out(CrmObject::Lead, "ld_1"), Some(true));
    assert!(
        w.subjects
            .index
            .choice(&id)
            .await
            .unwrap()
            .unwrap()
            .opted_out
    );
    // An older withdrawal arriving late does not undo it.
    let mut late = submission("pr_o0", RequestKind::OptOut, ADA);
    late.at_ms = NOW - 1000;
    late.opted_out = Some(false);
    w.service.submit(late, &tally()).await.unwrap();
    assert_eq!(w.crm.opted_out(CrmObject::Lead, "ld_1"), Some(true));
    // A later withdrawal does.
    let mut back = submission("pr_o2", RequestKind::OptOut, ADA);
    back.at_ms = NOW + 1000;
    back.opted_out = Some(false);
    w.service.submit(back, &tally()).await.unwrap();
    assert_eq!(w.crm.opted_out(CrmObject::Lead, "ld_1"), Some(false));
    assert!(
        !w.subjects
            .index
            .choice(&id)
            .await
            .unwrap()
            .unwrap()
            .opted_out
    );
}

#[tokio::test]
async fn the_daily_sweep_warns_of_near_and_past_deadlines_every_day_until_closed() {
    let w = world().await;
    w.leads.down.store(true, Ordering::SeqCst);
    let t = tally();
    let _ = w
        .service
        .submit(submission("pr_d", RequestKind::Erasure, ADA), &t)
        .await;
    let day = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
    // Received 1 March (GDPR): due 1 April.
    let quiet = w.service.sweep(day(3, 10), &t).await.unwrap();
    assert!(quiet.due_soon.is_empty() && quiet.overdue.is_empty());
    let soon = w.service.sweep(day(3, 28), &t).await.unwrap();
    assert_eq!(soon.due_soon, vec!["pr_d"]);
    let late = w.service.sweep(day(4, 2), &t).await.unwrap();
    assert_eq!(late.overdue, vec!["pr_d"]);
    let sent: Vec<Value> = w
        .queue
        .sent("q/notify")
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        (&sent[0]["type"], &sent[0]["urgency"], &sent[1]["urgency"]),
        (
            &json!("privacy.request.deadline"),
            &json!("due_soon"),
            &json!("overdue")
        )
    );
    assert_eq!(sent[1]["id"], "privacy:pr_d:deadline:2026-04-02");
    let sent: Vec<String> = sent.iter().map(Value::to_string).collect();
    assert!(sent.iter().all(|m| !m.contains(ADA)));
    // Once closed, no more warnings.
    w.leads.down.store(false, Ordering::SeqCst);
    let closed = w.service.sweep(day(4, 3), &t).await.unwrap();
    assert_eq!(closed.completed, 1);
    assert!(closed.overdue.is_empty());
    let after = w.service.sweep(day(4, 4), &t).await.unwrap();
    assert_eq!(after.open, 0);
}

#[tokio::test]
async fn an_extension_moves_the_deadline_once_with_its_reason() {
    let w = world().await;
    w.leads.down.store(true, Ordering::SeqCst);
    let _ = w
        .service
        .submit(submission("pr_e", RequestKind::Erasure, ADA), &tally())
        .await;
    let r = w
        .service
        .extend(
            "pr_e",
            "complex: data in many systems",
            NaiveDate::from_ymd_opt(2026, 3, 20).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.due(), NaiveDate::from_ymd_opt(2026, 6, 1).unwrap());
    assert!(
        w.service
            .extend(
                "pr_e",
                "again",
                NaiveDate::from_ymd_opt(2026, 3, 21).unwrap()
            )
            .await
            .is_err()
    );
    assert!(
        w.service
            .extend("nope", "x", NaiveDate::from_ymd_opt(2026, 3, 21).unwrap())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_rejected_request_needs_a_reason_and_closes() {
    let w = world().await;
    w.leads.down.store(true, Ordering::SeqCst);
    let _ = w
        .service
        .submit(submission("pr_r", RequestKind::Access, ADA), &tally())
        .await;
    assert!(w.service.reject("pr_r", " ").await.is_err());
    let r = w
        .service
        .reject("pr_r", "requester could not be verified")
        .await
        .unwrap();
    assert_eq!(r.status, RequestStatus::Rejected);
    assert!(r.audit.iter().any(|e| e.action == "rejected"));
    // An operator's rejection has no address, and none is kept: said in the audit trail.
    assert!(w.queue.sent("q/notify").is_empty());
    assert!(r.audit.iter().any(|e| e.action == "notice"));
    assert!(
        w.service.reject("pr_r", "again").await.is_err(),
        "closed stays closed"
    );
    w.leads.down.store(false, Ordering::SeqCst);
    let report = w
        .service
        .sweep(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(), &tally())
        .await
        .unwrap();
    assert_eq!(report.open, 0);
    assert!(w.files.object("privacy/exports/pr_r.json").is_none());
    // An erasure that has begun is finished, not rejected.
    w.leads.down.store(true, Ordering::SeqCst);
    let _ = w
        .service
        .submit(submission("pr_s", RequestKind::Erasure, ADA), &tally())
        .await;
    assert!(w.service.reject("pr_s", "unverified").await.is_err());
}

#[tokio::test]
async fn a_requester_whose_address_this_run_lacks_is_reached_through_their_stripe_customer() {
    let w = world().await;
    w.leads.down.store(true, Ordering::SeqCst);
    let id = w.subjects.key.subject(&ada());
    w.subjects
        .index
        .record(&id, &[Location::new(System::Stripe, "cus_ada")], 1)
        .await
        .unwrap();
    let _ = w
        .service
        .submit(submission("pr_t", RequestKind::Access, ADA), &tally())
        .await;
    // The operator's rejection comes without the address: the notifications function reads
    // it from Stripe when it sends; the message carries the customer id only.
    w.service
        .reject("pr_t", "requester could not be verified")
        .await
        .unwrap();
    let sent = w.queue.sent("q/notify");
    assert_eq!(sent.len(), 1);
    let note: crate::notice::Notification = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(
        (note.customer.as_deref(), note.to.as_deref()),
        (Some("cus_ada"), None)
    );
    assert_eq!(note.data["status"], "rejected");
    assert!(!sent[0].contains(ADA));
}

#[tokio::test]
async fn the_archive_sweep_exports_and_erases_a_person_from_batched_and_sealed_objects() {
    use super::connectors::ArchiveSweep;
    use crate::archive::{self, Hour, Line};
    let subjects = Subjects::for_tests();
    let files = Arc::new(MemoryStore::new());
    let line = |id: &str, who: &str, at: &str| {
        let received = chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&chrono::Utc);
        Line {
            id: id.into(),
            source: "portal".into(),
            event_type: "lead.signup".into(),
            received_at: received,
            occurred_at: None,
            subjects: vec![subjects.key.subject(&Email::parse(who).unwrap())],
            body: Some(json!({"type": "lead.signup", "data": {"email": who}}).to_string()),
            erased: false,
        }
    };
    // One sealed hour and one still in its batch object, each with Ada's event and Bob's.
    let (h1, h2) = (
        Hour::parse("2026-03-01T09").unwrap(),
        Hour::parse("2026-03-01T10").unwrap(),
    );
    let bob1 = line("msg_b1", "bob@example.com", "2026-03-01T09:05:00Z");
    archive::write_batch(
        files.as_ref(),
        h1,
        &[line("msg_a1", ADA, "2026-03-01T09:01:00Z"), bob1.clone()],
    )
    .await
    .unwrap();
    archive::seal_hour(files.as_ref(), h1).await.unwrap();
    archive::write_batch(
        files.as_ref(),
        h2,
        &[
            line("msg_a2", ADA, "2026-03-01T10:01:00Z"),
            line("msg_b2", "bob@example.com", "2026-03-01T10:02:00Z"),
        ],
    )
    .await
    .unwrap();
    let service = PrivacyService::new(
        Ports {
            requests: Arc::new(MemoryRequests::new()),
            subjects: subjects.clone(),
            connectors: vec![Arc::new(ObjectsConnector::exports(files.clone()))],
            sweeps: vec![Arc::new(ArchiveSweep {
                files: files.clone(),
            })],
            files: files.clone(),
            queue: Arc::new(MemoryQueue::new()),
            clock: now,
        },
        Settings {
            notifications_queue_url: "q/notify".into(),
            link_ttl: std::time::Duration::from_secs(3600),
        },
    );
    let t = tally();

    // Access: both of her archived events, nothing of Bob's.
    let r = service
        .submit(submission("pr_a", RequestKind::Access, ADA), &t)
        .await
        .unwrap();
    let bundle: Value =
        serde_json::from_slice(&files.object(r.bundle_key.as_ref().unwrap()).unwrap()).unwrap();
    let archived = bundle["systems"]["archive"].as_array().unwrap();
    assert_eq!(archived.len(), 2, "{bundle:#}");
    assert_eq!(archived[0]["data"]["data"]["email"], ADA);
    assert!(
        archived[0]["place"]
            .as_str()
            .unwrap()
            .ends_with("#portal/msg_a1")
    );
    assert!(!bundle.to_string().contains("bob@example.com"));

    // Erasure: tombstones in both hours, Bob's events byte for byte as they were.
    let r = service
        .submit(submission("pr_e", RequestKind::Erasure, ADA), &t)
        .await
        .unwrap();
    assert_eq!(r.status, RequestStatus::Completed, "{:#?}", r.audit);
    let erased: Vec<&str> = r
        .audit
        .iter()
        .filter(|e| e.action == "erased" && e.system == Some(System::Archive))
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(erased.len(), 2, "{erased:?}");
    assert!(erased[0].contains("1 event(s) replaced by tombstones"));
    for h in [h1, h2] {
        let sealed = files.object(&h.sealed_key()).unwrap();
        let lines = archive::decode("k", &sealed).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].erased && lines[0].body.is_none());
        assert!(!lines[1].erased);
        assert!(!serde_json::to_string(&lines).unwrap().contains(ADA));
    }
    let first = archive::decode("k", &files.object(&h1.sealed_key()).unwrap()).unwrap();
    assert_eq!(first[1], bob1);
    assert!(files.list(archive::BATCH_PREFIX).await.unwrap().is_empty());
}
