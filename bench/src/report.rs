//! The report: figures per binary, the budgets of issue 8 as pass / falls-short lines, the
//! criterion medians, the profile and TLS experiments and the cost model; rendered as Markdown
//! (printed and written to `target/bench/report.md`) and JSON (`report.json`).

use crate::cost::{self, BillingRunTime, CostLine};
use crate::criterion::BenchResult;
use crate::stats::Summary;
use serde::Serialize;
use std::fmt::Write as _;

/// 1 MB in the budgets and the report: 2^20 bytes.
pub const MB: f64 = 1024.0 * 1024.0;

/// The row of the hello world without the AWS SDK (`blapi-hello`).
pub const HELLO: &str = "hello";
/// The row of the SDK hello world (`blapi-hello-sdk`: one client, one call at init).
pub const HELLO_SDK: &str = "hello-sdk";

/// Whether a row is one of the two baselines (not a function).
pub fn is_baseline(function: &str) -> bool {
    function == HELLO || function == HELLO_SDK
}

/// Budgets (issue 8, README "Performance"; the size budget is also a target of "Scale and
/// cost").
pub const SIZE_BUDGET_MB: f64 = 8.0;
pub const INIT_RATIO_BUDGET: f64 = 1.3;
pub const FIRST_RESPONSE_RATIO_BUDGET: f64 = 2.0;
pub const PEAK_RSS_BUDGET_MB: f64 = 20.0;
pub const VERIFY_PARSE_BUDGET_US: f64 = 10.0;
pub const PRICING_1M_BUDGET_S: f64 = 1.0;
pub const INIT_INSTRUCTIONS_RATIO_BUDGET: f64 = 4.0;
/// Targets against the fair floor, the SDK hello world (issue "Scale and cost").
pub const SDK_INIT_RATIO_BUDGET: f64 = 1.2;
pub const SDK_FIRST_RESPONSE_RATIO_BUDGET: f64 = 1.5;

/// The figures of one binary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// `webhook-intake`, ..., `hello`.
    pub function: String,
    /// Row label (adds the variant for experiments).
    pub label: String,
    /// Stripped size, bytes.
    pub size_bytes: Option<u64>,
    /// exec -> first `/next`, ms.
    pub init_ms: Option<Summary>,
    /// exec -> first response posted, ms.
    pub first_response_ms: Option<Summary>,
    /// Peak RSS at first response, MB.
    pub peak_rss_mb: Option<Summary>,
    /// Instructions exec -> first `/next` (callgrind).
    pub init_instructions: Option<u64>,
    /// Cold starts that completed / failed.
    pub runs_ok: usize,
    pub runs_failed: usize,
    /// Distinct failure messages (at most a few).
    pub errors: Vec<String>,
    /// What the first run posted: `response: {...}` / `error: {...}` (excerpt).
    pub outcome: Option<String>,
}

/// A budget check.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetLine {
    pub subject: String,
    pub budget: String,
    pub measured: String,
    pub status: Status,
}

/// Outcome of a budget check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    FallsShort,
    NotMeasured,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::FallsShort => "FALLS SHORT",
            Status::NotMeasured => "NOT MEASURED",
        }
    }
}

/// Callgrind init instructions of one binary under one TLS root-store setting.
#[derive(Debug, Clone, Serialize)]
pub struct TlsRow {
    pub function: String,
    pub setting: String,
    pub init_instructions: Option<u64>,
    pub error: Option<String>,
}

/// Everything `make bench` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: String,
    pub machine: String,
    pub git_commit: Option<String>,
    pub runs_per_binary: usize,
    /// Cargo profile of the measured binaries (`release`).
    pub profile: String,
    pub rows: Vec<Row>,
    pub profile_variants: Vec<Row>,
    pub tls: Vec<TlsRow>,
    pub benches: Vec<BenchResult>,
    pub budgets: Vec<BudgetLine>,
    /// Per 1 M webhooks: before and after the batched archive.
    pub cost_webhooks: cost::WebhookCosts,
    pub cost_billing_run_10k: Vec<CostLine>,
    pub cost_billing_run_10k_usd: f64,
    pub billing_run_time: BillingRunTime,
    pub notes: Vec<String>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn check(
    subject: &str,
    budget: String,
    measured: Option<(f64, String)>,
    limit: f64,
    strict: bool,
) -> BudgetLine {
    let (status, measured) = match measured {
        Some((value, text)) => {
            let ok = if strict {
                value < limit
            } else {
                value <= limit
            };
            (if ok { Status::Pass } else { Status::FallsShort }, text)
        }
        None => (Status::NotMeasured, "not measured".to_owned()),
    };
    BudgetLine {
        subject: subject.to_owned(),
        budget,
        measured,
        status,
    }
}

