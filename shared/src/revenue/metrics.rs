//! The company's key metrics, computed from every customer's subscription history
//! ([`crate::customers::state::Term::history`]) as of a date. Pure: no I/O.
//!
//! The definitions, followed exactly (also in `docs/metrics.md`):
//! - **As of date D** means the state at the end of D (UTC): the last history point observed
//!   before D + 1 day 00:00. History is only appended to, so a rerun of a past date gives the
//!   same numbers.
//! - **MRR**: Σ of each subscription's monthly recurring value (yearly / 12, every 3 months / 3,
//!   weekly × 52 / 12; after recurring discounts; tax and one-off charges excluded; rounded
//!   to the minor unit per subscription) over subscriptions `active` or `past_due`. A plan
//!   billed through the price book adds its fixed charges for the subscription's seats
//!   (priced by billing's models); its metered charges are usage revenue. A trial
//!   (`trialing`) is worth 0 until it converts. Each customer's MRR is converted into the
//!   reporting currency with the rate table (data, `rates.json`), rounded half up per
//!   customer; a currency missing from the table is not converted: the customer is listed
//!   under `unconverted` and left out of every money figure. **ARR** = 12 × MRR.
//! - **Movements** between two dates, per customer (start = MRR at the first, end = at the
//!   second): `new` (0 -> positive, never paying before), `reactivation` (0 -> positive, paying
//!   at some time before), `expansion` / `contraction` (positive -> larger / smaller positive),
//!   `churn` (positive -> 0). start + new + expansion + reactivation − contraction − churn =
//!   end, exactly (both dates are converted with the same rate table).
//! - **Customers**: `paying` (MRR > 0), `trialing` (a trial and no MRR), `churned_this_month`
//!   (paying at the end of the previous month, not paying at D); **logo churn** =
//!   churned_this_month / paying at the end of the previous month.
//! - **Retention over the trailing 12 months**: the cohort is the customers paying at the same
//!   day 12 months before (new customers excluded). NRR = Σ cohort MRR now / Σ cohort MRR then;
//!   GRR = Σ min(now, then) / Σ then. `None` while the history does not reach back 12 months.
//! - **Usage revenue**: usage invoices finalized for the last closed month (the month before
//!   D's), reported apart from MRR.
//! - **Seats licensed**: seats of subscriptions `trialing`, `active` or `past_due`.
//! - **Open renewal pipeline**: the renewals open at D (see [`super::renewals`]): count and
//!   Σ amount.

use super::renewals::{RenewalWindows, renewal_at};
use crate::billing::pricebook::PriceBook;
use crate::customers::state::{CustomerState, Term, ValuePoint};
use crate::error::{Error, Result};
use crate::values::{Currency, Money};
use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// The first second after `date` (UTC): "as of `date`" reads history before it.
pub fn end_of(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |d| d.and_utc().timestamp())
        + DAY
}

/// The point of a term in force at `t` (the last observed before `t`).
pub fn point_at(term: &Term, t: i64) -> Option<ValuePoint> {
    if term.history.is_empty() {
        return (term.start < t).then(|| term.point(term.start));
    }
    let idx = term.history.partition_point(|p| p.at < t);
    idx.checked_sub(1).map(|i| term.history[i].clone())
}

/// Whether a subscription status counts towards MRR.
pub fn is_paying(status: &str) -> bool {
    matches!(status, "active" | "past_due")
}

/// Whether a subscription status holds seats.
pub fn holds_seats(status: &str) -> bool {
    matches!(status, "active" | "past_due" | "trialing")
}

/// Conversion into the reporting currency: data, not code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub reporting: Currency,
    /// Reporting-currency units per unit of each currency, as decimal text (`"1.08"`).
    pub rates: BTreeMap<Currency, String>,
}

impl Rates {
    /// The bundled table (`rates.json`).
    pub fn bundled() -> Result<Self> {
        Self::from_json(include_str!("rates.json"))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let rates: Rates =
            serde_json::from_str(text).map_err(|e| Error::Invalid(format!("rate table: {e}")))?;
        for (c, r) in &rates.rates {
            parse_decimal(r).ok_or_else(|| {
                Error::Invalid(format!("rate table: rate of {c} is not a positive decimal"))
            })?;
        }
        Ok(rates)
    }

