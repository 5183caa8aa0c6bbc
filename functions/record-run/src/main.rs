use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use record_run::{function_handler, Deps};
use serde_json::Value;
use stevedore_aws::{DynamoDbRunStore, EcsSettings, EcsTaskRunner};
use stevedore_domain::cost::PriceTable;
use stevedore_domain::ports::SystemClock;
use stevedore_lambda::{config_or_exit, init_logging, LambdaError};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let region = config_or_exit(stevedore_aws::env_required("AWS_REGION"));
    // Names the stack in the run metrics (the `Stack` dimension).
    let stack = stevedore_aws::env_optional("STACK_NAME").unwrap_or_else(|| "stevedore".into());
    let settings = config_or_exit(EcsSettings::from_env());
    let sdk = stevedore_aws::load_config().await;
    let deps = Deps {
        runs: Arc::new(config_or_exit(DynamoDbRunStore::from_env(&sdk))),
        tasks: Arc::new(EcsTaskRunner::from_sdk(&sdk, settings)),
        clock: Arc::new(SystemClock),
        prices: PriceTable::builtin(),
        region,
    };
    let (deps, stack) = (&deps, stack.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let output = function_handler(deps, event.payload)
            .await
            .map_err(LambdaError::counted)?;
        // One JSON object on its own line: CloudWatch Logs makes the metrics.
        if let Some(line) =
            record_run::metrics_line(&output, stack, time::OffsetDateTime::now_utc())
        {
            println!("{line}");
        }
        Ok::<_, LambdaError>(output)
    }))
    .await
}
