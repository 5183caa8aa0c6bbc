//! Steps more than one handler takes, written once over the ports: observing
//! a stopped task (and completing the waiting state), and recording a run's
//! final status.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::cost::PriceTable;
use crate::error::Result;
use crate::failure::{classify_task, Outcome};
use crate::lifecycle::RunStatus;
use crate::ports::{RunStore, TaskTokens, TokenDelivery};
use crate::run::{ChangeOutcome, RunChange, RunRecord};
use crate::task::TaskDescription;

/// What the waiting state receives when the task has stopped: small, so the
/// console stays readable; the details are in the run record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFinished {
    pub run_id: String,
    /// `Succeeded`, or the failure class.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub message: String,
}

impl TaskFinished {
    pub fn of(run: &RunRecord) -> TaskFinished {
        let outcome = run
            .outcome
            .clone()
            .unwrap_or_else(|| Outcome::succeeded(""));
        TaskFinished {
            run_id: run.run_id.clone(),
            result: outcome
                .class
                .map(|c| c.as_str().to_string())
                .unwrap_or_else(|| "Succeeded".into()),
            exit_code: outcome.exit_code,
            message: outcome.message,
        }
    }
}

/// The result of observing a stopped task.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// This call moved the run to STOPPED.
    Recorded {
        run: RunRecord,
        token: Option<TokenDelivery>,
    },
    /// The run had already left RUNNING/STOPPING: a duplicate or late report.
    AlreadyKnown(RunRecord),
    NotFound,
}

/// Classifies a stopped task, moves its run to STOPPED (conditionally) and,
/// if this call made the move and a token is stored, completes the waiting
/// state. Whoever makes the move completes the token, so a run is reported
/// exactly once whichever of the event and the poll comes first.
pub async fn observe_stop(
    store: &dyn RunStore,
    tokens: &dyn TaskTokens,
    run: &RunRecord,
    task: TaskDescription,
) -> Result<Observed> {
    let main = run.main_container();
    let outcome = classify_task(&task, main.as_deref(), run.stop_request);
    let change = RunChange {
        task: Some(task),
        outcome: Some(outcome),
        ..RunChange::to(RunStatus::Stopped)
    };
    match store.change_run(&run.run_id, &change).await? {
        ChangeOutcome::Applied(new) => {
            info!(run_id = %new.run_id, result = %TaskFinished::of(&new).result, "task stopped");
            let token = match &new.task_token {
                Some(t) => Some(complete(tokens, t, &new).await?),
                None => None,
            };
            Ok(Observed::Recorded { run: new, token })
        }
        ChangeOutcome::Replayed(current) | ChangeOutcome::Rejected(current) => {
            info!(run_id = %current.run_id, status = %current.status, "stop already known");
            // Whoever recorded the stop may have died before completing the
            // waiting state: complete it again (a state that moved on
            // answers AlreadyClosed), rather than leave the execution
            // waiting for its next poll.
            if current.status == RunStatus::Stopped {
                if let Some(t) = &current.task_token {
                    complete(tokens, t, &current).await?;
                }
            }
            Ok(Observed::AlreadyKnown(current))
        }
        ChangeOutcome::NotFound => Ok(Observed::NotFound),
    }
}

/// How long a job's slot stays held after Stevedore asked ECS to stop its
/// task: ECS sends SIGTERM and waits up to the task's stop timeout (30 s by
/// default on Fargate, 120 s at most) before SIGKILL, and the container may
/// run until then. Freeing the slot sooner would let the next run of the
/// job start beside it.
pub const STOP_GRACE_SECONDS: i64 = 120;

/// Frees an execution's slot of `job`: at once, or, when a task of the
/// execution was just asked to stop, when its stop grace is over (the
/// lease is cut to then). `acquire_slot` with `max` 0 only renews a slot the
/// holder has, so a slot it no longer holds is left alone.
pub async fn free_slot(
    store: &dyn RunStore,
    job: &str,
    holder: &str,
    task_stopping: bool,
    now: time::OffsetDateTime,
) -> Result<()> {
    if task_stopping {
        let until = now + time::Duration::seconds(STOP_GRACE_SECONDS);
        store.acquire_slot(job, holder, 0, until, now).await?;
        Ok(())
    } else {
        store.release_slot(job, holder).await
    }
}

/// Completes a waiting state with the run's result.
pub async fn complete(
    tokens: &dyn TaskTokens,
    token: &str,
    run: &RunRecord,
) -> Result<TokenDelivery> {
    let payload = serde_json::to_value(TaskFinished::of(run)).unwrap_or_default();
    let delivery = tokens.send_success(token, &payload).await?;
    if delivery == TokenDelivery::AlreadyClosed {
        warn!(run_id = %run.run_id, "the waiting state had already moved on");
    }
    Ok(delivery)
}

