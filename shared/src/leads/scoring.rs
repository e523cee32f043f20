//! Lead scoring: fit (size, industry, country, mailbox kind) + intent (source, form, product,
//! title), from a data-driven rules file (`shared/data/scoring.json`).
//!
//! Every rule whose [`Conditions`] match adds its points (negative points subtract); the total
//! is clamped to `0..=max` and graded by the first grade whose `min` it reaches. The matching
//! rules are kept as the score's reasons, stored beside it in the lead and the CRM.

use super::rules::{Conditions, Facts};
use serde::{Deserialize, Serialize};

/// The bundled rules file.
pub const BUNDLED_SCORING: &str = include_str!("../../data/scoring.json");

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rules file is not valid JSON of the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("rules file is inconsistent: {0}")]
    Inconsistent(String),
}

impl From<RulesError> for crate::Error {
    fn from(e: RulesError) -> Self {
        crate::Error::Config(crate::config::ConfigError::Malformed {
            name: "lead rules file".into(),
            reason: e.to_string(),
        })
    }
}

/// Fit or intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Fit,
    Intent,
}

/// One scoring rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRule {
    pub id: String,
    pub kind: RuleKind,
    pub points: i32,
    pub reason: String,
    #[serde(default)]
    pub when: Conditions,
}

/// A grade threshold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grade {
    pub grade: String,
    pub min: u32,
}

/// The scoring rules.
#[derive(Debug, Clone, Deserialize)]
pub struct ScoringRules {
    #[serde(default)]
    pub description: String,
    pub max: u32,
    /// Highest `min` first.
    pub grades: Vec<Grade>,
    pub rules: Vec<ScoreRule>,
}

/// A rule that contributed to a score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreReason {
    pub rule: String,
    pub kind: RuleKind,
    pub points: i32,
    pub reason: String,
}

/// A lead's score with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub points: u32,
    pub fit: i32,
    pub intent: i32,
    pub grade: String,
    pub reasons: Vec<ScoreReason>,
}

impl Score {
    /// The reasons on one line (`+30 enterprise-size company; -10 ...`), for the CRM.
    pub fn summary(&self) -> String {
        self.reasons
            .iter()
            .map(|r| format!("{:+} {}", r.points, r.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl ScoringRules {
    /// Parses and checks a rules file.
    pub fn parse(json: &str) -> Result<Self, RulesError> {
        let mut rules: ScoringRules = serde_json::from_str(json)?;
        if rules.grades.is_empty() {
            return Err(RulesError::Inconsistent("no grades".into()));
        }
        rules.grades.sort_by_key(|g| std::cmp::Reverse(g.min));
        if rules.grades.last().is_some_and(|g| g.min > 0) {
            return Err(RulesError::Inconsistent(
                "the lowest grade must start at 0".into(),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for r in &rules.rules {
            if !ids.insert(r.id.as_str()) {
                return Err(RulesError::Inconsistent(format!(
                    "rule id {} is used twice",
                    r.id
                )));
            }
        }
        Ok(rules)
    }

    /// The bundled rules.
    pub fn bundled() -> Result<Self, RulesError> {
        Self::parse(BUNDLED_SCORING)
    }

    /// Scores the facts.
    pub fn score(&self, facts: &Facts) -> Score {
        let reasons: Vec<ScoreReason> = self
            .rules
            .iter()
            .filter(|r| r.when.matches(facts))
            .map(|r| ScoreReason {
                rule: r.id.clone(),
                kind: r.kind,
                points: r.points,
                reason: r.reason.clone(),
            })
            .collect();
        let sum = |k: RuleKind| {
            reasons
                .iter()
                .filter(|r| r.kind == k)
                .map(|r| r.points)
                .sum::<i32>()
        };
        let (fit, intent) = (sum(RuleKind::Fit), sum(RuleKind::Intent));
        let points = (fit + intent).clamp(0, self.max as i32) as u32;
        let grade = self
            .grades
            .iter()
            .find(|g| points >= g.min)
            .map_or_else(String::new, |g| g.grade.clone());
        Score {
            points,
            fit,
            intent,
            grade,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            sources: vec!["portal.contact_us".into()],
            form: Some("demo-request".into()),
            job_title: Some("Chief Technology Officer".into()),
            country: Some("DE".into()),
            region: Some("EMEA".into()),
            domain_class: "corporate".into(),
            employee_band: Some("1001-5000".into()),
            industry: Some("Software".into()),
            sector: Some("Information Technology".into()),
            enriched: true,
            ..Facts::default()
        }
    }

    #[test]
    fn a_strong_enterprise_lead_grades_a_with_reasons() {
        let rules = ScoringRules::bundled().unwrap();
        let s = rules.score(&facts());
        assert_eq!(s.grade, "A", "{s:?}");
        assert!(s.points >= 70 && s.points <= rules.max);
        let ids: Vec<&str> = s.reasons.iter().map(|r| r.rule.as_str()).collect();
        assert!(ids.contains(&"fit.size.enterprise"), "{ids:?}");
        assert!(ids.contains(&"intent.source.contact_us"), "{ids:?}");
        assert!(ids.contains(&"intent.form.demo"), "{ids:?}");
        assert!(s.fit > 0 && s.intent > 0);
        assert!(s.summary().contains("+"));
    }

    #[test]
    fn disposable_individuals_score_low_and_clamp_at_zero() {
        let rules = ScoringRules::bundled().unwrap();
        let f = Facts {
            sources: vec!["portal.signup".into()],
            domain_class: "disposable".into(),
            ..Facts::default()
        };
        let s = rules.score(&f);
        assert_eq!(s.points, 0);
        assert_eq!(s.grade, "D");
        assert!(s.reasons.iter().any(|r| r.points < 0));
        let f = Facts {
            sources: vec!["portal.signup".into()],
            domain_class: "free_mail".into(),
            ..Facts::default()
        };
        assert!(rules.score(&f).grade != "A");
    }

    #[test]
    fn rules_files_are_checked() {
        assert!(ScoringRules::parse("{}").is_err());
        let dup = r#"{"max": 100, "grades": [{"grade": "D", "min": 0}], "rules": [
            {"id": "a", "kind": "fit", "points": 1, "reason": "x"},
            {"id": "a", "kind": "fit", "points": 1, "reason": "y"}]}"#;
        assert!(matches!(
            ScoringRules::parse(dup),
            Err(RulesError::Inconsistent(_))
        ));
        let typo = r#"{"max": 100, "grades": [{"grade": "D", "min": 0}], "rules": [
            {"id": "a", "kind": "fit", "points": 1, "reason": "x", "when": {"contry": ["US"]}}]}"#;
        assert!(matches!(
            ScoringRules::parse(typo),
            Err(RulesError::Parse(_))
        ));
    }
}
