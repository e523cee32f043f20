//! What each message usage-billing receives means, and what it does: the rules that sit
//! between "a queue record arrived" and a [`Billing`] service call, free of Lambda types.
//!
//! - A body with `"action"` is a [`Job`] (billing-jobs, or a direct invocation).
//! - An [`EventMessage`] from `telemetry` of type `usage.reported` carries usage records in
//!   `data.records` (usage-events).
//! - An [`EventMessage`] from `stripe` is a billing event: subscription view, dunning
//!   (billing-events).
//! - The monthly EventBridge `Scheduled Event`, or `{"action": "plan"}` without `period`,
//!   plans the month before now.
//!
//! Every outcome is counted in the caller's [`Tally`] under one name each (`UsageAccepted`,
//! `InvoicesCreated`, `InvoicesAwaitingTaxAddress`, ...), so the function's metrics name
//! business outcomes.

use super::Money;
use super::period::Period;
use super::service::{BillOutcome, Billing, Job};
use crate::error::{Error, Result};
use crate::queue::EventMessage;
use crate::telemetry::Tally;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Why a bill job left its invoice unfinalized (the job's answer says it).
pub const TAX_ADDRESS_REASON: &str = "Stripe Tax cannot tax the customer's address \
(customer_tax_location_invalid): the invoice is not finalized and the customer was asked for \
an address; bill again once it is fixed";

impl Job {
    /// The job a direct invocation asks for: `{"action": ...}`, or the schedule's event.
    pub fn from_invocation(payload: Value) -> Result<Job> {
        if payload.get("action").is_some() {
            serde_json::from_value(payload)
                .map_err(|e| Error::Invalid(format!("not a billing action: {e}")))
        } else if payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
            Ok(Job::Plan {
                period: None,
                close_early: false,
            })
        } else {
            Err(Error::Invalid("unrecognised event shape".into()))
        }
    }
}

impl Billing {
    /// One queue message, by its body (`message_id` names it in errors).
    pub async fn handle_message(
        &self,
        body: Value,
        message_id: &str,
        now: DateTime<Utc>,
        tally: &Tally,
    ) -> Result<()> {
        if body.get("action").is_some() {
            let job: Job = serde_json::from_value(body).map_err(|e| {
                Error::Invalid(format!(
                    "message {message_id} is not a valid job: {}",
                    crate::error::json_error(&e)
                ))
            })?;
            return self.run_job(job, now, tally).await.map(|_| ());
        }
        let msg: EventMessage = serde_json::from_value(body).map_err(|e| {
            Error::Invalid(format!(
                "message {message_id} is neither a job nor an event: {}",
                crate::error::json_error(&e)
            ))
        })?;
        match msg.source.as_str() {
            "telemetry" if msg.event_type == "usage.reported" => {
                let records = msg
                    .event
                    .pointer("/data/records")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        Error::Invalid(format!("usage event {} has no data.records", msg.id))
                    })?;
                let rep = self.ingest(records, now).await?;
                let late = rep
                    .rejected
                    .iter()
                    .filter(|r| r.reason.list() == "late")
                    .count() as u64;
                tally.count("UsageAccepted", rep.accepted);
                tally.count("UsageDuplicates", rep.duplicates);
                tally.count("UsageLate", late);
                tally.count("UsageRejected", rep.rejected.len() as u64 - late);
                tracing::info!(event_id = %msg.id, accepted = rep.accepted, duplicates = rep.duplicates, refused = rep.rejected.len(), "usage ingested");
                Ok(())
            }
            "stripe" => {
                let handled = self.apply_event(&msg).await?;
                tally.one(if handled {
                    "BillingEventsApplied"
                } else {
                    "BillingEventsIgnored"
                });
                Ok(())
            }
            other => Err(Error::Invalid(format!(
                "event {} from {other}/{} is not for usage-billing",
                msg.id, msg.event_type
            ))),
        }
    }

    /// Runs one job and answers what it did (the direct invocation's response).
    pub async fn run_job(&self, job: Job, now: DateTime<Utc>, tally: &Tally) -> Result<Value> {
        match job {
            Job::Plan {
                period,
                close_early,
            } => {
                let period = period.unwrap_or_else(|| Period::of(now).prev());
                let n = if close_early {
                    tracing::warn!(%period, "closing the period before its end, as asked");
                    self.plan_closing_early(period).await?
                } else {
                    self.plan(period, now).await?
                };
                tally.count("PlanShardsSent", n as u64);
                Ok(json!({"action": "plan", "period": period, "shard_jobs": n}))
            }
            Job::PlanShard { period, shard } => {
                let n = self.plan_shard(period, shard).await?;
                tally.count("BillJobsSent", n as u64);
                Ok(
                    json!({"action": "plan_shard", "period": period, "shard": shard, "bill_jobs": n}),
                )
            }
            Job::Bill { customer, period } => {
                let outcome = self.bill(&customer, period).await.inspect_err(|e| {
                    // Waiting (usage settling, another run's lease) is not a failure: the job
                    // comes back and bills then.
                    if matches!(e, Error::InProgress(_)) {
                        tally.one("InvoicesDeferred");
                        tracing::info!(customer_id = %customer, %period, reason = %e, "bill deferred");
                    } else {
                        tally.one("InvoicesFailed");
                        tracing::error!(customer_id = %customer, %period, error = %e.chain(), retryable = e.is_retryable(), "bill failed");
                    }
                })?;
                let (name, label, invoice, total) = match outcome {
                    BillOutcome::Invoiced {
                        stripe_invoice,
                        total,
                        ..
                    } => ("InvoicesCreated", "invoiced", stripe_invoice, Some(total)),
                    BillOutcome::AlreadyBilled => ("InvoicesSkipped", "already_billed", None, None),
                    BillOutcome::NothingToBill => ("InvoicesEmpty", "nothing_to_bill", None, None),
                    BillOutcome::TaxAddressRequired { stripe_invoice } => (
                        "InvoicesAwaitingTaxAddress",
                        "tax_address_required",
                        stripe_invoice,
                        None,
                    ),
                };
                tally.one(name);
                let mut answer = json!({"action": "bill", "customer": customer, "period": period,
                    "outcome": label, "stripe_invoice": invoice, "total": total});
                if label == "tax_address_required" {
                    answer["reason"] = json!(TAX_ADDRESS_REASON);
                }
                Ok(answer)
            }
            Job::SweepDunning { at } => {
                if at.is_some() {
                    tracing::warn!(at = ?at, "dunning sweep at a given time, as asked");
                }
                let report = self.sweep_dunning(at.unwrap_or(now), tally).await?;
                Ok(json!({"action": "sweep_dunning", "report": report}))
            }
            Job::GrantCredit {
                customer,
                grant_id,
                amount,
                currency,
            } => {
                let added = self
                    .grant_credit(&customer, &grant_id, Money::new(amount, currency))
                    .await?;
                Ok(
                    json!({"action": "grant_credit", "customer": customer, "grant_id": grant_id, "added": added}),
                )
            }
        }
    }
}
