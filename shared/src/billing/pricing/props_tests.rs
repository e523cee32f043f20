//! Properties of the price models, over generated valid models and quantities (`proptest`).
//!
//! Models come from the same bounds [`PriceModel::validate`] enforces on a price book (tiers
//! ascending from above zero, only the last unbounded, prices in `0..=MAX_PRICE`, package
//! sizes positive), and every strategy checks its model validates. Quantities mix whole counts,
//! fractional gauges and the extremes up to `i64::MAX` millionths.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p blapi --lib props`.

use super::*;
use crate::billing::money::{Quantity, Rate, SCALE, line_amount};
use proptest::prelude::*;

/// `cases` per property unless `PROPTEST_CASES` is set (then that, for every property).
pub(crate) fn config(cases: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        base
    } else {
        ProptestConfig { cases, ..base }
    }
}

/// The largest unit price a price book may name, in millionths of a minor unit.
const MAX_RATE: i64 = MAX_PRICE * SCALE;

/// Any quantity a meter or a seat count can produce: whole counts, fractional gauges and the
/// extremes (an aggregate saturates at `i64::MAX` millionths).
pub(crate) fn quantity() -> impl Strategy<Value = Quantity> {
    prop_oneof![
        4 => (0..=1_000_000_i64).prop_map(Quantity::from_int),
        3 => (0..=10_000_000_000_000_i64).prop_map(Quantity::from_micros),
        1 => prop_oneof![Just(1), Just(i64::MAX - 1), Just(i64::MAX)].prop_map(Quantity::from_micros),
        1 => (0..=i64::MAX).prop_map(Quantity::from_micros),
    ]
}

/// Quantities up to ten million units (whole or fractional): realistic usage.
fn moderate_quantity() -> impl Strategy<Value = Quantity> {
    prop_oneof![
        (0..=10_000_000_i64).prop_map(Quantity::from_int),
        (0..=10_000_000_000_000_i64).prop_map(Quantity::from_micros),
    ]
}

/// A unit price within the price book's bounds: fractional cents, whole cents, up to the limit.
pub(crate) fn rate() -> impl Strategy<Value = Rate> + Clone {
    prop_oneof![
        3 => (0..=100_000_000_i64).prop_map(Rate::from_micros),
        2 => (0..=100_000_i64).prop_map(Rate::from_int),
        1 => (0..=MAX_RATE).prop_map(Rate::from_micros),
        1 => Just(Rate::from_micros(MAX_RATE)),
    ]
}

/// A unit price up to a billion minor units: with [`moderate_quantity`] no line comes near
/// `i64` (10^13 x 10^15 millionths squared is 10^16 minor units), so rounding is all there is.
fn moderate_rate() -> impl Strategy<Value = Rate> + Clone {
    prop_oneof![
        3 => (0..=100_000_000_i64).prop_map(Rate::from_micros),
        2 => (0..=100_000_i64).prop_map(Rate::from_int),
        2 => (0..=1_000_000_000_000_000_i64).prop_map(Rate::from_micros),
    ]
}

/// A flat amount within the price book's bounds, mostly none.
pub(crate) fn flat() -> impl Strategy<Value = i64> + Clone {
    prop_oneof![3 => Just(0_i64), 2 => 0..=100_000_i64, 1 => 0..=MAX_PRICE]
}

/// The width of a bounded tier: whole units, fractional, or one millionth (edges side by side).
fn width() -> impl Strategy<Value = i64> + Clone {
    prop_oneof![
        3 => (1..=100_000_i64).prop_map(|n| n * SCALE),
        1 => 1..=10_000_000_000_i64,
        1 => Just(1_i64),
    ]
}

/// Valid tiers (1 to 5) from bounds of `width`s and `(price, flat)` pairs.
fn tiers_of(
    width: impl Strategy<Value = i64> + Clone + 'static,
    price: impl Strategy<Value = Rate> + Clone + 'static,
    flat: impl Strategy<Value = i64> + Clone + 'static,
) -> impl Strategy<Value = Vec<Tier>> {
    (1_usize..=5)
        .prop_flat_map(move |n| {
            (
                proptest::collection::vec(width.clone(), n - 1),
                proptest::collection::vec((price.clone(), flat.clone()), n),
            )
        })
        .prop_map(|(widths, prices)| {
            let mut at = 0_i64;
            prices
                .into_iter()
                .enumerate()
                .map(|(i, (unit_price, flat))| Tier {
                    up_to: widths.get(i).map(|w| {
                        at += w;
                        Quantity::from_micros(at)
                    }),
                    unit_price,
                    flat,
                })
                .collect()
        })
}

/// Any valid tiers.
pub(crate) fn tiers() -> impl Strategy<Value = Vec<Tier>> {
    tiers_of(width(), rate(), flat())
}

