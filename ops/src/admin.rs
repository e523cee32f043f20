//! The admin actions that otherwise need a hand-written JSON event: `license mint|revoke|list`
//! and `billing rerun`. They are the functions' own direct invocations
//! (`{"action": ...}`), run the function's way:
//! - on a deployed stack, the deployed function is invoked (`lambda:InvokeFunction`), so the
//!   action runs with the function's role and configuration;
//! - on the local stack, the function's handler runs in this process with the environment the
//!   template gives it (`.local/stack.json`), against the emulator.

use crate::stack::Stack;
use anyhow::{Context, Result, anyhow, bail};
use blapi::aws::Clients;
use blapi::config::Env;
use lambda_runtime::{Context as LambdaContext, LambdaEvent};
use serde_json::{Value, json};

/// The functions that take admin actions.
pub const LICENSE_MINTING: &str = "license-minting";
pub const USAGE_BILLING: &str = "usage-billing";

/// Runs `payload` as a direct invocation of `function` (its binary name).
pub async fn invoke(
    stack: &Stack,
    sdk: &aws_config::SdkConfig,
    function: &str,
    payload: Value,
) -> Result<Value> {
    if stack.endpoint.is_none() {
        return invoke_deployed(stack, sdk, function, payload).await;
    }
    let env = Env::from_map(stack.function_env(sdk, function).await?);
    let clients = Clients::new(sdk);
    let event = LambdaEvent::new(payload, LambdaContext::default());
    let answer = match function {
        LICENSE_MINTING => {
            use license_minting::handler::{App, Ports};
            let config = blapi::licensing::Config::from_env(&env)?;
            let ports = Ports::connect(&config, &clients).await?;
            App::new(config, ports).handle(event).await
        }
        USAGE_BILLING => {
            use usage_billing::handler::{App, Ports};
            let config = blapi::billing::Config::from_env(&env)?;
            let ports = Ports::connect(&config, &clients).await?;
            App::new(config, ports).handle(event).await
        }
        other => bail!("{other} takes no admin actions here"),
    };
    answer.map_err(|e| anyhow!("{function}: {}", e.chain()))
}

async fn invoke_deployed(
    stack: &Stack,
    sdk: &aws_config::SdkConfig,
    function: &str,
    payload: Value,
) -> Result<Value> {
    let name = stack.function_name(function)?;
    let out = aws_sdk_lambda::Client::new(sdk)
        .invoke()
        .function_name(name)
        .payload(aws_sdk_lambda::primitives::Blob::new(serde_json::to_vec(
            &payload,
        )?))
        .send()
        .await
        .map_err(|e| anyhow!("invoking {name}: {e:?}"))?;
    let body: Value = out
        .payload()
        .map(|b| serde_json::from_slice(b.as_ref()))
        .transpose()
        .context("the function's answer is not JSON")?
        .unwrap_or(Value::Null);
    if let Some(kind) = out.function_error() {
        bail!("{function} failed ({kind}): {body}");
    }
    Ok(body)
}

/// `license mint --subscription S`: the subscription's current period, licensed now.
pub fn mint(subscription: &str) -> Value {
    json!({"action": "mint", "subscription": subscription})
}

/// `license revoke --license L --reason R`.
pub fn revoke(license_id: &str, reason: &str) -> Value {
    json!({"action": "revoke", "license_id": license_id, "reason": reason})
}

/// The public key and revocation list republished with the key the alias names now (the end
/// of `license rotate-key`).
pub fn publish() -> Value {
    json!({"action": "publish"})
}

/// `license list --customer C` or `--subscription S`.
pub fn list(customer: Option<&str>, subscription: Option<&str>) -> Result<Value> {
    match (customer, subscription) {
        (Some(c), None) => Ok(json!({"action": "list", "customer": c})),
        (None, Some(s)) => Ok(json!({"action": "list", "subscription": s})),
        _ => bail!("name exactly one of --customer or --subscription"),
    }
}

/// `billing rerun --period P [--customer C]`: the whole period planned again (each
/// customer's job is idempotent: an invoice already made is found, not made twice), or one
/// customer billed.
pub fn rerun(period: &str, customer: Option<&str>) -> Result<Value> {
    let p: Vec<&str> = period.split('-').collect();
    if p.len() != 2
        || p[0].len() != 4
        || p[1].len() != 2
        || !period.chars().all(|c| c.is_ascii_digit() || c == '-')
    {
        bail!("--period must be YYYY-MM, not {period:?}");
    }
    Ok(match customer {
        Some(c) => json!({"action": "bill", "period": period, "customer": c}),
        None => json!({"action": "plan", "period": period}),
    })
}

/// The logical id of the function that seals the archive and recovers missed Stripe events
/// (the same binary as the intake).
pub const ARCHIVE_MAINTENANCE: &str = "WebhookArchiveMaintenanceFunction";

/// `archive seal [--hour H] [--all]`: the archive's seal from here (the same code as the
/// hourly schedule), on the stack's bucket with the operator's credentials.
pub async fn seal(
    stack: &Stack,
    sdk: &aws_config::SdkConfig,
    hour: Option<&str>,
    all: bool,
) -> Result<blapi::archive::SealReport> {
    let store =
        blapi::storage::S3Store::new(Clients::new(sdk).s3().clone(), stack.bucket()?.to_owned());
    let now = chrono::Utc::now();
    let report = match hour {
        Some(text) => {
            let hour = blapi::archive::Hour::parse(text)
                .with_context(|| format!("--hour {text:?} is not YYYY-MM-DDTHH"))?;
            let done = blapi::archive::seal_hour(&store, hour)
                .await
                .map_err(|e| anyhow!("sealing {hour}: {}", e.chain()))?;
            blapi::archive::SealReport {
                merged: done.merged,
                events: done.events,
                duplicates: done.duplicates,
                hours: vec![done],
                skipped: Vec::new(),
            }
        }
        None => blapi::archive::seal(&store, now, all)
            .await
            .map_err(|e| anyhow!("sealing: {}", e.chain()))?,
    };
    Ok(report)
}

/// `stripe recover --since T`: the Stripe events that were not delivered, fed through the
/// intake's own path (the events queue, then the archiver) from here, with the configuration of
/// the function that runs it daily (`WebhookArchiveMaintenanceFunction`: the Stripe API, the
/// events queue, the archive that tells delivered events from missed ones).
pub async fn recover_stripe(
    stack: &Stack,
    sdk: &aws_config::SdkConfig,
    since: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
) -> Result<blapi::webhook::recovery::RecoveryReport> {
    use webhook_intake::handler::{App, Ports};
    let clients = Clients::new(sdk);
    let env = Env::from_map(stack.function_env_of(sdk, ARCHIVE_MAINTENANCE).await?);
    let config = blapi::webhook::Config::from_env(&env)?;
    let app = App::new(config.clone(), Ports::connect(&config, &clients).await?);
    let stripe_api = config
        .stripe_api
        .as_ref()
        .context("the archive maintenance function's configuration names no Stripe API key")?;
    let stripe = blapi::stripe::StripeClient::from_secret(stripe_api, clients.secrets()).await?;
    blapi::webhook::recovery::recover_stripe(
        &stripe,
        app.intake(),
        Some(app.store().as_ref()),
        since,
        chrono::Utc::now(),
        dry_run,
    )
    .await
    .map_err(|e| anyhow!("recovery: {}", e.chain()))
}
