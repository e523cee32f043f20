use super::auth::*;
use super::testkit::{KeyKind, TestIssuer, hmac_signed, now, unsigned};
use crate::error::{Error, Result};
use async_trait::async_trait;
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ISS: &str = "https://id.example.test/";
const AUD: &str = "blapi-portal";

/// A JWKS endpoint whose document the test changes (rotations), counting fetches, able to fail.
struct Provider {
    set: Mutex<JwkSet>,
    fetches: AtomicUsize,
    down: AtomicBool,
}

impl Provider {
    fn new(issuer: &TestIssuer) -> Arc<Self> {
        Arc::new(Self {
            set: Mutex::new(issuer.jwks()),
            fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        })
    }
    fn publish(&self, issuer: &TestIssuer) {
        *self.set.lock().unwrap() = issuer.jwks();
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeySource for Provider {
    async fn fetch(&self) -> Result<JwkSet> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::dependency("jwks", true, "connection refused"));
        }
        Ok(self.set.lock().unwrap().clone())
    }
}

fn verifier(provider: Arc<Provider>) -> TokenVerifier {
    TokenVerifier::new(AuthConfig::new(ISS, AUD), provider)
}

fn setup() -> (TestIssuer, Arc<Provider>, TokenVerifier) {
    let issuer = TestIssuer::new(ISS, AUD);
    let provider = Provider::new(&issuer);
    let v = verifier(provider.clone());
    (issuer, provider, v)
}

