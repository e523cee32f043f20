//! The cost model of the report: what 1 M webhooks and one monthly billing run of 10 k
//! customers cost, from `PERFORMANCE.md`'s prices (us-east-1, on demand) and the number of
//! calls each handler makes.
//!
//! Webhooks have two tables: **before** ([`webhooks_before`]: intake claimed a ledger entry,
//! wrote one S3 object per event, indexed every address, logged each event) and **after**
//! ([`webhooks_after`]: intake sends one SQS message; the archiver writes one gzip object per
//! batch and forwards with `SendMessageBatch`; an hourly seal merges an hour into one object).
//! The after table depends on how many events an archive object holds, hence on the steady
//! rate and the batching window ([`Load`]); [`sensitivity`] shows the total across rates.
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
/// S3 Standard: $ per PUT (PERFORMANCE.md: $5.00 per M). LIST requests cost the same.
pub const S3_PER_PUT: f64 = 5.00 / 1e6;
/// S3 Standard: $ per GET ($0.0004 per 1,000: the S3 price list; PERFORMANCE.md gives PUT only).
/// DELETE is free.
pub const S3_PER_GET: f64 = 0.40 / 1e6;
/// CloudWatch Logs ingestion: $ per byte ($0.50 per GB).
pub const LOGS_PER_BYTE: f64 = 0.50 / 1e9;
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
/// Before: the subject index, one `UpdateItem` (1 WRU) per e-mail address an event names
/// (`Intake::index`). Assumed mix: Stripe customer and invoice events name one or two, usage,
/// subscription and plan events none: 0.6 per webhook.
pub const ADDRESSES_PER_WEBHOOK: f64 = 0.6;
/// One JSON log line of `tracing` (message, level, timestamp, requestId span, a few fields).
/// Assumption: 400 bytes.
pub const LOG_LINE_BYTES: f64 = 400.0;
/// One EMF metric line (`_aws` block, dimensions, one or two values). Assumption: 330 bytes.
pub const EMF_LINE_BYTES: f64 = 330.0;

// ---- after: the intake, the archiver and the seal ----
// Intake (shared/src/webhook/intake.rs): size limit -> verify -> parse -> one SendMessage to
// the events queue -> 200; an accepted event logs at DEBUG and writes no metric line.
// Archiver (shared/src/webhook/archiver.rs, WebhookArchiverFunction): per batch, one PutObject
// per event hour (one, nearly always), then SendMessageBatch by 10 per routed queue,
// concurrently; one INFO line and one EMF line per source plus one per batch. Seal
// (shared/src/archive.rs, WebhookArchiveMaintenanceFunction, hourly): LIST the hour, GET each
// batch object once, PUT the sealed object and its manifest, DELETE (free).

/// Memory of the archiver (template.yaml: WebhookArchiverFunction MemorySize 256).
pub const ARCHIVER_MEMORY_MB: f64 = 256.0;
/// Memory of the seal (template.yaml: WebhookArchiveMaintenanceFunction MemorySize 1024).
pub const SEAL_MEMORY_MB: f64 = 1024.0;
/// The seal's CPU per event on a full core: gunzip and gzip again (level 6, ~30 MB/s) of a
/// ~4 KB line, and its head parsed. Assumption: 150 us.
pub const SEAL_NS_PER_EVENT: f64 = 150_000.0;
/// Lambda gives a full vCPU at 1,769 MB (AWS); CPU time scales inversely below it.
pub const FULL_VCPU_MB: f64 = 1769.0;
/// The archiver's CPU per event on a full core (parse, subject hashes, gzip of ~4 KB, the
/// routed message). Assumption when the bench has not measured it: 100 us.
pub const ARCHIVER_NS_PER_EVENT: f64 = 100_000.0;
/// Distinct routed queues a batch touches (each rounds its last SendMessageBatch up: half a
/// request on average). Assumption: 4 of the 6.
pub const QUEUES_PER_BATCH: f64 = 4.0;
/// Sources in a batch (one EMF line each). Assumption: 2.
pub const SOURCES_PER_BATCH: f64 = 2.0;

