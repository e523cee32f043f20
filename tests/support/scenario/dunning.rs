//! The scenario's collections step: a second customer's card starts failing. Their invoice's
//! payment fails on localstripe (a real `invoice.payment_failed` webhook), the daily dunning
//! sweep is run with a controllable clock (`{"action": "sweep_dunning", "at": ...}`) on the
//! ladder's days, the suspension reaches license-minting (the license is listed as
//! `suspended` in the signed revocation list and refused offline as such) and the product's
//! provisioner (`workspace.suspend` on the provisioning queue). The customer then pays: a
//! fresh license for the rest of the term verifies, and the workspace is resumed.

use super::{Progress, World, until};
use anyhow::{Context, Result, anyhow, ensure};
use blapi::billing::ports::DunningStore;
use blapi::licensing::{PublicKey, VerifyError};
use serde_json::{Value, json};
use std::time::Duration;

/// What collections did.
#[derive(Debug, Clone)]
pub struct DunningLine {
    pub customer: String,
    pub email: String,
    pub invoice: String,
    /// (day of the ladder, the sweep's answer for it).
    pub sweeps: Vec<(i64, Value)>,
    /// The dunning status after each sweep.
    pub statuses: Vec<(i64, String)>,
    pub license: String,
    /// What the offline verifier said of the license after the suspension.
    pub suspended_verdict: String,
    /// The reason the signed revocation list gives for it.
    pub listed_as: String,
    /// Workspace events the provisioner received for the customer.
    pub provisioning: Vec<String>,
    pub fresh_license: String,
    pub fresh_license_valid: bool,
    pub status_after_payment: String,
}

const DAY: i64 = 86_400;

async fn dunning_state(w: &World<'_>, customer: &str) -> Result<blapi::billing::dunning::Dunning> {
    let table = blapi::billing::dynamo::DynamoBilling::new(
        w.clients.dynamodb().clone(),
        w.stack.physical("BillingTable"),
    );
    Ok(table
        .load(customer)
        .await
        .map_err(|e| anyhow!("{}", e.chain()))?
        .0)
}

async fn licenses(w: &World<'_>, customer: &str) -> Result<Vec<Value>> {
    let v = w
        .invoke(
            "license-minting",
            &json!({"action": "list", "customer": customer}),
        )
        .await?;
    Ok(v["licenses"].as_array().cloned().unwrap_or_default())
}

/// The revocation list as published (verified with the published key).
async fn revocations(w: &World<'_>, key: &PublicKey) -> Result<blapi::licensing::RevocationList> {
    let get = |k: &'static str| async move {
        w.store
            .get(k)
            .await
            .map_err(|e| anyhow!("{}", e.chain()))?
            .with_context(|| format!("{k} is published"))
    };
    let json = get(blapi::licensing::REVOCATION_LIST_KEY).await?;
    let sig = get(blapi::licensing::REVOCATION_SIGNATURE_KEY).await?;
    blapi::licensing::verify_revocation_list(&json, std::str::from_utf8(&sig)?, key)
        .map_err(|e| anyhow!("the revocation list does not verify: {e}"))
}

async fn license_file(w: &World<'_>, l: &Value) -> Result<String> {
    let key = l["file_key"].as_str().context("file key")?;
    let bytes = w
        .store
        .get(key)
        .await
        .map_err(|e| anyhow!("{}", e.chain()))?
        .with_context(|| format!("license file {key}"))?;
    Ok(String::from_utf8(bytes)?.trim().to_owned())
}

/// The workspace events on the provisioning queue for `customer` (left on the queue).
async fn provisioning_events(w: &World<'_>, customer: &str) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let out = w
            .clients
            .sqs()
            .receive_message()
            .queue_url(w.stack.physical("ProvisioningQueue"))
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await?;
        for m in out.messages() {
            let body: Value = serde_json::from_str(m.body().unwrap_or_default())?;
            if body["event"]["data"]["customer"] == customer {
                let t = body["type"].as_str().unwrap_or_default().to_owned();
                let seq = body["event"]["data"]["seq"].as_u64().unwrap_or_default();
                if !seen
                    .iter()
                    .any(|(s, k): &(u64, String)| *s == seq && *k == t)
                {
                    seen.push((seq, t));
                }
            }
        }
    }
    seen.sort();
    Ok(seen.into_iter().map(|(_, t)| t).collect())
}

