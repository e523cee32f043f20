//! `blapi-local`: runs the template on this machine.
//!
//! - `blapi-local up [--prefix P]` provisions every resource of `template.yaml` into the
//!   emulator (`BLAPI_MOTO_URL`, default `http://127.0.0.1:4599`) and writes `.local/stack.json`
//!   (names and per-function environment) and `.local/lambda.env` (the environment
//!   `cargo lambda watch --env-file` gives the functions). Safe to re-run.
//! - `blapi-local env FUNCTION` prints a function's resolved environment as `KEY=value` lines.
//! - `blapi-local map [--lambda URL] [--retry-after SECS] [--max-window SECS] [--copies N]` runs the local event-source mapper
//!   (SQS queues of the template -> functions under `cargo lambda watch`) until SIGINT/SIGTERM.
//! - `blapi-local token (--customer cus_... [--email ADDRESS] | --operator ID)` prints a portal
//!   token signed by the local identity provider (15 minutes), for `curl` against portal-api.
//! - `blapi-local schedule [--function NAME] [--input JSON]` invokes each scheduled function
//!   (or only NAME) once with its template `Input` (or JSON).

use anyhow::{Context, Result, bail};
use blapi_infra::mapper::MapperOptions;
use blapi_infra::template::Template;
use blapi_infra::{LocalStack, ProvisionOptions, default_endpoint, provision, repo_root};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn default_lambda_url() -> String {
    format!(
        "http://127.0.0.1:{}",
        std::env::var("LAMBDA_PORT").unwrap_or_else(|_| "9001".to_owned())
    )
}

fn local_dir() -> PathBuf {
    repo_root().join(".local")
}

fn load_stack() -> Result<LocalStack> {
    let path = local_dir().join("stack.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{} not found: run `make up`", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn env_lines(env: &std::collections::BTreeMap<String, String>) -> String {
    env.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = std::io::stdout().lock();
    match args.first().map(String::as_str) {
        Some("up") => {
            let prefix = args
                .iter()
                .position(|a| a == "--prefix")
                .and_then(|i| args.get(i + 1))
                .cloned()
                .unwrap_or_else(|| "blapi".to_owned());
            let stack = provision(&ProvisionOptions::new(prefix, default_endpoint())).await?;
            let dir = local_dir();
            std::fs::create_dir_all(&dir)?;
            std::fs::write(
                dir.join("stack.json"),
                serde_json::to_string_pretty(&stack)?,
            )?;
            // One env file for all functions: their variables never clash (shared ones agree).
            let mut all = stack.aws_env();
            for env in stack.functions.values() {
                all.extend(env.clone());
            }
            std::fs::write(dir.join("lambda.env"), env_lines(&all))?;
            writeln!(
                out,
                "provisioned {} resources from template.yaml (prefix {}), {} functions; wrote .local/stack.json and .local/lambda.env",
                stack.resources.len(),
                stack.prefix,
                stack.functions.len()
            )?;
        }
        Some("env") => {
            let Some(function) = args.get(1) else {
                bail!("usage: blapi-local env FUNCTION");
            };
            let stack = load_stack()?;
            if !stack.functions.contains_key(function) {
                bail!(
                    "no function {function} in template.yaml (have: {:?})",
                    stack.functions.keys().collect::<Vec<_>>()
                );
            }
            write!(out, "{}", env_lines(&stack.process_env(function)))?;
        }
        Some("map") => {
            tracing_subscriber::fmt()
                .with_target(false)
                .with_ansi(false)
                .init();
            let stack = load_stack()?;
            let template = Template::load(&repo_root().join("template.yaml"))?;
            let opts = MapperOptions {
                lambda_url: flag(&args, "--lambda").unwrap_or_else(default_lambda_url),
                retry_after: Duration::from_secs(
                    flag(&args, "--retry-after")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(1),
                ),
                wait: Duration::from_secs(1),
                max_window: Duration::from_secs(
                    flag(&args, "--max-window")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(2),
                ),
                copies: flag(&args, "--copies")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1),
            };
            let stop = Arc::new(AtomicBool::new(false));
            let signal_stop = stop.clone();
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                }
                signal_stop.store(true, Ordering::SeqCst);
            });
            let counters = blapi_infra::mapper::run(&stack, &template, opts, stop).await?;
            tracing::info!(?counters, "mapper stopped");
        }
        Some("schedule") => {
            let template = Template::load(&repo_root().join("template.yaml"))?;
            let lambda = flag(&args, "--lambda").unwrap_or_else(default_lambda_url);
            let http = reqwest::Client::new();
            let only = flag(&args, "--function");
            for (function, event, input) in blapi_infra::mapper::schedules(&template) {
                if only.as_ref().is_some_and(|f| *f != function) {
                    continue;
                }
                let input = match flag(&args, "--input") {
                    Some(raw) => serde_json::from_str(&raw)?,
                    None => input,
                };
                let resp = blapi_infra::mapper::invoke(&http, &lambda, &function, &input).await?;
                writeln!(out, "{function} ({event}): {resp}")?;
            }
        }
        Some("token") => {
            let stack = load_stack()?;
            let idp = blapi_infra::idp::LocalIdp::load(&stack).await?;
            let token = match (flag(&args, "--customer"), flag(&args, "--operator")) {
                (Some(c), None) => {
                    let email = flag(&args, "--email")
                        .unwrap_or_else(|| format!("owner+{}@example.com", c.to_ascii_lowercase()));
                    idp.customer_token(&c, &email)
                }
                (None, Some(o)) => idp.operator_token(&o),
                _ => bail!(
                    "usage: blapi-local token (--customer cus_... [--email ADDRESS] | --operator ID)"
                ),
            };
            writeln!(out, "{token}")?;
        }
        _ => {
            bail!(
                "usage: blapi-local up [--prefix P] | env FUNCTION | map [--lambda URL] [--retry-after SECS] [--max-window SECS] [--copies N] | schedule [--function NAME] [--input JSON] | token (--customer ID | --operator ID)"
            );
        }
    }
    Ok(())
}
