//! Trust stores for outgoing TLS, compiled in.
//!
//! By default neither HTTP stack reads the system certificate store at cold start (that was the
//! largest single item of every function's init: the bundle *and* the certificate directory
//! parsed once for the SDK and again for each reqwest client; see `bench/README.md`):
//!
//! - the AWS SDK trusts the five roots every AWS endpoint chains to (Amazon Trust Services,
//!   [`AWS_ROOTS_PEM`]);
//! - Stripe, the enrichment provider and Salesforce are reached with Mozilla's root store as
//!   pre-parsed trust anchors (`webpki-roots`), so building a client parses no certificate.
//!
//! `BLAPI_TLS_ROOTS=system` switches both back to the system store (a TLS-inspecting proxy or a
//! private CA in front of an endpoint). Any other value is a configuration error.

use crate::config::{ConfigError, Env};
use crate::error::{Error, Result};
use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The variable that selects the trust store.
pub const ROOTS_VAR: &str = "BLAPI_TLS_ROOTS";

/// Amazon Root CA 1–4 and Starfield Services Root CA – G2, PEM.
pub const AWS_ROOTS_PEM: &[u8] = include_bytes!("../data/tls/aws-roots.pem");

/// Where trusted roots come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Roots {
    /// Compiled in: AWS roots for the SDK, Mozilla's store for everything else.
    #[default]
    Bundled,
    /// The system store, loaded at cold start.
    System,
}

impl FromStr for Roots {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim() {
            "bundled" => Ok(Roots::Bundled),
            "system" => Ok(Roots::System),
            other => Err(format!("expected \"bundled\" or \"system\", got {other:?}")),
        }
    }
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Roots::Bundled => "bundled",
            Roots::System => "system",
        })
    }
}

impl Roots {
    /// `BLAPI_TLS_ROOTS`, bundled when unset.
    pub fn from_env(env: &Env) -> std::result::Result<Self, ConfigError> {
        env.parsed_or(ROOTS_VAR, Roots::Bundled)
    }

    /// The HTTP client the AWS SDK uses (plain HTTP stays possible for local emulators).
    pub fn sdk_http_client(self) -> Result<SharedHttpClient> {
        let trust = match self {
            Roots::Bundled => TrustStore::empty()
                .with_native_roots(false)
                .with_pem_certificate(AWS_ROOTS_PEM),
            Roots::System => TrustStore::default(),
        };
        let context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| Error::dependency("tls", false, e))?;
        Ok(aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https())
    }

    /// The rustls configuration for outgoing reqwest clients, `None` for reqwest's own
    /// (system store) verifier.
    pub fn rustls_config(self) -> Result<Option<rustls::ClientConfig>> {
        match self {
            Roots::System => Ok(None),
            Roots::Bundled => {
                let roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::dependency("tls", false, e))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                // reqwest is built without HTTP/2: offer what it speaks.
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Ok(Some(config))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use sha2::{Digest, Sha256};

    /// Published by Amazon Trust Services (https://www.amazontrust.com/repository/).
    const AWS_ROOT_SHA256: [&str; 5] = [
        "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e", // Amazon Root CA 1
        "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4", // Amazon Root CA 2
        "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4", // Amazon Root CA 3
        "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092", // Amazon Root CA 4
        "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5", // Starfield Services G2
    ];

    #[test]
    fn the_bundled_aws_roots_are_exactly_the_published_five() {
        let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(AWS_ROOTS_PEM)
            .collect::<std::result::Result<_, _>>()
            .expect("PEM");
        let prints: Vec<String> = certs
            .iter()
            .map(|c| hex::encode(Sha256::digest(c.as_ref())))
            .collect();
        assert_eq!(prints, AWS_ROOT_SHA256);
        // Each parses as a trust anchor (what the SDK's connector does with them).
        let mut store = rustls::RootCertStore::empty();
        let (valid, invalid) = store.add_parsable_certificates(certs);
        assert_eq!((valid, invalid), (5, 0));
    }

    #[test]
    fn mozillas_store_carries_the_aws_roots_too() {
        // The same roots are reachable through the reqwest side (S3 pre-signed URLs, anything
        // AWS-hosted a provider might use).
        let certs = CertificateDer::pem_slice_iter(AWS_ROOTS_PEM).map(|c| c.expect("PEM"));
        let mut ours = rustls::RootCertStore::empty();
        ours.add_parsable_certificates(certs);
        for anchor in &ours.roots {
            assert!(
                webpki_roots::TLS_SERVER_ROOTS
                    .iter()
                    .any(|a| a.subject_public_key_info == anchor.subject_public_key_info),
                "{:?}",
                anchor.subject
            );
        }
    }

    #[test]
    fn the_setting_is_read_and_a_typo_is_a_config_error() {
        assert_eq!(
            Roots::from_env(&Env::from_map::<&str, &str>([])),
            Ok(Roots::Bundled)
        );
        assert_eq!(
            Roots::from_env(&Env::from_map([(ROOTS_VAR, "system")])),
            Ok(Roots::System)
        );
        let err = Roots::from_env(&Env::from_map([(ROOTS_VAR, "sytem")])).unwrap_err();
        assert!(err.to_string().contains(ROOTS_VAR), "{err}");
    }

    #[test]
    fn both_stacks_build_with_either_store() {
        for roots in [Roots::Bundled, Roots::System] {
            roots.sdk_http_client().expect("sdk client");
            let config = roots.rustls_config().expect("rustls");
            assert_eq!(config.is_some(), roots == Roots::Bundled);
        }
        let config = Roots::Bundled.rustls_config().unwrap().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
