//! An identity provider for tests and benches (feature `test-issuer`): keys generated in the
//! process, a JWKS that publishes them, and tokens signed as a provider would sign them — or
//! broken in the ways a test needs (expired, another audience, `alg: none`, a forged
//! signature). Never part of a deployed function.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

/// The kind of signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rs256,
    Es256,
    EdDsa,
}

impl KeyKind {
    fn alg(self) -> &'static str {
        match self {
            KeyKind::Rs256 => "RS256",
            KeyKind::Es256 => "ES256",
            KeyKind::EdDsa => "EdDSA",
        }
    }
}

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

struct TestKey {
    kid: String,
    kind: KeyKind,
    signer: Signer,
}

/// A provider with one or more keys.
pub struct TestIssuer {
    pub issuer: String,
    pub audience: String,
    keys: Vec<TestKey>,
}

impl TestIssuer {
    /// A provider with one RS256 key `k1` (the common default of identity providers).
    pub fn new(issuer: &str, audience: &str) -> Self {
        let mut me = Self {
            issuer: issuer.into(),
            audience: audience.into(),
            keys: Vec::new(),
        };
        me.add_key("k1", KeyKind::Rs256);
        me
    }

    /// A fresh Ed25519 private key as PKCS#8 (a local provider keeps it to sign later).
    pub fn generate_ed25519_pkcs8() -> Vec<u8> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .expect("Ed25519 key generation")
            .as_ref()
            .to_vec()
    }

    /// A provider signing with one stored Ed25519 key (`pkcs8` from
    /// [`TestIssuer::generate_ed25519_pkcs8`]); `None` when the bytes are not such a key.
    pub fn from_ed25519_pkcs8(
        issuer: &str,
        audience: &str,
        kid: &str,
        pkcs8: &[u8],
    ) -> Option<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).ok()?;
        Some(Self {
            issuer: issuer.into(),
            audience: audience.into(),
            keys: vec![TestKey {
                kid: kid.into(),
                kind: KeyKind::EdDsa,
                signer: Signer::Ed(pair),
            }],
        })
    }

    /// The kid of the first key.
    pub fn kid(&self) -> &str {
        self.keys
            .first()
            .map(|k| k.kid.as_str())
            .unwrap_or_default()
    }

    /// Adds a freshly generated key (a rotation, or another algorithm).
    pub fn add_key(&mut self, kid: &str, kind: KeyKind) {
        let signer = match kind {
            KeyKind::Rs256 => Signer::Rsa(
                RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key generation"),
            ),
            KeyKind::Es256 => Signer::Ec(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .expect("P-256 key generation"),
            ),
            KeyKind::EdDsa => {
                Signer::Ed(Ed25519KeyPair::generate().expect("Ed25519 key generation"))
            }
        };
        self.keys.push(TestKey {
            kid: kid.into(),
            kind,
            signer,
        });
    }

    /// Stops publishing `kid` (a key the provider retired).
    pub fn remove_key(&mut self, kid: &str) {
        self.keys.retain(|k| k.kid != kid);
    }

    /// The JWKS document as the provider serves it.
    pub fn jwks_json(&self) -> Value {
        let keys: Vec<Value> = self.keys.iter().map(public_jwk).collect();
        json!({ "keys": keys })
    }

    /// The JWKS, parsed.
    pub fn jwks(&self) -> JwkSet {
        serde_json::from_value(self.jwks_json()).expect("a JWKS the issuer wrote parses")
    }

    /// Standard claims for a customer's signed-in person, valid for five minutes from `now`.
    pub fn customer_claims(&self, customer_id: &str, now: i64) -> Value {
        json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": format!("user|{customer_id}"),
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "customer_id": customer_id,
            "email": Self::email_of(customer_id),
            "email_verified": true,
        })
    }

    /// The signed-in person's address in [`TestIssuer::customer_claims`].
    pub fn email_of(customer_id: &str) -> String {
        format!("owner+{}@example.com", customer_id.to_ascii_lowercase())
    }

    /// Standard claims for support staff `operator_id`.
    pub fn operator_claims(&self, operator_id: &str, now: i64) -> Value {
        json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": operator_id,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "scope": "openid blapi:operator",
        })
    }

    /// A customer token signed by the first key, valid now.
    pub fn customer_token(&self, customer_id: &str) -> String {
        self.sign(&self.keys[0].kid, &self.customer_claims(customer_id, now()))
    }

    /// An operator token signed by the first key, valid now.
    pub fn operator_token(&self, operator_id: &str) -> String {
        self.sign(&self.keys[0].kid, &self.operator_claims(operator_id, now()))
    }

    /// `claims` signed by key `kid` with the header a provider writes.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let key = self.key(kid);
        self.sign_with_header(
            kid,
            &json!({"alg": key.kind.alg(), "typ": "JWT", "kid": kid}),
            claims,
        )
    }

    /// `claims` under any `header`, signed by key `kid` (the header may lie about the algorithm).
    pub fn sign_with_header(&self, kid: &str, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let key = self.key(kid);
        let sig = match &key.signer {
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .expect("RSA signing");
                sig
            }
            Signer::Ec(k) => k
                .sign(&SystemRandom::new(), input.as_bytes())
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
            Signer::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", B64.encode(sig))
    }

    fn key(&self, kid: &str) -> &TestKey {
        self.keys
            .iter()
            .find(|k| k.kid == kid)
            .unwrap_or_else(|| panic!("the test issuer has no key {kid}"))
    }
}

