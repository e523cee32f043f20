//! The cost model of the report: what 1 M webhooks and one monthly billing run of 10 k
//! customers cost, from `PERFORMANCE.md`'s prices (us-east-1, on demand) and the number of
//! calls each handler makes.
//!
//! The call counts are explicit constants, each documented with the code path it counts, so a
//! reviewer can check them against the handlers (`functions/*/src/handler.rs` and the domain
//! modules in `shared/`) and change them in one place. Latencies that `PERFORMANCE.md` gives
//! are used as given; the few it does not give are marked "assumption".

use serde::Serialize;

// ---- Prices (PERFORMANCE.md, "Limits and prices") ----

/// Lambda: $ per request.
pub const LAMBDA_PER_REQUEST: f64 = 0.20 / 1e6;
/// Lambda arm64: $ per GB-second (init is billed too).
pub const LAMBDA_ARM_PER_GB_S: f64 = 0.000_013_333_4;
/// DynamoDB on demand: $ per write request unit (≤ 1 KB item).
pub const DYNAMODB_PER_WRU: f64 = 0.625 / 1e6;
/// DynamoDB on demand: $ per read request unit (≤ 4 KB strongly consistent).
pub const DYNAMODB_PER_RRU: f64 = 0.125 / 1e6;
/// SQS standard: $ per request (each 64 KB chunk of a message is one request).
pub const SQS_PER_REQUEST: f64 = 0.40 / 1e6;
/// S3 Standard: $ per PUT (PERFORMANCE.md: $5.00 per M).
pub const S3_PER_PUT: f64 = 5.00 / 1e6;
/// Stripe live-mode request limit, requests per second (global to the account).
pub const STRIPE_REQUESTS_PER_S: f64 = 100.0;

// ---- Latencies ----

/// DynamoDB PutItem/UpdateItem from Lambda, p50 (PERFORMANCE.md, alexdebrie).
pub const DYNAMODB_WRITE_MS: f64 = 7.6;
/// SQS SendMessage, ~1 KB (PERFORMANCE.md, older AWS figures).
pub const SQS_SEND_MS: f64 = 16.0;
/// S3 PutObject of a few KB. Assumption: PERFORMANCE.md gives none; taken equal to an SQS send.
pub const S3_PUT_MS: f64 = 16.0;
/// lambda_runtime's own work per invocation (PERFORMANCE.md: ~200 k instructions, ~0.2 ms).
pub const RUNTIME_MS: f64 = 0.2;
/// One Stripe API call. Assumption: PERFORMANCE.md gives none; a typical figure for a POST.
pub const STRIPE_CALL_MS: f64 = 300.0;
/// At 128 MB a Lambda gets ~1/14 of a vCPU: 20 M instructions ≈ 100 ms (PERFORMANCE.md).
pub const INSTRUCTIONS_PER_MS_AT_128MB: f64 = 200_000.0;
/// Share of invocations that are cold starts. Assumption: steady webhook traffic keeps
/// environments warm; 1 in 1,000.
pub const COLD_START_SHARE: f64 = 0.001;

// ---- webhook-intake call counts, per accepted webhook ----
// Path (ARCHITECTURE.md "webhook-intake", order of work): size limit -> verify -> parse ->
// ledger claim -> archive raw bytes -> enqueue per routed queue -> ledger complete -> 200.

/// Memory of webhook-intake (template.yaml: Globals MemorySize 128).
pub const INTAKE_MEMORY_MB: f64 = 128.0;
/// Ledger claim: one conditional PutItem (`Ledger::claim`, item < 1 KB: 1 WRU).
/// Ledger complete: one UpdateItem (`Ledger::complete`: 1 WRU). Total 2.
pub const INTAKE_DYNAMODB_WRITES: f64 = 2.0;
/// Archive: one S3 PutObject of the raw bytes (`raw/...`).
pub const INTAKE_S3_PUTS: f64 = 1.0;
/// Enqueue: one SendMessage per routed queue. Most events route to one queue; a Stripe
/// `invoice.paid`/subscription event goes to two. Assumed mix: 1.2 per webhook.
pub const INTAKE_SQS_SENDS: f64 = 1.2;
/// Consumers' side of each message: Lambda's pollers receive and delete in batches of up to
/// 10 (~2 requests per batch): ~0.2 requests per message. Shown as its own line.
pub const CONSUMER_SQS_REQUESTS_PER_MESSAGE: f64 = 0.2;

