//! The signature checks of `jsonwebtoken` on `ring`, the crypto library TLS already links.
//!
//! `jsonwebtoken` 10 ships two crypto back ends, aws-lc-rs and RustCrypto, and takes any other
//! through its [`CryptoProvider`]. The functions' TLS runs on ring (smaller, and no C build of
//! aws-lc; see `bench/README.md`), so the portal verifies tokens on ring too rather than link a
//! second crypto library for five algorithms. [`install`] makes this provider the process
//! default before the first token is checked.
//!
//! Verification only: the API never signs a token (the test issuer signs its own, with
//! aws-lc-rs, in tests). The checks are those of the crate's aws-lc-rs back end, on the same
//! ring primitives jsonwebtoken 9 used: RSA PKCS#1 v1.5 and PSS with 2048–8192-bit keys, ECDSA
//! P-256 and P-384 (fixed-width signatures), Ed25519 and HMAC; a key of another family than the
//! algorithm's is an `InvalidKeyFormat`, a signature that does not verify an
//! `InvalidSignature`, as before.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature as sig;

/// The provider: ring verifiers, no signers.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components,
        extract_ec_public_key_coordinates,
        compute_digest,
    },
};

/// Makes [`PROVIDER`] the process default of `jsonwebtoken` (once; later calls, or a provider
/// installed before, leave it as it is).
pub fn install() {
    let _ = PROVIDER.install_default();
}

fn family(alg: Algorithm) -> AlgorithmFamily {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => AlgorithmFamily::Hmac,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => AlgorithmFamily::Rsa,
        Algorithm::ES256 | Algorithm::ES384 => AlgorithmFamily::Ec,
        Algorithm::EdDSA => AlgorithmFamily::Ed,
    }
}

fn new_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(ErrorKind::Provider("this provider verifies tokens only".into()).into())
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if key.family() != family(*alg) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.clone(),
    }))
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        verify(self.alg, &self.key, msg, signature).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn verify(
    alg: Algorithm,
    key: &DecodingKey,
    msg: &[u8],
    signature: &[u8],
) -> Result<(), ring::error::Unspecified> {
    let rsa = |params: &'static sig::RsaParameters| match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => {
            sig::UnparsedPublicKey::new(params, der).verify(msg, signature)
        }
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
        }
    };
    let public = |alg: &'static dyn sig::VerificationAlgorithm| match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => {
            sig::UnparsedPublicKey::new(alg, bytes).verify(msg, signature)
        }
        DecodingKeyKind::RsaModulusExponent { .. } => Err(ring::error::Unspecified),
    };
    let hmac = |alg: ring::hmac::Algorithm| match key.kind() {
        DecodingKeyKind::SecretOrDer(secret) => {
            ring::hmac::verify(&ring::hmac::Key::new(alg, secret), msg, signature)
        }
        DecodingKeyKind::RsaModulusExponent { .. } => Err(ring::error::Unspecified),
    };
    match alg {
        Algorithm::RS256 => rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => rsa(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => rsa(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => rsa(&sig::RSA_PSS_2048_8192_SHA512),
        Algorithm::ES256 => public(&sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => public(&sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => public(&sig::ED25519),
        Algorithm::HS256 => hmac(ring::hmac::HMAC_SHA256),
        Algorithm::HS384 => hmac(ring::hmac::HMAC_SHA384),
        Algorithm::HS512 => hmac(ring::hmac::HMAC_SHA512),
    }
}

/// (n, e) of an RSA private key (PKCS#1 DER), for a JWK made from an encoding key.
fn extract_rsa_public_key_components(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    use ring::signature::KeyPair;
    let pair = sig::RsaKeyPair::from_der(der)
        .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string())))?;
    let public = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    Ok((public.n, public.e))
}