/// A function's median (init or first response) over a baseline's: the line's ratio and text.
fn median_ratio(row: Option<Summary>, baseline: Option<f64>, unit: &str) -> Option<(f64, String)> {
    let value = row.map(|s| s.median);
    ratio(value, baseline).map(|r| {
        (
            r,
            format!(
                "{r:.2} x ({:.1} ms vs {:.1} ms {unit})",
                value.unwrap_or(0.0),
                baseline.unwrap_or(0.0)
            ),
        )
    })
}

/// The budget lines for the function rows against the two hello-world rows and the benches.
pub fn budgets(rows: &[Row], benches: &[BenchResult]) -> Vec<BudgetLine> {
    let hello = rows.iter().find(|r| r.function == HELLO);
    let hello_init = hello.and_then(|h| h.init_ms).map(|s| s.median);
    let hello_resp = hello.and_then(|h| h.first_response_ms).map(|s| s.median);
    let hello_ir = hello.and_then(|h| h.init_instructions).map(|i| i as f64);
    let sdk = rows.iter().find(|r| r.function == HELLO_SDK);
    let sdk_init = sdk.and_then(|h| h.init_ms).map(|s| s.median);
    let sdk_resp = sdk.and_then(|h| h.first_response_ms).map(|s| s.median);
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| !is_baseline(&r.function)) {
        let name = &row.label;
        let size = row.size_bytes.map(|b| b as f64 / MB);
        out.push(check(
            &format!("{name}: stripped size"),
            format!("<= {SIZE_BUDGET_MB} MB"),
            size.map(|s| (s, format!("{s:.2} MB"))),
            SIZE_BUDGET_MB,
            false,
        ));
        let init = ratio(row.init_ms.map(|s| s.median), hello_init);
        out.push(check(
            &format!("{name}: init (exec -> first /next), median"),
            format!("<= {INIT_RATIO_BUDGET} x hello-world"),
            init.map(|r| {
                (
                    r,
                    format!(
                        "{r:.2} x ({:.1} ms vs {:.1} ms)",
                        row.init_ms.map_or(0.0, |s| s.median),
                        hello_init.unwrap_or(0.0)
                    ),
                )
            }),
            INIT_RATIO_BUDGET,
            false,
        ));
        let resp = ratio(row.first_response_ms.map(|s| s.median), hello_resp);
        out.push(check(
            &format!("{name}: first response, median"),
            format!("<= {FIRST_RESPONSE_RATIO_BUDGET} x hello-world"),
            resp.map(|r| {
                (
                    r,
                    format!(
                        "{r:.2} x ({:.1} ms vs {:.1} ms)",
                        row.first_response_ms.map_or(0.0, |s| s.median),
                        hello_resp.unwrap_or(0.0)
                    ),
                )
            }),
            FIRST_RESPONSE_RATIO_BUDGET,
            false,
        ));
        let rss = row.peak_rss_mb.map(|s| s.max);
        out.push(check(
            &format!("{name}: peak RSS at first response (max of runs)"),
            format!("<= {PEAK_RSS_BUDGET_MB} MB"),
            rss.map(|m| (m, format!("{m:.1} MB"))),
            PEAK_RSS_BUDGET_MB,
            false,
        ));
        let ir = ratio(row.init_instructions.map(|i| i as f64), hello_ir);
        out.push(check(
            &format!("{name}: init instructions"),
            format!("<= {INIT_INSTRUCTIONS_RATIO_BUDGET} x hello-world"),
            ir.map(|r| {
                (
                    r,
                    format!(
                        "{r:.1} x ({} vs {})",
                        mega(row.init_instructions),
                        mega(hello_ir.map(|h| h as u64))
                    ),
                )
            }),
            INIT_INSTRUCTIONS_RATIO_BUDGET,
            false,
        ));
        out.push(check(
            &format!("{name}: init vs the SDK hello world, median"),
            format!("<= {SDK_INIT_RATIO_BUDGET} x hello-sdk"),
            median_ratio(row.init_ms, sdk_init, "hello-sdk"),
            SDK_INIT_RATIO_BUDGET,
            false,
        ));
        out.push(check(
            &format!("{name}: first response vs the SDK hello world, median"),
            format!("<= {SDK_FIRST_RESPONSE_RATIO_BUDGET} x hello-sdk"),
            median_ratio(row.first_response_ms, sdk_resp, "hello-sdk"),
            SDK_FIRST_RESPONSE_RATIO_BUDGET,
            false,
        ));
    }
    let verify: Vec<&BenchResult> = benches
        .iter()
        .filter(|b| b.id.to_lowercase().contains("verify"))
        .collect();
    if verify.is_empty() {
        out.push(check(
            "webhook verify + parse (criterion)",
            format!("<= {VERIFY_PARSE_BUDGET_US} us per 4 KB event"),
            None,
            0.0,
            false,
        ));
    }
    for b in verify {
        let per_4k_us = b
            .bytes
            .filter(|n| *n > 0)
            .map_or(b.median_ns, |n| b.median_ns * 4096.0 / n as f64)
            / 1000.0;
        let how = if b.bytes.is_some() {
            "per 4 KB"
        } else {
            "per iteration (no byte throughput declared; taken as one 4 KB event)"
        };
        out.push(check(
            &format!("verify + parse `{}`", b.id),
            format!("<= {VERIFY_PARSE_BUDGET_US} us per 4 KB event"),
            Some((per_4k_us, format!("{per_4k_us:.2} us {how}"))),
            VERIFY_PARSE_BUDGET_US,
            false,
        ));
    }
    let pricing: Vec<&BenchResult> = benches
        .iter()
        .filter(|b| b.id.to_lowercase().contains("pric"))
        .collect();
    if pricing.is_empty() {
        out.push(check(
            "pricing 1 M records (criterion)",
            format!("< {PRICING_1M_BUDGET_S} s"),
            None,
            0.0,
            true,
        ));
    }
    for b in pricing {
        let seconds = b.ns_per_element().map(|ns| ns * 1e6 / 1e9);
        let measured = seconds.map(|s| {
            (
                s,
                format!("{s:.3} s for 1 M records ({:.0} ns per record)", s * 1e3),
            )
        });
        let mut line = check(
            &format!("pricing `{}`", b.id),
            format!("< {PRICING_1M_BUDGET_S} s for 1 M records"),
            measured,
            PRICING_1M_BUDGET_S,
            true,
        );
        if seconds.is_none() {
            line.measured = format!(
                "{} per iteration; declare Throughput::Elements to scale to 1 M",
                human_ns(b.median_ns)
            );
        }
        out.push(line);
    }
    out
}

