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

/// Small DynamoDB helpers every table adapter uses.
pub mod dynamo {
    use aws_sdk_dynamodb::config::http::HttpResponse;
    use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_dynamodb::types::AttributeValue;

    /// A string attribute.
    pub fn s(v: impl Into<String>) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    /// A number attribute.
    pub fn n(v: impl ToString) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    /// Whether a write lost its condition (`ConditionalCheckFailedException`): the expected
    /// outcome of an idempotent conditional write that someone else already made.
    pub fn is_conditional_check_failed<E: ProvideErrorMetadata>(
        e: &SdkError<E, HttpResponse>,
    ) -> bool {
        has_code(e, &["ConditionalCheckFailedException"])
    }

    /// Whether the service answered with one of `codes`.
    pub fn has_code<E: ProvideErrorMetadata>(
        e: &SdkError<E, HttpResponse>,
        codes: &[&str],
    ) -> bool {
        e.as_service_error()
            .and_then(|se| se.code())
            .is_some_and(|c| codes.contains(&c))
    }
}
