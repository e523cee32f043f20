//! The daily run: [`RevenueOps::plan`] computes the company metrics snapshot of a date, writes
//! it (DynamoDB, S3 JSON and CSV, the month's HTML report, EMF) and fans out one job per
//! customer; [`RevenueOps::run_customer`] scores the customer's health, keeps its renewal
//! opportunities, raises early warnings and writes all of it to the CRM.
//!
//! Idempotent: a rerun of a date recomputes the same snapshot from the same history and
//! overwrites the same objects; a customer job writes only CRM records that changed
//! (fingerprints), and an early warning is raised once per entry into `at_risk` (its
//! notification id and CRM task key are deterministic, so a retry after a crash repeats the
//! same ones).

use super::config::Settings;
use super::health::{Health, HealthInputs};
use super::metrics::{MetricsEngine, Snapshot, end_of, holds_seats, month_of};
use super::renewals::{self, Renewal};
use super::report;
use super::store::{RevenueState, RevenueStore, ScoreDay};
use crate::billing::ports::{DunningStore, UsageHistory};
use crate::billing::pricebook::PriceBook;
use crate::crm::{AccountHealth, CrmOpportunity, CrmPort, CrmRecord, CrmTask, OpportunityStage};
use crate::customers::state::{CustomerState, CustomerStore};
use crate::error::{Error, Result};
use crate::notice::{Kind, Notification};
use crate::queue::QueueSender;
use crate::storage::ObjectStore;
use crate::telemetry::{Tally, Unit};
use chrono::{Datelike, Days, NaiveDate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What revenue-ops runs on.
#[derive(Clone)]
pub struct Ports {
    pub customers: Arc<dyn CustomerStore>,
    pub revenue: Arc<dyn RevenueStore>,
    pub usage: Arc<dyn UsageHistory>,
    pub dunning: Arc<dyn DunningStore>,
    pub crm: Arc<dyn CrmPort>,
    pub queue: Arc<dyn QueueSender>,
    pub files: Arc<dyn ObjectStore>,
    /// The price book (billing's): values plans billed through it.
    pub book: Arc<PriceBook>,
}

/// A unit of work: the whole day (schedule, operator) or one customer of it (queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Job {
    /// Plan a date (default: yesterday, the last complete day).
    Run {
        #[serde(default)]
        date: Option<NaiveDate>,
    },
    /// One customer's renewals and health for a date.
    Customer { date: NaiveDate, customer: String },
}

impl Job {
    /// The job a direct invocation (`{"action": ...}`) or the daily schedule's event (plan
    /// yesterday) asks for.
    pub fn from_invocation(payload: serde_json::Value) -> Result<Job> {
        if payload.get("action").is_some() {
            serde_json::from_value(payload)
                .map_err(|e| Error::Invalid(format!("not a revenue-ops action: {e}")))
        } else if payload
            .get("detail-type")
            .and_then(serde_json::Value::as_str)
            == Some("Scheduled Event")
        {
            Ok(Job::Run { date: None })
        } else {
            Err(Error::Invalid("unrecognised event shape".into()))
        }
    }
}

/// What a customer job did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CustomerOutcome {
    pub customer: String,
    pub score: Option<u32>,
    pub band: String,
    pub renewals_opened: u32,
    pub renewals_won: u32,
    pub renewals_lost: u32,
    pub warning: Option<String>,
    pub crm_records: usize,
}

/// What a plan did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanOutcome {
    pub date: String,
    pub jobs: usize,
    pub snapshot_key: String,
    pub report_key: String,
    pub mrr: i64,
    pub currency: String,
}

/// The service.
pub struct RevenueOps {
    pub ports: Ports,
    pub settings: Settings,
    engine: MetricsEngine,
}

/// Days of usage compared: the last 30 against the 30 before.
const TREND_DAYS: u64 = 30;
/// Days of scores kept per customer: a week's drop needs 8; a rerun of a date within the
/// month reads the band counts of the day before it.
const SCORES_KEPT: usize = 40;
/// Optimistic-save attempts per job.
const ROUNDS: usize = 5;