    /// `money` in reporting-currency minor units, rounded half up; `None` when the currency
    /// has no rate.
    pub fn convert(&self, money: &Money) -> Option<i64> {
        if money.currency == self.reporting {
            return Some(money.amount);
        }
        let (num, den) = parse_decimal(self.rates.get(&money.currency)?)?;
        // Checked throughout: a huge amount gives `None` (no figure), never a wrapped one.
        let scale = |exp: u32| 10_i128.checked_pow(exp);
        let n = i128::from(money.amount)
            .checked_mul(num)?
            .checked_mul(scale(self.reporting.exponent())?)?;
        let d = den.checked_mul(scale(money.currency.exponent())?)?;
        let rounded = n
            .checked_mul(2)?
            .checked_add(d)?
            .div_euclid(d.checked_mul(2)?);
        i64::try_from(rounded).ok()
    }
}

/// A positive decimal as a fraction (`"1.08"` -> 108/100), at most 12 digits on each side
/// of the point (no currency is worth 10¹² of another).
fn parse_decimal(text: &str) -> Option<(i128, i128)> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        || int.len() > 12
        || frac.len() > 12
    {
        return None;
    }
    let num: i128 = format!("{int}{frac}").parse().ok()?;
    let den = 10_i128.pow(u32::try_from(frac.len()).ok()?);
    (num > 0).then_some((num, den))
}

/// An exact ratio and its percentage (two decimals) for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub numerator: i64,
    pub denominator: i64,
    pub percent: f64,
}

impl Ratio {
    /// `None` for a zero denominator.
    pub fn new(numerator: i64, denominator: i64) -> Option<Self> {
        (denominator != 0).then(|| Self {
            numerator,
            denominator,
            percent: (numerator as f64 * 10_000.0 / denominator as f64).round() / 100.0,
        })
    }
}

/// MRR movements between two dates (reporting-currency minor units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movements {
    pub start: i64,
    pub new: i64,
    pub expansion: i64,
    pub reactivation: i64,
    pub contraction: i64,
    pub churn: i64,
    pub end: i64,
}

impl Movements {
    /// start + new + expansion + reactivation − contraction − churn.
    pub fn reconciled_end(&self) -> i64 {
        self.start + self.new + self.expansion + self.reactivation - self.contraction - self.churn
    }
}

/// Customer counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customers {
    pub paying: u64,
    pub trialing: u64,
    pub paying_at_month_start: u64,
    pub churned_this_month: u64,
}

/// The open renewal pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub count: u64,
    /// Reporting-currency minor units.
    pub amount: i64,
}

/// Something left out of the money figures, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    pub customer: String,
    pub subscription: Option<String>,
    pub reason: String,
}

/// One day's company metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub currency: Currency,
    pub mrr: i64,
    pub arr: i64,
    /// Since the day before.
    pub movements: Movements,
    /// Since the end of the previous month.
    pub movements_month_to_date: Movements,
    /// MRR per original currency, before conversion (minor units of each).
    pub mrr_by_currency: BTreeMap<Currency, i64>,
    /// The month the usage revenue is of (`YYYY-MM`) and its amount.
    pub usage_revenue_period: String,
    pub usage_revenue: i64,
    pub customers: Customers,
    pub logo_churn: Option<Ratio>,
    pub net_revenue_retention_12m: Option<Ratio>,
    pub gross_revenue_retention_12m: Option<Ratio>,
    pub seats_licensed: u64,
    pub renewal_pipeline: Pipeline,
    /// Customers by health band (`healthy`, `watch`, `at_risk`, `no_data`), as scored the day
    /// before (the day's own scores are computed after the snapshot).
    #[serde(default)]
    pub health_bands: BTreeMap<String, u64>,
    pub excluded: Vec<Excluded>,
}

/// One customer at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Standing {
    /// Reporting currency; `None` when not convertible.
    mrr: Option<i64>,
    trialing: bool,
}

impl Standing {
    fn paying(&self) -> bool {
        self.mrr.unwrap_or(0) > 0
    }
}

/// Computes metrics as of dates; holds the rate table, the renewal windows and the price
/// book.
#[derive(Debug, Clone)]
pub struct MetricsEngine {
    pub rates: Rates,
    pub windows: RenewalWindows,
    /// Plans billed through the price book are valued with its fixed charges (billing's own
    /// pricing), added to what Stripe's price says (zero for a metered plan).
    pub book: Option<Arc<PriceBook>>,
}

