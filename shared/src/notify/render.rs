//! The notification templates, rendered with minijinja.
//!
//! Files: `templates/notifications/<type>.subject.txt`, `<type>.txt` and `<type>.html` for
//! every [`Kind`], extending `_layout.txt` / `_layout.html`; compiled into the binary
//! (`include_str!`), so the Lambda reads no file. HTML templates are auto-escaped (every value
//! inserted is escaped; nothing is marked safe), text templates are not. An undefined value is
//! an error (the message fails, naming the values it lacks), never an empty blank.
//!
//! Filters: `money` (`{"amount": 123450, "currency": "usd"}` -> `1,234.50 USD`: currency units
//! with the currency's exponent, never cents, never `-0.00`) and `date` (`YYYY-MM-DD`, RFC
//! 3339 or epoch seconds / milliseconds -> `2 March 2026`; `YYYY-MM` -> `March 2026`).

use crate::error::{Error, Result};
use crate::notice::Kind;
use crate::values::Currency;
use chrono::{DateTime, NaiveDate, Utc};
use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value as JValue};
use serde_json::{Map, Value};

/// The files of each kind, by template name.
macro_rules! kind_files {
    ($($kind:literal),* $(,)?) => {
        &[$(
            (
                concat!($kind, ".subject.txt"),
                include_str!(concat!("../../../templates/notifications/", $kind, ".subject.txt")),
            ),
            (
                concat!($kind, ".txt"),
                include_str!(concat!("../../../templates/notifications/", $kind, ".txt")),
            ),
            (
                concat!($kind, ".html"),
                include_str!(concat!("../../../templates/notifications/", $kind, ".html")),
            ),
        )*]
    };
}

const KIND_FILES: &[(&str, &str)] = kind_files!(
    "license.issued",
    "invoice.available",
    "invoice.tax_address_required",
    "billing.payment_failed",
    "billing.dunning_reminder",
    "billing.suspended",
    "billing.reinstated",
    "billing.cancelled",
    "billing.card_expiring",
    "billing.payment_method_missing",
    "privacy.request.completed",
    "privacy.request.deadline",
    "customer.health",
    "marketing.product_news",
);

const LAYOUTS: &[(&str, &str)] = &[
    (
        "_layout.html",
        include_str!("../../../templates/notifications/_layout.html"),
    ),
    (
        "_layout.txt",
        include_str!("../../../templates/notifications/_layout.txt"),
    ),
];

/// One notification, rendered.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line (whitespace collapsed: no header injection).
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("subject_bytes", &self.subject.len())
            .field("text_bytes", &self.text.len())
            .field("html_bytes", &self.html.len())
            .finish()
    }
}

/// Every kind's templates, compiled once per cold start.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

fn template_error(e: minijinja::Error) -> Error {
    Error::Invalid(format!("notification template: {e}"))
}

