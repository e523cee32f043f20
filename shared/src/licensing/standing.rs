//! What payment means for licenses: suspension for non-payment and reinstatement (from
//! dunning's `customer.standing` events), and revocation after a full refund or a lost
//! dispute.
//!
//! # Suspension
//! Dunning's suspend step sends `customer.standing {suspended: true, seq}`; a payment sends
//! `{suspended: false, seq + 1}`. The store keeps the newest standing per customer
//! ([`LicenseStore::set_standing`]: a conditional write on `seq`), so a stale or duplicated
//! message changes nothing whatever the arrival order.
//! - **Suspend**: every ACTIVE license of the customer is revoked with reason `suspended`
//!   (effective at once) and the signed revocation list republished, so an offline verifier
//!   refuses the file as *suspended* ([`super::VerifyError::Suspended`]); the provisioner is
//!   told `workspace.suspend`.
//! - **Reinstate**: each subscription is reconciled: its period's head is a license suspended
//!   for non-payment, so a fresh license (a new id, superseding it) is minted for the rest of
//!   the term, and the provisioner is told `workspace.resume`. The suspended file stays listed.
//! - **A payment while the suspension is applied**: the suspension re-reads the standing when
//!   it is done; if a newer standing (reinstated) was recorded meanwhile, it reinstates at once,
//!   so the customer always ends active with a valid license.
//!
//! # Refunds and disputes
//! `charge.refunded` with the whole amount refunded, and `charge.dispute.closed` with status
//! `lost`, revoke every license of the subscription the charge paid (reason `refunded`). The
//! charge is read again from Stripe (the event's copy may be stale); a partial refund, a won
//! dispute or a charge of no subscription changes nothing.

use super::revocation::RevocationReason;
use super::service::{LicenseService, Outcome};
use super::store::{LicenseStatus, Standing};
use super::verify::GRACE_PERIOD_MS;
use crate::error::{Error, Result};
use crate::events::{CustomerStanding, Internal, WorkspaceChange};
use crate::queue::EventMessage;
use std::collections::BTreeSet;

impl LicenseService {
    /// Applies dunning's standing for a customer (see the module doc).
    pub async fn apply_standing(&self, s: &CustomerStanding) -> Result<Outcome> {
        let standing = Standing {
            suspended: s.suspended,
            seq: s.seq,
        };
        if !self.store().set_standing(&s.customer, standing).await? {
            // Stale or duplicated: the newest standing is applied already. Finish its work
            // anyway (a crash may have stopped it midway); both paths are idempotent.
            let Some(current) = self.store().standing(&s.customer).await? else {
                return Ok(Outcome::Skipped {
                    reason: "no standing recorded".into(),
                });
            };
            if current.seq != s.seq {
                return Ok(Outcome::Skipped {
                    reason: format!(
                        "standing {} of {} is older than the recorded {}",
                        s.seq, s.customer, current.seq
                    ),
                });
            }
        }
        if s.suspended {
            let suspended = self.suspend_customer(&s.customer).await?;
            self.tell_provisioner(Internal::WorkspaceSuspend(WorkspaceChange {
                customer: s.customer.clone(),
                seq: s.seq,
                licenses: suspended.iter().map(ToString::to_string).collect(),
                reason: "non_payment".into(),
            }))
            .await?;
            // A payment recorded while the licenses were being suspended wins.
            if let Some(now) = self.store().standing(&s.customer).await?
                && !now.suspended
                && now.seq > s.seq
            {
                tracing::warn!(customer_id = %s.customer, "paid while being suspended: reinstating");
                return self.reinstate_customer(&s.customer, now.seq).await;
            }
            Ok(Outcome::Standing {
                suspended: true,
                license_ids: suspended,
            })
        } else {
            self.reinstate_customer(&s.customer, s.seq).await
        }
    }

