//! The period-close race: usage written while its period closes is billed or listed as late,
//! never neither and never both. An ingest is held between its check of the period and its
//! write (a store that waits before writing), the period is closed and billed meanwhile.

use super::tests::billing_on;
use super::*;
use crate::billing::memory::{HeldWrites, MemoryBilling};
use crate::queue::MemoryQueue;
use crate::storage::MemoryStore;
use crate::stripe::MemoryStripe;

const WINDOW_MS: i64 = 150;
const SETTLE_MS: i64 = 400;

fn period() -> Period {
    "2026-10".parse().unwrap()
}

fn now() -> DateTime<Utc> {
    "2026-10-20T00:00:00Z".parse().unwrap()
}

fn rec(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "customer": "cus_r", "subscription": "sub_cus_r",
        "metric": "builds", "value": 1, "timestamp": "2026-10-10T10:00:00Z"})
}

async fn billing_with(hold: HashMap<String, std::time::Duration>) -> (Billing, Arc<MemoryBilling>) {
    let table = Arc::new(MemoryBilling::new());
    let stripe = Arc::new(MemoryStripe::new());
    let mut billing = billing_on(
        stripe.clone(),
        stripe,
        &table,
        &Arc::new(MemoryStore::new()),
        &Arc::new(MemoryQueue::new()),
    );
    billing.ports.usage = Arc::new(HeldWrites::new(table.clone(), hold));
    billing.config.ingest.write_window = chrono::Duration::milliseconds(WINDOW_MS);
    billing.config.ingest.settle = chrono::Duration::milliseconds(SETTLE_MS);
    table
        .upsert(&Subscription {
            customer: "cus_r".into(),
            subscription: "sub_cus_r".into(),
            plan: "cloud-pro".into(),
            quantity: 1,
            status: "active".into(),
            currency: None,
            start: 1_767_225_600, // 2026-01-01
            end: None,
            updated_at: 1,
        })
        .await
        .unwrap();
    (billing, table)
}

