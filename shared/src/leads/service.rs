//! The lead service: one queue message in, one lead enriched, scored, routed and upserted.
//!
//! Order of work for a message, and why each step is safe to repeat:
//! 1. parse + normalise ([`super::input`]); bad input is a permanent, non-retryable error;
//! 2. claim `lead-enrichment:<source>:<event id>` in the idempotency ledger: a redelivered
//!    event that completed before is acknowledged without any work;
//! 3. resolve the person's lead id through the subject item (conditional put): every event of
//!    one e-mail address lands on one lead, hence one CRM record;
//! 4. classify the domain, enrich (cache first; provider trouble never fails the lead), score;
//! 5. route — only a lead without an owner is routed (owners are sticky), so a retry after a
//!    crash further on does not advance the round-robin counter twice;
//! 6. save the lead record (before the CRM, so a retry finds the owner), then upsert the CRM
//!    by external id (the lead id): a repeat updates the same record;
//! 7. complete the ledger claim (or release it on failure so SQS's redelivery can retry).

use super::domains::{DomainClass, DomainClassifier};
use super::enrichment::{Enricher, Enrichment};
use super::input::{Lead, LeadId, Person, parse_event};
use super::routing::{AccountDirectory, SlotCounter, Territories, route};
use super::rules::Facts;
use super::scoring::ScoringRules;
use super::store::{LeadRecord, LeadStore};
use crate::crm::{CrmLead, CrmPort, CrmRecord};
use crate::error::{Error, Result};
use crate::ledger::{Claim, ClaimOptions, Ledger, payload_hash};
use crate::queue::EventMessage;
use crate::subjects::{Choice, Location, Subjects, System};
use std::collections::BTreeSet;
use std::sync::Arc;
use tracing::Instrument;

/// The ports the service drives.
#[derive(Clone)]
pub struct LeadPorts {
    pub store: Arc<dyn LeadStore>,
    pub accounts: Arc<dyn AccountDirectory>,
    pub counter: Arc<dyn SlotCounter>,
    pub enricher: Enricher,
    pub crm: Arc<dyn CrmPort>,
    pub ledger: Arc<dyn Ledger>,
    /// The subject key, index and tombstones: an erased person is never written again.
    pub subjects: Subjects,
}

/// What happened to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The lead was (re)processed and upserted.
    Upserted {
        lead_id: LeadId,
        /// A new lead record (first event of this person).
        new_lead: bool,
        /// The CRM created a record (vs updated one).
        crm_created: bool,
        owner_id: String,
        grade: String,
        needs_enrichment: bool,
        /// The provider was asked (not a cache hit, not skipped).
        provider_called: bool,
    },
    /// The same event was processed before: nothing done.
    Duplicate { lead_id: Option<String> },
    /// The person was erased (a privacy request): nothing written, the event acknowledged.
    Erased,
}

/// The lead service.
pub struct LeadService {
    ports: LeadPorts,
    classifier: DomainClassifier,
    scoring: ScoringRules,
    territories: Territories,
}

impl std::fmt::Debug for LeadService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeadService")
            .field("crm", &self.ports.crm.kind())
            .finish()
    }
}

const LEDGER_PREFIX: &str = "lead-enrichment";

impl LeadService {
    pub fn new(
        ports: LeadPorts,
        classifier: DomainClassifier,
        scoring: ScoringRules,
        territories: Territories,
    ) -> Self {
        Self {
            ports,
            classifier,
            scoring,
            territories,
        }
    }

    /// The service with the bundled lists and rules files.
    pub fn bundled(ports: LeadPorts) -> Result<Self> {
        Ok(Self::new(
            ports,
            DomainClassifier::bundled().clone(),
            ScoringRules::bundled()?,
            Territories::bundled()?,
        ))
    }

    /// The ports (tests and tools reach the adapters through them).
    pub fn ports(&self) -> &LeadPorts {
        &self.ports
    }

    /// Processes one queue message.
    pub async fn handle(&self, msg: &EventMessage) -> Result<Outcome> {
        let lead = parse_event(msg)?;
        let key = format!("{LEDGER_PREFIX}:{}:{}", msg.source, msg.id);
        let body =
            serde_json::to_vec(&msg.event).map_err(|e| Error::Invalid(format!("event: {e}")))?;
        let opts = ClaimOptions::default();
        let lease = match self
            .ports
            .ledger
            .claim(&key, &payload_hash(&body), opts)
            .await?
        {
            Claim::Acquired(lease) => lease,
            Claim::Completed { result } => {
                tracing::info!(
                    lead_id = result.as_deref().unwrap_or(""),
                    "duplicate lead event; already processed"
                );
                return Ok(Outcome::Duplicate { lead_id: result });
            }
            Claim::InProgress { .. } => {
                return Err(Error::InProgress(format!(
                    "lead event {} is being processed",
                    msg.id
                )));
            }
        };
        match self
            .process(lead, &msg.raw_key, msg.received_at.timestamp_millis())
            .await
        {
            Ok(outcome) => {
                let id = match &outcome {
                    Outcome::Upserted { lead_id, .. } => Some(lead_id.to_string()),
                    Outcome::Duplicate { lead_id } => lead_id.clone(),
                    Outcome::Erased => None,
                };
                self.ports
                    .ledger
                    .complete(&lease, id.as_deref(), opts)
                    .await?;
                Ok(outcome)
            }
            Err(e) => {
                if let Err(release) = self.ports.ledger.release(&lease).await {
                    tracing::warn!(error = %release.chain(), "ledger release failed; the lease will expire");
                }
                Err(e)
            }
        }
    }