/// The curve and (x, y) of an EC private key (PKCS#8), for a JWK made from an encoding key.
fn extract_ec_public_key_coordinates(
    pkcs8: &[u8],
    alg: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    use ring::signature::KeyPair;
    let (signing, curve, len) = match alg {
        Algorithm::ES256 => (
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            EllipticCurve::P256,
            32,
        ),
        Algorithm::ES384 => (
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            EllipticCurve::P384,
            48,
        ),
        _ => return Err(ErrorKind::InvalidEcdsaKey.into()),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8, &ring::rand::SystemRandom::new())
        .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
    let point = pair.public_key().as_ref();
    if point.first() != Some(&4) || point.len() != 1 + 2 * len {
        return Err(ErrorKind::InvalidEcdsaKey.into());
    }
    let (x, y) = point[1..].split_at(len);
    Ok((curve, x.to_vec(), y.to_vec()))
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Vec<u8> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
    };
    ring::digest::digest(alg, data).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self as lc, KeyPair as _};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    fn verify_with(alg: Algorithm, key: &DecodingKey, msg: &[u8], signature: &[u8]) -> bool {
        new_verifier(&alg, key)
            .expect("verifier")
            .verify(msg, &signature.to_vec())
            .is_ok()
    }

    #[test]
    fn verifies_what_aws_lc_signs_and_refuses_the_rest() {
        let msg = b"header.payload";
        let rng = SystemRandom::new();

        // RS256 and PS256, key given as a JWK would give it (n, e).
        let rsa = lc::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let components = lc::RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
        let key = DecodingKey::from_rsa_components(
            &B64.encode(&components.n),
            &B64.encode(&components.e),
        )
        .unwrap();
        for (alg, encoding) in [
            (
                Algorithm::RS256,
                &lc::RSA_PKCS1_SHA256 as &'static dyn lc::RsaEncoding,
            ),
            (Algorithm::PS256, &lc::RSA_PSS_SHA256),
        ] {
            let mut signature = vec![0; rsa.public_modulus_len()];
            rsa.sign(encoding, &rng, msg, &mut signature).unwrap();
            assert!(verify_with(alg, &key, msg, &signature), "{alg:?}");
            assert!(!verify_with(alg, &key, b"tampered", &signature), "{alg:?}");
        }

        // ES256.
        let pkcs8 =
            lc::EcdsaKeyPair::generate_pkcs8(&lc::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = lc::EcdsaKeyPair::from_pkcs8(&lc::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .unwrap();
        let point = ec.public_key().as_ref();
        let key =
            DecodingKey::from_ec_components(&B64.encode(&point[1..33]), &B64.encode(&point[33..]))
                .unwrap();
        let signature = ec.sign(&rng, msg).unwrap();
        assert!(verify_with(Algorithm::ES256, &key, msg, signature.as_ref()));
        assert!(!verify_with(
            Algorithm::ES256,
            &key,
            b"tampered",
            signature.as_ref()
        ));
        // The JWK helper reads the same coordinates back from the private key.
        let (curve, x, y) =
            extract_ec_public_key_coordinates(pkcs8.as_ref(), Algorithm::ES256).unwrap();
        assert!(matches!(curve, EllipticCurve::P256));
        assert_eq!((x.as_slice(), y.as_slice()), (&point[1..33], &point[33..]));

        // EdDSA.
        let ed = lc::Ed25519KeyPair::generate().unwrap();
        let key = DecodingKey::from_ed_components(&B64.encode(ed.public_key().as_ref())).unwrap();
        let signature = ed.sign(msg);
        assert!(verify_with(Algorithm::EdDSA, &key, msg, signature.as_ref()));
        assert!(!verify_with(
            Algorithm::EdDSA,
            &key,
            b"tampered",
            signature.as_ref()
        ));

        // A key of another family than the token's algorithm.
        let err = new_verifier(&Algorithm::RS256, &key)
            .err()
            .expect("refused");
        assert!(matches!(err.kind(), ErrorKind::InvalidKeyFormat), "{err:?}");
        // No signing here.
        assert!(new_signer(&Algorithm::RS256, &EncodingKey::from_secret(b"k")).is_err());
    }

    #[test]
    fn hmac_and_digests() {
        let key = DecodingKey::from_secret(b"secret");
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret"),
            b"m",
        );
        assert!(verify_with(Algorithm::HS256, &key, b"m", tag.as_ref()));
        assert!(!verify_with(Algorithm::HS384, &key, b"m", tag.as_ref()));
        assert_eq!(
            hex::encode(compute_digest(b"abc", ThumbprintHash::SHA256)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
