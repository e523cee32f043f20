//! The price book: plans, their charges (metric, aggregation, price model) and currency.
//!
//! Data, not code: the versioned JSON file `shared/data/pricebook.json` is embedded as the
//! default, and a newer version stored in the billing table (`pk = PRICEBOOK`, `sk = CURRENT`,
//! attribute `doc`) overrides it without a deploy. Every invoice records the version it was
//! priced with.

use super::aggregate::Aggregation;
use super::money::{Currency, Money, Quantity};
use super::pricing::PriceModel;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The file shipped with the code.
pub const EMBEDDED: &str = include_str!("../../data/pricebook.json");

/// One charge of a plan. Without `metric` it is a fixed charge priced on the subscription
/// quantity (seats) and prorated by active days; with one it prices aggregated usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub description: String,
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub aggregation: Option<Aggregation>,
    pub model: PriceModel,
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub currency: Currency,
    /// Stripe price / plan ids that map to this plan.
    #[serde(default)]
    pub stripe_prices: Vec<String>,
    /// Minimum charge per full period in minor units (prorated like fixed charges).
    #[serde(default)]
    pub minimum: i64,
    pub charges: Vec<Charge>,
}

impl Plan {
    /// The fixed charges of a full period for `seats` (minor units of the plan's currency),
    /// priced by the same models as the invoices: the plan's recurring value. The minimum
    /// is left out (usage may fill it).
    pub fn fixed_monthly(&self, seats: i64) -> Money {
        let amount = self
            .charges
            .iter()
            .filter(|c| c.metric.is_none())
            .map(|c| super::pricing::total(&c.model.price(Quantity::from_int(seats))))
            .fold(0_i64, i64::saturating_add);
        Money::new(amount, self.currency.clone())
    }

    /// The charge pricing `metric`, if the plan has one.
    pub fn charge_for(&self, metric: &str) -> Option<&Charge> {
        self.charges
            .iter()
            .find(|c| c.metric.as_deref() == Some(metric))
    }
}

/// A versioned price book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceBook {
    pub version: String,
    #[serde(default)]
    pub description: Option<String>,
    pub plans: BTreeMap<String, Plan>,
}

impl PriceBook {
    /// Parses and validates a price book document.
    pub fn from_json(text: &str) -> Result<Self> {
        let book: PriceBook = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("price book is not valid: {e}")))?;
        book.validate()?;
        Ok(book)
    }

    /// The embedded default.
    pub fn embedded() -> Result<Self> {
        Self::from_json(EMBEDDED)
    }

    fn validate(&self) -> Result<()> {
        if self.version.trim().is_empty() {
            return Err(Error::Invalid("price book has no version".into()));
        }
        for (id, plan) in &self.plans {
            let mut metrics = std::collections::HashSet::new();
            for c in &plan.charges {
                c.model
                    .validate()
                    .map_err(|e| Error::Invalid(format!("plan {id} charge {}: {e}", c.id)))?;
                match (&c.metric, c.aggregation) {
                    (Some(m), Some(_)) => {
                        if !metrics.insert(m.clone()) {
                            return Err(Error::Invalid(format!(
                                "plan {id} prices metric {m} twice"
                            )));
                        }
                    }
                    (None, None) => {}
                    _ => {
                        return Err(Error::Invalid(format!(
                            "plan {id} charge {}: metric and aggregation go together",
                            c.id
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The plan for a plan id or a Stripe price/plan id. `None`: a plan with no price.
    pub fn plan(&self, id: &str) -> Option<(&str, &Plan)> {
        if let Some((k, p)) = self.plans.get_key_value(id) {
            return Some((k.as_str(), p));
        }
        self.plans
            .iter()
            .find(|(_, p)| p.stripe_prices.iter().any(|s| s == id))
            .map(|(k, p)| (k.as_str(), p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_book_is_valid_and_resolves_aliases() {
        let book = PriceBook::embedded().unwrap();
        assert!(!book.version.is_empty());
        let (id, plan) = book.plan("price_cloud_pro").unwrap();
        assert_eq!(id, "cloud-pro");
        assert_eq!(plan.currency.as_str(), "usd");
        assert!(plan.charge_for("api_calls").is_some());
        assert!(plan.charge_for("nope").is_none());
        assert!(book.plan("unknown").is_none());
    }

    #[test]
    fn invalid_books_are_refused() {
        assert!(PriceBook::from_json("{").is_err());
        let twice = r#"{"version":"1","plans":{"p":{"name":"p","currency":"usd","charges":[
            {"id":"a","description":"a","metric":"m","aggregation":"sum","model":{"type":"flat","amount":1}},
            {"id":"b","description":"b","metric":"m","aggregation":"sum","model":{"type":"flat","amount":1}}]}}}"#;
        assert!(PriceBook::from_json(twice).is_err());
        let no_agg = r#"{"version":"1","plans":{"p":{"name":"p","currency":"usd","charges":[
            {"id":"a","description":"a","metric":"m","model":{"type":"flat","amount":1}}]}}}"#;
        assert!(PriceBook::from_json(no_agg).is_err());
    }
}
