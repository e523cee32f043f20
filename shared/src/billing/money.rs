//! Money, quantities and rates as integers.
//!
//! - [`Money`]: integer minor units (cents) plus a [`Currency`]; never `f64`.
//! - [`Quantity`]: a usage quantity with 6 decimal places (millionths), so gauges like
//!   `2.5` GB are exact.
//! - [`Rate`]: a unit price in minor units with 6 decimal places (`"0.25"` = a quarter cent).
//!
//! A line amount is `quantity × rate`, computed exactly in `i128` and rounded **once per line**
//! to whole minor units with **round half to even** (banker's rounding), so a sum of many lines
//! has no rounding bias.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Scale of [`Quantity`] and [`Rate`]: 6 decimal places.
pub const SCALE: i64 = 1_000_000;

/// Rounds `num / den` to the nearest integer, ties to even. `den` must be positive.
pub fn round_half_even(num: i128, den: i128) -> i128 {
    debug_assert!(den > 0);
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den);
    let twice = r * 2;
    if twice > den || (twice == den && q % 2 != 0) {
        q + 1
    } else {
        q
    }
}

pub use crate::values::{Currency, Money, format_minor};

/// Parses a decimal string (`"12"`, `"-0.5"`, `"1.25e3"`) into millionths. More than six
/// decimals are rounded half to even. `None` when it is not a finite decimal or overflows.
pub fn parse_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (neg, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all: String = format!("{int_part}{frac_part}");
    // value = all × 10^(exp - frac_len); in millionths: × 10^(exp - frac_len + 6)
    // In i64: an exponent near the limits of i32 must not wrap (a huge one would read as 0).
    let shift = i64::from(exp) - frac_part.len() as i64 + 6;
    let trimmed = all.trim_start_matches('0');
    if trimmed.len() > 30 {
        return None;
    }
    let n: i128 = if trimmed.is_empty() {
        0
    } else {
        trimmed.parse().ok()?
    };
    let v = if shift >= 0 {
        if shift > 30 {
            if n == 0 {
                0
            } else {
                return None;
            }
        } else {
            n.checked_mul(10i128.pow(shift as u32))?
        }
    } else if -shift > 36 {
        0
    } else {
        round_half_even(n, 10i128.pow((-shift) as u32))
    };
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

fn format_micros(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    let int = a / SCALE as u64;
    let frac = a % SCALE as u64;
    if frac == 0 {
        format!("{sign}{int}")
    } else {
        let f = format!("{frac:06}");
        format!("{sign}{int}.{}", f.trim_end_matches('0'))
    }
}

macro_rules! decimal6 {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A ", $what, " with six decimal places, stored as millionths.")]
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            Hash,
            Default,
            Serialize,
            Deserialize,
        )]
        #[serde(try_from = "serde_json::Value", into = "String")]
        pub struct $name(i64);

        impl $name {
            pub const ZERO: $name = $name(0);
            /// From millionths.
            pub const fn from_micros(m: i64) -> Self {
                $name(m)
            }
            /// From a whole number; saturates at the largest (smallest) value for a number
            /// beyond about ±9.2 × 10^12, never wraps (a wrapped seat count could even come
            /// out as zero or negative).
            pub const fn from_int(n: i64) -> Self {
                $name(n.saturating_mul(SCALE))
            }
            pub const fn micros(self) -> i64 {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                parse_micros(s)
                    .map($name)
                    .ok_or_else(|| format!("not a decimal {}: {s:?}", $what))
            }
        }

        impl TryFrom<serde_json::Value> for $name {
            type Error = String;
            fn try_from(v: serde_json::Value) -> Result<Self, String> {
                match v {
                    serde_json::Value::String(s) => s.parse(),
                    serde_json::Value::Number(n) => n.to_string().parse(),
                    other => Err(format!("not a decimal {}: {other}", $what)),
                }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                format_micros(v.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&format_micros(self.0))
            }
        }
    };
}

decimal6!(Quantity, "quantity");
decimal6!(Rate, "unit price (minor units)");

/// `quantity × rate`, rounded half to even to whole minor units.
pub fn line_amount(quantity: Quantity, rate: Rate) -> i64 {
    let exact = i128::from(quantity.micros()) * i128::from(rate.micros());
    clamp_i64(round_half_even(
        exact,
        i128::from(SCALE) * i128::from(SCALE),
    ))
}

