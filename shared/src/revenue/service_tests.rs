//! The daily plan and the customer job on the in-memory fakes: renewals once per term,
//! early warnings once per entry into `at_risk`, the CRM down, files and report written.

use super::config::Settings;
use super::service::{Job, Ports, RevenueOps};
use super::store::{MemoryRevenue, RevenueStore};
use super::tests::{P, customer, date, fixture, term, usd};
use crate::billing::Quantity;
use crate::billing::memory::MemoryBilling;
use crate::billing::ports::UsageStore;
use crate::billing::usage::Usage;
use crate::crm::{CrmPort, MemoryCrm, OpportunityStage};
use crate::customers::state::{CustomerState, CustomerStore, MemoryCustomers};
use crate::queue::MemoryQueue;
use crate::storage::{MemoryStore, ObjectStore};
use crate::telemetry::Tally;
use chrono::{Days, NaiveDate, TimeZone, Utc};
use std::sync::Arc;

const JOBS: &str = "http://q/revenue-jobs";
const NOTES: &str = "http://q/notifications";

struct World {
    ops: RevenueOps,
    customers: Arc<MemoryCustomers>,
    revenue: Arc<MemoryRevenue>,
    billing: Arc<MemoryBilling>,
    crm: Arc<MemoryCrm>,
    queue: Arc<MemoryQueue>,
    files: Arc<MemoryStore>,
}

fn world() -> World {
    let customers = Arc::new(MemoryCustomers::new());
    let revenue = Arc::new(MemoryRevenue::new());
    let billing = Arc::new(MemoryBilling::new());
    let crm = Arc::new(MemoryCrm::new());
    let queue = Arc::new(MemoryQueue::new());
    let files = Arc::new(MemoryStore::new());
    let ops = RevenueOps::new(
        Ports {
            customers: customers.clone(),
            revenue: revenue.clone(),
            usage: billing.clone(),
            dunning: billing.clone(),
            crm: crm.clone() as Arc<dyn CrmPort>,
            queue: queue.clone(),
            files: files.clone(),
            book: Arc::new(crate::billing::pricebook::PriceBook::embedded().unwrap()),
        },
        Settings::bundled(JOBS, NOTES).unwrap(),
    );
    World {
        ops,
        customers,
        revenue,
        billing,
        crm,
        queue,
        files,
    }
}

impl World {
    async fn put(&self, state: CustomerState) {
        let mut s = state;
        s.version = self
            .customers
            .load(&s.customer_id)
            .await
            .unwrap()
            .map_or(0, |c| c.version);
        self.customers.save(&s).await.unwrap();
    }

    async fn usage(&self, customer: &str, sub: &str, metric: &str, day: NaiveDate, value: i64) {
        let u = Usage {
            id: format!("{customer}-{metric}-{day}"),
            customer: customer.into(),
            subscription: sub.into(),
            metric: metric.into(),
            value: Quantity::from_int(value),
            timestamp: Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).unwrap()),
            installation: None,
        };
        assert!(
            self.billing
                .put_records(&[u], None)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// 60 days of steady usage ending `to`, `per_day` in the last 30 days.
    async fn steady(
        &self,
        customer: &str,
        sub: &str,
        to: NaiveDate,
        before: i64,
        recent: i64,
        users: i64,
    ) {
        for back in 0..60 {
            let day = to - Days::new(back);
            let v = if back < 30 { recent } else { before };
            self.usage(customer, sub, "api_calls", day, v).await;
        }
        self.usage(customer, sub, "active_users", to, users).await;
    }

    async fn job(&self, day: &str, customer: &str) -> super::service::CustomerOutcome {
        self.ops
            .run_customer(date(day), customer, &Tally::new("t", "revenue-ops"))
            .await
            .unwrap()
    }
}

fn yearly(id: &str) -> CustomerState {
    customer(
        id,
        vec![(
            "sub_y",
            term(
                "year",
                vec![P(
                    "2025-06-01",
                    "active",
                    Some(usd(10_000)),
                    10,
                    "2026-06-01",
                )],
            ),
        )],
    )
}