// ---- usage-billing call counts, per monthly run ----
// Path (shared/src/billing/service.rs, `Billing::bill` -> `run_bill`, a fresh bill): ledger
// claim -> invoices.load -> compose (subscriptions query, one usage query per metric, credit
// balance) -> invoices.create -> save (attempt) -> Planned->Credited -> one Stripe invoice item
// + save per billable line -> ItemsCreated -> Stripe create invoice -> InvoiceCreated -> Stripe
// finalize -> Finalized -> S3 JSON + HTML -> ArtifactsWritten -> Done -> ledger complete.
// The planner lists customers and enqueues one job per customer in batches of 10.

/// Memory of usage-billing (template.yaml: MemorySize 256).
pub const BILLING_MEMORY_MB: f64 = 256.0;
/// Billing-jobs SQS batch size (template.yaml: BatchSize 5).
pub const BILLING_JOBS_BATCH: f64 = 5.0;
/// Billing-jobs concurrency (template.yaml: ScalingConfig.MaximumConcurrency 5).
pub const BILLING_MAX_CONCURRENCY: f64 = 5.0;
/// Billable lines per invoice. Assumption: one plan with a base fee and one metered charge.
pub const BILLING_LINES_PER_INVOICE: f64 = 2.0;
/// Metered metrics per subscription (one usage query each). Assumption: 1.
pub const BILLING_METRICS_PER_SUBSCRIPTION: f64 = 1.0;
/// Per customer: ledger claim + complete (2), invoice record create (1), attempt save (1),
/// 6 state advances (Credited, ItemsCreated, InvoiceCreated, Finalized, ArtifactsWritten,
/// Done), one save per billable line. Counted as 1 WRU each (records under 1 KB).
pub const BILLING_DYNAMODB_WRITES_PER_CUSTOMER: f64 =
    2.0 + 1.0 + 1.0 + 6.0 + BILLING_LINES_PER_INVOICE;
/// Per customer: invoice record load (1), subscriptions query (1), usage query per metric,
/// credit balance (1). 1 RRU each (small items, pre-aggregated usage).
pub const BILLING_DYNAMODB_READS_PER_CUSTOMER: f64 = 3.0 + BILLING_METRICS_PER_SUBSCRIPTION;
/// Per customer: `invoices/{customer}/{period}.json` and `.html`.
pub const BILLING_S3_PUTS_PER_CUSTOMER: f64 = 2.0;
/// Per customer: one invoice item per billable line + create invoice (1) + finalize (1).
pub const STRIPE_CALLS_PER_INVOICE: f64 = BILLING_LINES_PER_INVOICE + 2.0;
/// Per customer: receive + delete of its job message (batched by 5: ~2 requests per batch)
/// plus its share of the planner's SendMessageBatch (1 per 10 jobs).
pub const BILLING_SQS_REQUESTS_PER_CUSTOMER: f64 = 2.0 / BILLING_JOBS_BATCH + 0.1;
/// AWS calls' time per customer, sequential: every DynamoDB call at the PutItem p50 and the 2
/// S3 puts.
pub const BILLING_AWS_MS_PER_CUSTOMER: f64 = (BILLING_DYNAMODB_WRITES_PER_CUSTOMER
    + BILLING_DYNAMODB_READS_PER_CUSTOMER)
    * DYNAMODB_WRITE_MS
    + BILLING_S3_PUTS_PER_CUSTOMER * S3_PUT_MS;

/// One line of a cost table.
#[derive(Debug, Clone, Serialize)]
pub struct CostLine {
    pub item: String,
    pub quantity: f64,
    pub unit: String,
    pub usd: f64,
    pub basis: String,
}

fn line(item: &str, quantity: f64, unit: &str, usd: f64, basis: String) -> CostLine {
    CostLine {
        item: item.to_owned(),
        quantity,
        unit: unit.to_owned(),
        usd,
        basis,
    }
}

/// $ of `ms` of Lambda duration at `memory_mb`, arm64.
pub fn duration_usd(ms: f64, memory_mb: f64) -> f64 {
    ms / 1000.0 * memory_mb / 1024.0 * LAMBDA_ARM_PER_GB_S
}

