//! The signer port: RSASSA-PKCS1-v1_5 SHA-512 signatures with a 2048-bit RSA key.
//!
//! - [`KmsSigner`]: production. The key is an AWS KMS asymmetric key (`RSA_2048`,
//!   `SIGN_VERIFY`) reached through its alias; the private key never leaves KMS. One call of
//!   [`LicenseSigner::sign`] is one `kms:Sign` round trip; one call of
//!   [`LicenseSigner::public_key`] is one `kms:GetPublicKey` (the service caches it per cold
//!   start, so a license costs exactly one KMS round trip).
//! - `InProcessSigner` (feature `test-signer`, and in this crate's tests): a key generated in
//!   the process, for unit tests and benchmarks only.
//! - [`CountingSigner`]: wraps any signer and counts the calls that reach it (benchmarks and
//!   tests assert "one KMS round trip per license").
//!
//! KMS failures are all retryable: the license request is sound, and a throttled, disabled or
//! misnamed key is an operational fault that, once fixed, lets the redriven message succeed.

use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use rsa::RsaPublicKey;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A license-signing public key with its fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: RsaPublicKey,
    der: Vec<u8>,
    kid: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).finish()
    }
}

impl PublicKey {
    /// From a DER `SubjectPublicKeyInfo` (what `kms:GetPublicKey` returns). Must be RSA-2048.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let key = RsaPublicKey::from_public_key_der(der)
            .map_err(|e| Error::Invalid(format!("not an RSA public key: {e}")))?;
        if rsa::traits::PublicKeyParts::size(&key) != super::format::SIGNATURE_LEN {
            return Err(Error::Invalid("license keys are RSA-2048".into()));
        }
        let kid = hex::encode(&Sha256::digest(der)[..8]);
        Ok(Self {
            key,
            der: der.to_vec(),
            kid,
        })
    }

    /// From PEM (`-----BEGIN PUBLIC KEY-----`), as published at `licenses/public-key.pem`.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let key = RsaPublicKey::from_public_key_pem(pem.trim())
            .map_err(|e| Error::Invalid(format!("not an RSA public key PEM: {e}")))?;
        let der = key
            .to_public_key_der()
            .map_err(|e| Error::Invalid(format!("public key: {e}")))?;
        Self::from_der(der.as_bytes())
    }

    /// The PEM text to publish.
    pub fn to_pem(&self) -> Result<String> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Invalid(format!("public key PEM: {e}")))
    }

    /// The key id written into every license and revocation list: the first 8 bytes of
    /// SHA-256 of the DER public key, in hex. Stable across alias changes, tells keys apart
    /// after a rotation.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The RSA key, for verification.
    pub fn rsa(&self) -> &RsaPublicKey {
        &self.key
    }
}

/// The signing port.
#[async_trait]
pub trait LicenseSigner: Send + Sync {
    /// The 256-byte RSASSA-PKCS1-v1_5 SHA-512 signature of `message` (≤ 4096 bytes).
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
    /// The public key of the signing key.
    async fn public_key(&self) -> Result<PublicKey>;
}

#[async_trait]
impl<S: LicenseSigner + ?Sized> LicenseSigner for Arc<S> {
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        (**self).sign(message).await
    }
    async fn public_key(&self) -> Result<PublicKey> {
        (**self).public_key().await
    }
}

/// The KMS adapter. `key_id` is the alias (`alias/...`), a key id or an ARN.
#[derive(Debug, Clone)]
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsSigner {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

fn kms_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    // Deliberately retryable, whatever KMS said: see the module doc.
    Error::dependency("kms", true, crate::error::DisplayErrorContext(e))
}

#[async_trait]
impl LicenseSigner for KmsSigner {
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        if message.len() > super::format::MAX_JSON_LEN {
            return Err(Error::Invalid(format!(
                "message of {} bytes is over KMS's raw-message limit",
                message.len()
            )));
        }
        let out = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha512)
            .send()
            .await
            .map_err(kms_error)?;
        let sig = out
            .signature
            .ok_or_else(|| Error::dependency("kms", true, "Sign returned no signature"))?
            .into_inner();
        if sig.len() != super::format::SIGNATURE_LEN {
            return Err(Error::dependency(
                "kms",
                false,
                format!("signature of {} bytes: the key is not RSA-2048", sig.len()),
            ));
        }
        Ok(sig)
    }

    async fn public_key(&self) -> Result<PublicKey> {
        let out = self
            .client
            .get_public_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(kms_error)?;
        let der = out
            .public_key
            .ok_or_else(|| Error::dependency("kms", true, "GetPublicKey returned no key"))?;
        PublicKey::from_der(der.as_ref())
    }
}