/// Moves a STOPPED run to its final status, with its cost. A run already
/// final is returned as it is (replays change nothing).
pub async fn finalize(
    store: &dyn RunStore,
    prices: &PriceTable,
    region: &str,
    run: &RunRecord,
    now: OffsetDateTime,
) -> Result<RunRecord> {
    if run.status.is_terminal() {
        return Ok(run.clone());
    }
    let outcome = run
        .outcome
        .clone()
        .unwrap_or_else(|| Outcome::succeeded(""));
    let to = if outcome.is_success() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    let cost = run
        .task
        .as_ref()
        .and_then(|t| prices.estimate_task(region, t));
    let finished_at = run.task.as_ref().and_then(|t| t.stopped_at).unwrap_or(now);
    let change = RunChange {
        cost,
        finished_at: Some(finished_at),
        ..RunChange::to(to)
    };
    match store.change_run(&run.run_id, &change).await? {
        ChangeOutcome::Applied(r) | ChangeOutcome::Replayed(r) | ChangeOutcome::Rejected(r) => {
            Ok(r)
        }
        ChangeOutcome::NotFound => Err(crate::Error::invalid_input(format!(
            "run {} not found",
            run.run_id
        ))),
    }
}

/// The `{"Error", "Cause"}` object a Catch puts in the state's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateError {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

impl StateError {
    /// The failure class the error names; runtime errors (`States.*`,
    /// `Lambda.*`) count as `Transient`.
    pub fn class(&self) -> crate::FailureClass {
        self.error.parse().unwrap_or(crate::FailureClass::Transient)
    }

    /// The readable message: a Lambda error's `Cause` is JSON with an
    /// `errorMessage`; anything else is shown as it is.
    pub fn message(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.cause)
            .ok()
            .and_then(|v| {
                v.get("errorMessage")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| {
                if self.cause.is_empty() {
                    self.error.clone()
                } else {
                    self.cause.clone()
                }
            })
    }
}

/// The run a later step points at (`$.launch` or `$.record` in the state).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRef {
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub cause: Option<String>,
    /// Failed runs before this successful one (a recovery notice is due).
    #[serde(default)]
    pub recovered_after: Option<u32>,
    /// The failure class of the last of those runs.
    #[serde(default)]
    pub recovered_from: Option<crate::FailureClass>,
}

/// What a step after launch reads from the state machine's state: the
/// attempt (`spec`, `execution`, `attempt`), what earlier steps said
/// (`launch`, `record`) and, after a Catch, the error. Steps get the whole
/// state and take what they need; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<crate::run::ExecutionRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<StepRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<StepRef>,
    /// The error a Catch put in the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StateError>,
}

impl AttemptInput {
    /// The run this input is about: named, from an earlier step, or derived
    /// from job, execution and attempt (a launch that failed after writing it).
    pub fn run_id(&self) -> Option<String> {
        let named = [
            self.run_id.as_ref(),
            self.record.as_ref().and_then(|r| r.run_id.as_ref()),
            self.launch.as_ref().and_then(|l| l.run_id.as_ref()),
        ];
        if let Some(id) = named.into_iter().flatten().next() {
            return Some(id.clone());
        }
        let job = self.job()?;
        let execution = self.execution.as_ref()?;
        Some(crate::run::run_id(
            &job,
            execution,
            self.attempt.unwrap_or(1),
        ))
    }

    /// The failure this input reports: a caught error, or what record-run decided.
    pub fn failure(&self) -> Option<StateError> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        let record = self.record.as_ref()?;
        Some(StateError {
            error: record.error.clone()?,
            cause: record.cause.clone().unwrap_or_default(),
        })
    }

    /// The job name, if the spec has a usable one (even an invalid spec may).
    pub fn job(&self) -> Option<String> {
        let job = self.spec.as_ref()?.get("job")?.as_str()?;
        let valid = !job.is_empty()
            && job.len() <= 64
            && job
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        valid.then(|| job.to_string())
    }
}

/// Keys the state machine adds to a run's state (never job spec fields).
const STATE_KEYS: &[&str] = &[
    "error",
    "launch",
    "record",
    "finished",
    "alert",
    "alertError",
];

/// A step's input as the state machine sends it: `{"input": <state>,
/// "execution": <from the context object>}`. On the first attempt the state
/// is the execution input — the job spec itself, plus whatever a Catch
/// added; later it is `{spec, attempt, capacity, ...}`. Either way this gives
/// `{spec, execution, attempt, ...}`. A payload without `input` is returned
/// as it is (handlers called directly, as in tests).
pub fn unwrap_state(payload: serde_json::Value) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let Value::Object(mut outer) = payload else {
        return payload;
    };
    let Some(input) = outer.remove("input") else {
        return Value::Object(outer);
    };
    let execution = outer.remove("execution");
    let mut state = match input {
        Value::Object(map) if map.contains_key("spec") => map,
        Value::Object(map) => {
            let mut spec = map.clone();
            let mut state = Map::new();
            for key in STATE_KEYS {
                if let Some(v) = spec.remove(*key) {
                    state.insert((*key).to_string(), v);
                }
            }
            state.insert("spec".into(), Value::Object(spec));
            state.insert("attempt".into(), json!(1));
            state
        }
        other => {
            let mut state = Map::new();
            state.insert("spec".into(), other);
            state.insert("attempt".into(), json!(1));
            state
        }
    };
    if let Some(e) = execution {
        state.entry("execution").or_insert(e);
    }
    Value::Object(state)
}

