//! `Stripe-Signature` verification of a header with a body, as webhook-intake does it.
//!
//! Input: the header value, a newline, the raw body. Checked at the samples' clock with the
//! local secret and a rolled one. Beyond "no panic":
//! - an accepted delivery really carries a `v1` that is the HMAC of `{t}.{body}` under one of
//!   the secrets, with `t` within the tolerance;
//! - a header Stripe would send for this body verifies, and the same header never verifies
//!   another body, nor the body under another secret.
#![no_main]

use blapi::config::Secret;
use blapi::webhook::{SignatureError, StripeVerifier, envelope, stripe_scheme};
use blapi_fuzz::{NOW, STRIPE_SECRETS, TOLERANCE_SECS, lines, tampered};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static VERIFIER: LazyLock<StripeVerifier> = LazyLock::new(|| {
    let secrets: Vec<Secret<String>> = STRIPE_SECRETS
        .iter()
        .map(|s| Secret::new((*s).to_owned()))
        .collect();
    StripeVerifier::new(&secrets)
});

/// The `v1` values of a header, decoded (independently of the scheme's own parser).
fn v1_signatures(header: &str) -> Vec<Vec<u8>> {
    header
        .split(',')
        .filter_map(|item| item.split_once('='))
        .filter(|(k, _)| k.trim() == "v1")
        .filter_map(|(_, v)| hex::decode(v.trim()).ok())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let (header, body) = lines(data, 1);
    // Header values reach the scheme as text (the HTTP layer refuses other bytes).
    let Some(header) = header.first().and_then(|h| std::str::from_utf8(h).ok()) else {
        return;
    };

    match VERIFIER.verify(Some(header), body, NOW, TOLERANCE_SECS) {
        Ok(t) => {
            assert!((t - NOW).unsigned_abs() <= TOLERANCE_SECS, "accepted t={t}");
            let sent = v1_signatures(header);
            let genuine = STRIPE_SECRETS.iter().any(|secret| {
                let expected =
                    hex::decode(stripe_scheme::sign(secret, t, body)).unwrap_or_default();
                sent.contains(&expected)
            });
            assert!(genuine, "accepted a header with no v1 of this body");
            // The same timestamp, signed for another body: refused for this one.
            let for_other = stripe_scheme::header(&STRIPE_SECRETS, t, &tampered(body));
            assert_eq!(
                VERIFIER.verify(Some(&for_other), body, NOW, TOLERANCE_SECS),
                Err(SignatureError::Mismatch)
            );
            // What intake does next with a verified body.
            let _ = envelope::parse_stripe(body);
        }
        Err(SignatureError::Mismatch) => {}
        Err(other) => {
            let _ = other.reason();
        }
    }

    // What Stripe sends for this body (both secrets during a roll) verifies ...
    let t = NOW - i64::from(body.len() as u8);
    let genuine = stripe_scheme::header(&STRIPE_SECRETS, t, body);
    assert_eq!(
        VERIFIER.verify(Some(&genuine), body, NOW, TOLERANCE_SECS),
        Ok(t)
    );
    // ... and never for another body ...
    let other = tampered(body);
    assert_eq!(
        VERIFIER.verify(Some(&genuine), &other, NOW, TOLERANCE_SECS),
        Err(SignatureError::Mismatch)
    );
    // ... nor when signed with a secret we do not hold.
    let foreign = stripe_scheme::header(&["whsec_not_ours"], t, body);
    assert_eq!(
        VERIFIER.verify(Some(&foreign), body, NOW, TOLERANCE_SECS),
        Err(SignatureError::Mismatch)
    );
});
