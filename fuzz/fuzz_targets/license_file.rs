//! The Mattermost license file: its parser ([`split_file`]), the offline verifier
//! ([`verify_license`], [`verify_license_with_keys`]), the published key set and the signed
//! revocation list.
//!
//! One fixed RSA-2048 key (derived from a constant seed, so runs are reproducible) signs one
//! license and one revocation list at start-up. The first input byte picks a mode:
//! - 0: the rest is a license file. Only the file signed here may verify, and then to exactly
//!   its license;
//! - 1: the signed file with bytes changed (triples of position and XOR mask after a count of
//!   trailing NULs to append, which Mattermost strips): it verifies if and only if no byte
//!   changed;
//! - 2: the rest is a key set document: it survives its JSON round trip, and the signed file
//!   verifies against it only when it holds this key with a window around the issue time;
//! - 3: the rest is a revocation list document: only the signed one verifies with the signature
//!   made for it; read unsigned, it revokes the license exactly when it lists its id at or
//!   before the clock.
//!
//! In modes 2 and 3, `$PEM`, `$KID` and `$ID` in the document stand for this key's PEM (JSON
//! escaped), its key id and the license's id, so documents that name them are reachable.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use blapi::licensing::format::encode_file;
use blapi::licensing::{
    Features, InProcessSigner, KeySet, License, LicenseCustomer, LicenseKey, RevocationList,
    RevocationReason, RevokedLicense, VerifyError, split_file, verify_license,
    verify_license_with_keys, verify_revocation_list, verify_revocation_list_with_keys,
};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use std::sync::LazyLock;

const ISSUED_AT: i64 = 1_780_000_000_123;
const NOW_MS: i64 = ISSUED_AT + 24 * 3600 * 1000;

struct Fixture {
    signer: InProcessSigner,
    license: License,
    json: Vec<u8>,
    /// The license file: base64 of JSON ‖ signature.
    file: String,
    /// JSON ‖ signature.
    raw: Vec<u8>,
    keys: KeySet,
    list_json: Vec<u8>,
    list_sig: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let mut rng = ChaCha20Rng::seed_from_u64(0x006c_6963_656e_7365);
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("key generation");
    let signer = InProcessSigner::from_key(key).expect("a signer");
    let pk = signer.public();
    let id = LicenseKey {
        subscription_id: "sub_fuzz".into(),
        period_start_ms: ISSUED_AT - 123,
        quantity: 5,
        sku: "professional".into(),
        supersedes: None,
    }
    .license_id();
    let license = License {
        id,
        issued_at: ISSUED_AT,
        starts_at: ISSUED_AT - 123,
        expires_at: ISSUED_AT + 30 * 24 * 3600 * 1000,
        customer: LicenseCustomer {
            id: "cus_fuzz".into(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            company: "Analytical Engines".into(),
        },
        features: Features {
            users: 5,
            ldap: true,
            ..Features::default()
        },
        sku_name: "Professional".into(),
        sku_short_name: "professional".into(),
        is_trial: false,
        is_gov_sku: false,
        is_seat_count_enforced: true,
        extra_users: 0,
        signup_jwt: None,
        kid: pk.kid().to_owned(),
        subscription_id: "sub_fuzz".into(),
        supersedes: None,
    };
    let json = license.to_json().expect("license JSON");
    let sig = signer.sign_now(&json).expect("signing");
    let file = encode_file(&json, &sig);
    let mut raw = json.clone();
    raw.extend_from_slice(&sig);
    let mut keys = KeySet::default();
    keys.add(pk, ISSUED_AT - 3_600_000).expect("a key set");
    let other = RevokedLicense {
        id: LicenseKey {
            subscription_id: "sub_other".into(),
            period_start_ms: 0,
            quantity: 1,
            sku: "professional".into(),
            supersedes: None,
        }
        .license_id(),
        customer_id: "cus_other".into(),
        subscription_id: "sub_other".into(),
        revoked_at: ISSUED_AT,
        reason: RevocationReason::Refunded,
    };
    let list = RevocationList::new(pk.kid(), ISSUED_AT, vec![other]);
    let list_json = serde_json::to_vec(&list).expect("list JSON");
    let list_sig = STANDARD.encode(signer.sign_now(&list_json).expect("signing"));
    Fixture {
        signer,
        license,
        json,
        file,
        raw,
        keys,
        list_json,
        list_sig,
    }
});

