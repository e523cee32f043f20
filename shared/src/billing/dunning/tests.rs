use super::*;

const DAY: i64 = 86_400;
const T0: i64 = 1_780_000_000;

fn failed(inv: &str, n: i64, at: i64) -> InvoiceEvent {
    InvoiceEvent::PaymentFailed {
        invoice: inv.into(),
        attempt_count: n,
        at,
        amount_due: Some(Money::new(12_500, "usd".parse().unwrap())),
        pay_url: Some(format!("https://pay.example/{inv}")),
        subscription: Some("sub_1".into()),
    }
}
fn paid(inv: &str, at: i64) -> InvoiceEvent {
    InvoiceEvent::Paid {
        invoice: inv.into(),
        at,
    }
}
fn kinds(d: &Dunning) -> Vec<String> {
    d.outbox
        .iter()
        .map(|e| match e {
            Effect::Notify { notification } => notification.kind.clone(),
            Effect::Standing { suspended, seq, .. } => format!("standing:{suspended}:{seq}"),
            Effect::Cancel { subscription, .. } => format!("cancel:{subscription}"),
        })
        .collect()
}

#[test]
fn the_ladder_parses_and_refuses_nonsense() {
    let l = Ladder::parse(DEFAULT_LADDER).unwrap();
    assert_eq!(l.steps().len(), 5);
    assert_eq!(l.suspend_day(), Some(14));
    assert_eq!(l.cancel_day(), Some(30));
    for bad in [
        "",
        "1",
        "x:remind",
        "1:shout",
        "3:remind,1:remind",
        "1:suspend,2:suspend",
        "1:cancel,2:suspend",
        "400:remind",
        "-1:remind",
    ] {
        let e = Ladder::parse(bad).unwrap_err().to_string();
        assert!(e.contains("dunning ladder"), "{bad}: {e}");
    }
}

#[test]
fn a_failed_payment_walks_every_step_once() {
    let p = Policy::default();
    let mut d = Dunning::default();
    assert_eq!(
        d.apply("cus_1", &failed("in_1", 1, T0)),
        Some(Status::Active)
    );
    assert_eq!(d.status, Status::PastDue);
    assert_eq!(kinds(&d), ["billing.payment_failed"]);
    d.outbox.clear();
    // the same event again: nothing new
    assert_eq!(d.apply("cus_1", &failed("in_1", 1, T0)), None);
    assert!(d.outbox.is_empty());

    let mut sent = Vec::new();
    for day in 0..=31 {
        let now = T0 + day * DAY + 60;
        let taken = d.advance("cus_1", &p, &[], now);
        // a second sweep the same day takes nothing
        assert!(d.advance("cus_1", &p, &[], now).is_empty());
        for t in taken {
            sent.push((day, t));
        }
    }
    let days: Vec<i64> = sent.iter().map(|(d, _)| *d).collect();
    assert_eq!(days, [1, 3, 7, 14, 30]);
    assert_eq!(
        kinds(&d),
        [
            "billing.dunning_reminder",
            "billing.dunning_reminder",
            "billing.dunning_reminder",
            "billing.suspended",
            "standing:true:1",
            "cancel:sub_1",
            "billing.cancelled",
        ]
    );
    assert_eq!(d.status, Status::Suspended);
    // every notice id is distinct and deterministic
    let ids: BTreeSet<String> = d.outbox.iter().map(|e| e.id("cus_1")).collect();
    assert_eq!(ids.len(), d.outbox.len());
    d.outbox.clear();

    // paid: active again, the standing moves with a newer seq, the customer is told
    assert_eq!(
        d.apply("cus_1", &paid("in_1", T0 + 32 * DAY)),
        Some(Status::Suspended)
    );
    assert_eq!(d.status, Status::Active);
    assert_eq!(kinds(&d), ["standing:false:2", "billing.reinstated"]);
    assert_eq!(d.next_action_at(&p), Some(0), "the outbox is pending");
    d.outbox.clear();
    assert_eq!(d.next_action_at(&p), None);
}

#[test]
fn a_sweep_that_missed_days_sends_only_the_latest_reminder() {
    let p = Policy::default();
    let mut d = Dunning::default();
    d.apply("cus_1", &failed("in_1", 1, T0));
    d.outbox.clear();
    let taken = d.advance("cus_1", &p, &[], T0 + 8 * DAY);
    assert_eq!(taken.len(), 3);
    assert_eq!(kinds(&d), ["billing.dunning_reminder"]);
    let Effect::Notify { notification } = &d.outbox[0] else {
        panic!("a notice")
    };
    assert_eq!(notification.data["day"], 7);
    assert_eq!(notification.data["suspend_on"], "2026-06-11");
    assert_eq!(d.status, Status::PastDue);
}

#[test]
fn payment_before_a_step_cancels_the_rest() {
    let p = Policy::default();
    let mut d = Dunning::default();
    d.apply("cus_1", &failed("in_1", 1, T0));
    d.advance("cus_1", &p, &[], T0 + 2 * DAY);
    d.apply("cus_1", &paid("in_1", T0 + 5 * DAY));
    d.outbox.clear();
    assert!(d.advance("cus_1", &p, &[], T0 + 40 * DAY).is_empty());
    assert!(d.outbox.is_empty());
    assert_eq!(d.status, Status::Active);
    assert_eq!(d.seq, 0, "never suspended, so no standing change");
}

