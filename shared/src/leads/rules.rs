//! The facts a lead is judged on, and the conditions rules files write about them.
//!
//! Both the scoring rules (`shared/data/scoring.json`) and the territory rules
//! (`shared/data/territories.json`) use the same [`Conditions`]: every field given must match
//! (AND), each field lists accepted values (OR), compared case-insensitively. A field absent
//! from the conditions is not looked at. The value `unknown` matches a fact that is not known
//! (no country, no employee band).

use serde::Deserialize;

/// What is known of a lead when it is scored and routed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Every source this person came through (`portal.signup`, `stripe.customer`, ...).
    pub sources: Vec<String>,
    pub form: Option<String>,
    pub product: Option<String>,
    pub job_title: Option<String>,
    /// ISO alpha-2.
    pub country: Option<String>,
    /// `EMEA`, `NA`, `LATAM`, `APAC`.
    pub region: Option<String>,
    /// `corporate`, `free_mail`, `disposable`.
    pub domain_class: String,
    /// `1-10` ... `5001+`.
    pub employee_band: Option<String>,
    pub industry: Option<String>,
    pub sector: Option<String>,
    pub marketing_consent: bool,
    /// Whether the provider answered (found or unknown) or was not needed.
    pub enriched: bool,
}

/// Conditions of a rule. See the module doc for the matching semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    #[serde(default)]
    pub source: Vec<String>,
    #[serde(default)]
    pub form: Vec<String>,
    #[serde(default)]
    pub product: Vec<String>,
    /// Matches when the job title contains one of these words (case-insensitive).
    #[serde(default)]
    pub job_title_contains: Vec<String>,
    #[serde(default)]
    pub country: Vec<String>,
    #[serde(default)]
    pub region: Vec<String>,
    #[serde(default)]
    pub domain_class: Vec<String>,
    #[serde(default)]
    pub employee_band: Vec<String>,
    #[serde(default)]
    pub industry: Vec<String>,
    #[serde(default)]
    pub sector: Vec<String>,
    #[serde(default)]
    pub marketing_consent: Option<bool>,
    #[serde(default)]
    pub enriched: Option<bool>,
}

fn one_of(accepted: &[String], value: Option<&str>) -> bool {
    if accepted.is_empty() {
        return true;
    }
    match value {
        Some(v) => accepted.iter().any(|a| a.eq_ignore_ascii_case(v)),
        None => accepted.iter().any(|a| a.eq_ignore_ascii_case("unknown")),
    }
}

impl Conditions {
    /// Whether the facts satisfy every condition given.
    pub fn matches(&self, f: &Facts) -> bool {
        let source_ok =
            self.source.is_empty() || f.sources.iter().any(|s| one_of(&self.source, Some(s)));
        let title_ok = self.job_title_contains.is_empty()
            || f.job_title.as_deref().is_some_and(|t| {
                let t = t.to_lowercase();
                t.split(|c: char| !c.is_alphanumeric()).any(|word| {
                    self.job_title_contains
                        .iter()
                        .any(|w| w.eq_ignore_ascii_case(word))
                })
            });
        source_ok
            && title_ok
            && one_of(&self.form, f.form.as_deref())
            && one_of(&self.product, f.product.as_deref())
            && one_of(&self.country, f.country.as_deref())
            && one_of(&self.region, f.region.as_deref())
            && one_of(&self.domain_class, Some(&f.domain_class))
            && one_of(&self.employee_band, f.employee_band.as_deref())
            && one_of(&self.industry, f.industry.as_deref())
            && one_of(&self.sector, f.sector.as_deref())
            && self
                .marketing_consent
                .is_none_or(|c| c == f.marketing_consent)
            && self.enriched.is_none_or(|e| e == f.enriched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_or_unknown() {
        let f = Facts {
            sources: vec!["portal.signup".into(), "stripe.customer".into()],
            job_title: Some("VP, Engineering".into()),
            region: Some("EMEA".into()),
            domain_class: "corporate".into(),
            ..Facts::default()
        };
        let c: Conditions =
            serde_json::from_str(r#"{"region": ["emea"], "source": ["stripe.customer"]}"#).unwrap();
        assert!(c.matches(&f));
        let c: Conditions = serde_json::from_str(r#"{"region": ["NA"]}"#).unwrap();
        assert!(!c.matches(&f));
        let c: Conditions = serde_json::from_str(r#"{"employee_band": ["unknown"]}"#).unwrap();
        assert!(c.matches(&f), "unknown matches a missing fact");
        let c: Conditions = serde_json::from_str(r#"{"job_title_contains": ["vp"]}"#).unwrap();
        assert!(c.matches(&f));
        let c: Conditions = serde_json::from_str(r#"{"job_title_contains": ["p"]}"#).unwrap();
        assert!(!c.matches(&f), "whole words only");
        assert!(Conditions::default().matches(&f));
        assert!(
            serde_json::from_str::<Conditions>(r#"{"regoin": ["NA"]}"#).is_err(),
            "typos are refused"
        );
    }
}
