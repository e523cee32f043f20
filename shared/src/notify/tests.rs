//! The notifier with in-memory ports: templates, escaping, recipients, once per id, opt-outs,
//! throttling and links.

#![allow(clippy::unwrap_used)]

use super::render::{format_date, format_money};
use super::*;
use crate::error::Error;
use crate::ledger::MemoryLedger;
use crate::notice::{Kind, Notification};
use crate::queue::process_batch;
use crate::retry::RetryPolicy;
use crate::storage::MemoryStore;
use crate::stripe::MemoryStripe;
use crate::subjects::{Choice, Subjects};
use crate::telemetry::Tally;
use crate::values::{Currency, Email};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// 2026-03-02T10:00:00Z
const NOW: i64 = 1_772_445_600_000;
const ADA: &str = "ada@globex.example";
const OPS: &str = "ops@blapi.example";

fn now() -> i64 {
    NOW
}

struct World {
    notifier: Notifier,
    mailer: Arc<MemoryMailer>,
    ledger: Arc<MemoryLedger>,
    subjects: Subjects,
    tally: Tally,
}

fn settings() -> Settings {
    Settings {
        from: Email::parse("billing@blapi.example").unwrap(),
        operations: Email::parse(OPS).unwrap(),
        link_ttl: Duration::from_secs(72 * 3600),
        send_retry: RetryPolicy::immediate(4),
        lease: Duration::from_secs(60),
    }
}

fn world() -> World {
    let mailer = Arc::new(MemoryMailer::new());
    let ledger = Arc::new(MemoryLedger::new());
    let stripe = Arc::new(MemoryStripe::new());
    stripe.put_customer(json!({
        "id": "cus_1", "email": ADA, "name": "Ada Lovelace",
        "metadata": {"company": "Globex"}
    }));
    stripe.put_customer(json!({
        "id": "cus_evil", "email": "eve@example.com", "name": "<script>alert(1)</script>",
        "metadata": {"company": "A&B"}
    }));
    stripe.put_customer(json!({"id": "cus_nomail", "name": "No Mail"}));
    stripe.put_customer(json!({"id": "cus_gone", "deleted": true}));
    let subjects = Subjects::for_tests();
    let ports = Ports {
        mailer: mailer.clone(),
        ledger: ledger.clone(),
        stripe,
        subjects: subjects.clone(),
        files: Arc::new(MemoryStore::new()),
        clock: now,
    };
    World {
        notifier: Notifier::new(ports, settings()).unwrap(),
        mailer,
        ledger,
        subjects,
        tally: Tally::new("blapi", "notifications"),
    }
}

fn usd(amount: i64) -> Value {
    json!({"amount": amount, "currency": "usd"})
}