/// A token with no signature at all (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.",
        signing_input(&json!({"alg": "none", "typ": "JWT"}), claims)
    )
}

/// An HS256 token signed with `secret` (an API that accepted it would let anyone holding a
/// public key forge tokens).
pub fn hmac_signed(kid: &str, secret: &[u8], claims: &Value) -> String {
    use hmac::Mac;
    let input = signing_input(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}), claims);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

fn public_jwk(k: &TestKey) -> Value {
    match &k.signer {
        Signer::Rsa(pair) => {
            let c = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.kid,
                   "n": B64.encode(&c.n), "e": B64.encode(&c.e)})
        }
        Signer::Ec(pair) => {
            // Uncompressed point: 0x04 || x (32) || y (32).
            let p = pair.public_key().as_ref();
            json!({"kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": k.kid,
                   "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
        }
        Signer::Ed(pair) => {
            json!({"kty": "OKP", "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "kid": k.kid,
                   "x": B64.encode(pair.public_key().as_ref())})
        }
    }
}

/// The API's ports, every one in memory, with handles to look inside (tests and benches).
pub struct MemoryPorts {
    pub customers: std::sync::Arc<crate::customers::state::MemoryCustomers>,
    pub licenses: std::sync::Arc<crate::licensing::store::MemoryLicenseStore>,
    pub files: std::sync::Arc<crate::storage::MemoryStore>,
    pub billing: std::sync::Arc<crate::billing::memory::MemoryBilling>,
    pub stripe: std::sync::Arc<crate::stripe::MemoryStripe>,
    pub crm: std::sync::Arc<crate::crm::MemoryCrm>,
    pub ledger: std::sync::Arc<crate::ledger::MemoryLedger>,
    pub queue: std::sync::Arc<crate::queue::MemoryQueue>,
}

impl Default for MemoryPorts {
    fn default() -> Self {
        Self {
            customers: Default::default(),
            licenses: std::sync::Arc::new(crate::licensing::store::MemoryLicenseStore::new()),
            files: std::sync::Arc::new(crate::storage::MemoryStore::new()),
            billing: std::sync::Arc::new(crate::billing::memory::MemoryBilling::new()),
            stripe: std::sync::Arc::new(crate::stripe::MemoryStripe::new()),
            crm: std::sync::Arc::new(crate::crm::MemoryCrm::new()),
            ledger: std::sync::Arc::new(crate::ledger::MemoryLedger::new()),
            queue: std::sync::Arc::new(crate::queue::MemoryQueue::new()),
        }
    }
}

impl MemoryPorts {
    /// The API's ports over these stores, the embedded price book and the real clock.
    pub fn ports(&self) -> super::api::Ports {
        super::api::Ports {
            customers: self.customers.clone(),
            licenses: self.licenses.clone(),
            files: self.files.clone(),
            invoices: self.billing.clone(),
            dunning: self.billing.clone(),
            usage: self.billing.clone(),
            subscriptions: self.billing.clone(),
            credits: self.billing.clone(),
            book: std::sync::Arc::new(
                crate::billing::pricebook::PriceBook::embedded().expect("the embedded price book"),
            ),
            stripe: self.stripe.clone(),
            crm: self.crm.clone(),
            ledger: self.ledger.clone(),
            queue: self.queue.clone(),
            clock: std::sync::Arc::new(chrono::Utc::now),
        }
    }
}
