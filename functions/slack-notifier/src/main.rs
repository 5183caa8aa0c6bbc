use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use slack_notifier::{
    function_handler, CachedWebhook, Deps, RetryPolicy, SlackPoster, WEBHOOK_CACHE_TTL,
};
use stevedore_aws::SecretsManagerSource;
use stevedore_lambda::{config_or_exit, init_logging, LambdaError};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    // The secret's ARN, not the URL: the URL never sits in the environment.
    let secret_id = config_or_exit(stevedore_aws::env_required("SLACK_WEBHOOK_SECRET_ARN"));
    let sdk = stevedore_aws::load_config().await;
    let deps = Deps {
        webhook: CachedWebhook::new(
            Arc::new(SecretsManagerSource::from_sdk(&sdk)),
            secret_id,
            WEBHOOK_CACHE_TTL,
        ),
        poster: SlackPoster::new(RetryPolicy::default()),
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        function_handler(deps, event.payload)
            .await
            .map(|delivered| serde_json::json!({ "delivered": delivered.len() }))
            .map_err(LambdaError::counted)
    }))
    .await
}
