//! Runs the functions as Lambda would locally: `cargo lambda watch --only-lambda-apis` serves the
//! Lambda invoke API, the Runtime API and the intake's Function URL, and each function binary runs
//! as its own processes (the ones `cargo build --workspace --bins --tests` built, so no test
//! waits on a compile) polling that Runtime API with the template's environment for a stack;
//! plus the local event-source mapper.

use anyhow::{Context, Result, anyhow};
use blapi_infra::LocalStack;
use blapi_infra::mapper::{Counters, MapperOptions};
use blapi_infra::template::Template;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The functions running under `cargo lambda watch`, and the mapper feeding them.
pub struct Functions {
    /// Base URL of the local Lambda API (invoke API and Function URLs).
    pub lambda_url: String,
    watch: Option<Child>,
    processes: Vec<Child>,
    stop: Arc<AtomicBool>,
    mapper: Option<tokio::task::JoinHandle<Result<Counters>>>,
}

impl Functions {
    /// The Function URL of `function` for `path` (e.g. `webhooks/stripe`).
    pub fn url(&self, function: &str, path: &str) -> String {
        format!(
            "{}/lambda-url/{function}/{}",
            self.lambda_url,
            path.trim_start_matches('/')
        )
    }

    /// Functions already running elsewhere (`make functions`): nothing is started or stopped.
    pub fn external(lambda_url: impl Into<String>) -> Self {
        Self {
            lambda_url: lambda_url.into().trim_end_matches('/').to_owned(),
            watch: None,
            processes: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            mapper: None,
        }
    }

    /// Starts `cargo lambda watch --only-lambda-apis` on a free port, [`INSTANCES`] processes of
    /// every function binary against it with the stack's environment, and the mapper.
    pub async fn start(stack: &LocalStack, log_dir: &std::path::Path) -> Result<Self> {
        Self::start_with(stack, log_dir, &StartOptions::default()).await
    }

    /// [`Functions::start`] with the function processes' environment overridden (the fault
    /// tests point them at a proxy) and each batch delivered `copies` times at once.
    pub async fn start_with(
        stack: &LocalStack,
        log_dir: &std::path::Path,
        options: &StartOptions,
    ) -> Result<Self> {
        let port = free_port()?;
        let lambda_url = format!("http://127.0.0.1:{port}");
        std::fs::create_dir_all(log_dir)?;
        let log = std::fs::File::create(log_dir.join(format!("{}-watch.log", stack.prefix)))?;
        let watch = Command::new(cargo_lambda())
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
            ])
            .current_dir(blapi_infra::repo_root())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log.try_clone()?))
            .spawn()
            .context("starting cargo lambda watch (run `make setup`)")?;
        let mut functions = Self {
            lambda_url: lambda_url.clone(),
            watch: Some(watch),
            processes: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            mapper: None,
        };
        // A connection, not a request: with `--only-lambda-apis` a request to `/` would wait for
        // a default function that never comes.
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(anyhow!("cargo lambda watch did not answer at {lambda_url}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let bins = bin_dir()?;
        for function in stack.functions.keys() {
            let bin = bins.join(function);
            if !bin.exists() {
                return Err(anyhow!(
                    "{} is not built: run `cargo build --workspace --bins --tests` (make test does)",
                    bin.display()
                ));
            }
            for _ in 0..INSTANCES {
                let child = Command::new(&bin)
                    .envs(stack.process_env(function))
                    .envs(&options.env)
                    .env(
                        "AWS_LAMBDA_RUNTIME_API",
                        format!("http://127.0.0.1:{port}/.rt/{function}"),
                    )
                    .env("AWS_LAMBDA_FUNCTION_NAME", function)
                    .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                    .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                    .stdout(Stdio::from(log.try_clone()?))
                    .stderr(Stdio::from(log.try_clone()?))
                    .spawn()
                    .with_context(|| format!("starting {}", bin.display()))?;
                functions.processes.push(child);
            }
        }
        let template = Template::load(&blapi_infra::repo_root().join("template.yaml"))?;
        let opts = MapperOptions {
            copies: options.copies,
            ..MapperOptions::local(lambda_url)
        };
        let stack = stack.clone();
        let stop = functions.stop.clone();
        functions.mapper = Some(tokio::spawn(async move {
            blapi_infra::mapper::run(&stack, &template, opts, stop).await
        }));
        Ok(functions)
    }

    /// Stops the mapper and returns its counters (the watch process stops on drop).
    pub async fn stop_mapper(&mut self) -> Result<Counters> {
        self.stop.store(true, Ordering::SeqCst);
        match self.mapper.take() {
            Some(h) => h.await?,
            None => Ok(Counters::default()),
        }
    }
}

impl Drop for Functions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for mut p in self.processes.drain(..) {
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(mut w) = self.watch.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &w.id().to_string()])
                .status();
            for _ in 0..30 {
                if matches!(w.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// How [`Functions::start_with`] differs from a plain start.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Variables set on every function process over the stack's own.
    pub env: std::collections::BTreeMap<String, String>,
    /// Deliveries of each batch (the mapper's `copies`).
    pub copies: usize,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            env: Default::default(),
            copies: 1,
        }
    }
}

/// Processes per function: two, so an invocation can overlap another as on Lambda.
const INSTANCES: usize = 2;

/// Where cargo put the function binaries: this binary's directory, or above it for a test
/// binary in `deps/`.
fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", exe.display()))?;
    Ok(match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    })
}

fn cargo_lambda() -> PathBuf {
    let venv = blapi_infra::repo_root().join(".venv/bin/cargo-lambda");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("cargo-lambda")
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