/// `12.3 M` instructions.
pub fn mega(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| format!("{:.2} M", n as f64 / 1e6))
}

/// Nanoseconds in the most readable unit.
pub fn human_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} us", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn ms_cell(s: Option<Summary>) -> String {
    s.map_or_else(
        || "-".to_owned(),
        |s| format!("{:.1} / {:.1}", s.median, s.p90),
    )
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
}

fn size_cell(b: Option<u64>) -> String {
    b.map_or_else(|| "-".to_owned(), |b| format!("{:.2} MB", b as f64 / MB))
}

fn figures_table(md: &mut String, rows: &[Row], hello: Option<&Row>, sdk: Option<&Row>) {
    md.push_str(
        "| binary | stripped size | init ms (median / p90) | first response ms (median / p90) | peak RSS MB (median / max) | init instructions | x hello: size / init / response / instr | x hello-sdk: size / init / response / instr | runs ok/failed |\n\
         |---|---:|---:|---:|---:|---:|---|---|---:|\n",
    );
    for r in rows {
        let h = hello.filter(|h| h.label != r.label);
        let x = |f: fn(&Row) -> Option<f64>| ratio_cell(h.and_then(|h| ratio(f(r), f(h))));
        let k = sdk.filter(|k| k.label != r.label && r.function != HELLO);
        let y = |f: fn(&Row) -> Option<f64>| ratio_cell(k.and_then(|k| ratio(f(r), f(k))));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} / {} / {} / {} | {}/{} |",
            r.label,
            size_cell(r.size_bytes),
            ms_cell(r.init_ms),
            ms_cell(r.first_response_ms),
            r.peak_rss_mb.map_or_else(
                || "-".to_owned(),
                |s| format!("{:.1} / {:.1}", s.median, s.max)
            ),
            mega(r.init_instructions),
            x(|r| r.size_bytes.map(|b| b as f64)),
            x(|r| r.init_ms.map(|s| s.median)),
            x(|r| r.first_response_ms.map(|s| s.median)),
            x(|r| r.init_instructions.map(|i| i as f64)),
            y(|r| r.size_bytes.map(|b| b as f64)),
            y(|r| r.init_ms.map(|s| s.median)),
            y(|r| r.first_response_ms.map(|s| s.median)),
            y(|r| r.init_instructions.map(|i| i as f64)),
            r.runs_ok,
            r.runs_failed,
        );
    }
}

