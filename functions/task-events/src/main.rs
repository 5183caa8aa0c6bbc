use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use stevedore_aws::{DynamoDbRunStore, SfnTaskTokens};
use stevedore_lambda::{config_or_exit, init_logging, LambdaError};
use task_events::{function_handler, Deps};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let sdk = stevedore_aws::load_config().await;
    let deps = Deps {
        runs: Arc::new(config_or_exit(DynamoDbRunStore::from_env(&sdk))),
        tokens: Arc::new(SfnTaskTokens::from_sdk(&sdk)),
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        function_handler(deps, event.payload)
            .await
            .map_err(LambdaError::counted)
    }))
    .await
}
