//! The failure classes of a run and the one error type every port and handler
//! returns. A class's name is the Step Functions error name (`errorType`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a run (or a control-plane step) failed. One enum, one source of truth:
/// the variant names are the error names the state machine matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FailureClass {
    /// The job spec (execution input) is not valid.
    InvalidJobSpec,
    /// The job's concurrency slots are all taken.
    JobAlreadyRunning,
    /// Fargate (or Fargate Spot) had no capacity for the task.
    CapacityUnavailable,
    /// The task never got its essential container running: image pull,
    /// network interface, secrets, log configuration.
    StartFailed,
    /// The container cannot start as configured: its command or entry point
    /// does not exist or may not be executed, or a secret it needs is
    /// missing. Trying again cannot help, so it is never retried.
    ContainerMisconfigured,
    /// The container was killed for exceeding its memory (exit 137 / OutOfMemoryError).
    OutOfMemory,
    /// Fargate Spot reclaimed the capacity.
    SpotInterrupted,
    /// The job's container exited with a non-zero code.
    ExitedNonZero,
    /// The task stopped without the job's container exiting (no exit code).
    KilledByInfrastructure,
    /// The job ran past its timeout and was stopped.
    TimedOut,
    /// Somebody stopped the task (console, CLI, API).
    StoppedByUser,
    /// An AWS API throttled us; retried by the state machine.
    Throttled,
    /// A network or 5xx error talking to AWS; retried by the state machine.
    Transient,
    /// AWS refused the request because of the deployment or account setup
    /// (access denied, cluster or task definition not found).
    ConfigurationError,
    /// A handler received input it cannot use (not a job spec problem).
    InvalidInput,
}

impl FailureClass {
    pub const ALL: [FailureClass; 15] = [
        FailureClass::InvalidJobSpec,
        FailureClass::JobAlreadyRunning,
        FailureClass::CapacityUnavailable,
        FailureClass::StartFailed,
        FailureClass::ContainerMisconfigured,
        FailureClass::OutOfMemory,
        FailureClass::SpotInterrupted,
        FailureClass::ExitedNonZero,
        FailureClass::KilledByInfrastructure,
        FailureClass::TimedOut,
        FailureClass::StoppedByUser,
        FailureClass::Throttled,
        FailureClass::Transient,
        FailureClass::ConfigurationError,
        FailureClass::InvalidInput,
    ];

    /// Whether run-job handles this error by design when a handler raises it
    /// (a retry, a catch into a recorded outcome): a job's own failure, a
    /// busy job, no capacity, throttling, a timed-out call. Not a
    /// misconfiguration (`ConfigurationError`: access denied, no such
    /// cluster) or input no handler should get (`InvalidInput`: a bug).
    pub fn handled_by_design(self) -> bool {
        !matches!(
            self,
            FailureClass::ConfigurationError | FailureClass::InvalidInput
        )
    }

    /// The Step Functions error name (what the runtime reports as `errorType`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::InvalidJobSpec => "InvalidJobSpec",
            FailureClass::JobAlreadyRunning => "JobAlreadyRunning",
            FailureClass::CapacityUnavailable => "CapacityUnavailable",
            FailureClass::StartFailed => "StartFailed",
            FailureClass::ContainerMisconfigured => "ContainerMisconfigured",
            FailureClass::OutOfMemory => "OutOfMemory",
            FailureClass::SpotInterrupted => "SpotInterrupted",
            FailureClass::ExitedNonZero => "ExitedNonZero",
            FailureClass::KilledByInfrastructure => "KilledByInfrastructure",
            FailureClass::TimedOut => "TimedOut",
            FailureClass::StoppedByUser => "StoppedByUser",
            FailureClass::Throttled => "Throttled",
            FailureClass::Transient => "Transient",
            FailureClass::ConfigurationError => "ConfigurationError",
            FailureClass::InvalidInput => "InvalidInput",
        }
    }

    /// Whether a job may list this class in `retry.on`: the classes that are
    /// outcomes of a run attempt. Throttled and Transient are retried by the
    /// state machine around each step instead; the others cannot get better
    /// by trying again.
    pub fn job_retryable(self) -> bool {
        matches!(
            self,
            FailureClass::CapacityUnavailable
                | FailureClass::StartFailed
                | FailureClass::OutOfMemory
                | FailureClass::SpotInterrupted
                | FailureClass::ExitedNonZero
                | FailureClass::KilledByInfrastructure
                | FailureClass::TimedOut
        )
    }

    /// Errors the state machine retries around a single step (Lambda-level).
    pub fn step_retryable(self) -> bool {
        matches!(self, FailureClass::Throttled | FailureClass::Transient)
    }

    /// One sentence a person reading an alert understands.
    pub fn explanation(self) -> &'static str {
        match self {
            FailureClass::InvalidJobSpec => "The job spec is not valid.",
            FailureClass::JobAlreadyRunning => {
                "Another run of this job holds its concurrency slot."
            }
            FailureClass::CapacityUnavailable => "Fargate had no capacity for the task.",
            FailureClass::StartFailed => "The task could not start its container.",
            FailureClass::ContainerMisconfigured => {
                "The container cannot start as configured (command, entry point or secret)."
            }
            FailureClass::OutOfMemory => "The container was killed at its memory limit.",
            FailureClass::SpotInterrupted => {
                "Fargate Spot reclaimed the capacity while the job ran."
            }
            FailureClass::ExitedNonZero => "The job's container exited with a non-zero code.",
            FailureClass::KilledByInfrastructure => {
                "The task stopped before the job's container exited."
            }
            FailureClass::TimedOut => "The job ran past its timeout and was stopped.",
            FailureClass::StoppedByUser => "The task was stopped from outside Stevedore.",
            FailureClass::Throttled => "AWS throttled a request.",
            FailureClass::Transient => "A temporary error talking to AWS.",
            FailureClass::ConfigurationError => {
                "AWS refused the request because of the deployment's setup."
            }
            FailureClass::InvalidInput => "A Stevedore function received input it cannot use.",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of the failure classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure class `{0}`")]
pub struct UnknownFailureClass(pub String);

impl FromStr for FailureClass {
    type Err = UnknownFailureClass;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownFailureClass(s.to_string()))
    }
}

/// The error every port and handler returns: a failure class (the Step
/// Functions error name) and a message that says what happened and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {message}")]
pub struct Error {
    pub class: FailureClass,
    pub message: String,
}

impl Error {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Error {
            class,
            message: message.into(),
        }
    }
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(FailureClass::InvalidInput, message)
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Error::new(FailureClass::Transient, message)
    }
    pub fn configuration(message: impl Into<String>) -> Self {
        Error::new(FailureClass::ConfigurationError, message)
    }
    /// The Step Functions error name.
    pub fn error_type(&self) -> &'static str {
        self.class.as_str()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_round_trips_through_its_name() {
        for class in FailureClass::ALL {
            assert_eq!(class.as_str().parse::<FailureClass>(), Ok(class));
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
    }

    #[test]
    fn when_name_is_unknown_should_say_which() {
        let err = "States.ALL".parse::<FailureClass>().unwrap_err();
        assert_eq!(err.to_string(), "unknown failure class `States.ALL`");
    }

    #[test]
    fn step_and_job_retries_do_not_overlap() {
        for class in FailureClass::ALL {
            assert!(
                !(class.job_retryable() && class.step_retryable()),
                "{class}"
            );
        }
    }
}