    /// `raw_key`: the archived webhook the lead came in (it holds the person's data too).
    /// `at`: when intake accepted the event (epoch ms): a recorded opt-out choice made later
    /// wins over the form's consent.
    async fn process(&self, lead: Lead, raw_key: &str, at: i64) -> Result<Outcome> {
        let p = &self.ports;
        // A tombstone keeps an erased person erased, whatever event arrives (redelivered,
        // replayed from the archive, or new).
        let subject = match p.subjects.live(&lead.person.email).await? {
            Ok(subject) => subject,
            Err(tombstone) => {
                tracing::info!(
                    request_id = %tombstone.request_id,
                    "lead of an erased person; nothing written"
                );
                return Ok(Outcome::Erased);
            }
        };
        let lead_id = p
            .store
            .lead_id_for_subject(&lead.person.email, &lead.event_lead_id)
            .await?;
        // Indexed before anything personal is written: a privacy request finds every place.
        p.subjects
            .index
            .record(
                &subject,
                &[
                    Location::new(System::Leads, lead_id.as_str()),
                    Location::new(System::Crm, format!("lead:{lead_id}")),
                    Location::new(System::Archive, raw_key),
                ],
                chrono::Utc::now().timestamp_millis(),
            )
            .await?;
        let span = tracing::info_span!("lead", lead_id = %lead_id, source = lead.source.as_str());
        async move {
            let existing = p.store.get(&lead_id).await?;
            let domain = lead.person.email.domain().to_owned();
            let class = self.classifier.classify(&domain);
            let enrichment = p.enricher.enrich(&domain, class).await;
            let provider_called = matches!(
                enrichment,
                Enrichment::Found { cached: false, .. }
                    | Enrichment::Unknown { cached: false }
                    | Enrichment::Unavailable { .. }
            );
            let now = chrono::Utc::now();
            let mut record = merge(
                existing.as_ref(),
                &lead,
                lead_id.clone(),
                &domain,
                class,
                &enrichment,
                now,
            );
            // The person's latest choice wins: a privacy opt-out made after this form was
            // sent stands, an opt-in on a later form withdraws an earlier opt-out.
            let choice = p.subjects.index.choice(&subject).await?;
            record.person.consent.marketing =
                Choice::marketing_allowed(choice.as_ref(), record.person.consent.marketing, at);
            let facts = facts(&record, &enrichment);
            record.score = self.scoring.score(&facts);
            let route = match existing.as_ref() {
                Some(old) => old.route.clone(),
                None => {
                    let company_domain = class.is_corporate().then_some(domain.as_str());
                    route(
                        &self.territories,
                        p.accounts.as_ref(),
                        p.counter.as_ref(),
                        company_domain,
                        &facts,
                    )
                    .await?
                }
            };
            record.route = route;
            p.store.put(&record).await?;
            let upserted = p.crm.upsert(&CrmRecord::Lead(crm_lead(&record))).await?;
            tracing::info!(
                owner_id = %record.route.owner_id,
                method = ?record.route.method,
                grade = %record.score.grade,
                score = record.score.points,
                domain_class = class.as_str(),
                needs_enrichment = record.needs_enrichment,
                crm = p.crm.kind(),
                crm_created = upserted.created,
                "lead upserted"
            );
            Ok(Outcome::Upserted {
                lead_id,
                new_lead: existing.is_none(),
                crm_created: upserted.created,
                owner_id: record.route.owner_id.clone(),
                grade: record.score.grade.clone(),
                needs_enrichment: record.needs_enrichment,
                provider_called,
            })
        }
        .instrument(span)
        .await
    }
}

