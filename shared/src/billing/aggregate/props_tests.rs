//! Properties of aggregation (`proptest`): the order of records never changes what billing
//! computes, and neither do duplicates.
//!
//! Records are generated for one subscription over a period and the month before it, every
//! aggregation priced at once, with timestamps drawn from a few instants (the period's first
//! and last millisecond, either side of its edges, the month before) so equal timestamps and
//! edge cases are common, values from zero to `i64::MAX` millionths, and a few installations.
//!
//! Duplicates: a record redelivered is the same id, stored under the same key, so the store
//! keeps one ([`super::super::ports::UsageStore`]); `usage_of` trusts that and counts every
//! record it is given. So "duplicates never change the result" is checked end to end through
//! the in-memory store (any redelivery, any order, any batching), and for the raw fold only
//! where it holds without the key: max, unique count, latest and weighted sum.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p blapi --lib props`.

use super::*;
use crate::billing::memory::MemoryBilling;
use crate::billing::ports::{StoredUsage, UsageHistory, UsageStore};
use crate::billing::pricing::props_tests::config;
use crate::billing::usage::Usage;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::sample::Index;

const CUSTOMER: &str = "cus_props";
const SUBSCRIPTION: &str = "sub_props";
const DAY_MS: i64 = 86_400_000;

/// One metric per aggregation, as a plan prices them.
fn metrics() -> Vec<(String, Aggregation)> {
    [
        ("calls", Aggregation::Count),
        ("bytes", Aggregation::Sum),
        ("peak", Aggregation::Max),
        ("hosts", Aggregation::UniqueCount),
        ("version", Aggregation::Latest),
        ("storage", Aggregation::WeightedSum),
    ]
    .into_iter()
    .map(|(m, a)| (m.to_owned(), a))
    .collect()
}

/// A record before it is placed in time: (metric index, where in time, jitter, value,
/// installation). Metric index 6 is a metric the plan does not price.
type Raw = (usize, u8, u32, i64, Option<u8>);

fn raw() -> impl Strategy<Value = Raw> {
    (
        0_usize..=6,
        0_u8..8,
        any::<u32>(),
        prop_oneof![
            4 => 0_i64..=1_000_000_000,
            2 => (0_i64..=1_000).prop_map(|n| n * 1_000_000),
            1 => prop_oneof![Just(0_i64), Just(i64::MAX)],
            1 => 0..=i64::MAX,
        ],
        proptest::option::of(0_u8..3),
    )
}

fn period() -> impl Strategy<Value = Period> {
    (2001_i32..=2199, 1_u32..=12).prop_map(|(y, m)| {
        Period::new(y, m).unwrap_or_else(|| unreachable!("valid by construction"))
    })
}

/// The records of `raws` in `period`: ids `r0, r1, ...` (each record once).
fn place(period: Period, raws: &[Raw]) -> Vec<Usage> {
    let start = period.start().timestamp_millis();
    let end = period.end().timestamp_millis();
    let names = metrics();
    raws.iter()
        .enumerate()
        .map(|(i, &(metric, slot, jitter, value, installation))| {
            let ts = match slot {
                0 => start - 1,
                1 => start,
                2 => start + 1,
                3 => end - 1,
                4 => end,
                5 => start - 2 * DAY_MS - i64::from(jitter) % (20 * DAY_MS),
                _ => start + i64::from(jitter) % (end - start),
            };
            Usage {
                id: format!("r{i}"),
                customer: CUSTOMER.into(),
                subscription: SUBSCRIPTION.into(),
                metric: names
                    .get(metric)
                    .map_or("unpriced", |(m, _)| m.as_str())
                    .to_owned(),
                value: Quantity::from_micros(value),
                timestamp: DateTime::<Utc>::from_timestamp_millis(ts).unwrap_or_default(),
                installation: installation.map(|n| format!("inst-{n}")),
            }
        })
        .collect()
}

/// What the store would return for `period` and the month before, in the order of `records`.
fn split(period: Period, records: &[Usage]) -> (Vec<StoredUsage>, Vec<StoredUsage>) {
    let of = |p: Period| {
        records
            .iter()
            .filter(|u| u.period() == p)
            .map(StoredUsage::from)
            .collect()
    };
    (of(period), of(period.prev()))
}

/// Days of both months (and the day after), for the daily view.
fn days(period: Period) -> (chrono::NaiveDate, chrono::NaiveDate) {
    let last = period.next().first_day();
    (period.prev().first_day(), last)
}

/// A permutation of `0..n` from proptest's choices (Fisher-Yates; shrinks towards no change).
fn permute<T: Clone>(items: &[T], choices: &[Index]) -> Vec<T> {
    let mut out = items.to_vec();
    for (i, c) in (1..out.len()).rev().zip(choices.iter().cycle()) {
        out.swap(i, c.index(i + 1));
    }
    out
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("a current-thread runtime: {e}"))
        .block_on(f)
}

