use super::*;
use crate::billing::invoice::{SubscriptionUsage, compose};
use crate::billing::money::Money;
use crate::billing::pdf::render_pdf;
use crate::billing::pdf::tests::text_of;
use crate::billing::pricebook::PriceBook;
use crate::billing::subscription::Subscription;
use crate::config::Env;

fn ts(s: &str) -> i64 {
    s.parse::<DateTime<chrono::Utc>>().unwrap().timestamp()
}

/// Cloud Starter from Oct 20 (12 of 31 days) with 20 000 API calls and a 1.00 credit:
/// l0 platform 2900 × 12/31 = 1123; l1..l3 API tiers 0 + 4500 + 2500; l4 storage 0;
/// l5 installations 0; l6 credit -100. Subtotal 8123, total 8023.
fn starter(customer: &str) -> Invoice {
    let sub = Subscription {
        customer: customer.into(),
        subscription: "sub_1".into(),
        plan: "cloud-starter".into(),
        quantity: 1,
        status: "active".into(),
        currency: None,
        start: ts("2026-10-20T00:00:00Z"),
        end: None,
        updated_at: 0,
    };
    let usage = SubscriptionUsage {
        subscription: sub,
        quantities: [("api_calls".to_owned(), Quantity::from_int(20_000))].into(),
    };
    let credit = Money::new(100, "usd".parse().unwrap());
    compose(
        customer,
        "2026-10".parse().unwrap(),
        &PriceBook::embedded().unwrap(),
        &[usage],
        Some(&credit),
    )
    .unwrap()
}

/// The Stripe ids of the billable lines, as a bill run records them.
fn refs_of(inv: &Invoice) -> StripeRefs {
    StripeRefs {
        invoice: Some("in_1".into()),
        items: inv
            .billable_lines()
            .map(|l| (l.id.clone(), format!("ii_{}", l.id)))
            .collect(),
        finalized: true,
        ..StripeRefs::default()
    }
}

fn vat(amount: i64, taxable: i64, reason: &str) -> Tax {
    Tax {
        amount,
        inclusive: false,
        rate: Some(TaxRateInfo {
            id: "txr_de".into(),
            display_name: Some("VAT".into()),
            jurisdiction: Some("DE".into()),
            percentage: Some("19".into()),
            country: Some("DE".into()),
            state: None,
        }),
        taxability_reason: Some(reason.into()),
        taxable_amount: Some(taxable),
    }
}

/// What Stripe says of the starter invoice with German VAT: 19 % of each line
/// (1123 -> 213, 4500 -> 855, 2500 -> 475; the credit is a coupon: tax on the net).
fn issued_with_vat(exempt: &str, reason: &str, rate: i64) -> Issued {
    let tax = |a: i64| a * rate / 100;
    let line_taxes: BTreeMap<String, Vec<Tax>> = [("l0", 1123), ("l2", 4500), ("l3", 2500)]
        .into_iter()
        .map(|(l, a)| (format!("ii_{l}"), vec![vat(tax(a), a, reason)]))
        .collect();
    let total_tax: i64 = line_taxes.values().flatten().map(|t| t.amount).sum();
    Issued {
        number: Some("A1B2C3D4-0007".into()),
        status: Some("open".into()),
        finalized_at: Some(ts("2026-11-01T09:30:00Z")),
        due_date: Some(ts("2026-12-01T09:30:00Z")),
        hosted_invoice_url: Some("https://invoice.stripe.com/i/acct_1/live_abc?s=ap".into()),
        invoice_pdf: None,
        subtotal: Some(8123),
        tax: Some(total_tax),
        total: Some(8023 + total_tax),
        total_excluding_tax: Some(8023),
        amount_due: Some(8023 + total_tax),
        automatic_tax: true,
        automatic_tax_status: Some("complete".into()),
        customer: Buyer {
            name: Some("Müller & Söhne GmbH".into()),
            address: Some(PostalAddress {
                line1: Some("Hauptstraße 1".into()),
                line2: None,
                postal_code: Some("10115".into()),
                city: Some("Berlin".into()),
                state: None,
                country: Some("DE".into()),
            }),
            tax_ids: vec![("eu_vat".into(), "DE123456789".into())],
            tax_exempt: Some(exempt.into()),
        },
        line_taxes,
        taxes: vec![vat(total_tax, 8023, reason)],
    }
}