#[tokio::test]
async fn plan_writes_snapshot_files_report_and_one_job_per_customer() {
    let w = world();
    for s in fixture() {
        w.put(s).await;
    }
    w.put(CustomerState::new("cus_nothing_bought")).await;
    let tally = Tally::new("t", "revenue-ops");
    let out = w
        .ops
        .run(
            Job::Run {
                date: Some(date("2026-02-28")),
            },
            date("2026-03-01"),
            &tally,
        )
        .await
        .unwrap();
    assert_eq!(out["mrr"], 46_300);
    assert_eq!(
        out["jobs"], 9,
        "every customer who bought something, not the others"
    );
    let jobs = w.queue.sent(JOBS);
    assert_eq!(jobs.len(), 9);
    let job: Job = serde_json::from_str(&jobs[0]).unwrap();
    assert!(matches!(job, Job::Customer { .. }));
    let mut keys = w.files.keys();
    keys.sort();
    assert_eq!(
        keys,
        [
            "metrics/daily/2026-02-28.csv",
            "metrics/daily/2026-02-28.json",
            "metrics/monthly/2026-02.csv",
            "reports/monthly/2026-02.html"
        ]
    );
    let html = String::from_utf8(
        w.files
            .get("reports/monthly/2026-02.html")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(html.contains("<svg") && !html.contains("<script"));
    assert_eq!(tally.get("MRR"), Some(46_300.0));
    // A rerun of the date: the same snapshot, the same objects.
    let first = w
        .revenue
        .snapshots("2026-02-28", "2026-02-28")
        .await
        .unwrap();
    w.ops
        .run(
            Job::Run {
                date: Some(date("2026-02-28")),
            },
            date("2026-03-05"),
            &tally,
        )
        .await
        .unwrap();
    assert_eq!(
        w.revenue
            .snapshots("2026-02-28", "2026-02-28")
            .await
            .unwrap(),
        first
    );
    assert_eq!(w.files.keys().len(), 4);
    // A date in the future is refused.
    let e = w
        .ops
        .run(
            Job::Run {
                date: Some(date("2026-03-02")),
            },
            date("2026-03-01"),
            &tally,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("future"), "{e}");
}

#[tokio::test]
async fn the_snapshot_does_not_depend_on_the_crm() {
    let w = world();
    w.put(yearly("A")).await;
    w.crm.set_failing(true);
    let tally = Tally::new("t", "revenue-ops");
    w.ops
        .run(
            Job::Run {
                date: Some(date("2026-03-02")),
            },
            date("2026-03-03"),
            &tally,
        )
        .await
        .unwrap();
    assert_eq!(
        w.revenue
            .snapshots("2026-03-02", "2026-03-02")
            .await
            .unwrap()
            .len(),
        1
    );
    // The customer job fails (the queue retries it) and leaves no state behind.
    let e = w.ops.run_customer(date("2026-03-02"), "A", &tally).await;
    assert!(e.is_err());
    assert!(w.revenue.load("A").await.unwrap().is_none());
    w.crm.set_failing(false);
    let out = w.job("2026-03-02", "A").await;
    assert_eq!(out.renewals_opened, 1);
    assert_eq!(w.crm.opportunities().len(), 1);
}

#[tokio::test]
async fn a_renewal_is_opened_once_however_often_the_day_runs() {
    let w = world();
    w.put(yearly("A")).await;
    w.steady("A", "sub_y", date("2026-03-02"), 100, 100, 9)
        .await;
    let first = w.job("2026-03-02", "A").await;
    let h = w.crm.health("A").unwrap();
    assert_eq!(
        (h.score, h.band.as_str(), h.active_users, h.licensed_seats),
        (Some(100), "healthy", Some(9), Some(10))
    );
    assert!(
        h.usage_summary.starts_with("api_calls "),
        "{}",
        h.usage_summary
    );
    assert_eq!(
        (first.renewals_opened, first.score, first.band.as_str()),
        (1, Some(100), "healthy")
    );
    let again = w.job("2026-03-02", "A").await;
    assert_eq!(
        (again.renewals_opened, again.crm_records),
        (0, 0),
        "nothing changed"
    );
    for day in ["2026-03-03", "2026-03-04"] {
        assert_eq!(w.job(day, "A").await.renewals_opened, 0);
    }
    let opps = w.crm.opportunities();
    assert_eq!(opps.len(), 1);
    let o = &opps[0];
    assert_eq!(o.external_id, "sub_y:2026-06-01");
    assert_eq!(
        (o.stage, o.close_date.as_str(), o.owner_id.as_str()),
        (OpportunityStage::Open, "2026-06-01", "005OWNER")
    );
    assert_eq!(o.amount, Some(usd(120_000)));
    // Two days on, the last 30 days miss two days of usage (2 800 against 3 000: -6.7%, 0.8
    // of 30) and there is no license (its 10 drop out): 84 / 90 -> 93, written that day.
    let h = w.crm.health("A").unwrap();
    assert_eq!((h.scored_on.as_str(), h.score), ("2026-03-04", Some(93)));
    // Cancelled: closed lost.
    let mut s = w.customers.load("A").await.unwrap().unwrap();
    let t = s.subscriptions.get_mut("sub_y").unwrap();
    t.status = "canceled".into();
    w.put(s).await;
    assert_eq!(w.job("2026-03-05", "A").await.renewals_lost, 1);
    assert_eq!(w.crm.opportunities()[0].stage, OpportunityStage::ClosedLost);
}

#[tokio::test]
async fn an_early_warning_is_raised_once_per_entry_into_at_risk() {
    let w = world();
    w.put(yearly("A")).await;
    // Usage collapses and the customer is past due.
    w.steady("A", "sub_y", date("2026-03-02"), 1_000, 10, 1)
        .await;
    crate::billing::ports::DunningStore::save(
        w.billing.as_ref(),
        "A",
        &crate::billing::dunning::Dunning {
            status: crate::billing::dunning::Status::PastDue,
            ..Default::default()
        },
        0,
    )
    .await
    .unwrap();
    let out = w.job("2026-03-02", "A").await;
    assert_eq!(out.band, "at_risk");
    assert_eq!(out.warning.as_deref(), Some("entered_at_risk"));
    let notes = w.queue.sent(NOTES);
    assert_eq!(notes.len(), 1);
    let note: serde_json::Value = serde_json::from_str(&notes[0]).unwrap();
    assert_eq!(note["type"], "customer.health");
    assert_eq!(note["warning"], "entered_at_risk");
    assert_eq!(note["id"], "health:A:2026-03-02");
    let tasks = w.crm.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        (tasks[0].owner_id.as_str(), tasks[0].priority.as_str()),
        ("005OWNER", "High")
    );
    // Still at risk the next days: no second warning.
    for day in ["2026-03-02", "2026-03-03", "2026-03-04"] {
        assert_eq!(w.job(day, "A").await.warning, None, "{day}");
    }
    assert_eq!(w.queue.sent(NOTES).len(), 1);
    assert_eq!(w.crm.tasks().len(), 1);
}