fn cost_table(md: &mut String, lines: &[CostLine]) {
    md.push_str("| item | quantity | unit | USD | basis |\n|---|---:|---|---:|---|\n");
    for l in lines {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {:.4} | {} |",
            l.item, l.quantity, l.unit, l.usd, l.basis
        );
    }
    let _ = writeln!(md, "| **total** | | | **{:.4}** | |", cost::total(lines));
}

impl Report {
    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# blapi performance report\n");
        let _ = writeln!(
            md,
            "Generated {} on {}{}; {} cold starts per binary. Wall clocks here are noisy (shared cores): \
             compare ratios to the hello worlds, and trust instruction counts over milliseconds. Two baselines, built \
             in the same cargo invocation: `hello` (lambda_runtime + tokio, no AWS SDK, no endpoint) and `hello-sdk` \
             (the functions' SDK config and HTTP client, one DynamoDB client and one `ListTables` to the local stack at \
             init: the fair floor of an SDK lambda).\n",
            self.generated_at,
            self.machine,
            self.git_commit
                .as_ref()
                .map(|c| format!(", commit {c}"))
                .unwrap_or_default(),
            self.runs_per_binary
        );
        let hello = self.rows.iter().find(|r| r.function == HELLO);
        let sdk = self.rows.iter().find(|r| r.function == HELLO_SDK);
        let _ = writeln!(
            md,
            "## Cold start, size and memory (profile `{}`)\n",
            self.profile
        );
        figures_table(&mut md, &self.rows, hello, sdk);
        md.push('\n');
        for r in &self.rows {
            if let Some(o) = &r.outcome {
                let _ = writeln!(md, "- `{}` first run posted {}", r.label, o);
            }
            for e in &r.errors {
                let _ = writeln!(md, "- `{}` failed: {}", r.label, e);
            }
        }
        let _ = write!(
            md,
            "\n## Budgets\n\nIssue 8 against `hello` (size <= {SIZE_BUDGET_MB} MB, init <= {INIT_RATIO_BUDGET} x, first \
             response <= {FIRST_RESPONSE_RATIO_BUDGET} x, peak RSS, init instructions <= {INIT_INSTRUCTIONS_RATIO_BUDGET} x); \
             \"Scale and cost\" against `hello-sdk`, the fair floor (init <= {SDK_INIT_RATIO_BUDGET} x, first response \
             <= {SDK_FIRST_RESPONSE_RATIO_BUDGET} x, and the same size budget).\n\n```\n"
        );
        for b in &self.budgets {
            let _ = writeln!(
                md,
                "{:<12} {} ({}): {}",
                b.status.label(),
                b.subject,
                b.budget,
                b.measured
            );
        }
        md.push_str("```\n\n## Hot paths (criterion medians)\n\n");
        if self.benches.is_empty() {
            md.push_str("No criterion results found (run `cargo bench -p <function>` first).\n");
        } else {
            md.push_str("| bench | median | throughput |\n|---|---:|---|\n");
            for b in &self.benches {
                let tp = match (b.bytes, b.elements) {
                    (Some(n), _) => format!("{n} bytes/iter"),
                    (_, Some(n)) => format!(
                        "{n} elements/iter ({}/element)",
                        human_ns(b.median_ns / n.max(1) as f64)
                    ),
                    _ => String::new(),
                };
                let _ = writeln!(md, "| {} | {} | {} |", b.id, human_ns(b.median_ns), tp);
            }
        }
        if !self.profile_variants.is_empty() {
            md.push_str("\n## Release profile alternatives\n\n");
            let mut rows: Vec<Row> = Vec::new();
            for v in &self.profile_variants {
                if let Some(base) = self.rows.iter().find(|r| r.function == v.function) {
                    rows.push(base.clone());
                }
                rows.push(v.clone());
            }
            figures_table(&mut md, &rows, hello, sdk);
        }
        if !self.tls.is_empty() {
            md.push_str("\n## TLS root store at init (callgrind, exec -> first /next)\n\n");
            md.push_str(
                "| function | root store | init instructions | vs default | x hello |\n|---|---|---:|---:|---:|\n",
            );
            let hello_ir = hello.and_then(|h| h.init_instructions).map(|i| i as f64);
            for t in &self.tls {
                let ir = t.init_instructions.map(|i| i as f64);
                // The first setting measured for a function is its default store.
                let default_ir = self
                    .tls
                    .iter()
                    .find(|d| d.function == t.function)
                    .and_then(|d| d.init_instructions)
                    .map(|i| i as f64);
                let cell = match (&t.init_instructions, &t.error) {
                    (Some(_), _) => mega(t.init_instructions),
                    (None, Some(e)) => format!("failed: {e}"),
                    _ => "-".to_owned(),
                };
                let vs_default = ratio(ir, default_ir).map_or_else(
                    || "-".to_owned(),
                    |r| format!("{:+.0} %", (r - 1.0) * 100.0),
                );
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    t.function,
                    t.setting,
                    cell,
                    vs_default,
                    ratio_cell(ratio(ir, hello_ir))
                );
            }
            md.push_str(
                "\nBy default nothing is read from disk or parsed: the SDK's HTTP client (reqwest) takes the 5 AWS \
                 roots and the other reqwest clients all of webpki-roots, as pre-parsed anchors. With \
                 `BLAPI_TLS_ROOTS=system`, rustls-native-certs reads `SSL_CERT_FILE` when set, else every file \
                 openssl-probe finds (the bundle and each certificate in the cert directory); every reqwest client, \
                 the SDK's included, loads and parses that store (rustls-platform-verifier).\n",
            );
        }
        let w = &self.cost_webhooks;
        md.push_str(
            "\n## Cost model\n\nPer 1 M webhooks, **before** (arm64, us-east-1): intake claimed a ledger entry, \
             archived each event as its own S3 object, sent one message per routed queue, indexed every \
             address, logged each event:\n\n",
        );
        cost_table(&mut md, &w.before);
        let _ = writeln!(
            md,
            "\nPer 1 M webhooks, **after**: intake sends one message to the events queue; the archiver writes \
             one gzip NDJSON object per batch and forwards with SendMessageBatch; the hourly seal merges each \
             hour into one object. At a steady {} webhooks/s with the {} s batching window ({} pollers, BatchSize {}): \
             {:.0} events per archive object.\n",
            w.load.rate_per_s,
            w.load.window_s,
            w.load.pollers,
            w.load.batch_size,
            w.events_per_object
        );
        cost_table(&mut md, &w.after);
        let _ = writeln!(
            md,
            "\nTotal per 1 M webhooks: before **${:.4}**, after **${:.4}** ({:.1}x less).\n\n\
             After, by steady rate (the same 10 s window; the objects fill as the rate grows):\n\n\
             | webhooks/s | events per object | USD per 1 M |\n|---:|---:|---:|",
            w.before_usd,
            w.after_usd,
            w.before_usd / w.after_usd.max(f64::MIN_POSITIVE)
        );
        for (rate, e, usd) in &w.sensitivity {
            let _ = writeln!(md, "| {rate} | {e:.0} | {usd:.4} |");
        }
        md.push_str(
            "\nNot per webhook, so not above: each SQS event source long-polls even when idle (5 pollers, \
             ~650 k empty receives a month, ~$0.26 per queue per month), and storage (S3, CloudWatch).\n",
        );
        md.push_str("\nPer monthly billing run of 10,000 customers (usage-billing):\n\n");
        cost_table(&mut md, &self.cost_billing_run_10k);
        let t = &self.billing_run_time;
        let _ = writeln!(
            md,
            "\nStripe: {:.0} calls; at the 100 requests/s limit the run takes >= {:.0} s; at MaximumConcurrency 5 \
             with sequential calls it takes ~{:.0} s (~{:.0} min) and makes ~{:.1} requests/s, {} Stripe's limit.",
            t.stripe_calls,
            t.stripe_limit_floor_s,
            t.concurrency_bound_s,
            t.concurrency_bound_s / 60.0,
            t.stripe_rate_at_concurrency,
            if t.stripe_rate_at_concurrency < cost::STRIPE_REQUESTS_PER_S {
                "under"
            } else {
                "OVER"
            }
        );
        md.push_str(
            "\nCall counts and assumptions: `bench/src/cost.rs` (one documented constant each).\n",
        );
        if !self.notes.is_empty() {
            md.push_str("\n## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(median: f64) -> Option<Summary> {
        Summary::of(&[median])
    }

    fn row(function: &str, size_mb: f64, init: f64, resp: f64, rss: f64, ir: u64) -> Row {
        Row {
            function: function.into(),
            label: function.into(),
            size_bytes: Some((size_mb * MB) as u64),
            init_ms: summary(init),
            first_response_ms: summary(resp),
            peak_rss_mb: summary(rss),
            init_instructions: Some(ir),
            runs_ok: 1,
            ..Row::default()
        }
    }

    #[test]
    fn budgets_compare_functions_to_hello_world() {
        let rows = vec![
            row("hello", 0.5, 2.0, 3.0, 4.0, 1_000_000),
            row("hello-sdk", 4.0, 2.2, 6.0, 9.0, 2_000_000),
            row("webhook-intake", 9.0, 2.5, 7.0, 12.0, 3_000_000),
        ];
        let lines = budgets(&rows, &[]);
        let status = |s: &str| lines.iter().find(|l| l.subject.contains(s)).unwrap().status;
        assert_eq!(status("stripped size"), Status::FallsShort);
        assert_eq!(status("init (exec"), Status::Pass);
        assert_eq!(status("first response, median"), Status::FallsShort);
        // Against the fair floor: 2.5 / 2.2 = 1.14 <= 1.2, 7 / 6 = 1.17 <= 1.5.
        assert_eq!(status("init vs the SDK hello"), Status::Pass);
        assert_eq!(status("first response vs the SDK hello"), Status::Pass);
        let line = lines
            .iter()
            .find(|l| l.subject.contains("first response vs the SDK hello"))
            .unwrap();
        assert_eq!(line.measured, "1.17 x (7.0 ms vs 6.0 ms hello-sdk)");
        // The baselines get no lines of their own.
        assert!(
            lines.iter().all(|l| !l.subject.starts_with("hello")),
            "{lines:?}"
        );
        assert_eq!(status("peak RSS"), Status::Pass);
        assert_eq!(status("init instructions"), Status::Pass);
        assert_eq!(status("verify"), Status::NotMeasured);
        // Without an SDK hello world the fair-floor lines say so.
        let lines = budgets(&[rows[0].clone(), rows[2].clone()], &[]);
        let sdk_init = lines
            .iter()
            .find(|l| l.subject.contains("init vs the SDK hello"))
            .unwrap();
        assert_eq!(sdk_init.status, Status::NotMeasured);
        // Slower than 1.2 x the floor falls short.
        let slow = row("webhook-intake", 7.0, 3.0, 10.0, 12.0, 3_000_000);
        let lines = budgets(&[rows[1].clone(), slow], &[]);
        let status = |s: &str| lines.iter().find(|l| l.subject.contains(s)).unwrap().status;
        assert_eq!(status("stripped size"), Status::Pass);
        assert_eq!(status("init vs the SDK hello"), Status::FallsShort);
        assert_eq!(
            status("first response vs the SDK hello"),
            Status::FallsShort
        );
        assert_eq!(status("pricing"), Status::NotMeasured);
    }

    #[test]
    fn benches_are_scaled_to_the_budgets_units() {
        let benches = vec![
            BenchResult {
                id: "stripe/verify_parse".into(),
                median_ns: 6_000.0,
                bytes: Some(8192),
                elements: None,
            },
            BenchResult {
                id: "pricing/aggregate".into(),
                median_ns: 2.0e7,
                bytes: None,
                elements: Some(10_000),
            },
            BenchResult {
                id: "pricing/one".into(),
                median_ns: 50.0,
                bytes: None,
                elements: None,
            },
        ];
        let lines = budgets(&[], &benches);
        assert_eq!(lines[0].status, Status::Pass, "{:?}", lines[0]);
        assert!(lines[0].measured.starts_with("3.00 us per 4 KB"));
        // 2 ms per 1 k records = 2 s per 1 M: over budget.
        assert_eq!(lines[1].status, Status::FallsShort);
        assert_eq!(lines[2].status, Status::NotMeasured);
        assert!(lines[2].measured.contains("declare Throughput::Elements"));
    }

    #[test]
    fn markdown_has_every_section() {
        let (billing, time) = cost::billing_run(10_000.0);
        let webhooks = cost::webhooks(None, None, None);
        let rows = vec![
            row("hello", 0.5, 2.0, 3.0, 4.0, 1_000_000),
            row("hello-sdk", 4.0, 4.0, 6.0, 9.0, 2_000_000),
            row("webhook-intake", 6.0, 4.4, 6.6, 12.0, 3_000_000),
        ];
        let report = Report {
            generated_at: "now".into(),
            machine: "test".into(),
            git_commit: None,
            runs_per_binary: 1,
            profile: "release".into(),
            budgets: budgets(&rows, &[]),
            rows,
            profile_variants: vec![],
            tls: vec![
                TlsRow {
                    function: "a".into(),
                    setting: "system".into(),
                    init_instructions: Some(40),
                    error: None,
                },
                TlsRow {
                    function: "a".into(),
                    setting: "small".into(),
                    init_instructions: Some(10),
                    error: None,
                },
                TlsRow {
                    function: "b".into(),
                    setting: "system".into(),
                    init_instructions: Some(80),
                    error: None,
                },
            ],
            benches: vec![],
            cost_webhooks: webhooks,
            cost_billing_run_10k_usd: cost::total(&billing),
            cost_billing_run_10k: billing,
            billing_run_time: time,
            notes: vec!["a note".into()],
        };
        let md = report.markdown();
        for section in [
            "## Cold start",
            "## Budgets",
            "## Hot paths",
            "## TLS root store",
            "## Cost model",
            "## Notes",
        ] {
            assert!(md.contains(section), "missing {section}");
        }
        // Each function against both baselines: size / init / response / instructions.
        assert!(
            md.contains("| 12.00 / 2.20 / 2.20 / 3.00 | 1.50 / 1.10 / 1.10 / 1.50 |"),
            "{md}"
        );
        // The SDK hello world against the first baseline only.
        assert!(
            md.contains("| 8.00 / 2.00 / 2.00 / 2.00 | - / - / - / - |"),
            "{md}"
        );
        // Both webhook tables and their totals.
        assert!(
            md.contains("**before**") && md.contains("**after**"),
            "{md}"
        );
        assert!(md.contains("| S3 PUT (raw archive) |"), "{md}");
        assert!(md.contains("| S3 PUT (archive batch objects) |"), "{md}");
        assert!(md.contains("Total per 1 M webhooks: before **$"), "{md}");
        assert!(md.contains("| 50 | 100 |"), "{md}");
        // Each function's TLS rows are compared with its own first (default) row.
        assert!(md.contains("| a | small | 0.00 M | -75 % |"), "{md}");
        assert!(md.contains("| b | system | 0.00 M | +0 % |"), "{md}");
        assert!(serde_json::to_string(&report).unwrap().contains("\"tls\""));
    }
}
