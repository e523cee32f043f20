//! Price models: a quantity in, priced pieces out (each piece becomes an invoice line).
//!
//! - `per_unit`: quantity × unit price.
//! - `graduated`: each tier prices the units that fall in it (`up_to` inclusive, Stripe's rule);
//!   a tier's `flat` is charged once when any unit falls in it. One piece per tier reached.
//! - `volume`: the tier the whole quantity reaches prices **all** units (plus its `flat`).
//! - `package`: `ceil(quantity / size)` blocks × block price.
//! - `flat`: a fixed amount whatever the quantity (platform fee).
//!
//! Amounts are rounded half to even per piece ([`super::money::line_amount`]). A zero quantity
//! costs nothing except under `flat`.
//!
//! A price book is data edited by people, so [`PriceModel::validate`] bounds every price by
//! [`MAX_PRICE`]; pricing itself never overflows or divides by zero whatever the model (an
//! amount past `i64` saturates at `i64::MAX`, a package of no size is one package), so even a
//! model built in code without validation cannot panic or wrap.

use super::money::{Quantity, Rate, SCALE, line_amount};
use serde::{Deserialize, Serialize};

/// The largest price a price book may name, in minor units (a unit price, a flat fee, a
/// package price, a plan minimum): 10^12, ten billion of a two-decimal currency. No real price
/// comes near it, and with it a line stays far from `i64` until absurd quantities.
pub const MAX_PRICE: i64 = 1_000_000_000_000;

/// `Err` naming `what` unless `0 <= amount <= MAX_PRICE` (minor units).
pub(crate) fn check_price(what: &str, amount: i64) -> Result<(), String> {
    if amount < 0 {
        Err(format!("{what} must not be negative (got {amount})"))
    } else if amount > MAX_PRICE {
        Err(format!(
            "{what} {amount} is above the limit of {MAX_PRICE} minor units"
        ))
    } else {
        Ok(())
    }
}

/// [`check_price`] of a unit price (minor units with six decimals).
fn check_rate(what: &str, rate: Rate) -> Result<(), String> {
    if rate.micros() < 0 {
        Err(format!("{what} must not be negative (got {rate})"))
    } else if rate.micros() > MAX_PRICE.saturating_mul(SCALE) {
        Err(format!(
            "{what} {rate} is above the limit of {MAX_PRICE} minor units"
        ))
    } else {
        Ok(())
    }
}

/// One tier. `up_to: None` is the last, unbounded tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tier {
    #[serde(default)]
    pub up_to: Option<Quantity>,
    pub unit_price: Rate,
    /// Flat amount in minor units charged when the tier is reached.
    #[serde(default)]
    pub flat: i64,
}

/// How a quantity is priced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PriceModel {
    PerUnit { unit_price: Rate },
    Graduated { tiers: Vec<Tier> },
    Volume { tiers: Vec<Tier> },
    Package { size: Quantity, price: i64 },
    Flat { amount: i64 },
}

/// A priced piece of a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub quantity: Quantity,
    #[serde(default)]
    pub unit_price: Option<Rate>,
    /// `tier 2 (1000 < q <= 10000)`, `package of 1000`, ...
    #[serde(default)]
    pub tier: Option<String>,
    /// Minor units.
    pub amount: i64,
}

