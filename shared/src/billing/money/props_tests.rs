//! Properties of money rounding (`proptest`): round half to even is the nearest integer with
//! ties to even, line amounts and prorated amounts are the nearest minor unit of the exact
//! product, decimals print and parse back exactly, and a split period's prorated parts add up
//! to the whole within half a minor unit per part.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p blapi --lib props`.

use super::*;
use crate::billing::pricing::props_tests::config;
use proptest::prelude::*;

/// `|num - r × den| <= den / 2`, and a tie (`== den / 2`) went to the even `r`.
fn is_nearest_ties_to_even(num: i128, den: i128, r: i128) -> Result<(), TestCaseError> {
    let off = (num - r * den).abs() * 2;
    prop_assert!(off <= den, "{}/{} rounded to {}", num, den, r);
    if off == den {
        prop_assert!(r % 2 == 0, "tie {}/{} rounded to odd {}", num, den, r);
    }
    Ok(())
}

/// Numerators across the whole range a line can reach (`i64 × i64`), and small ones near ties.
fn numerator() -> impl Strategy<Value = i128> {
    prop_oneof![
        -1_000_i128..=1_000,
        any::<i64>().prop_map(i128::from),
        (any::<i64>(), any::<i64>()).prop_map(|(a, b)| i128::from(a) * i128::from(b)),
    ]
}

