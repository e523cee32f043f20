//! Each function's environment for the bench: its `Environment.Variables` from template.yaml
//! resolved to the local stack's resources, and its `MemorySize` (Lambda passes it to the
//! runtime as `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
//!
//! The resolved variables come from `blapi_infra::provision` (the runner provisions its own
//! stack prefix), or from a JSON file: `{"<function>": {"VAR": "value"}}` or the
//! `.local/stack.json` that `make up` writes (its `functions`). The bench never keeps its own
//! list of resources.

use anyhow::{Context, Result};
use serde_norway::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Environment variables per function.
pub type FunctionEnvs = BTreeMap<String, BTreeMap<String, String>>;

/// Reads `{"<function>": {"VAR": "value"}}`; non-string values are written as JSON.
pub fn from_json_file(path: &Path) -> Result<FunctionEnvs> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    from_json(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Parses `{"<function>": {"VAR": "value"}}`, or `{"functions": {...}, ...}` (`.local/stack.json`).
pub fn from_json(text: &str) -> Result<FunctionEnvs> {
    let mut doc: serde_json::Value = serde_json::from_str(text)?;
    if let Some(functions) = doc.get_mut("functions").filter(|f| f.is_object()) {
        doc = functions.take();
    }
    let raw: BTreeMap<String, BTreeMap<String, serde_json::Value>> = serde_json::from_value(doc)?;
    Ok(raw
        .into_iter()
        .map(|(function, vars)| {
            let vars = vars
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect();
            (function, vars)
        })
        .collect())
}

/// `MemorySize` of each function binary in template.yaml (`Globals` default applied).
pub fn memory_sizes(template_yaml: &str) -> Result<BTreeMap<String, u32>> {
    let doc: Value = serde_norway::from_str(template_yaml).context("template.yaml")?;
    let global = doc
        .get("Globals")
        .and_then(|g| g.get("Function"))
        .and_then(|f| f.get("MemorySize"))
        .and_then(Value::as_u64)
        .unwrap_or(128);
    let mut out = BTreeMap::new();
    if let Some(Value::Mapping(resources)) = doc.get("Resources") {
        for resource in resources.values() {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
                continue;
            }
            let Some(binary) = resource
                .get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let memory = resource
                .get("Properties")
                .and_then(|p| p.get("MemorySize"))
                .and_then(Value::as_u64)
                .unwrap_or(global);
            out.insert(binary.to_owned(), u32::try_from(memory).unwrap_or(128));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_function_envs() {
        let envs = from_json(
            r#"{"webhook-intake": {"LEDGER_TABLE": "x-ledger", "WEBHOOK_TOLERANCE_SECS": 300}}"#,
        )
        .unwrap();
        assert_eq!(envs["webhook-intake"]["LEDGER_TABLE"], "x-ledger");
        assert_eq!(envs["webhook-intake"]["WEBHOOK_TOLERANCE_SECS"], "300");
        let stack = from_json(r#"{"prefix": "p", "functions": {"usage-billing": {"BILLING_TABLE": "p-BillingTable"}}}"#).unwrap();
        assert_eq!(stack["usage-billing"]["BILLING_TABLE"], "p-BillingTable");
    }

    #[test]
    fn memory_sizes_follow_the_template() {
        let yaml = r#"
Globals:
  Function:
    MemorySize: 128
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Intake:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: webhook-intake
    Properties:
      Environment:
        Variables:
          TABLE: !Ref Table
  Billing:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: usage-billing
    Properties:
      MemorySize: 256
"#;
        let sizes = memory_sizes(yaml).unwrap();
        assert_eq!(sizes["webhook-intake"], 128);
        assert_eq!(sizes["usage-billing"], 256);
    }
}