/// One notification of each kind, with the data its producer documents, and a value that must
/// show in both bodies.
fn sample(kind: Kind) -> (Notification, &'static str) {
    let id = format!("test:{}", kind.as_str());
    let c = |k| Notification::to_customer(id.clone(), k, "cus_1");
    match kind {
        Kind::LicenseIssued => (
            c(kind)
                .with("license_id", "lic_1")
                .with("sku", "professional")
                .with("seats", 25)
                .with("expires_at", 1_803_945_600_000i64)
                .with("file_key", "licenses/cus_1/lic_1.mattermost-license"),
            "lic_1",
        ),
        Kind::InvoiceAvailable => (
            c(kind)
                .with("period", "2026-02")
                .with("number", "INV-0042")
                .with("total", usd(123_450))
                .with("amount_due", usd(100_000))
                .with("html_key", "invoices/cus_1/2026-02.html")
                .with("pdf_key", "invoices/cus_1/2026-02.pdf")
                .with("pay_url", "https://pay.stripe.com/i/1"),
            "1,234.50 USD",
        ),
        Kind::TaxAddressRequired => (c(kind).with("period", "2026-02"), "February 2026"),
        Kind::PaymentFailed => (
            c(kind)
                .with("invoice", "in_1")
                .with("amount_due", usd(4_900))
                .with("attempt", 2)
                .with("pay_url", "https://pay.stripe.com/i/1"),
            "49.00 USD",
        ),
        Kind::DunningReminder => (
            c(kind)
                .with("invoice", "in_1")
                .with("day", 7)
                .with("amount_due", usd(4_900))
                .with("pay_url", "https://pay.stripe.com/i/1")
                .with("suspend_on", "2026-03-16"),
            "16 March 2026",
        ),
        Kind::Suspended => (
            c(kind)
                .with("invoice", "in_1")
                .with("amount_due", usd(4_900))
                .with("pay_url", "https://pay.stripe.com/i/1")
                .with("cancel_on", "2026-04-01"),
            "1 April 2026",
        ),
        Kind::Reinstated => (c(kind).with("invoice", "in_1"), "in_1"),
        Kind::CancelledForNonPayment => (
            c(kind)
                .with("subscriptions", ["sub_1", "sub_2"])
                .with("invoice", "in_1"),
            "sub_1, sub_2",
        ),
        Kind::CardExpiring => (
            c(kind)
                .with("brand", "Visa")
                .with("last4", "4242")
                .with("exp_month", 3)
                .with("exp_year", 2026)
                .with("days", 29),
            "4242",
        ),
        Kind::PaymentMethodMissing => (
            c(kind).with("invoice", "in_1").with("amount_due", usd(0)),
            "0.00 USD",
        ),
        Kind::PrivacyCompleted => (
            Notification::to_address(id.clone(), kind, ADA)
                .with("request_id", "pr_1")
                .with("request_kind", "access")
                .with("status", "completed")
                .with("bundle_key", "privacy/exports/pr_1.json"),
            "access request pr_1 is complete",
        ),
        Kind::PrivacyDeadline => (
            Notification::new(id.clone(), kind)
                .with("request_id", "pr_9")
                .with("request_kind", "erasure")
                .with("status", "in_progress")
                .with("urgency", "overdue")
                .with("due", "2026-04-01")
                .with("date", "2026-04-02"),
            "pr_9",
        ),
        Kind::CustomerHealth => (
            Notification::to_customer(id.clone(), kind, "cus_unknown_to_stripe")
                .with("warning", "entered_at_risk")
                .with("owner", "005OWNER")
                .with("score", 35)
                .with("band", "at_risk")
                .with("reasons", ["usage down 60%", "payment past due"])
                .with("date", "2026-03-02"),
            "usage down 60%",
        ),
        Kind::ProductNews => (
            c(kind)
                .with("headline", "Blapi 2.0 is out")
                .with("summary", "Faster invoices.")
                .with("url", "https://blapi.example/news/2"),
            "Faster invoices.",
        ),
    }
}

fn batch(bodies: &[(&str, String)]) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = bodies
        .iter()
        .map(|(id, body)| {
            let mut m = SqsMessage::default();
            m.message_id = Some((*id).to_owned());
            m.body = Some(body.clone());
            m
        })
        .collect();
    e
}

/// Runs a batch through `process_batch` as the function does; the failed ids and the errors.
async fn run_batch(w: &World, bodies: &[(&str, String)]) -> (Vec<String>, Vec<String>) {
    let store = MemoryStore::new();
    let errors = std::sync::Mutex::new(Vec::new());
    let resp = process_batch(batch(bodies), &store, None, |rec| {
        let errors = &errors;
        async move {
            let n: Notification = rec.json()?;
            let out = w.notifier.deliver(&n, &w.tally).await;
            if let Err(e) = &out {
                errors.lock().unwrap().push(e.to_string());
            }
            out.map(|_| ())
        }
    })
    .await;
    let failed = resp
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    (failed, errors.into_inner().unwrap())
}

fn body(n: &Notification) -> String {
    serde_json::to_string(n).unwrap()
}