/// Cost of 1 M webhooks through webhook-intake. `init_instructions`: measured
/// exec -> first `/next` instructions of webhook-intake (for the billed init of cold starts);
/// `verify_parse_ns`: measured median of the verify + parse bench, if any.
pub fn per_million_webhooks(
    init_instructions: Option<u64>,
    verify_parse_ns: Option<f64>,
) -> Vec<CostLine> {
    let n = 1e6;
    let cpu_ms = RUNTIME_MS + verify_parse_ns.unwrap_or(0.0) / 1e6;
    // Claim, then archive and enqueue concurrently, then complete.
    let warm_ms = DYNAMODB_WRITE_MS + S3_PUT_MS.max(SQS_SEND_MS) + DYNAMODB_WRITE_MS + cpu_ms;
    let init_ms = init_instructions.map_or(0.0, |ir| ir as f64 / INSTRUCTIONS_PER_MS_AT_128MB);
    vec![
        line(
            "Lambda requests",
            n,
            "requests",
            n * LAMBDA_PER_REQUEST,
            "$0.20 per M".into(),
        ),
        line(
            "Lambda duration (warm)",
            n * warm_ms,
            "ms at 128 MB",
            n * duration_usd(warm_ms, INTAKE_MEMORY_MB),
            format!(
                "{warm_ms:.1} ms = claim {DYNAMODB_WRITE_MS} + max(S3 put {S3_PUT_MS}, SQS send {SQS_SEND_MS}) + complete {DYNAMODB_WRITE_MS} + CPU {cpu_ms:.2}"
            ),
        ),
        line(
            "Lambda init (cold starts)",
            n * COLD_START_SHARE * init_ms,
            "ms at 128 MB",
            n * COLD_START_SHARE * duration_usd(init_ms, INTAKE_MEMORY_MB),
            format!(
                "{:.0} cold starts x {init_ms:.1} ms (measured init instructions / {INSTRUCTIONS_PER_MS_AT_128MB} per ms)",
                n * COLD_START_SHARE
            ),
        ),
        line(
            "DynamoDB writes",
            n * INTAKE_DYNAMODB_WRITES,
            "WRU",
            n * INTAKE_DYNAMODB_WRITES * DYNAMODB_PER_WRU,
            "ledger claim (conditional put) + complete (update)".into(),
        ),
        line(
            "SQS sends",
            n * INTAKE_SQS_SENDS,
            "requests",
            n * INTAKE_SQS_SENDS * SQS_PER_REQUEST,
            format!("{INTAKE_SQS_SENDS} routed queues per webhook (mix)"),
        ),
        line(
            "SQS receive + delete (consumers)",
            n * INTAKE_SQS_SENDS * CONSUMER_SQS_REQUESTS_PER_MESSAGE,
            "requests",
            n * INTAKE_SQS_SENDS * CONSUMER_SQS_REQUESTS_PER_MESSAGE * SQS_PER_REQUEST,
            "pollers batch 10: ~0.2 requests per message".into(),
        ),
        line(
            "S3 PUT (raw archive)",
            n * INTAKE_S3_PUTS,
            "PUTs",
            n * INTAKE_S3_PUTS * S3_PER_PUT,
            "one object per accepted event".into(),
        ),
    ]
}