impl MetricsEngine {
    /// The monthly recurring value of a subscription in the state `point`: its Stripe
    /// price, plus the fixed charges of its price-book plan for the point's seats.
    pub fn value(&self, term: &Term, point: &ValuePoint) -> Option<Money> {
        let plan = self
            .book
            .as_ref()
            .zip(term.plan.as_deref())
            .and_then(|(b, id)| b.plan(id));
        let Some((_, plan)) = plan else {
            return point.mrr.clone();
        };
        let fixed = plan.fixed_monthly(i64::from(point.seats.unwrap_or(1)));
        match &point.mrr {
            Some(m) if m.currency == fixed.currency => Some(Money::new(
                m.amount.saturating_add(fixed.amount),
                fixed.currency,
            )),
            Some(m) if m.amount != 0 => Some(m.clone()),
            _ => Some(fixed),
        }
    }

    /// The point of `term` in force at `t`, valued ([`MetricsEngine::value`]).
    pub fn valued_at(&self, term: &Term, t: i64) -> Option<ValuePoint> {
        point_at(term, t).map(|p| self.valued(term, p))
    }

    /// `point` with its value.
    pub fn valued(&self, term: &Term, point: ValuePoint) -> ValuePoint {
        ValuePoint {
            mrr: self.value(term, &point),
            ..point
        }
    }

    fn standing(&self, state: &CustomerState, t: i64) -> Standing {
        let mut by_currency: BTreeMap<Currency, i64> = BTreeMap::new();
        let mut trialing = false;
        for term in state.subscriptions.values() {
            let Some(p) = self.valued_at(term, t) else {
                continue;
            };
            trialing |= p.status == "trialing";
            if let (true, Some(m)) = (is_paying(&p.status), &p.mrr) {
                *by_currency.entry(m.currency.clone()).or_default() += m.amount;
            }
        }
        let mut mrr = Some(0);
        for (c, amount) in by_currency {
            let converted = self.rates.convert(&Money::new(amount, c));
            mrr = mrr.zip(converted).map(|(a, b)| a + b);
        }
        Standing { mrr, trialing }
    }

    /// Whether the customer paid at any time before `t`.
    fn paid_before(&self, state: &CustomerState, t: i64) -> bool {
        state.subscriptions.values().any(|term| {
            let paid = |p: &ValuePoint| {
                is_paying(&p.status) && self.value(term, p).is_some_and(|m| m.amount > 0)
            };
            if term.history.is_empty() {
                term.start < t && paid(&term.point(term.start))
            } else {
                term.history.iter().take_while(|p| p.at < t).any(paid)
            }
        })
    }

    /// The movements of every customer between the instants `from` and `to`.
    pub fn movements(&self, states: &[CustomerState], from: i64, to: i64) -> Movements {
        let mut m = Movements::default();
        for state in states {
            let (a, b) = (self.standing(state, from), self.standing(state, to));
            let (Some(start), Some(end)) = (a.mrr, b.mrr) else {
                continue;
            };
            m.start += start;
            m.end += end;
            match (start > 0, end > 0) {
                (false, true) if self.paid_before(state, from) => m.reactivation += end,
                (false, true) => m.new += end,
                (true, false) => m.churn += start,
                (true, true) if end > start => m.expansion += end - start,
                (true, true) => m.contraction += start - end,
                (false, false) => {}
            }
        }
        m
    }

