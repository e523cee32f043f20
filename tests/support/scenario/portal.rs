//! The scenario's customer portal step: the buyer signs in (a token from the local identity
//! provider) and sees what the other functions made for her through portal-api's Function
//! URL — her account, her license (downloaded and verified offline), her invoice, her usage
//! priced by billing's code; she starts a purchase, previews and makes a seat change, and
//! asks for a change above the self-service limit. A second customer's token sees none of it.

use super::{Progress, World, until};
use anyhow::{Context, Result, anyhow, ensure};
use blapi_infra::idp::LocalIdp;
use serde_json::{Value, json};
use std::time::Duration;

/// What the portal showed.
#[derive(Debug, Clone)]
pub struct PortalLine {
    pub account: Value,
    pub licenses: Value,
    /// The license file as downloaded, and whether it verified offline with the published key.
    pub license_file_bytes: usize,
    pub license_file_verified: bool,
    pub license_file_matches_store: bool,
    pub invoices: Value,
    pub invoice: Value,
    pub usage: Value,
    pub checkout: Value,
    pub seat_preview: Value,
    pub seat_change: Value,
    /// The same change's `Idempotency-Key` sent again: the stored answer, replayed.
    pub seat_change_replayed: bool,
    pub seats_in_stripe: i64,
    pub large_change: Value,
    pub opportunity: Value,
    /// (what, status) a second customer's token got for the buyer's resources.
    pub other_customer: Vec<(String, u16)>,
    pub without_token: u16,
}

