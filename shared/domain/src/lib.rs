//! Stevedore's domain: job specs, the run lifecycle, failure classification,
//! the cost model, alerts and the ports every side effect goes through.
//! No AWS SDK and no Lambda runtime here.

pub mod alert;
pub mod budget;
pub mod console;
pub mod cost;
pub mod duration;
pub mod error;
pub mod failure;
pub mod flow;
pub mod lifecycle;
pub mod logical;
#[cfg(any(test, feature = "mocks"))]
pub mod memory;
pub mod metrics;
pub mod ports;
pub mod redact;
pub mod run;
pub mod slack;
pub mod spec;
pub mod task;

pub use error::{Error, FailureClass, Result};
pub use lifecycle::RunStatus;
pub use spec::JobSpec;
