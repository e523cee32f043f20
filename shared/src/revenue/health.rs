//! Customer health: a score 0–100 with its reasons, from usage trend, seat utilisation,
//! payment state, license expiry and refunds or disputes. The weights and thresholds are data
//! (`health.json`, documented there and in `docs/metrics.md`); each score keeps the inputs it
//! used. Pure: no I/O.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The inputs of one customer's score, kept with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthInputs {
    /// Per metric, the sum of the last 30 days and of the 30 before (millionths).
    pub usage_last_30: BTreeMap<String, i64>,
    pub usage_previous_30: BTreeMap<String, i64>,
    /// Active users as last reported in the last 30 days (summed over subscriptions).
    pub active_users: Option<u64>,
    /// Seats of the subscriptions holding seats.
    pub licensed_seats: Option<u32>,
    /// Dunning status: `active`, `past_due`, `suspended`.
    pub payment: String,
    pub days_to_license_expiry: Option<i64>,
    pub refund: bool,
    pub dispute: bool,
}

impl HealthInputs {
    /// Mean over metrics used in the 60 days of the change in percent (a metric new in the
    /// last 30 days counts +100%); `None` with no usage at all.
    pub fn usage_change_percent(&self) -> Option<f64> {
        let metrics: Vec<f64> = self
            .usage_last_30
            .keys()
            .chain(self.usage_previous_30.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|m| {
                let last = *self.usage_last_30.get(m).unwrap_or(&0) as f64;
                let prev = *self.usage_previous_30.get(m).unwrap_or(&0) as f64;
                match (prev > 0.0, last > 0.0) {
                    (true, _) => Some((last - prev) * 100.0 / prev),
                    (false, true) => Some(100.0),
                    (false, false) => None,
                }
            })
            .collect();
        (!metrics.is_empty()).then(|| metrics.iter().sum::<f64>() / metrics.len() as f64)
    }

    fn seat_percent(&self) -> Option<f64> {
        match (self.active_users, self.licensed_seats) {
            (Some(u), Some(s)) if s > 0 => Some(u as f64 * 100.0 / f64::from(s)),
            _ => None,
        }
    }

    fn refunds(&self) -> &'static str {
        if self.dispute {
            "dispute"
        } else if self.refund {
            "refund"
        } else {
            "none"
        }
    }
}

/// One factor's rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    pub name: String,
    #[serde(default)]
    pub input: String,
    pub weight: u32,
    /// Ascending `[threshold, fraction]`: the first threshold the value is under.
    #[serde(default)]
    pub below: Vec<(f64, f64)>,
    #[serde(default)]
    pub otherwise: Option<f64>,
    /// For a category input.
    #[serde(default)]
    pub values: BTreeMap<String, f64>,
}

/// The rules: data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthRules {
    pub version: String,
    pub healthy_from: u32,
    pub watch_from: u32,
    /// A drop of more than this many points in a week raises an early warning.
    pub week_drop_alert: u32,
    #[serde(default)]
    pub required: Vec<String>,
    pub factors: Vec<Factor>,
}

/// How one factor scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactorScore {
    pub name: String,
    pub weight: u32,
    /// `None`: no data for it.
    pub fraction: Option<f64>,
    pub reason: String,
}

/// A customer's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `None`: not enough data to score.
    pub score: Option<u32>,
    /// `healthy`, `watch`, `at_risk` or `no_data`.
    pub band: String,
    /// Most important first.
    pub reasons: Vec<String>,
    pub factors: Vec<FactorScore>,
    pub inputs: HealthInputs,
    pub rules_version: String,
}

pub const FACTORS: [&str; 5] = [
    "usage_trend",
    "seat_utilisation",
    "payment",
    "license_expiry",
    "refunds_disputes",
];