/// The steady load the after table assumes: it sets how many events an archive object holds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Load {
    /// Webhooks per second, steady.
    pub rate_per_s: f64,
    /// The archiver's `MaximumBatchingWindowInSeconds` (template.yaml:
    /// `ArchiveBatchingWindowSeconds`, default 10).
    pub window_s: f64,
    /// Concurrent pollers of the SQS event source: Lambda starts with 5, each gathering its
    /// own batch, so below the batch size a batch holds rate x window / pollers events.
    pub pollers: f64,
    /// The event source's `BatchSize` (template.yaml: 500; Lambda's 6 MB payload bounds it too).
    pub batch_size: f64,
}

/// The after table's load: 50 webhooks/s steady (~130 M a month), the template's 10 s window.
pub const DEFAULT_LOAD: Load = Load {
    rate_per_s: 50.0,
    window_s: 10.0,
    pollers: 5.0,
    batch_size: 500.0,
};

impl Load {
    /// Events per archiver batch, hence per archive object.
    pub fn events_per_object(&self) -> f64 {
        (self.rate_per_s * self.window_s / self.pollers).clamp(1.0, self.batch_size)
    }

    /// Archive objects per hour (the seal's GETs and its LIST pages).
    pub fn objects_per_hour(&self) -> f64 {
        self.rate_per_s * 3600.0 / self.events_per_object()
    }
}

// ---- usage-billing call counts, per monthly run ----
// Path (shared/src/billing/service.rs, `Billing::bill` -> `run_bill`, a fresh bill): ledger
// claim -> invoices.load -> compose (subscriptions query, the customer's usage records of the
// period, credit balance) -> invoices.create -> save (attempt) -> Planned->Credited -> Stripe
// create the invoice, empty (`pending_invoice_items_behavior=exclude`) -> InvoiceCreated ->
// one Stripe invoice item attached to it (`invoice=`) + save per billable line ->
// ItemsCreated -> Stripe finalize -> Finalized -> S3 JSON + HTML -> ArtifactsWritten -> Done
// -> ledger complete. The planner lists customers and enqueues one job per customer in
// batches of 10. `make bench-billing` counts the same run on the local stack (target/bench/
// month.md): 6.00 Stripe calls per invoice with 4 lines, 29.0 write units per invoice.

/// Memory of usage-billing (template.yaml: MemorySize 256).
pub const BILLING_MEMORY_MB: f64 = 256.0;
/// Billing-jobs SQS batch size (template.yaml: BatchSize 5).
pub const BILLING_JOBS_BATCH: f64 = 5.0;
/// Billing-jobs concurrency (template.yaml: ScalingConfig.MaximumConcurrency 5).
pub const BILLING_MAX_CONCURRENCY: f64 = 5.0;
/// Billable lines per invoice. Assumption: one plan with a base fee and one metered charge.
pub const BILLING_LINES_PER_INVOICE: f64 = 2.0;
/// Metered metrics per subscription. Assumption: 1.
pub const BILLING_METRICS_PER_SUBSCRIPTION: f64 = 1.0;
/// Per invoice, measured: `make bench-billing` counts 29.0 write units per invoice from the
/// requests (4 lines; updates at their floor). More than one unit per write: the ledger
/// claim and complete (2), the invoice record's create, attempt and every state or line save
/// (its lines make it 1-3 KB, 1-3 units each). Taken as measured, though the table assumes 2
/// lines (an over-estimate of ~4 units).
pub const BILLING_DYNAMODB_WRITES_PER_CUSTOMER: f64 = 29.0;
/// Per customer: invoice record load (1), subscriptions query (1), the period's usage records
/// (one item per record, ~100 B each: 90 records of 3 metrics x 30 days are ~9 KB, 3 RRU
/// strongly consistent; 1 query page), credit balance (1).
pub const BILLING_DYNAMODB_READS_PER_CUSTOMER: f64 = 3.0 + 3.0 * BILLING_METRICS_PER_SUBSCRIPTION;
/// Per customer: `invoices/{customer}/{period}.json` and `.html`.
pub const BILLING_S3_PUTS_PER_CUSTOMER: f64 = 2.0;
/// Per customer: create the invoice (1) + one invoice item per billable line, attached to it +
/// finalize (1). A resumed run adds one read of the invoice's lines. Measured: 6.00 with 4
/// lines (target: at most 3 + lines).
pub const STRIPE_CALLS_PER_INVOICE: f64 = BILLING_LINES_PER_INVOICE + 2.0;
/// Per customer: receive + delete of its job message (batched by 5: ~2 requests per batch)
/// plus its share of the planner's SendMessageBatch (1 per 10 jobs).
pub const BILLING_SQS_REQUESTS_PER_CUSTOMER: f64 = 2.0 / BILLING_JOBS_BATCH + 0.1;
/// DynamoDB calls per customer (not units): ledger claim + complete (2), record create (1),
/// attempt save (1), 6 state steps, one save per line; 4 reads.
pub const BILLING_DYNAMODB_CALLS_PER_CUSTOMER: f64 =
    2.0 + 1.0 + 1.0 + 6.0 + BILLING_LINES_PER_INVOICE + 4.0;