fn seller() -> Seller {
    Seller {
        name: "Example Software Inc.".into(),
        address: vec!["1 Market St".into(), "San Francisco, CA 94105".into()],
        tax_id: Some("US12-3456789".into()),
        email: Some("billing@example.com".into()),
    }
}

fn html_of(doc: &Document) -> String {
    String::from_utf8(render_html(doc)).unwrap()
}

#[test]
fn amounts_are_in_the_currency_units_and_never_minus_zero() {
    let usd: Currency = "usd".parse().unwrap();
    let jpy: Currency = "jpy".parse().unwrap();
    assert_eq!(units(123_456, &usd), "1,234.56");
    assert_eq!(units(-5, &usd), "-0.05");
    assert_eq!(units(0, &usd), "0.00");
    assert_eq!(units(-0, &usd), "0.00");
    assert_eq!(units(1_234_567, &jpy), "1,234,567");
    assert_eq!(units(-500, &jpy), "-500");
    // Unit prices are minor units with six decimals, printed in units.
    assert_eq!(unit_price("1500".parse().unwrap(), &usd), "15.00");
    assert_eq!(unit_price("0.5".parse().unwrap(), &usd), "0.005");
    assert_eq!(unit_price("0.25".parse().unwrap(), &usd), "0.0025");
    assert_eq!(unit_price("123456".parse().unwrap(), &usd), "1,234.56");
    assert_eq!(unit_price("3".parse().unwrap(), &jpy), "3");
    assert_eq!(unit_price("2.5".parse().unwrap(), &jpy), "2.5");
    assert_eq!(quantity(Quantity::from_int(25_000)), "25,000");
    assert_eq!(quantity("1234.5".parse().unwrap()), "1,234.5");
}

#[test]
fn every_line_is_explained_in_html_and_pdf_without_stripe() {
    let inv = starter("cus_1");
    let doc = Document::new(&inv, &StripeRefs::default(), &Seller::default());
    // Without Stripe's word: our key is the number, the day after the period the issue date.
    assert_eq!(doc.number, "cus_1:2026-10");
    assert_eq!(doc.issue_date, "2026-11-01");
    assert_eq!(
        (doc.period_start.as_str(), doc.period_end.as_str()),
        ("2026-10-01", "2026-10-31")
    );
    assert_eq!(
        (doc.subtotal, doc.credit_applied, doc.total, doc.tax),
        (8123, 100, 8023, 0)
    );
    assert_eq!(doc.amount_due, 8023);
    assert!(doc.pay_url.is_none() && doc.taxes.is_empty() && doc.tax_note.is_none());
    let html = html_of(&doc);
    for l in &inv.lines {
        assert!(html.contains(&esc(&l.description)), "{}", l.description);
    }
    assert!(html.contains("Tier 2 (1000 &lt; q &lt;= 10000)"), "{html}");
    assert!(
        html.contains("Prorated: 12 of 31 days of 29.00 USD"),
        "{html}"
    );
    assert!(
        html.contains("<td class=\"n\">0.005</td>"),
        "unit price in dollars: {html}"
    );
    assert!(
        html.contains("Credit applied</td><td class=\"n\">-1.00"),
        "{html}"
    );
    assert!(html.contains("80.23"), "{html}");
    assert!(!html.contains("-0.00") && !html.contains('¢'), "{html}");
    assert!(!html.contains("Pay online"), "no pay link without one");
    assert!(html.contains("Status</th><td>draft"), "{html}");
    let text = text_of(&render_pdf(&doc));
    assert!(text.contains("cus_1:2026-10"), "{text}");
    assert!(text.contains("80.23"), "{text}");
    for l in &inv.lines {
        assert!(
            text.contains(&l.description),
            "{} not in {text}",
            l.description
        );
    }
    assert!(!text.contains("-0.00"), "{text}");
}

#[test]
fn a_credit_covering_everything_totals_zero_not_minus_zero() {
    let mut inv = starter("cus_1");
    inv = inv.with_credit(Some(&Money::new(1_000_000, "usd".parse().unwrap())));
    let doc = Document::new(&inv, &StripeRefs::default(), &Seller::default());
    assert_eq!((doc.credit_applied, doc.total), (8123, 0));
    let html = html_of(&doc);
    assert!(
        html.contains("-81.23") && html.contains("0.00</td>"),
        "{html}"
    );
    assert!(!html.contains("-0.00"), "{html}");
    assert!(!text_of(&render_pdf(&doc)).contains("-0.00"));
}

