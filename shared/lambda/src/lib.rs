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
}