#[tokio::test]
async fn every_kind_renders_text_and_html_from_its_template() {
    let w = world();
    for kind in Kind::ALL {
        let (n, marker) = sample(kind);
        let out = w.notifier.deliver(&n, &w.tally).await;
        assert!(
            matches!(out, Ok(Outcome::Sent { .. })),
            "{}: {out:?}",
            kind.as_str()
        );
        let mail = w.mailer.sent().pop().unwrap();
        assert!(!mail.subject.is_empty() && !mail.subject.contains('\n'));
        assert!(
            mail.text.contains(marker),
            "{}: {}",
            kind.as_str(),
            mail.text
        );
        assert!(
            mail.html.contains(marker),
            "{}: {}",
            kind.as_str(),
            mail.html
        );
        assert!(
            mail.html.starts_with("<!DOCTYPE html>"),
            "{}",
            kind.as_str()
        );
        assert!(mail.html.contains("<title>"));
        assert!(!mail.text.contains("<p>"), "{}", kind.as_str());
        assert!(!mail.text.contains("{{") && !mail.html.contains("{%"));
        let to = if kind.internal() { OPS } else { ADA };
        assert_eq!(mail.to.as_str(), to, "{}", kind.as_str());
        assert_eq!(mail.from.as_str(), "billing@blapi.example");
    }
    assert_eq!(w.mailer.sent().len(), Kind::ALL.len());
    assert_eq!(
        w.tally.get("NotificationsSent"),
        Some(Kind::ALL.len() as f64)
    );
    let all = w.mailer.sent();
    let invoice = &all[1];
    assert_eq!(
        invoice.subject,
        "Your invoice for February 2026 is available"
    );
    assert!(
        invoice.text.contains("Hello Ada Lovelace,"),
        "{}",
        invoice.text
    );
    assert!(invoice.text.contains("Amount due: 1,000.00 USD"));
    assert!(
        invoice.text.contains("Globex"),
        "the footer names the company"
    );
    let health = &all[12];
    assert_eq!(
        health.subject,
        "Early warning: customer cus_unknown_to_stripe is at risk"
    );
    let privacy = &all[10];
    assert!(
        privacy
            .text
            .contains("memory://privacy/exports/pr_1.json?expires_in=259200")
    );
    assert!(
        health.text.contains("- payment past due"),
        "{}",
        health.text
    );
}

#[test]
fn money_is_shown_in_currency_units_never_cents_never_minus_zero() {
    let usd = Currency::try_from("usd".to_owned()).unwrap();
    let jpy = Currency::try_from("JPY".to_owned()).unwrap();
    for (amount, currency, shown) in [
        (123_450, &usd, "1,234.50 USD"),
        (0, &usd, "0.00 USD"),
        (5, &usd, "0.05 USD"),
        (-5, &usd, "-0.05 USD"),
        (-123_456_789, &usd, "-1,234,567.89 USD"),
        (100_000_000, &usd, "1,000,000.00 USD"),
        (99_999, &usd, "999.99 USD"),
        (1_500, &jpy, "1,500 JPY"),
        (i64::MIN, &usd, "-92,233,720,368,547,758.08 USD"),
    ] {
        assert_eq!(format_money(amount, currency), shown);
    }
}

#[test]
fn dates_from_days_months_timestamps_and_epochs() {
    for (v, shown) in [
        (json!("2026-03-02"), "2 March 2026"),
        (json!("2026-03"), "March 2026"),
        (json!("2026-03-02T23:30:00-05:00"), "3 March 2026"),
        (json!(1_772_445_600), "2 March 2026"),
        (json!(1_772_445_600_000i64), "2 March 2026"),
    ] {
        assert_eq!(format_date(&v).as_deref(), Some(shown), "{v}");
    }
    assert_eq!(format_date(&json!("next week")), None);
    assert_eq!(format_date(&json!(true)), None);
}