/// `n` positive day counts adding up to `total` (`2 <= n <= total`).
fn split_days(total: i64) -> impl Strategy<Value = Vec<i64>> {
    (2..=total.min(8)).prop_flat_map(move |n| {
        // n - 1 distinct cut points in 1..total, sorted: the parts between them are positive.
        proptest::sample::subsequence(
            (1..total).collect::<Vec<i64>>(),
            usize::try_from(n - 1).unwrap_or(1),
        )
        .prop_map(move |cuts| {
            let mut parts = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([total]) {
                parts.push(c - at);
                at = c;
            }
            parts
        })
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// Round half to even is the nearest integer, a tie going to the even one.
    #[test]
    fn round_half_even_is_the_nearest_integer_ties_to_even(
        num in numerator(),
        den in prop_oneof![1_i128..=10, Just(2), 1..=i128::from(SCALE) * i128::from(SCALE), 1..=i128::from(i64::MAX)],
    ) {
        is_nearest_ties_to_even(num, den, round_half_even(num, den))?;
        // Exact ties, both signs, odd and even quotients.
        if den % 2 == 0 {
            let tie = (num % 1_000_000) * den + den / 2;
            is_nearest_ties_to_even(tie, den, round_half_even(tie, den))?;
            is_nearest_ties_to_even(-tie, den, round_half_even(-tie, den))?;
        }
    }

    /// A line is `quantity × rate` rounded once to the nearest minor unit, ties to even; it is
    /// symmetric in sign (half-up would not be), never falls as the quantity grows at a
    /// non-negative rate, and saturates at `i64` only when the exact amount is beyond it.
    #[test]
    fn line_amounts_are_the_nearest_minor_unit(
        // Whole units at half-cent rates make exact ties (odd units x half a cent).
        q in prop_oneof![
            -1_000_000_000_i64..=1_000_000_000,
            (-1_000_i64..=1_000).prop_map(|k| k * SCALE),
            any::<i64>(),
        ],
        r in prop_oneof![
            0_i64..=10_000_000,
            (0_i64..=1_000).prop_map(|m| (2 * m + 1) * (SCALE / 2)),
            0..=crate::billing::pricing::MAX_PRICE * SCALE,
            any::<i64>(),
        ],
        more in 0_i64..=2_000_000,
    ) {
        let (quantity, rate) = (Quantity::from_micros(q), Rate::from_micros(r));
        let amount = line_amount(quantity, rate);
        let exact = i128::from(q) * i128::from(r);
        let unit = i128::from(SCALE) * i128::from(SCALE);
        if exact.abs() < (i128::from(i64::MAX) - 1) * unit {
            is_nearest_ties_to_even(exact, unit, i128::from(amount))?;
            if let Some(neg) = q.checked_neg() {
                prop_assert_eq!(line_amount(Quantity::from_micros(neg), rate), -amount);
            }
        } else {
            // Beyond i64: at (or next to) the end of the range on the right side.
            prop_assert!(amount.unsigned_abs() >= i64::MAX.unsigned_abs() - 1);
            prop_assert_eq!(amount < 0, exact < 0);
        }
        if r >= 0 && q >= 0 {
            let bigger = Quantity::from_micros(q.saturating_add(more));
            prop_assert!(line_amount(bigger, rate) >= amount);
        }
    }

    /// A prorated amount is `amount × days / period days` rounded to the nearest minor unit,
    /// ties to even (and a zero-day period divides by one, never by zero).
    #[test]
    fn prorated_amounts_are_the_nearest_minor_unit(
        amount in any::<i64>(),
        (days, period) in (28_i64..=31).prop_flat_map(|p| (0..=p, Just(p))),
    ) {
        let got = scale_amount(amount, days, period);
        is_nearest_ties_to_even(i128::from(amount) * i128::from(days), i128::from(period), i128::from(got))?;
        prop_assert_eq!(scale_amount(amount, period, period), amount);
        prop_assert_eq!(scale_amount(amount, 0, period), 0);
    }

    /// Proration of a period split into `n` parts (a subscription changed or paused at day
    /// boundaries) adds up to the whole within half a minor unit per part: at most one minor
    /// unit per line for a two-way split. Each part rounds on its own, so this is the
    /// best a per-line rounding can do.
    #[test]
    fn proration_over_a_split_period_sums_to_the_whole(
        amount in prop_oneof![0_i64..=100_000, 0..=crate::billing::pricing::MAX_PRICE, any::<i64>()],
        (period, parts) in (28_i64..=31).prop_flat_map(|p| (Just(p), split_days(p))),
    ) {
        prop_assert_eq!(parts.iter().sum::<i64>(), period);
        let sum: i128 = parts.iter().map(|d| i128::from(scale_amount(amount, *d, period))).sum();
        let n = i128::try_from(parts.len()).unwrap_or(i128::MAX);
        let off = (sum - i128::from(amount)).abs();
        prop_assert!(2 * off <= n, "{} over {:?} of {} sums to {}", amount, parts, period, sum);
    }

    /// Every quantity and rate prints as a decimal that parses back to itself (and serde's
    /// string form too), down to the last millionth and at both ends of `i64`.
    #[test]
    fn decimals_print_and_parse_back_exactly(m in prop_oneof![any::<i64>(), -10_000_000_i64..=10_000_000, Just(i64::MIN), Just(i64::MAX)]) {
        let q = Quantity::from_micros(m);
        prop_assert_eq!(q.to_string().parse::<Quantity>(), Ok(q));
        let r = Rate::from_micros(m);
        prop_assert_eq!(r.to_string().parse::<Rate>(), Ok(r));
        let json = serde_json::to_string(&q).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(serde_json::from_str::<Quantity>(&json).ok(), Some(q));
    }

    /// More than six decimals (written out, or as an exponent) round half to even to the
    /// millionth, whatever the sign.
    #[test]
    fn decimals_beyond_the_millionth_round_half_to_even(
        micros in 0_i64..=1_000_000_000_000_000,
        extra_digits in 1_u32..=6,
        extra in any::<u32>(),
        negative in any::<bool>(),
        tie in any::<bool>(),
    ) {
        let den = 10_i64.pow(extra_digits);
        // Force exact ties half the time: 5 then zeros.
        let extra = if tie { den / 2 } else { i64::from(extra) % den };
        let sign = if negative { "-" } else { "" };
        let written = format!(
            "{sign}{}.{:06}{:0width$}",
            micros / SCALE,
            micros % SCALE,
            extra,
            width = extra_digits as usize
        );
        let all = i128::from(micros) * i128::from(den) + i128::from(extra);
        let rounded = round_half_even(all, i128::from(den));
        let want = i64::try_from(if negative { -rounded } else { rounded }).ok();
        prop_assert_eq!(parse_micros(&written), want, "{}", written);
        let exponent = format!("{sign}{all}e-{}", 6 + extra_digits);
        prop_assert_eq!(parse_micros(&exponent), want, "{}", exponent);
    }
}
