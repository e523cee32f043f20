//! Logs and metrics.
//!
//! Logs: `tracing` events, JSON when Lambda's `AWS_LAMBDA_LOG_FORMAT=JSON` (the template sets
//! it), plain text otherwise; the level comes from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else
//! `info`. `RUST_LOG` takes a level and `target=level` directives (`info,blapi=debug`), read by
//! `tracing_subscriber::filter::Targets`: not `EnvFilter`, whose span-field matchers link a full
//! regex engine (~0.3 MB of every function binary) that no directive of ours uses. The runtime opens a span per invocation carrying `requestId`; it is printed with
//! every event, and handlers add business ids as fields (`customer_id = %id`).
//!
//! Metrics: [`Metrics`] writes CloudWatch Embedded Metric Format lines to stdout, which Lambda
//! turns into metrics without an API call.

use std::collections::BTreeMap;
use std::io::Write;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. Call once at the top of `main`.
pub fn init() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            // Lambda's levels are tracing's, plus FATAL (errors only, here).
            std::env::var("AWS_LAMBDA_LOG_LEVEL")
                .ok()
                .map(|l| l.to_lowercase().replace("fatal", "error"))
        })
        .unwrap_or_else(|| "info".to_owned());
    let filter = filter(&level);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_target(false);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .finish()
            .with(filter)
            .try_init()
    } else {
        builder.with_ansi(false).finish().with(filter).try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// The filter of a `RUST_LOG`-style value; `info` when it does not parse.
fn filter(directives: &str) -> Targets {
    directives
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
}

/// CloudWatch metric units used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Bytes,
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
            Unit::None => "None",
        }
    }
}

/// A set of metrics written as one EMF line by [`Metrics::flush`]. Values of the same name
/// add up (counters); dimensions are fixed per instance.
#[derive(Debug, Clone)]
pub struct Metrics {
    namespace: String,
    dimensions: BTreeMap<String, String>,
    values: BTreeMap<String, (f64, Unit)>,
}

impl Metrics {
    /// `namespace` from `METRICS_NAMESPACE` in Lambda; `function` becomes a dimension.
    pub fn new(namespace: impl Into<String>, function: impl Into<String>) -> Self {
        let mut dimensions = BTreeMap::new();
        dimensions.insert("function".to_owned(), function.into());
        Self {
            namespace: namespace.into(),
            dimensions,
            values: BTreeMap::new(),
        }
    }

    /// Adds a dimension (keep the set small: each combination is a metric of its own).
    pub fn with_dimension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.dimensions.insert(name.into(), value.into());
        self
    }

    /// Adds `value` to counter `name`.
    pub fn count(&mut self, name: &str, value: u64) {
        self.add(name, value as f64, Unit::Count);
    }

    /// Records a value (added to any earlier value of the same name).
    pub fn add(&mut self, name: &str, value: f64, unit: Unit) {
        let entry = self.values.entry(name.to_owned()).or_insert((0.0, unit));
        entry.0 += value;
    }

    /// The current value of a metric (tests, summaries).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).map(|(v, _)| *v)
    }

    /// The EMF document for the metrics recorded so far, or `None` when there are none.
    pub fn render(&self, timestamp_ms: i64) -> Option<String> {
        if self.values.is_empty() {
            return None;
        }
        let dims: Vec<&String> = self.dimensions.keys().collect();
        let defs: Vec<serde_json::Value> = self
            .values
            .iter()
            .map(|(name, (_, unit))| serde_json::json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut doc = serde_json::Map::new();
        doc.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [dims],
                    "Metrics": defs,
                }]
            }),
        );
        for (k, v) in &self.dimensions {
            doc.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        for (k, (v, _)) in &self.values {
            doc.insert(k.clone(), serde_json::json!(v));
        }
        Some(serde_json::Value::Object(doc).to_string())
    }

    /// Writes the EMF line to stdout and clears the values.
    pub fn flush(&mut self) {
        if let Some(line) = self.render(chrono::Utc::now().timestamp_millis()) {
            let mut out = std::io::stdout().lock();
            // Metrics are best effort: a closed stdout must not fail the invocation.
            let _ = writeln!(out, "{line}");
        }
        self.values.clear();
    }
}

/// The one way every function counts its outcomes: one per invocation, shared by reference
/// with the records of a batch handled concurrently (`&self` methods), written as one EMF
/// line by [`Tally::flush`].
#[derive(Debug)]
pub struct Tally(std::sync::Mutex<Metrics>);

impl Tally {
    /// `namespace` from the function's config (`METRICS_NAMESPACE`); `function` a dimension.
    pub fn new(namespace: impl Into<String>, function: impl Into<String>) -> Self {
        Self(std::sync::Mutex::new(Metrics::new(namespace, function)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `n` to counter `name`.
    pub fn count(&self, name: &str, n: u64) {
        self.lock().count(name, n);
    }

    /// Adds 1 to counter `name`.
    pub fn one(&self, name: &str) {
        self.count(name, 1);
    }

    /// Records a value with its unit.
    pub fn add(&self, name: &str, value: f64, unit: Unit) {
        self.lock().add(name, value, unit);
    }

    /// The current value of a counter (tests, summaries).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.lock().get(name)
    }

    /// Writes the EMF line to stdout and clears the counters.
    pub fn flush(&self) {
        self.lock().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_and_directives() {
        use tracing::Level;
        let f = filter("debug");
        assert!(f.would_enable("anything", &Level::DEBUG));
        assert!(!f.would_enable("anything", &Level::TRACE));
        let f = filter("warn,blapi=debug");
        assert!(f.would_enable("blapi::http", &Level::DEBUG));
        assert!(!f.would_enable("aws_smithy_runtime", &Level::INFO));
        // Lambda's level names (upper case); what does not parse: info.
        assert!(filter("ERROR").would_enable("x", &Level::ERROR));
        assert!(!filter("ERROR").would_enable("x", &Level::WARN));
        let f = filter("blapi=loud");
        assert!(f.would_enable("x", &Level::INFO));
        assert!(!f.would_enable("x", &Level::DEBUG));
    }

    #[test]
    fn a_tally_adds_up_across_shared_references() {
        let t = Tally::new("blapi", "x");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| t.one("Handled"));
            }
        });
        t.count("Handled", 2);
        assert_eq!(t.get("Handled"), Some(6.0));
        t.flush();
        assert_eq!(t.get("Handled"), None);
    }

    #[test]
    fn emf_document_has_definitions_dimensions_and_values() {
        let mut m = Metrics::new("blapi", "webhook-intake");
        assert!(m.render(0).is_none());
        m.count("EventsAccepted", 1);
        m.count("EventsAccepted", 2);
        m.add("ArchiveBytes", 4096.0, Unit::Bytes);
        let doc: serde_json::Value =
            serde_json::from_str(&m.render(1_700_000_000_000).unwrap()).unwrap();
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
        let cw = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "blapi");
        assert_eq!(cw["Dimensions"][0][0], "function");
        assert_eq!(cw["Metrics"].as_array().unwrap().len(), 2);
        assert_eq!(doc["function"], "webhook-intake");
        assert_eq!(doc["EventsAccepted"], 3.0);
        assert_eq!(doc["ArchiveBytes"], 4096.0);
        m.flush();
        assert!(m.get("EventsAccepted").is_none());
    }
}
