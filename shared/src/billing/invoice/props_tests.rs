//! Properties of proration in composed invoices (`proptest`).
//!
//! A subscription that ends at midnight UTC on day `k` of a period and one that starts then
//! (a plan change, a pause and resume) together cover the period once. Their prorated fixed
//! lines add up to the full period's, line by line, within one minor unit (each part rounds
//! half to even on its own). Plans are generated from the price models' strategies
//! (`pricing::props_tests`), with no minimum (a minimum tops up each part on its own, which is
//! not additive by design).
//!
//! Splits inside a day are not additive in days: the start day counts whole and a partial
//! last day counts whole ([`Subscription::active_days`]), so the day of the switch is counted
//! in both parts. That rule is pinned down by its own property below.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p blapi --lib props`.

use super::*;
use crate::billing::pricebook::{Charge, Plan};
use crate::billing::pricing::PriceModel;
use crate::billing::pricing::props_tests::{config, model};
use proptest::prelude::*;

const DAY: i64 = 86_400;

fn period() -> impl Strategy<Value = Period> {
    (2001_i32..=2199, 1_u32..=12).prop_map(|(y, m)| Period::new(y, m).unwrap())
}

/// A price book of one plan `p` whose fixed charges are `models`, with no minimum.
fn book(models: &[PriceModel]) -> PriceBook {
    let charges = models
        .iter()
        .enumerate()
        .map(|(i, model)| Charge {
            id: format!("c{i}"),
            description: format!("charge {i}"),
            metric: None,
            aggregation: None,
            model: model.clone(),
        })
        .collect();
    let plan = Plan {
        name: "Props".into(),
        currency: "usd".parse().unwrap(),
        stripe_prices: Vec::new(),
        minimum: 0,
        charges,
    };
    PriceBook {
        version: "props".into(),
        description: None,
        plans: [("p".to_owned(), plan)].into_iter().collect(),
    }
}

fn sub(id: &str, seats: i64, start: i64, end: Option<i64>) -> SubscriptionUsage {
    SubscriptionUsage {
        subscription: Subscription {
            customer: "cus_props".into(),
            subscription: id.into(),
            plan: "p".into(),
            quantity: seats,
            status: "active".into(),
            currency: None,
            start,
            end,
            updated_at: 0,
        },
        quantities: BTreeMap::new(),
    }
}

fn invoice(book: &PriceBook, period: Period, s: SubscriptionUsage) -> Invoice {
    compose("cus_props", period, book, &[s], None).unwrap()
}

proptest! {
    #![proptest_config(config(128))]

    /// Split at midnight on day `k`, the two parts' prorated fixed lines add up to the full
    /// period's within one minor unit per line, each part prorated by its own days (which add
    /// up to the period's) from the same full amount.
    #[test]
    fn proration_over_a_period_split_at_midnight_sums_to_the_whole_within_a_unit_per_line(
        models in proptest::collection::vec(model(), 1..=3),
        seats in prop_oneof![0_i64..=100, 0_i64..=1_000_000],
        (period, k) in period().prop_flat_map(|p| (Just(p), 1..p.days())),
    ) {
        let book = book(&models);
        let ps = period.start().timestamp();
        let cut = ps + k * DAY;
        let full = invoice(&book, period, sub("sub_full", seats, ps - 10 * DAY, None));
        let a = invoice(&book, period, sub("sub_a", seats, ps - 10 * DAY, Some(cut)));
        let b = invoice(&book, period, sub("sub_b", seats, cut, None));
        prop_assert_eq!(a.lines.len(), full.lines.len());
        prop_assert_eq!(b.lines.len(), full.lines.len());
        for ((f, x), y) in full.lines.iter().zip(&a.lines).zip(&b.lines) {
            prop_assert_eq!(f.kind, LineKind::Fixed);
            prop_assert_eq!(f.proration, None);
            let (px, py) = (x.proration.unwrap(), y.proration.unwrap());
            prop_assert_eq!((px.active_days, py.active_days), (k, period.days() - k));
            prop_assert_eq!((px.full_amount, py.full_amount), (f.amount, f.amount));
            let sum = i128::from(x.amount) + i128::from(y.amount);
            prop_assert!(
                (sum - i128::from(f.amount)).abs() <= 1,
                "{} + {} for {} over {} + {} days", x.amount, y.amount, f.amount, k, period.days() - k
            );
        }
    }

    /// Split at any second: the parts' active days add up to the period's when the split is at
    /// midnight UTC, and to one more otherwise (the day of the switch counts in both parts);
    /// never fewer, so no day of a continuous subscription goes unbilled.
    #[test]
    fn a_split_inside_a_day_counts_that_day_in_both_parts(
        (period, at) in period().prop_flat_map(|p| (Just(p), 1..p.days() * DAY)),
    ) {
        let ps = period.start().timestamp();
        let a = sub("sub_a", 1, ps - DAY, Some(ps + at)).subscription;
        let b = sub("sub_b", 1, ps + at, None).subscription;
        let days = a.active_days(period) + b.active_days(period);
        let extra = i64::from(at % DAY != 0);
        prop_assert_eq!(days, period.days() + extra, "split {} s into the period", at);
    }
}