impl HealthRules {
    /// The bundled rules (`health.json`).
    pub fn bundled() -> Result<Self> {
        Self::from_json(include_str!("health.json"))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let rules: HealthRules =
            serde_json::from_str(text).map_err(|e| Error::Invalid(format!("health rules: {e}")))?;
        for f in &rules.factors {
            if !FACTORS.contains(&f.name.as_str()) {
                return Err(Error::Invalid(format!(
                    "health rules: unknown factor {}",
                    f.name
                )));
            }
            if f.weight == 0 || f.weight > 1000 {
                return Err(Error::Invalid(format!(
                    "health rules: weight of {} must be 1..=1000",
                    f.name
                )));
            }
            let fractions = f
                .below
                .iter()
                .map(|(_, v)| *v)
                .chain(f.otherwise)
                .chain(f.values.values().copied());
            if fractions.clone().any(|v| !(0.0..=1.0).contains(&v)) {
                return Err(Error::Invalid(format!(
                    "health rules: fractions of {} must be within 0..=1",
                    f.name
                )));
            }
            if f.below.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(Error::Invalid(format!(
                    "health rules: thresholds of {} must ascend",
                    f.name
                )));
            }
        }
        if rules.watch_from > rules.healthy_from || rules.healthy_from > 100 {
            return Err(Error::Invalid(
                "health rules: need watch_from <= healthy_from <= 100".into(),
            ));
        }
        Ok(rules)
    }

    fn fraction(f: &Factor, value: f64) -> f64 {
        f.below
            .iter()
            .find(|(t, _)| value < *t)
            .map(|(_, v)| *v)
            .or(f.otherwise)
            .unwrap_or(1.0)
    }

    fn score_factor(f: &Factor, i: &HealthInputs) -> FactorScore {
        let (fraction, reason) = match f.name.as_str() {
            "usage_trend" => match i.usage_change_percent() {
                Some(c) => (
                    Some(Self::fraction(f, c)),
                    if c < 0.0 {
                        format!("usage down {:.0}% over 30 days", -c)
                    } else {
                        format!("usage up {c:.0}% over 30 days")
                    },
                ),
                None => (None, "no usage history".to_owned()),
            },
            "seat_utilisation" => match i.seat_percent() {
                Some(p) => (
                    Some(Self::fraction(f, p)),
                    format!(
                        "{p:.0}% of seats in use ({} of {})",
                        i.active_users.unwrap_or(0),
                        i.licensed_seats.unwrap_or(0)
                    ),
                ),
                None => (None, "no active-user telemetry".to_owned()),
            },
            "payment" => (
                Some(*f.values.get(&i.payment).unwrap_or(&0.0)),
                format!("payment {}", i.payment.replace('_', " ")),
            ),
            "license_expiry" => match i.days_to_license_expiry {
                Some(d) if d < 0 => (Some(Self::fraction(f, d as f64)), "license expired".into()),
                Some(d) => (
                    Some(Self::fraction(f, d as f64)),
                    format!("license expires in {d} days"),
                ),
                None => (None, "no license".to_owned()),
            },
            _ => {
                let kind = i.refunds();
                (
                    Some(*f.values.get(kind).unwrap_or(&1.0)),
                    match kind {
                        "none" => "no refund or dispute".to_owned(),
                        k => format!("{k} on record"),
                    },
                )
            }
        };
        FactorScore {
            name: f.name.clone(),
            weight: f.weight,
            fraction,
            reason,
        }
    }

    /// Scores `inputs`.
    pub fn score(&self, inputs: HealthInputs) -> Health {
        let factors: Vec<FactorScore> = self
            .factors
            .iter()
            .map(|f| Self::score_factor(f, &inputs))
            .collect();
        let missing_required = factors
            .iter()
            .find(|f| f.fraction.is_none() && self.required.contains(&f.name));
        let (weight, earned) = factors
            .iter()
            .filter_map(|f| {
                f.fraction
                    .map(|x| (f64::from(f.weight), f64::from(f.weight) * x))
            })
            .fold((0.0, 0.0), |(w, e), (fw, fe)| (w + fw, e + fe));
        let score = match missing_required {
            Some(_) => None,
            None if weight > 0.0 => Some((earned * 100.0 / weight).round() as u32),
            None => None,
        };
        let band = match score {
            None => "no_data",
            Some(s) if s >= self.healthy_from => "healthy",
            Some(s) if s >= self.watch_from => "watch",
            Some(_) => "at_risk",
        };
        let mut ranked: Vec<&FactorScore> = factors
            .iter()
            .filter(|f| f.fraction.is_none_or(|x| x < 1.0))
            .collect();
        // What cost the most points first; missing data after the losses.
        ranked.sort_by(|a, b| {
            let lost =
                |f: &FactorScore| f.fraction.map_or(-1.0, |x| f64::from(f.weight) * (1.0 - x));
            lost(b).total_cmp(&lost(a))
        });
        let mut reasons: Vec<String> = match missing_required {
            Some(f) => vec![format!("no data: {}", f.reason)],
            None => Vec::new(),
        };
        reasons.extend(ranked.iter().map(|f| f.reason.clone()));
        if reasons.is_empty() {
            reasons.push("every signal healthy".into());
        }
        reasons.dedup();
        Health {
            score,
            band: band.to_owned(),
            reasons,
            factors,
            inputs,
            rules_version: self.version.clone(),
        }
    }
}