/// AWS calls' time per customer, sequential: every DynamoDB call at the PutItem p50 and the 2
/// S3 puts.
pub const BILLING_AWS_MS_PER_CUSTOMER: f64 = BILLING_DYNAMODB_CALLS_PER_CUSTOMER
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

/// The intake's billed init per M webhooks: (cold starts, ms each).
fn init_ms(init_instructions: Option<u64>) -> f64 {
    init_instructions.map_or(0.0, |ir| ir as f64 / INSTRUCTIONS_PER_MS_AT_128MB)
}

/// Cost of 1 M webhooks through webhook-intake **before** the archive was batched: ledger
/// claim, one S3 object and one send per routed queue, ledger complete; a subject-index write
/// per address; an INFO line and an EMF line per event. `init_instructions`: measured exec ->
/// first `/next` instructions of webhook-intake (for the billed init of cold starts);
/// `verify_parse_ns`: measured median of the verify + parse bench, if any.
pub fn webhooks_before(
    init_instructions: Option<u64>,
    verify_parse_ns: Option<f64>,
) -> Vec<CostLine> {
    let n = 1e6;
    let cpu_ms = RUNTIME_MS + verify_parse_ns.unwrap_or(0.0) / 1e6;
    // Claim, then archive and enqueue concurrently, then complete.
    let warm_ms = DYNAMODB_WRITE_MS + S3_PUT_MS.max(SQS_SEND_MS) + DYNAMODB_WRITE_MS + cpu_ms;
    let init_ms = init_ms(init_instructions);
    let log_bytes = LOG_LINE_BYTES + EMF_LINE_BYTES;
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
        line(
            "DynamoDB writes (subject index)",
            n * ADDRESSES_PER_WEBHOOK,
            "WRU",
            n * ADDRESSES_PER_WEBHOOK * DYNAMODB_PER_WRU,
            format!(
                "one UpdateItem per address an event names ({ADDRESSES_PER_WEBHOOK} per webhook, assumed mix); not in the earlier table"
            ),
        ),
        line(
            "CloudWatch Logs",
            n * log_bytes,
            "bytes",
            n * log_bytes * LOGS_PER_BYTE,
            format!(
                "an INFO line ({LOG_LINE_BYTES} B) and an EMF line ({EMF_LINE_BYTES} B) per event, $0.50 per GB; not in the earlier table"
            ),
        ),
    ]
}