/// Counts the calls reaching the wrapped signer: with [`KmsSigner`] inside, each is one KMS
/// round trip.
#[derive(Debug, Default)]
pub struct CountingSigner<S> {
    inner: S,
    signs: AtomicU64,
    zero_tailed: AtomicU64,
    public_keys: AtomicU64,
}

impl<S> CountingSigner<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            signs: AtomicU64::new(0),
            zero_tailed: AtomicU64::new(0),
            public_keys: AtomicU64::new(0),
        }
    }
    /// Signatures that ended in a zero byte (a license file is then signed again: see
    /// `LicenseService`).
    pub fn zero_tailed(&self) -> u64 {
        self.zero_tailed.load(Ordering::Relaxed)
    }
    /// The wrapped signer.
    pub fn inner(&self) -> &S {
        &self.inner
    }
    /// `sign` calls so far.
    pub fn signs(&self) -> u64 {
        self.signs.load(Ordering::Relaxed)
    }
    /// `public_key` calls so far.
    pub fn public_keys(&self) -> u64 {
        self.public_keys.load(Ordering::Relaxed)
    }
    /// All calls so far.
    pub fn calls(&self) -> u64 {
        self.signs() + self.public_keys()
    }
}

#[async_trait]
impl<S: LicenseSigner> LicenseSigner for CountingSigner<S> {
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        self.signs.fetch_add(1, Ordering::Relaxed);
        let signature = self.inner.sign(message).await?;
        if signature.last() == Some(&0) {
            self.zero_tailed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(signature)
    }
    async fn public_key(&self) -> Result<PublicKey> {
        self.public_keys.fetch_add(1, Ordering::Relaxed);
        self.inner.public_key().await
    }
}

#[cfg(any(test, feature = "test-signer"))]
pub use in_process::InProcessSigner;

#[cfg(any(test, feature = "test-signer"))]
mod in_process {
    use super::*;
    use rsa::{Pkcs1v15Sign, RsaPrivateKey};
    use sha2::Sha512;

    /// A signer with an RSA-2048 key held in the process: unit tests and benchmarks only.
    #[derive(Clone)]
    pub struct InProcessSigner {
        key: RsaPrivateKey,
        public: PublicKey,
    }

    impl std::fmt::Debug for InProcessSigner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("InProcessSigner")
                .field("kid", &self.public.kid)
                .finish()
        }
    }

    impl InProcessSigner {
        /// A fresh random key (slow in debug builds: share one per test binary).
        pub fn generate() -> Result<Self> {
            let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .map_err(|e| Error::Invalid(format!("key generation: {e}")))?;
            Self::from_key(key)
        }

        pub fn from_key(key: RsaPrivateKey) -> Result<Self> {
            let der = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| Error::Invalid(format!("public key: {e}")))?;
            let public = PublicKey::from_der(der.as_bytes())?;
            Ok(Self { key, public })
        }

        /// Signs synchronously (benchmarks).
        pub fn sign_now(&self, message: &[u8]) -> Result<Vec<u8>> {
            self.key
                .sign(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(message))
                .map_err(|e| Error::Invalid(format!("signing: {e}")))
        }

        /// The public key, synchronously.
        pub fn public(&self) -> &PublicKey {
            &self.public
        }
    }

    #[async_trait]
    impl LicenseSigner for InProcessSigner {
        async fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
            self.sign_now(message)
        }
        async fn public_key(&self) -> Result<PublicKey> {
            Ok(self.public.clone())
        }
    }
}

/// One in-process key per test binary (key generation is slow in debug builds).
#[cfg(test)]
pub(crate) fn test_signer() -> InProcessSigner {
    static KEY: std::sync::OnceLock<InProcessSigner> = std::sync::OnceLock::new();
    KEY.get_or_init(|| InProcessSigner::generate().expect("key generation"))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pem_round_trip_keeps_the_kid() {
        let s = test_signer();
        let pk = s.public_key().await.unwrap();
        let pem = pk.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let back = PublicKey::from_pem(&pem).unwrap();
        assert_eq!(back.kid(), pk.kid());
        assert_eq!(pk.kid().len(), 16);
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
    }

    #[tokio::test]
    async fn signatures_are_deterministic_and_counted() {
        let s = CountingSigner::new(test_signer());
        let a = s.sign(b"{\"id\":1}").await.unwrap();
        let b = s.sign(b"{\"id\":1}").await.unwrap();
        assert_eq!(a.len(), 256);
        assert_eq!(a, b, "PKCS#1 v1.5 is deterministic");
        assert_eq!(s.signs(), 2);
        assert_eq!(s.public_keys(), 0);
    }
}
