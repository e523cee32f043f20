//! `blapi-demo`: plays the business scenario on the running local stack (`make demo` starts
//! moto, localstripe, the functions under `cargo lambda watch` and the mapper first), shows
//! progress, and ends with a readable summary. Exit code 0 only if every step did what it
//! should.

use anyhow::{Context, Result};
use blapi_system_tests::harness::Functions;
use blapi_system_tests::scenario::{World, run};
use std::io::Write;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<()> {
    let started = Instant::now();
    let path = blapi_infra::repo_root().join(".local/stack.json");
    let stack: blapi_infra::LocalStack = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("{} not found: run `make up`", path.display()))?,
    )?;
    let lambda_url = format!(
        "http://127.0.0.1:{}",
        std::env::var("LAMBDA_PORT").unwrap_or_else(|_| "9001".into())
    );
    let functions = Functions::external(lambda_url);
    let world = World::new(&stack, &functions, &blapi_system_tests::localstripe_url()).await?;
    let step = std::sync::atomic::AtomicUsize::new(0);
    let progress = |msg: &str| {
        let n = step.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "[{:>5.1}s] {n}. {msg}",
            started.elapsed().as_secs_f64()
        );
    };
    let summary = run(&world, &progress).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", summary.render())?;
    writeln!(
        out,
        "demo finished in {:.1}s: every step did what it should",
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}
