//! Hand-computed tables for the metrics, renewal windows and health, on small fixtures.

use super::health::{HealthInputs, HealthRules};
use super::metrics::{MetricsEngine, Rates, Ratio, end_of};
use super::renewals::{self, RenewalWindows, days_until, renewal_at};
use crate::billing::pricebook::PriceBook;
use crate::crm::OpportunityStage;
use crate::customers::state::{CustomerState, InvoiceLink, Term, ValuePoint};
use crate::values::{Currency, Money};
use chrono::NaiveDate;
use std::collections::BTreeMap;

pub(super) fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// Noon of a date (seconds).
pub(super) fn noon(s: &str) -> i64 {
    end_of(date(s)) - 43_200
}

pub(super) fn usd(cents: i64) -> Money {
    Money::new(cents, "usd".parse().unwrap())
}

/// A point: (observed on, status, mrr, seats, term end).
pub(super) struct P(
    pub &'static str,
    pub &'static str,
    pub Option<Money>,
    pub u32,
    pub &'static str,
);

pub(super) fn term(interval: &str, points: Vec<P>) -> Term {
    let history: Vec<ValuePoint> = points
        .into_iter()
        .map(|P(at, status, mrr, seats, end)| ValuePoint {
            at: noon(at),
            status: status.into(),
            mrr,
            seats: Some(seats),
            term_end: end_of(date(end)) - 86_400,
            cancel_at_period_end: false,
        })
        .collect();
    let last = history.last().unwrap().clone();
    Term {
        status: last.status.clone(),
        start: history[0].at,
        end: last.term_end,
        seats: last.seats,
        sku: Some("E20".into()),
        annual_value: None,
        cancel_reason: None,
        plan: None,
        interval: Some(interval.into()),
        interval_count: Some(1),
        mrr: last.mrr.clone(),
        cancel_at_period_end: false,
        history,
    }
}

pub(super) fn customer(id: &str, subs: Vec<(&str, Term)>) -> CustomerState {
    let mut s = CustomerState::new(id);
    s.owner_id = Some("005OWNER".into());
    for (sid, t) in subs {
        s.subscriptions.insert(sid.into(), t);
    }
    s
}

fn engine() -> MetricsEngine {
    MetricsEngine {
        rates: Rates::bundled().unwrap(),
        windows: RenewalWindows::default(),
        book: Some(std::sync::Arc::new(PriceBook::embedded().unwrap())),
    }
}