#[test]
fn a_zero_decimal_currency_has_no_decimals() {
    let jpy: Currency = "jpy".parse().unwrap();
    let line = |id: &str, kind, amount, unit: Option<&str>| InvoiceLine {
        id: id.into(),
        kind,
        subscription: None,
        charge: None,
        metric: None,
        description: format!("Line {id}"),
        quantity: Quantity::from_int(3),
        unit_price: unit.map(|u| u.parse().unwrap()),
        tier: None,
        proration: None,
        amount,
    };
    let inv = Invoice {
        customer: "cus_jp".into(),
        period: "2026-10".parse().unwrap(),
        currency: jpy,
        price_book_version: "jp-1".into(),
        lines: vec![
            line("l0", LineKind::Usage, 4_500, Some("1500")),
            line("l1", LineKind::Credit, -500, None),
        ],
        subtotal: 4_500,
        credit_applied: 500,
        total: 4_000,
    };
    let doc = Document::new(&inv, &StripeRefs::default(), &Seller::default());
    let html = html_of(&doc);
    assert!(html.contains("<td class=\"n\">1,500</td>"), "{html}");
    assert!(
        html.contains("4,500") && html.contains("-500") && html.contains("4,000"),
        "{html}"
    );
    assert!(html.contains("Total (JPY)"), "{html}");
    assert!(
        !html.contains("4,000.") && !html.contains("45.00"),
        "{html}"
    );
    let text = text_of(&render_pdf(&doc));
    assert!(
        text.contains("4,000") && !text.contains("4,000.00"),
        "{text}"
    );
}

#[test]
fn tax_shows_per_line_per_rate_with_its_jurisdiction_in_json_html_and_pdf() {
    let inv = starter("cus_de");
    let mut refs = refs_of(&inv);
    refs.issued = Some(issued_with_vat("none", "standard_rated", 19));
    let doc = Document::new(&inv, &refs, &seller());
    assert_eq!(doc.number, "A1B2C3D4-0007");
    assert_eq!(doc.issue_date, "2026-11-01");
    assert_eq!(doc.due_date.as_deref(), Some("2026-12-01"));
    // 213 + 855 + 475 = 1543 on a net of 8023.
    assert_eq!(
        (doc.total_excluding_tax, doc.tax, doc.total),
        (8023, 1543, 9566)
    );
    assert_eq!(doc.amount_due, 9566);
    let l0 = &doc.lines[0];
    assert_eq!(
        (l0.tax, l0.tax_labels.clone()),
        (Some(213), vec!["VAT 19% (DE)".to_owned()])
    );
    assert_eq!(doc.lines[1].tax, None, "a zero line went to no Stripe item");
    assert_eq!(
        doc.lines.last().unwrap().tax,
        None,
        "the credit is no taxed item"
    );
    assert_eq!(
        doc.taxes,
        vec![TaxTotal {
            label: "VAT 19% (DE)".into(),
            amount: 1543,
            inclusive: false
        }]
    );
    assert_eq!(
        doc.bill_to.address,
        vec!["Hauptstraße 1", "10115 Berlin", "Germany"]
    );
    assert_eq!(doc.bill_to.tax_ids, vec!["EU VAT DE123456789"]);

    let json: serde_json::Value = serde_json::from_slice(&render_json(&inv, &refs, &doc)).unwrap();
    assert_eq!(
        json["invoice"]["total"], 8023,
        "the composition of record is unchanged"
    );
    assert_eq!(json["document"]["tax"], 1543);
    assert_eq!(json["document"]["lines"][0]["tax"], 213);
    assert_eq!(json["document"]["taxes"][0]["label"], "VAT 19% (DE)");
    assert_eq!(
        json["stripe"]["issued"]["taxes"][0]["rate"]["jurisdiction"],
        "DE"
    );

    let html = html_of(&doc);
    for needle in [
        "A1B2C3D4-0007",
        "Example Software Inc.",
        "Tax id: US12-3456789",
        "Müller &amp; Söhne GmbH",
        "EU VAT DE123456789",
        "2.13<div class=\"details\">VAT 19% (DE)</div>",
        "VAT 19% (DE)</td><td class=\"n\">15.43",
        "Total excluding tax</td><td class=\"n\">80.23",
        "Total (USD)</td><td class=\"n\">95.66",
        "href=\"https://invoice.stripe.com/i/acct_1/live_abc?s=ap\"",
        "2026-12-01",
    ] {
        assert!(html.contains(needle), "{needle} not in {html}");
    }
    let text = text_of(&render_pdf(&doc));
    for needle in [
        "A1B2C3D4-0007",
        "95.66",
        "15.43",
        "VAT 19% (DE)",
        "Müller & Söhne GmbH",
        "Hauptstraße 1",
        "https://invoice.stripe.com/i/acct_1/live_abc?s=ap",
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    for l in &inv.lines {
        assert!(
            text.contains(&l.description),
            "{} not in {text}",
            l.description
        );
    }
}

#[test]
fn exempt_and_reverse_charge_customers_say_so_and_pay_no_tax() {
    let inv = starter("cus_x");
    for (exempt, reason, note) in [
        ("exempt", "customer_exempt", TAX_EXEMPT),
        ("reverse", "reverse_charge", REVERSE_CHARGE),
        // A reverse charge Stripe decided from the tax id, the customer not marked.
        ("none", "reverse_charge", REVERSE_CHARGE),
    ] {
        let mut refs = refs_of(&inv);
        refs.issued = Some(issued_with_vat(exempt, reason, 0));
        let doc = Document::new(&inv, &refs, &seller());
        assert_eq!(doc.tax_note.as_deref(), Some(note), "{exempt}/{reason}");
        assert_eq!((doc.tax, doc.total, doc.amount_due), (0, 8023, 8023));
        let label = if reason == "customer_exempt" {
            "Tax exempt"
        } else {
            "Reverse charge"
        };
        assert_eq!(doc.lines[0].tax_labels, vec![label.to_owned()]);
        assert!(html_of(&doc).contains(&esc(note)));
        let text = text_of(&render_pdf(&doc));
        assert!(text.contains(note), "{note} not in {text}");
    }
}

#[test]
fn a_hostile_customer_name_is_escaped_in_html_and_printed_as_text_in_pdf() {
    let inv = starter("cus_<1>");
    let mut refs = refs_of(&inv);
    let mut issued = issued_with_vat("none", "standard_rated", 19);
    issued.customer.name = Some("<script>alert('x')</script> & \"Co\"".into());
    issued.hosted_invoice_url = Some("javascript:alert(1)".into());
    refs.issued = Some(issued);
    let doc = Document::new(&inv, &refs, &seller());
    assert!(doc.pay_url.is_none(), "only http(s) links are offered");
    let html = html_of(&doc);
    assert!(
        !html.contains("<script>") && !html.contains("javascript:"),
        "{html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Co&quot;"),
        "{html}"
    );
    assert!(html.contains("Customer cus_&lt;1&gt;"), "{html}");
    let text = text_of(&render_pdf(&doc));
    assert!(
        text.contains("<script>alert('x')</script> & \"Co\""),
        "{text}"
    );
}

