//! AWS clients, built once per cold start from one `SdkConfig`.
//!
//! Local emulators are reached through `AWS_ENDPOINT_URL` (which the SDK reads itself): there is
//! no local branch in this code.

use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the shared SDK configuration (region, credentials, endpoint) from the environment.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The clients a function may use. Building a client is cheap once the `SdkConfig` (and its
/// HTTP client) exists; they all share its connection pool.
#[derive(Clone, Debug)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub kms: aws_sdk_kms::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Self {
        // moto (and MinIO-like emulators) serve S3 on one host: path-style addressing works
        // there and in AWS alike.
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build();
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            sqs: aws_sdk_sqs::Client::new(config),
            kms: aws_sdk_kms::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
        }
    }

    /// Loads the environment's `SdkConfig` and builds every client from it.
    pub async fn from_env() -> Self {
        Self::new(&sdk_config().await)
    }
}
