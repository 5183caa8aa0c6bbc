//! `reap-execution`: on "Step Functions Execution Status Change" (ABORTED,
//! TIMED_OUT, FAILED) of our state machine, stops any task the execution
//! left running, marks its runs, and frees the job's concurrency slot, so no
//! Fargate task runs unobserved.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stevedore_domain::cost::PriceTable;
use stevedore_domain::failure::{Outcome, StopRequest};
use stevedore_domain::flow::{finalize, free_slot, parse_input, STOP_GRACE_SECONDS};
use stevedore_domain::ports::{Clock, RunStore, TaskRunner};
use stevedore_domain::run::{run_id, ChangeOutcome, ExecutionRef, RunChange, RunRecord};
use stevedore_domain::{FailureClass, JobSpec, Result, RunStatus};
use time::OffsetDateTime;
use tracing::info;

pub const EXECUTION_STATUS_CHANGE: &str = "Step Functions Execution Status Change";

pub struct Deps {
    pub tasks: Arc<dyn TaskRunner>,
    pub runs: Arc<dyn RunStore>,
    pub clock: Arc<dyn Clock>,
    pub prices: PriceTable,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDetail {
    pub execution_arn: String,
    #[serde(default)]
    pub status: String,
    /// The execution's input, as a JSON string (absent when too large).
    #[serde(default)]
    pub input: Option<String>,
    /// Why it ended (StopExecution's `cause`, when one was given).
    #[serde(default)]
    pub cause: Option<String>,
    /// When it started, in epoch milliseconds (`$$.Execution.StartTime`).
    #[serde(default, rename = "startDate")]
    pub start_date: Option<i64>,
}

impl ExecutionDetail {
    /// The job named by the execution's input (a job spec's `job`).
    fn job_of_input(&self) -> Option<String> {
        let input: Value = serde_json::from_str(self.input.as_deref()?).ok()?;
        input.get("job")?.as_str().map(str::to_string)
    }

    /// Every run id the execution's attempts can have, derived as launch-run
    /// derives them: the job and `retry.maxAttempts` from the input, the
    /// identity from the execution's ARN and start time.
    fn derived_run_ids(&self) -> Vec<String> {
        let (Some(input), Some(start)) = (self.input.as_deref(), self.start_date) else {
            return Vec::new();
        };
        let Ok(value) = serde_json::from_str::<Value>(input) else {
            return Vec::new();
        };
        let Ok(spec) = JobSpec::from_value(&value) else {
            return Vec::new();
        };
        let Ok(start_time) =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(start) * 1_000_000)
        else {
            return Vec::new();
        };
        let execution = ExecutionRef {
            id: self.execution_arn.clone(),
            name: self
                .execution_arn
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_string(),
            start_time,
        };
        (1..=spec.retry.max_attempts)
            .map(|attempt| run_id(&spec.job, &execution, attempt))
            .collect()
    }
}

