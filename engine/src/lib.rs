//! An embedded Amazon States Language interpreter. It runs a state machine
//! definition with the data flow, error handling and task-token semantics
//! AWS documents, calls Task resources through the [`Resources`] trait, and
//! keeps an execution history with AWS's event types. Time is tokio's: real
//! for `stevedore run`, virtual (a paused runtime) in tests and benchmarks.

pub mod choice;
pub mod definition;
pub mod exec;
pub mod intrinsics;
pub mod jsonata;
pub mod mocks;
pub mod path;

pub use definition::{Definition, DefinitionError};
pub use exec::{
    Delivery, Engine, ExecutionOutcome, Failure, HistoryEvent, Resources, Status, TaskCall, Tokens,
};