impl PriceModel {
    /// Checks the model is well formed: tiers ascending from above zero, only the last one
    /// unbounded, positive package sizes, every price in `0..=`[`MAX_PRICE`]. The message
    /// says which value is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            PriceModel::Graduated { tiers } | PriceModel::Volume { tiers } => {
                if tiers.is_empty() {
                    return Err("tiers must not be empty".into());
                }
                let mut prev = Quantity::ZERO;
                for (i, t) in tiers.iter().enumerate() {
                    let last = i + 1 == tiers.len();
                    match (t.up_to, last) {
                        (None, true) => {}
                        (None, false) => return Err("only the last tier may be unbounded".into()),
                        (Some(_), true) => {
                            return Err("the last tier must be unbounded (up_to: null)".into());
                        }
                        (Some(u), false) => {
                            if u <= prev {
                                return Err(format!(
                                    "tier {} bounds must ascend from above zero (up_to {u} after {prev})",
                                    i + 1
                                ));
                            }
                            prev = u;
                        }
                    }
                    check_rate(&format!("tier {} unit_price", i + 1), t.unit_price)?;
                    check_price(&format!("tier {} flat", i + 1), t.flat)?;
                }
                Ok(())
            }
            PriceModel::Package { size, price } => {
                if size.micros() <= 0 {
                    return Err(format!("package size must be positive (got {size})"));
                }
                check_price("package price", *price)
            }
            PriceModel::PerUnit { unit_price } => check_rate("unit_price", *unit_price),
            PriceModel::Flat { amount } => check_price("flat amount", *amount),
        }
    }

    /// Prices `quantity`.
    pub fn price(&self, quantity: Quantity) -> Vec<Piece> {
        match self {
            PriceModel::PerUnit { unit_price } => vec![Piece {
                quantity,
                unit_price: Some(*unit_price),
                tier: None,
                amount: line_amount(quantity, *unit_price),
            }],
            PriceModel::Flat { amount } => vec![Piece {
                quantity: Quantity::from_int(1),
                unit_price: None,
                tier: Some("flat fee".into()),
                amount: *amount,
            }],
            PriceModel::Package { size, price } => {
                let q = i128::from(quantity.micros().max(0));
                // A package of no size (refused by `validate`) is one package, not a panic.
                let s = i128::from(size.micros().max(1));
                let blocks = if size.micros() > 0 {
                    i64::try_from((q + s - 1) / s).unwrap_or(i64::MAX)
                } else {
                    i64::from(q > 0)
                };
                vec![Piece {
                    quantity,
                    unit_price: None,
                    tier: Some(format!("{blocks} package(s) of {size} at {price}")),
                    amount: blocks.saturating_mul(*price),
                }]
            }
            PriceModel::Graduated { tiers } => {
                let mut out = Vec::new();
                let mut lower = Quantity::ZERO;
                for (i, t) in tiers.iter().enumerate() {
                    if quantity <= lower {
                        break;
                    }
                    let upper = t.up_to.map_or(quantity, |u| u.min(quantity));
                    // Saturating: tiers that do not ascend (refused by `validate`) must not
                    // overflow either.
                    let units =
                        Quantity::from_micros(upper.micros().saturating_sub(lower.micros()));
                    out.push(Piece {
                        quantity: units,
                        unit_price: Some(t.unit_price),
                        tier: Some(tier_label(i, lower, t.up_to)),
                        amount: line_amount(units, t.unit_price).saturating_add(t.flat),
                    });
                    match t.up_to {
                        Some(u) => lower = u,
                        None => break,
                    }
                }
                out
            }
            PriceModel::Volume { tiers } => {
                if quantity.micros() <= 0 {
                    return vec![Piece {
                        quantity,
                        unit_price: tiers.first().map(|t| t.unit_price),
                        tier: None,
                        amount: 0,
                    }];
                }
                let mut lower = Quantity::ZERO;
                for (i, t) in tiers.iter().enumerate() {
                    if t.up_to.is_none_or(|u| quantity <= u) {
                        return vec![Piece {
                            quantity,
                            unit_price: Some(t.unit_price),
                            tier: Some(format!("volume {}", tier_label(i, lower, t.up_to))),
                            amount: line_amount(quantity, t.unit_price).saturating_add(t.flat),
                        }];
                    }
                    lower = t.up_to.unwrap_or(lower);
                }
                Vec::new()
            }
        }
    }
}

fn tier_label(i: usize, lower: Quantity, up_to: Option<Quantity>) -> String {
    match up_to {
        Some(u) if lower == Quantity::ZERO => format!("tier {} (0 - {u})", i + 1),
        Some(u) => format!("tier {} ({lower} < q <= {u})", i + 1),
        None => format!("tier {} (above {lower})", i + 1),
    }
}

