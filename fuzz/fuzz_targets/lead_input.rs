//! Lead input as lead-enrichment reads it: a lead-events queue message parsed as an
//! [`EventMessage`], then normalised into a [`Lead`] ([`parse_event`]).
//!
//! Input: the message body. Beyond "no panic", for every lead:
//! - its id is the one minted from the event (a redelivery yields the same lead);
//! - its e-mail is normalised (parsing it again gives it back) and its text fields are trimmed
//!   with single spaces, so two spellings of a person meet in one record;
//! - it survives the JSON round trip of the lead store.
#![no_main]

use blapi::leads::input::{Lead, LeadId, parse_event};
use blapi::queue::{EventMessage, QueueRecord};
use blapi::values::{Country, Email};
use libfuzzer_sys::fuzz_target;

fn tidy(field: &Option<String>) {
    if let Some(s) = field {
        assert!(!s.is_empty());
        assert_eq!(s, &s.split_whitespace().collect::<Vec<_>>().join(" "));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let record = QueueRecord {
        message_id: "m".into(),
        body: body.to_owned(),
        receive_count: 1,
        source_queue: None,
    };
    let Ok(msg) = record.json::<EventMessage>() else {
        return;
    };
    let lead = match parse_event(&msg) {
        Ok(lead) => lead,
        Err(e) => {
            let _ = blapi::Error::from(e).to_string();
            return;
        }
    };
    assert_eq!(lead.event_lead_id, LeadId::for_event(&msg.source, &msg.id));
    assert_eq!(lead.event_id, msg.id);
    let p = &lead.person;
    assert_eq!(Email::parse(p.email.as_str()).as_ref(), Ok(&p.email));
    if let Some(c) = p.country {
        assert_eq!(Country::parse(c.code()), Some(c));
    }
    assert!(p.country.is_none() || p.country_unmapped.is_none());
    for field in [
        &p.company,
        &p.country_unmapped,
        &p.phone,
        &p.job_title,
        &p.form,
        &p.product,
        &lead.stripe_customer,
    ] {
        tidy(field);
    }
    tidy(&p.name.first);
    tidy(&p.name.last);

    let text = serde_json::to_string(&lead).expect("a lead serialises");
    let back: Lead = serde_json::from_str(&text).expect("a stored lead parses back");
    assert_eq!(back, lead);
});