pub async fn dunning(
    w: &World<'_>,
    progress: Progress<'_>,
    key: &PublicKey,
) -> Result<DunningLine> {
    let email = format!("grace.hopper+{}@compilers.example", w.run);
    progress("a second customer subscribes, then their card starts failing");
    let (cus, _sub) = w
        .subscribe("Grace Hopper", Some(&email), "Compilers Inc", 3)
        .await?;
    let first = until(
        "the second customer's license",
        Duration::from_secs(180),
        || async {
            let list = licenses(w, &cus).await?;
            Ok(list.iter().find(|l| l["status"] == "ACTIVE").cloned())
        },
    )
    .await?;
    let license = first["license_id"]
        .as_str()
        .context("license id")?
        .to_owned();
    let file = license_file(w, &first).await?;

    // The card on file now declines every charge (localstripe's magic payment method).
    let pm = w
        .stripe_post(
            "payment_methods/pm_card_chargeCustomerFail/attach",
            &[("customer", cus.clone())],
        )
        .await?;
    let pm = pm["id"].as_str().context("payment method id")?.to_owned();
    w.stripe_post(
        &format!("customers/{cus}"),
        &[("invoice_settings[default_payment_method]", pm)],
    )
    .await?;
    w.stripe_post(
        "invoiceitems",
        &[
            ("customer", cus.clone()),
            ("amount", "4900".into()),
            ("currency", "usd".into()),
            ("description", "Onboarding workshop".into()),
        ],
    )
    .await?;
    let invoice = w
        .stripe_post("invoices", &[("customer", cus.clone())])
        .await?;
    let invoice = invoice["id"].as_str().context("invoice id")?.to_owned();
    progress(&format!(
        "charging invoice {invoice}: the card declines, localstripe sends invoice.payment_failed"
    ));
    let declined = w.stripe_post(&format!("invoices/{invoice}/pay"), &[]).await;
    ensure!(
        declined.is_err(),
        "the charge should be declined: {declined:?}"
    );
    let state = until(
        "the failure in dunning",
        Duration::from_secs(120),
        || async {
            let s = dunning_state(w, &cus).await?;
            Ok(s.invoices
                .get(&invoice)
                .and_then(|f| f.first_failed_at)
                .map(|t| (s, t)))
        },
    )
    .await?;
    let (state, failed_at) = state;
    let mut statuses = vec![(0, state.status.as_str().to_owned())];

    // The daily sweep on the ladder's days, with the clock the test controls.
    let mut sweeps = Vec::new();
    for day in [1, 2, 3, 7, 14] {
        let at =
            chrono::DateTime::from_timestamp(failed_at + day * DAY + 3600, 0).context("time")?;
        progress(&format!("the daily dunning sweep, day {day} of the ladder"));
        let answer = w
            .invoke(
                "usage-billing",
                &json!({"action": "sweep_dunning", "at": at.to_rfc3339()}),
            )
            .await?;
        let s = dunning_state(w, &cus).await?;
        statuses.push((day, s.status.as_str().to_owned()));
        sweeps.push((day, answer));
    }
    ensure!(
        statuses.last().is_some_and(|(_, s)| s == "suspended"),
        "suspended on day 14: {statuses:?}"
    );

    progress("the suspension reaches license-minting: the license is listed as suspended");
    let listed = until(
        "the suspension in the revocation list",
        Duration::from_secs(120),
        || async {
            let list = revocations(w, key).await?;
            Ok(list
                .revoked
                .iter()
                .find(|e| e.id.as_str() == license)
                .map(|e| e.reason.as_str().to_owned()))
        },
    )
    .await?;
    let list = revocations(w, key).await?;
    let verdict = match blapi::licensing::verify_license(
        &file,
        key,
        Some(&list),
        chrono::Utc::now().timestamp_millis(),
    ) {
        Ok(_) => "valid".to_owned(),
        Err(e @ VerifyError::Suspended { .. }) => format!("refused: {}", e.code()),
        Err(e) => format!("refused: {} ({e})", e.code()),
    };

    progress("the customer pays with a working card: reinstated with a fresh license");
    w.stripe_post(
        &format!("customers/{cus}"),
        &[("invoice_settings[default_payment_method]", String::new())],
    )
    .await?;
    let paid = w
        .stripe_post(&format!("invoices/{invoice}/pay"), &[])
        .await?;
    ensure!(paid["status"] == "paid", "the second charge pays: {paid}");
    let fresh = until("the fresh license", Duration::from_secs(180), || async {
        let list = licenses(w, &cus).await?;
        Ok(list
            .iter()
            .find(|l| l["status"] == "ACTIVE" && l["license_id"] != license.as_str())
            .cloned())
    })
    .await?;
    let fresh_license = fresh["license_id"].as_str().unwrap_or_default().to_owned();
    let fresh_file = license_file(w, &fresh).await?;
    let list = until(
        "the list after reinstatement",
        Duration::from_secs(60),
        || async {
            let list = revocations(w, key).await?;
            Ok(list
                .revoked
                .iter()
                .all(|e| e.id.as_str() != fresh_license)
                .then_some(list))
        },
    )
    .await?;
    let fresh_license_valid = blapi::licensing::verify_license(
        &fresh_file,
        key,
        Some(&list),
        chrono::Utc::now().timestamp_millis(),
    )
    .is_ok();
    let after = until("active again", Duration::from_secs(60), || async {
        let s = dunning_state(w, &cus).await?;
        Ok((s.status.as_str() == "active").then_some(s))
    })
    .await?;
    let provisioning = until("workspace resumed", Duration::from_secs(60), || async {
        let events = provisioning_events(w, &cus).await?;
        Ok((events.len() >= 2).then_some(events))
    })
    .await?;
    Ok(DunningLine {
        customer: cus,
        email,
        invoice,
        sweeps,
        statuses,
        license,
        suspended_verdict: verdict,
        listed_as: listed,
        provisioning,
        fresh_license,
        fresh_license_valid,
        status_after_payment: after.status.as_str().to_owned(),
    })
}