#[tokio::test]
async fn html_escapes_every_value_and_text_stays_plain() {
    let w = world();
    let n = Notification::to_customer("esc:1", Kind::Reinstated, "cus_evil")
        .with("invoice", "in_<b>1</b>\"'");
    w.notifier.deliver(&n, &w.tally).await.unwrap();
    let mail = w.mailer.sent().pop().unwrap();
    assert!(!mail.html.contains("<script>"), "{}", mail.html);
    assert!(!mail.html.contains("<b>1</b>"), "{}", mail.html);
    assert!(
        mail.html.contains("&lt;script&gt;alert(1)&lt;"),
        "{}",
        mail.html
    );
    assert!(mail.html.contains("A&amp;B"), "{}", mail.html);
    assert!(mail.html.contains("in_&lt;b&gt;1&lt;"), "{}", mail.html);
    assert!(mail.html.contains("&quot;&#x27;"), "{}", mail.html);
    // The layout's own markup is not escaped.
    assert!(mail.html.contains("<body") && mail.html.contains("<p>"));
    // Text is not HTML: it carries the values as they are.
    assert!(
        mail.text.contains("Hello <script>alert(1)</script>,"),
        "{}",
        mail.text
    );
    assert!(mail.text.contains("A&B"));
}

#[tokio::test]
async fn an_unknown_type_fails_alone_in_a_batch_naming_the_type() {
    let w = world();
    let (good, _) = sample(Kind::Reinstated);
    let mut other = good.clone();
    other.id = "test:other".into();
    let unknown = json!({"id": "x:1", "type": "license.exploded", "customer": "cus_1"});
    let (failed, errors) = run_batch(
        &w,
        &[
            ("m1", body(&good)),
            ("m2", unknown.to_string()),
            ("m3", body(&other)),
            ("m4", "{not json".into()),
        ],
    )
    .await;
    assert_eq!(failed, vec!["m2", "m4"]);
    assert_eq!(w.mailer.sent().len(), 2, "the neighbours are sent");
    assert!(
        errors[0].contains("unknown notification type \"license.exploded\""),
        "{errors:?}"
    );
    let e = Notification::known_kind(&serde_json::from_value(unknown).unwrap()).unwrap_err();
    assert!(!e.is_retryable());
    assert_eq!(w.ledger.len(), 2, "the unknown type is never claimed");
}

