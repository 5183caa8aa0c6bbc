//! AWS adapters for Stevedore's domain ports: ECS ([`EcsTaskRunner`]),
//! DynamoDB ([`DynamoDbRunStore`]), SNS ([`SnsNotifier`]) and Step Functions
//! ([`SfnTaskTokens`]), CloudWatch Logs ([`CloudWatchLogSource`]) and
//! Secrets Manager ([`SecretsManagerSource`]). Endpoints come only from the standard
//! `AWS_ENDPOINT_URL*` variables that `aws-config` reads.

use std::time::Duration;

pub mod attr;
pub mod dynamodb;
pub mod ecs;
pub mod errors;
pub mod logs;
pub mod secrets;
pub mod sfn;
pub mod sns;

pub use dynamodb::DynamoDbRunStore;
pub use ecs::{EcsSettings, EcsTaskRunner};
pub use logs::CloudWatchLogSource;
pub use secrets::SecretsManagerSource;
pub use sfn::{SfnExecutions, SfnTaskTokens};
pub use sns::SnsNotifier;

/// Connecting to an AWS endpoint: a healthy one answers in milliseconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt of one call (RunTask, the slowest, takes a second or two).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// One call, all its attempts and back-off included: no stalled call can
/// eat a function's whole timeout (`template.yaml` gives each function room
/// for its longest sequence of calls, each taking this long).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(12);
/// Attempts per call (the SDK's standard retry: throttling and 5xx, with
/// jittered back-off).
pub const MAX_ATTEMPTS: u32 = 3;

/// The SDK configuration every function uses: region, credentials and
/// `AWS_ENDPOINT_URL*` from the environment, and Stevedore's timeouts and
/// bounded retries. Tests add their endpoint and credentials to it.
pub fn sdk_defaults() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
}

/// Loads the shared AWS configuration once per process ([`sdk_defaults`]).
/// Credentials are resolved lazily, on the first request, so a cold start
/// makes no network call here.
pub async fn load_config() -> aws_config::SdkConfig {
    sdk_defaults().load().await
}

/// Reads a required environment variable, naming it when it is missing.
pub fn env_required(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(format!("environment variable {name} is required")),
    }
}

/// Reads an optional environment variable; blank counts as absent.
pub fn env_optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
