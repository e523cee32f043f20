//! `blapi-local`: runs the template on this machine.
//!
//! - `blapi-local up [--prefix P]` provisions every resource of `template.yaml` into the
//!   emulator (`BLAPI_MOTO_URL`, default `http://127.0.0.1:4599`) and writes `.local/stack.json`
//!   (names and per-function environment) and `.local/lambda.env` (the environment
//!   `cargo lambda watch --env-file` gives the functions). Safe to re-run.
//! - `blapi-local env FUNCTION` prints a function's resolved environment as `KEY=value` lines.

use anyhow::{Context, Result, bail};
use blapi_infra::{LocalStack, ProvisionOptions, default_endpoint, provision, repo_root};
use std::io::Write;
use std::path::PathBuf;

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
        _ => {
            bail!("usage: blapi-local up [--prefix P] | env FUNCTION");
        }
    }
    Ok(())
}