/// Cost of 1 M webhooks **after**: intake -> one SQS send; the archiver -> one gzip object
/// per batch and `SendMessageBatch` to the routed queues; the hourly seal. `archiver_ns`: the
/// archiver's measured CPU per event on a full core (`archiver/batch_100x4k` / 100), if any.
pub fn webhooks_after(
    init_instructions: Option<u64>,
    verify_parse_ns: Option<f64>,
    archiver_ns: Option<f64>,
    load: &Load,
) -> Vec<CostLine> {
    let n = 1e6;
    let e = load.events_per_object();
    let batches = n / e;
    let hours = n / (load.rate_per_s * 3600.0);
    let cpu_ms = RUNTIME_MS + verify_parse_ns.unwrap_or(0.0) / 1e6;
    let intake_ms = SQS_SEND_MS + cpu_ms;
    let init_ms = init_ms(init_instructions);
    let per_event_cpu_ms =
        archiver_ns.unwrap_or(ARCHIVER_NS_PER_EVENT) / 1e6 * FULL_VCPU_MB / ARCHIVER_MEMORY_MB;
    let batch_ms = S3_PUT_MS + SQS_SEND_MS + RUNTIME_MS + e * per_event_cpu_ms;
    let seal_ms_per_event = SEAL_NS_PER_EVENT / 1e6 * FULL_VCPU_MB / SEAL_MEMORY_MB;
    let forward_requests = n * (INTAKE_SQS_SENDS / 10.0 + QUEUES_PER_BATCH * 0.5 / e);
    let seal_gets = batches;
    let seal_puts = 2.0 * hours;
    let seal_lists = hours * (1.0 + load.objects_per_hour() / 1000.0);
    let log_bytes = n * (LOG_LINE_BYTES + (SOURCES_PER_BATCH + 1.0) * EMF_LINE_BYTES) / e;
    let load_text = format!(
        "{e:.0} events per object = min(BatchSize {}, {} webhooks/s x {} s window / {} pollers)",
        load.batch_size, load.rate_per_s, load.window_s, load.pollers
    );
    vec![
        line(
            "Lambda requests (intake)",
            n,
            "requests",
            n * LAMBDA_PER_REQUEST,
            "$0.20 per M".into(),
        ),
        line(
            "Lambda duration (intake, warm)",
            n * intake_ms,
            "ms at 128 MB",
            n * duration_usd(intake_ms, INTAKE_MEMORY_MB),
            format!("{intake_ms:.1} ms = SQS send {SQS_SEND_MS} + CPU {cpu_ms:.2}"),
        ),
        line(
            "Lambda init (intake cold starts)",
            n * COLD_START_SHARE * init_ms,
            "ms at 128 MB",
            n * COLD_START_SHARE * duration_usd(init_ms, INTAKE_MEMORY_MB),
            format!(
                "{:.0} cold starts x {init_ms:.1} ms (measured init instructions / {INSTRUCTIONS_PER_MS_AT_128MB} per ms)",
                n * COLD_START_SHARE
            ),
        ),
        line(
            "SQS SendMessage (events queue)",
            n,
            "requests",
            n * SQS_PER_REQUEST,
            "one per webhook, before the 200 (a body over 64 KB is one request per 64 KB chunk)"
                .into(),
        ),
        line(
            "SQS receive + delete (archiver)",
            n * CONSUMER_SQS_REQUESTS_PER_MESSAGE,
            "requests",
            n * CONSUMER_SQS_REQUESTS_PER_MESSAGE * SQS_PER_REQUEST,
            "the event source receives 10 and deletes 10 per request".into(),
        ),
        line(
            "Lambda requests (archiver)",
            batches,
            "requests",
            batches * LAMBDA_PER_REQUEST,
            load_text.clone(),
        ),
        line(
            "Lambda duration (archiver)",
            batches * batch_ms,
            "ms at 256 MB",
            batches * duration_usd(batch_ms, ARCHIVER_MEMORY_MB),
            format!(
                "{batch_ms:.0} ms per batch = S3 put {S3_PUT_MS} + concurrent sends {SQS_SEND_MS} + {e:.0} x {per_event_cpu_ms:.2} ms CPU"
            ),
        ),
        line(
            "S3 PUT (archive batch objects)",
            batches,
            "PUTs",
            batches * S3_PER_PUT,
            format!("one gzip NDJSON object per batch: {load_text}"),
        ),
        line(
            "Lambda duration (seal)",
            n * seal_ms_per_event,
            "ms at 1024 MB",
            n * duration_usd(seal_ms_per_event, SEAL_MEMORY_MB) + hours * LAMBDA_PER_REQUEST,
            format!(
                "hourly, each event merged once: {seal_ms_per_event:.2} ms per event (gunzip + gzip, {SEAL_NS_PER_EVENT} ns on a full core); one request per hour"
            ),
        ),
        line(
            "S3 seal (GET, PUT, LIST)",
            seal_gets + seal_puts + seal_lists,
            "requests",
            seal_gets * S3_PER_GET + (seal_puts + seal_lists) * S3_PER_PUT,
            format!(
                "hourly: each batch object read once ({seal_gets:.0} GETs), sealed object + manifest ({seal_puts:.0} PUTs), {seal_lists:.0} LIST pages; deletes are free"
            ),
        ),
        line(
            "SQS SendMessageBatch (routed queues)",
            forward_requests,
            "requests",
            forward_requests * SQS_PER_REQUEST,
            format!(
                "{INTAKE_SQS_SENDS} routed messages per webhook, 10 per request, + half a request per queue touched ({QUEUES_PER_BATCH}) per batch"
            ),
        ),
        line(
            "SQS receive + delete (consumers)",
            n * INTAKE_SQS_SENDS * CONSUMER_SQS_REQUESTS_PER_MESSAGE,
            "requests",
            n * INTAKE_SQS_SENDS * CONSUMER_SQS_REQUESTS_PER_MESSAGE * SQS_PER_REQUEST,
            "pollers batch 10: ~0.2 requests per message".into(),
        ),
        line(
            "DynamoDB writes",
            0.0,
            "WRU",
            0.0,
            "none: no ledger (the archive and the consumers dedupe), no subject index (the archive's lines and manifests carry keyed subject hashes)".into(),
        ),
        line(
            "CloudWatch Logs",
            log_bytes,
            "bytes",
            log_bytes * LOGS_PER_BYTE,
            format!(
                "intake: nothing per accepted event (DEBUG, no metric line; refusals stay WARN); archiver: one INFO line + {} EMF lines per batch, $0.50 per GB",
                SOURCES_PER_BATCH + 1.0
            ),
        ),
    ]
}