/// The record after this event: new values win, known values are kept.
fn merge(
    old: Option<&LeadRecord>,
    lead: &Lead,
    lead_id: LeadId,
    domain: &str,
    class: DomainClass,
    enrichment: &Enrichment,
    now: chrono::DateTime<chrono::Utc>,
) -> LeadRecord {
    let keep = |new: &Option<String>, old: Option<&Option<String>>| {
        new.clone().or_else(|| old.cloned().flatten())
    };
    let mut sources: BTreeSet<_> = old.map(|o| o.sources.clone()).unwrap_or_default();
    sources.insert(lead.source);
    let mut events = old.map(|o| o.events.clone()).unwrap_or_default();
    let event = format!("{}:{}", lead.source.as_str(), lead.event_id);
    if !events.contains(&event) {
        events.push(event);
    }
    if events.len() > 20 {
        events.drain(..events.len() - 20);
    }
    let name = if lead.person.name.first.is_some() || lead.person.name.last.is_some() {
        lead.person.name.clone()
    } else {
        old.map(|o| o.person.name.clone()).unwrap_or_default()
    };
    let company_info = enrichment
        .company()
        .cloned()
        .or_else(|| old.and_then(|o| o.company_info.clone()));
    LeadRecord {
        lead_id,
        person: Person {
            email: lead.person.email.clone(),
            name,
            company: keep(&lead.person.company, old.map(|o| &o.person.company)),
            country: lead.person.country.or(old.and_then(|o| o.person.country)),
            country_unmapped: keep(
                &lead.person.country_unmapped,
                old.map(|o| &o.person.country_unmapped),
            ),
            phone: keep(&lead.person.phone, old.map(|o| &o.person.phone)),
            job_title: keep(&lead.person.job_title, old.map(|o| &o.person.job_title)),
            form: keep(&lead.person.form, old.map(|o| &o.person.form)),
            product: keep(&lead.person.product, old.map(|o| &o.person.product)),
            consent: super::input::Consent {
                marketing: lead.person.consent.marketing
                    || old.is_some_and(|o| o.person.consent.marketing),
                terms: lead.person.consent.terms || old.is_some_and(|o| o.person.consent.terms),
            },
        },
        sources,
        events,
        stripe_customer: keep(&lead.stripe_customer, old.map(|o| &o.stripe_customer)),
        domain: domain.to_owned(),
        domain_class: class,
        needs_enrichment: enrichment.needs_enrichment() && company_info.is_none(),
        company_info,
        score: super::scoring::Score {
            points: 0,
            fit: 0,
            intent: 0,
            grade: String::new(),
            reasons: Vec::new(),
        },
        route: old
            .map(|o| o.route.clone())
            .unwrap_or_else(|| super::routing::Route {
                owner_id: String::new(),
                owner_name: String::new(),
                method: super::routing::RouteMethod::Territory,
                team: None,
                rule: None,
                slot: None,
                account_id: None,
                reason: String::new(),
            }),
        created_at: old.map_or(now, |o| o.created_at),
        updated_at: now,
    }
}

/// The facts scoring and routing look at.
fn facts(r: &LeadRecord, enrichment: &Enrichment) -> Facts {
    let company = r.company_info.as_ref();
    let country = r.person.country.or_else(|| company.and_then(|c| c.country));
    Facts {
        sources: r.sources.iter().map(|s| s.as_str().to_owned()).collect(),
        form: r.person.form.clone(),
        product: r.person.product.clone(),
        job_title: r.person.job_title.clone(),
        country: country.map(|c| c.code().to_owned()),
        region: country.map(|c| c.region().to_owned()),
        domain_class: r.domain_class.as_str().to_owned(),
        employee_band: company
            .and_then(|c| c.band())
            .map(|b| b.as_str().to_owned()),
        industry: company.and_then(|c| c.industry.clone()),
        sector: company.and_then(|c| c.sector.clone()),
        marketing_consent: r.person.consent.marketing,
        enriched: !enrichment.needs_enrichment(),
    }
}

/// The CRM view of a lead record.
pub fn crm_lead(r: &LeadRecord) -> CrmLead {
    let info = r.company_info.as_ref();
    let company = r
        .person
        .company
        .clone()
        .or_else(|| info.and_then(|c| c.name.clone()))
        .unwrap_or_else(|| {
            if r.domain_class.is_corporate() {
                r.domain.clone()
            } else {
                "[individual]".to_owned()
            }
        });
    let latest = r.sources.iter().next_back().copied();
    CrmLead {
        lead_id: r.lead_id.to_string(),
        email: Some(r.person.email.as_str().to_owned()),
        first_name: r.person.name.first.clone(),
        last_name: r.person.name.last.clone(),
        phone: r.person.phone.clone(),
        title: r.person.job_title.clone(),
        company,
        company_domain: r.domain_class.is_corporate().then(|| r.domain.clone()),
        industry: info.and_then(|c| c.industry.clone()),
        employees: info.and_then(|c| c.employees),
        employee_band: info.and_then(|c| c.band()).map(|b| b.as_str().to_owned()),
        country: r.person.country.or_else(|| info.and_then(|c| c.country)),
        lead_source: latest.map_or("Web", |s| s.crm_label()).to_owned(),
        sources: r.sources.iter().map(|s| s.as_str().to_owned()).collect(),
        score: r.score.points,
        grade: r.score.grade.clone(),
        score_reasons: r.score.summary(),
        owner_id: r.route.owner_id.clone(),
        team: r.route.team.clone(),
        routing_reason: r.route.reason.clone(),
        needs_enrichment: r.needs_enrichment,
        marketing_opt_in: r.person.consent.marketing,
    }
}
