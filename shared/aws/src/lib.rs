//! AWS adapters for Stevedore's domain ports: ECS ([`EcsTaskRunner`]),
//! DynamoDB ([`DynamoDbRunStore`]), SNS ([`SnsNotifier`]) and Step Functions
//! ([`SfnTaskTokens`]), CloudWatch Logs ([`CloudWatchLogSource`]) and
//! Secrets Manager ([`SecretsManagerSource`]). Endpoints come only from the standard
//! `AWS_ENDPOINT_URL*` variables that `aws-config` reads.

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
pub use sfn::SfnTaskTokens;
pub use sns::SnsNotifier;

/// Loads the shared AWS configuration once per process (region, credentials,
/// `AWS_ENDPOINT_URL*`). Credentials are resolved lazily, on the first
/// request, so a cold start makes no network call here.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
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