/// Any valid model of the five kinds.
pub(crate) fn model() -> impl Strategy<Value = PriceModel> {
    prop_oneof![
        rate().prop_map(|unit_price| PriceModel::PerUnit { unit_price }),
        tiers().prop_map(|tiers| PriceModel::Graduated { tiers }),
        tiers().prop_map(|tiers| PriceModel::Volume { tiers }),
        (package_size(), 0..=MAX_PRICE)
            .prop_map(|(size, price)| PriceModel::Package { size, price }),
        (0..=MAX_PRICE).prop_map(|amount| PriceModel::Flat { amount }),
    ]
}

/// A positive package size: whole units, fractional, one millionth, or huge.
fn package_size() -> impl Strategy<Value = Quantity> {
    prop_oneof![
        3 => (1..=100_000_i64).prop_map(Quantity::from_int),
        1 => (1..=10_000_000_000_i64).prop_map(Quantity::from_micros),
        1 => Just(Quantity::from_micros(1)),
        1 => (1..=i64::MAX).prop_map(Quantity::from_micros),
    ]
}

/// Caps every later tier's price at the first's and drops the flats: the case where "graduated
/// never exceeds per-unit at the first tier's price" can hold.
fn first_is_dearest(mut tiers: Vec<Tier>) -> Vec<Tier> {
    let first = tiers[0].unit_price;
    for t in &mut tiers {
        t.unit_price = t.unit_price.min(first);
        t.flat = 0;
    }
    tiers
}

fn graduated(tiers: &[Tier]) -> PriceModel {
    PriceModel::Graduated {
        tiers: tiers.to_vec(),
    }
}

fn volume(tiers: &[Tier]) -> PriceModel {
    PriceModel::Volume {
        tiers: tiers.to_vec(),
    }
}

fn per_unit(unit_price: Rate) -> PriceModel {
    PriceModel::PerUnit { unit_price }
}

fn bounds(tiers: &[Tier]) -> Vec<Quantity> {
    tiers.iter().filter_map(|t| t.up_to).collect()
}

/// The tier (1-based) whose range `(previous bound, up_to]` holds `q` (`up_to` inclusive):
/// one more than the bounds strictly below `q`. Independent of the pricing code.
fn tier_holding(tiers: &[Tier], q: Quantity) -> usize {
    1 + bounds(tiers).iter().filter(|u| q > **u).count()
}

/// The tier number in a piece's label (`volume tier 2 (1000 < q <= 10000)` -> 2).
fn tier_number(piece: &Piece) -> Option<usize> {
    let label = piece.tier.as_deref()?;
    let rest = &label[label.find("tier ")? + 5..];
    rest.split(' ').next()?.parse().ok()
}

/// Edges of `tiers` and one millionth either side, plus zero.
fn edge_quantities(tiers: &[Tier]) -> Vec<Quantity> {
    let mut out = vec![Quantity::ZERO];
    for u in bounds(tiers) {
        for d in [-1, 0, 1] {
            out.push(Quantity::from_micros(u.micros() + d));
        }
    }
    out
}