#[tokio::test]
async fn a_customer_without_an_address_fails_alone_with_a_clear_error() {
    let w = world();
    let reinstated = |id: &str, customer: &str| {
        Notification::to_customer(id, Kind::Reinstated, customer).with("invoice", "in_1")
    };
    let (failed, errors) = run_batch(
        &w,
        &[
            ("m1", body(&reinstated("r:1", "cus_nomail"))),
            ("m2", body(&reinstated("r:2", "cus_1"))),
            ("m3", body(&reinstated("r:3", "cus_gone"))),
            ("m4", body(&reinstated("r:4", "cus_nowhere"))),
            ("m5", body(&Notification::new("r:5", Kind::Reinstated))),
            (
                "m6",
                body(&Notification::to_address(
                    "r:6",
                    Kind::Reinstated,
                    "not an address",
                )),
            ),
        ],
    )
    .await;
    assert_eq!(failed, vec!["m1", "m3", "m4", "m5", "m6"]);
    assert_eq!(w.mailer.sent().len(), 1);
    assert!(
        errors[0].contains("customer cus_nomail has no usable e-mail address"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("customer cus_gone is deleted"),
        "{errors:?}"
    );
    assert!(
        errors[2].contains("customer cus_nowhere does not exist"),
        "{errors:?}"
    );
    assert!(errors[3].contains("names no recipient"), "{errors:?}");
    assert!(errors[4].contains("`to` is not usable"), "{errors:?}");
    assert!(
        !errors
            .iter()
            .any(|e| e.contains("@globex") || e.contains("@example") || e.contains("not an")),
        "no address in errors: {errors:?}"
    );
    // Not retryable, and the claim is released: fixed data (a redrive) is sent then.
    let e = w
        .notifier
        .deliver(&reinstated("r:1", "cus_nomail"), &w.tally)
        .await
        .unwrap_err();
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn the_same_id_delivered_three_times_is_sent_once() {
    let w = world();
    let (n, _) = sample(Kind::LicenseIssued);
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(w.notifier.deliver(&n, &w.tally).await.unwrap());
    }
    assert!(matches!(outcomes[0], Outcome::Sent { .. }));
    assert_eq!(&outcomes[1..], &[Outcome::Duplicate, Outcome::Duplicate]);
    assert_eq!(w.mailer.sent().len(), 1);
    assert_eq!(w.tally.get("NotificationsDuplicate"), Some(2.0));
    // The same id with other data (a producer's retry that re-read something) is still the
    // same notification.
    let again = n.clone().with("seats", 26);
    assert_eq!(
        w.notifier.deliver(&again, &w.tally).await.unwrap(),
        Outcome::Duplicate
    );
    assert_eq!(w.mailer.sent().len(), 1);
}

#[tokio::test]
async fn concurrent_deliveries_of_one_id_send_one_mail() {
    let w = world();
    w.mailer.set_delay(Duration::from_millis(30));
    let (n, _) = sample(Kind::LicenseIssued);
    let results = futures::future::join_all((0..3).map(|_| w.notifier.deliver(&n, &w.tally))).await;
    let sent = results
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Sent { .. })))
        .count();
    assert_eq!(sent, 1, "{results:?}");
    // The others were told to come back (retryable): SQS redelivers them, as duplicates.
    for r in results.iter().filter(|r| r.is_err()) {
        let e = r.as_ref().unwrap_err();
        assert!(matches!(e, Error::InProgress(_)) && e.is_retryable(), "{e}");
        assert_eq!(
            w.notifier.deliver(&n, &w.tally).await.unwrap(),
            Outcome::Duplicate
        );
    }
    assert_eq!(w.mailer.sent().len(), 1);
}

#[tokio::test]
async fn a_person_who_opted_out_receives_transactional_mail_only() {
    let w = world();
    let ada = Email::parse(ADA).unwrap();
    let subject = w.subjects.key.subject(&ada);
    w.subjects
        .index
        .set_choice(
            &subject,
            &Choice {
                opted_out: true,
                at: NOW - 1000,
            },
        )
        .await
        .unwrap();
    let (license, _) = sample(Kind::LicenseIssued);
    let (news, _) = sample(Kind::ProductNews);
    assert!(matches!(
        w.notifier.deliver(&license, &w.tally).await.unwrap(),
        Outcome::Sent { .. }
    ));
    assert_eq!(
        w.notifier.deliver(&news, &w.tally).await.unwrap(),
        Outcome::Suppressed
    );
    // Suppressed once for all: a redelivery is a duplicate, not a second look-up.
    assert_eq!(
        w.notifier.deliver(&news, &w.tally).await.unwrap(),
        Outcome::Duplicate
    );
    assert_eq!(w.tally.get("NotificationsSuppressed"), Some(1.0));
    let sent = w.mailer.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].subject.contains("license"));
    // A later choice to hear from us again stands; someone else was never opted out.
    w.subjects
        .index
        .set_choice(
            &subject,
            &Choice {
                opted_out: false,
                at: NOW,
            },
        )
        .await
        .unwrap();
    let mut news2 = news.clone();
    news2.id = "news:2".into();
    assert!(matches!(
        w.notifier.deliver(&news2, &w.tally).await.unwrap(),
        Outcome::Sent { .. }
    ));
    let to_bob = Notification::to_address("news:bob", Kind::ProductNews, "bob@example.com")
        .with("headline", "Hi")
        .with("summary", "News.");
    assert!(matches!(
        w.notifier.deliver(&to_bob, &w.tally).await.unwrap(),
        Outcome::Sent { .. }
    ));
    assert_eq!(w.mailer.sent().len(), 3);
}