/// Both webhook tables, the load behind the after one and its sensitivity to the rate.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookCosts {
    pub before: Vec<CostLine>,
    pub before_usd: f64,
    pub after: Vec<CostLine>,
    pub after_usd: f64,
    pub load: Load,
    pub events_per_object: f64,
    /// (webhooks/s, events per object, $ per M webhooks after).
    pub sensitivity: Vec<(f64, f64, f64)>,
}

/// The rates of the sensitivity table (webhooks/s).
pub const SENSITIVITY_RATES: [f64; 7] = [1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0];

/// The webhook tables with the measured figures the bench has (see [`webhooks_after`]).
pub fn webhooks(
    init_instructions: Option<u64>,
    verify_parse_ns: Option<f64>,
    archiver_ns: Option<f64>,
) -> WebhookCosts {
    let before = webhooks_before(init_instructions, verify_parse_ns);
    let after = webhooks_after(
        init_instructions,
        verify_parse_ns,
        archiver_ns,
        &DEFAULT_LOAD,
    );
    WebhookCosts {
        before_usd: total(&before),
        before,
        after_usd: total(&after),
        after,
        load: DEFAULT_LOAD,
        events_per_object: DEFAULT_LOAD.events_per_object(),
        sensitivity: sensitivity(&SENSITIVITY_RATES),
    }
}

