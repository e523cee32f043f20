//! Runs the functions as Lambda would locally: `cargo lambda watch` (each function its own
//! process behind the Lambda Runtime API, the intake behind its Function URL) with the
//! template's environment for a stack, plus the local event-source mapper.

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
            stop: Arc::new(AtomicBool::new(false)),
            mapper: None,
        }
    }

    /// Starts `cargo lambda watch` on a free port with the stack's environment, and the mapper.
    pub async fn start(stack: &LocalStack, log_dir: &std::path::Path) -> Result<Self> {
        let port = free_port()?;
        let lambda_url = format!("http://127.0.0.1:{port}");
        std::fs::create_dir_all(log_dir)?;
        let env_file = log_dir.join(format!("{}.env", stack.prefix));
        let mut all = stack.aws_env();
        for env in stack.functions.values() {
            all.extend(env.clone());
        }
        std::fs::write(
            &env_file,
            all.iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>(),
        )?;
        let log = std::fs::File::create(log_dir.join(format!("{}-watch.log", stack.prefix)))?;
        let watch = Command::new(cargo_lambda())
            .args([
                "lambda",
                "watch",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "--ignore-changes",
                "--env-file",
            ])
            .arg(&env_file)
            .current_dir(blapi_infra::repo_root())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting cargo lambda watch (run `make setup`)")?;
        let mut functions = Self {
            lambda_url: lambda_url.clone(),
            watch: Some(watch),
            stop: Arc::new(AtomicBool::new(false)),
            mapper: None,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.get(&lambda_url).send().await.is_err() {
            if Instant::now() > deadline {
                return Err(anyhow!("cargo lambda watch did not answer at {lambda_url}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let template = Template::load(&blapi_infra::repo_root().join("template.yaml"))?;
        let opts = MapperOptions {
            lambda_url,
            retry_after: Duration::from_secs(1),
            wait: Duration::from_secs(1),
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
        if let Some(mut w) = self.watch.take() {
            // SIGTERM lets cargo lambda watch stop the function processes it started.
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