/// Bills once the settle time allows it (earlier runs answer "in progress").
async fn bill_when_settled(billing: &Billing) -> InvoiceRecord {
    for _ in 0..100 {
        match billing.bill("cus_r", period()).await {
            Ok(BillOutcome::Invoiced { .. }) => {
                return billing
                    .ports
                    .invoices
                    .load("cus_r", period())
                    .await
                    .unwrap()
                    .unwrap();
            }
            Err(Error::InProgress(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            other => panic!("bill: {other:?}"),
        }
    }
    panic!("never settled")
}

fn builds_billed(rec: &InvoiceRecord) -> i64 {
    rec.invoice
        .lines
        .iter()
        .filter(|l| l.metric.as_deref() == Some("builds"))
        .map(|l| l.quantity.micros() / 1_000_000)
        .sum()
}

#[tokio::test]
async fn a_write_held_past_its_window_is_listed_late_not_lost() {
    let hold = HashMap::from([(
        "held".to_owned(),
        std::time::Duration::from_millis(3 * WINDOW_MS as u64),
    )]);
    let (billing, table) = billing_with(hold).await;
    billing.ingest(&[rec("early")], now()).await.unwrap();
    // The ingest reads "open", then its write waits past the window; the period closes meanwhile.
    let ingest = {
        let b = billing.clone();
        tokio::spawn(async move { b.ingest(&[rec("held")], now()).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(WINDOW_MS as u64 / 3)).await;
    billing.plan_closing_early(period()).await.unwrap();
    let report = ingest.await.unwrap().unwrap();
    assert_eq!(report.accepted, 0);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].record_id, "held");
    assert_eq!(report.rejected[0].reason, RejectReason::PeriodClosed);
    assert!(
        table.rejected().iter().any(|r| r.record_id == "held"),
        "stored in the late list"
    );
    let invoice = bill_when_settled(&billing).await;
    assert_eq!(
        builds_billed(&invoice),
        1,
        "only the early record is billed"
    );
}

#[tokio::test]
async fn a_write_inside_its_window_is_billed_though_the_close_came_first() {
    let hold = HashMap::from([(
        "held".to_owned(),
        std::time::Duration::from_millis(WINDOW_MS as u64 / 2),
    )]);
    let (billing, table) = billing_with(hold).await;
    let ingest = {
        let b = billing.clone();
        tokio::spawn(async move { b.ingest(&[rec("held")], now()).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(WINDOW_MS as u64 / 5)).await;
    billing.plan_closing_early(period()).await.unwrap();
    // A bill run right after the close must not compose yet: the held write is still coming.
    assert!(matches!(
        billing.bill("cus_r", period()).await,
        Err(Error::InProgress(_))
    ));
    let report = ingest.await.unwrap().unwrap();
    assert_eq!((report.accepted, report.rejected.len()), (1, 0));
    let invoice = bill_when_settled(&billing).await;
    assert_eq!(builds_billed(&invoice), 1, "billed");
    assert!(table.rejected().is_empty(), "and not listed as late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_of_a_closing_period_is_billed_or_late_exactly_once() {
    // 60 ingests with holds spread over 0..3 windows; the period closes in the middle.
    let n = 60u64;
    let hold: HashMap<String, std::time::Duration> = (0..n)
        .map(|i| {
            // A fixed spread (no randomness needed): i * 7 mod 60 twentieths of 3 windows.
            let ms = (i * 7 % n) * 3 * WINDOW_MS as u64 / n;
            (format!("r{i}"), std::time::Duration::from_millis(ms))
        })
        .collect();
    let (billing, table) = billing_with(hold).await;
    let mut ingests = Vec::new();
    let mut accepted = 0;
    for i in 0..n {
        let b = billing.clone();
        let ingest = tokio::spawn(async move { b.ingest(&[rec(&format!("r{i}"))], now()).await });
        if i == 0 {
            // The first one finishes before anything closes: some records are surely billed.
            accepted += ingest.await.unwrap().unwrap().accepted;
            continue;
        }
        ingests.push(ingest);
        // Ingests keep starting over about a window, the close in the middle of them.
        tokio::time::sleep(std::time::Duration::from_millis(WINDOW_MS as u64 / 30)).await;
        if i == n / 2 {
            billing.plan_closing_early(period()).await.unwrap();
        }
    }
    for i in ingests {
        accepted += i.await.unwrap().unwrap().accepted;
    }
    let late: Vec<String> = table.rejected().into_iter().map(|r| r.record_id).collect();
    let invoice = bill_when_settled(&billing).await;
    let billed = builds_billed(&invoice);
    assert!(
        !late.is_empty() && billed > 0,
        "the race was run: {billed} billed, {} late",
        late.len()
    );
    assert_eq!(billed as u64, accepted);
    assert_eq!(billed as u64 + late.len() as u64, n, "never neither");
    let stored: HashSet<String> = table
        .records("cus_r", "sub_cus_r", period())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(late.iter().all(|id| !stored.contains(id)), "never both");
}

#[tokio::test]
async fn a_bill_job_waiting_for_the_usage_to_settle_is_deferred_not_failed() {
    let (billing, _table) = billing_with(HashMap::new()).await;
    let tally = crate::telemetry::Tally::new("test", "usage-billing");
    let job = Job::Bill {
        customer: "cus_r".into(),
        period: period(),
    };
    // The first run closes the period; the usage settles for SETTLE_MS after that.
    let err = billing
        .run_job(job.clone(), Utc::now(), &tally)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InProgress(_)), "{err:?}");
    assert!(err.is_retryable(), "the job comes back: {err:?}");
    assert_eq!(tally.get("InvoicesDeferred"), Some(1.0));
    assert_eq!(
        tally.get("InvoicesFailed"),
        None,
        "waiting is not a failure"
    );
}