#[tokio::test]
async fn ses_throttled_twice_then_sent() {
    let w = world();
    w.mailer.throttle(2);
    let (n, _) = sample(Kind::InvoiceAvailable);
    assert!(matches!(
        w.notifier.deliver(&n, &w.tally).await.unwrap(),
        Outcome::Sent { .. }
    ));
    assert_eq!(w.mailer.attempts(), 3);
    assert_eq!(w.mailer.sent().len(), 1);
}

#[tokio::test]
async fn persistent_throttling_is_retryable_and_the_next_delivery_sends() {
    let w = world();
    w.mailer.throttle(100);
    let (n, _) = sample(Kind::PaymentFailed);
    let e = w.notifier.deliver(&n, &w.tally).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(w.mailer.attempts(), 4, "RetryPolicy::immediate(4)");
    assert!(w.mailer.sent().is_empty());
    // The claim was released: SQS's next delivery, once SES accepts again, sends it.
    w.mailer.throttle(0);
    assert!(matches!(
        w.notifier.deliver(&n, &w.tally).await.unwrap(),
        Outcome::Sent { .. }
    ));
    assert_eq!(w.mailer.sent().len(), 1);
}

#[tokio::test]
async fn links_are_signed_at_send_time_expire_and_stay_in_their_folder() {
    let w = world();
    let (n, _) = sample(Kind::LicenseIssued);
    w.notifier.deliver(&n, &w.tally).await.unwrap();
    let mail = w.mailer.sent().pop().unwrap();
    let link = "memory://licenses/cus_1/lic_1.mattermost-license?expires_in=259200";
    assert!(mail.text.contains(link), "{}", mail.text);
    assert!(
        mail.html
            .contains("href=\"memory:&#x2f;&#x2f;licenses&#x2f;cus_1"),
        "{}",
        mail.html
    );
    assert!(
        mail.text
            .contains("The link works until 5 March 2026, 10:00 UTC"),
        "{}",
        mail.text
    );
    let (invoice, _) = sample(Kind::InvoiceAvailable);
    w.notifier.deliver(&invoice, &w.tally).await.unwrap();
    let mail = w.mailer.sent().pop().unwrap();
    assert!(
        mail.text
            .contains("memory://invoices/cus_1/2026-02.html?expires_in=259200")
    );
    assert!(
        mail.text
            .contains("PDF: memory://invoices/cus_1/2026-02.pdf?expires_in=")
    );
    // An object outside its folder, or another customer's, is never linked.
    for (field, key) in [
        ("file_key", "raw/stripe/2026/03/02/evt_1.json"),
        ("file_key", "licenses/cus_2/lic_9.mattermost-license"),
        ("html_key", "invoices/cus_1/../cus_2/2026-02.html"),
        ("bundle_key", "licenses/cus_1/lic_1.mattermost-license"),
    ] {
        let mut bad = n.clone().with(field, key);
        bad.id = format!("bad:{key}");
        let e = w.notifier.deliver(&bad, &w.tally).await.unwrap_err();
        assert!(!e.is_retryable() && e.to_string().contains(field), "{e}");
    }
    let mut js = sample(Kind::PaymentFailed)
        .0
        .with("pay_url", "javascript:alert(1)");
    js.id = "bad:js".into();
    let e = w.notifier.deliver(&js, &w.tally).await.unwrap_err();
    assert!(
        e.to_string().contains("pay_url is not an http(s) link"),
        "{e}"
    );
    assert_eq!(w.mailer.sent().len(), 2);
}

