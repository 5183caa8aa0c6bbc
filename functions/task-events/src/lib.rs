//! `task-events`: EventBridge "ECS Task State Change" (STOPPED, our
//! `startedBy` prefix) → find the run → classify → move it to STOPPED
//! (conditionally) → complete the waiting state. Duplicate, late and
//! out-of-order events change nothing; events for tasks that are not ours
//! are ignored.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stevedore_domain::flow::{observe_stop, parse_input, Observed};
use stevedore_domain::ports::{RunStore, TaskTokens};
use stevedore_domain::run::run_id_from_started_by;
use stevedore_domain::task::{TaskStateChange, TASK_STATE_CHANGE};
use stevedore_domain::Result;
use tracing::{info, warn};

pub struct Deps {
    pub runs: Arc<dyn RunStore>,
    pub tokens: Arc<dyn TaskTokens>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    /// The run moved to STOPPED (and the waiting state, if any, was completed).
    Recorded,
    /// The stop was already known: nothing changed.
    Duplicate,
    /// Not an event Stevedore acts on.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventOutput {
    pub action: EventAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub message: String,
}

fn ignored(run_id: Option<&str>, message: impl Into<String>) -> EventOutput {
    let message = message.into();
    info!(run_id, %message, "event ignored");
    EventOutput {
        action: EventAction::Ignored,
        run_id: run_id.map(str::to_string),
        message,
    }
}

pub async fn function_handler(deps: &Deps, event: Value) -> Result<EventOutput> {
    let event: TaskStateChange = parse_input(event, "task-events")?;
    if event.detail_type != TASK_STATE_CHANGE {
        return Ok(ignored(
            None,
            format!(
                "detail-type `{}` is not `{TASK_STATE_CHANGE}`",
                event.detail_type
            ),
        ));
    }
    let task = event.detail;
    let Some(run_id) = task
        .started_by
        .as_deref()
        .and_then(run_id_from_started_by)
        .map(str::to_string)
    else {
        return Ok(ignored(None, "the task was not started by Stevedore"));
    };
    if !task.is_stopped() {
        return Ok(ignored(
            Some(&run_id),
            format!("lastStatus is {}", task.last_status),
        ));
    }
    let Some(run) = deps.runs.get_run(&run_id).await? else {
        warn!(%run_id, "no such run (another deployment's task, or expired)");
        return Ok(ignored(Some(&run_id), "no such run"));
    };
    if let Some(arn) = &run.task_arn {
        if arn != &task.task_arn {
            return Ok(ignored(
                Some(&run_id),
                format!("the run's task is {arn}, not {}", task.task_arn),
            ));
        }
    }
    match observe_stop(deps.runs.as_ref(), deps.tokens.as_ref(), &run, task).await? {
        Observed::Recorded { run, token } => Ok(EventOutput {
            action: EventAction::Recorded,
            run_id: Some(run.run_id.clone()),
            message: format!(
                "{}; waiting state {}",
                run.outcome.map(|o| o.message).unwrap_or_default(),
                match token {
                    Some(stevedore_domain::ports::TokenDelivery::Delivered) => "completed",
                    Some(stevedore_domain::ports::TokenDelivery::AlreadyClosed) =>
                        "had already moved on",
                    None => "not waiting yet (the poll will complete it)",
                }
            ),
        }),
        Observed::AlreadyKnown(run) => Ok(EventOutput {
            action: EventAction::Duplicate,
            run_id: Some(run.run_id.clone()),
            message: format!("the run is already {}", run.status),
        }),
        Observed::NotFound => Ok(ignored(Some(&run_id), "no such run")),
    }
}
