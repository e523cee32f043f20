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
    /// is left out (usage may fill it). Negative seats count as none; the sum saturates.
    pub fn fixed_monthly(&self, seats: i64) -> Money {
        let seats = Quantity::from_int(seats.max(0));
        let amount = self
            .charges
            .iter()
            .filter(|c| c.metric.is_none())
            .map(|c| super::pricing::total(&c.model.price(seats)))
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
    /// Parses and validates a price book document: every price within
    /// [`super::pricing::MAX_PRICE`], tiers ascending, package sizes positive, each metric
    /// priced once. A document that fails is refused whole with an [`Error::Invalid`] naming
    /// the plan, the charge and the value (an override in the table then fails the cold
    /// start rather than pricing anything with it).
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
            super::pricing::check_price("minimum", plan.minimum)
                .map_err(|e| Error::Invalid(format!("plan {id}: {e}")))?;
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

    /// A one-plan book whose `seats` charge has `model` (JSON) and whose minimum is `minimum`.
    fn book_with(model: &str, minimum: &str) -> Result<PriceBook> {
        PriceBook::from_json(&format!(
            r#"{{"version":"x","plans":{{"p":{{"name":"p","currency":"usd","minimum":{minimum},
            "charges":[{{"id":"seats","description":"s","model":{model}}}]}}}}}}"#
        ))
    }

    #[test]
    fn extreme_values_are_refused_with_the_value_named() {
        let max = super::super::pricing::MAX_PRICE;
        let refused = [
            (
                r#"{"type":"flat","amount":9223372036854775807}"#,
                "0",
                "flat amount",
            ),
            (r#"{"type":"flat","amount":-1}"#, "0", "flat amount"),
            (
                r#"{"type":"per_unit","unit_price":"9223372036854.775807"}"#,
                "0",
                "unit_price",
            ),
            (
                r#"{"type":"per_unit","unit_price":"1000000000000.000001"}"#,
                "0",
                "unit_price",
            ),
            (
                r#"{"type":"per_unit","unit_price":"-0.5"}"#,
                "0",
                "unit_price",
            ),
            (
                r#"{"type":"package","size":0,"price":900}"#,
                "0",
                "package size",
            ),
            (
                r#"{"type":"package","size":"-1","price":900}"#,
                "0",
                "package size",
            ),
            (
                r#"{"type":"package","size":"0.0000001","price":900}"#,
                "0",
                "package size",
            ),
            (
                r#"{"type":"package","size":1,"price":9223372036854775807}"#,
                "0",
                "package price",
            ),
            (
                r#"{"type":"graduated","tiers":[{"up_to":0,"unit_price":"1"},{"unit_price":"1"}]}"#,
                "0",
                "ascend",
            ),
            (
                r#"{"type":"graduated","tiers":[{"up_to":10,"unit_price":"1","flat":9223372036854775807},{"unit_price":"1"}]}"#,
                "0",
                "tier 1 flat",
            ),
            (
                r#"{"type":"volume","tiers":[{"unit_price":"1","flat":1000000000001}]}"#,
                "0",
                "tier 1 flat",
            ),
            (
                r#"{"type":"flat","amount":1}"#,
                "9223372036854775807",
                "minimum",
            ),
            (r#"{"type":"flat","amount":1}"#, "-1", "minimum"),
        ];
        for (model, minimum, named) in refused {
            match book_with(model, minimum) {
                Err(Error::Invalid(m)) => {
                    assert!(m.contains("plan p") && m.contains(named), "{model}: {m}");
                }
                other => panic!("{model} minimum {minimum}: {other:?}"),
            }
        }
        // Not even numbers of the type: refused by the parser, the same error kind.
        for (model, minimum) in [
            (r#"{"type":"flat","amount":18446744073709551615}"#, "0"),
            (r#"{"type":"flat","amount":1}"#, "18446744073709551615"),
            (r#"{"type":"per_unit","unit_price":"1e40"}"#, "0"),
            (r#"{"type":"package","size":"1e40","price":1}"#, "0"),
        ] {
            let e = book_with(model, minimum).unwrap_err();
            assert!(
                matches!(&e, Error::Invalid(m) if m.starts_with("price book is not valid")),
                "{model}: {e:?}"
            );
        }
        // The limit itself is a price.
        let at_limit = format!(r#"{{"type":"flat","amount":{max}}}"#);
        let book = book_with(&at_limit, &max.to_string()).unwrap();
        let plan = book.plan("p").unwrap().1;
        assert_eq!(plan.fixed_monthly(i64::MAX).amount, max);
    }

    #[test]
    fn the_recurring_value_of_absurd_seat_counts_saturates() {
        let book = book_with(r#"{"type":"per_unit","unit_price":"1000000000000"}"#, "0").unwrap();
        let plan = book.plan("p").unwrap().1;
        for seats in [i64::MAX, 1 << 58, i64::MAX / 1_000_000 + 1] {
            assert_eq!(plan.fixed_monthly(seats).amount, i64::MAX, "{seats}");
        }
        assert_eq!(plan.fixed_monthly(0).amount, 0);
        assert_eq!(
            plan.fixed_monthly(-5).amount,
            0,
            "negative seats cost nothing"
        );
    }
}