/// The after table's total at several steady rates (the default load otherwise): (webhooks/s,
/// events per object, $ per M).
pub fn sensitivity(rates: &[f64]) -> Vec<(f64, f64, f64)> {
    rates
        .iter()
        .map(|&rate_per_s| {
            let load = Load {
                rate_per_s,
                ..DEFAULT_LOAD
            };
            (
                rate_per_s,
                load.events_per_object(),
                total(&webhooks_after(None, None, None, &load)),
            )
        })
        .collect()
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
                "{BILLING_DYNAMODB_WRITES_PER_CUSTOMER} per invoice, counted by make bench-billing: ledger 2, the invoice record (1-3 KB) at create, attempt, 6 state steps and each line"
            ),
        ),
        line(
            "DynamoDB reads",
            customers * BILLING_DYNAMODB_READS_PER_CUSTOMER,
            "RRU",
            customers * BILLING_DYNAMODB_READS_PER_CUSTOMER * DYNAMODB_PER_RRU,
            format!(
                "{BILLING_DYNAMODB_READS_PER_CUSTOMER} per invoice: record, subscriptions, the period's usage records (~9 KB), credit"
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
        let lines = webhooks_before(Some(20_000_000), Some(4_000.0));
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
        assert!(close(by("DynamoDB writes (subject index)"), 0.375));
        // 730 bytes per event at $0.50 per GB.
        assert!(close(by("CloudWatch Logs"), 0.365));
        assert!(total(&lines) > 7.0, "{}", total(&lines));
    }

    #[test]
    fn after_costs_a_dollar_or_less_per_million_webhooks() {
        let load = DEFAULT_LOAD;
        assert_eq!(load.events_per_object(), 100.0);
        let lines = webhooks_after(Some(20_000_000), Some(4_000.0), None, &load);
        let by = |name: &str| lines.iter().find(|l| l.item == name).unwrap().usd;
        assert!(close(by("Lambda requests (intake)"), 0.20));
        assert!(close(by("SQS SendMessage (events queue)"), 0.40));
        assert!(close(by("SQS receive + delete (archiver)"), 0.08));
        // 10,000 objects of 100 events.
        assert!(close(by("S3 PUT (archive batch objects)"), 0.05));
        assert!(close(by("Lambda requests (archiver)"), 0.002));
        // 120,000 routed messages per 100 k... 0.12 + 2 / 100 requests per webhook.
        assert!(close(
            by("SQS SendMessageBatch (routed queues)"),
            0.14 * 0.40
        ));
        assert!(close(by("SQS receive + delete (consumers)"), 0.096));
        assert_eq!(by("DynamoDB writes"), 0.0);
        let t = total(&lines);
        assert!(close(t, lines.iter().map(|l| l.usd).sum()));
        assert!(t <= 1.00, "after: ${t:.4} per M webhooks");
        let before = total(&webhooks_before(Some(20_000_000), Some(4_000.0)));
        assert!(t * 7.0 < before, "before ${before:.4}, after ${t:.4}");
        // Fewer events per object cost more; a full batch of 500 less.
        let s = sensitivity(&[5.0, 25.0, 50.0, 250.0]);
        assert_eq!(
            s.iter().map(|r| r.1).collect::<Vec<_>>(),
            vec![10.0, 50.0, 100.0, 500.0]
        );
        assert!(s.windows(2).all(|w| w[0].2 > w[1].2), "{s:?}");
        assert!(
            s[2].2 <= 1.00 && s[3].2 <= 1.00,
            "from 50 webhooks/s: {s:?}"
        );
        assert!(s[1].2 < 1.01, "about a dollar at 25 webhooks/s: {s:?}");
        assert!(
            s[0].2 > 1.00,
            "not at 5 webhooks/s with a 10 s window: {s:?}"
        );
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