/// One answer: status, headers we look at, JSON (or the raw bytes' length).
struct Answer {
    status: u16,
    replayed: bool,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One portal call. A GET, or a POST with an idempotency key, is retried on a 5xx or a lost
/// answer, as the portal's client does (a POST without a key is sent once).
async fn call(
    w: &World<'_>,
    method: &str,
    path: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<Value>,
) -> Result<Answer> {
    let retried = method == "GET" || key.is_some();
    let mut wait = std::time::Duration::from_millis(250);
    for _ in 0..8 {
        match call_once(w, method, path, token, key, body.clone()).await {
            Ok(a) if a.status < 500 => return Ok(a),
            Ok(a) if !retried => return Ok(a),
            Err(e) if !retried => return Err(e),
            _ => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(8));
    }
    call_once(w, method, path, token, key, body).await
}

async fn call_once(
    w: &World<'_>,
    method: &str,
    path: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<Value>,
) -> Result<Answer> {
    let url = w.functions.url("portal-api", path);
    let mut req = match method {
        "POST" => w.http.post(url),
        _ => w.http.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    let body = resp.bytes().await?.to_vec();
    Ok(Answer {
        status,
        replayed,
        body,
    })
}

async fn ok(w: &World<'_>, path: &str, token: &str) -> Result<Value> {
    let a = call(w, "GET", path, Some(token), None, None).await?;
    ensure!(
        a.status == 200,
        "GET {path}: {} {}",
        a.status,
        String::from_utf8_lossy(&a.body)
    );
    Ok(a.json())
}

/// The portal step. `customer`, `subscription`, `email`: the buyer; `period`: the billed
/// period; `public_key`: the published license key.
pub async fn portal(
    w: &World<'_>,
    progress: Progress<'_>,
    customer: &str,
    subscription: &str,
    email: &str,
    period: &str,
    public_key: &blapi::licensing::PublicKey,
) -> Result<PortalLine> {
    progress(
        "the customer portal: the buyer signs in and sees her account, license, invoice and usage",
    );
    let idp = LocalIdp::load(w.stack).await?;
    let token = idp.customer_token(customer, email);
    let account = ok(w, "v1/account", &token).await?;
    let licenses = ok(w, "v1/licenses", &token).await?;
    let first = licenses["licenses"][0]["id"]
        .as_str()
        .context("the portal lists a license")?
        .to_owned();
    let file = call(
        w,
        "GET",
        &format!("v1/licenses/{first}/file"),
        Some(&token),
        None,
        None,
    )
    .await?;
    ensure!(file.status == 200, "license file: {}", file.status);
    let text = String::from_utf8(file.body.clone())?;
    let verified = blapi::licensing::verify_license(
        text.trim(),
        public_key,
        None,
        chrono::Utc::now().timestamp_millis(),
    )
    .is_ok();
    let stored = w
        .store
        .get(&format!("licenses/{customer}/{first}.mattermost-license"))
        .await
        .map_err(|e| anyhow!("{}", e.chain()))?;
    let invoices = ok(w, "v1/invoices", &token).await?;
    let invoice = ok(w, &format!("v1/invoices/{period}"), &token).await?;
    let usage = ok(w, &format!("v1/usage?period={period}"), &token).await?;

    progress(
        "the portal: a self-service purchase (a Checkout Session), a seat change previewed then applied, one above the $5 000 limit sent to sales",
    );
    let checkout = call(
        w,
        "POST",
        "v1/checkout-sessions",
        Some(&token),
        Some(&format!("buy-{}", w.run)),
        Some(json!({"sku": "professional", "seats": 3})),
    )
    .await?;
    ensure!(
        checkout.status == 201,
        "checkout: {} {}",
        checkout.status,
        String::from_utf8_lossy(&checkout.body)
    );
    let seat_preview = ok(
        w,
        &format!("v1/subscriptions/{subscription}/seats?seats=6"),
        &token,
    )
    .await?;
    let change_body = json!({"seats": 6, "proration_date": seat_preview["proration"]["date"]});
    let key = format!("seats-6-{}", w.run);
    let path = format!("v1/subscriptions/{subscription}/seats");
    let seat_change = call(
        w,
        "POST",
        &path,
        Some(&token),
        Some(&key),
        Some(change_body.clone()),
    )
    .await?;
    ensure!(
        seat_change.status == 200,
        "seat change: {} {}",
        seat_change.status,
        String::from_utf8_lossy(&seat_change.body)
    );
    let again = call(
        w,
        "POST",
        &path,
        Some(&token),
        Some(&key),
        Some(change_body),
    )
    .await?;
    let sub: Value = w
        .stripe
        .get(&format!("subscriptions/{subscription}"), &[])
        .await
        .map_err(|e| anyhow!("{}", e.chain()))?;
    let large_change = call(
        w,
        "POST",
        &path,
        Some(&token),
        Some(&format!("seats-40-{}", w.run)),
        Some(json!({"seats": 40})),
    )
    .await?;
    ensure!(
        large_change.status == 202,
        "large change: {} {}",
        large_change.status,
        String::from_utf8_lossy(&large_change.body)
    );
    let external_id = large_change.json()["opportunity"]["external_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let crm = blapi::crm::SinkCrm::new(
        w.clients.dynamodb().clone(),
        w.stack.physical("CrmTable"),
        w.store.clone(),
    );
    use blapi::crm::CrmPort;
    let opportunity = until(
        "the opportunity in the CRM",
        Duration::from_secs(30),
        || async {
            crm.fetch(blapi::crm::CrmObject::Opportunity, &external_id)
                .await
                .map_err(|e| anyhow!("{e}"))
        },
    )
    .await?;

    progress("the portal: a second customer's token sees none of the buyer's resources");
    let other = idp.customer_token("cus_someoneelse", "someone@else.example");
    let mut other_customer = Vec::new();
    for (what, path) in [
        ("licenses", "v1/licenses".to_owned()),
        ("license", format!("v1/licenses/{first}")),
        ("license file", format!("v1/licenses/{first}/file")),
        ("invoices", "v1/invoices".to_owned()),
        ("invoice", format!("v1/invoices/{period}")),
        ("account", "v1/account".to_owned()),
        (
            "seat preview",
            format!("v1/subscriptions/{subscription}/seats?seats=6"),
        ),
        (
            "buyer's account by name",
            format!("v1/account?customer={customer}"),
        ),
    ] {
        let a = call(w, "GET", &path, Some(&other), None, None).await?;
        let status = if a.status == 200 {
            // A list answers 200: it must be empty.
            let v = a.json();
            let empty = ["licenses", "invoices"].iter().all(|k| {
                v.get(k)
                    .is_none_or(|l| l.as_array().is_some_and(Vec::is_empty))
            });
            if empty { 200 } else { 299 }
        } else {
            a.status
        };
        other_customer.push((what.to_owned(), status));
    }
    let without_token = call(w, "GET", "v1/licenses", None, None, None)
        .await?
        .status;
    Ok(PortalLine {
        account,
        licenses,
        license_file_bytes: file.body.len(),
        license_file_verified: verified,
        license_file_matches_store: stored.as_deref() == Some(file.body.as_slice()),
        invoices,
        invoice,
        usage,
        checkout: checkout.json(),
        seat_preview,
        seat_change: seat_change.json(),
        seat_change_replayed: again.replayed && again.json() == seat_change.json(),
        seats_in_stripe: sub["items"]["data"][0]["quantity"].as_i64().unwrap_or(-1),
        large_change: large_change.json(),
        opportunity,
        other_customer,
        without_token,
    })
}

/// The buyer's own privacy request through the portal (`kind` for the signed-in person);
/// waits until privacy-requests closed it and returns its status record.
pub async fn privacy_request(
    w: &World<'_>,
    customer: &str,
    email: &str,
    kind: &str,
) -> Result<Value> {
    let idp = LocalIdp::load(w.stack).await?;
    let token = idp.customer_token(customer, email);
    let a = call(
        w,
        "POST",
        "v1/privacy-requests",
        Some(&token),
        Some(&format!("privacy-{kind}-{}", w.run)),
        Some(json!({"kind": kind, "jurisdiction": "gdpr"})),
    )
    .await?;
    ensure!(
        a.status == 202,
        "portal privacy request: {} {}",
        a.status,
        String::from_utf8_lossy(&a.body)
    );
    let id = a.json()["request_id"]
        .as_str()
        .context("the request's id")?
        .to_owned();
    super::wait_closed(w, &id, kind).await
}

/// A customer of its own for the API's property test: a localstripe customer with a card and a
/// 5-seat subscription of the scenario's plan. Returns (customer, subscription, token).
pub async fn fuzz_subject(w: &World<'_>) -> Result<(String, String, String)> {
    let (cus, sub) = w.subscribe("Fuzz Test", None, "Fuzz Inc", 5).await?;
    let sub_id = sub["id"].as_str().context("subscription id")?.to_owned();
    let idp = LocalIdp::load(w.stack).await?;
    let token = idp.customer_token(&cus, "fuzz@fuzz.example");
    Ok((cus, sub_id, token))
}
