//! `sweep-tasks`: the net under every other path that stops a task. On a
//! schedule, lists the cluster's running tasks started by Stevedore and stops
//! each one that no live run accounts for:
//!
//! - its run has ended (the attempt failed, was cancelled or recorded, and
//!   the task was missed: a launch cut short after RunTask, a stop that
//!   failed, ListTasks not yet showing the task to `record-run`);
//! - its run names another task (a second task for one attempt);
//! - its run is past its deadline by more than the grace the state machine
//!   gets to stop it itself (its execution is gone or stuck): the run is
//!   recorded FAILED (`TimedOut`), saying the sweep stopped it;
//! - it has no run at all, and it carries this stack's `stevedore:stack`
//!   tag (a task of another stack sharing the cluster is left alone);
//! - its run has not ended but its execution has (the reaper's event was
//!   lost, or the execution ended before the launch had written the run):
//!   nothing watches the task any more, so it is stopped, its run recorded
//!   CANCELLED and its slot freed after the stop grace.
//!
//! A run that had already ended gets a note saying what the sweep did.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stevedore_domain::failure::{Outcome, StopRequest, STOP_REASON_PREFIX};
use stevedore_domain::flow::free_slot;
use stevedore_domain::ports::{
    Clock, ExecutionState, Executions, RunStore, RunningTask, TaskRunner,
};
use stevedore_domain::run::{
    run_id_from_started_by, ChangeOutcome, RunChange, STACK_TAG, STARTED_BY_PREFIX,
};
use stevedore_domain::task::format_time;
use stevedore_domain::{Error, FailureClass, Result, RunStatus};
use time::OffsetDateTime;
use tracing::{info, warn};

/// The `detail-type` of an EventBridge schedule's event.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";
/// How long past a run's deadline its execution has to stop the task before
/// the sweep does. With the schedule (`SWEEP_MINUTES`), a task is stopped
/// at most 10 minutes after its deadline (when Lambda runs it), inside the
/// 45 minutes (`launch_run::SLOT_LEASE_PAST_DEADLINE_MINUTES`) the job's
/// concurrency slot is leased beyond it.
pub const GRACE_SECONDS: i64 = 300;
/// How often the template schedules the sweep.
pub const SWEEP_MINUTES: u32 = 5;
/// The sweep starts no new task's work after this long; the next sweep
/// carries on (oldest tasks first). With one call's worst case on top, it
/// stays inside the function's timeout.
pub const BUDGET_SECONDS: i64 = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub grace_seconds: i64,
    pub budget_seconds: i64,
    /// This stack's name (`STACK_NAME`).
    pub stack: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grace_seconds: GRACE_SECONDS,
            budget_seconds: BUDGET_SECONDS,
            stack: None,
        }
    }
}

impl Config {
    /// `STACK_NAME` (optional: without it, a task with no run is left alone).
    pub fn from_env() -> Config {
        Config {
            stack: std::env::var("STACK_NAME")
                .ok()
                .filter(|v| !v.trim().is_empty()),
            ..Config::default()
        }
    }
}

pub struct Deps {
    pub tasks: Arc<dyn TaskRunner>,
    pub runs: Arc<dyn RunStore>,
    pub executions: Arc<dyn Executions>,
    pub clock: Arc<dyn Clock>,
    pub config: Config,
}