#[tokio::test]
async fn a_customer_without_usage_says_no_data() {
    let w = world();
    w.put(yearly("A")).await;
    let out = w.job("2026-03-02", "A").await;
    assert_eq!(
        (out.score, out.band.as_str(), out.warning),
        (None, "no_data", None)
    );
    let h = w.crm.health("A").unwrap();
    assert_eq!(h.score, None);
    assert!(
        h.reasons.starts_with("no data: no usage history"),
        "{}",
        h.reasons
    );
    assert_eq!(
        w.revenue
            .bands_on("2026-03-02")
            .await
            .unwrap()
            .get("no_data"),
        Some(&1)
    );
    assert!(w.revenue.bands_on("2026-03-01").await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_jobs_are_refused_clearly() {
    let w = world();
    let tally = Tally::new("t", "revenue-ops");
    let e = w
        .ops
        .run_customer(date("2026-03-02"), "cus_missing", &tally)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no customer cus_missing"), "{e}");
    for bad in [
        r#"{"action":"run","date":"2026-13-01"}"#,
        r#"{"action":"explode"}"#,
        r#"{"action":"customer","date":"2026-03-01"}"#,
    ] {
        assert!(serde_json::from_str::<Job>(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_drop_of_more_than_the_configured_points_in_a_week_warns_once() {
    let w = world();
    w.put(yearly("A")).await;
    // Healthy on the 1st: steady usage, 9 of 10 seats.
    w.steady("A", "sub_y", date("2026-03-01"), 100, 100, 9)
        .await;
    let first = w.job("2026-03-01", "A").await;
    assert_eq!((first.score, first.warning), (Some(100), None));
    // A week later: 2 of 10 seats in use (-25 of 90) and usage still there: 72, still
    // healthy, but 28 points down in a week.
    w.usage("A", "sub_y", "active_users", date("2026-03-08"), 2)
        .await;
    for back in 0..7 {
        w.usage(
            "A",
            "sub_y",
            "api_calls",
            date("2026-03-08") - Days::new(back),
            100,
        )
        .await;
    }
    let later = w.job("2026-03-08", "A").await;
    assert_eq!(later.band, "healthy", "{later:?}");
    assert_eq!(later.warning.as_deref(), Some("score_dropped"), "{later:?}");
    assert_eq!(w.queue.sent(NOTES).len(), 1);
    let note: serde_json::Value = serde_json::from_str(&w.queue.sent(NOTES)[0]).unwrap();
    assert_eq!(note["type"], "customer.health");
    assert_eq!(note["warning"], "score_dropped");
    // The next day: no second warning for the same drop.
    for back in 0..1 {
        w.usage(
            "A",
            "sub_y",
            "api_calls",
            date("2026-03-09") - Days::new(back),
            100,
        )
        .await;
    }
    assert_eq!(w.job("2026-03-09", "A").await.warning, None);
    assert_eq!(w.crm.tasks().len(), 1);
}
