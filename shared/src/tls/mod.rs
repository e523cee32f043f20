//! Trust stores for outgoing TLS, compiled in.
//!
//! By default neither HTTP stack reads the system certificate store at cold start (that was the
//! largest single item of every function's init: the bundle *and* the certificate directory
//! parsed once for the SDK and again for each reqwest client; see `bench/README.md`):
//!
//! - the AWS SDK trusts the five roots every AWS endpoint chains to (Amazon Trust Services,
//!   [`AWS_ROOTS_PEM`]), taken pre-parsed from the same store ([`aws_roots`]);
//! - Stripe, the enrichment provider and Salesforce are reached with Mozilla's root store as
//!   pre-parsed trust anchors (`webpki-roots`), so building a client parses no certificate.
//!
//! `BLAPI_TLS_ROOTS=system` switches both back to the system store (a TLS-inspecting proxy or a
//! private CA in front of an endpoint). Any other value is a configuration error.
//!
//! One HTTP stack, reqwest over rustls, HTTP/1.1 only: the SDK's HTTP client is reqwest too
//! ([`sdk_client`]; the SDK's own client links HTTP/2 and decodes PEM roots at init). Both run
//! rustls on **ring** ([`crypto_provider`]), not aws-lc: the same cipher suites and key
//! exchanges (X25519, P-256, P-384) bar aws-lc's post-quantum hybrid, ~2 MB less binary, and no
//! C build of aws-lc in a function's build (measured in `bench/README.md`). The portal's token
//! signatures are checked on it too (`crate::portal::jwt_crypto`).

use crate::config::{ConfigError, Env};
use crate::error::{Error, Result};
use aws_sdk_dynamodb::config::SharedHttpClient;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The variable that selects the trust store.
pub const ROOTS_VAR: &str = "BLAPI_TLS_ROOTS";

mod aws_roots;
pub mod sdk_client;
pub use aws_roots::AWS_ROOTS_PEM;

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
        match self {
            Roots::Bundled => {
                client_config_trusting(aws_roots()).map(|config| sdk_client::client(Some(config)))
            }
            Roots::System => {
                install_default_provider();
                Ok(sdk_client::client(None))
            }
        }
    }

    /// The rustls configuration for outgoing reqwest clients, `None` for reqwest's own
    /// (system store) verifier, which takes rustls' process-default provider: ring is installed
    /// as that default first (reqwest is built without a provider of its own).
    pub fn rustls_config(self) -> Result<Option<rustls::ClientConfig>> {
        match self {
            Roots::System => {
                install_default_provider();
                Ok(None)
            }
            Roots::Bundled => client_config_trusting(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .map(Some),
        }
    }
}

/// The crypto of every outgoing TLS connection: rustls on ring.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring rustls' process-wide default provider, for clients that take the default (reqwest
/// with the system store). Once; a provider installed before stays.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The subject names of the five roots of [`AWS_ROOTS_PEM`] (Amazon Root CA 1-4, Starfield
/// Services Root Certificate Authority - G2), as they appear in a DER subject.
const AWS_ROOT_NAMES: [&[u8]; 2] = [
    b"Amazon Root CA ",
    b"Starfield Services Root Certificate Authority - G2",
];

/// The AWS roots as trust anchors, picked out of webpki-roots' pre-parsed store by subject
/// (nothing decoded at init; a test checks they are exactly the anchors of [`AWS_ROOTS_PEM`]).
pub fn aws_roots() -> rustls::RootCertStore {
    let roots = webpki_roots::TLS_SERVER_ROOTS
        .iter()
        .filter(|anchor| {
            let subject: &[u8] = anchor.subject.as_ref();
            AWS_ROOT_NAMES
                .iter()
                .any(|name| subject.windows(name.len()).any(|w| w == *name))
        })
        .cloned()
        .collect();
    rustls::RootCertStore { roots }
}

fn client_config_trusting(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::dependency("tls", false, e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest (both stacks) is built without HTTP/2: offer what it speaks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
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
    fn the_sdks_anchors_are_exactly_the_aws_roots() {
        let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(AWS_ROOTS_PEM)
            .collect::<std::result::Result<_, _>>()
            .expect("PEM");
        let mut parsed = rustls::RootCertStore::empty();
        parsed.add_parsable_certificates(certs);
        let picked = aws_roots();
        assert_eq!(picked.roots.len(), 5);
        let key = |a: &rustls::pki_types::TrustAnchor<'_>| {
            (
                a.subject.as_ref().to_vec(),
                a.subject_public_key_info.as_ref().to_vec(),
            )
        };
        let mut want: Vec<_> = parsed.roots.iter().map(key).collect();
        let mut got: Vec<_> = picked.roots.iter().map(key).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
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
        // The system-store path left ring as the process default, for reqwest to take.
        let default = rustls::crypto::CryptoProvider::get_default().expect("installed");
        assert_eq!(format!("{:?}", default.secure_random), "Ring");
        assert_eq!(format!("{:?}", crypto_provider().secure_random), "Ring");
        // And a reqwest client on its own (system store) verifier builds with it.
        reqwest::Client::builder().build().expect("client");
    }

    /// A throwaway CA, a `localhost` certificate it issued and a TLS server on loopback that
    /// answers every request `200 {}`.
    struct Server {
        url: String,
        ca: rcgen::Certificate,
    }

    async fn server() -> Server {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust us aborts the handshake: nothing to answer.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Server {
            url: format!("https://localhost:{port}"),
            ca,
        }
    }

    fn ca_store(server: &Server) -> rustls::RootCertStore {
        let mut store = rustls::RootCertStore::empty();
        store.add(server.ca.der().clone()).unwrap();
        store
    }

    async fn list_tables(http: SharedHttpClient, url: &str) -> std::result::Result<(), String> {
        use aws_sdk_dynamodb::config::{Credentials, Region, retry::RetryConfig};
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(url)
            .retry_config(RetryConfig::disabled())
            .http_client(http)
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
            .list_tables()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{:?}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))
    }

    #[tokio::test]
    async fn reqwest_verifies_against_the_bundled_store() {
        let server = server().await;
        // The function's client (bundled roots): a certificate from an unknown CA is refused.
        let err = crate::http::client(std::time::Duration::from_secs(5))
            .unwrap()
            .get(&server.url)
            .send()
            .await
            .unwrap_err();
        let chain = format!("{:?}", error_chain(&err));
        assert!(chain.contains("UnknownIssuer"), "{chain}");
        // The same configuration trusting that CA completes the handshake: the refusal above
        // is the trust store's verdict, and the config (provider, ALPN) speaks to a real server.
        let trusting = reqwest::Client::builder()
            .tls_backend_preconfigured(client_config_trusting(ca_store(&server)).unwrap())
            .build()
            .unwrap();
        let resp = trusting.get(&server.url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }

    #[tokio::test]
    async fn the_sdk_verifies_against_the_bundled_store() {
        let server = server().await;
        let err = list_tables(Roots::Bundled.sdk_http_client().unwrap(), &server.url)
            .await
            .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
        // The same client trusting that CA completes the handshake and the call.
        let trusting = sdk_client::client(Some(client_config_trusting(ca_store(&server)).unwrap()));
        list_tables(trusting, &server.url).await.unwrap();
    }

    fn error_chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = vec![err.to_string()];
        let mut cur = err.source();
        while let Some(e) = cur {
            out.push(format!("{e:?}"));
            cur = e.source();
        }
        out
    }
}
