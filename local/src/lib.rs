//! Local mode: Stevedore on one machine, no AWS account and no Docker. The
//! job's command runs as a local process, runs are kept in SQLite, alerts are
//! printed (and posted to Slack when configured), and the real `run-job`
//! state machine runs in the embedded engine with the real handlers.

pub mod ledger;
pub mod notify;
pub mod output;
pub mod plane;
pub mod procs;
pub mod recovery;
pub mod sqlite;
pub mod tasks;

pub use notify::ConsoleNotifier;
pub use plane::{LocalClock, LocalPlane, PlaneConfig};
pub use sqlite::SqliteRunStore;
pub use tasks::{LocalRunner, ProcessSettings, ProcessTaskRunner, SimOutcome, SimulatedTaskRunner};
