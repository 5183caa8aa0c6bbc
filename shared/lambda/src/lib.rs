//! What every Lambda binary shares: logging setup and the conversion of
//! domain errors into Lambda diagnostics, so Step Functions sees the failure
//! class as `errorType` (never a Rust type name).

#[cfg(feature = "testing")]
pub mod testing;

use lambda_runtime::Diagnostic;
use stevedore_domain::Error;

/// A domain error on its way out of a Lambda function.
#[derive(Debug)]
pub struct LambdaError(pub Error);

impl From<Error> for LambdaError {
    fn from(e: Error) -> Self {
        LambdaError(e)
    }
}

impl LambdaError {
    /// The handler's error, counted first when run-job handles it by design
    /// (one `HandledErrors` line in the embedded metric format on standard
    /// output, which CloudWatch Logs turns into the metric): the functions'
    /// error alarm subtracts these from Lambda's `Errors`, so a Spot
    /// shortage or a busy job does not page anyone.
    pub fn counted(e: Error) -> LambdaError {
        if let Some(line) = handled_error_line(&e, time::OffsetDateTime::now_utc()) {
            println!("{line}");
        }
        LambdaError(e)
    }
}

/// The `HandledErrors` line for `e`, if run-job handles it by design. The
/// stack and function come from the environment Lambda and the template
/// give every function (`STACK_NAME`, `AWS_LAMBDA_FUNCTION_NAME`).
pub fn handled_error_line(e: &Error, at: time::OffsetDateTime) -> Option<String> {
    let stack = std::env::var("STACK_NAME").unwrap_or_default();
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
    stevedore_domain::metrics::handled_error(&stack, &function, e.class, at).map(|v| v.to_string())
}

impl From<LambdaError> for Diagnostic {
    fn from(e: LambdaError) -> Diagnostic {
        Diagnostic {
            error_type: e.0.class.as_str().to_string(),
            error_message: e.0.message,
        }
    }
}

/// Logs as the Lambda runtime expects (`AWS_LAMBDA_LOG_FORMAT=JSON` gives JSON lines).
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// Reads configuration at init; a missing or bad variable ends the process
/// with a message naming it (the init error shows in the function's logs).
pub fn config_or_exit<T>(result: Result<T, String>) -> T {
    match result {
        Ok(v) => v,
        Err(message) => {
            eprintln!("configuration error: {message}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stevedore_domain::FailureClass;

    #[test]
    fn diagnostics_carry_the_failure_class() {
        let d: Diagnostic =
            LambdaError(Error::new(FailureClass::JobAlreadyRunning, "slot taken")).into();
        assert_eq!(d.error_type, "JobAlreadyRunning");
        assert_eq!(d.error_message, "slot taken");
    }

    #[test]
    fn errors_run_job_handles_are_counted_and_the_others_are_not() {
        let at = time::OffsetDateTime::UNIX_EPOCH;
        for class in FailureClass::ALL {
            let line = handled_error_line(&Error::new(class, "x"), at);
            let expected = !matches!(
                class,
                FailureClass::ConfigurationError | FailureClass::InvalidInput
            );
            assert_eq!(line.is_some(), expected, "{class}");
            if let Some(line) = line {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["HandledErrors"], 1);
                assert_eq!(v["FailureClass"], class.as_str());
            }
        }
    }
}
