//! `watch-task`: the safety net under the task events. Called by the waiting
//! state with its task token (and again after each check interval): stores
//! the token, polls DescribeTasks once, completes the token itself if the
//! task already stopped, and stops the task once the job's deadline passed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stevedore_domain::duration::format_duration;
use stevedore_domain::failure::StopRequest;
use stevedore_domain::flow::{complete, observe_stop, parse_input, Observed};
use stevedore_domain::ports::{Clock, RunStore, TaskRunner, TaskTokens};
use stevedore_domain::run::{ChangeOutcome, RunChange, RunRecord};
use stevedore_domain::task::{TaskDescription, TaskLookup};
use stevedore_domain::{Error, Result, RunStatus};
use tracing::{info, warn};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long after the task was started a MISSING answer still means
    /// "not visible yet" (DescribeTasks is eventually consistent).
    pub missing_grace_seconds: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            missing_grace_seconds: stevedore_domain::task::MISSING_GRACE_SECONDS,
        }
    }
}

pub struct Deps {
    pub tasks: Arc<dyn TaskRunner>,
    pub runs: Arc<dyn RunStore>,
    pub tokens: Arc<dyn TaskTokens>,
    pub clock: Arc<dyn Clock>,
    pub config: Config,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchInput {
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchState {
    Running,
    /// Past its deadline; Stevedore asked ECS to stop it.
    Stopping,
    /// Stopped and classified (the token, if any, was completed).
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchOutput {
    pub run_id: String,
    pub state: WatchState,
    pub message: String,
}

pub async fn function_handler(deps: &Deps, event: Value) -> Result<WatchOutput> {
    let input: WatchInput = parse_input(event, "watch-task")?;
    let Some(mut run) = deps.runs.get_run(&input.run_id).await? else {
        return Err(Error::invalid_input(format!("no run `{}`", input.run_id)));
    };

    if let Some(token) = &input.task_token {
        if run.status.task_may_run() {
            // Store the token with a condition on the status, so a stop that
            // was recorded in between is not missed.
            let change = RunChange {
                task_token: Some(token.clone()),
                ..RunChange::to(run.status)
            };
            match deps.runs.change_run(&run.run_id, &change).await? {
                ChangeOutcome::Applied(r) => run = r,
                ChangeOutcome::Rejected(r) | ChangeOutcome::Replayed(r) => run = r,
                ChangeOutcome::NotFound => {
                    return Err(Error::invalid_input(format!("no run `{}`", input.run_id)))
                }
            }
        }
        if !run.status.task_may_run() {
            complete(deps.tokens.as_ref(), token, &run).await?;
            return Ok(stopped(&run, "the task had already stopped"));
        }
    } else if !run.status.task_may_run() {
        return Ok(stopped(&run, "the task had already stopped"));
    }

    let now = deps.clock.now();
    let Some(task_arn) = run.task_arn.clone() else {
        // Launched but not yet recorded: nothing to poll.
        return Ok(output(
            &run,
            WatchState::Running,
            "waiting for the launch to be recorded",
        ));
    };
    let lookup = deps
        .tasks
        .describe_tasks(std::slice::from_ref(&task_arn))
        .await?
        .into_iter()
        .next()
        .unwrap_or(TaskLookup::Missing {
            task_arn: task_arn.clone(),
            reason: "MISSING".into(),
        });
    match lookup {
        TaskLookup::Found(task) if task.is_stopped() => {
            return observe(deps, &run, task).await;
        }
        // Its container has ended, or it is being stopped (DEPROVISIONING can
        // last minutes): not running, not to be stopped for the deadline —
        // that would record a timeout over how it really ended. Its stop
        // event, or the next poll, says how.
        TaskLookup::Found(task) if task.is_winding_down() => {
            info!(run_id = %run.run_id, status = %task.last_status, "the task is on its way to STOPPED");
            return Ok(output(
                &run,
                WatchState::Running,
                "the task is stopping; its end is recorded when ECS reports it",
            ));
        }
        TaskLookup::Found(_) => {}
        TaskLookup::Missing { reason, .. } => {
            // From the RunTask that started the task: a launch retried
            // minutes after the run was created is as new as any other.
            let age = (now - run.launched_at.unwrap_or(run.created_at)).whole_seconds();
            if age <= deps.config.missing_grace_seconds {
                info!(run_id = %run.run_id, age, "task not visible yet");
            } else {
                warn!(run_id = %run.run_id, %reason, "ECS no longer knows the task");
                let gone = TaskDescription {
                    task_arn: task_arn.clone(),
                    last_status: "STOPPED".into(),
                    stopped_reason: Some(format!(
                        "ECS reports the task {reason}: it stopped and its record expired before Stevedore saw it"
                    )),
                    ..Default::default()
                };
                return observe(deps, &run, gone).await;
            }
        }
    }

    if now >= run.deadline {
        let spec_timeout = (run.deadline - run.created_at).whole_seconds().max(0) as u64;
        let reason =
            StopRequest::Timeout.reason(&format!("timeout {}", format_duration(spec_timeout)));
        deps.tasks.stop_task(&task_arn, &reason).await?;
        let change = RunChange {
            stop_request: Some(StopRequest::Timeout),
            ..RunChange::to(RunStatus::Stopping)
        };
        if let ChangeOutcome::Applied(r) = deps.runs.change_run(&run.run_id, &change).await? {
            run = r;
        }
        info!(run_id = %run.run_id, "deadline passed; stop requested");
        return Ok(output(
            &run,
            WatchState::Stopping,
            "the job passed its timeout; the task is being stopped",
        ));
    }
    Ok(output(&run, WatchState::Running, "the task is running"))
}

async fn observe(deps: &Deps, run: &RunRecord, task: TaskDescription) -> Result<WatchOutput> {
    match observe_stop(deps.runs.as_ref(), deps.tokens.as_ref(), run, task).await? {
        Observed::Recorded { run, .. } => Ok(stopped(&run, "the task stopped")),
        Observed::AlreadyKnown(run) => {
            // Reported by the event meanwhile; it completed the token it saw.
            Ok(stopped(&run, "the task stopped (already reported)"))
        }
        Observed::NotFound => Err(Error::invalid_input(format!("no run `{}`", run.run_id))),
    }
}

fn output(run: &RunRecord, state: WatchState, message: &str) -> WatchOutput {
    WatchOutput {
        run_id: run.run_id.clone(),
        state,
        message: message.to_string(),
    }
}

fn stopped(run: &RunRecord, message: &str) -> WatchOutput {
    output(run, WatchState::Stopped, message)
}
