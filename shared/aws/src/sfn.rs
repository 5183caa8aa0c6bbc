//! [`TaskTokens`] on AWS Step Functions: completes a waiting task; and
//! [`Executions`]: whether an execution still runs.

use async_trait::async_trait;
use aws_sdk_sfn::error::SdkError;
use aws_sdk_sfn::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::Value;
use stevedore_domain::ports::{ExecutionState, Executions, TaskTokens, TokenDelivery};
use stevedore_domain::{Error, Result};
use tracing::{info, instrument};

use crate::errors::{classify, error_code};

pub struct SfnTaskTokens {
    client: Client,
}

impl SfnTaskTokens {
    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        Self::new(Client::new(sdk))
    }

    pub fn new(client: Client) -> Self {
        SfnTaskTokens { client }
    }
}

/// A token that already completed, timed out or belongs to a finished
/// execution is not an error worth failing for: the waiting state moved on.
fn closed<E: ProvideErrorMetadata + std::fmt::Display>(
    err: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    matches!(err, SdkError::ServiceError(se)
        if matches!(error_code(se.err()).as_str(), "TaskTimedOut" | "TaskDoesNotExist"))
}

/// Step Functions limits `error` to 256 and `cause` to 32768 characters.
fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[async_trait]
impl TaskTokens for SfnTaskTokens {
    #[instrument(skip_all)]
    async fn send_success(&self, token: &str, output: &Value) -> Result<TokenDelivery> {
        let result = self
            .client
            .send_task_success()
            .task_token(token)
            .output(output.to_string())
            .send()
            .await;
        match result {
            Ok(_) => Ok(TokenDelivery::Delivered),
            Err(e) if closed(&e) => {
                info!("task token already closed");
                Ok(TokenDelivery::AlreadyClosed)
            }
            Err(e) => Err(token_error("SendTaskSuccess", &e)),
        }
    }

    #[instrument(skip_all, fields(error = %error))]
    async fn send_failure(&self, token: &str, error: &str, cause: &str) -> Result<TokenDelivery> {
        let result = self
            .client
            .send_task_failure()
            .task_token(token)
            .error(clip(error, 256))
            .cause(clip(cause, 32_768))
            .send()
            .await;
        match result {
            Ok(_) => Ok(TokenDelivery::Delivered),
            Err(e) if closed(&e) => Ok(TokenDelivery::AlreadyClosed),
            Err(e) => Err(token_error("SendTaskFailure", &e)),
        }
    }
}

fn token_error<E>(op: &str, e: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let err = classify(op, e);
    if matches!(e, SdkError::ServiceError(se) if error_code(se.err()) == "InvalidToken") {
        Error::invalid_input(format!(
            "{}; the stored task token is malformed",
            err.message
        ))
    } else {
        err
    }
}

/// [`Executions`] by DescribeExecution.
pub struct SfnExecutions {
    client: Client,
}

impl SfnExecutions {
    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        Self::new(Client::new(sdk))
    }

    pub fn new(client: Client) -> Self {
        SfnExecutions { client }
    }
}

#[async_trait]
impl Executions for SfnExecutions {
    #[instrument(skip_all, fields(execution = %execution_arn))]
    async fn state(&self, execution_arn: &str) -> Result<ExecutionState> {
        let result = self
            .client
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await;
        match result {
            Ok(out) => Ok(match out.status().as_str() {
                "RUNNING" => ExecutionState::Running,
                other => ExecutionState::Ended(other.to_string()),
            }),
            Err(SdkError::ServiceError(se)) if error_code(se.err()) == "ExecutionDoesNotExist" => {
                Ok(ExecutionState::Gone)
            }
            Err(e) => Err(classify("DescribeExecution", &e)),
        }
    }
}
