use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use stevedore_aws::{DynamoDbRunStore, EcsSettings, EcsTaskRunner, SfnExecutions};
use stevedore_domain::ports::SystemClock;
use stevedore_lambda::{config_or_exit, init_logging, LambdaError};
use sweep_tasks::{function_handler, Config, Deps};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let settings = config_or_exit(EcsSettings::from_env());
    let sdk = stevedore_aws::load_config().await;
    let deps = Deps {
        tasks: Arc::new(EcsTaskRunner::from_sdk(&sdk, settings)),
        runs: Arc::new(config_or_exit(DynamoDbRunStore::from_env(&sdk))),
        executions: Arc::new(SfnExecutions::from_sdk(&sdk)),
        clock: Arc::new(SystemClock),
        config: Config::from_env(),
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        function_handler(deps, event.payload)
            .await
            .map_err(LambdaError::counted)
    }))
    .await
}