#[test]
fn the_pdf_is_deterministic_and_long_invoices_take_more_pages() {
    let mut inv = starter("cus_1");
    let template = inv.lines[0].clone();
    inv.lines = (0..70)
        .map(|i| InvoiceLine {
            id: format!("l{i}"),
            description: format!("Line number {i} with a description long enough to wrap onto a second line in the table"),
            ..template.clone()
        })
        .collect();
    let doc = Document::new(&inv, &StripeRefs::default(), &Seller::default());
    let a = render_pdf(&doc);
    assert_eq!(a, render_pdf(&doc), "same bytes every time");
    assert!(a.starts_with(b"%PDF-"));
    let pages = lopdf::Document::load_mem(&a).unwrap().get_pages().len();
    assert!(pages >= 3, "{pages} pages");
    let text = text_of(&a);
    for i in 0..70 {
        assert!(
            text.contains(&format!("Line number {i} with")),
            "line {i} missing"
        );
    }
    assert!(text.contains(&format!("page {pages} of {pages}")), "{text}");
}

#[test]
fn stripes_invoice_is_read_in_both_api_shapes() {
    // Before 2025-03-31: tax_amounts with the rate expanded, total_tax_amounts, tax.
    let old = serde_json::json!({
        "id": "in_1", "status": "open", "total": 11_900, "number": "ABC-0001",
        "subtotal": 10_000, "tax": 1_900, "total_excluding_tax": 10_000, "amount_due": 11_900,
        "automatic_tax": {"enabled": true, "status": "complete"},
        "customer_name": "Acme", "customer_email": "ap@acme.example",
        "customer_address": {"line1": "Hauptstraße 1", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        "customer_tax_ids": [{"type": "eu_vat", "value": "DE123456789"}],
        "customer_tax_exempt": "none",
        "status_transitions": {"finalized_at": 1_793_491_200},
        "hosted_invoice_url": "https://invoice.stripe.com/i/x",
        "total_tax_amounts": [{"amount": 1_900, "inclusive": false, "taxability_reason": "standard_rated",
            "tax_rate": {"id": "txr_1", "display_name": "VAT", "jurisdiction": "DE", "percentage": 19.0, "country": "DE"}}],
        "lines": {"object": "list", "has_more": false, "data": [
            {"id": "il_1", "amount": 10_000, "invoice_item": "ii_1", "tax_amounts": [
                {"amount": 1_900, "inclusive": false, "taxable_amount": 10_000, "taxability_reason": "standard_rated",
                 "tax_rate": {"id": "txr_1", "display_name": "VAT", "jurisdiction": "DE", "percentage": 19.0}}]}]}
    });
    let inv: stripe::Invoice = serde_json::from_value(old).unwrap();
    let i = Issued::from_stripe(&inv);
    assert_eq!(i.number.as_deref(), Some("ABC-0001"));
    assert_eq!(
        (i.tax, i.total_excluding_tax, i.amount_due),
        (Some(1_900), Some(10_000), Some(11_900))
    );
    assert!(i.automatic_tax);
    assert_eq!(i.finalized_at, Some(1_793_491_200));
    assert_eq!(i.line_taxes["ii_1"][0].label(), "VAT 19% (DE)");
    assert_eq!(
        i.taxes[0].rate.as_ref().unwrap().percentage.as_deref(),
        Some("19")
    );
    assert_eq!(
        i.customer.tax_ids,
        vec![("eu_vat".to_owned(), "DE123456789".to_owned())]
    );
    assert_eq!(
        i.customer.address.as_ref().unwrap().city.as_deref(),
        Some("Berlin")
    );

    // Since 2025-03-31: taxes[] with tax_rate_details, the item under parent, total_taxes.
    let new = serde_json::json!({
        "id": "in_2", "status": "open", "total": 10_888,
        "total_taxes": [{"amount": 888, "tax_behavior": "exclusive", "taxability_reason": "standard_rated",
            "tax_rate_details": {"tax_rate": "txr_ny"}}],
        "lines": {"object": "list", "has_more": false, "data": [
            {"id": "il_2", "amount": 10_000,
             "parent": {"type": "invoice_item_details", "invoice_item_details": {"invoice_item": "ii_2"}},
             "taxes": [{"amount": 888, "tax_behavior": "exclusive", "taxability_reason": "standard_rated",
                "tax_rate_details": {"tax_rate": {"id": "txr_ny", "display_name": "Sales Tax",
                    "jurisdiction": "NEW YORK", "percentage": 8.875, "state": "NY"}}}]}]}
    });
    let inv: stripe::Invoice = serde_json::from_value(new).unwrap();
    let i = Issued::from_stripe(&inv);
    assert_eq!(i.tax, Some(888), "the sum of the added taxes");
    assert_eq!(
        i.line_taxes["ii_2"][0].label(),
        "Sales Tax 8.875% (NEW YORK)"
    );
    assert_eq!(i.taxes[0].label(), "Tax", "a rate named by id only");
    // localstripe: almost nothing.
    let bare: stripe::Invoice =
        serde_json::from_value(serde_json::json!({"id": "in_3", "status": "draft", "total": 5}))
            .unwrap();
    let i = Issued::from_stripe(&bare);
    assert_eq!(
        (i.tax, i.number.clone(), i.automatic_tax),
        (None, None, false)
    );
}

#[test]
fn the_seller_and_tax_come_from_the_environment() {
    let i = Issuing::from_env(&Env::from_map([("SELLER_NAME", "")])).unwrap();
    assert_eq!(i, Issuing::default());
    assert_eq!(i.seller.name, "blapi");
    let i = Issuing::from_env(&Env::from_map([
        ("STRIPE_AUTOMATIC_TAX", "true"),
        ("SELLER_NAME", "Example Software Inc."),
        ("SELLER_ADDRESS", "1 Market St; San Francisco, CA 94105;"),
        ("SELLER_TAX_ID", "US12-3456789"),
        ("SELLER_EMAIL", "billing@example.com"),
    ]))
    .unwrap();
    assert!(i.automatic_tax);
    assert_eq!(i.seller, seller());
    let e = Issuing::from_env(&Env::from_map([("STRIPE_AUTOMATIC_TAX", "maybe")])).unwrap_err();
    assert!(e.to_string().contains("STRIPE_AUTOMATIC_TAX"), "{e}");
}