/// Two months of a small company (see the table in `docs/metrics.md`):
/// - A: monthly $100 from Jan 5, upgraded to $150 on Feb 10 (seats 5 -> 8);
/// - B: yearly $1 200 (MRR $100) from Dec 15, downgraded to yearly $600 on Feb 12;
/// - C: monthly $50 from Dec 1, cancelled Jan 20;
/// - D: monthly $80 from Dec 1, cancelled Jan 10, back on a new subscription Feb 15;
/// - E: a trial from Feb 1 (20 seats);
/// - F: monthly $100 with 25 % off forever (MRR $75) from Jan 3;
/// - G: monthly EUR 100 (USD 108 at the table's 1.08) from Dec 1;
/// - H: an active subscription without a price (excluded, named);
/// - I: SEK 500 a month: no rate (excluded, named).
pub(super) fn fixture() -> Vec<CustomerState> {
    let eur = |c| Some(Money::new(c, "eur".parse().unwrap()));
    vec![
        customer(
            "A",
            vec![(
                "sub_a",
                term(
                    "month",
                    vec![
                        P("2026-01-05", "active", Some(usd(10_000)), 5, "2026-02-05"),
                        P("2026-02-05", "active", Some(usd(10_000)), 5, "2026-03-05"),
                        P("2026-02-10", "active", Some(usd(15_000)), 8, "2026-03-05"),
                    ],
                ),
            )],
        ),
        customer(
            "B",
            vec![(
                "sub_b",
                term(
                    "year",
                    vec![
                        P("2025-12-15", "active", Some(usd(10_000)), 10, "2026-12-15"),
                        P("2026-02-12", "active", Some(usd(5_000)), 5, "2026-12-15"),
                    ],
                ),
            )],
        ),
        customer(
            "C",
            vec![(
                "sub_c",
                term(
                    "month",
                    vec![
                        P("2025-12-01", "active", Some(usd(5_000)), 2, "2026-01-01"),
                        P("2026-01-01", "active", Some(usd(5_000)), 2, "2026-02-01"),
                        P("2026-01-20", "canceled", Some(usd(5_000)), 2, "2026-02-01"),
                    ],
                ),
            )],
        ),
        customer(
            "D",
            vec![
                (
                    "sub_d1",
                    term(
                        "month",
                        vec![
                            P("2025-12-01", "active", Some(usd(8_000)), 3, "2026-01-01"),
                            P("2026-01-10", "canceled", Some(usd(8_000)), 3, "2026-01-01"),
                        ],
                    ),
                ),
                (
                    "sub_d2",
                    term(
                        "month",
                        vec![P("2026-02-15", "active", Some(usd(8_000)), 3, "2026-03-15")],
                    ),
                ),
            ],
        ),
        customer(
            "E",
            vec![(
                "sub_e",
                term(
                    "month",
                    vec![P(
                        "2026-02-01",
                        "trialing",
                        Some(usd(20_000)),
                        20,
                        "2026-03-01",
                    )],
                ),
            )],
        ),
        customer(
            "F",
            vec![(
                "sub_f",
                term(
                    "month",
                    vec![
                        P("2026-01-03", "active", Some(usd(7_500)), 4, "2026-02-03"),
                        P("2026-02-03", "active", Some(usd(7_500)), 4, "2026-03-03"),
                    ],
                ),
            )],
        ),
        customer(
            "G",
            vec![(
                "sub_g",
                term(
                    "month",
                    vec![
                        P("2025-12-01", "active", eur(10_000), 6, "2026-01-01"),
                        P("2026-02-01", "active", eur(10_000), 6, "2026-03-01"),
                    ],
                ),
            )],
        ),
        customer(
            "H",
            vec![(
                "sub_h",
                term(
                    "month",
                    vec![P("2026-01-01", "active", None, 1, "2026-03-01")],
                ),
            )],
        ),
        customer(
            "I",
            vec![(
                "sub_i",
                term(
                    "month",
                    vec![P(
                        "2026-01-01",
                        "active",
                        Some(Money::new(50_000, "sek".parse().unwrap())),
                        1,
                        "2026-12-31",
                    )],
                ),
            )],
        ),
    ]
}

#[test]
fn february_snapshot_matches_the_hand_computed_table() {
    let mut states = fixture();
    states[0].usage_billed.insert("2026-01".into(), usd(1_234));
    let s = engine().snapshot(&states, date("2026-02-28"));
    // Jan 31: A 100 + B 100 + F 75 + G 108 = 383.00; Feb 28: A 150 + B 50 + D 80 + F 75 + G 108.
    assert_eq!(s.mrr, 46_300);
    assert_eq!(s.arr, 555_600);
    let m = &s.movements_month_to_date;
    assert_eq!(
        (
            m.start,
            m.new,
            m.expansion,
            m.reactivation,
            m.contraction,
            m.churn,
            m.end
        ),
        (38_300, 0, 5_000, 8_000, 5_000, 0, 46_300)
    );
    assert_eq!(m.reconciled_end(), m.end);
    // Nothing happened on the 28th.
    let d = &s.movements;
    assert_eq!(
        (d.start, d.end, d.new + d.expansion + d.churn),
        (46_300, 46_300, 0)
    );
    assert_eq!(s.customers.paying, 5);
    assert_eq!(s.customers.trialing, 1);
    assert_eq!(s.customers.paying_at_month_start, 4);
    assert_eq!(s.customers.churned_this_month, 0);
    assert_eq!(s.logo_churn, Ratio::new(0, 4));
    // A 8 + B 5 + D 3 + E 20 (trial) + F 4 + G 6 + H 1 + I 1.
    assert_eq!(s.seats_licensed, 48);
    assert_eq!(s.usage_revenue_period, "2026-01");
    assert_eq!(s.usage_revenue, 1_234);
    let usd_c: Currency = "usd".parse().unwrap();
    let eur_c: Currency = "eur".parse().unwrap();
    assert_eq!(s.mrr_by_currency.get(&usd_c), Some(&35_500));
    assert_eq!(s.mrr_by_currency.get(&eur_c), Some(&10_000));
    // Monthly terms all end within 30 days: A (Mar 5) 1 800, D (Mar 15) 960, F (Mar 3) 900,
    // G (Mar 1) EUR 1 200 = USD 1 296; H has no price; I has no rate; B renews in December.
    assert_eq!(s.renewal_pipeline.count, 4);
    assert_eq!(
        s.renewal_pipeline.amount,
        180_000 + 96_000 + 90_000 + 129_600
    );
    let excluded: Vec<(&str, Option<&str>)> = s
        .excluded
        .iter()
        .map(|e| (e.customer.as_str(), e.subscription.as_deref()))
        .collect();
    assert_eq!(excluded, vec![("H", Some("sub_h")), ("I", None)]);
    assert_eq!(
        s.net_revenue_retention_12m, None,
        "history is two months deep"
    );
}

