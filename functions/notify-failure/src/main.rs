use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use notify_failure::{function_handler, Deps};
use serde_json::Value;
use stevedore_aws::{CloudWatchLogSource, DynamoDbRunStore, SnsNotifier};
use stevedore_lambda::{config_or_exit, init_logging, LambdaError};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let sdk = stevedore_aws::load_config().await;
    let deps = Deps {
        runs: Arc::new(config_or_exit(DynamoDbRunStore::from_env(&sdk))),
        notifier: Arc::new(config_or_exit(SnsNotifier::from_env(&sdk))),
        logs: Arc::new(CloudWatchLogSource::from_sdk(&sdk)),
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        function_handler(deps, event.payload)
            .await
            .map_err(LambdaError::counted)
    }))
    .await
}
