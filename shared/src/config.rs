//! Typed configuration, read once per cold start.
//!
//! Each function declares a struct of what it needs and builds it with [`Env`]: a missing or
//! malformed variable fails at start with the variable's name, never later in a request.
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Display` print `[redacted]`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Why configuration could not be read. Always names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing environment variable {name}")]
    Missing { name: String },
    #[error("environment variable {name} is malformed: {reason}")]
    Malformed { name: String, reason: String },
}

/// A value that must never reach a log. `Debug`/`Display` print `[redacted]`; read it with
/// [`Secret::expose`] at the one place it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The secret value. Call it where the value is used, never to log or format it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

/// A source of configuration variables: the process environment in Lambda, a map in tests
/// (setting process variables is `unsafe` in Rust 2024 and races between tests).
#[derive(Debug, Clone, Default)]
pub struct Env {
    overrides: Option<HashMap<String, String>>,
}

impl Env {
    /// Reads the process environment.
    pub fn process() -> Self {
        Self { overrides: None }
    }

    /// Reads only the given map (tests, local tools).
    pub fn from_map<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            overrides: Some(
                vars.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        match &self.overrides {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    /// A variable that must be present and non-empty.
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        match self.get(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(ConfigError::Missing {
                name: name.to_owned(),
            }),
        }
    }

    /// A variable that may be absent or empty.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }

    /// A required variable parsed into `T`.
    pub fn parsed<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.required(name)?;
        parse(name, &raw)
    }

    /// An optional variable parsed into `T`, `default` when absent.
    pub fn parsed_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.optional(name) {
            Some(raw) => parse(name, &raw),
            None => Ok(default),
        }
    }

    /// A required URL (http or https), without a trailing slash.
    pub fn url(&self, name: &str) -> Result<String, ConfigError> {
        let raw = self.required(name)?;
        let trimmed = raw.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(trimmed).map_err(|e| ConfigError::Malformed {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::Malformed {
                name: name.to_owned(),
                reason: format!("scheme must be http or https, not {}", parsed.scheme()),
            });
        }
        Ok(trimmed.to_owned())
    }
}

fn parse<T>(name: &str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    raw.trim().parse::<T>().map_err(|e| ConfigError::Malformed {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_variable_is_named() {
        let env = Env::from_map([("OTHER", "x")]);
        let err = env.required("LEDGER_TABLE").unwrap_err();
        assert_eq!(err.to_string(), "missing environment variable LEDGER_TABLE");
    }

    #[test]
    fn empty_counts_as_missing() {
        let env = Env::from_map([("LEDGER_TABLE", "  ")]);
        assert!(matches!(
            env.required("LEDGER_TABLE"),
            Err(ConfigError::Missing { .. })
        ));
        assert_eq!(env.optional("LEDGER_TABLE"), None);
    }

    #[test]
    fn malformed_number_is_named_with_reason() {
        let env = Env::from_map([("WEBHOOK_TOLERANCE_SECS", "five")]);
        let err = env.parsed::<u64>("WEBHOOK_TOLERANCE_SECS").unwrap_err();
        assert!(
            err.to_string()
                .contains("WEBHOOK_TOLERANCE_SECS is malformed"),
            "{err}"
        );
        assert_eq!(env.parsed_or::<u64>("ABSENT", 300).unwrap(), 300);
        assert_eq!(
            Env::from_map([("N", " 42 ")]).parsed::<u64>("N").unwrap(),
            42
        );
    }

    #[test]
    fn urls_are_checked_and_trimmed() {
        let env = Env::from_map([
            ("A", "http://127.0.0.1:8420/"),
            ("B", "ftp://x"),
            ("C", "nope"),
        ]);
        assert_eq!(env.url("A").unwrap(), "http://127.0.0.1:8420");
        assert!(env.url("B").unwrap_err().to_string().contains("scheme"));
        assert!(matches!(env.url("C"), Err(ConfigError::Malformed { .. })));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("whsec_supersecret".to_owned());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Cfg {
            key: Secret<String>,
        }
        let dbg = format!("{:?}", Cfg { key: s.clone() });
        assert!(!dbg.contains("supersecret"), "{dbg}");
        assert_eq!(s.expose(), "whsec_supersecret");
    }
}
