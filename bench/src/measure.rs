//! Running a function binary against the stub: one cold start with wall-clock and memory
//! figures ([`cold_start`]), or one init under callgrind ([`init_instructions`]).
//!
//! Each run execs the binary with a cleared environment holding only what Lambda would give it
//! (the function's own variables, the runtime's `AWS_LAMBDA_*`, credentials and region) plus
//! `AWS_ENDPOINT_URL` for the local stack, so nothing from the developer's shell leaks in.
//! Its stdout and stderr go to a log file for post-mortems.

use crate::stub::{Outcome, Stub};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// One binary to measure and how to start it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Function name (`webhook-intake`, ..., `hello`).
    pub function: String,
    /// Row label in the report (`webhook-intake`, `webhook-intake [release-small]`).
    pub label: String,
    pub binary: PathBuf,
    /// The complete environment of the process (see [`lambda_env`]).
    pub env: BTreeMap<String, String>,
}

/// The figures of one cold start.
#[derive(Debug, Clone)]
pub struct ColdStart {
    /// exec -> first `/next`, ms.
    pub init_ms: f64,
    /// exec -> first response (or error) posted, ms.
    pub first_response_ms: f64,
    /// VmHWM at first response, kB.
    pub peak_rss_kb: Option<u64>,
    /// What the function posted.
    pub outcome: Outcome,
}

/// The environment Lambda gives a function: its own variables (`function_env`), the runtime's
/// `AWS_LAMBDA_*` variables, region and credentials; `endpoint` (the local stack) as
/// `AWS_ENDPOINT_URL`.
pub fn lambda_env(
    function: &str,
    memory_mb: u32,
    function_env: &BTreeMap<String, String>,
    endpoint: Option<&str>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_SESSION_TOKEN", "test".to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(endpoint) = endpoint {
        env.insert("AWS_ENDPOINT_URL".to_owned(), endpoint.to_owned());
    }
    env.extend(function_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

fn command(program: &Path, target: &Target, stub: &Stub, log: &Path) -> Result<Command> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .envs(&target.env)
        .env("AWS_LAMBDA_RUNTIME_API", stub.runtime_api())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    Ok(cmd)
}

/// One cold start of `target`, handed `event`.
pub fn cold_start(
    stub: &Stub,
    target: &Target,
    event: Vec<u8>,
    log: &Path,
    timeout: Duration,
) -> Result<ColdStart> {
    let request_id = uuid::Uuid::new_v4().to_string();
    stub.arm(event, &request_id);
    let mut cmd = command(&target.binary, target, stub, log)?;
    let exec = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("exec {}", target.binary.display()))?;
    let result = watch(stub, &mut child, exec, timeout, log);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn watch(
    stub: &Stub,
    child: &mut Child,
    exec: Instant,
    timeout: Duration,
    log: &Path,
) -> Result<ColdStart> {
    let deadline = exec + timeout;
    loop {
        let seen = stub.wait_until(Duration::from_millis(50), |o| o.first_outcome.is_some());
        if let Some((at, outcome)) = seen.first_outcome {
            if let Outcome::InitError(_) = outcome {
                bail!(
                    "init failed: {} (log: {})",
                    excerpt(&outcome.body_text()),
                    log.display()
                );
            }
            let Some(first_next) = seen.first_next else {
                bail!("a response without a /next")
            };
            // Let it reach its next /next (idle, as Lambda would freeze it); then read its peak.
            stub.wait_until(Duration::from_secs(2), |o| o.next_calls >= 2);
            return Ok(ColdStart {
                init_ms: ms(first_next - exec),
                first_response_ms: ms(at - exec),
                peak_rss_kb: peak_rss_kb(child.id()),
                outcome,
            });
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "exited with {status} before its first response (log: {}): {}",
                log.display(),
                log_tail(log)
            );
        }
        if Instant::now() >= deadline {
            bail!("no response within {timeout:?} (log: {})", log.display());
        }
    }
}

/// Instructions from exec to the first `/next`, counted by callgrind (`valgrind` on `PATH`).
/// The process gets SIGTERM once the stub sees its `/next`; callgrind writes its totals then.
pub fn init_instructions(
    stub: &Stub,
    target: &Target,
    out_file: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<u64> {
    stub.arm(b"{}".to_vec(), &uuid::Uuid::new_v4().to_string());
    if let Some(dir) = out_file.parent() {
        fs::create_dir_all(dir)?;
    }
    let _ = fs::remove_file(out_file);
    let valgrind = which("valgrind").context("valgrind not found on PATH")?;
    let mut cmd = command(&valgrind, target, stub, log)?;
    cmd.arg("--tool=callgrind")
        .arg("--dump-instr=no")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&target.binary);
    let mut child = cmd.spawn().context("exec valgrind")?;
    let started = Instant::now();
    let reached = loop {
        let seen = stub.wait_until(Duration::from_millis(100), |o| {
            o.first_next.is_some() || o.first_outcome.is_some()
        });
        if seen.first_next.is_some() {
            break Ok(());
        }
        if let Some((_, outcome)) = seen.first_outcome {
            break Err(anyhow::anyhow!(
                "init failed: {}",
                excerpt(&outcome.body_text())
            ));
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "exited with {status} before its first /next: {}",
                log_tail(log)
            ));
        }
        if started.elapsed() > timeout {
            break Err(anyhow::anyhow!(
                "no /next within {timeout:?} under callgrind"
            ));
        }
    };
    if let Err(e) = reached {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    // SIGTERM (not SIGKILL): callgrind dumps its counts when the client dies of a signal.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    if !status.success() {
        bail!("kill -TERM failed: {status}");
    }
    let waited = Instant::now();
    while child.try_wait()?.is_none() {
        if waited.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("valgrind did not exit after SIGTERM");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let text =
        fs::read_to_string(out_file).with_context(|| format!("reading {}", out_file.display()))?;
    crate::callgrind::total_ir(&text).context("no totals in the callgrind output")
}

/// `VmHWM` (peak resident set) of a live process, kB.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM:` line of `/proc/<pid>/status`, kB.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// At most 300 characters of `text`, on one line.
pub fn excerpt(text: &str) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    match one_line.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(600);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    excerpt(&text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_hwm() {
        let status =
            "Name:\tblapi-hello\nVmPeak:\t  100000 kB\nVmHWM:\t    4321 kB\nVmRSS:\t    4000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(4321));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn lambda_env_has_the_runtime_variables_and_the_functions_own() {
        let own = BTreeMap::from([("LEDGER_TABLE".to_owned(), "t".to_owned())]);
        let env = lambda_env("webhook-intake", 128, &own, Some("http://127.0.0.1:4599"));
        assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "webhook-intake");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:4599");
        assert_eq!(env["LEDGER_TABLE"], "t");
        assert!(!lambda_env("hello", 128, &BTreeMap::new(), None).contains_key("AWS_ENDPOINT_URL"));
    }

    #[test]
    fn excerpts_are_short_and_single_line() {
        assert_eq!(excerpt("a\nb"), "a b");
        assert_eq!(excerpt(&"x".repeat(400)).len(), 303);
    }
}