#[tokio::test]
async fn a_value_the_template_needs_and_the_message_lacks_fails_naming_it() {
    let w = world();
    let n = Notification::to_customer("lic:missing", Kind::LicenseIssued, "cus_1")
        .with("sku", "professional")
        .with("seats", 5)
        .with("expires_at", "2027-01-01");
    let e = w.notifier.deliver(&n, &w.tally).await.unwrap_err();
    let text = e.to_string();
    assert!(!e.is_retryable());
    assert!(
        text.contains("license.issued") && text.contains("license_id"),
        "{text}"
    );
    let bad_money = sample(Kind::PaymentFailed).0.with("amount_due", 4900);
    let mut bad_money = bad_money;
    bad_money.id = "bad:money".into();
    let e = w.notifier.deliver(&bad_money, &w.tally).await.unwrap_err();
    assert!(e.to_string().contains("money needs"), "{e}");
    assert!(w.mailer.sent().is_empty());
}

#[tokio::test]
async fn a_null_amount_link_or_date_leaves_its_sentence_out() {
    let w = world();
    let nulls = |kind: Kind, id: &str| {
        let mut n = sample(kind).0;
        n.id = id.into();
        for field in ["amount_due", "pay_url", "suspend_on", "cancel_on"] {
            if n.data.contains_key(field) {
                n.data.insert(field.into(), Value::Null);
            }
        }
        n
    };
    for (kind, left_out) in [
        (Kind::PaymentFailed, "pay online"),
        (Kind::DunningReminder, "will be suspended"),
        (Kind::Suspended, "will be cancelled"),
        (Kind::PaymentMethodMissing, "USD"),
    ] {
        let n = nulls(kind, &format!("null:{}", kind.as_str()));
        w.notifier.deliver(&n, &w.tally).await.unwrap();
        let mail = w.mailer.sent().pop().unwrap();
        for body in [&mail.text, &mail.html] {
            assert!(!body.contains(left_out), "{}: {body}", kind.as_str());
            assert!(!body.contains("none"), "{}: {body}", kind.as_str());
            assert!(body.contains("in_1"), "{}: {body}", kind.as_str());
        }
    }
    let one = Notification::to_customer("cancel:one", Kind::CancelledForNonPayment, "cus_1")
        .with("subscription", "sub_9")
        .with("invoice", "in_9");
    w.notifier.deliver(&one, &w.tally).await.unwrap();
    assert!(
        w.mailer
            .sent()
            .pop()
            .unwrap()
            .text
            .contains("subscription sub_9 was")
    );
}

#[tokio::test]
async fn older_producers_sub_types_render_as_their_kind() {
    let w = world();
    let mut health = sample(Kind::CustomerHealth).0;
    health.kind = "customer.health.score_dropped".into();
    health.data.remove("warning");
    let mut deadline = sample(Kind::PrivacyDeadline).0;
    deadline.kind = "privacy.request.due_soon".into();
    deadline.data.remove("urgency");
    for n in [&health, &deadline] {
        w.notifier.deliver(n, &w.tally).await.unwrap();
    }
    let sent = w.mailer.sent();
    assert!(
        sent[0].subject.ends_with("lost health points"),
        "{}",
        sent[0].subject
    );
    assert!(
        sent[1].subject.contains("is due soon"),
        "{}",
        sent[1].subject
    );
    assert!(sent.iter().all(|m| m.to.as_str() == OPS));
}

#[test]
fn a_queued_notification_naming_a_person_is_found_by_the_privacy_sweep() {
    // QueueSweep finds a person's messages at rest by the addresses in them: the `to` of a
    // privacy completion is one.
    let key = crate::subjects::SubjectKey::for_tests();
    let ada = Email::parse(ADA).unwrap();
    let n = Notification::to_address("privacy:pr_1:closed", Kind::PrivacyCompleted, ADA)
        .with("request_id", "pr_1");
    assert!(key.mentions(&body(&n), &key.subject(&ada)));
    let other = Email::parse("bob@example.com").unwrap();
    assert!(!key.mentions(&body(&n), &key.subject(&other)));
}
