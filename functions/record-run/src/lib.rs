//! `record-run`: the final, conditional status write of an attempt (exit
//! codes, stop code and reason, timings, the task definition that ran, cost),
//! and the decision what happens next: retry, notify, or done.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stevedore_domain::cost::PriceTable;
use stevedore_domain::failure::{classify_task, Outcome, StopRequest};
use stevedore_domain::flow::{
    failures_before, finalize, free_slot, parse_input, unwrap_state, AttemptInput,
    STOP_GRACE_SECONDS,
};
use stevedore_domain::ports::{Clock, RunStore, TaskRunner};
use stevedore_domain::run::{ChangeOutcome, RunChange, RunRecord};
use stevedore_domain::spec::{Capacity, JobSpec};
use stevedore_domain::task::{TaskDescription, TaskLookup, MISSING_GRACE_SECONDS};
use stevedore_domain::{Error, FailureClass, Result, RunStatus};
use time::OffsetDateTime;
use tracing::{info, warn};

pub struct Deps {
    pub runs: Arc<dyn RunStore>,
    /// To stop a task the failed attempt may have left running.
    pub tasks: Arc<dyn TaskRunner>,
    pub clock: Arc<dyn Clock>,
    pub prices: PriceTable,
    /// The region whose prices apply (`AWS_REGION`).
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordOutput {
    /// The attempt, echoed so the state machine keeps it in its state.
    pub spec: Value,
    pub execution: Option<stevedore_domain::run::ExecutionRef>,
    pub run_id: Option<String>,
    pub job: String,
    pub attempt: u32,
    /// `SUCCEEDED`, `FAILED`, `SKIPPED` or `CANCELLED`.
    pub status: RunStatus,
    /// The failure class (the execution's error name); absent on success.
    pub error: Option<FailureClass>,
    pub cause: String,
    pub exit_code: Option<i32>,
    pub cost_usd: Option<f64>,
    /// Whether the state machine starts another attempt.
    pub retry: bool,
    pub next_attempt: Option<u32>,
    pub retry_delay_seconds: Option<u64>,
    pub next_capacity: Option<Capacity>,
    /// Whether the state machine sends an alert.
    pub notify: bool,
    /// Whether the state machine sends a recovery notice (the run
    /// succeeded after failed runs, and the job asked for `notify.onRecovery`).
    pub notify_recovery: bool,
    /// Failed runs before this success, when a recovery notice is due.
    pub recovered_after: Option<u32>,
    /// The failure class of the last of them.
    pub recovered_from: Option<FailureClass>,
    /// The attempt's duration (created to finished), for the metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u64>,
    /// The task the failed launch had started after all (another invocation
    /// of the launch, retried while the first ran on, started it): the
    /// attempt is not over, and the state machine watches this task.
    #[serde(default)]
    pub adopted: Option<String>,
}

/// The metrics of a recorded attempt as one embedded-metric-format log line
/// (see `stevedore_domain::metrics`); `None` when there is nothing to count.
/// The Lambda writes it to standard output, where CloudWatch Logs extracts it.
pub fn metrics_line(output: &RecordOutput, stack: &str, at: OffsetDateTime) -> Option<String> {
    let run_id = output.run_id.as_deref().unwrap_or("");
    let line = stevedore_domain::metrics::emf(&stevedore_domain::metrics::AttemptMetrics {
        stack,
        job: &output.job,
        run_id,
        attempt: output.attempt,
        status: output.status,
        class: output.error,
        last: !output.retry,
        duration_seconds: output.duration_seconds,
        cost_usd: output.cost_usd,
        logical_time: None,
        at,
    })?;
    Some(line.to_string())
}

pub async fn function_handler(deps: &Deps, event: Value) -> Result<RecordOutput> {
    let input: AttemptInput = parse_input(unwrap_state(event), "record-run")?;
    let run = match input.run_id() {
        Some(id) => deps.runs.get_run(&id).await?,
        None => None,
    };
    let now = deps.clock.now();

    let Some(run) = run else {
        // No record: the spec was invalid, or the launch failed before the
        // run was written. Nothing to store; the execution fails and alerts.
        let Some(error) = &input.error else {
            return Err(Error::invalid_input("record-run needs a runId or an error"));
        };
        // The launch may have taken the job's slot before it failed to
        // write the run: the execution ends here, so free it (a slot this
        // execution does not hold is left alone).
        if let (Some(job), Some(execution)) = (input.job(), &input.execution) {
            deps.runs.release_slot(&job, &execution.id).await?;
        }
        return Ok(RecordOutput {
            spec: input.spec.clone().unwrap_or(Value::Null),
            execution: input.execution.clone(),
            run_id: None,
            job: input.job().unwrap_or_else(|| "(unknown job)".into()),
            attempt: input.attempt.unwrap_or(1),
            status: RunStatus::Failed,
            error: Some(error.class()),
            cause: error.message(),
            exit_code: None,
            cost_usd: None,
            retry: false,
            next_attempt: None,
            retry_delay_seconds: None,
            next_capacity: None,
            notify: true,
            notify_recovery: false,
            recovered_after: None,
            recovered_from: None,
            duration_seconds: None,
            adopted: None,
        });
    };

    let mut task_stopping = false;
    let run = match (&input.error, run.status) {
        // The launch failed after the run was written (or a later step
        // failed). If the attempt's task has already ended by itself, how it
        // ended is the attempt's outcome (the event and the poll were
        // missed); a task still running is stopped, and the failure (not the
        // stop) is the outcome, as it is for a task Stevedore stopped.
        (Some(error), status) if !status.is_terminal() && status != RunStatus::Stopped => {
            let tasks = attempt_tasks(deps, &run, now).await?;
            // A task whose container already ended but that ECS is still
            // taking down is not running: stopping it and recording the
            // caught error would lose how it really ended (an exit 0 made
            // a failure). The state's retry asks again once it is STOPPED.
            if let Some(t) = tasks.iter().find(|t| t.is_winding_down()) {
                return Err(Error::transient(format!(
                    "task {} is {} (desired {}): recording the attempt once ECS reports how it ended",
                    t.task_arn,
                    t.last_status,
                    t.desired_status.as_deref().unwrap_or("RUNNING")
                )));
            }
            // A task that ended by itself says how the attempt ended; so
            // does one Stevedore stopped for the job's deadline (the sweep,
            // while this attempt's launch kept failing). One stopped for any
            // other reason keeps the caught failure as the cause.
            let main = run.main_container();
            let ended = tasks
                .iter()
                .find(|t| {
                    t.is_stopped()
                        && (t.stop_code.as_deref() != Some("UserInitiated")
                            || classify_task(t, main.as_deref(), run.stop_request).class
                                == Some(FailureClass::TimedOut))
                })
                .cloned();
            let running: Vec<&TaskDescription> = tasks.iter().filter(|t| !t.is_stopped()).collect();
            // The launch failed, yet a launch of this attempt started a task
            // that runs, unasked to stop, before the deadline: the job is
            // healthy and is watched, not stopped.
            if input.launch.is_none() && now < run.deadline {
                if let Some(adopted) = adopt(deps, &run, &running).await? {
                    return Ok(adopted_output(&input, &run, adopted));
                }
            }
            if let (Some(task), true) = (ended, running.is_empty()) {
                let outcome =
                    classify_task(&task, run.main_container().as_deref(), run.stop_request);
                let change = RunChange {
                    task_arn: run.task_arn.is_none().then(|| task.task_arn.clone()),
                    task: Some(task),
                    outcome: Some(outcome),
                    ..RunChange::to(RunStatus::Stopped)
                };
                let stopped = match deps.runs.change_run(&run.run_id, &change).await? {
                    ChangeOutcome::Applied(r)
                    | ChangeOutcome::Replayed(r)
                    | ChangeOutcome::Rejected(r) => r,
                    ChangeOutcome::NotFound => run,
                };
                finalize(
                    deps.runs.as_ref(),
                    &deps.prices,
                    &deps.region,
                    &stopped,
                    now,
                )
                .await?
            } else {
                // A task still running past the job's deadline is stopped for
                // that deadline, whatever else went wrong: the attempt timed out.
                let class = if !running.is_empty() && now >= run.deadline {
                    FailureClass::TimedOut
                } else {
                    error.class()
                };
                let stopped = stop_left_running(deps, &run, &running, &class).await?;
                task_stopping = !stopped.is_empty();
                let mut message = error.message();
                if !stopped.is_empty() {
                    message.push_str(&format!(
                        " (Stevedore stopped the task the attempt had left running{}: {})",
                        if class == FailureClass::TimedOut {
                            ", past the job's deadline"
                        } else {
                            ""
                        },
                        stopped.join(", ")
                    ));
                }
                let change = RunChange {
                    outcome: Some(Outcome::failed(class, message, None)),
                    finished_at: Some(now),
                    ..RunChange::to(RunStatus::Failed)
                };
                match deps.runs.change_run(&run.run_id, &change).await? {
                    ChangeOutcome::Applied(r)
                    | ChangeOutcome::Replayed(r)
                    | ChangeOutcome::Rejected(r) => r,
                    ChangeOutcome::NotFound => run,
                }
            }
        }
        (_, RunStatus::Stopped) => {
            finalize(deps.runs.as_ref(), &deps.prices, &deps.region, &run, now).await?
        }
        // A failure recorded before, by an invocation whose answer was
        // lost: a task it stopped may still be winding down, and the next
        // attempt (which holds the same slot) must wait out its grace.
        (Some(_), RunStatus::Failed) => {
            let tasks = attempt_tasks(deps, &run, now).await?;
            task_stopping = tasks.iter().any(TaskDescription::may_run);
            run
        }
        (_, status) if status.is_terminal() => run,
        (None, status) => {
            return Err(Error::invalid_input(format!(
                "run {} is {status}: its task has not stopped, so there is nothing to record yet",
                run.run_id
            )))
        }
        (Some(_), _) => run,
    };
    let spec = input.spec.clone().unwrap_or_else(|| run.spec.clone());
    decide(deps, run, spec, task_stopping).await
}

/// The one task a failed launch left running that the attempt can carry on
/// with: the task the run names, or the only one started for it (then the
/// run is made to name it). `None` when there is none, or several unnamed
/// (those are stopped, as any task a failed attempt leaves).
async fn adopt(
    deps: &Deps,
    run: &RunRecord,
    running: &[&TaskDescription],
) -> Result<Option<String>> {
    let healthy: Vec<&&TaskDescription> = running
        .iter()
        .filter(|t| {
            t.desired_status.as_deref().unwrap_or("RUNNING") == "RUNNING"
                && matches!(
                    t.last_status.as_str(),
                    "PROVISIONING" | "PENDING" | "ACTIVATING" | "RUNNING"
                )
        })
        .collect();
    if let Some(named) = &run.task_arn {
        return Ok(healthy
            .iter()
            .any(|t| &t.task_arn == named)
            .then(|| named.clone()));
    }
    let [only] = healthy.as_slice() else {
        return Ok(None);
    };
    let change = RunChange {
        task_arn: Some(only.task_arn.clone()),
        launched_at: Some(deps.clock.now()),
        ..RunChange::to(RunStatus::Running)
    };
    Ok(match deps.runs.change_run(&run.run_id, &change).await? {
        ChangeOutcome::Applied(_) | ChangeOutcome::Replayed(_) => Some(only.task_arn.clone()),
        ChangeOutcome::Rejected(_) | ChangeOutcome::NotFound => None,
    })
}

/// What record-run returns for an adopted task: the attempt goes on (the
/// state machine launches again, which finds the task and watches it).
fn adopted_output(input: &AttemptInput, run: &RunRecord, task_arn: String) -> RecordOutput {
    info!(run_id = %run.run_id, %task_arn, "the failed launch's task runs: watching it");
    RecordOutput {
        spec: input.spec.clone().unwrap_or_else(|| run.spec.clone()),
        execution: Some(run.execution.clone()),
        run_id: Some(run.run_id.clone()),
        job: run.job.clone(),
        attempt: run.attempt,
        status: RunStatus::Running,
        error: None,
        cause: format!("the launch reported a failure, but task {task_arn} runs: watching it"),
        exit_code: None,
        cost_usd: None,
        retry: false,
        next_attempt: None,
        retry_delay_seconds: None,
        next_capacity: None,
        notify: false,
        notify_recovery: false,
        recovered_after: None,
        recovered_from: None,
        duration_seconds: None,
        adopted: Some(task_arn),
    }
}

/// The attempt's tasks as ECS has them now: the one the run names, or,
/// when the launch failed after RunTask and before the run could say so,
/// every task started with the run's `startedBy` (running or recently stopped).
async fn attempt_tasks(
    deps: &Deps,
    run: &RunRecord,
    now: OffsetDateTime,
) -> Result<Vec<TaskDescription>> {
    match &run.task_arn {
        Some(arn) => {
            let age = (now - run.launched_at.unwrap_or(run.created_at)).whole_seconds();
            let mut tasks = Vec::new();
            for lookup in deps.tasks.describe_tasks(std::slice::from_ref(arn)).await? {
                match lookup {
                    TaskLookup::Found(t) => tasks.push(t),
                    // Not shown yet: how the attempt ended is not known;
                    // the state's retry asks again.
                    TaskLookup::Missing { .. } if age <= MISSING_GRACE_SECONDS => {
                        return Err(Error::transient(format!(
                            "ECS does not show task {arn} yet ({age} s after its launch); recording its attempt again shortly"
                        )))
                    }
                    // Gone: stop it to be sure (ECS takes a stop of a task
                    // it does not know).
                    TaskLookup::Missing { task_arn, reason } => tasks.push(TaskDescription {
                        task_arn,
                        last_status: reason,
                        ..Default::default()
                    }),
                }
            }
            Ok(tasks)
        }
        None => {
            deps.tasks
                .find_tasks(&run.started_by(), run.task_family().as_deref())
                .await
        }
    }
}

/// A failed attempt must not leave a task running unobserved: stops the
/// attempt's running tasks (a task ECS no longer knows needs nothing).
async fn stop_left_running(
    deps: &Deps,
    run: &RunRecord,
    running: &[&TaskDescription],
    class: &FailureClass,
) -> Result<Vec<String>> {
    // A timeout says so in the reason: the stop event may reach task-events
    // first, and the reason is all it has to tell a timeout from a user's stop.
    let reason = match class {
        FailureClass::TimedOut => {
            StopRequest::Timeout.reason("the attempt was recorded before its task was seen to stop")
        }
        _ => format!("Stevedore: the attempt failed ({class}) before its task was seen to stop"),
    };
    let mut stopped = Vec::new();
    for task in running {
        deps.tasks.stop_task(&task.task_arn, &reason).await?;
        warn!(run_id = %run.run_id, task_arn = %task.task_arn, "stopped a task the failed attempt left running");
        stopped.push(task.task_arn.clone());
    }
    Ok(stopped)
}

/// `task_stopping`: this invocation just asked ECS to stop the attempt's
/// task, which may run on through its stop grace.
async fn decide(
    deps: &Deps,
    run: RunRecord,
    raw_spec: Value,
    task_stopping: bool,
) -> Result<RecordOutput> {
    let spec = run.job_spec()?;
    let outcome = run
        .outcome
        .clone()
        .unwrap_or_else(|| Outcome::succeeded(""));
    let class = match run.status {
        RunStatus::Succeeded => None,
        _ => Some(
            outcome
                .class
                .unwrap_or(FailureClass::KilledByInfrastructure),
        ),
    };
    let retry = class.is_some_and(|c| {
        run.status == RunStatus::Failed && spec.should_retry(c, outcome.exit_code, run.attempt)
    });
    let next_attempt = retry.then_some(run.attempt + 1);
    if !retry {
        // The execution is done with the job: free its concurrency slot
        // (once a task just asked to stop is past its grace).
        let now = deps.clock.now();
        free_slot(
            deps.runs.as_ref(),
            &run.job,
            &run.execution.id,
            task_stopping,
            now,
        )
        .await?;
    }
    let notify = match run.status {
        RunStatus::Failed | RunStatus::Cancelled => !retry && spec.notify.on_failure,
        _ => false,
    };
    let (recovered_after, recovered_from) = if run.status == RunStatus::Succeeded
        && spec.notify.on_recovery
    {
        // A store error must not fail a successful run's record: the notice
        // is skipped (and logged), the run is still recorded.
        match failures_before(deps.runs.as_ref(), &run).await {
            Ok((n, class)) if n > 0 => (Some(n), class),
            Ok(_) => (None, None),
            Err(e) => {
                warn!(run_id = %run.run_id, error = %e, "could not count earlier failures; no recovery notice");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    info!(run_id = %run.run_id, status = %run.status, retry, notify, recovered_after, "recorded");
    Ok(RecordOutput {
        spec: raw_spec,
        execution: Some(run.execution.clone()),
        run_id: Some(run.run_id.clone()),
        job: run.job.clone(),
        attempt: run.attempt,
        status: run.status,
        error: class,
        cause: outcome.message.clone(),
        exit_code: outcome.exit_code,
        cost_usd: run.cost.as_ref().map(|c| c.usd),
        retry,
        next_attempt,
        // The next attempt holds the same slot: it waits out a stopped
        // task's grace too, so two of the job's containers never overlap.
        retry_delay_seconds: next_attempt.map(|n| {
            let delay = spec.retry_delay(n);
            if task_stopping {
                delay.max(STOP_GRACE_SECONDS as u64)
            } else {
                delay
            }
        }),
        next_capacity: retry.then(|| next_capacity(&spec, class)),
        notify,
        notify_recovery: recovered_after.is_some(),
        recovered_after,
        recovered_from,
        duration_seconds: run
            .finished_at
            .map(|f| (f - run.created_at).whole_seconds().max(0) as u64),
        adopted: None,
    })
}

/// Spot-with-fallback jobs retry on on-demand after Spot let them down.
fn next_capacity(spec: &JobSpec, class: Option<FailureClass>) -> Capacity {
    match (spec.capacity, class) {
        (
            Capacity::SpotWithFallback,
            Some(FailureClass::SpotInterrupted | FailureClass::CapacityUnavailable),
        ) => Capacity::OnDemand,
        (Capacity::OnDemand, _) => Capacity::OnDemand,
        _ => Capacity::Spot,
    }
}
