//! Standard Webhooks verification (`webhook-id`, `webhook-timestamp`, `webhook-signature`)
//! of a delivery with its body, as webhook-intake does it for first-party sources.
//!
//! Input: three header lines (id, timestamp, signature; a missing line is a missing header),
//! then the raw body. Checked at the samples' clock against the portal's and telemetry's
//! local secrets. Beyond "no panic":
//! - an accepted delivery carries a `v1` that is the HMAC of `{id}.{t}.{body}` under one of
//!   the secrets, with `t` within the tolerance, and its id is the header's, trimmed;
//! - a signature made for this delivery verifies; the same signature never verifies another
//!   body, another id or another timestamp.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blapi::webhook::{SignatureError, StandardHeaders, StandardSecret, StandardVerifier, envelope};
use blapi_fuzz::{NOW, PORTAL_SECRET, TELEMETRY_SECRET, TOLERANCE_SECS, lines, tampered};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static SECRETS: LazyLock<Vec<StandardSecret>> = LazyLock::new(|| {
    [PORTAL_SECRET, TELEMETRY_SECRET]
        .iter()
        .map(|s| StandardSecret::parse(s).expect("the local secrets parse"))
        .collect()
});
static VERIFIER: LazyLock<StandardVerifier> =
    LazyLock::new(|| StandardVerifier::new(SECRETS.iter()));

/// The `v1` signatures of a header, decoded (independently of the scheme's own parser).
fn v1_signatures(header: &str) -> Vec<Vec<u8>> {
    header
        .split_ascii_whitespace()
        .filter_map(|e| e.split_once(','))
        .filter(|(v, _)| *v == "v1")
        .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
        .collect()
}

fn decoded(signature: &str) -> Vec<u8> {
    v1_signatures(signature).pop().unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = lines(data, 3);
    let mut text = Vec::with_capacity(3);
    for line in &head {
        match std::str::from_utf8(line) {
            Ok(s) => text.push(s),
            // Header values reach the scheme as text.
            Err(_) => return,
        }
    }
    let headers = StandardHeaders {
        id: text.first().copied(),
        timestamp: text.get(1).copied(),
        signature: text.get(2).copied(),
    };
    // The same parser reads configured secrets: it must refuse, not panic.
    if let Some(id) = headers.id {
        let _ = StandardSecret::parse(id);
    }

    match VERIFIER.verify(headers, body, NOW, TOLERANCE_SECS) {
        Ok((id, t)) => {
            assert!((t - NOW).unsigned_abs() <= TOLERANCE_SECS, "accepted t={t}");
            assert_eq!(Some(id), headers.id.map(str::trim));
            let sent = v1_signatures(headers.signature.unwrap_or_default());
            assert!(
                SECRETS
                    .iter()
                    .any(|s| sent.contains(&decoded(&s.sign(id, t, body)))),
                "accepted a header with no v1 of this delivery"
            );
            // What intake does next with a verified delivery.
            let _ = envelope::parse_standard(id, body);
            // The same id and timestamp, signed for another body: refused for this one.
            let for_other = SECRETS[0].sign(id, t, &tampered(body));
            let forged = StandardHeaders {
                signature: Some(&for_other),
                ..headers
            };
            assert_eq!(
                VERIFIER.verify(forged, body, NOW, TOLERANCE_SECS),
                Err(SignatureError::Mismatch)
            );
        }
        Err(e) => {
            let _ = e.reason();
        }
    }

    // A genuine delivery of this body (the id line as id when it is one) ...
    let id = headers
        .id
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("msg_fuzz");
    let t = NOW + i64::from(body.len() as u8) - 128;
    let ts = t.to_string();
    let signature = SECRETS[1].sign(id, t, body);
    let genuine = StandardHeaders {
        id: Some(id),
        timestamp: Some(&ts),
        signature: Some(&signature),
    };
    assert_eq!(
        VERIFIER.verify(genuine, body, NOW, TOLERANCE_SECS),
        Ok((id, t))
    );
    // ... is refused with another body, another id or another timestamp.
    assert_eq!(
        VERIFIER.verify(genuine, &tampered(body), NOW, TOLERANCE_SECS),
        Err(SignatureError::Mismatch)
    );
    let other_id = format!("{id}x");
    let moved = StandardHeaders {
        id: Some(&other_id),
        ..genuine
    };
    assert_eq!(
        VERIFIER.verify(moved, body, NOW, TOLERANCE_SECS),
        Err(SignatureError::Mismatch)
    );
    let later = (t + 1).to_string();
    let replayed = StandardHeaders {
        timestamp: Some(&later),
        ..genuine
    };
    assert_eq!(
        VERIFIER.verify(replayed, body, NOW, TOLERANCE_SECS),
        Err(SignatureError::Mismatch)
    );
});