/// Cost of one monthly billing run for `customers` customers, and its wall-clock floor.
pub fn billing_run(customers: f64) -> (Vec<CostLine>, BillingRunTime) {
    let invocations = 1.0 + (customers / BILLING_JOBS_BATCH).ceil();
    let per_customer_ms =
        BILLING_AWS_MS_PER_CUSTOMER + STRIPE_CALLS_PER_INVOICE * STRIPE_CALL_MS + RUNTIME_MS;
    let stripe_calls = customers * STRIPE_CALLS_PER_INVOICE;
    let lines = vec![
        line(
            "Lambda requests",
            invocations,
            "requests",
            invocations * LAMBDA_PER_REQUEST,
            "1 plan + jobs in batches of 5".into(),
        ),
        line(
            "Lambda duration",
            customers * per_customer_ms,
            "ms at 256 MB",
            customers * duration_usd(per_customer_ms, BILLING_MEMORY_MB),
            format!(
                "{per_customer_ms:.0} ms per customer = {STRIPE_CALLS_PER_INVOICE} Stripe calls x {STRIPE_CALL_MS} ms + AWS {BILLING_AWS_MS_PER_CUSTOMER:.0} ms"
            ),
        ),
        line(
            "DynamoDB writes",
            customers * BILLING_DYNAMODB_WRITES_PER_CUSTOMER,
            "WRU",
            customers * BILLING_DYNAMODB_WRITES_PER_CUSTOMER * DYNAMODB_PER_WRU,
            format!(
                "{BILLING_DYNAMODB_WRITES_PER_CUSTOMER} per invoice: ledger 2, record create + attempt 2, 6 state steps, 1 per line"
            ),
        ),
        line(
            "DynamoDB reads",
            customers * BILLING_DYNAMODB_READS_PER_CUSTOMER,
            "RRU",
            customers * BILLING_DYNAMODB_READS_PER_CUSTOMER * DYNAMODB_PER_RRU,
            format!(
                "{BILLING_DYNAMODB_READS_PER_CUSTOMER} per invoice: record, subscriptions, usage per metric, credit"
            ),
        ),
        line(
            "SQS requests",
            customers * BILLING_SQS_REQUESTS_PER_CUSTOMER,
            "requests",
            customers * BILLING_SQS_REQUESTS_PER_CUSTOMER * SQS_PER_REQUEST,
            "planner batches of 10 + receive/delete in batches of 5".into(),
        ),
        line(
            "S3 PUT (invoice JSON + HTML)",
            customers * BILLING_S3_PUTS_PER_CUSTOMER,
            "PUTs",
            customers * BILLING_S3_PUTS_PER_CUSTOMER * S3_PER_PUT,
            "2 per invoice".into(),
        ),
        line(
            "Stripe API calls",
            stripe_calls,
            "calls",
            0.0,
            format!("{STRIPE_CALLS_PER_INVOICE} per invoice; no per-call price"),
        ),
    ];
    let concurrency_bound_s = customers * per_customer_ms / 1000.0 / BILLING_MAX_CONCURRENCY;
    let time = BillingRunTime {
        stripe_calls,
        stripe_limit_floor_s: stripe_calls / STRIPE_REQUESTS_PER_S,
        concurrency_bound_s,
        stripe_rate_at_concurrency: stripe_calls / concurrency_bound_s,
    };
    (lines, time)
}

/// How long a billing run takes at best, and how hard it presses on Stripe's limit.
#[derive(Debug, Clone, Serialize)]
pub struct BillingRunTime {
    /// Stripe calls in the run.
    pub stripe_calls: f64,
    /// Seconds at Stripe's 100 requests/s: the floor no concurrency can beat.
    pub stripe_limit_floor_s: f64,
    /// Seconds at `MaximumConcurrency` 5 with sequential calls per job.
    pub concurrency_bound_s: f64,
    /// Stripe requests/s the run makes at that concurrency (must stay < 100).
    pub stripe_rate_at_concurrency: f64,
}

/// Sum of a cost table.
pub fn total(lines: &[CostLine]) -> f64 {
    lines.iter().map(|l| l.usd).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * a.abs().max(1.0)
    }

    #[test]
    fn one_ms_at_128mb_arm_is_the_documented_price() {
        // PERFORMANCE.md: 1 ms at 128 MB arm64 costs $0.00167 per M invocations.
        assert!((duration_usd(1.0, 128.0) * 1e6 - 0.00167).abs() < 0.00001);
    }

    #[test]
    fn webhooks_cost_adds_up_from_its_lines() {
        let lines = per_million_webhooks(Some(20_000_000), Some(4_000.0));
        let by = |name: &str| lines.iter().find(|l| l.item == name).unwrap().usd;
        assert!(close(by("Lambda requests"), 0.20));
        assert!(close(by("DynamoDB writes"), 1.25));
        assert!(close(by("S3 PUT (raw archive)"), 5.00));
        assert!(close(by("SQS sends"), 0.48));
        // 20 M instructions = 100 ms of init, for 1,000 cold starts.
        assert!(close(
            by("Lambda init (cold starts)"),
            1000.0 * duration_usd(100.0, 128.0)
        ));
        assert!(close(total(&lines), lines.iter().map(|l| l.usd).sum()));
    }

    #[test]
    fn billing_run_respects_stripes_limit() {
        let (lines, time) = billing_run(10_000.0);
        assert_eq!(time.stripe_calls, 40_000.0);
        assert_eq!(time.stripe_limit_floor_s, 400.0);
        assert!(time.stripe_rate_at_concurrency < STRIPE_REQUESTS_PER_S);
        let requests = lines.iter().find(|l| l.item == "Lambda requests").unwrap();
        assert_eq!(requests.quantity, 2_001.0);
    }
}
