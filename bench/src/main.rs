//! `blapi-bench`: the runner of `make bench` (via `bench/run.sh`, which builds first).
//!
//! For each function's release binary and the two hello-world baselines (`blapi-hello`: no AWS
//! SDK; `blapi-hello-sdk`: one SDK client and one call to the local stack): stripped size, cold starts
//! against the Runtime API stub (exec -> first `/next`, exec -> first response, peak RSS),
//! instructions to the first `/next` under callgrind; then the criterion medians, the budgets,
//! the profile and TLS experiments and the cost model. Writes `<target>/bench/report.md` and
//! `report.json` and prints the Markdown. Run `blapi-bench --help` for the options.

use anyhow::{Context, Result, bail};
use blapi_bench::cost;
use blapi_bench::criterion;
use blapi_bench::env::{self, FunctionEnvs};
use blapi_bench::events::{self, RunValues, WebhookSecrets};
use blapi_bench::measure::{self, ColdStart, Target};
use blapi_bench::report::{self, MB, Report, Row, TlsRow};
use blapi_bench::stats::Summary;
use blapi_bench::stub::Stub;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const FUNCTIONS: [&str; 9] = [
    "webhook-intake",
    "usage-billing",
    "license-minting",
    "lead-enrichment",
    "customer-sync",
    "revenue-ops",
    "privacy-requests",
    "portal-api",
    "notifications",
];
use blapi_bench::report::{HELLO, HELLO_SDK};
const HELLO_BINARY: &str = "blapi-hello";
const HELLO_SDK_BINARY: &str = "blapi-hello-sdk";
/// The baselines, measured before the functions: (row name, binary).
const BASELINES: [(&str, &str); 2] = [(HELLO, HELLO_BINARY), (HELLO_SDK, HELLO_SDK_BINARY)];
const COLD_START_TIMEOUT: Duration = Duration::from_secs(30);
const CALLGRIND_TIMEOUT: Duration = Duration::from_secs(300);

const USAGE: &str = "blapi-bench: cold start, size, memory, init instructions and hot paths of the blapi lambdas.