#[test]
fn january_has_new_business_and_two_churned_logos() {
    let s = engine().snapshot(&fixture(), date("2026-01-31"));
    let m = &s.movements_month_to_date;
    // Dec 31: B 100 + C 50 + D 80 + G 108 = 338; new A 100 + F 75; churn C 50 + D 80.
    assert_eq!(
        (
            m.start,
            m.new,
            m.expansion,
            m.reactivation,
            m.contraction,
            m.churn,
            m.end
        ),
        (33_800, 17_500, 0, 0, 0, 13_000, 38_300)
    );
    assert_eq!(s.customers.paying_at_month_start, 4);
    assert_eq!(s.customers.churned_this_month, 2);
    assert_eq!(s.logo_churn.as_ref().map(|r| r.percent), Some(50.0));
    // The day D churned: yesterday's movements only.
    let day = engine().snapshot(&fixture(), date("2026-01-10")).movements;
    assert_eq!((day.churn, day.start - day.end), (8_000, 8_000));
    // Monthly chart: the last month is month to date; each month reconciles.
    let months = engine().monthly(&fixture(), date("2026-02-28"), 3);
    let labels: Vec<&str> = months.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(labels, ["2025-12", "2026-01", "2026-02"]);
    assert_eq!(months[1].1, *m);
    assert!(months.iter().all(|(_, m)| m.reconciled_end() == m.end));
}

#[test]
fn a_rerun_of_a_past_date_gives_the_same_numbers_whatever_came_after() {
    let states = fixture();
    let before = engine().snapshot(&states, date("2026-02-15"));
    let mut later = states.clone();
    // A cancels in March: appended history after the date changes nothing before it.
    let a = later[0].subscriptions.get_mut("sub_a").unwrap();
    let mut p = a.history.last().unwrap().clone();
    p.at = noon("2026-03-02");
    p.status = "canceled".into();
    a.history.push(p);
    assert_eq!(engine().snapshot(&later, date("2026-02-15")), before);
    assert_eq!(engine().snapshot(&states, date("2026-02-15")), before);
}

#[test]
fn retention_over_twelve_months_excludes_new_customers() {
    let states = vec![
        customer(
            "P",
            vec![(
                "p",
                term(
                    "month",
                    vec![
                        P("2025-01-01", "active", Some(usd(10_000)), 1, "2025-02-01"),
                        P("2025-06-01", "active", Some(usd(12_000)), 1, "2026-02-01"),
                    ],
                ),
            )],
        ),
        customer(
            "Q",
            vec![(
                "q",
                term(
                    "month",
                    vec![
                        P("2025-01-01", "active", Some(usd(5_000)), 1, "2025-02-01"),
                        P("2025-09-01", "canceled", Some(usd(5_000)), 1, "2025-09-01"),
                    ],
                ),
            )],
        ),
        customer(
            "R",
            vec![(
                "r",
                term(
                    "month",
                    vec![P("2025-10-01", "active", Some(usd(7_000)), 1, "2026-02-01")],
                ),
            )],
        ),
    ];
    let s = engine().snapshot(&states, date("2026-01-15"));
    // Cohort of 2025-01-15: P 100 -> 120, Q 50 -> 0.
    assert_eq!(s.net_revenue_retention_12m, Ratio::new(12_000, 15_000));
    assert_eq!(s.gross_revenue_retention_12m, Ratio::new(10_000, 15_000));
    assert_eq!(
        s.gross_revenue_retention_12m.as_ref().map(|r| r.percent),
        Some(66.67)
    );
    // A day before the history reaches back a year: not computed.
    let early = engine().snapshot(&states, date("2025-12-31"));
    assert_eq!(early.net_revenue_retention_12m, None);
}