#[test]
fn order_does_not_matter_and_paid_is_terminal() {
    let events = [
        failed("in_1", 1, 100),
        failed("in_1", 2, 100 + DAY),
        paid("in_1", 100 + 2 * DAY),
        failed("in_2", 1, 100 + 3 * DAY),
    ];
    let mut forward = Dunning::default();
    for e in &events {
        forward.apply("c", e);
    }
    let mut backward = Dunning::default();
    for e in events.iter().rev() {
        backward.apply("c", e);
    }
    assert_eq!(forward.status, Status::PastDue);
    assert_eq!(backward.status, Status::PastDue);
    assert_eq!(forward.invoices, backward.invoices);
    let mut d = Dunning::default();
    d.apply("c", &paid("in_9", 500));
    d.apply("c", &failed("in_9", 1, 400));
    assert_eq!(d.status, Status::Active);
    assert!(
        d.outbox.is_empty(),
        "no payment-failed notice for a paid invoice"
    );
}

#[test]
fn no_usable_method_starts_dunning_at_once() {
    let mut d = Dunning::default();
    assert!(d.has_usable_method(T0), "unknown counts as usable");
    d.set_payment_method(None, T0);
    assert!(!d.has_usable_method(T0));
    let usd: Currency = "usd".parse().unwrap();
    assert!(d.issued_without_method("cus_1", "in_7", Money::new(900, usd.clone()), None, T0));
    assert!(!d.issued_without_method("cus_1", "in_7", Money::new(900, usd), None, T0));
    assert_eq!(d.status, Status::PastDue);
    assert_eq!(kinds(&d), ["billing.payment_method_missing"]);
    assert_eq!(d.next_action_at(&Policy::default()), Some(0));
    d.outbox.clear();
    assert_eq!(d.next_action_at(&Policy::default()), Some(T0 + DAY));
}

fn card(month: u32, year: u32) -> Card {
    Card {
        brand: "visa".into(),
        last4: "4242".into(),
        exp_month: month,
        exp_year: year,
    }
}

#[test]
fn card_expiry_notices_at_30_and_7_days_once_each() {
    let p = Policy::default();
    let mut d = Dunning::default();
    // expires end of 2026-06: the first instant after is 2026-07-01
    let c = card(6, 2026);
    let expires = card_expires_at(&c).unwrap();
    assert_eq!(
        chrono::DateTime::from_timestamp(expires, 0)
            .unwrap()
            .to_rfc3339(),
        "2026-07-01T00:00:00+00:00"
    );
    assert_eq!(
        card_expires_at(&card(12, 2026)).unwrap() - expires,
        184 * DAY
    );
    assert!(d.set_payment_method(Some(c.clone()), 10));
    assert!(
        !d.set_payment_method(Some(c), 5),
        "an older read is ignored"
    );
    assert_eq!(d.next_action_at(&p), Some(expires - 30 * DAY));
    d.advance("cus_1", &p, &[], expires - 31 * DAY);
    assert!(d.outbox.is_empty());
    d.advance("cus_1", &p, &[], expires - 30 * DAY);
    d.advance("cus_1", &p, &[], expires - 29 * DAY);
    assert_eq!(kinds(&d), ["billing.card_expiring"]);
    d.advance("cus_1", &p, &[], expires - 7 * DAY);
    d.advance("cus_1", &p, &[], expires - 6 * DAY);
    assert_eq!(
        kinds(&d),
        ["billing.card_expiring", "billing.card_expiring"]
    );
    let days: Vec<i64> = d
        .outbox
        .iter()
        .filter_map(|e| match e {
            Effect::Notify { notification } => notification.data["days"].as_i64(),
            _ => None,
        })
        .collect();
    assert_eq!(days, [30, 7]);
    d.outbox.clear();
    assert_eq!(d.next_action_at(&p), None);
    assert!(!d.has_usable_method(expires + 1));
}

#[test]
fn a_card_added_close_to_expiry_gets_one_notice() {
    let p = Policy::default();
    let mut d = Dunning::default();
    let c = card(6, 2026);
    let expires = card_expires_at(&c).unwrap();
    d.set_payment_method(Some(c), 1);
    d.advance("cus_1", &p, &[], expires - 5 * DAY);
    d.advance("cus_1", &p, &[], expires - 4 * DAY);
    assert_eq!(kinds(&d), ["billing.card_expiring"]);
}

#[test]
fn parses_stripe_events() {
    let ev = serde_json::json!({"id": "evt_1", "type": "invoice.payment_failed", "created": 1700000000,
        "data": {"object": {"id": "in_1", "customer": "cus_1", "attempt_count": 2,
            "amount_due": 12500, "currency": "usd", "subscription": "sub_1",
            "hosted_invoice_url": "https://pay.example/in_1"}}});
    let (c, e) = InvoiceEvent::from_stripe("invoice.payment_failed", &ev).unwrap();
    assert_eq!(c, "cus_1");
    let InvoiceEvent::PaymentFailed {
        attempt_count,
        amount_due,
        subscription,
        ..
    } = e
    else {
        panic!("a failure")
    };
    assert_eq!(attempt_count, 2);
    assert_eq!(amount_due.unwrap().amount, 12_500);
    assert_eq!(subscription.as_deref(), Some("sub_1"));
    assert!(InvoiceEvent::from_stripe("invoice.created", &ev).is_none());
}

#[test]
fn old_states_still_load() {
    let old = serde_json::json!({"status": "past_due", "invoices": {"in_1": {"first_failed_at": 5, "attempts": 1, "paid_at": null}}, "as_of": 5});
    let d: Dunning = serde_json::from_value(old).unwrap();
    assert_eq!(d.status, Status::PastDue);
    assert!(d.outbox.is_empty());
}
