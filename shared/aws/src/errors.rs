//! SDK errors classified into the domain's failure classes: throttling and
//! transient errors (retried by the state machine) apart from terminal ones.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use stevedore_domain::{Error, FailureClass};

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "SlowDown",
    "BandwidthLimitExceeded",
    "LimitExceededException",
];

const TRANSIENT: &[&str] = &[
    "ServerException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "KMSThrottlingException",
];

/// Classifies an SDK error from `operation` into a domain error.
pub fn classify<E>(operation: &str, err: &SdkError<E, Response>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::TimeoutError(_) => Error::transient(format!("{operation}: timed out")),
        SdkError::DispatchFailure(d) => {
            Error::transient(format!("{operation}: could not reach AWS ({d:?})"))
        }
        SdkError::ResponseError(_) => {
            Error::transient(format!("{operation}: unreadable response from AWS"))
        }
        SdkError::ConstructionFailure(_) => Error::invalid_input(format!(
            "{operation}: the request could not be built: {}",
            display_chain(err)
        )),
        SdkError::ServiceError(service) => {
            let code = error_code(service.err());
            let message = service.err().message().unwrap_or("");
            let status = service.raw().status().as_u16();
            classify_code(operation, &code, message, status)
        }
        _ => Error::transient(format!("{operation}: {}", display_chain(err))),
    }
}

/// The error code: from the response's metadata, or, for a modeled error
/// built without metadata, from its display (`TaskTimedOut: ...`).
pub fn error_code<E: ProvideErrorMetadata + std::fmt::Display>(err: &E) -> String {
    match err.code() {
        Some(code) if !code.is_empty() => code.to_string(),
        _ => err
            .to_string()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// Classifies a service error by code and HTTP status.
pub fn classify_code(operation: &str, code: &str, message: &str, status: u16) -> Error {
    let text = if message.is_empty() {
        format!("{operation}: {code} (HTTP {status})")
    } else {
        format!("{operation}: {code}: {message}")
    };
    let class = if THROTTLING.contains(&code) || status == 429 {
        FailureClass::Throttled
    } else if TRANSIENT.contains(&code) || status >= 500 {
        FailureClass::Transient
    } else {
        FailureClass::ConfigurationError
    };
    Error::new(class, text)
}

fn display_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_classes() {
        assert_eq!(
            classify_code("RunTask", "ThrottlingException", "Rate exceeded", 400).class,
            FailureClass::Throttled
        );
        assert_eq!(
            classify_code("PutItem", "ProvisionedThroughputExceededException", "", 400).class,
            FailureClass::Throttled
        );
        assert_eq!(
            classify_code("RunTask", "ServerException", "", 500).class,
            FailureClass::Transient
        );
        assert_eq!(
            classify_code("Publish", "Whatever", "", 503).class,
            FailureClass::Transient
        );
        assert_eq!(
            classify_code("RunTask", "AccessDeniedException", "no", 400).class,
            FailureClass::ConfigurationError
        );
        assert_eq!(
            classify_code("RunTask", "Unknown", "", 429).class,
            FailureClass::Throttled
        );
        let e = classify_code(
            "RunTask",
            "ClusterNotFoundException",
            "Cluster not found.",
            400,
        );
        assert_eq!(
            e.message,
            "RunTask: ClusterNotFoundException: Cluster not found."
        );
    }
}
