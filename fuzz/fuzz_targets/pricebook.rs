//! Price-book documents: [`PriceBook::from_json`] (the override stored in the billing table
//! replaces the embedded book without a deploy) and the prices it gives.
//!
//! Input: the document. Every model is also priced as read, before validation: pricing
//! promises never to panic, overflow or divide by zero whatever the model. Beyond that, for a
//! document that validates:
//! - it survives its JSON round trip (it is stored and read back as JSON);
//! - prices are never negative for a quantity of zero or more, a graduated price's pieces
//!   cover the quantity, a volume or package price is one piece of the whole quantity;
//! - a plan is found by its id and by each of its Stripe price ids.
#![no_main]

use blapi::billing::Quantity;
use blapi::billing::pricebook::PriceBook;
use blapi::billing::pricing::{self, PriceModel};
use libfuzzer_sys::fuzz_target;

const QUANTITIES: [i64; 9] = [
    0,
    1,
    999_999,
    1_000_000,
    1_500_000,
    1_000_000_000_000,
    i64::MAX,
    -1,
    i64::MIN,
];
const SEATS: [i64; 6] = [0, 1, 5, 1_000_000, i64::MAX, -3];

fn price_all(model: &PriceModel, validated: bool) {
    for micros in QUANTITIES {
        let q = Quantity::from_micros(micros);
        let pieces = model.price(q);
        let total = pricing::total(&pieces);
        if !validated || micros < 0 {
            continue;
        }
        assert!(
            pieces.iter().all(|p| p.amount >= 0),
            "{model:?} at {q}: {pieces:?}"
        );
        assert!(total >= 0);
        match model {
            PriceModel::Graduated { .. } if micros > 0 => {
                let covered: i128 = pieces.iter().map(|p| i128::from(p.quantity.micros())).sum();
                assert_eq!(covered, i128::from(micros), "{model:?} at {q}: {pieces:?}");
            }
            PriceModel::Volume { .. } | PriceModel::Package { .. } if micros > 0 => {
                assert_eq!(pieces.len(), 1);
                assert_eq!(pieces[0].quantity, q);
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // As read, unvalidated: a model built by hand must not panic either.
    if let Ok(book) = serde_json::from_str::<PriceBook>(text) {
        for plan in book.plans.values() {
            for seats in SEATS {
                let _ = plan.fixed_monthly(seats);
            }
            for charge in &plan.charges {
                price_all(&charge.model, false);
            }
        }
    } else if let Ok(model) = serde_json::from_str::<PriceModel>(text) {
        price_all(&model, model.validate().is_ok());
        return;
    }

    let Ok(book) = PriceBook::from_json(text) else {
        return;
    };
    let stored = serde_json::to_string(&book).expect("a price book serialises");
    assert_eq!(
        PriceBook::from_json(&stored).expect("a stored book parses back"),
        book
    );
    for (id, plan) in &book.plans {
        assert!(book.plan(id).is_some());
        for price in &plan.stripe_prices {
            assert!(
                book.plan(price).is_some(),
                "stripe price {price:?} of {id} finds no plan"
            );
        }
        for seats in SEATS {
            let fixed = plan.fixed_monthly(seats);
            assert!(fixed.amount >= 0);
            assert_eq!(fixed.currency, plan.currency);
        }
        for charge in &plan.charges {
            price_all(&charge.model, true);
            if let Some(metric) = &charge.metric {
                assert!(plan.charge_for(metric).is_some());
            }
        }
    }
});