Measures binaries already built (bench/run.sh builds them). Options:
  --repo DIR          repository root (default: current directory)
  --target-dir DIR    cargo target dir (default: $CARGO_TARGET_DIR, else <repo>/target)
  --profile NAME      profile directory of the binaries (default: release)
  --compare NAME      also measure the binaries found in <target>/<NAME> (repeatable), e.g. release-small
  --functions LIST    comma-separated functions (default: all nine)
  --runs N            cold starts per binary (default: 20)
  --stack-prefix P    provision template.yaml into the local stack under this prefix (default: blapi-bench)
                      and run each function with its resolved environment
  --env-file FILE     instead of provisioning: JSON {\"<function>\": {\"VAR\": \"value\"}} or .local/stack.json
  --endpoint URL      the local stack (default: $BLAPI_MOTO_URL, else http://127.0.0.1:4599;
                      'none': no stack, functions run unconfigured)
  --events-dir DIR    event templates (default: <repo>/bench/events)
  --secrets FILE      local test secrets that sign webhook events (default: <repo>/infra/local-secrets.json)
  --no-callgrind      skip the instruction counts (and the TLS experiment)
  --tls-function LIST functions for the TLS root-store experiment, comma-separated
                      (default: webhook-intake,usage-billing; 'none' skips)
  --criterion-dir DIR criterion results (default: <target>/criterion)
  --out DIR           report directory (default: <target>/bench)
";

#[derive(Debug)]
struct Options {
    repo: PathBuf,
    target_dir: PathBuf,
    profile: String,
    compare: Vec<String>,
    functions: Vec<String>,
    runs: usize,
    env_file: Option<PathBuf>,
    stack_prefix: String,
    endpoint: Option<String>,
    events_dir: PathBuf,
    secrets: PathBuf,
    callgrind: bool,
    tls_functions: Vec<String>,
    criterion_dir: PathBuf,
    out: PathBuf,
}

fn parse_options() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut repo = PathBuf::from(".");
    let mut target_dir = None;
    let mut profile = "release".to_owned();
    let mut compare = Vec::new();
    let mut functions: Vec<String> = FUNCTIONS.iter().map(|f| (*f).to_owned()).collect();
    let mut runs = 20;
    let mut env_file = None;
    let mut stack_prefix = "blapi-bench".to_owned();
    let mut endpoint = Some(blapi_infra::default_endpoint());
    let mut events_dir = None;
    let mut secrets = None;
    let mut callgrind = true;
    let mut tls_functions = vec!["webhook-intake".to_owned(), "usage-billing".to_owned()];
    let mut out = None;
    let mut criterion_dir = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--repo" => repo = PathBuf::from(value()?),
            "--target-dir" => target_dir = Some(PathBuf::from(value()?)),
            "--profile" => profile = value()?,
            "--compare" => compare.push(value()?),
            "--functions" => {
                functions = value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "--runs" => runs = value()?.parse().context("--runs")?,
            "--env-file" => env_file = Some(PathBuf::from(value()?)),
            "--stack-prefix" => stack_prefix = value()?,
            "--endpoint" => endpoint = Some(value()?).filter(|v| v != "none"),
            "--events-dir" => events_dir = Some(PathBuf::from(value()?)),
            "--secrets" => secrets = Some(PathBuf::from(value()?)),
            "--no-callgrind" => callgrind = false,
            "--tls-function" => {
                tls_functions = value()?
                    .split(',')
                    .filter(|s| !s.is_empty() && *s != "none")
                    .map(str::to_owned)
                    .collect()
            }
            "--out" => out = Some(PathBuf::from(value()?)),
            "--criterion-dir" => criterion_dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other}\n\n{USAGE}"),
        }
    }
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let target_dir = target_dir
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| repo.join("target"));
    Ok(Options {
        events_dir: events_dir.unwrap_or_else(|| repo.join("bench/events")),
        secrets: secrets.unwrap_or_else(|| repo.join("infra/local-secrets.json")),
        out: out.unwrap_or_else(|| target_dir.join("bench")),
        criterion_dir: criterion_dir.unwrap_or_else(|| target_dir.join("criterion")),
        repo,
        target_dir,
        profile,
        compare,
        functions,
        runs,
        env_file,
        stack_prefix,
        endpoint,
        callgrind,
        tls_functions,
    })
}

/// A binary to measure with its event template.
struct Subject {
    target: Target,
    template: String,
    samples: Vec<ColdStart>,
    failures: usize,
    errors: Vec<String>,
}

