//! Parsed values that cross module boundaries (the CRM, the stores and the domains speak
//! them, rather than strings).
//!
//! [`Country`] is an ISO 3166-1 alpha-2 code from the bundled table
//! (`shared/data/countries.tsv`, origin noted in its header), found from a code (alpha-2 or
//! alpha-3), a name or a common alias, whatever the case, accents or punctuation.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

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