proptest! {
    #![proptest_config(config(256))]

    /// The strategies only make models a price book accepts.
    #[test]
    fn generated_models_are_valid(m in model()) {
        prop_assert_eq!(m.validate(), Ok(()));
    }

    /// Graduated never exceeds per-unit at the first tier's price, exactly, when that holds:
    /// no later tier is dearer than the first, no tier has a flat amount, and no piece rounds
    /// (whole-cent prices, whole-unit bounds and quantities). With fractional amounts each
    /// piece rounds on its own: see the next property for the allowance.
    #[test]
    fn graduated_never_exceeds_per_unit_at_the_first_price_when_exact(
        tiers in tiers_of(
            (1..=100_000_i64).prop_map(|n| n * SCALE),
            (0..=1_000_000_i64).prop_map(Rate::from_int),
            Just(0_i64),
        ).prop_map(first_is_dearest),
        units in prop_oneof![0..=10_000_000_i64, 0..=i64::MAX / SCALE],
    ) {
        let q = Quantity::from_int(units);
        let g = total(&graduated(&tiers).price(q));
        let p = total(&per_unit(tiers[0].unit_price).price(q));
        prop_assert!(g <= p, "graduated {} > per-unit {} at q={}", g, p, q);
        // Equal when the quantity stays in the first tier.
        if tier_holding(&tiers, q) == 1 {
            prop_assert_eq!(g, p);
        }
    }

    /// With fractional prices, bounds and quantities (same condition: no later tier dearer than
    /// the first, no flats), graduated exceeds per-unit at the first price by rounding only:
    /// each of its `k` pieces rounds by at most half a minor unit and per-unit's one line by
    /// at most half, so `2 × (graduated - per_unit) <= k + 1`. (Two pieces of 1 unit at 1.5
    /// cents are 2 + 2 = 4 cents; 2 units at 1.5 cents are 3.)
    #[test]
    fn graduated_exceeds_per_unit_at_the_first_price_by_rounding_only(
        tiers in tiers_of(width(), moderate_rate(), flat()).prop_map(first_is_dearest),
        q in moderate_quantity(),
    ) {
        let p = total(&per_unit(tiers[0].unit_price).price(q));
        let pieces = graduated(&tiers).price(q);
        let g = total(&pieces);
        let k = i64::try_from(pieces.len()).unwrap_or(i64::MAX);
        prop_assert!(2 * (g - p) <= k + 1, "graduated {} per-unit {} pieces {}", g, p, k);
    }

    /// Whatever the tier prices (a later tier may be dearer): graduated, less the flats of the
    /// tiers it reached, lies between per-unit at its cheapest and at its dearest tier price,
    /// within the same rounding allowance.
    #[test]
    fn graduated_lies_between_per_unit_at_its_cheapest_and_dearest_tier(
        tiers in tiers_of(width(), moderate_rate(), flat()),
        q in moderate_quantity(),
    ) {
        let lo = tiers.iter().map(|t| t.unit_price).min().unwrap_or_default();
        let hi = tiers.iter().map(|t| t.unit_price).max().unwrap_or_default();
        let p_hi = total(&per_unit(hi).price(q));
        let pieces = graduated(&tiers).price(q);
        let reached: i64 = tiers[..pieces.len()].iter().map(|t| t.flat).sum();
        let g = total(&pieces) - reached;
        let p_lo = total(&per_unit(lo).price(q));
        let k = i64::try_from(pieces.len()).unwrap_or(i64::MAX);
        prop_assert!(2 * (g - p_hi) <= k + 1, "graduated {} above per-unit {}", g, p_hi);
        prop_assert!(2 * (p_lo - g) <= k + 1, "graduated {} below per-unit {}", g, p_lo);
    }

    /// Graduated pieces cover the quantity exactly, tier by tier (every piece but the last fills
    /// its tier), each is its units at its own tier's price plus that tier's flat, none costs
    /// less than nothing, and the total never falls as the quantity grows, up to the extremes
    /// (where it saturates).
    #[test]
    fn graduated_pieces_cover_the_quantity_and_the_total_grows_with_it(
        tiers in tiers(),
        a in quantity(),
        b in quantity(),
    ) {
        let (q1, q2) = if a <= b { (a, b) } else { (b, a) };
        let m = graduated(&tiers);
        let pieces = m.price(q2);
        prop_assert_eq!(pieces.len(), if q2 == Quantity::ZERO { 0 } else { tier_holding(&tiers, q2) });
        let covered: i128 = pieces.iter().map(|p| i128::from(p.quantity.micros())).sum();
        prop_assert_eq!(covered, i128::from(q2.micros()));
        let mut lower = 0_i64;
        for (i, p) in pieces.iter().enumerate() {
            prop_assert!(p.amount >= 0);
            prop_assert!(p.quantity.micros() > 0, "empty piece {}", i);
            prop_assert_eq!(p.unit_price, Some(tiers[i].unit_price));
            prop_assert_eq!(p.amount, line_amount(p.quantity, tiers[i].unit_price).saturating_add(tiers[i].flat));
            if let Some(u) = tiers[i].up_to {
                let width = u.micros() - lower;
                prop_assert!(p.quantity.micros() <= width);
                if i + 1 < pieces.len() {
                    prop_assert_eq!(p.quantity.micros(), width, "tier {} not filled", i + 1);
                }
                lower = u.micros();
            }
        }
        prop_assert!(total(&m.price(q1)) <= total(&pieces), "total fell from {} to {}", q1, q2);
    }

    /// Volume and graduated put a quantity in the same tier (`up_to` inclusive): the tier whose
    /// range holds it, at every edge, one millionth either side, and anywhere.
    #[test]
    fn volume_and_graduated_pick_the_same_tier_at_every_edge(
        tiers in tiers(),
        q in quantity(),
    ) {
        let mut qs = edge_quantities(&tiers);
        qs.push(q);
        for q in qs.into_iter().filter(|q| q.micros() > 0) {
            let want = tier_holding(&tiers, q);
            let g = graduated(&tiers).price(q);
            let v = volume(&tiers).price(q);
            prop_assert_eq!(g.len(), want, "graduated at {}", q);
            prop_assert_eq!(g.last().and_then(tier_number), Some(want), "graduated at {}", q);
            prop_assert_eq!(v.len(), 1);
            prop_assert_eq!(tier_number(&v[0]), Some(want), "volume at {}", q);
            prop_assert_eq!(v[0].unit_price, Some(tiers[want - 1].unit_price));
        }
    }

    /// Up to and including the first edge (anywhere, with one tier) volume and graduated are the
    /// same charge: the first tier's price for every unit plus its flat amount.
    #[test]
    fn volume_and_graduated_agree_up_to_the_first_edge(
        (tiers, q) in tiers().prop_flat_map(|tiers| {
            let q = match tiers[0].up_to {
                Some(u) => prop_oneof![Just(u), (0..=u.micros()).prop_map(Quantity::from_micros)].boxed(),
                None => quantity().boxed(),
            };
            (Just(tiers), q)
        }),
    ) {
        let g = total(&graduated(&tiers).price(q));
        let v = total(&volume(&tiers).price(q));
        prop_assert_eq!(g, v, "at {}", q);
        let first = &tiers[0];
        let want = if q.micros() > 0 {
            line_amount(q, first.unit_price).saturating_add(first.flat)
        } else {
            0
        };
        prop_assert_eq!(g, want);
    }

    /// With one whole-cent price for every tier, no flats and whole quantities, volume and
    /// graduated agree at every edge and everywhere else, with per-unit too (past the first
    /// edge they differ when tier prices differ: that is the point of the two models).
    #[test]
    fn volume_and_graduated_agree_everywhere_with_one_price_when_exact(
        tiers in tiers_of(
            (1..=100_000_i64).prop_map(|n| n * SCALE),
            Just(Rate::ZERO),
            Just(0_i64),
        ),
        price in (0..=1_000_000_i64).prop_map(Rate::from_int),
        units in prop_oneof![0..=10_000_000_i64, 0..=i64::MAX / SCALE],
    ) {
        let tiers: Vec<Tier> = tiers.into_iter().map(|t| Tier { unit_price: price, ..t }).collect();
        let mut qs: Vec<Quantity> = edge_quantities(&tiers)
            .into_iter()
            .filter(|q| q.micros() % SCALE == 0)
            .collect();
        qs.push(Quantity::from_int(units));
        for q in qs {
            let g = total(&graduated(&tiers).price(q));
            let v = total(&volume(&tiers).price(q));
            let p = total(&per_unit(price).price(q));
            prop_assert_eq!(g, v, "at {}", q);
            prop_assert_eq!(g, p, "at {}", q);
        }
    }

    /// A package model charges whole packages, rounded up: `b` packages with
    /// `(b - 1) × size < q <= b × size` (none for nothing), each at the package price; past
    /// `i64::MAX` it saturates, and only when the packages really cost that much. One more
    /// millionth past a package edge is one more package.
    #[test]
    fn package_charges_whole_packages_rounded_up(
        size in package_size(),
        price in prop_oneof![Just(0_i64), 1..=100_000_i64, 1..=MAX_PRICE],
        (k, delta, q) in (0..=1_000_000_i64, -1..=1_i64, quantity()),
        exact_edge in any::<bool>(),
    ) {
        let q = if exact_edge {
            // k packages exactly, or one millionth either side.
            Quantity::from_micros(
                i64::try_from((i128::from(k) * i128::from(size.micros()) + i128::from(delta)).max(0))
                    .unwrap_or(i64::MAX),
            )
        } else {
            q
        };
        let m = PriceModel::Package { size, price };
        let pieces = m.price(q);
        prop_assert_eq!(pieces.len(), 1);
        let amount = pieces[0].amount;
        let (qm, s, pr) = (i128::from(q.micros()), i128::from(size.micros()), i128::from(price));
        if q.micros() == 0 || price == 0 {
            prop_assert_eq!(amount, 0);
        } else if amount < i64::MAX {
            let a = i128::from(amount);
            prop_assert_eq!(a % pr, 0, "not whole packages: {}", amount);
            let b = a / pr;
            prop_assert!((b - 1) * s < qm && qm <= b * s, "{} packages of {} for {}", b, size, q);
        } else {
            // Saturated: the packages needed cost at least i64::MAX.
            prop_assert!(qm * pr > (i128::from(i64::MAX) - pr) * s, "saturated too early at {}", q);
        }
        // Never less for more.
        let more = Quantity::from_micros(q.micros().saturating_add(1));
        prop_assert!(total(&m.price(more)) >= amount);
    }

    /// Every model prices every quantity without panicking, each piece at zero or more.
    #[test]
    fn every_model_prices_every_quantity_at_zero_or_more(m in model(), q in quantity()) {
        for p in m.price(q) {
            prop_assert!(p.amount >= 0, "{:?}", p);
        }
    }
}