/// The total of pieces, saturating (pieces of an absurd model may each be `i64::MAX`).
pub fn total(pieces: &[Piece]) -> i64 {
    pieces
        .iter()
        .map(|p| p.amount)
        .fold(0_i64, i64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: i64) -> Quantity {
        Quantity::from_int(n)
    }
    fn r(s: &str) -> Rate {
        s.parse().unwrap()
    }
    fn tiers() -> Vec<Tier> {
        // 0..=1000 free, 1000 < q <= 10000 at 0.5 cent, above at 0.25 cent + 100 flat
        vec![
            Tier {
                up_to: Some(q(1000)),
                unit_price: r("0"),
                flat: 0,
            },
            Tier {
                up_to: Some(q(10_000)),
                unit_price: r("0.5"),
                flat: 0,
            },
            Tier {
                up_to: None,
                unit_price: r("0.25"),
                flat: 100,
            },
        ]
    }

    #[test]
    fn per_unit_table() {
        let m = PriceModel::PerUnit {
            unit_price: r("2.5"),
        };
        for (qty, want) in [(0, 0), (1, 2), (2, 5), (3, 8), (1000, 2500)] {
            // 1 × 2.5 = 2.5 -> 2 (even); 3 × 2.5 = 7.5 -> 8 (even)
            assert_eq!(total(&m.price(q(qty))), want, "q={qty}");
        }
    }

    #[test]
    fn graduated_tier_edges() {
        let m = PriceModel::Graduated { tiers: tiers() };
        let table = [
            (0, 0, 0),         // no pieces
            (1, 0, 1),         // 1 free
            (1000, 0, 1),      // exactly on the boundary: still tier 1
            (1001, 0, 2),      // 1 unit at 0.5 = 0.5 -> 0 (even)
            (1002, 1, 2),      // 2 × 0.5 = 1
            (1003, 2, 2),      // 1.5 -> 2
            (10_000, 4500, 2), // 9000 × 0.5
            (10_001, 4600, 3), // 4500 + 1 × 0.25 -> 0, + flat 100
            (20_000, 4500 + 2500 + 100, 3),
        ];
        for (qty, want, pieces) in table {
            let p = m.price(q(qty));
            assert_eq!(total(&p), want, "q={qty}: {p:?}");
            assert_eq!(p.len(), pieces, "q={qty}");
            let units: i64 = p.iter().map(|x| x.quantity.micros()).sum();
            assert_eq!(units, q(qty).micros(), "pieces cover the quantity");
        }
        assert_eq!(
            m.price(q(1001))[1].tier.as_deref(),
            Some("tier 2 (1000 < q <= 10000)")
        );
    }

    #[test]
    fn volume_tier_edges() {
        let m = PriceModel::Volume { tiers: tiers() };
        let table = [
            (0, 0),
            (1000, 0),   // exactly on the boundary: tier 1 prices all
            (1001, 500), // 1001 × 0.5 = 500.5 -> 500 (ties to even)
            (10_000, 5000),
            (10_001, 2500 + 100), // 10001 × 0.25 = 2500.25 -> 2500, + flat
        ];
        for (qty, want) in table {
            assert_eq!(total(&m.price(q(qty))), want, "q={qty}");
        }
    }

    #[test]
    fn an_absurd_price_book_saturates_instead_of_wrapping() {
        for model in [
            PriceModel::Graduated {
                tiers: vec![Tier {
                    up_to: None,
                    unit_price: Rate::from_micros(i64::MAX),
                    flat: i64::MAX,
                }],
            },
            PriceModel::Volume {
                tiers: vec![Tier {
                    up_to: None,
                    unit_price: Rate::from_micros(i64::MAX),
                    flat: i64::MAX,
                }],
            },
        ] {
            let pieces = model.price(Quantity::from_int(1_000_000_000));
            assert_eq!(pieces[0].amount, i64::MAX, "{model:?}");
        }
    }

    #[test]
    fn unvalidated_extreme_models_never_panic_wrap_or_divide_by_zero() {
        let max_tier = |up_to: Option<i64>| Tier {
            up_to: up_to.map(Quantity::from_micros),
            unit_price: Rate::from_micros(i64::MAX),
            flat: i64::MAX,
        };
        let three = vec![max_tier(Some(1)), max_tier(Some(2)), max_tier(None)];
        let quantities = [
            Quantity::from_micros(i64::MAX),
            Quantity::from_micros(i64::MIN),
            Quantity::ZERO,
            Quantity::from_int(u32::MAX.into()),
        ];
        for model in [
            PriceModel::Graduated {
                tiers: three.clone(),
            },
            PriceModel::Volume { tiers: three },
            PriceModel::PerUnit {
                unit_price: Rate::from_micros(i64::MAX),
            },
            PriceModel::Package {
                size: Quantity::from_micros(1),
                price: i64::MAX,
            },
            PriceModel::Package {
                size: Quantity::ZERO,
                price: i64::MAX,
            },
            PriceModel::Package {
                size: Quantity::from_micros(i64::MIN),
                price: 7,
            },
            PriceModel::Flat { amount: i64::MAX },
        ] {
            for quantity in quantities {
                let t = total(&model.price(quantity));
                // Positive quantities cost something non-negative; nothing wraps to a credit.
                if quantity.micros() >= 0 {
                    assert!(t >= 0, "{model:?} × {quantity}: {t}");
                }
            }
        }
        // The graduated total of three saturated tiers is i64::MAX, not a wrapped negative.
        let g = PriceModel::Graduated {
            tiers: vec![max_tier(Some(1)), max_tier(Some(2)), max_tier(None)],
        };
        assert_eq!(g.price(Quantity::from_micros(i64::MAX)).len(), 3);
        assert_eq!(total(&g.price(Quantity::from_micros(i64::MAX))), i64::MAX);
        // A package of no size is one package (validation refuses it; pricing must not panic).
        let none = PriceModel::Package {
            size: Quantity::ZERO,
            price: 7,
        };
        assert_eq!(total(&none.price(q(5))), 7);
        assert_eq!(total(&none.price(Quantity::ZERO)), 0);
        assert!(none.validate().is_err());
    }

    /// Found by the `pricebook` fuzz target: a graduated model whose tiers descend below zero
    /// (refused by `validate`, but priced as read) overflowed `upper - lower` on the next tier.
    #[test]
    fn graduated_tiers_descending_below_zero_do_not_overflow() {
        let doc = r#"{"type": "graduated", "tiers": [{"up_to": -1001, "unit_price": "0"},
            {"up_to": null, "unit_price": "0.25"}]}"#;
        let model: PriceModel = serde_json::from_str(doc).unwrap();
        assert!(model.validate().is_err());
        let pieces = model.price(Quantity::from_micros(i64::MAX));
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[1].quantity, Quantity::from_micros(i64::MAX));
        assert!(total(&pieces) >= 0);
    }

    #[test]
    fn validation_bounds_every_price() {
        let ok = |m: PriceModel| m.validate().map_or_else(|e| e, |()| "ok".to_owned());
        assert_eq!(ok(PriceModel::Flat { amount: MAX_PRICE }), "ok");
        assert!(
            ok(PriceModel::Flat {
                amount: MAX_PRICE + 1
            })
            .contains("above the limit")
        );
        assert!(ok(PriceModel::Flat { amount: i64::MIN }).contains("negative"));
        assert_eq!(
            ok(PriceModel::PerUnit {
                unit_price: Rate::from_int(MAX_PRICE)
            }),
            "ok"
        );
        assert!(
            ok(PriceModel::PerUnit {
                unit_price: Rate::from_micros(i64::MAX)
            })
            .contains("unit_price")
        );
        assert!(
            ok(PriceModel::Package {
                size: Quantity::from_micros(i64::MAX),
                price: i64::MAX
            })
            .contains("package price")
        );
        assert!(
            ok(PriceModel::Volume {
                tiers: vec![Tier {
                    up_to: None,
                    unit_price: r("1"),
                    flat: -1
                }]
            })
            .contains("tier 1 flat")
        );
        // With validated prices the largest line stays a number, not a wrap.
        let line = line_amount(Quantity::from_micros(i64::MAX), Rate::from_int(MAX_PRICE));
        assert_eq!(line, i64::MAX, "saturates at the extreme quantity");
    }

    #[test]
    fn package_and_flat() {
        let m = PriceModel::Package {
            size: q(1000),
            price: 900,
        };
        for (qty, want) in [(0, 0), (1, 900), (1000, 900), (1001, 1800), (2500, 2700)] {
            assert_eq!(total(&m.price(q(qty))), want, "q={qty}");
        }
        let f = PriceModel::Flat { amount: 4900 };
        assert_eq!(total(&f.price(q(0))), 4900);
        assert_eq!(total(&f.price(q(123))), 4900);
    }

    #[test]
    fn fractional_quantities() {
        let m = PriceModel::PerUnit {
            unit_price: r("10"),
        };
        assert_eq!(total(&m.price("2.55".parse().unwrap())), 26); // 25.5 -> 26 (even)
        assert_eq!(total(&m.price("2.45".parse().unwrap())), 24); // 24.5 -> 24 (even)
    }

    #[test]
    fn validation() {
        assert!(PriceModel::Graduated { tiers: tiers() }.validate().is_ok());
        let mut bad = tiers();
        bad.swap(0, 1);
        assert!(PriceModel::Graduated { tiers: bad }.validate().is_err());
        let mut bounded = tiers();
        bounded[2].up_to = Some(q(99_999));
        assert!(PriceModel::Volume { tiers: bounded }.validate().is_err());
        assert!(
            PriceModel::Package {
                size: q(0),
                price: 1
            }
            .validate()
            .is_err()
        );
        assert!(PriceModel::Graduated { tiers: vec![] }.validate().is_err());
    }
}

#[cfg(test)]
pub(super) mod props_tests;
