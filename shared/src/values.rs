//! Parsed values that cross module boundaries (the CRM, the stores and the domains speak
//! them, rather than strings).
//!
//! [`Email`] can only exist trimmed, lower-cased and well formed, and never prints itself.
//!
//! [`Currency`] is a lower-case ISO 4217 code with its minor-unit exponent; [`Money`] is integer
//! minor units plus a currency, never `f64`.
//!
//! [`Country`] is an ISO 3166-1 alpha-2 code from the bundled table
//! (`shared/data/countries.tsv`, origin noted in its header), found from a code (alpha-2 or
//! alpha-3), a name or a common alias, whatever the case, accents or punctuation.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// Why an e-mail address was refused. The text never repeats the address (it is personal data
/// and error texts reach logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email is missing")]
    Missing,
    #[error("email is longer than 254 characters")]
    TooLong,
    #[error("email must contain exactly one '@'")]
    At,
    #[error("email has an empty or over-long local part")]
    LocalPart,
    #[error("email local part has a character that is not allowed")]
    LocalChar,
    #[error("email domain is not a valid host name with a dot")]
    Domain,
}

/// A normalised e-mail address: trimmed, lower-cased, `local@domain` with a dotted domain.
/// Its `Debug` hides the address (it must not reach logs by accident).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Parses and normalises an address.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err(EmailError::Missing);
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let mut parts = s.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EmailError::At);
        };
        if local.is_empty() || local.len() > 64 {
            return Err(EmailError::LocalPart);
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return Err(EmailError::LocalChar);
        }
        if !valid_domain(domain) {
            return Err(EmailError::Domain);
        }
        Ok(Self(s))
    }

    /// The whole address (use it only where it is needed: the lead store, the CRM payload).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part, lower-case.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email(***@{})", self.domain())
    }
}

impl TryFrom<String> for Email {
    type Error = EmailError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

fn valid_domain(domain: &str) -> bool {
    if domain.len() > 253 || !domain.contains('.') {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let tld_ok = labels.last().is_some_and(|t| {
        t.len() >= 2 && t.chars().all(|c| c.is_ascii_alphabetic()) || t.starts_with("xn--")
    });
    tld_ok
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// An ISO 3166-1 alpha-2 country code known to the bundled table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// Finds a country from a code (alpha-2, alpha-3), its name or an alias; `None` when
    /// unknown (the lead is kept, routed by the default territory).
    pub fn parse(raw: &str) -> Option<Self> {
        let key = fold(raw);
        if key.is_empty() {
            return None;
        }
        table().by_key.get(&key).copied()
    }

    /// The alpha-2 code, e.g. `DE`.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }

    /// The English short name.
    pub fn name(&self) -> &'static str {
        table().info.get(self).map_or("", |i| i.name)
    }

    /// The sales region (`EMEA`, `NA`, `LATAM`, `APAC`) the table assigns.
    pub fn region(&self) -> &'static str {
        table().info.get(self).map_or("", |i| i.region)
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Country::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown country {s:?}")))
    }
}

struct CountryInfo {
    name: &'static str,
    region: &'static str,
}

struct CountryTable {
    by_key: HashMap<String, Country>,
    info: HashMap<Country, CountryInfo>,
}

const COUNTRIES_TSV: &str = include_str!("../data/countries.tsv");

fn table() -> &'static CountryTable {
    static TABLE: OnceLock<CountryTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut by_key = HashMap::new();
        let mut info = HashMap::new();
        for line in COUNTRIES_TSV.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let cols: Vec<&'static str> = line.split('\t').collect();
            let (Some(a2), Some(a3), Some(name), Some(region)) =
                (cols.first(), cols.get(1), cols.get(2), cols.get(3))
            else {
                continue;
            };
            let b = a2.as_bytes();
            if b.len() != 2 {
                continue;
            }
            let c = Country([b[0], b[1]]);
            info.insert(c, CountryInfo { name, region });
            by_key.insert(fold(a2), c);
            by_key.insert(fold(a3), c);
            by_key.insert(fold(name), c);
            for alias in cols.get(4).copied().unwrap_or("").split('|') {
                if !alias.trim().is_empty() {
                    by_key.insert(fold(alias), c);
                }
            }
        }
        // Usual short forms that are not codes of their own.
        for (alias, code) in [("u s", "US"), ("u s a", "US"), ("u k", "GB")] {
            if let Some(c) = by_key.get(&fold(code)).copied() {
                by_key.insert(alias.to_owned(), c);
            }
        }
        CountryTable { by_key, info }
    })
}

