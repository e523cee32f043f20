//! Criterion results of the functions' hot-path benches (`functions/<name>/benches/*.rs`, run
//! by `cargo bench`): every `<target>/criterion/**/new/estimates.json`, with the bench's id and
//! throughput from the `benchmark.json` beside it.

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

/// One criterion benchmark's latest result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    /// `group/function/parameter` as criterion names it.
    pub id: String,
    /// Median time per iteration, nanoseconds.
    pub median_ns: f64,
    /// Bytes per iteration, when the bench declared `Throughput::Bytes`.
    pub bytes: Option<u64>,
    /// Elements per iteration, when the bench declared `Throughput::Elements`.
    pub elements: Option<u64>,
}

impl BenchResult {
    /// Median nanoseconds per element, when the bench declared an element throughput.
    pub fn ns_per_element(&self) -> Option<f64> {
        self.elements
            .filter(|e| *e > 0)
            .map(|e| self.median_ns / e as f64)
    }
}

#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

#[derive(Deserialize)]
struct Benchmark {
    #[serde(default)]
    full_id: Option<String>,
    #[serde(default)]
    throughput: Option<Throughput>,
}

#[derive(Deserialize)]
enum Throughput {
    Bytes(u64),
    BytesDecimal(u64),
    Elements(u64),
    #[serde(other)]
    Other,
}

/// Every result under `criterion_dir`, sorted by id; a missing directory gives none.
pub fn collect(criterion_dir: &Path) -> Vec<BenchResult> {
    let mut out = Vec::new();
    walk(criterion_dir, criterion_dir, &mut out);
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<BenchResult>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name();
        if name == "new" {
            if let Some(result) = read_one(root, &path) {
                out.push(result);
            }
        } else if name != "report" && name != "base" && name != "change" {
            walk(root, &path, out);
        }
    }
}

fn read_one(root: &Path, new_dir: &Path) -> Option<BenchResult> {
    let estimates: Estimates =
        serde_json::from_slice(&fs::read(new_dir.join("estimates.json")).ok()?).ok()?;
    let benchmark: Option<Benchmark> = fs::read(new_dir.join("benchmark.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let fallback_id = || {
        let dir = new_dir.parent()?.strip_prefix(root).ok()?;
        Some(dir.to_string_lossy().replace('\\', "/"))
    };
    let (full_id, throughput) = match benchmark {
        Some(b) => (b.full_id, b.throughput),
        None => (None, None),
    };
    let (bytes, elements) = match throughput {
        Some(Throughput::Bytes(n) | Throughput::BytesDecimal(n)) => (Some(n), None),
        Some(Throughput::Elements(n)) => (None, Some(n)),
        _ => (None, None),
    };
    Some(BenchResult {
        id: full_id.or_else(fallback_id)?,
        median_ns: estimates.median.point_estimate,
        bytes,
        elements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, estimates: &str, benchmark: Option<&str>) {
        let d = dir.join(rel).join("new");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("estimates.json"), estimates).unwrap();
        if let Some(b) = benchmark {
            fs::write(d.join("benchmark.json"), b).unwrap();
        }
    }

    #[test]
    fn collects_medians_ids_and_throughput() {
        let dir =
            std::env::temp_dir().join(format!("blapi-bench-criterion-{}", uuid::Uuid::new_v4()));
        let est = |m: f64| {
            format!(
                r#"{{"mean":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0}},"point_estimate":9.0,"standard_error":0.1}},"median":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0}},"point_estimate":{m},"standard_error":0.1}}}}"#
            )
        };
        write(
            &dir,
            "webhook/verify_parse/4096",
            &est(3500.0),
            Some(
                r#"{"group_id":"webhook","function_id":"verify_parse","value_str":"4096","throughput":{"Bytes":4096},"full_id":"webhook/verify_parse/4096","directory_name":"webhook/verify_parse/4096","title":"webhook/verify_parse/4096"}"#,
            ),
        );
        write(
            &dir,
            "pricing",
            &est(2.0e6),
            Some(
                r#"{"group_id":"pricing","function_id":null,"value_str":null,"throughput":{"Elements":10000},"full_id":"pricing","directory_name":"pricing","title":"pricing"}"#,
            ),
        );
        write(&dir, "bare/thing", &est(10.0), None);
        fs::create_dir_all(dir.join("report")).unwrap();

        let results = collect(&dir);
        let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["bare/thing", "pricing", "webhook/verify_parse/4096"]);
        assert_eq!(results[2].median_ns, 3500.0);
        assert_eq!(results[2].bytes, Some(4096));
        assert_eq!(results[1].ns_per_element(), Some(200.0));
        assert_eq!(results[0].elements, None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_has_no_results() {
        assert!(collect(Path::new("/nonexistent/criterion")).is_empty());
    }
}