#[test]
fn rates_convert_exactly_and_refuse_nonsense() {
    let r = Rates::bundled().unwrap();
    assert_eq!(
        r.convert(&Money::new(10_000, "eur".parse().unwrap())),
        Some(10_800)
    );
    // JPY has no minor unit: 1 000 yen at 0.0067 = 6.70 USD.
    assert_eq!(
        r.convert(&Money::new(1_000, "jpy".parse().unwrap())),
        Some(670)
    );
    assert_eq!(r.convert(&Money::new(1, "sek".parse().unwrap())), None);
    for bad in [
        r#"{"reporting":"usd","rates":{"eur":"0"}}"#,
        r#"{"reporting":"usd","rates":{"eur":"1,2"}}"#,
        r#"{"reporting":"usd","rates":{"eur":"."}}"#,
        r#"{"reporting":"usd","rates":{"eur":"1000000000000"}}"#,
        "[]",
    ] {
        assert!(Rates::from_json(bad).is_err(), "{bad}");
    }
    // The largest amounts convert with checked arithmetic: a figure or none, never wrapped.
    let steep =
        Rates::from_json(r#"{"reporting":"jpy","rates":{"eur":"999999999999.999999999999"}}"#)
            .unwrap();
    assert_eq!(
        steep.convert(&Money::new(i64::MAX, "eur".parse().unwrap())),
        None
    );
    assert_eq!(
        steep.convert(&Money::new(i64::MIN, "eur".parse().unwrap())),
        None
    );
    assert_eq!(
        steep.convert(&Money::new(100, "eur".parse().unwrap())),
        Some(1_000_000_000_000),
        "1.00 EUR at 10^12 - 10^-12 is 10^12 yen, rounded half up"
    );
    assert_eq!(
        r.convert(&Money::new(i64::MAX, "eur".parse().unwrap())),
        None
    );
}

#[test]
fn renewal_window_edges_ninety_days_in_ninety_one_out() {
    let w = RenewalWindows::default();
    let yearly = term(
        "year",
        vec![P(
            "2025-06-01",
            "active",
            Some(usd(10_000)),
            10,
            "2026-06-01",
        )],
    );
    let p = yearly.history[0].clone();
    // The term ends at the start of 2026-06-01: after 2026-03-02, 90 whole days are left.
    assert_eq!(days_until(date("2026-03-02"), p.term_end), Some(90));
    assert_eq!(days_until(date("2026-05-31"), p.term_end), Some(0));
    // A term ending in the afternoon 30 days and some hours after the day: 30.
    assert_eq!(
        days_until(date("2026-05-01"), p.term_end + 57_600),
        Some(30)
    );
    assert!(renewal_at(&w, "s", &yearly, &p, date("2026-03-02")).is_some());
    assert!(
        renewal_at(&w, "s", &yearly, &p, date("2026-03-01")).is_none(),
        "91 days"
    );
    let r = renewal_at(&w, "s", &yearly, &p, date("2026-05-31")).unwrap();
    assert_eq!(r.key, "s:2026-06-01");
    assert_eq!(r.amount, Some(usd(120_000)), "annualised: 12 x MRR");
    assert!(
        renewal_at(&w, "s", &yearly, &p, date("2026-06-01")).is_none(),
        "term over"
    );
    let monthly = term(
        "month",
        vec![P("2026-05-01", "active", Some(usd(100)), 1, "2026-06-01")],
    );
    let mp = monthly.history[0].clone();
    assert!(
        renewal_at(&w, "m", &monthly, &mp, date("2026-05-01")).is_some(),
        "30 days"
    );
    assert!(
        renewal_at(&w, "m", &monthly, &mp, date("2026-04-30")).is_none(),
        "31 days"
    );
    // A trial or a subscription set to cancel gets none.
    let mut cancelling = mp.clone();
    cancelling.cancel_at_period_end = true;
    assert!(renewal_at(&w, "m", &monthly, &cancelling, date("2026-05-20")).is_none());
}

#[test]
fn renewals_open_once_update_seats_and_close_won_or_lost() {
    let mut state = customer(
        "A",
        vec![(
            "sub",
            term(
                "year",
                vec![P(
                    "2025-06-01",
                    "active",
                    Some(usd(10_000)),
                    10,
                    "2026-06-01",
                )],
            ),
        )],
    );
    let mut tracked = BTreeMap::new();
    for day in ["2026-03-02", "2026-03-02", "2026-03-03", "2026-04-15"] {
        tracked = renewals::update(&engine(), &state, &tracked, date(day));
    }
    assert_eq!(tracked.len(), 1, "one per term, however often it runs");
    // Seats change: the open renewal follows.
    let t = state.subscriptions.get_mut("sub").unwrap();
    t.seats = Some(12);
    t.mrr = Some(usd(12_000));
    tracked = renewals::update(&engine(), &state, &tracked, date("2026-04-16"));
    let r = tracked.values().next().unwrap();
    assert_eq!((r.seats, r.amount.clone()), (Some(12), Some(usd(144_000))));
    assert_eq!(r.stage, OpportunityStage::Open);
    // The term rolls over but the invoice is not paid yet: still open.
    let t = state.subscriptions.get_mut("sub").unwrap();
    t.end = end_of(date("2027-05-31"));
    tracked = renewals::update(&engine(), &state, &tracked, date("2026-06-01"));
    assert_eq!(
        tracked.values().next().unwrap().stage,
        OpportunityStage::Open
    );
    state.last_invoice = Some(InvoiceLink {
        invoice_id: "in_1".into(),
        total: usd(144_000),
        at: noon("2026-06-01"),
    });
    tracked = renewals::update(&engine(), &state, &tracked, date("2026-06-02"));
    assert_eq!(
        tracked.values().next().unwrap().stage,
        OpportunityStage::ClosedWon
    );
    // Another subscription cancelled: its renewal closes lost, with the reason.
    let mut c = customer(
        "B",
        vec![(
            "sub",
            term(
                "month",
                vec![P("2026-05-01", "active", Some(usd(100)), 1, "2026-06-01")],
            ),
        )],
    );
    let open = renewals::update(&engine(), &c, &BTreeMap::new(), date("2026-05-10"));
    let t = c.subscriptions.get_mut("sub").unwrap();
    t.status = "canceled".into();
    t.cancel_reason = Some("cancellation_requested: too_expensive".into());
    let closed = renewals::update(&engine(), &c, &open, date("2026-05-11"));
    let r = closed.values().next().unwrap();
    assert_eq!(r.stage, OpportunityStage::ClosedLost);
    assert_eq!(
        r.loss_reason.as_deref(),
        Some("cancellation_requested: too_expensive")
    );
    // Closed stays closed.
    assert_eq!(
        renewals::update(&engine(), &c, &closed, date("2026-05-12")),
        closed
    );
}

fn healthy_inputs() -> HealthInputs {
    HealthInputs {
        usage_last_30: [("api_calls".to_owned(), 1_000)].into(),
        usage_previous_30: [("api_calls".to_owned(), 1_000)].into(),
        active_users: Some(9),
        licensed_seats: Some(10),
        payment: "active".into(),
        days_to_license_expiry: Some(200),
        refund: false,
        dispute: false,
    }
}

#[test]
fn health_each_input_alone() {
    let rules = HealthRules::bundled().unwrap();
    let all = rules.score(healthy_inputs());
    assert_eq!((all.score, all.band.as_str()), (Some(100), "healthy"));
    assert_eq!(all.reasons, ["every signal healthy"]);
    let with = |f: &dyn Fn(&mut HealthInputs)| {
        let mut i = healthy_inputs();
        f(&mut i);
        rules.score(i)
    };
    // Usage halved: -50% is not under -50 -> 0.4 of 30 = lose 18.
    let h = with(&|i| {
        i.usage_last_30.insert("api_calls".into(), 500);
    });
    assert_eq!(h.score, Some(82));
    assert_eq!(h.reasons[0], "usage down 50% over 30 days");
    // Usage collapsed: -90% -> 0 of 30.
    let h = with(&|i| {
        i.usage_last_30.insert("api_calls".into(), 100);
    });
    assert_eq!(h.score, Some(70));
    // 2 of 10 seats used: 20% -> 0 of 25.
    let h = with(&|i| i.active_users = Some(2));
    assert_eq!(
        (h.score, h.reasons[0].as_str()),
        (Some(75), "20% of seats in use (2 of 10)")
    );
    // Past due: 0.3 of 25 -> lose 17.5 -> 82.5 rounds to 83 (ties away from zero).
    let h = with(&|i| i.payment = "past_due".into());
    assert_eq!(h.score, Some(83));
    let h = with(&|i| i.payment = "suspended".into());
    assert_eq!(h.score, Some(75));
    // License expiring in 10 days: 0.3 of 10; expired: 0.
    let h = with(&|i| i.days_to_license_expiry = Some(10));
    assert_eq!(
        (h.score, h.reasons[0].as_str()),
        (Some(93), "license expires in 10 days")
    );
    let h = with(&|i| i.days_to_license_expiry = Some(-1));
    assert_eq!(
        (h.score, h.reasons[0].as_str()),
        (Some(90), "license expired")
    );
    // Refund 0.3 of 10; dispute 0.
    assert_eq!(with(&|i| i.refund = true).score, Some(93));
    assert_eq!(with(&|i| i.dispute = true).score, Some(90));
    // No seat telemetry: that factor drops out (its weight too), not a made-up zero.
    let h = with(&|i| i.active_users = None);
    assert_eq!(h.score, Some(100));
    assert!(h.reasons.contains(&"no active-user telemetry".to_owned()));
    // Everything bad: at risk.
    let h = with(&|i| {
        i.usage_last_30.insert("api_calls".into(), 0);
        i.payment = "past_due".into();
        i.active_users = Some(1);
    });
    assert_eq!(h.band, "at_risk");
    assert!(h.score.unwrap() < 40);
}

#[test]
fn no_usage_history_is_no_data_never_a_made_up_score() {
    let rules = HealthRules::bundled().unwrap();
    let mut i = healthy_inputs();
    i.usage_last_30.clear();
    i.usage_previous_30.clear();
    let h = rules.score(i.clone());
    assert_eq!((h.score, h.band.as_str()), (None, "no_data"));
    assert_eq!(h.reasons[0], "no data: no usage history");
    assert_eq!(h.inputs, i, "the score keeps its inputs");
    // New usage (nothing before): growth, not a division by zero.
    i.usage_last_30.insert("api_calls".into(), 10);
    assert_eq!(rules.score(i).score, Some(100));
}

#[test]
fn health_rules_are_checked() {
    let good: serde_json::Value = serde_json::from_str(include_str!("health.json")).unwrap();
    let broken = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        HealthRules::from_json(&v.to_string())
    };
    assert!(broken(&|_| {}).is_ok());
    assert!(broken(&|v| v["factors"][0]["name"] = "vibes".into()).is_err());
    assert!(broken(&|v| v["factors"][0]["weight"] = 0.into()).is_err());
    assert!(broken(&|v| v["factors"][0]["otherwise"] = 1.5.into()).is_err());
    assert!(
        broken(&|v| v["factors"][0]["below"] = serde_json::json!([[0, 0.1], [-10, 0.2]])).is_err()
    );
    assert!(broken(&|v| v["watch_from"] = 90.into()).is_err());
}

#[test]
fn a_plan_billed_through_the_price_book_is_valued_by_its_fixed_charges() {
    // Cloud Pro: 15.00 a seat a month from the price book; Stripe's plan is metered at 0.
    let mut t = term(
        "month",
        vec![P("2026-01-01", "active", Some(usd(0)), 5, "2026-03-01")],
    );
    t.plan = Some("cloud-pro".into());
    let e = engine();
    assert_eq!(e.value(&t, &t.history[0]), Some(usd(7_500)));
    // Cloud Starter: a 29.00 platform fee whatever the seats, on top of a Stripe price.
    let mut starter = t.clone();
    starter.plan = Some("cloud-starter".into());
    let mut p = starter.history[0].clone();
    p.mrr = Some(usd(1_000));
    assert_eq!(e.value(&starter, &p), Some(usd(3_900)));
    // A plan the book does not know: Stripe's price alone.
    let mut other = t.clone();
    other.plan = Some("price_unknown".into());
    assert_eq!(e.value(&other, &other.history[0]), Some(usd(0)));
    let s = e.snapshot(&[customer("C", vec![("sub", t)])], date("2026-02-10"));
    assert_eq!((s.mrr, s.customers.paying), (7_500, 1));
}