impl Templates {
    /// The bundled templates. Fails if a template does not compile or a kind lacks one of its
    /// three files.
    pub fn bundled() -> Result<Self> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(template_error)?,
        );
        env.add_filter("money", money_filter);
        env.add_filter("date", date_filter);
        for (name, source) in LAYOUTS.iter().chain(KIND_FILES) {
            env.add_template(name, source).map_err(template_error)?;
        }
        for kind in Kind::ALL {
            for suffix in ["subject.txt", "txt", "html"] {
                let name = format!("{}.{suffix}", kind.as_str());
                env.get_template(&name).map_err(|_| {
                    Error::Invalid(format!(
                        "notification template {name} is missing (templates/notifications/)"
                    ))
                })?;
            }
        }
        Ok(Self { env })
    }

    /// Renders `kind` with `data` (the message's values plus what the notifier adds). The
    /// subject is rendered first and is `subject` in the bodies' context.
    pub fn render(&self, kind: Kind, mut data: Map<String, Value>) -> Result<Rendered> {
        let name = kind.as_str();
        let subject = self.one(&format!("{name}.subject.txt"), &data)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        if subject.is_empty() {
            return Err(Error::Invalid(format!(
                "notification template {name}.subject.txt rendered an empty subject"
            )));
        }
        data.insert("subject".into(), Value::String(subject.clone()));
        Ok(Rendered {
            text: self.one(&format!("{name}.txt"), &data)?,
            html: self.one(&format!("{name}.html"), &data)?,
            subject,
        })
    }

    fn one(&self, name: &str, data: &Map<String, Value>) -> Result<String> {
        let template = self.env.get_template(name).map_err(template_error)?;
        template
            .render(JValue::from(minijinja::value::Serde(data)))
            .map_err(|e| {
                // Name what the message lacks (the engine names only the line).
                let mut lacks: Vec<String> = template
                    .undeclared_variables(false)
                    .into_iter()
                    .filter(|v| !data.contains_key(v))
                    .collect();
                lacks.sort();
                let lacks = if lacks.is_empty() || e.kind() != ErrorKind::UndefinedError {
                    String::new()
                } else {
                    format!(
                        "; values the template names that the message lacks: {}",
                        lacks.join(", ")
                    )
                };
                Error::Invalid(format!("notification template: {e}{lacks}"))
            })
    }
}

/// `amount` minor units of `currency` in currency units with thousands separators:
/// `123450, usd` -> `1,234.50 USD`; `-5, usd` -> `-0.05 USD`; `0` -> `0.00 USD`; `1500, jpy` ->
/// `1,500 JPY`.
pub fn format_money(amount: i64, currency: &Currency) -> String {
    let exp = currency.exponent();
    let div = 10u64.pow(exp);
    let abs = amount.unsigned_abs();
    let units = (abs / div).to_string();
    let mut grouped = String::with_capacity(units.len() + units.len() / 3);
    for (i, c) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if amount < 0 { "-" } else { "" };
    let code = currency.as_str().to_ascii_uppercase();
    if exp == 0 {
        format!("{sign}{grouped} {code}")
    } else {
        format!(
            "{sign}{grouped}.{:0width$} {code}",
            abs % div,
            width = exp as usize
        )
    }
}

fn money_filter(v: JValue) -> std::result::Result<String, minijinja::Error> {
    let bad = || {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "money needs {\"amount\": <integer minor units>, \"currency\": \"<ISO 4217 code>\"}",
        )
    };
    let amount = v
        .get_attr("amount")
        .ok()
        .and_then(|a| a.as_i64())
        .ok_or_else(bad)?;
    let code = v
        .get_attr("currency")
        .ok()
        .and_then(|c| c.as_str().map(str::to_owned))
        .ok_or_else(bad)?;
    let currency = Currency::try_from(code).map_err(|_| bad())?;
    Ok(format_money(amount, &currency))
}

/// A date for people: `2 March 2026` (a month: `March 2026`).
pub fn format_date(v: &Value) -> Option<String> {
    const DAY: &str = "%-d %B %Y";
    if let Some(n) = v.as_i64() {
        // Epoch milliseconds from 1973 on; seconds before that would be in 5138.
        let ms = if n.abs() >= 100_000_000_000 {
            n
        } else {
            n.checked_mul(1000)?
        };
        return DateTime::<Utc>::from_timestamp_millis(ms).map(|d| d.format(DAY).to_string());
    }
    let s = v.as_str()?.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.format(DAY).to_string());
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc).format(DAY).to_string());
    }
    NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
        .ok()
        .map(|d| d.format("%B %Y").to_string())
}

fn date_filter(v: JValue) -> std::result::Result<String, minijinja::Error> {
    let json = if let Some(n) = v.as_i64() {
        Value::from(n)
    } else {
        Value::String(v.as_str().unwrap_or_default().to_owned())
    };
    format_date(&json).ok_or_else(|| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "date needs YYYY-MM-DD, YYYY-MM, RFC 3339 or epoch seconds / milliseconds",
        )
    })
}
