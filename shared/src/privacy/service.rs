//! Submit, process, extend and sweep privacy requests.
//!
//! Processing is a sequence of steps, each saved before the next: a request that fails
//! midway (a connector down) stays `in_progress`, says so in its audit trail, and resumes
//! after the last step done on the next delivery or the daily sweep. It never reports
//! `completed` while a place it knows of was not handled.
//!
//! - **access**: every indexed place and every sweep are exported into one JSON bundle (one
//!   section per system), written to `privacy/exports/{id}.json` (encrypted at rest, removed by
//!   the bucket's lifecycle after 30 days) and reached through an expiring pre-signed link.
//! - **erasure**: the tombstone first (nothing about the person is written again, whatever
//!   arrives meanwhile), then each place: erased, or kept with its legal basis; an erased
//!   place leaves the index, a kept one stays findable. Then the sweeps.
//! - **opt-out**: the choice is recorded (the latest wins everywhere, including later sign-up
//!   forms) and written onto the person's CRM lead and contact.

use super::connectors::{Connector, Outcome, Sweep};
use super::deadline::{Jurisdiction, Urgency};
use super::request::{PrivacyRequest, RequestKind, RequestStatus};
use super::store::RequestStore;
use crate::error::{Error, Result};
use crate::notice::{Kind, Notification};
use crate::queue::QueueSender;
use crate::storage::ObjectStore;
use crate::subjects::{Choice, Location, SubjectId, Subjects, System, Tombstone};
use crate::telemetry::Tally;
use crate::values::Email;
use chrono::NaiveDate;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where access bundles are written.
pub const BUNDLE_PREFIX: &str = "privacy/exports/";

/// The adapters the service runs on.
#[derive(Clone)]
pub struct Ports {
    pub requests: Arc<dyn RequestStore>,
    pub subjects: Subjects,
    pub connectors: Vec<Arc<dyn Connector>>,
    pub sweeps: Vec<Arc<dyn Sweep>>,
    /// Where bundles go.
    pub files: Arc<dyn ObjectStore>,
    pub queue: Arc<dyn QueueSender>,
    /// Now, epoch ms.
    pub clock: fn() -> i64,
}

/// What the service needs besides its ports.
#[derive(Debug, Clone)]
pub struct Settings {
    pub notifications_queue_url: String,
    /// How long a bundle's link works (at most 7 days: the longest a pre-signed link can).
    pub link_ttl: Duration,
}

/// A request as it comes in (the portal's verified requester, or an operator).
#[derive(Debug, Clone)]
pub struct Submission {
    /// Stable per request: a redelivery carries the same id.
    pub id: String,
    pub kind: RequestKind,
    pub jurisdiction: Jurisdiction,
    pub email: Email,
    pub received: NaiveDate,
    /// When the person asked (epoch ms).
    pub at_ms: i64,
    /// Opt-out only: `true` opts out (the default), `false` withdraws an opt-out.
    pub opted_out: Option<bool>,
}

/// What the daily sweep saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    pub open: usize,
    pub resumed: usize,
    pub completed: usize,
    pub failed: usize,
    pub due_soon: Vec<String>,
    pub overdue: Vec<String>,
}

/// The privacy requests service.
pub struct PrivacyService {
    ports: Ports,
    settings: Settings,
}

/// What stopped a run, without personal data (never the error's text: it may quote a value).
fn cause(e: &Error) -> String {
    match e {
        Error::Dependency {
            service,
            retryable: true,
            ..
        } => format!("{service} unavailable"),
        Error::Dependency { service, .. } => format!("{service} refused"),
        Error::Invalid(_) => "invalid input".into(),
        Error::NotFound(_) => "not found".into(),
        Error::Conflict(_) => "changed meanwhile".into(),
        Error::InProgress(_) => "in progress elsewhere".into(),
        Error::Config(_) => "configuration".into(),
    }
}

fn place(system: System, locator: &str) -> String {
    format!("{}:{locator}", system.as_str())
}