fn file_of_text(f: &Fixture, file: &str) {
    if let Ok((json, sig)) = split_file(file) {
        assert_eq!(sig.len(), 256);
        assert!(!json.is_empty());
    }
    let pk = f.signer.public();
    for result in [
        verify_license(file, pk, None, NOW_MS),
        verify_license_with_keys(file, &f.keys, None, NOW_MS),
    ] {
        match result {
            Ok(license) => {
                assert_eq!(split_file(file).map(|(json, _)| json), Ok(f.json.clone()));
                assert_eq!(license, f.license);
            }
            Err(e) => {
                let _ = (e.code(), e.to_string());
            }
        }
    }
}

fn tampered_file(f: &Fixture, ops: &[u8]) {
    let mut raw = f.raw.clone();
    let zeros = ops.first().map_or(0, |n| n % 8);
    for patch in ops.get(1..).unwrap_or_default().chunks_exact(3) {
        let at = usize::from(u16::from_be_bytes([patch[0], patch[1]])) % raw.len();
        raw[at] ^= patch[2];
    }
    let unchanged = raw == f.raw;
    raw.extend(std::iter::repeat_n(0u8, usize::from(zeros)));
    let file = STANDARD.encode(&raw);
    let pk = f.signer.public();
    let result = verify_license(&file, pk, None, NOW_MS);
    if unchanged {
        assert_eq!(result.as_ref(), Ok(&f.license));
    } else {
        assert!(result.is_err(), "a changed file verified");
    }
    let with_keys = verify_license_with_keys(&file, &f.keys, None, NOW_MS);
    assert_eq!(with_keys.is_ok(), unchanged);
}

/// The document with its placeholders filled in.
fn filled(f: &Fixture, doc: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(doc) else {
        return doc.to_vec();
    };
    if !text.contains('$') {
        return doc.to_vec();
    }
    let pem = f.signer.public().to_pem().expect("a PEM");
    let pem = serde_json::to_string(&pem).expect("a JSON string");
    text.replace("$PEM", pem.trim_matches('"'))
        .replace("$KID", f.signer.public().kid())
        .replace("$ID", f.license.id.as_str())
        .into_bytes()
}

fn key_set(f: &Fixture, doc: &[u8]) {
    let doc = filled(f, doc);
    let Ok(set) = KeySet::from_json(&doc) else {
        return;
    };
    let text = set.to_json().expect("a key set serialises");
    assert_eq!(
        KeySet::from_json(&text).expect("a key set parses back"),
        set
    );
    let _ = set.current();
    let kid = f.signer.public().kid();
    match verify_license_with_keys(&f.file, &set, None, NOW_MS) {
        Ok(license) => {
            assert_eq!(license, f.license);
            let entry = set.find(kid).expect("verified by a key the set holds");
            assert!(entry.not_before.saturating_sub(5 * 60 * 1000) <= ISSUED_AT);
            assert!(
                entry
                    .not_after
                    .is_none_or(|t| ISSUED_AT <= t.saturating_add(5 * 60 * 1000))
            );
        }
        Err(e) => {
            let held = set.find(kid).is_some();
            assert!(
                matches!(
                    e,
                    VerifyError::UnknownKey { .. } | VerifyError::KeyNotValid { .. }
                ) || (held && matches!(e, VerifyError::Malformed(_))),
                "the signed file refused with {e:?}"
            );
        }
    }
}

fn revocation_list(f: &Fixture, doc: &[u8]) {
    let doc = &filled(f, doc)[..];
    let pk = f.signer.public();
    for result in [
        verify_revocation_list(doc, &f.list_sig, pk),
        verify_revocation_list_with_keys(doc, &f.list_sig, &f.keys),
    ] {
        if result.is_ok() {
            assert_eq!(doc, f.list_json.as_slice(), "an unsigned list verified");
        }
    }
    let Ok(list) = serde_json::from_slice::<RevocationList>(doc) else {
        return;
    };
    let listed = list
        .revoked
        .iter()
        .find(|e| e.id == f.license.id && e.revoked_at <= NOW_MS);
    let found = list.find(&f.license.id);
    match verify_license(&f.file, pk, Some(&list), NOW_MS) {
        Ok(license) => {
            assert_eq!(license, f.license);
            assert!(found.is_none_or(|e| e.revoked_at > NOW_MS));
        }
        Err(VerifyError::Revoked { .. } | VerifyError::Suspended { .. }) => {
            assert!(found.is_some_and(|e| e.revoked_at <= NOW_MS));
        }
        Err(e) => panic!("the signed file refused with {e:?}"),
    }
    // In a list sorted by id (as published) the entry is found whenever it is listed.
    let mut sorted = list.revoked.clone();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    if sorted == list.revoked && listed.is_some() {
        assert!(found.is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    let f: &Fixture = &FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Ok(file) = std::str::from_utf8(rest) {
                file_of_text(f, file);
            }
        }
        1 => tampered_file(f, rest),
        2 => key_set(f, rest),
        _ => revocation_list(f, rest),
    }
});