/// The execution's runs as the table has them now. The `by-execution` index
/// is eventually consistent: a run written a moment ago may be missing from
/// it, or listed as it was. So every run it lists, and every run id the
/// execution's attempts can have, is read again from the table itself
/// (a strongly consistent GetItem) before anything is decided.
async fn runs_of(deps: &Deps, detail: &ExecutionDetail) -> Result<Vec<RunRecord>> {
    let mut ids: Vec<String> = deps
        .runs
        .runs_of_execution(&detail.execution_arn)
        .await?
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    for id in detail.derived_run_ids() {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut runs = Vec::new();
    for id in ids {
        if let Some(run) = deps.runs.get_run(&id).await? {
            runs.push(run);
        }
    }
    runs.sort_by_key(|r| r.attempt);
    Ok(runs)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExecutionStatusChange {
    #[serde(rename = "detail-type", default)]
    pub detail_type: String,
    pub detail: ExecutionDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReapOutput {
    pub execution_arn: String,
    /// Runs whose task was stopped and that are now CANCELLED.
    pub cancelled: Vec<String>,
    /// Runs whose task had stopped but were not yet recorded: recorded now.
    pub recorded: Vec<String>,
    pub message: String,
}

pub async fn function_handler(deps: &Deps, event: Value) -> Result<ReapOutput> {
    let event: ExecutionStatusChange = parse_input(event, "reap-execution")?;
    let detail = event.detail;
    let mut out = ReapOutput {
        execution_arn: detail.execution_arn.clone(),
        ..Default::default()
    };
    if event.detail_type != EXECUTION_STATUS_CHANGE
        || !matches!(detail.status.as_str(), "ABORTED" | "TIMED_OUT" | "FAILED")
    {
        out.message = format!("ignored: {} {}", event.detail_type, detail.status);
        return Ok(out);
    }
    let now = deps.clock.now();
    let runs = runs_of(deps, &detail).await?;
    // A task just asked to stop may run on through its stop grace: the slot
    // stays held until then, so the next run cannot start beside it. That
    // includes a task record-run stopped as it recorded the attempt, just
    // before the execution failed (it cut the lease to the grace; freeing
    // the slot outright here would undo that).
    let mut task_stopping = runs.iter().any(|r| {
        r.finished_at
            .is_some_and(|f| now - f < time::Duration::seconds(STOP_GRACE_SECONDS))
    });
    for run in &runs {
        if run.status == RunStatus::Stopped {
            finalize(deps.runs.as_ref(), &deps.prices, &deps.region, run, now).await?;
            out.recorded.push(run.run_id.clone());
            continue;
        }
        if !run.status.task_may_run() {
            continue;
        }
        // A launch cut short after RunTask has a task the run does not name
        // yet: find it by its `startedBy`.
        let arns = match &run.task_arn {
            Some(arn) => vec![arn.clone()],
            None => deps
                .tasks
                .find_tasks(&run.started_by(), run.task_family().as_deref())
                .await?
                .into_iter()
                .filter(|t| !t.is_stopped())
                .map(|t| t.task_arn)
                .collect(),
        };
        let reason = StopRequest::Cancelled.reason(&format!("execution {}", detail.status));
        for arn in &arns {
            deps.tasks.stop_task(arn, &reason).await?;
        }
        // A PENDING run's launch may still be in flight, its task not yet
        // started: launch-run stops such a task when it finds the run
        // cancelled, and the slot stays held through its stop grace.
        task_stopping |= !arns.is_empty() || run.status == RunStatus::Pending;
        let change = RunChange {
            stop_request: Some(StopRequest::Cancelled),
            outcome: Some(Outcome::failed(
                FailureClass::StoppedByUser,
                match detail.cause.as_deref().filter(|c| !c.is_empty()) {
                    Some(cause) => format!(
                        "the execution ended {} while the run was {}: {cause}",
                        detail.status, run.status
                    ),
                    None => format!(
                        "the execution ended {} while the run was {}",
                        detail.status, run.status
                    ),
                },
                None,
            )),
            finished_at: Some(now),
            ..RunChange::to(RunStatus::Cancelled)
        };
        match deps.runs.change_run(&run.run_id, &change).await? {
            ChangeOutcome::Applied(_) => out.cancelled.push(run.run_id.clone()),
            // The task's stop was reported between our read and this write:
            // nobody else will record the run now that the execution ended.
            ChangeOutcome::Rejected(now_run) if now_run.status == RunStatus::Stopped => {
                finalize(
                    deps.runs.as_ref(),
                    &deps.prices,
                    &deps.region,
                    &now_run,
                    now,
                )
                .await?;
                out.recorded.push(run.run_id.clone());
            }
            ChangeOutcome::Rejected(_) | ChangeOutcome::Replayed(_) | ChangeOutcome::NotFound => {}
        }
    }
    // The execution may have taken the job's slot without writing a run
    // (its launch failed in between): the input names the job then.
    let job = runs
        .first()
        .map(|r| r.job.clone())
        .or_else(|| detail.job_of_input());
    if let Some(job) = job {
        free_slot(
            deps.runs.as_ref(),
            &job,
            &detail.execution_arn,
            task_stopping,
            now,
        )
        .await?;
    }
    out.message = format!(
        "execution {}: {} run(s), {} cancelled, {} recorded",
        detail.status,
        runs.len(),
        out.cancelled.len(),
        out.recorded.len()
    );
    info!(execution = %detail.execution_arn, cancelled = out.cancelled.len(), "reaped");
    Ok(out)
}