/// Reads a handler's input, with a named error saying what is wrong.
pub fn parse_input<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| crate::Error::invalid_input(format!("the {what} input is not usable: {e}")))
}

/// How many of the job's executions before `run`'s failed in a row, and
/// the failure class of the newest of them: what a recovery notice says.
/// An execution counts by its last attempt; skipped and unfinished
/// executions are passed over; the first success ends the count. Looks at
/// the newest `RECOVERY_LOOKBACK` runs.
pub async fn failures_before(
    runs: &dyn RunStore,
    run: &RunRecord,
) -> Result<(u32, Option<crate::FailureClass>)> {
    let recent = runs
        .list_runs(&crate::run::RunQuery {
            job: run.job.clone(),
            status: None,
            limit: RECOVERY_LOOKBACK,
        })
        .await?;
    let mut seen = std::collections::BTreeSet::new();
    seen.insert(run.execution.id.clone());
    let (mut failed, mut last_class) = (0, None);
    for r in recent.iter().filter(|r| r.created_at <= run.created_at) {
        // Newest first: the first run of an execution seen is its last attempt.
        if !seen.insert(r.execution.id.clone()) {
            continue;
        }
        match r.status {
            RunStatus::Succeeded => break,
            RunStatus::Failed | RunStatus::Cancelled => {
                failed += 1;
                if last_class.is_none() {
                    last_class = r.outcome.as_ref().and_then(|o| o.class);
                }
            }
            _ => {}
        }
    }
    Ok((failed, last_class))
}

/// Runs [`failures_before`] reads.
pub const RECOVERY_LOOKBACK: u32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    /// What notify-failure and record-run read from a state: the failure (a
    /// caught error first, else record-run's decision) and a job name only
    /// when it is one (a name an invalid spec carries may be anything).
    #[test]
    fn an_attempts_failure_and_job_come_from_its_state() {
        use serde_json::json;
        let input = |v: serde_json::Value| -> AttemptInput { serde_json::from_value(v).unwrap() };
        let caught = input(
            json!({"error": {"Error": "Transient", "Cause": "timed out"},
            "record": {"error": "ExitedNonZero", "cause": "exit 3"}}),
        );
        assert_eq!(caught.failure().map(|e| e.error), Some("Transient".into()));
        let decided = input(json!({"record": {"error": "ExitedNonZero", "cause": "exit 3"}}));
        let failure = decided.failure().expect("record-run's decision");
        assert_eq!(
            (failure.error.as_str(), failure.cause.as_str()),
            ("ExitedNonZero", "exit 3")
        );
        assert_eq!(input(json!({"record": {"cause": "ok"}})).failure(), None);

        let job = |name: &str| input(json!({"spec": {"job": name}})).job();
        assert_eq!(job("orders_daily-2"), Some("orders_daily-2".into()));
        assert_eq!(job(&"j".repeat(64)), Some("j".repeat(64)));
        for bad in ["", "orders daily", "orders/../x", &"j".repeat(65)] {
            assert_eq!(job(bad), None, "{bad:?}");
        }
        assert_eq!(input(json!({"spec": {"job": 7}})).job(), None);
    }

    #[test]
    fn step_inputs_are_unwrapped_for_first_and_later_attempts() {
        use serde_json::json;
        let exec = json!({"id": "arn:e", "name": "e", "startTime": "2026-11-24T06:00:00Z"});
        let first = unwrap_state(
            json!({"input": {"job": "j", "taskDefinition": "t", "error": {"Error": "X"}}, "execution": exec}),
        );
        assert_eq!(
            first,
            json!({"spec": {"job": "j", "taskDefinition": "t"}, "attempt": 1, "error": {"Error": "X"}, "execution": exec})
        );
        let later = unwrap_state(
            json!({"input": {"spec": {"job": "j"}, "attempt": 2, "capacity": "on-demand"}, "execution": exec}),
        );
        assert_eq!(
            later,
            json!({"spec": {"job": "j"}, "attempt": 2, "capacity": "on-demand", "execution": exec})
        );
        let odd = unwrap_state(json!({"input": [1, 2], "execution": exec}));
        assert_eq!(odd["spec"], json!([1, 2]));
        let direct = json!({"runId": "r"});
        assert_eq!(unwrap_state(direct.clone()), direct);
    }

    #[test]
    fn lambda_causes_are_unwrapped() {
        let e = StateError {
            error: "ExitedNonZero".into(),
            cause: r#"{"errorType":"ExitedNonZero","errorMessage":"container `app` exited with code 3"}"#.into(),
        };
        assert_eq!(e.class(), crate::FailureClass::ExitedNonZero);
        assert_eq!(e.message(), "container `app` exited with code 3");
        let runtime = StateError {
            error: "States.Timeout".into(),
            cause: String::new(),
        };
        assert_eq!(runtime.class(), crate::FailureClass::Transient);
        assert_eq!(runtime.message(), "States.Timeout");
    }
}
