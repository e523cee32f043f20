//! Reading `template.yaml` and evaluating its intrinsic functions.
//!
//! The YAML short forms (`!Ref`, `!GetAtt`, `!Sub`, `!If`, ...) are first rewritten into
//! CloudFormation's JSON long forms (`{"Ref": ..}`, `{"Fn::GetAtt": [..]}`), then
//! [`Resolver`] evaluates them against the local names of the provisioned resources.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The parsed template (long-form JSON).
#[derive(Debug, Clone)]
pub struct Template {
    pub doc: Value,
}

impl Template {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let yaml: serde_norway::Value =
            serde_norway::from_str(text).context("template.yaml is not valid YAML")?;
        Ok(Self {
            doc: to_json(yaml)?,
        })
    }

    /// Resources as (logical id, type, properties) in document order.
    pub fn resources(&self) -> Vec<(String, String, Value)> {
        self.doc
            .get("Resources")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(id, r)| {
                        (
                            id.clone(),
                            r.get("Type")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            r.get("Properties").cloned().unwrap_or(Value::Null),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The resource with this logical id.
    pub fn resource(&self, id: &str) -> Option<&Value> {
        self.doc.get("Resources")?.get(id)
    }

    /// Parameter defaults.
    pub fn parameter_defaults(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(params) = self.doc.get("Parameters").and_then(Value::as_object) {
            for (name, p) in params {
                let v = match p.get("Default") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::Bool(b)) => b.to_string(),
                    _ => String::new(),
                };
                out.insert(name.clone(), v);
            }
        }
        out
    }

    /// The function-wide environment from `Globals.Function.Environment.Variables`.
    pub fn global_env(&self) -> Map<String, Value> {
        self.doc
            .pointer("/Globals/Function/Environment/Variables")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }
}

fn to_json(v: serde_norway::Value) -> Result<Value> {
    use serde_norway::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or_default())
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(seq.into_iter().map(to_json).collect::<Result<_>>()?),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    other => serde_norway::to_string(&other)?.trim().to_owned(),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(t.value)?;
            let mut out = Map::new();
            match name {
                "Ref" => {
                    out.insert("Ref".into(), inner);
                }
                "GetAtt" => {
                    let parts = match inner {
                        Value::String(s) => {
                            let (a, b) = s
                                .split_once('.')
                                .ok_or_else(|| anyhow!("!GetAtt {s} needs Resource.Attribute"))?;
                            Value::Array(vec![Value::String(a.into()), Value::String(b.into())])
                        }
                        other => other,
                    };
                    out.insert("Fn::GetAtt".into(), parts);
                }
                "Condition" => {
                    out.insert("Condition".into(), inner);
                }
                other => {
                    out.insert(format!("Fn::{other}"), inner);
                }
            }
            Value::Object(out)
        }
    })
}

/// What a provisioned resource resolves to: its `Ref` value and its `GetAtt` attributes.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Physical {
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
}

/// Evaluates intrinsic functions. A resource missing from `resources` resolves to an error,
/// so a template referring to something the local stack does not provision is caught.
#[derive(Debug, Clone)]
pub struct Resolver<'a> {
    pub template: &'a Template,
    pub params: BTreeMap<String, String>,
    pub pseudo: BTreeMap<String, String>,
    pub resources: BTreeMap<String, Physical>,
}

/// Marker for `AWS::NoValue`: removed from lists and maps.
const NO_VALUE: &str = "\u{0}AWS::NoValue";