/// `amount × num / den`, rounded half to even (proration).
pub fn scale_amount(amount: i64, num: i64, den: i64) -> i64 {
    clamp_i64(round_half_even(
        i128::from(amount) * i128::from(num),
        i128::from(den.max(1)),
    ))
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_to_even() {
        let t = [
            (5, 10, 0),
            (15, 10, 2),
            (25, 10, 2),
            (35, 10, 4),
            (26, 10, 3),
            (24, 10, 2),
            (-5, 10, 0),
            (-15, 10, -2),
            (-16, 10, -2),
        ];
        for (n, d, want) in t {
            assert_eq!(round_half_even(n, d), want, "{n}/{d}");
        }
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_micros("12"), Some(12_000_000));
        assert_eq!(parse_micros("0.1"), Some(100_000));
        assert_eq!(parse_micros("-2.5"), Some(-2_500_000));
        assert_eq!(parse_micros("1.25e3"), Some(1_250_000_000));
        assert_eq!(parse_micros("1e-7"), Some(0));
        assert_eq!(parse_micros("0.0000005"), Some(0), "tie to even");
        assert_eq!(parse_micros("0.0000015"), Some(2));
        assert_eq!(parse_micros("abc"), None);
        assert_eq!(parse_micros("1.2.3"), None);
        assert_eq!(parse_micros(""), None);
        assert_eq!(parse_micros("1e40"), None);
        assert_eq!(Quantity::from_micros(2_500_000).to_string(), "2.5");
        assert_eq!(Rate::from_int(3).to_string(), "3");
    }

    /// Found by fuzzing price books: an exponent near the limits of `i32` overflowed the
    /// shift (a panic in debug builds; in release `1e2147483647` wrapped and read as 0).
    #[test]
    fn extreme_exponents_neither_overflow_nor_wrap() {
        assert_eq!(parse_micros("1e2147483647"), None);
        assert_eq!(parse_micros("0e2147483647"), Some(0));
        assert_eq!(parse_micros("1.5e-2147483648"), Some(0));
        assert_eq!(parse_micros("-1e2147483647"), None);
        assert_eq!("1e2147483647".parse::<Rate>().ok(), None);
    }

    #[test]
    fn line_amounts_round_half_even_per_line() {
        // 3 × 0.5 cent = 1.5 -> 2 ; 5 × 0.5 = 2.5 -> 2 ; 7 × 0.5 = 3.5 -> 4
        let half: Rate = "0.5".parse().unwrap();
        assert_eq!(line_amount(Quantity::from_int(3), half), 2);
        assert_eq!(line_amount(Quantity::from_int(5), half), 2);
        assert_eq!(line_amount(Quantity::from_int(7), half), 4);
        assert_eq!(line_amount(Quantity::from_int(0), half), 0);
        // 2.5 GB × 10 cents = 25
        assert_eq!(line_amount("2.5".parse().unwrap(), Rate::from_int(10)), 25);
        assert_eq!(scale_amount(1000, 1, 31), 32); // 32.258
        assert_eq!(scale_amount(3100, 15, 31), 1500);
        assert_eq!(scale_amount(100, 1, 8), 12); // 12.5 -> 12
    }

    #[test]
    fn whole_numbers_beyond_the_scale_saturate() {
        assert_eq!(Quantity::from_int(i64::MAX).micros(), i64::MAX);
        assert_eq!(Quantity::from_int(i64::MIN).micros(), i64::MIN);
        // 2^58 × 10^6 is a multiple of 2^64: wrapping would have made it zero.
        assert_eq!(Quantity::from_int(1 << 58).micros(), i64::MAX);
        assert_eq!(
            Rate::from_int(i64::MAX / SCALE).micros(),
            i64::MAX / SCALE * SCALE
        );
        assert_eq!(Quantity::from_int(0), Quantity::ZERO);
        assert_eq!(
            line_amount(Quantity::from_int(i64::MAX), Rate::from_int(i64::MAX)),
            i64::MAX
        );
        assert_eq!(
            scale_amount(i64::MAX, i64::MAX, 0),
            i64::MAX,
            "no division by zero"
        );
    }

    #[test]
    fn money_formats_with_exponent() {
        let usd: Currency = "USD".parse().unwrap();
        assert_eq!(usd.as_str(), "usd");
        assert_eq!(format_minor(1234, &usd), "12.34 USD");
        assert_eq!(format_minor(-5, &usd), "-0.05 USD");
        assert_eq!(format_minor(500, &"jpy".parse().unwrap()), "500 JPY");
        assert!("us".parse::<Currency>().is_err());
    }

    #[test]
    fn decimals_serde_as_strings() {
        let q: Quantity = serde_json::from_str("\"1.5\"").unwrap();
        assert_eq!(q.micros(), 1_500_000);
        let q: Quantity = serde_json::from_str("2").unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"2\"");
    }
}

#[cfg(test)]
mod props_tests;