async fn refused(v: &TokenVerifier, token: &str) -> AuthError {
    match v.verify(token).await {
        Err(VerifyError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn with(mut claims: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    f(claims.as_object_mut().unwrap());
    claims
}

#[tokio::test]
async fn a_valid_customer_token_names_its_customer() {
    let (issuer, _, v) = setup();
    let p = v.verify(&issuer.customer_token("cus_A")).await.unwrap();
    assert_eq!(
        p,
        Principal::Customer {
            customer_id: "cus_A".into(),
            subject: "user|cus_A".into(),
            email: Some("owner+cus_a@example.com".into()),
        }
    );
    assert!(p.may_access("cus_A"));
    assert!(!p.may_access("cus_B"));
}

#[tokio::test]
async fn an_operator_token_may_act_for_any_customer() {
    let (issuer, _, v) = setup();
    let p = v.verify(&issuer.operator_token("staff-7")).await.unwrap();
    assert_eq!(
        p,
        Principal::Operator {
            operator_id: "staff-7".into()
        }
    );
    assert!(p.may_access("cus_A") && p.may_access("cus_B"));
    // The scope may also come as an `scp` list (Okta, Azure AD).
    let claims = with(issuer.operator_claims("staff-8", now()), |c| {
        c.remove("scope");
        c.insert("scp".into(), json!(["openid", "blapi:operator"]));
    });
    assert!(matches!(
        v.verify(&issuer.sign("k1", &claims)).await.unwrap(),
        Principal::Operator { .. }
    ));
    // A scope that merely contains the word is not the operator scope.
    let claims = with(issuer.operator_claims("staff-9", now()), |c| {
        c.insert("scope".into(), json!("blapi:operator-readonly"));
    });
    assert_eq!(
        refused(&v, &issuer.sign("k1", &claims)).await,
        AuthError::NoCustomer
    );
}

#[tokio::test]
async fn every_key_type_a_provider_publishes_verifies() {
    let (mut issuer, provider, v) = setup();
    issuer.add_key("ec", KeyKind::Es256);
    issuer.add_key("ed", KeyKind::EdDsa);
    provider.publish(&issuer);
    for kid in ["k1", "ec", "ed"] {
        let t = issuer.sign(kid, &issuer.customer_claims("cus_A", now()));
        assert!(v.verify(&t).await.is_ok(), "{kid}");
    }
}

#[tokio::test]
async fn a_missing_or_non_bearer_header_is_refused() {
    let (issuer, _, v) = setup();
    for h in [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer   "),
        Some("Basic dXNlcjpwdw=="),
    ] {
        match v.verify_header(h).await {
            Err(VerifyError::Refused(AuthError::Missing)) => {}
            other => panic!("{h:?}: {other:?}"),
        }
    }
    let t = issuer.customer_token("cus_A");
    assert!(v.verify_header(Some(&format!("bearer {t}"))).await.is_ok());
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let (issuer, _, v) = setup();
    let good = issuer.customer_token("cus_A");
    let parts: Vec<&str> = good.split('.').collect();
    for bad in [
        "x".to_string(),
        "a.b".into(),
        "a.b.c".into(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.!!!.{}", parts[0], parts[2]),
        format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
    ] {
        let e = refused(&v, &bad).await;
        assert!(
            matches!(e, AuthError::Malformed | AuthError::Signature),
            "{bad}: {e:?}"
        );
    }
    // Claims that are not JSON, or a `sub` missing or empty.
    let claims = with(issuer.customer_claims("cus_A", now()), |c| {
        c.remove("sub");
    });
    assert_eq!(
        refused(&v, &issuer.sign("k1", &claims)).await,
        AuthError::Malformed
    );
    let claims = with(issuer.customer_claims("cus_A", now()), |c| {
        c.insert("sub".into(), json!(""));
    });
    assert_eq!(
        refused(&v, &issuer.sign("k1", &claims)).await,
        AuthError::Malformed
    );
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway() {
    let (issuer, _, v) = setup();
    let t = now();
    // Expired 10 s ago: inside the 30 s leeway, accepted.
    let c = with(issuer.customer_claims("cus_A", t - 400), |c| {
        c.insert("exp".into(), json!(t - 10));
    });
    assert!(v.verify(&issuer.sign("k1", &c)).await.is_ok());
    // Expired 2 minutes ago.
    let c = with(issuer.customer_claims("cus_A", t - 400), |c| {
        c.insert("exp".into(), json!(t - 120));
    });
    assert_eq!(
        refused(&v, &issuer.sign("k1", &c)).await,
        AuthError::Expired
    );
    // No `exp` at all: never valid.
    let c = with(issuer.customer_claims("cus_A", t), |c| {
        c.remove("exp");
    });
    assert_eq!(
        refused(&v, &issuer.sign("k1", &c)).await,
        AuthError::Malformed
    );
    // Not valid for another 2 minutes; 10 s ahead is clock skew and accepted.
    let c = with(issuer.customer_claims("cus_A", t), |c| {
        c.insert("nbf".into(), json!(t + 120));
    });
    assert_eq!(
        refused(&v, &issuer.sign("k1", &c)).await,
        AuthError::NotYetValid
    );
    let c = with(issuer.customer_claims("cus_A", t), |c| {
        c.insert("nbf".into(), json!(t + 10));
    });
    assert!(v.verify(&issuer.sign("k1", &c)).await.is_ok());
}

#[tokio::test]
async fn another_issuer_or_audience_is_refused() {
    let (issuer, _, v) = setup();
    let c = with(issuer.customer_claims("cus_A", now()), |c| {
        c.insert("iss".into(), json!("https://evil.example.test/"));
    });
    assert_eq!(refused(&v, &issuer.sign("k1", &c)).await, AuthError::Issuer);
    let c = with(issuer.customer_claims("cus_A", now()), |c| {
        c.insert("aud".into(), json!("another-api"));
    });
    assert_eq!(
        refused(&v, &issuer.sign("k1", &c)).await,
        AuthError::Audience
    );
    // An audience list that includes ours is fine; one without it is not.
    let c = with(issuer.customer_claims("cus_A", now()), |c| {
        c.insert("aud".into(), json!(["another-api", AUD]));
    });
    assert!(v.verify(&issuer.sign("k1", &c)).await.is_ok());
    let c = with(issuer.customer_claims("cus_A", now()), |c| {
        c.remove("aud");
    });
    assert_eq!(
        refused(&v, &issuer.sign("k1", &c)).await,
        AuthError::Malformed
    );
}

#[tokio::test]
async fn alg_none_and_hmac_tokens_are_refused_before_any_key_is_used() {
    let (issuer, provider, v) = setup();
    let claims = issuer.customer_claims("cus_A", now());
    assert_eq!(refused(&v, &unsigned(&claims)).await, AuthError::Algorithm);
    // HS256 "signed" with the RSA key's public modulus as the secret: the classic confusion.
    let jwks = issuer.jwks_json();
    let n = jwks["keys"][0]["n"].as_str().unwrap().as_bytes().to_vec();
    assert_eq!(
        refused(&v, &hmac_signed("k1", &n, &claims)).await,
        AuthError::Algorithm
    );
    assert_eq!(provider.fetches(), 0, "no key was fetched for them");
    // A header claiming ES256 over an RSA key's signature.
    let t = issuer.sign_with_header("k1", &json!({"alg": "ES256", "kid": "k1"}), &claims);
    assert_eq!(refused(&v, &t).await, AuthError::Algorithm);
}

#[tokio::test]
async fn a_forged_or_altered_token_is_refused() {
    let (issuer, provider, v) = setup();
    // Another provider's key under the same kid.
    let other = TestIssuer::new(ISS, AUD);
    assert_eq!(
        refused(&v, &other.customer_token("cus_A")).await,
        AuthError::Signature
    );
    // A genuine token whose claims were changed to another customer.
    let t = issuer.customer_token("cus_A");
    let parts: Vec<&str> = t.split('.').collect();
    let forged_claims = issuer.customer_claims("cus_B", now());
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            forged_claims.to_string()
        ),
        parts[2]
    );
    assert_eq!(refused(&v, &forged).await, AuthError::Signature);
    // One flipped bit of the signature.
    let mut sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[2])
            .unwrap();
    sig[10] ^= 1;
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
    );
    assert_eq!(refused(&v, &flipped).await, AuthError::Signature);
    assert_eq!(
        provider.fetches(),
        1,
        "the JWKS was fetched once and cached"
    );
}

#[tokio::test]
async fn a_token_without_a_customer_is_refused() {
    let (issuer, _, v) = setup();
    for customer in [json!(null), json!(""), json!(42), json!(["cus_A"])] {
        let c = with(issuer.customer_claims("cus_A", now()), |c| {
            c.insert("customer_id".into(), customer.clone());
        });
        assert_eq!(
            refused(&v, &issuer.sign("k1", &c)).await,
            AuthError::NoCustomer,
            "{customer}"
        );
    }
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_unknown_kids_are_rate_limited() {
    let (mut issuer, provider, v) = setup();
    assert!(v.verify(&issuer.customer_token("cus_A")).await.is_ok());
    assert_eq!(provider.fetches(), 1);
    // The provider rotates: a new key, published; the cache lacks it, one refetch finds it.
    let fresh = TokenVerifier::new(
        AuthConfig {
            refresh_interval: Duration::ZERO,
            ..AuthConfig::new(ISS, AUD)
        },
        provider.clone(),
    );
    assert!(fresh.verify(&issuer.customer_token("cus_A")).await.is_ok());
    issuer.add_key("k2", KeyKind::Rs256);
    provider.publish(&issuer);
    let t2 = issuer.sign("k2", &issuer.customer_claims("cus_A", now()));
    let before = provider.fetches();
    assert!(fresh.verify(&t2).await.is_ok());
    assert_eq!(
        provider.fetches(),
        before + 1,
        "one refetch for the new kid"
    );
    assert!(fresh.verify(&t2).await.is_ok());
    assert!(fresh.verify(&issuer.customer_token("cus_A")).await.is_ok());
    assert_eq!(
        provider.fetches(),
        before + 1,
        "then cached, the old key too"
    );

    // With the default interval, a burst of made-up kids costs no fetch within the minute.
    let before = provider.fetches();
    for i in 0..50 {
        let t = issuer.sign_with_header(
            "k1",
            &json!({"alg": "RS256", "kid": format!("made-up-{i}")}),
            &issuer.customer_claims("cus_A", now()),
        );
        assert_eq!(refused(&v, &t).await, AuthError::UnknownKey);
    }
    assert_eq!(provider.fetches(), before, "rate limited");
    // And a token without a kid is refused without a fetch.
    let t = issuer.sign_with_header(
        "k1",
        &json!({"alg": "RS256"}),
        &issuer.customer_claims("cus_A", now()),
    );
    assert_eq!(refused(&v, &t).await, AuthError::UnknownKey);
}

#[tokio::test]
async fn a_retired_key_stops_verifying_after_the_refetch() {
    let (mut issuer, provider, _) = setup();
    let v = TokenVerifier::new(
        AuthConfig {
            refresh_interval: Duration::ZERO,
            ..AuthConfig::new(ISS, AUD)
        },
        provider.clone(),
    );
    let old = issuer.customer_token("cus_A");
    issuer.add_key("k2", KeyKind::Es256);
    issuer.remove_key("k1");
    provider.publish(&issuer);
    // A token of the new key makes the verifier refetch; the set no longer has k1.
    let new = issuer.sign("k2", &issuer.customer_claims("cus_A", now()));
    assert!(v.verify(&new).await.is_ok());
    assert_eq!(refused(&v, &old).await, AuthError::UnknownKey);
}

#[tokio::test]
async fn the_provider_down_is_unavailable_not_unauthorised() {
    let (issuer, provider, v) = setup();
    provider.down.store(true, Ordering::SeqCst);
    match v.verify(&issuer.customer_token("cus_A")).await {
        Err(VerifyError::KeysUnavailable(e)) => assert!(e.is_retryable()),
        other => panic!("{other:?}"),
    }
    // Back up: the next request fetches (a failed fetch does not start the rate limit).
    provider.down.store(false, Ordering::SeqCst);
    assert!(v.verify(&issuer.customer_token("cus_A")).await.is_ok());
}

#[tokio::test]
async fn refusals_never_quote_the_token_or_its_claims() {
    let (issuer, _, v) = setup();
    let c = with(issuer.customer_claims("cus_SECRET", now()), |c| {
        c.insert("aud".into(), json!("jane@example.com"));
    });
    let t = issuer.sign("k1", &c);
    let e = refused(&v, &t).await;
    assert_eq!(e.code(), "token-audience");
    let text = format!("{e} {e:?}");
    assert!(!text.contains("jane@example.com") && !text.contains("cus_SECRET"));
    assert!(!text.contains(&t[..20]));
}

#[tokio::test]
async fn a_jwks_with_unusable_entries_keeps_the_usable_ones() {
    let issuer = TestIssuer::new(ISS, AUD);
    let mut doc = issuer.jwks_json();
    let keys = doc["keys"].as_array_mut().unwrap();
    keys.push(json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": keys[0]["n"], "e": "AQAB"}));
    keys.push(json!({"kty": "oct", "kid": "sym", "k": "c2VjcmV0"}));
    keys.push(json!({"kty": "RSA", "n": keys[0]["n"], "e": "AQAB"}));
    let set: JwkSet = serde_json::from_value(doc).unwrap();
    let v = TokenVerifier::new(AuthConfig::new(ISS, AUD), Arc::new(StaticKeySource(set)));
    assert!(v.verify(&issuer.customer_token("cus_A")).await.is_ok());
    // A token naming the encryption key is not verified with it.
    let t = issuer.sign_with_header(
        "k1",
        &json!({"alg": "RS256", "kid": "enc"}),
        &issuer.customer_claims("cus_A", now()),
    );
    assert_eq!(refused(&v, &t).await, AuthError::UnknownKey);
}

#[test]
fn problems_are_rfc_9457_documents_with_stable_types() {
    use super::problem::Problem;
    let p: Problem = AuthError::Expired.into();
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["type"], "urn:blapi:problem:token-expired");
    assert_eq!(v["status"], 401);
    assert_eq!(v["title"], "Unauthorized");
    assert!(v.get("field").is_none());
    assert_eq!(p.code(), "token-expired");
    assert_eq!(
        p.headers(),
        vec![(
            "WWW-Authenticate",
            "Bearer error=\"invalid_token\", error_description=\"token-expired\"".to_string()
        )]
    );

    let down: Problem =
        VerifyError::KeysUnavailable(Error::dependency("jwks", true, "refused")).into();
    assert_eq!(down.status, 503);
    assert_eq!(down.headers(), vec![("Retry-After", "5".to_string())]);
    let text = serde_json::to_string(&down).unwrap();
    assert!(!text.contains("refused"), "no dependency message: {text}");

    let bad = Problem::invalid("seats", "seats must be 1 to 500");
    let v = serde_json::to_value(&bad).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["field"].as_str()),
        (Some(400), Some("seats"))
    );
    assert_eq!(
        Problem::method_not_allowed("GET, POST").headers(),
        vec![("Allow", "GET, POST".to_string())]
    );
    assert_eq!(Problem::not_found("license").status, 404);
    assert_eq!(Problem::too_large(65536).status, 413);
    assert_eq!(
        Problem::idempotency_conflict().code(),
        "idempotency-key-reused"
    );
}