    async fn suspend_customer(&self, customer: &str) -> Result<Vec<super::LicenseId>> {
        let now = self.now_ms();
        let mut suspended = Vec::new();
        for rec in self.store().by_customer(customer).await? {
            if rec.expires_at.saturating_add(GRACE_PERIOD_MS) < now {
                continue;
            }
            match rec.status {
                // Never activated now that the customer is suspended (the store checks):
                // suspended as it is, its file written like any revoked license's.
                LicenseStatus::Issuing => self.store_file(&rec).await?,
                LicenseStatus::Active => {}
                _ => continue,
            }
            if self
                .store()
                .revoke(&rec, RevocationReason::Suspended, now)
                .await?
            {
                tracing::warn!(license_id = %rec.license_id, customer_id = %customer, "license suspended for non-payment");
                suspended.push(rec.license_id);
            }
        }
        self.publish_revocations().await?;
        Ok(suspended)
    }

    async fn reinstate_customer(&self, customer: &str, seq: u64) -> Result<Outcome> {
        let subscriptions: BTreeSet<String> = self
            .store()
            .by_customer(customer)
            .await?
            .into_iter()
            .filter(|r| r.revoked_reason == Some(RevocationReason::Suspended))
            .map(|r| r.subscription_id)
            .collect();
        let mut fresh = Vec::new();
        for sub in subscriptions {
            match self.reconcile(&sub).await? {
                Outcome::Minted { license_id, .. } | Outcome::Existing { license_id } => {
                    fresh.push(license_id);
                }
                other => {
                    tracing::info!(subscription_id = %sub, outcome = ?other, "nothing to reinstate for this subscription");
                }
            }
        }
        self.tell_provisioner(Internal::WorkspaceResume(WorkspaceChange {
            customer: customer.to_owned(),
            seq,
            licenses: fresh.iter().map(ToString::to_string).collect(),
            reason: "paid".into(),
        }))
        .await?;
        Ok(Outcome::Standing {
            suspended: false,
            license_ids: fresh,
        })
    }

    /// Whether the customer is suspended for non-payment now (nothing is minted for them).
    pub(crate) async fn suspended(&self, customer: &str) -> Result<bool> {
        Ok(self
            .store()
            .standing(customer)
            .await?
            .is_some_and(|s| s.suspended))
    }

    /// `charge.refunded` (in full) and `charge.dispute.closed` (lost): the subscription the
    /// charge paid loses its licenses. `None` when the event is neither.
    pub async fn handle_charge_event(&self, msg: &EventMessage) -> Option<Result<Outcome>> {
        let object = msg.event.pointer("/data/object")?;
        let charge_id = match msg.event_type.as_str() {
            "charge.refunded" => object.get("id")?.as_str()?.to_owned(),
            "charge.dispute.closed" => {
                let status = object.get("status").and_then(|s| s.as_str());
                if status != Some("lost") {
                    return Some(Ok(Outcome::Skipped {
                        reason: format!("dispute closed as {}", status.unwrap_or("unknown")),
                    }));
                }
                object
                    .get("charge")
                    .and_then(|c| c.as_str().or_else(|| c.get("id")?.as_str()))?
                    .to_owned()
            }
            _ => return None,
        };
        Some(self.revoke_for_charge(&charge_id, &msg.event_type).await)
    }

    async fn revoke_for_charge(&self, charge_id: &str, event_type: &str) -> Result<Outcome> {
        if !charge_id.starts_with("ch_") && !charge_id.starts_with("py_") {
            return Err(Error::Invalid(format!(
                "{event_type}: {charge_id:?} is not a charge id"
            )));
        }
        let charge = self.stripe().charge(charge_id).await?;
        if event_type == "charge.refunded" && !charge.refunded {
            return Ok(Outcome::Skipped {
                reason: format!("charge {charge_id} is refunded only in part"),
            });
        }
        let Some(invoice) = charge.invoice else {
            return Ok(Outcome::Skipped {
                reason: format!("charge {charge_id} paid no invoice"),
            });
        };
        let Some(sub) = self.invoice_subscription(&invoice).await? else {
            return Ok(Outcome::Skipped {
                reason: format!("invoice {invoice} bills no subscription"),
            });
        };
        tracing::warn!(charge = %charge_id, subscription_id = %sub, event_type, "payment reversed: revoking the subscription's licenses");
        self.revoke_subscription(&sub, RevocationReason::Refunded)
            .await
    }
}