    /// The snapshot as of `date`. `history_since`: the earliest history point of the store,
    /// which decides whether 12-month retention can be computed.
    pub fn snapshot(&self, states: &[CustomerState], date: NaiveDate) -> Snapshot {
        let t = end_of(date);
        let yesterday = t - DAY;
        let month_start = end_of(date.with_day(1).unwrap_or(date)) - DAY;
        let year_ago = date
            .checked_sub_months(Months::new(12))
            .map_or(i64::MIN, end_of);
        let history_since = states
            .iter()
            .flat_map(|s| s.subscriptions.values())
            .map(|term| term.history.first().map_or(term.start, |p| p.at))
            .min();
        let usage_period = date
            .with_day(1)
            .and_then(|d| d.checked_sub_months(Months::new(1)))
            .map(|d| d.format("%Y-%m").to_string())
            .unwrap_or_default();

        let mut mrr_by_currency: BTreeMap<Currency, i64> = BTreeMap::new();
        let mut customers = Customers::default();
        let mut excluded = Vec::new();
        let (mut cohort_then, mut cohort_now, mut cohort_kept) = (0_i64, 0_i64, 0_i64);
        let mut seats = 0_u64;
        let mut pipeline = Pipeline::default();
        let mut usage = 0_i64;
        for state in states {
            let now = self.standing(state, t);
            for (id, term) in &state.subscriptions {
                let Some(p) = self.valued_at(term, t) else {
                    continue;
                };
                if holds_seats(&p.status) {
                    seats += u64::from(p.seats.unwrap_or(0));
                }
                if is_paying(&p.status) {
                    match &p.mrr {
                        Some(m) => {
                            *mrr_by_currency.entry(m.currency.clone()).or_default() += m.amount
                        }
                        None => excluded.push(Excluded {
                            customer: state.customer_id.clone(),
                            subscription: Some(id.clone()),
                            reason: "the subscription has no price amount or interval".into(),
                        }),
                    }
                }
                if let Some(r) = renewal_at(&self.windows, id, term, &p, date)
                    && let Some(amount) = r.amount.as_ref().and_then(|a| self.rates.convert(a))
                {
                    pipeline.count += 1;
                    pipeline.amount += amount;
                }
            }
            let Some(mrr) = now.mrr else {
                excluded.push(Excluded {
                    customer: state.customer_id.clone(),
                    subscription: None,
                    reason: "no rate to the reporting currency".into(),
                });
                continue;
            };
            if let Some(u) = state.usage_billed.get(&usage_period) {
                match self.rates.convert(u) {
                    Some(v) => usage += v,
                    None => excluded.push(Excluded {
                        customer: state.customer_id.clone(),
                        subscription: None,
                        reason: format!("usage revenue of {usage_period}: no rate"),
                    }),
                }
            }
            if mrr > 0 {
                customers.paying += 1;
            } else if now.trialing {
                customers.trialing += 1;
            }
            if self.standing(state, month_start).paying() {
                customers.paying_at_month_start += 1;
                if mrr == 0 {
                    customers.churned_this_month += 1;
                }
            }
            if let Some(then) = self.standing(state, year_ago).mrr.filter(|m| *m > 0) {
                cohort_then += then;
                cohort_now += mrr;
                cohort_kept += mrr.min(then);
            }
        }
        let reaches_back = history_since.is_some_and(|h| h < year_ago);
        let movements = self.movements(states, yesterday, t);
        Snapshot {
            date: date.format("%Y-%m-%d").to_string(),
            currency: self.rates.reporting.clone(),
            mrr: movements.end,
            arr: movements.end * 12,
            movements_month_to_date: self.movements(states, month_start, t),
            movements,
            mrr_by_currency,
            usage_revenue_period: usage_period,
            usage_revenue: usage,
            logo_churn: Ratio::new(
                customers.churned_this_month as i64,
                customers.paying_at_month_start as i64,
            ),
            customers,
            net_revenue_retention_12m: reaches_back
                .then(|| Ratio::new(cohort_now, cohort_then))
                .flatten(),
            gross_revenue_retention_12m: reaches_back
                .then(|| Ratio::new(cohort_kept, cohort_then))
                .flatten(),
            seats_licensed: seats,
            renewal_pipeline: pipeline,
            health_bands: BTreeMap::new(),
            excluded,
        }
    }

    /// Month-end MRR movements for the `months` months ending with `date`'s month (the last
    /// one month to date): the report's chart.
    pub fn monthly(
        &self,
        states: &[CustomerState],
        date: NaiveDate,
        months: u32,
    ) -> Vec<(String, Movements)> {
        let first_of = date.with_day(1).unwrap_or(date);
        (0..months)
            .rev()
            .filter_map(|back| {
                let month = first_of.checked_sub_months(Months::new(back))?;
                let from = end_of(month) - DAY;
                let to = if back == 0 {
                    end_of(date)
                } else {
                    let next = month.checked_add_months(Months::new(1))?;
                    end_of(next) - DAY
                };
                Some((
                    month.format("%Y-%m").to_string(),
                    self.movements(states, from, to),
                ))
            })
            .collect()
    }
}

/// `date`'s year and month as `YYYY-MM`.
pub fn month_of(date: NaiveDate) -> String {
    format!("{:04}-{:02}", date.year(), date.month())
}
