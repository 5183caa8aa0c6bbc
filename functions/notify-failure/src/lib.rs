//! `notify-failure`: builds the alert for a run that finally failed (or an
//! execution that failed before it had a run) and publishes it once; for a
//! run that succeeded after failed runs, the recovery notice.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stevedore_domain::alert::Alert;
use stevedore_domain::flow::{parse_input, unwrap_state, AttemptInput};
use stevedore_domain::ports::{LogSource, LogTail, Notifier, RunStore};
use stevedore_domain::{FailureClass, Result, RunStatus};
use tracing::warn;

/// Log lines an alert carries.
pub const LOG_TAIL_LINES: usize = 20;

pub struct Deps {
    pub runs: Arc<dyn RunStore>,
    pub notifier: Arc<dyn Notifier>,
    pub logs: Arc<dyn LogSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyOutput {
    pub message_id: String,
    pub job: String,
    /// The failure class: the error name the execution fails with.
    pub error: FailureClass,
    pub cause: String,
}

pub async fn function_handler(deps: &Deps, event: Value) -> Result<NotifyOutput> {
    let input: AttemptInput = parse_input(unwrap_state(event), "notify-failure")?;
    let failure = input.failure();
    let run = match input.run_id() {
        Some(id) => deps.runs.get_run(&id).await?,
        None => None,
    };
    let recovery = input
        .record
        .as_ref()
        .and_then(|r| r.recovered_after.map(|n| (n, r.recovered_from)));
    let alert = match (run, recovery) {
        (Some(run), Some((failed_runs, from))) if run.status == RunStatus::Succeeded => {
            Alert::recovery(
                &run,
                failed_runs,
                from.unwrap_or(FailureClass::ExitedNonZero),
            )
        }
        (Some(run), _) => {
            let outcome = run.outcome.clone();
            let class = failure
                .as_ref()
                .map(|e| e.class())
                .or(outcome.as_ref().and_then(|o| o.class))
                .unwrap_or(FailureClass::KilledByInfrastructure);
            let message = outcome
                .map(|o| o.message)
                .or(failure.as_ref().map(|e| e.message()))
                .unwrap_or_default();
            // A log source that fails must not cost the alert.
            let tail = match deps.logs.tail(&run, LOG_TAIL_LINES).await {
                Ok(lines) => lines,
                Err(e) => {
                    warn!(run_id = %run.run_id, error = %e, "log tail unavailable");
                    LogTail::default()
                }
            };
            Alert::for_run(&run, class, &message, tail)
        }
        (None, _) => {
            let (class, message) = match &failure {
                Some(e) => (e.class(), e.message()),
                None => (
                    FailureClass::InvalidInput,
                    "notify-failure was called without a run or an error".to_string(),
                ),
            };
            Alert::without_run(
                &input.job().unwrap_or_else(|| "(unknown job)".into()),
                class,
                &message,
                input.execution.as_ref().map(|e| e.id.clone()),
            )
        }
    };
    let message_id = deps.notifier.publish(&alert).await?;
    Ok(NotifyOutput {
        message_id,
        job: alert.job,
        error: alert.class,
        cause: alert.message,
    })
}