/// Why the sweep stopped a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SweepReason {
    /// Its run had already ended.
    RunEnded,
    /// Its run names a different task.
    NotTheRunsTask,
    /// Its run is past its deadline and grace.
    PastDeadline,
    /// No run record, and the task carries this stack's tag.
    NoRun,
    /// Its run has not ended, but its execution has.
    ExecutionEnded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Swept {
    pub task_arn: String,
    pub run_id: String,
    pub reason: SweepReason,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepOutput {
    /// Running tasks started by Stevedore.
    pub examined: usize,
    pub stopped: Vec<Swept>,
    /// Tasks not reached within the budget (the next sweep looks at them).
    pub deferred: usize,
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct ScheduledEvent {
    #[serde(rename = "detail-type")]
    detail_type: String,
}

pub async fn function_handler(deps: &Deps, event: Value) -> Result<SweepOutput> {
    let event: ScheduledEvent = serde_json::from_value(event).map_err(|e| {
        Error::invalid_input(format!(
            "sweep-tasks runs on its schedule's event; to run it by hand, invoke it with {{\"detail-type\": \"{SCHEDULED_EVENT}\"}} ({e})"
        ))
    })?;
    if event.detail_type != SCHEDULED_EVENT {
        return Err(Error::invalid_input(format!(
            "sweep-tasks runs on `{SCHEDULED_EVENT}` events, not `{}`",
            event.detail_type
        )));
    }
    let started = deps.clock.now();
    let mut tasks = deps.tasks.list_running(STARTED_BY_PREFIX).await?;
    // Oldest first: an orphan is old, and a sweep cut short by its budget
    // must not look at the same new tasks every time.
    tasks.sort_by(|a, b| (a.created_at, &a.task_arn).cmp(&(b.created_at, &b.task_arn)));
    let mut out = SweepOutput {
        examined: tasks.len(),
        ..Default::default()
    };
    let mut failures = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        if (deps.clock.now() - started).whole_seconds() >= deps.config.budget_seconds {
            out.deferred = tasks.len() - i;
            warn!(
                deferred = out.deferred,
                "sweep budget used; the next sweep carries on"
            );
            break;
        }
        match sweep_one(deps, task).await {
            Ok(Some(swept)) => out.stopped.push(swept),
            Ok(None) => {}
            Err(e) => {
                warn!(task_arn = %task.task_arn, error = %e, "could not sweep the task");
                failures.push(format!("{}: {e}", task.task_arn));
            }
        }
    }
    out.message = format!(
        "{} running task(s) started by Stevedore, {} stopped{}",
        out.examined,
        out.stopped.len(),
        if out.deferred > 0 {
            format!(", {} left for the next sweep", out.deferred)
        } else {
            String::new()
        }
    );
    info!(
        examined = out.examined,
        stopped = out.stopped.len(),
        deferred = out.deferred,
        "swept"
    );
    if !failures.is_empty() {
        // The next sweep tries again; the error shows in the function's alarm.
        return Err(Error::transient(format!(
            "{}; could not handle {} task(s): {}",
            out.message,
            failures.len(),
            failures.join("; ")
        )));
    }
    Ok(out)
}

/// The stop reason ECS keeps on the task.
fn stop_reason(detail: &str) -> String {
    stevedore_domain::failure::stop_reason(format!("{STOP_REASON_PREFIX} sweep: {detail}"))
}

async fn sweep_one(deps: &Deps, task: &RunningTask) -> Result<Option<Swept>> {
    let Some(run_id) = run_id_from_started_by(&task.started_by) else {
        return Ok(None);
    };
    let now = deps.clock.now();
    let run = deps.runs.get_run(run_id).await?;
    let (reason, detail) = match &run {
        None => {
            let ours = deps.config.stack.is_some()
                && task.tags.get(STACK_TAG) == deps.config.stack.as_ref();
            if !ours {
                return Ok(None);
            }
            (
                SweepReason::NoRun,
                format!("no run `{run_id}` is recorded for this task"),
            )
        }
        Some(r) if r.status.is_terminal() => (
            SweepReason::RunEnded,
            format!(
                "run {run_id} had ended {} with its task still running",
                r.status
            ),
        ),
        Some(r) if r.task_arn.as_ref().is_some_and(|a| a != &task.task_arn) => (
            SweepReason::NotTheRunsTask,
            format!(
                "run {run_id} runs as task {}: this one is a second task for the attempt",
                r.task_arn.as_deref().unwrap_or_default()
            ),
        ),
        Some(r) if now > r.deadline + time::Duration::seconds(deps.config.grace_seconds) => (
            SweepReason::PastDeadline,
            format!(
                "run {run_id} passed its deadline {} and nothing stopped its task",
                format_time(r.deadline)
            ),
        ),
        Some(r) => match deps.executions.state(&r.execution.id).await? {
            ExecutionState::Running => return Ok(None),
            ExecutionState::Ended(status) => (
                SweepReason::ExecutionEnded,
                format!(
                    "run {run_id} is {} but its execution ended {status}",
                    r.status
                ),
            ),
            ExecutionState::Gone => (
                SweepReason::ExecutionEnded,
                format!(
                    "run {run_id} is {} but Step Functions knows no execution {}",
                    r.status, r.execution.id
                ),
            ),
        },
    };
    // A stop past the deadline says "job timeout", as watch-task's does: the
    // task's stop event may reach task-events before the run is recorded
    // here, and the reason is how it tells a timeout from a user's stop.
    let reason_text = match reason {
        SweepReason::PastDeadline => StopRequest::Timeout.reason(&format!("sweep: {detail}")),
        SweepReason::ExecutionEnded => StopRequest::Cancelled.reason(&format!("sweep: {detail}")),
        _ => stop_reason(&detail),
    };
    deps.tasks.stop_task(&task.task_arn, &reason_text).await?;
    warn!(task_arn = %task.task_arn, run_id, ?reason, %detail, "sweep stopped a task");
    let note = format!(
        "{} sweep stopped task {}: {detail}",
        format_time(now),
        task.task_arn
    );
    match (reason, run) {
        (SweepReason::PastDeadline | SweepReason::ExecutionEnded, Some(run)) => {
            record_swept(deps, &run, task, now, reason, &detail, &note).await?
        }
        (_, Some(run)) => {
            deps.runs.add_note(&run.run_id, &note).await?;
        }
        (_, None) => {}
    }
    Ok(Some(Swept {
        task_arn: task.task_arn.clone(),
        run_id: run_id.to_string(),
        reason,
        detail,
    }))
}

/// Ends a run whose task the sweep stopped: FAILED (`TimedOut`) past its
/// deadline, or CANCELLED when its execution had ended without it (as the
/// reaper would have recorded it, the slot then held through the task's
/// stop grace). A run that moved on meanwhile gets a note instead.
async fn record_swept(
    deps: &Deps,
    run: &stevedore_domain::run::RunRecord,
    task: &RunningTask,
    now: OffsetDateTime,
    reason: SweepReason,
    detail: &str,
    note: &str,
) -> Result<()> {
    let (to, stop, class) = match reason {
        SweepReason::ExecutionEnded => (
            RunStatus::Cancelled,
            StopRequest::Cancelled,
            FailureClass::StoppedByUser,
        ),
        _ => (
            RunStatus::Failed,
            StopRequest::Timeout,
            FailureClass::TimedOut,
        ),
    };
    let change = RunChange {
        task_arn: Some(task.task_arn.clone()),
        stop_request: Some(stop),
        outcome: Some(Outcome::failed(
            class,
            format!("{detail}: Stevedore's sweep stopped its task"),
            None,
        )),
        finished_at: Some(now),
        ..RunChange::to(to)
    };
    match deps.runs.change_run(&run.run_id, &change).await? {
        ChangeOutcome::Applied(_) | ChangeOutcome::NotFound => {}
        ChangeOutcome::Replayed(_) | ChangeOutcome::Rejected(_) => {
            deps.runs.add_note(&run.run_id, note).await?;
        }
    }
    if to == RunStatus::Cancelled {
        free_slot(deps.runs.as_ref(), &run.job, &run.execution.id, true, now).await?;
    }
    Ok(())
}