proptest! {
    #![proptest_config(config(256))]

    /// Shuffling the records (those of the period and those of the month before) changes
    /// nothing: not what the fold keeps, not the quantities, not the daily view; and the
    /// streaming [`Accumulator`], fed the shuffled records, agrees with the fold.
    #[test]
    fn the_order_of_records_never_changes_the_usage(
        period in period(),
        raws in proptest::collection::vec(raw(), 0..40),
        order in proptest::collection::vec(any::<Index>(), 0..40),
    ) {
        let records = place(period, &raws);
        let shuffled = permute(&records, &order);
        let ms = metrics();
        let (now, before) = split(period, &records);
        let (now2, before2) = split(period, &shuffled);
        let a = usage_of(&ms, &now, &before);
        let b = usage_of(&ms, &now2, &before2);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(quantities(&ms, a, period), quantities(&ms, b, period));
        let all: Vec<StoredUsage> = records.iter().map(StoredUsage::from).collect();
        let all2: Vec<StoredUsage> = shuffled.iter().map(StoredUsage::from).collect();
        let (from, to) = days(period);
        prop_assert_eq!(daily_of(&all, from, to), daily_of(&all2, from, to));
        // The streaming path, no carry-in: the same numbers as the fold without a month before.
        let folded = quantities(&ms, usage_of(&ms, &now, &[]), period);
        for (metric, agg) in &ms {
            let mut acc = Accumulator::new(*agg);
            for r in now2.iter().filter(|r| &r.metric == metric) {
                acc.add(r.ts_ms, r.value, r.installation.as_deref());
            }
            prop_assert_eq!(Some(&acc.quantity(period)), folded.get(metric), "{}", metric);
        }
    }

    /// Redelivering records (any of them, any number of times, in any order and batching)
    /// through the store never changes the usage billing reads, its quantities or the daily
    /// view: a record is stored under its id.
    #[test]
    fn redelivered_records_never_change_the_usage(
        period in period(),
        raws in proptest::collection::vec(raw(), 0..30),
        again in proptest::collection::vec(any::<Index>(), 0..30),
        order in proptest::collection::vec(any::<Index>(), 0..60),
        batch in 1_usize..=25,
    ) {
        let records = place(period, &raws);
        let mut deliveries = records.clone();
        if !records.is_empty() {
            deliveries.extend(again.iter().map(|i| records[i.index(records.len())].clone()));
        }
        let deliveries = permute(&deliveries, &order);
        let ms = metrics();
        let (from, to) = days(period);
        let read = |store: MemoryBilling| {
            let ms = &ms;
            block_on(async move {
                let usage = store.usage(CUSTOMER, SUBSCRIPTION, ms, period).await;
                let daily = store.daily(CUSTOMER, SUBSCRIPTION, from, to).await;
                (usage.ok(), daily.ok())
            })
        };
        let once = MemoryBilling::new();
        let left = block_on(once.put_records(&records, None)).ok();
        prop_assert_eq!(left.map(|l| l.len()), Some(0));
        let redelivered = MemoryBilling::new();
        for chunk in deliveries.chunks(batch) {
            let left = block_on(redelivered.put_records(chunk, None)).ok();
            prop_assert_eq!(left.map(|l| l.len()), Some(0));
        }
        let stored = block_on(redelivered.stored(&records)).ok();
        prop_assert!(stored.is_some_and(|s| s.iter().all(|b| *b)));
        let (u1, d1) = read(once);
        let (u2, d2) = read(redelivered);
        prop_assert!(u1.is_some() && d1.is_some());
        prop_assert_eq!(&d1, &d2);
        let metrics = metrics();
        let q1 = u1.map(|u| quantities(&metrics, u, period));
        let q2 = u2.map(|u| quantities(&metrics, u, period));
        prop_assert_eq!(q1, q2);
    }

    /// Without the store's key, duplicates in the records given to the fold change nothing
    /// for max, unique count, latest and weighted sum (a duplicate is the same value at the
    /// same instant). Count and sum do count them: their dedupe is the store's key, above.
    #[test]
    fn duplicates_never_change_max_unique_latest_or_weighted(
        period in period(),
        raws in proptest::collection::vec(raw(), 1..40),
        again in proptest::collection::vec(any::<Index>(), 1..40),
    ) {
        let records = place(period, &raws);
        let mut doubled = records.clone();
        doubled.extend(again.iter().map(|i| records[i.index(records.len())].clone()));
        let ms: Vec<(String, Aggregation)> = metrics()
            .into_iter()
            .filter(|(_, a)| !matches!(a, Aggregation::Count | Aggregation::Sum))
            .collect();
        let (now, before) = split(period, &records);
        let (now2, before2) = split(period, &doubled);
        prop_assert_eq!(
            quantities(&ms, usage_of(&ms, &now, &before), period),
            quantities(&ms, usage_of(&ms, &now2, &before2), period)
        );
        let mut acc = Accumulator::new(Aggregation::Latest);
        let mut acc2 = Accumulator::new(Aggregation::Latest);
        for r in &now {
            acc.add(r.ts_ms, r.value, None);
        }
        for r in &now2 {
            acc2.add(r.ts_ms, r.value, None);
        }
        prop_assert_eq!(acc.quantity(period), acc2.quantity(period));
    }
}