impl PrivacyService {
    pub fn new(ports: Ports, settings: Settings) -> Self {
        Self { ports, settings }
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    fn connector(&self, system: System) -> Result<&Arc<dyn Connector>> {
        self.ports
            .connectors
            .iter()
            .find(|c| c.system() == system)
            .ok_or_else(|| Error::Invalid(format!("no privacy connector for {}", system.as_str())))
    }

    /// Opens the request (or finds the same one already open) and processes it.
    pub async fn submit(&self, s: Submission, tally: &Tally) -> Result<PrivacyRequest> {
        let subject = self.ports.subjects.key.subject(&s.email);
        let mut request = PrivacyRequest::new(s.id, s.kind, s.jurisdiction, subject, s.received);
        request.requested_at = s.at_ms;
        if s.kind == RequestKind::OptOut {
            request.opted_out = Some(s.opted_out.unwrap_or(true));
        }
        let (request, _, created) = self.ports.requests.open(&request).await?;
        tally.count(
            if created {
                "PrivacyRequestsReceived"
            } else {
                "PrivacyRequestsRepeated"
            },
            1,
        );
        tracing::info!(request_id = %request.id, kind = ?request.kind, created, "privacy request");
        self.run(&request.id, Some(&s.email), tally).await
    }

    /// Runs (or resumes) a request to its end. Closed requests are returned as they stand.
    pub async fn process(&self, id: &str, tally: &Tally) -> Result<PrivacyRequest> {
        self.run(id, None, tally).await
    }

    /// [`Self::process`], knowing the requester's address when this run received it (the
    /// request record never keeps it).
    async fn run(
        &self,
        id: &str,
        requester: Option<&Email>,
        tally: &Tally,
    ) -> Result<PrivacyRequest> {
        let (mut r, mut version) = self
            .ports
            .requests
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("privacy request {id}")))?;
        if r.status.is_closed() {
            return Ok(r);
        }
        let now = (self.ports.clock)();
        if r.status == RequestStatus::Received {
            r.transition(now, RequestStatus::InProgress)?;
            version = self.ports.requests.save(&r, version).await?;
        }
        let run = match r.kind {
            RequestKind::Access => self.access(&mut r, &mut version).await,
            RequestKind::Erasure => self.erase(&mut r, &mut version).await,
            RequestKind::OptOut => self.opt_out(&mut r, &mut version).await,
        };
        if let Err(e) = run {
            // The audit says where it stopped; the next run resumes after the last step done.
            r.record(
                (self.ports.clock)(),
                None,
                "failed",
                &format!(
                    "stopped: {} (resumes on retry or the daily sweep)",
                    cause(&e)
                ),
            );
            if let Err(save) = self.ports.requests.save(&r, version).await {
                tracing::warn!(error = %save.chain(), "could not record the failure");
            }
            tally.count("PrivacyRequestsFailed", 1);
            return Err(e);
        }
        let kept = r.audit.iter().any(|e| e.action == "kept");
        let end = if kept {
            RequestStatus::CompletedWithExceptions
        } else {
            RequestStatus::Completed
        };
        r.transition((self.ports.clock)(), end)?;
        self.close(&mut r, version, requester).await?;
        tally.count("PrivacyRequestsCompleted", 1);
        tracing::info!(request_id = %r.id, kind = ?r.kind, status = ?r.status, "privacy request closed");
        Ok(r)
    }

    async fn step_done(
        &self,
        r: &mut PrivacyRequest,
        version: &mut u64,
        step: String,
    ) -> Result<()> {
        r.done.insert(step);
        *version = self.ports.requests.save(r, *version).await?;
        Ok(())
    }

    async fn access(&self, r: &mut PrivacyRequest, version: &mut u64) -> Result<()> {
        let locations = self.ports.subjects.index.locations(&r.subject).await?;
        let mut bundle: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
        let mut counts: BTreeMap<System, usize> = BTreeMap::new();
        for l in &locations {
            if let Some(data) = self
                .connector(l.system)?
                .export(&r.subject, &l.locator)
                .await?
            {
                bundle
                    .entry(l.system.as_str())
                    .or_default()
                    .push(json!({"place": l.locator, "data": data}));
                *counts.entry(l.system).or_default() += 1;
            }
        }
        for s in &self.ports.sweeps {
            let found = s.export(&r.subject).await?;
            if !found.is_empty() {
                *counts.entry(s.system()).or_default() += found.len();
                bundle.entry(s.system().as_str()).or_default().extend(found);
            }
        }
        let at = (self.ports.clock)();
        if let Some(c) = self.ports.subjects.index.choice(&r.subject).await? {
            bundle
                .entry("choices")
                .or_default()
                .push(json!({"opted_out": c.opted_out, "at_ms": c.at}));
        }
        if counts.is_empty() {
            r.record(at, None, "found", "nothing found");
        }
        for (system, n) in &counts {
            r.record(at, Some(*system), "exported", &format!("{n} item(s)"));
        }
        let key = format!("{BUNDLE_PREFIX}{}.json", r.id);
        let doc = json!({
            "request_id": r.id,
            "kind": "access",
            "received": r.received,
            "generated_at_ms": at,
            "systems": bundle,
        });
        let body = serde_json::to_vec_pretty(&doc).map_err(|e| Error::Invalid(e.to_string()))?;
        // Indexed first: a later erasure finds the bundle too.
        self.ports
            .subjects
            .index
            .record(&r.subject, &[Location::new(System::Exports, &key)], at)
            .await?;
        self.ports.files.put(&key, body, "application/json").await?;
        r.bundle_key = Some(key.clone());
        r.record(
            at,
            None,
            "bundle",
            &format!("{key} (expires by lifecycle after 30 days)"),
        );
        self.step_done(r, version, "bundle".into()).await
    }

    async fn erase(&self, r: &mut PrivacyRequest, version: &mut u64) -> Result<()> {
        let subjects = &self.ports.subjects;
        if !r.done.contains("tombstone") {
            subjects
                .index
                .tombstone(
                    &r.subject,
                    &Tombstone {
                        erased_at: (self.ports.clock)(),
                        request_id: r.id.clone(),
                    },
                )
                .await?;
            r.record(
                (self.ports.clock)(),
                None,
                "tombstoned",
                "no new data about the person is written from now on",
            );
            self.step_done(r, version, "tombstone".into()).await?;
        }
        let locations = subjects.index.locations(&r.subject).await?;
        if locations.is_empty() && !r.done.iter().any(|d| d.contains(':')) {
            r.record((self.ports.clock)(), None, "found", "nothing indexed");
        }
        for l in locations {
            let step = place(l.system, &l.locator);
            if r.done.contains(&step) {
                continue;
            }
            let outcomes = self
                .connector(l.system)?
                .erase(&r.subject, &l.locator)
                .await?;
            let kept = self.apply(r, l.system, outcomes)?;
            if !kept {
                subjects.index.forget(&r.subject, &l).await?;
            }
            self.step_done(r, version, step).await?;
        }
        for s in &self.ports.sweeps {
            let step = format!("sweep:{}", s.system().as_str());
            if r.done.contains(&step) {
                continue;
            }
            let outcomes = s.erase(&r.subject).await?;
            if outcomes.is_empty() {
                r.record((self.ports.clock)(), Some(s.system()), "found", "nothing");
            }
            self.apply(r, s.system(), outcomes)?;
            self.step_done(r, version, step).await?;
        }
        if !r.done.contains("ledger") {
            r.record(
                (self.ports.clock)(),
                Some(System::Ledger),
                "found",
                "nothing personal: the ledger holds event ids, SHA-256 digests of whole bodies and record ids",
            );
            self.step_done(r, version, "ledger".into()).await?;
        }
        Ok(())
    }

    /// Records outcomes; `true` when something was kept.
    fn apply(
        &self,
        r: &mut PrivacyRequest,
        system: System,
        outcomes: Vec<Outcome>,
    ) -> Result<bool> {
        let at = (self.ports.clock)();
        let mut kept = false;
        for o in outcomes {
            match o {
                Outcome::Erased(d) => r.record(at, Some(system), "erased", &d),
                Outcome::NothingThere(d) => {
                    r.record(at, Some(system), "found", &format!("nothing: {d}"))
                }
                Outcome::Kept { detail, basis } => {
                    r.keep(at, system, &detail, &basis)?;
                    kept = true;
                }
            }
        }
        Ok(kept)
    }

    async fn opt_out(&self, r: &mut PrivacyRequest, version: &mut u64) -> Result<()> {
        let opted_out = r.opted_out.unwrap_or(true);
        if !r.done.contains("choice") {
            let choice = Choice {
                opted_out,
                at: r.requested_at,
            };
            let newest = self
                .ports
                .subjects
                .index
                .set_choice(&r.subject, &choice)
                .await?;
            r.record(
                (self.ports.clock)(),
                None,
                "choice",
                &if newest {
                    format!("opted_out = {opted_out} recorded")
                } else {
                    "a later choice is already recorded; it stands".to_owned()
                },
            );
            self.step_done(r, version, "choice".into()).await?;
        }
        // What stands (this choice, or a later one) goes onto every CRM record.
        let standing = self
            .ports
            .subjects
            .index
            .choice(&r.subject)
            .await?
            .map_or(opted_out, |c| c.opted_out);
        let crm: Vec<Location> = self
            .ports
            .subjects
            .index
            .locations(&r.subject)
            .await?
            .into_iter()
            .filter(|l| l.system == System::Crm)
            .collect();
        for l in crm {
            let step = place(l.system, &l.locator);
            if r.done.contains(&step) {
                continue;
            }
            if let Some(d) = self
                .connector(System::Crm)?
                .opt_out(&l.locator, standing)
                .await?
            {
                r.record((self.ports.clock)(), Some(System::Crm), "opt_out", &d);
            }
            self.step_done(r, version, step).await?;
        }
        Ok(())
    }

    /// A fresh link to an access request's bundle.
    pub async fn link(&self, r: &PrivacyRequest) -> Result<Option<String>> {
        match &r.bundle_key {
            Some(k) => Ok(Some(
                self.ports
                    .files
                    .presign_get(k, self.settings.link_ttl)
                    .await?,
            )),
            None => Ok(None),
        }
    }

    /// The request, its due date and (for access) a fresh link: what an operator or the
    /// portal reads.
    pub async fn status(&self, id: &str) -> Result<Value> {
        let (r, _) = self
            .ports
            .requests
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("privacy request {id}")))?;
        let link = self.link(&r).await?;
        Ok(json!({"request": r, "due": r.due(), "link": link}))
    }

    /// Extends a request's deadline once, with its reason.
    pub async fn extend(&self, id: &str, reason: &str, today: NaiveDate) -> Result<PrivacyRequest> {
        let (mut r, version) = self
            .ports
            .requests
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("privacy request {id}")))?;
        r.extend((self.ports.clock)(), today, reason)?;
        self.ports.requests.save(&r, version).await?;
        Ok(r)
    }

    /// Refuses a request (the requester could not be verified, or the request is manifestly
    /// unfounded), with the reason recorded. The person is told through the usual notice.
    pub async fn reject(&self, id: &str, reason: &str) -> Result<PrivacyRequest> {
        if reason.trim().is_empty() {
            return Err(Error::Invalid("a rejection needs a reason".into()));
        }
        let (mut r, version) = self
            .ports
            .requests
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("privacy request {id}")))?;
        if r.status.is_closed() {
            return Err(Error::Invalid(format!(
                "request {id} is closed ({:?})",
                r.status
            )));
        }
        if r.kind == RequestKind::Erasure && !r.done.is_empty() {
            return Err(Error::Invalid(format!(
                "erasure {id} has begun (the person is tombstoned, data erased): resume it, do not reject it"
            )));
        }
        let at = (self.ports.clock)();
        r.record(at, None, "rejected", reason);
        r.transition(at, RequestStatus::Rejected)?;
        self.close(&mut r, version, None).await?;
        Ok(r)
    }

    /// Saves the closed request and tells the requester (a `privacy.request.completed`
    /// notification, its bundle named by key: the link is signed when the e-mail is sent).
    ///
    /// The least data: the address given with this run goes in `to`; else the subject's Stripe
    /// customer still in the index (the notifications function reads the address from Stripe
    /// when it sends). After an erasure no address is written anywhere (nothing about the
    /// person is written after the tombstone), so an erased person is told only through a
    /// Stripe customer kept with a legal basis, or by the portal. Not e-mailed: said in the
    /// audit trail.
    async fn close(
        &self,
        r: &mut PrivacyRequest,
        version: u64,
        requester: Option<&Email>,
    ) -> Result<()> {
        let mut notice =
            Notification::new(format!("privacy:{}:closed", r.id), Kind::PrivacyCompleted)
                .with("request_id", &r.id)
                .with("request_kind", r.kind)
                .with("status", r.status);
        if let Some(key) = &r.bundle_key {
            notice = notice.with("bundle_key", key);
        }
        let erased = r.kind == RequestKind::Erasure && r.done.contains("tombstone");
        match requester.filter(|_| !erased) {
            Some(email) => notice.to = Some(email.as_str().to_owned()),
            None => {
                notice.customer = self
                    .ports
                    .subjects
                    .index
                    .locations(&r.subject)
                    .await?
                    .into_iter()
                    .find(|l| l.system == System::Stripe)
                    .map(|l| l.locator);
            }
        }
        let reachable = notice.to.is_some() || notice.customer.is_some();
        if !reachable {
            let why = if erased {
                "no address is kept after an erasure"
            } else {
                "no address of the requester is kept"
            };
            r.record(
                (self.ports.clock)(),
                None,
                "notice",
                &format!("not e-mailed: {why}; the portal shows the outcome"),
            );
        }
        self.ports.requests.save(r, version).await?;
        if reachable {
            notice
                .send(
                    self.ports.queue.as_ref(),
                    &self.settings.notifications_queue_url,
                )
                .await?;
        }
        Ok(())
    }

    /// The daily run: resumes every open request, and raises a notification and a metric for
    /// each one due within 7 days or overdue, every day until it is closed.
    pub async fn sweep(&self, today: NaiveDate, tally: &Tally) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let open = self.ports.requests.open_requests().await?;
        report.open = open.len();
        for (r, _) in open {
            report.resumed += 1;
            let r = match self.process(&r.id, tally).await {
                Ok(done) => {
                    report.completed += 1;
                    done
                }
                Err(e) => {
                    tracing::warn!(request_id = %r.id, error = %e.chain(), "privacy request still open");
                    report.failed += 1;
                    r
                }
            };
            let Some(urgency) = r.urgency(today) else {
                continue;
            };
            let label = match urgency {
                Urgency::OnTrack { .. } => continue,
                Urgency::Overdue { .. } => {
                    report.overdue.push(r.id.clone());
                    "overdue"
                }
                _ => {
                    report.due_soon.push(r.id.clone());
                    "due_soon"
                }
            };
            // Internal: to the operations address, every day until the request closes.
            Notification::new(
                format!("privacy:{}:deadline:{today}", r.id),
                Kind::PrivacyDeadline,
            )
            .with("request_id", &r.id)
            .with("request_kind", r.kind)
            .with("status", r.status)
            .with("urgency", label)
            .with("due", r.due())
            .with("date", today)
            .send(
                self.ports.queue.as_ref(),
                &self.settings.notifications_queue_url,
            )
            .await?;
        }
        tally.count("PrivacyRequestsOpen", report.open as u64);
        tally.count("PrivacyRequestsDueSoon", report.due_soon.len() as u64);
        tally.count("PrivacyRequestsOverdue", report.overdue.len() as u64);
        Ok(report)
    }

    /// Whether `subject` was erased.
    pub async fn erased(&self, subject: &SubjectId) -> Result<bool> {
        Ok(self
            .ports
            .subjects
            .index
            .tombstoned(subject)
            .await?
            .is_some())
    }
}