/// Case-, accent- and punctuation-insensitive key: "Côte d'Ivoire" -> "cote d ivoire",
/// "U.S.A." -> "u s a".
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars().flat_map(char::to_lowercase) {
        let base = match ch {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ñ' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ý' | 'ÿ' => 'y',
            c if c.is_alphanumeric() => c,
            _ => ' ',
        };
        out.push(base);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A three-letter ISO 4217 currency code, lower case as Stripe writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Decimal places of the minor unit (0 for JPY-like currencies, 2 otherwise).
    pub fn exponent(&self) -> u32 {
        match self.0.as_str() {
            "jpy" | "krw" | "vnd" | "clp" | "isk" | "xof" | "xaf" | "pyg" | "ugx" => 0,
            _ => 2,
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let l = s.trim().to_ascii_lowercase();
        if l.len() == 3 && l.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Currency(l))
        } else {
            Err(format!("not a currency code: {s:?}"))
        }
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Currency::try_from(s.to_owned())
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of money in integer minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (cents for USD/EUR). May be negative (credit lines).
    pub amount: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }
    /// `12.34 USD` style, for humans (HTML invoices, logs).
    pub fn display(&self) -> String {
        format_minor(self.amount, &self.currency)
    }
}

/// Formats minor units with the currency's exponent: `1234, usd` -> `12.34 USD`.
pub fn format_minor(amount: i64, currency: &Currency) -> String {
    let exp = currency.exponent();
    let code = currency.as_str().to_ascii_uppercase();
    if exp == 0 {
        return format!("{amount} {code}");
    }
    let div = 10i64.pow(exp);
    let sign = if amount < 0 { "-" } else { "" };
    let a = amount.unsigned_abs();
    format!(
        "{sign}{}.{:0width$} {code}",
        a / div as u64,
        a % div as u64,
        width = exp as usize
    )
}

/// Escapes text for HTML element content and quoted attribute values (`& < > " '`): every
/// human-readable artifact we render inserts outside text through it.
pub fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_from_codes_names_and_aliases() {
        for (raw, code) in [
            ("DE", "DE"),
            ("deu", "DE"),
            ("Germany", "DE"),
            ("deutschland", "DE"),
            ("United States of America", "US"),
            ("U.S.A.", "US"),
            ("usa", "US"),
            ("UK", "GB"),
            ("England", "GB"),
            ("côte d'ivoire", "CI"),
            ("Cote d Ivoire", "CI"),
            ("Korea, Republic of", "KR"),
            ("South Korea", "KR"),
            ("Türkiye", "TR"),
            ("turkey", "TR"),
            ("  fr ", "FR"),
        ] {
            assert_eq!(
                Country::parse(raw).map(|c| c.code().to_owned()).as_deref(),
                Some(code),
                "{raw}"
            );
        }
        assert_eq!(Country::parse("Atlantis"), None);
        assert_eq!(Country::parse("XX"), None);
        assert_eq!(Country::parse(""), None);
        let de = Country::parse("DE").unwrap();
        assert_eq!((de.name(), de.region()), ("Germany", "EMEA"));
        assert_eq!(Country::parse("US").unwrap().region(), "NA");
        assert_eq!(Country::parse("BR").unwrap().region(), "LATAM");
        assert_eq!(Country::parse("JP").unwrap().region(), "APAC");
    }

    #[test]
    fn the_table_is_complete() {
        // ISO 3166-1 has 249 officially assigned codes.
        assert_eq!(table().info.len(), 249);
        assert!(
            table()
                .info
                .values()
                .all(|i| matches!(i.region, "EMEA" | "NA" | "LATAM" | "APAC"))
        );
    }
}