fn main() -> Result<()> {
    let opts = parse_options()?;
    let mut notes = Vec::new();
    let envs: FunctionEnvs = match (&opts.env_file, &opts.endpoint) {
        (Some(path), _) => env::from_json_file(path)?,
        (None, Some(endpoint)) => {
            progress(&format!(
                "provisioning template.yaml into {endpoint} (prefix {})",
                opts.stack_prefix
            ));
            let stack = provision_stack(&opts, endpoint)?;
            eprintln!();
            stack
                .functions
                .keys()
                .map(|f| (f.clone(), stack.process_env(f)))
                .collect()
        }
        (None, None) => {
            notes.push(
                "No local stack (--endpoint none): functions ran without their configuration."
                    .to_owned(),
            );
            FunctionEnvs::new()
        }
    };
    let memory = fs::read_to_string(opts.repo.join("template.yaml"))
        .ok()
        .and_then(|t| env::memory_sizes(&t).ok())
        .unwrap_or_default();
    let secrets = match fs::read_to_string(&opts.secrets) {
        Ok(text) => WebhookSecrets::from_json(&text)?,
        Err(e) => {
            notes.push(format!(
                "No local secrets ({}: {e}): signed events cannot be rendered.",
                opts.secrets.display()
            ));
            WebhookSecrets::default()
        }
    };
    let stub = Stub::start().context("starting the Runtime API stub")?;
    let bin_dir = opts.target_dir.join(&opts.profile);

    // The main rows: the hello worlds first, then each function. The SDK hello world calls
    // the local stack: without one (--endpoint none) it is left out.
    let baselines: Vec<(&str, &str)> = BASELINES
        .into_iter()
        .filter(|(name, _)| *name != HELLO_SDK || opts.endpoint.is_some())
        .collect();
    if baselines.len() < BASELINES.len() {
        notes.push(format!(
            "`{HELLO_SDK}` not measured: it calls the local stack (--endpoint none)."
        ));
    }
    let mut subjects = Vec::new();
    let mut missing = Vec::new();
    for (function, binary) in baselines
        .iter()
        .copied()
        .chain(opts.functions.iter().map(|f| (f.as_str(), f.as_str())))
    {
        match subject(
            &opts,
            &envs,
            &memory,
            function,
            function,
            &bin_dir.join(binary),
        ) {
            Ok(s) => subjects.push(s),
            Err(e) => missing.push(format!("`{function}`: {e:#}")),
        }
    }
    let mut variants = Vec::new();
    for profile in &opts.compare {
        let dir = opts.target_dir.join(profile);
        for (function, binary) in baselines
            .iter()
            .copied()
            .chain(opts.functions.iter().map(|f| (f.as_str(), f.as_str())))
        {
            if dir.join(binary).is_file() {
                let label = format!("{function} [{profile}]");
                match subject(&opts, &envs, &memory, function, &label, &dir.join(binary)) {
                    Ok(s) => variants.push(s),
                    Err(e) => missing.push(format!("`{label}`: {e:#}")),
                }
            }
        }
    }
    notes.extend(missing.iter().map(|m| format!("Not measured: {m}")));

    // Cold starts, round-robin so that drift on the shared machine hits every binary alike.
    let total = opts.runs * (subjects.len() + variants.len());
    let mut done = 0;
    for i in 0..opts.runs {
        for s in subjects.iter_mut().chain(variants.iter_mut()) {
            let log = opts
                .out
                .join("logs")
                .join(format!("{}.log", file_label(&s.target.label)));
            let run = RunValues::fresh(&opts.stack_prefix);
            let result = events::render(&s.template, &run, &secrets).and_then(|event| {
                measure::cold_start(&stub, &s.target, event, &log, COLD_START_TIMEOUT)
            });
            match result {
                Ok(sample) => s.samples.push(sample),
                Err(e) => {
                    s.failures += 1;
                    let msg = format!("{e:#}");
                    if !s.errors.contains(&msg) && s.errors.len() < 3 {
                        s.errors.push(msg);
                    }
                }
            }
            done += 1;
            progress(&format!("cold starts {done}/{total} (round {})", i + 1));
        }
    }
    eprintln!();

    // Instructions to the first /next, once per binary.
    let mut instructions: BTreeMap<String, Result<u64, String>> = BTreeMap::new();
    if opts.callgrind {
        for s in subjects.iter().chain(variants.iter()) {
            progress(&format!("callgrind {}", s.target.label));
            let name = file_label(&s.target.label);
            let result = measure::init_instructions(
                &stub,
                &s.target,
                &opts.out.join("callgrind").join(format!("{name}.out")),
                &opts.out.join("logs").join(format!("{name}.callgrind.log")),
                CALLGRIND_TIMEOUT,
            );
            instructions.insert(s.target.label.clone(), result.map_err(|e| format!("{e:#}")));
        }
        eprintln!();
    } else {
        notes.push("Callgrind skipped (--no-callgrind).".to_owned());
    }

    let mut tls = Vec::new();
    if opts.callgrind {
        for function in &opts.tls_functions {
            let subject = subjects.iter().find(|s| &s.target.function == function);
            tls.extend(tls_experiment(&opts, &stub, subject));
        }
    }

    let rows: Vec<Row> = subjects.iter().map(|s| row(s, &instructions)).collect();
    let profile_variants: Vec<Row> = variants.iter().map(|s| row(s, &instructions)).collect();
    let benches = criterion::collect(&opts.criterion_dir);
    let budgets = report::budgets(&rows, &benches);
    let intake_ir = rows
        .iter()
        .find(|r| r.function == "webhook-intake")
        .and_then(|r| r.init_instructions);
    let verify_ns = benches
        .iter()
        .find(|b| b.id.to_lowercase().contains("verify"))
        .map(|b| b.median_ns);
    let archiver_ns = benches
        .iter()
        .find(|b| b.id.contains("archiver/batch_100"))
        .map(|b| b.median_ns / 100.0);
    let webhooks = cost::webhooks(intake_ir, verify_ns, archiver_ns);
    let (billing, billing_time) = cost::billing_run(10_000.0);
    notes.push(
        "Cold start = exec -> first GET /runtime/invocation/next (init) and -> first response POST, against the loopback stub; \
         peak RSS = VmHWM when the process is idle again after its first response. Instructions = callgrind Ir from exec to the first /next."
            .to_owned(),
    );
    let report = Report {
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: machine(),
        git_commit: git_commit(&opts.repo),
        runs_per_binary: opts.runs,
        profile: opts.profile.clone(),
        rows,
        profile_variants,
        tls,
        benches,
        budgets,
        cost_webhooks: webhooks,
        cost_billing_run_10k_usd: cost::total(&billing),
        cost_billing_run_10k: billing,
        billing_run_time: billing_time,
        notes,
    };
    fs::create_dir_all(&opts.out)?;
    let md = report.markdown();
    fs::write(opts.out.join("report.md"), &md)?;
    fs::write(
        opts.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(md.as_bytes())?;
    writeln!(
        stdout,
        "\nWritten: {} and report.json",
        opts.out.join("report.md").display()
    )?;
    Ok(())
}

/// Provisions template.yaml into the local stack under the bench's own prefix (re-running with
/// the same prefix reuses the resources).
fn provision_stack(opts: &Options, endpoint: &str) -> Result<blapi_infra::LocalStack> {
    let mut provision = blapi_infra::ProvisionOptions::new(&opts.stack_prefix, endpoint);
    provision.root = opts.repo.canonicalize().context("--repo")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(blapi_infra::provision(&provision)).with_context(|| {
        format!("provisioning the local stack at {endpoint} (is it up? `make up`, or infra/stack.sh start)")
    })
}

fn subject(
    opts: &Options,
    envs: &FunctionEnvs,
    memory: &BTreeMap<String, u32>,
    function: &str,
    label: &str,
    binary: &Path,
) -> Result<Subject> {
    if !binary.is_file() {
        bail!(
            "no binary at {} (build it first: bench/run.sh)",
            binary.display()
        );
    }
    let template_path = opts.events_dir.join(format!("{function}.json"));
    let template = fs::read_to_string(&template_path)
        .with_context(|| format!("reading the event template {}", template_path.display()))?;
    let own = envs.get(function).cloned().unwrap_or_default();
    // hello-world talks to nothing: no endpoint, so the figures are the runtime's alone (the
    // SDK hello world gets the endpoint, like the functions).
    let endpoint = if function == HELLO {
        None
    } else {
        opts.endpoint.as_deref()
    };
    let env = measure::lambda_env(
        function,
        memory.get(function).copied().unwrap_or(128),
        &own,
        endpoint,
    );
    Ok(Subject {
        target: Target {
            function: function.to_owned(),
            label: label.to_owned(),
            binary: binary.to_owned(),
            env,
        },
        template,
        samples: Vec::new(),
        failures: 0,
        errors: Vec::new(),
    })
}

fn row(s: &Subject, instructions: &BTreeMap<String, Result<u64, String>>) -> Row {
    let summary = |f: fn(&ColdStart) -> Option<f64>| {
        Summary::of(&s.samples.iter().filter_map(f).collect::<Vec<_>>())
    };
    let mut errors = s.errors.clone();
    let init_instructions = match instructions.get(&s.target.label) {
        Some(Ok(ir)) => Some(*ir),
        Some(Err(e)) => {
            errors.push(format!("callgrind: {e}"));
            None
        }
        None => None,
    };
    Row {
        function: s.target.function.clone(),
        label: s.target.label.clone(),
        size_bytes: stripped_size(&s.target.binary).ok(),
        init_ms: summary(|c| Some(c.init_ms)),
        first_response_ms: summary(|c| Some(c.first_response_ms)),
        peak_rss_mb: summary(|c| c.peak_rss_kb.map(|kb| kb as f64 * 1024.0 / MB)),
        init_instructions,
        runs_ok: s.samples.len(),
        runs_failed: s.failures,
        errors,
        outcome: s.samples.first().map(|c| {
            format!(
                "{}: `{}`",
                c.outcome.kind(),
                measure::excerpt(&c.outcome.body_text())
            )
        }),
    }
}

/// Size after `strip --strip-all` of a copy (the release profile strips already; this keeps the
/// figure honest if it stops doing so). Falls back to the file size without `strip`.
fn stripped_size(binary: &Path) -> Result<u64> {
    let size = fs::metadata(binary)?.len();
    let Some(strip) = measure::which("strip") else {
        return Ok(size);
    };
    let copy = std::env::temp_dir().join(format!("blapi-bench-strip-{}", uuid::Uuid::new_v4()));
    fs::copy(binary, &copy)?;
    let ok = Command::new(strip)
        .arg("--strip-all")
        .arg(&copy)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let stripped = fs::metadata(&copy).map(|m| m.len()).unwrap_or(size);
    let _ = fs::remove_file(&copy);
    Ok(if ok { stripped } else { size })
}

/// Init instructions of one function with its default, compiled-in trust store
/// (`blapi::tls`), and with `BLAPI_TLS_ROOTS=system`: the system store as openssl-probe finds
/// it (bundle file and cert directory), then with `SSL_CERT_FILE` at the system bundle only.
fn tls_experiment(opts: &Options, stub: &Stub, subject: Option<&Subject>) -> Vec<TlsRow> {
    let Some(s) = subject else { return Vec::new() };
    let system = ("BLAPI_TLS_ROOTS", "system".to_owned());
    let mut settings: Vec<(String, Vec<(&str, String)>)> = vec![
        (
            "compiled in (default): 5 AWS roots for the SDK, webpki-roots for reqwest".to_owned(),
            vec![],
        ),
        (
            "BLAPI_TLS_ROOTS=system: bundle file + cert dir as probed".to_owned(),
            vec![system.clone()],
        ),
    ];
    if let Some(bundle) = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .iter()
    .map(Path::new)
    .find(|p| p.is_file())
    {
        let n = count_certs(bundle);
        settings.push((
            format!("BLAPI_TLS_ROOTS=system, SSL_CERT_FILE = system bundle only ({n} roots)"),
            vec![system, ("SSL_CERT_FILE", bundle.display().to_string())],
        ));
    }
    let mut rows = Vec::new();
    for (i, (setting, vars)) in settings.into_iter().enumerate() {
        progress(&format!("TLS experiment {}: {setting}", s.target.function));
        let mut target = s.target.clone();
        for (k, v) in vars {
            target.env.insert(k.to_owned(), v);
        }
        let name = format!("{}-tls-{i}", file_label(&s.target.label));
        let result = measure::init_instructions(
            stub,
            &target,
            &opts.out.join("callgrind").join(format!("{name}.out")),
            &opts.out.join("logs").join(format!("{name}.log")),
            CALLGRIND_TIMEOUT,
        );
        rows.push(TlsRow {
            function: s.target.function.clone(),
            setting,
            init_instructions: result.as_ref().ok().copied(),
            error: result.err().map(|e| format!("{e:#}")),
        });
    }
    eprintln!();
    rows
}

fn count_certs(pem: &Path) -> usize {
    fs::read_to_string(pem)
        .map(|t| t.matches("-----BEGIN CERTIFICATE-----").count())
        .unwrap_or(0)
}

fn file_label(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn progress(msg: &str) {
    eprint!("\r\x1b[2K{msg}");
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cores} x {cpu}, Linux {kernel}, {}",
        std::env::consts::ARCH
    )
}

fn git_commit(repo: &Path) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