impl RevenueOps {
    pub fn new(ports: Ports, settings: Settings) -> Self {
        let engine = MetricsEngine {
            rates: settings.rates.clone(),
            windows: settings.windows.clone(),
            book: Some(ports.book.clone()),
        };
        Self {
            ports,
            settings,
            engine,
        }
    }

    /// The metrics engine (rates and windows of this deployment).
    pub fn engine(&self) -> &MetricsEngine {
        &self.engine
    }

    /// Runs a job.
    pub async fn run(
        &self,
        job: Job,
        today: NaiveDate,
        tally: &Tally,
    ) -> Result<serde_json::Value> {
        match job {
            Job::Run { date } => {
                let date = date.unwrap_or(today - Days::new(1));
                if date > today {
                    return Err(Error::Invalid(format!(
                        "cannot run revenue-ops for {date}: it is in the future"
                    )));
                }
                let out = self.plan(date, tally).await?;
                serde_json::to_value(out).map_err(|e| Error::Invalid(e.to_string()))
            }
            Job::Customer { date, customer } => {
                let out = self.run_customer(date, &customer, tally).await?;
                serde_json::to_value(out).map_err(|e| Error::Invalid(e.to_string()))
            }
        }
    }

    /// The day's snapshot, files and report, then one job per customer who bought anything.
    pub async fn plan(&self, date: NaiveDate, tally: &Tally) -> Result<PlanOutcome> {
        let p = &self.ports;
        let states = p.customers.all_states().await?;
        let mut snapshot = self.engine.snapshot(&states, date);
        // As scored the day before (the day's own jobs run after the plan): a rerun reads the
        // same scores.
        let day_before = (date - Days::new(1)).format("%Y-%m-%d").to_string();
        snapshot.health_bands = p.revenue.bands_on(&day_before).await?;
        p.revenue.put_snapshot(&snapshot).await?;
        let day = &snapshot.date;
        let month = month_of(date);
        let json = serde_json::to_vec_pretty(&snapshot)
            .map_err(|e| Error::Invalid(format!("snapshot: {e}")))?;
        let snapshot_key = format!("metrics/daily/{day}.json");
        p.files.put(&snapshot_key, json, "application/json").await?;
        p.files
            .put(
                &format!("metrics/daily/{day}.csv"),
                report::daily_csv(std::slice::from_ref(&snapshot)).into_bytes(),
                "text/csv",
            )
            .await?;
        let first = date.with_day(1).unwrap_or(date);
        let month_days = p
            .revenue
            .snapshots(&first.format("%Y-%m-%d").to_string(), day)
            .await?;
        p.files
            .put(
                &format!("metrics/monthly/{month}.csv"),
                report::daily_csv(&month_days).into_bytes(),
                "text/csv",
            )
            .await?;
        let history = self.engine.monthly(&states, date, 12);
        let report_key = format!("reports/monthly/{month}.html");
        p.files
            .put(
                &report_key,
                report::monthly_html(&month, &month_days, &history).into_bytes(),
                "text/html; charset=utf-8",
            )
            .await?;
        let jobs: Vec<String> = states
            .iter()
            .filter(|s| s.status().is_some())
            .map(|s| {
                serde_json::to_string(&Job::Customer {
                    date,
                    customer: s.customer_id.clone(),
                })
                .map_err(|e| Error::Invalid(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let count = jobs.len();
        p.queue
            .send_all(&self.settings.jobs_queue_url, jobs)
            .await?;
        record_metrics(&snapshot, tally);
        tally.count("RevenueJobsPlanned", count as u64);
        tracing::info!(date = %day, customers = states.len(), jobs = count, mrr = snapshot.mrr, "revenue day planned");
        Ok(PlanOutcome {
            date: day.clone(),
            jobs: count,
            snapshot_key,
            report_key,
            mrr: snapshot.mrr,
            currency: snapshot.currency.to_string(),
        })
    }

    /// One customer's day, retried on a concurrent change of its state.
    pub async fn run_customer(
        &self,
        date: NaiveDate,
        customer: &str,
        tally: &Tally,
    ) -> Result<CustomerOutcome> {
        for _ in 0..ROUNDS {
            match self.customer_once(date, customer).await {
                Err(Error::Conflict(_)) => continue,
                Ok(out) => {
                    tally.one("CustomersScored");
                    tally.count("RenewalsOpened", u64::from(out.renewals_opened));
                    tally.count("RenewalsWon", u64::from(out.renewals_won));
                    tally.count("RenewalsLost", u64::from(out.renewals_lost));
                    tally.count("EarlyWarnings", u64::from(out.warning.is_some()));
                    tally.count("CrmRecordsWritten", out.crm_records as u64);
                    tracing::info!(customer_id = %customer, date = %date, score = ?out.score, band = %out.band, warning = ?out.warning, crm_records = out.crm_records, "customer scored");
                    return Ok(out);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::InProgress(format!(
            "revenue state of {customer} is contended"
        )))
    }

    async fn customer_once(&self, date: NaiveDate, customer: &str) -> Result<CustomerOutcome> {
        let p = &self.ports;
        let Some(state) = p.customers.load(customer).await? else {
            return Err(Error::Invalid(format!("no customer {customer}")));
        };
        let mut rev = p
            .revenue
            .load(customer)
            .await?
            .unwrap_or_else(|| RevenueState {
                customer_id: customer.to_owned(),
                ..RevenueState::default()
            });
        let day = date.format("%Y-%m-%d").to_string();
        let (inputs, summary) = self.inputs(&state, date).await?;
        let health = self.settings.rules.score(inputs);

        // Early warning: on entering at_risk, or on a drop of more than N points in a week.
        let week_ago = (date - Days::new(7)).format("%Y-%m-%d").to_string();
        let dropped = match (
            rev.scores.get(&week_ago).and_then(|s| s.score),
            health.score,
        ) {
            (Some(then), Some(now)) => {
                then.saturating_sub(now) > self.settings.rules.week_drop_alert
            }
            _ => false,
        };
        let entered = health.band == "at_risk" && rev.at_risk_since.is_none();
        let drop_due = dropped
            && rev
                .drop_warned
                .as_deref()
                .and_then(|d| d.parse::<NaiveDate>().ok())
                .is_none_or(|d| (date - d).num_days() >= 7);
        let warning = if entered {
            Some("entered_at_risk")
        } else if drop_due {
            Some("score_dropped")
        } else {
            None
        };
        if health.band == "at_risk" {
            rev.at_risk_since.get_or_insert_with(|| day.clone());
        } else {
            rev.at_risk_since = None;
        }
        if dropped && warning.is_some() {
            rev.drop_warned = Some(day.clone());
        }

        // Renewals.
        let before = rev.renewals.clone();
        rev.renewals = renewals::update(&self.engine, &state, &before, date);
        let mut out = CustomerOutcome {
            customer: customer.to_owned(),
            score: health.score,
            band: health.band.clone(),
            warning: warning.map(str::to_owned),
            ..CustomerOutcome::default()
        };
        for (k, r) in &rev.renewals {
            let was = before.get(k).map(|b| b.stage);
            match (was, r.stage) {
                (None, OpportunityStage::Open) => out.renewals_opened += 1,
                (Some(OpportunityStage::Open) | None, OpportunityStage::ClosedWon) => {
                    out.renewals_won += 1;
                }
                (Some(OpportunityStage::Open) | None, OpportunityStage::ClosedLost) => {
                    out.renewals_lost += 1;
                }
                _ => {}
            }
        }

        // The CRM records of the day.
        let mut records = vec![CrmRecord::AccountHealth(AccountHealth {
            account_external_id: customer.to_owned(),
            score: health.score,
            band: health.band.clone(),
            reasons: health.reasons.join("; "),
            scored_on: day.clone(),
            active_users: health.inputs.active_users,
            licensed_seats: health.inputs.licensed_seats,
            usage_summary: summary,
        })];
        if let Some(owner) = &state.owner_id {
            let license = state.current_license().map(|l| l.license_id.clone());
            // Open while its term is the current one, and lost; the won renewal is written
            // by customer-sync as the new term (the same record).
            let current = |r: &Renewal| {
                state
                    .subscriptions
                    .get(&r.subscription)
                    .is_some_and(|t| t.end == r.term_end)
            };
            records.extend(
                rev.renewals
                    .values()
                    .filter(|r| match r.stage {
                        OpportunityStage::Open => current(r),
                        OpportunityStage::ClosedLost => true,
                        OpportunityStage::ClosedWon => false,
                    })
                    .map(|r| CrmRecord::Opportunity(opportunity(customer, owner, r, &license))),
            );
            if let Some(kind) = warning {
                records.push(CrmRecord::Task(task(customer, owner, &health, kind, &day)));
            }
        }
        let changed: Vec<(String, String, CrmRecord)> = records
            .into_iter()
            .map(|r| (r.key(), r.fingerprint(), r))
            .filter(|(k, f, _)| rev.written.get(k) != Some(f))
            .collect();
        if let Some(kind) = warning {
            self.notify(customer, &state, &health, kind, &day).await?;
        }
        if !changed.is_empty() {
            let to_write: Vec<CrmRecord> = changed.iter().map(|(_, _, r)| r.clone()).collect();
            p.crm.upsert_all(&to_write).await?;
            for (k, f, _) in &changed {
                rev.written.insert(k.clone(), f.clone());
            }
        }
        out.crm_records = changed.len();
        rev.scores.insert(
            day.clone(),
            ScoreDay {
                score: health.score,
                band: health.band.clone(),
            },
        );
        while rev.scores.len() > SCORES_KEPT {
            rev.scores.pop_first();
        }
        if rev.last_run.as_deref().is_none_or(|l| *l <= *day) {
            rev.health = Some(health);
            rev.last_run = Some(day);
        }
        p.revenue.save(&rev).await?;
        Ok(out)
    }

    /// The health inputs of a customer at `date`, and its usage summary for the month.
    async fn inputs(
        &self,
        state: &CustomerState,
        date: NaiveDate,
    ) -> Result<(HealthInputs, String)> {
        let p = &self.ports;
        let t = end_of(date);
        let from = date - Days::new(2 * TREND_DAYS - 1);
        let recent_from = date - Days::new(TREND_DAYS - 1);
        let month_start = date.with_day(1).unwrap_or(date);
        let au = &self.settings.active_users_metric;
        let mut inputs = HealthInputs::default();
        let mut month: BTreeMap<String, i128> = BTreeMap::new();
        let mut seats: Option<u32> = None;
        let mut latest_users: BTreeMap<&str, (NaiveDate, u64)> = BTreeMap::new();
        for (id, term) in &state.subscriptions {
            if let Some(pt) = super::metrics::point_at(term, t)
                && holds_seats(&pt.status)
            {
                *seats.get_or_insert(0) += pt.seats.unwrap_or(0);
            }
            for d in p.usage.daily(&state.customer_id, id, from, date).await? {
                if d.metric == *au {
                    if d.date >= recent_from {
                        let users = d
                            .max
                            .map_or(d.sum / 1_000_000, |m| i128::from(m) / 1_000_000);
                        let users = u64::try_from(users).unwrap_or(0);
                        // The latest report of each subscription counts.
                        let slot = latest_users.entry(id.as_str()).or_insert((d.date, users));
                        if d.date >= slot.0 {
                            *slot = (d.date, users);
                        }
                    }
                    continue;
                }
                let sum = i64::try_from(d.sum).unwrap_or(i64::MAX);
                let bucket = if d.date >= recent_from {
                    &mut inputs.usage_last_30
                } else {
                    &mut inputs.usage_previous_30
                };
                let v = bucket.entry(d.metric.clone()).or_default();
                *v = v.saturating_add(sum);
                if d.date >= month_start {
                    *month.entry(d.metric).or_default() += d.sum;
                }
            }
        }
        if !latest_users.is_empty() {
            inputs.active_users = Some(latest_users.values().map(|(_, u)| u).sum());
        }
        inputs.licensed_seats = seats;
        inputs.payment = p
            .dunning
            .load(&state.customer_id)
            .await?
            .0
            .status
            .as_str()
            .to_owned();
        inputs.days_to_license_expiry = state.current_license().map(|l| {
            (l.expires_at / 1000 - (t - super::metrics::DAY)).div_euclid(super::metrics::DAY)
        });
        inputs.refund = state.flags.contains("refund");
        inputs.dispute = state.flags.contains("dispute");
        let summary = month
            .iter()
            .map(|(m, v)| {
                format!(
                    "{m} {}",
                    crate::billing::Quantity::from_micros(i64::try_from(*v).unwrap_or(i64::MAX))
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Ok((inputs, summary))
    }

    async fn notify(
        &self,
        customer: &str,
        state: &CustomerState,
        health: &Health,
        kind: &str,
        day: &str,
    ) -> Result<()> {
        // Deterministic id: a retry sends the same one, and the notifications function sends
        // each id once. Internal: it goes to the operations address.
        Notification::to_customer(
            format!("health:{customer}:{day}"),
            Kind::CustomerHealth,
            customer,
        )
        .with("warning", kind)
        .with("owner", &state.owner_id)
        .with("score", health.score)
        .with("band", &health.band)
        .with("reasons", &health.reasons)
        .with("date", day)
        .send(
            self.ports.queue.as_ref(),
            &self.settings.notifications_queue_url,
        )
        .await
    }
}

fn opportunity(
    customer: &str,
    owner: &str,
    r: &Renewal,
    license: &Option<String>,
) -> CrmOpportunity {
    CrmOpportunity {
        external_id: r.key.clone(),
        account_external_id: customer.to_owned(),
        name: format!(
            "Renewal · {} · {}",
            r.sku.as_deref().unwrap_or("subscription"),
            r.close_date()
        ),
        stage: r.stage,
        amount: r.amount.clone(),
        seats: r.seats,
        sku: r.sku.clone(),
        close_date: r.close_date(),
        subscription_id: r.subscription.clone(),
        license_id: license.clone(),
        loss_reason: r.loss_reason.clone(),
        flags: vec!["renewal".into()],
        owner_id: owner.to_owned(),
    }
}

fn task(customer: &str, owner: &str, health: &Health, kind: &str, day: &str) -> CrmTask {
    let due = day
        .parse::<NaiveDate>()
        .map(|d| (d + Days::new(2)).format("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| day.to_owned());
    CrmTask {
        external_id: format!("health:{customer}:{day}"),
        account_external_id: customer.to_owned(),
        owner_id: owner.to_owned(),
        subject: match kind {
            "entered_at_risk" => "Customer at risk: reach out".to_owned(),
            _ => "Customer health dropped: reach out".to_owned(),
        },
        description: format!(
            "Health {} ({}) on {day}: {}",
            health.score.map_or("n/a".to_owned(), |s| s.to_string()),
            health.band,
            health.reasons.join("; ")
        ),
        due_date: due,
        priority: "High".into(),
    }
}

/// The snapshot's figures as EMF metrics.
fn record_metrics(s: &Snapshot, tally: &Tally) {
    for (name, v) in [
        ("MRR", s.mrr),
        ("ARR", s.arr),
        ("MrrNew", s.movements.new),
        ("MrrExpansion", s.movements.expansion),
        ("MrrReactivation", s.movements.reactivation),
        ("MrrContraction", s.movements.contraction),
        ("MrrChurn", s.movements.churn),
        ("UsageRevenue", s.usage_revenue),
        ("RenewalPipeline", s.renewal_pipeline.amount),
    ] {
        tally.add(name, v as f64, Unit::None);
    }
    tally.count("PayingCustomers", s.customers.paying);
    tally.count("TrialingCustomers", s.customers.trialing);
    tally.count("SeatsLicensed", s.seats_licensed);
    for (band, n) in &s.health_bands {
        tally.count(&format!("Health_{band}"), *n);
    }
}