impl Resolver<'_> {
    /// Resolves a value to a string (scalars only).
    pub fn string(&self, v: &Value) -> Result<String> {
        match self.value(v)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => bail!("expected a scalar, got {other}"),
        }
    }

    /// Resolves every intrinsic inside `v`.
    pub fn value(&self, v: &Value) -> Result<Value> {
        match v {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    let r = self.value(i)?;
                    if r.as_str() != Some(NO_VALUE) {
                        out.push(r);
                    }
                }
                Ok(Value::Array(out))
            }
            Value::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().ok_or_else(|| anyhow!("empty map"))?;
                match k.as_str() {
                    "Ref" => {
                        self.reference(arg.as_str().ok_or_else(|| anyhow!("Ref takes a name"))?)
                    }
                    "Fn::GetAtt" => {
                        let parts = arg
                            .as_array()
                            .ok_or_else(|| anyhow!("GetAtt takes [Resource, Attribute]"))?;
                        let (Some(r), Some(a)) = (
                            parts.first().and_then(Value::as_str),
                            parts.get(1).and_then(Value::as_str),
                        ) else {
                            bail!("GetAtt takes [Resource, Attribute]");
                        };
                        self.get_att(r, a).map(Value::String)
                    }
                    "Fn::Sub" => self.sub(arg).map(Value::String),
                    "Fn::If" => {
                        let parts = arg
                            .as_array()
                            .ok_or_else(|| anyhow!("If takes [Condition, then, else]"))?;
                        let cond = parts
                            .first()
                            .and_then(Value::as_str)
                            .ok_or_else(|| anyhow!("If needs a condition name"))?;
                        let branch = if self.condition(cond)? {
                            parts.get(1)
                        } else {
                            parts.get(2)
                        };
                        self.value(branch.ok_or_else(|| anyhow!("If needs two branches"))?)
                    }
                    "Fn::Join" => {
                        let parts = arg
                            .as_array()
                            .ok_or_else(|| anyhow!("Join takes [sep, list]"))?;
                        let sep = parts.first().and_then(Value::as_str).unwrap_or_default();
                        let list = self.value(parts.get(1).unwrap_or(&Value::Null))?;
                        let items = list.as_array().cloned().unwrap_or_default();
                        let strings = items
                            .iter()
                            .map(|i| self.string(i))
                            .collect::<Result<Vec<_>>>()?;
                        Ok(Value::String(strings.join(sep)))
                    }
                    "Fn::Equals" | "Fn::Not" | "Fn::And" | "Fn::Or" => {
                        Ok(Value::Bool(self.eval_condition(v)?))
                    }
                    _ => {
                        let mut out = Map::new();
                        out.insert(k.clone(), self.value(arg)?);
                        Ok(Value::Object(out))
                    }
                }
            }
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, val) in m {
                    let r = self.value(val)?;
                    if r.as_str() != Some(NO_VALUE) {
                        out.insert(k.clone(), r);
                    }
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn reference(&self, name: &str) -> Result<Value> {
        if name == "AWS::NoValue" {
            return Ok(Value::String(NO_VALUE.into()));
        }
        if let Some(v) = self.pseudo.get(name) {
            return Ok(Value::String(v.clone()));
        }
        if let Some(v) = self.params.get(name) {
            return Ok(Value::String(v.clone()));
        }
        self.resources
            .get(name)
            .map(|p| Value::String(p.reference.clone()))
            .ok_or_else(|| anyhow!("Ref {name}: not a parameter or a provisioned resource"))
    }

    fn get_att(&self, resource: &str, attr: &str) -> Result<String> {
        self.resources
            .get(resource)
            .and_then(|p| p.attrs.get(attr).cloned())
            .ok_or_else(|| anyhow!("GetAtt {resource}.{attr}: not provisioned locally"))
    }

    fn sub(&self, arg: &Value) -> Result<String> {
        let (text, vars) = match arg {
            Value::String(s) => (s.clone(), Map::new()),
            Value::Array(parts) => (
                parts
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                parts
                    .get(1)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => bail!("Sub takes a string or [string, vars]"),
        };
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in Sub"))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(&self.string(v)?);
            } else if let Some((r, a)) =
                name.split_once('.').filter(|(r, _)| !r.starts_with("AWS:"))
            {
                out.push_str(&self.get_att(r, a)?);
            } else {
                out.push_str(&self.string(&self.reference(name)?)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Evaluates a named condition of the template's `Conditions`.
    pub fn condition(&self, name: &str) -> Result<bool> {
        let c = self
            .template
            .doc
            .get("Conditions")
            .and_then(|c| c.get(name))
            .ok_or_else(|| anyhow!("unknown condition {name}"))?;
        self.eval_condition(c)
    }

    fn eval_condition(&self, v: &Value) -> Result<bool> {
        let m = v
            .as_object()
            .filter(|m| m.len() == 1)
            .ok_or_else(|| anyhow!("bad condition {v}"))?;
        let (k, arg) = m.iter().next().ok_or_else(|| anyhow!("bad condition"))?;
        let args = arg.as_array().cloned().unwrap_or_default();
        match k.as_str() {
            "Fn::Equals" => {
                let a = self.string(args.first().unwrap_or(&Value::Null))?;
                let b = self.string(args.get(1).unwrap_or(&Value::Null))?;
                Ok(a == b)
            }
            "Fn::Not" => Ok(!self.eval_condition(args.first().unwrap_or(&Value::Null))?),
            "Fn::And" => args
                .iter()
                .try_fold(true, |acc, a| Ok(acc && self.eval_condition(a)?)),
            "Fn::Or" => args
                .iter()
                .try_fold(false, |acc, a| Ok(acc || self.eval_condition(a)?)),
            "Condition" => self.condition(arg.as_str().unwrap_or_default()),
            other => bail!("unsupported condition function {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"
Parameters:
  Base: { Type: String, Default: "https://x" }
  Empty: { Type: String, Default: "" }
Conditions:
  HasEmpty: !Not [!Equals [!Ref Empty, ""]]
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy: { deadLetterTargetArn: !GetAtt D.Arn, maxReceiveCount: 5 }
  D: { Type: AWS::SQS::Queue }
  F:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          A: !Ref Q
          B: !Sub "${D.Arn}/x/${AWS::Region}/${Base}"
          C: !If [HasEmpty, !Ref Base, "none"]
          L: [!Ref Q, !Ref AWS::NoValue]
"#;

    #[test]
    fn resolves_short_forms() {
        let t = Template::parse(T).unwrap();
        let mut resources = BTreeMap::new();
        resources.insert(
            "Q".into(),
            Physical {
                reference: "http://q".into(),
                attrs: [("Arn".to_owned(), "arn:q".to_owned())].into(),
            },
        );
        resources.insert(
            "D".into(),
            Physical {
                reference: "http://d".into(),
                attrs: [("Arn".to_owned(), "arn:d".to_owned())].into(),
            },
        );
        let r = Resolver {
            template: &t,
            params: t.parameter_defaults(),
            pseudo: [("AWS::Region".to_owned(), "us-east-1".to_owned())].into(),
            resources,
        };
        let env = r
            .value(
                t.resource("F")
                    .unwrap()
                    .pointer("/Properties/Environment/Variables")
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(env["A"], "http://q");
        assert_eq!(env["B"], "arn:d/x/us-east-1/https://x");
        assert_eq!(env["C"], "none");
        assert_eq!(env["L"], serde_json::json!(["http://q"]));
        let redrive = r
            .value(
                t.resource("Q")
                    .unwrap()
                    .pointer("/Properties/RedrivePolicy")
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(redrive["deadLetterTargetArn"], "arn:d");
    }

    #[test]
    fn unknown_reference_is_an_error() {
        let t = Template::parse("Resources: {}").unwrap();
        let r = Resolver {
            template: &t,
            params: BTreeMap::new(),
            pseudo: BTreeMap::new(),
            resources: BTreeMap::new(),
        };
        assert!(r.value(&serde_json::json!({"Ref": "Nope"})).is_err());
    }
}
