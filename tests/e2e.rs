//! The whole business flow, end to end, on a stack of its own: the functions run under
//! `cargo lambda watch` (each its own process behind the Lambda Runtime API, the intake
//! behind its Function URL) and the mapper feeds them from the template's queues. The
//! scenario is the one `make demo` plays; here its outcomes are asserted from the stores.

use blapi_system_tests::harness::Functions;
use blapi_system_tests::scenario::{World, run};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_business_flow_runs_end_to_end() {
    let stack = blapi_system_tests::fresh_stack().await;
    let logs = blapi_infra::repo_root().join("target/e2e");
    let mut functions = Functions::start(&stack, &logs)
        .await
        .expect("functions start");
    let world = World::new(&stack, &functions, &blapi_system_tests::localstripe_url())
        .await
        .unwrap();
    let quiet = |_: &str| {};
    let summary = match run(&world, &quiet).await {
        Ok(s) => s,
        Err(e) => panic!(
            "scenario failed: {e:#} (function logs in target/e2e/{}-watch.log)",
            stack.prefix
        ),
    };

    // One license for the subscription, valid offline, with the bought seats.
    assert_eq!(summary.licenses.len(), 1, "{:?}", summary.licenses);
    let license = &summary.licenses[0];
    assert!(license.signature_ok, "{license:?}");
    assert_eq!(license.seats, 5);
    assert_eq!(license.sku, "professional");
    assert_eq!(license.status, "ACTIVE");

    // The portal: the buyer's token sees her license (the exact signed file, valid offline),
    // her invoice and her usage priced exactly as billed; another customer sees none of it.
    let p = &summary.portal;
    assert_eq!(p.account["customer"], license.customer, "{:?}", p.account);
    assert_eq!(
        p.account["payment_method"]["last4"], "4242",
        "{:?}",
        p.account
    );
    assert_eq!(
        p.licenses["licenses"][0]["id"].as_str(),
        Some(license.id.as_str())
    );
    assert!(
        p.license_file_verified && p.license_file_matches_store,
        "{p:?}"
    );
    let period = summary.invoice.period.as_str();
    assert!(
        p.invoices["invoices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == period),
        "{:?}",
        p.invoices
    );
    assert_eq!(p.invoice["total"]["amount"], summary.invoice.artifact_total);
    assert!(
        p.invoice["links"]["html"].as_str().is_some(),
        "{:?}",
        p.invoice
    );
    assert_eq!(
        p.usage["total"]["amount"], summary.invoice.artifact_total,
        "usage to date is what the billing run charged: {:?}",
        p.usage
    );
    assert!(
        p.checkout["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{:?}",
        p.checkout
    );
    assert_eq!(p.seat_preview["action"], "apply", "{:?}", p.seat_preview);
    assert_eq!(p.seat_change["status"], "applied", "{:?}", p.seat_change);
    assert_eq!(p.seats_in_stripe, 6);
    assert!(
        p.seat_change_replayed,
        "the same Idempotency-Key replays the answer"
    );
    assert_eq!(
        p.large_change["status"], "sales_assisted",
        "{:?}",
        p.large_change
    );
    assert_eq!(p.opportunity["stage"], "Open", "{:?}", p.opportunity);
    assert_eq!(p.opportunity["record"]["seats"], 40, "{:?}", p.opportunity);
    assert_eq!(
        p.opportunity["record"]["owner_id"],
        owner_of_account(&summary),
        "the account owner"
    );
    for (what, status) in &p.other_customer {
        let allowed: &[u16] = if what.ends_with('s') { &[200] } else { &[404] };
        assert!(
            allowed.contains(status),
            "another customer's {what}: {status}"
        );
    }
    assert_eq!(p.without_token, 401);

    // Collections: the ladder's days, each step once, the suspension listed and refused
    // offline, the provisioner told, and payment reinstating with a fresh valid license.
    let d = &summary.dunning;
    let statuses: Vec<(i64, &str)> = d.statuses.iter().map(|(n, s)| (*n, s.as_str())).collect();
    assert_eq!(
        statuses,
        [
            (0, "past_due"),
            (1, "past_due"),
            (2, "past_due"),
            (3, "past_due"),
            (7, "past_due"),
            (14, "suspended")
        ]
    );
    let steps: Vec<serde_json::Value> = d
        .sweeps
        .iter()
        .map(|(_, a)| a["report"]["steps"].clone())
        .collect();
    assert_eq!(
        steps,
        [
            json!({"remind": 1}),
            json!({}),
            json!({"remind": 1}),
            json!({"remind": 1}),
            json!({"suspend": 1})
        ],
        "each step once, on its day: {:?}",
        d.sweeps
    );
    assert_eq!(d.listed_as, "suspended");
    assert_eq!(d.suspended_verdict, "refused: suspended");
    assert_eq!(d.provisioning, ["workspace.suspend", "workspace.resume"]);
    assert_eq!(d.status_after_payment, "active");
    assert_ne!(d.fresh_license, d.license);
    assert!(d.fresh_license_valid, "{d:?}");

    // Customer e-mail through SES: the license with a working link, the invoice with its
    // documents; the dunning customer hears every step once.
    let m = &summary.mail;
    assert!(m.license_link_works, "{:?}", m.buyer.subjects);
    assert!(
        m.invoice_html_link_works && m.invoice_pdf_link_works,
        "{:?}",
        m.buyer.subjects
    );
    let count = |inbox: &blapi_system_tests::scenario::Inbox, word: &str| {
        inbox
            .subjects
            .iter()
            .filter(|s| s.to_lowercase().contains(word))
            .count()
    };
    assert_eq!(count(&m.buyer, "license"), 1, "{:?}", m.buyer.subjects);
    assert_eq!(count(&m.buyer, "invoice"), 1, "{:?}", m.buyer.subjects);
    assert_eq!(
        m.dunning.subjects.len(),
        8,
        "license, payment failed, 3 reminders, suspended, reinstated, fresh license: {:?}",
        m.dunning.subjects
    );

    // Leads: each has an owner; the existing account's owner wins; free-mail is not enriched.
    assert_eq!(summary.leads.len(), 3);
    for lead in &summary.leads {
        assert!(!lead.owner.is_empty(), "{lead:?}");
    }
    let company = &summary.leads[0];
    assert_eq!(
        company.enriched_company.as_deref(),
        Some("Globex"),
        "{company:?}"
    );
    let freemail = &summary.leads[1];
    assert_eq!(freemail.enriched_company, None, "{freemail:?}");
    let existing = &summary.leads[2];
    assert_eq!(existing.owner, "owner-maria", "{existing:?}");

    // The buyer is one linked customer in the CRM: the account carries its owner, status,
    // license and invoice; the contact, the won opportunity and the converted lead point at
    // it; a later sign-up from the same company goes to the account's owner.
    let c = &summary.customer;
    assert_eq!(c.account["status"], "customer", "{c:?}");
    assert_eq!(c.account["name"], "Analytical Engines");
    assert_eq!(c.account["license_id"].as_str(), Some(license.id.as_str()));
    assert_eq!(c.account["domains"][0], "analytical-engines.example");
    let owner = c.account["owner_id"].as_str().unwrap();
    assert!(!owner.is_empty());
    assert_eq!(
        c.contact["account_external_id"].as_str(),
        Some(c.customer.as_str())
    );
    assert!(
        c.contact.get("email").is_none(),
        "no e-mail in the sink: {:?}",
        c.contact
    );
    assert_eq!(c.opportunity["stage"], "Closed Won", "{c:?}");
    assert_eq!(c.opportunity["seats"], 5);
    assert_eq!(c.opportunity["sku"], "professional");
    assert_eq!(
        c.opportunity["license_id"].as_str(),
        Some(license.id.as_str())
    );
    assert!(c.converted_lead.starts_with("ld_"), "{c:?}");
    assert_eq!(c.follow_up_owner, owner, "{c:?}");
    assert!(c.follow_up_reason.contains("existing account"), "{c:?}");
    // The day's revenue operations: the Cloud Pro subscription is worth its 5 seats at 15.00
    // a month (the price book's fixed charge; Stripe's plan is metered at 0), renews within
    // the 30-day window of a monthly term, and the customer is scored from its usage.
    let r = &summary.revenue;
    assert_eq!(r.snapshot["mrr"], 7_500, "{}", r.snapshot);
    assert_eq!(r.snapshot["arr"], 90_000);
    assert_eq!(r.snapshot["customers"]["paying"], 1);
    assert_eq!(r.snapshot["seats_licensed"], 5);
    assert_eq!(r.snapshot["renewal_pipeline"]["count"], 1);
    assert_eq!(r.plan["jobs"], 1, "{}", r.plan);
    assert!(r.report_bytes > 1_000, "the monthly report in S3");
    assert_eq!(r.renewal["stage"], "Open", "{}", r.renewal);
    assert_eq!(
        r.renewal["amount"],
        json!({"amount": 90_000, "currency": "usd"})
    );
    assert_eq!(r.renewal["owner_id"].as_str(), Some(owner));
    assert_eq!(r.health.band, "healthy", "{:?}", r.health);
    assert!(r.health.score.is_some_and(|s| s >= 70), "{:?}", r.health);
    assert_eq!(r.health.licensed_seats, Some(5));
    assert!(
        r.health.usage_summary.contains("api_calls"),
        "{:?}",
        r.health
    );

    // Replaying the day's Stripe events changes nothing.
    let p = &summary.replay;
    assert!(p.replayed >= 3 && p.messages >= p.replayed, "{p:?}");
    assert_eq!(p.licenses.0, p.licenses.1, "{p:?}");
    assert_eq!(p.invoices.0, p.invoices.1, "{p:?}");

    // Privacy: the buyer's access bundle holds her data from every system that has any; after
    // her erasure and a lead's, no address, name or unkeyed address hash of either is left in
    // any table item, object version or queued message, and replaying their archived events
    // as new deliveries brings nothing back.
    let pv = &summary.privacy;
    for s in [
        "stripe",
        "customers",
        "licenses",
        "billing",
        "crm",
        "archive",
        "leads",
    ] {
        assert!(
            pv.bundle["systems"]
                .get(s)
                .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty())),
            "{s} missing from the bundle: {}",
            pv.bundle["systems"]
        );
    }
    assert_eq!(pv.access["request"]["status"], "completed", "{}", pv.access);
    let (who, buyer) = &pv.erasures[0];
    assert_eq!(who, "buyer");
    assert_eq!(buyer["request"]["status"], "completed_with_exceptions");
    let kept: Vec<&str> = buyer["request"]["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "kept")
        .map(|e| e["system"].as_str().unwrap())
        .collect();
    for s in ["stripe", "licenses", "billing"] {
        assert!(kept.contains(&s), "{s} not kept: {kept:?}");
    }
    let (who, lead) = &pv.erasures[1];
    assert_eq!(who, "lead");
    assert_eq!(lead["request"]["status"], "completed", "{lead}");
    assert!(
        pv.leftovers.is_empty(),
        "left after erasure: {:#?}",
        pv.leftovers
    );
    assert!(pv.replayed >= 2, "{}", pv.replayed);
    assert!(
        pv.leftovers_after_replay.is_empty(),
        "back after the replay: {:#?}",
        pv.leftovers_after_replay
    );

    // One invoice: the same total on Stripe and in the artifact, equal to its lines.
    let inv = &summary.invoice;
    assert_eq!(inv.stripe_invoices, 1, "{inv:?}");
    assert_eq!(
        summary.customer.account["last_invoice_id"].as_str(),
        inv.stripe_invoice.as_deref(),
        "the account shows the invoice"
    );
    assert!(inv.artifact_total > 0, "{inv:?}");
    assert_eq!(inv.stripe_total, inv.artifact_total, "{inv:?}");
    assert_eq!(
        inv.lines.iter().map(|l| l.2).sum::<i64>(),
        inv.artifact_total,
        "{inv:?}"
    );

    // Usage was aggregated per metric as the price book says (sum, count, max, latest).
    let qty = |prefix: &str| {
        inv.lines
            .iter()
            .find(|l| l.0.starts_with(prefix))
            .map(|l| l.1.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("no {prefix} line in {:?}", inv.lines))
    };
    assert_eq!(
        qty("API calls"),
        "34350",
        "sum of 30 records of 1000 + 10 i"
    );
    assert_eq!(qty("Builds"), "10", "count");
    assert_eq!(qty("Peak nodes"), "7", "max");
    assert_eq!(qty("Configured capacity"), "8", "latest");
    assert_eq!(qty("Seats"), "5");

    // A redelivered event was accepted twice, archived once (its hour sealed), and changed
    // nothing downstream; only the poison message is parked, in its own DLQ.
    let r = &summary.redelivery;
    assert!(r.answers.iter().all(|a| a["received"] == true), "{r:?}");
    assert_eq!(r.archived_lines, 1, "{r:?}");
    assert_eq!(r.licenses.0, r.licenses.1, "{r:?}");
    assert_eq!(summary.dlq.len(), 1, "{:?}", summary.dlq);
    assert_eq!(summary.dlq[0].0, "LicenseRequestsDLQ");
    assert_eq!(summary.dlq[0].1, 1);

    // A rerun of the period changes nothing: still one invoice with the same total.
    world
        .invoke(
            "usage-billing",
            &json!({"action": "plan", "period": inv.period, "close_early": true}),
        )
        .await
        .unwrap();
    let rerun = world
        .invoke(
            "usage-billing",
            &json!({"action": "bill", "customer": inv.customer, "period": inv.period}),
        )
        .await
        .unwrap();
    assert!(rerun.to_string().contains(&inv.customer), "{rerun}");
    // Let the rerun's plan and bill jobs drain, then count again.
    world
        .settle(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let after = world
        .stripe_invoices(&inv.customer, &inv.period)
        .await
        .unwrap();
    assert_eq!(
        after.len(),
        1,
        "a rerun never makes a second invoice: {after:?}"
    );
    assert_eq!(after[0]["total"].as_i64(), Some(inv.stripe_total));

    portal_api_conforms_to_its_openapi_document(&stack, &functions, &world).await;

    let counters = functions.stop_mapper().await.unwrap();
    assert!(counters.invocations > 0);
}

/// The owner customer-sync gave the buyer's account.
fn owner_of_account(summary: &blapi_system_tests::scenario::Summary) -> serde_json::Value {
    summary.customer.account["owner_id"].clone()
}

/// The portal API against its OpenAPI document: schemathesis generates requests from the
/// document (valid and invalid), sends them to portal-api under `cargo lambda watch`, and
/// checks every answer — no 5xx, every status, header, content type and body as documented,
/// invalid input refused. Business rules the schema cannot state (an unknown SKU, a future
/// month) are 400s by design, so `positive_data_acceptance` is left out. The local Function
/// URL emulator answers 500 itself, before the function, for a body that is not UTF-8 or a
/// header byte outside ASCII: `infra/schemathesis_hooks.py` drops exactly those failures. The
/// coverage phase is left out: on this Python it trips a CPython AST
/// recursion check inside hypothesis ("AST constructor recursion depth mismatch"), an error of
/// the tool, not a finding. A fixed seed keeps a finding reproducible (`st replay`).
///
/// It runs after the scenario, on its stack: its customer's Stripe events reach the stack that
/// registered localstripe's webhook, so running beside the scenario would change its figures.
async fn portal_api_conforms_to_its_openapi_document(
    stack: &blapi_system_tests::LocalStack,
    functions: &Functions,
    world: &World<'_>,
) {
    let root = blapi_infra::repo_root();
    let (_, subscription, token) = blapi_system_tests::scenario::fuzz_subject(world)
        .await
        .expect("a customer of its own on localstripe");
    let work = root.join("target/schemathesis");
    std::fs::create_dir_all(&work).expect("target/schemathesis");
    let out = tokio::process::Command::new(root.join(".venv/bin/schemathesis"))
        .current_dir(&work)
        .env("PORTAL_SUBSCRIPTION", &subscription)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", root.join("infra"))
        .args(["--config-file"])
        .arg(root.join("infra/schemathesis.toml"))
        .arg("run")
        .arg(root.join("docs/portal-api.openapi.yaml"))
        .args(["--url", &functions.url("portal-api", "")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args([
            "--max-examples",
            "25",
            "--seed",
            "20261203",
            "--workers",
            "2",
        ])
        .args(["--phases", "examples,fuzzing,stateful"])
        .output()
        .await
        .expect("schemathesis runs (make setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems (function logs in target/e2e/{}-watch.log):\n{text}\n{}",
        stack.prefix,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Tested: 11"),
        "every operation was tested:\n{text}"
    );
}
