//! The control plane's promises, checked on what really happened in a seed
//! (the simulated cluster's tasks, the store's records as they are, what
//! reached the topic and the dead-letter queue).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::Value;
use stevedore_domain::alert::{Alert, AlertKind};
use stevedore_domain::run::RunRecord;
use stevedore_domain::{FailureClass, RunStatus};
use time::OffsetDateTime;

use crate::ecs::SimTask;
use crate::{Ending, ExecutionResult, Violation};

pub struct Facts<'a> {
    pub executions: &'a [ExecutionResult],
    pub tasks: Vec<SimTask>,
    pub runs: Vec<RunRecord>,
    /// The slots held when the last execution had ended: (job, slot, holder, lease until).
    pub slots: Vec<(String, u32, String, OffsetDateTime)>,
    pub alerts: Vec<Alert>,
    pub dead_letters: Vec<Value>,
    /// When the last execution (and its reaper) had ended.
    pub quiet_at: OffsetDateTime,
    pub now: OffsetDateTime,
    /// Seen by the cluster as they happened.
    pub cluster_violations: Vec<(String, String)>,
    /// When a service was down (from, until).
    pub outages: Vec<(OffsetDateTime, OffsetDateTime)>,
    /// The control plane's `CHECK_INTERVAL_SECONDS`.
    pub check_interval_seconds: u64,
    /// When each run's record first became terminal.
    pub terminal_at: BTreeMap<String, OffsetDateTime>,
    /// The share of calls that fail on their own (0 in a calm seed, 0.35
    /// in the worst storm).
    pub fault_rate: f64,
}

pub const TASKS_STOPPED: &str = "every task started is stopped";
pub const NO_ORPHAN: &str = "no task outlives its run";
/// How long a task may run on after its run ended or its deadline passed:
/// the sweep's grace and several of its rounds (in a storm, where a third
/// of all calls fail, most rounds do).
pub const ORPHAN_BOUND: time::Duration = time::Duration::minutes(60);
pub const EXECUTIONS_END: &str = "every execution ends";
pub const ONE_RECORD: &str = "every attempt ends with one terminal record";
pub const RECORD_AGREES: &str = "the record agrees with the task";
pub const ALERTED: &str = "every final failure is alerted";
pub const NO_FALSE_ALERT: &str = "a success is not alerted";
pub const SLOTS_FREE: &str = "every slot is free at the end";
pub const NO_EARLY_STOP: &str =
    "Stevedore stops a task only for its deadline, a cancel, or its execution's end";
pub const CLASS_AGREES: &str = "the recorded failure class says how the task ended";
pub const RECORDED_IN_TIME: &str =
    "when AWS answers, a task's end is recorded within its check interval and RECORD_BOUND";
/// How long past the job's check interval (the poll that catches a lost
/// event) a task's end may take to be recorded while no service is down:
/// retried handlers in a storm of failing calls, the poll's own delay.
/// "AWS answers": no outage, and at most this share of calls failing.
pub const ANSWERING_FAULT_RATE: f64 = 0.05;
pub const RECORD_BOUND: time::Duration = time::Duration::minutes(5);
pub const ONCE_PER_SCHEDULED_TIME: &str =
    "one execution per job and scheduled time runs tasks, however often Scheduler delivers it";

fn violation(invariant: &str, detail: String) -> Violation {
    Violation {
        invariant: invariant.into(),
        detail,
    }
}

pub fn check(f: &Facts) -> Vec<Violation> {
    let mut out: Vec<Violation> = f
        .cluster_violations
        .iter()
        .map(|(i, d)| violation(i, d.clone()))
        .collect();
    let by_run: BTreeMap<&str, &RunRecord> =
        f.runs.iter().map(|r| (r.run_id.as_str(), r)).collect();
    let by_execution: BTreeMap<&str, &ExecutionResult> =
        f.executions.iter().map(|e| (e.arn.as_str(), e)).collect();
    // A reaper event that landed in the dead-letter queue is kept and
    // alarmed, not lost: its runs may wait there for an operator.
    let parked = |run: &RunRecord| {
        by_execution
            .get(run.execution.id.as_str())
            .is_some_and(|e| e.reap_dead_lettered)
    };

    for t in &f.tasks {
        if t.stopped.is_none() {
            let run = by_run.get(t.launch.run_id.as_str());
            out.push(violation(
                TASKS_STOPPED,
                format!(
                    "task {} of run {} is still {} ({}); its run is {}",
                    t.desc.task_arn,
                    t.launch.run_id,
                    if t.stop_requested.is_some() {
                        "stopping"
                    } else {
                        "running"
                    },
                    t.desc.stopped_reason.as_deref().unwrap_or("no stop asked"),
                    run.map(|r| r.status.to_string())
                        .unwrap_or_else(|| "not recorded".into()),
                ),
            ));
        }
    }

    for t in &f.tasks {
        let Some(run) = by_run.get(t.launch.run_id.as_str()) else {
            continue;
        };
        let ended = run.finished_at.filter(|_| run.status.is_terminal());
        let due = ended.map_or(run.deadline, |e| e.min(run.deadline));
        let alive_until = t.desc.stopping_at.or(t.desc.stopped_at).unwrap_or(f.now);
        if alive_until > due + ORPHAN_BOUND {
            out.push(violation(
                NO_ORPHAN,
                format!(
                    "task {} ran on until {} though its run {} was {} at {} (deadline {})",
                    t.desc.task_arn,
                    alive_until,
                    run.run_id,
                    run.status,
                    ended
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "not ended".into()),
                    run.deadline
                ),
            ));
        }
    }

    // A blip in Lambda, DynamoDB or ECS is Stevedore's trouble, not the
    // job's: a task may be stopped before its deadline only when its run
    // was cancelled or its execution had ended.
    for t in &f.tasks {
        let (Some((at, reason)), Some(run)) = (&t.stop_asked, by_run.get(t.launch.run_id.as_str()))
        else {
            continue;
        };
        let execution_ended = by_execution
            .get(run.execution.id.as_str())
            .and_then(|e| e.ended_at)
            .is_some_and(|ended| ended <= *at);
        if *at < run.deadline && run.status != RunStatus::Cancelled && !execution_ended {
            out.push(violation(
                NO_EARLY_STOP,
                format!(
                    "task {} of run {} was stopped at {at}, before its deadline {}, while its execution ran ({reason}); the run is {} ({})",
                    t.desc.task_arn,
                    run.run_id,
                    run.deadline,
                    run.status,
                    run.outcome
                        .as_ref()
                        .map(|o| o.message.as_str())
                        .unwrap_or("no outcome")
                ),
            ));
        }
    }

    // A task that ended by itself is recorded within a bound while AWS
    // answers: the event, or the poll of the job's check interval when the
    // event is lost, then the record (retried through failing calls).
    for t in &f.tasks {
        let (true, Some(stopped), Some(run)) = (
            t.ended_by_itself,
            t.desc.stopped_at,
            by_run.get(t.launch.run_id.as_str()),
        ) else {
            continue;
        };
        if run.task_arn.as_deref() != Some(t.desc.task_arn.as_str()) {
            continue;
        }
        let Ok(spec) = run.job_spec() else { continue };
        let bound = time::Duration::seconds(spec.check_seconds(f.check_interval_seconds) as i64)
            + RECORD_BOUND;
        // An outage in the window, or an execution aborted meanwhile, is
        // outside the promise (the reaper records such a run).
        let troubled = f
            .outages
            .iter()
            .any(|(from, until)| *from <= stopped + bound && *until >= stopped)
            || by_execution
                .get(run.execution.id.as_str())
                .is_some_and(|e| e.ending == Ending::Aborted);
        if troubled || f.fault_rate > ANSWERING_FAULT_RATE {
            continue;
        }
        let recorded = f.terminal_at.get(&run.run_id).copied();
        if recorded.is_none_or(|r| r > stopped + bound) {
            out.push(violation(
                RECORDED_IN_TIME,
                format!(
                    "task {} of run {} stopped at {stopped}; its end was recorded {} (the bound: {} s)",
                    t.desc.task_arn,
                    run.run_id,
                    recorded.map_or("never".to_string(), |r| format!(
                        "at {r}, {} s later",
                        (r - stopped).whole_seconds()
                    )),
                    bound.whole_seconds()
                ),
            ));
        }
    }

    // EventBridge Scheduler delivers at least once: the tasks of one
    // scheduled time all belong to one execution.
    let mut per_time: BTreeMap<(&str, &str), std::collections::BTreeSet<&str>> = BTreeMap::new();
    for t in &f.tasks {
        let Some(run) = by_run.get(t.launch.run_id.as_str()) else {
            continue;
        };
        if let Some(at) = run.spec.get("scheduledTime").and_then(Value::as_str) {
            per_time
                .entry((run.job.as_str(), at))
                .or_default()
                .insert(run.execution.id.as_str());
        }
    }
    for ((job, at), executions) in per_time {
        if executions.len() > 1 {
            out.push(violation(
                ONCE_PER_SCHEDULED_TIME,
                format!(
                    "{job}'s scheduled time {at} ran tasks in {} executions: {}",
                    executions.len(),
                    executions.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }

    for e in f.executions {
        if e.ending == Ending::Unfinished {
            out.push(violation(
                EXECUTIONS_END,
                format!("execution {} still running after 3 days", e.arn),
            ));
        }
    }

    for run in &f.runs {
        if !run.status.is_terminal() && !parked(run) {
            out.push(violation(
                ONE_RECORD,
                format!(
                    "run {} (attempt {}) left {} ({})",
                    run.run_id,
                    run.attempt,
                    run.status,
                    run.outcome
                        .as_ref()
                        .map(|o| o.message.as_str())
                        .unwrap_or("no outcome")
                ),
            ));
        }
        let task = f.tasks.iter().find(|t| t.launch.run_id == run.run_id);
        agreement(run, task, &mut out);
    }

    for e in f.executions {
        let failure_alerts = f
            .alerts
            .iter()
            .filter(|a| a.kind == AlertKind::Failure && a.execution_arn.as_deref() == Some(&e.arn))
            .count();
        let kept = f
            .dead_letters
            .iter()
            .filter(|d| d["execution"]["id"].as_str() == Some(&e.arn))
            .count();
        match &e.ending {
            Ending::Failed { error } if failure_alerts + kept == 0 => out.push(violation(
                ALERTED,
                format!(
                    "execution {} failed ({error}) and neither an alert nor a dead letter says so",
                    e.arn
                ),
            )),
            Ending::Succeeded if failure_alerts > 0 => out.push(violation(
                NO_FALSE_ALERT,
                format!(
                    "execution {} succeeded but {failure_alerts} failure alert(s) went out",
                    e.arn
                ),
            )),
            _ => {}
        }
    }

    for (job, slot, holder, until) in &f.slots {
        let parked = by_execution
            .get(holder.as_str())
            .is_some_and(|e| e.reap_dead_lettered);
        // A slot whose task was just asked to stop stays held through the
        // stop's grace (flow::STOP_GRACE_SECONDS), then frees itself.
        let grace = time::Duration::seconds(stevedore_domain::flow::STOP_GRACE_SECONDS);
        if *until > f.quiet_at + grace && !parked {
            out.push(violation(
                SLOTS_FREE,
                format!(
                    "slot {slot} of {job} still held by {holder} (lease until {until}) when every execution had ended"
                ),
            ));
        }
    }
    out
}

/// The record of an attempt says what its task did.
fn agreement(run: &RunRecord, task: Option<&SimTask>, out: &mut Vec<Violation>) {
    let exit = |t: &SimTask| t.desc.containers.first().and_then(|c| c.exit_code);
    let clean = |t: &SimTask| {
        t.ended_by_itself
            && exit(t) == Some(0)
            && t.desc.stop_code.as_deref() == Some("EssentialContainerExited")
    };
    match (run.status, task) {
        (RunStatus::Succeeded, None) => out.push(violation(
            RECORD_AGREES,
            format!("run {} is SUCCEEDED but no task ran for it", run.run_id),
        )),
        (RunStatus::Succeeded, Some(t)) if !clean(t) => out.push(violation(
            RECORD_AGREES,
            format!(
                "run {} is SUCCEEDED but its task ended {:?} with exit {:?} ({})",
                run.run_id,
                t.desc.stop_code,
                exit(t),
                if t.ended_by_itself {
                    "by itself"
                } else {
                    "stopped"
                }
            ),
        )),
        (RunStatus::Failed, Some(t)) if clean(t) => out.push(violation(
            RECORD_AGREES,
            format!(
                "run {} is FAILED ({}) but its task exited 0 by itself",
                run.run_id,
                run.outcome
                    .as_ref()
                    .map(|o| o.message.as_str())
                    .unwrap_or("no outcome")
            ),
        )),
        (RunStatus::Failed, Some(t)) => {
            let class = run.outcome.as_ref().and_then(|o| o.class);
            if let Some(expected) = expected_class(run, t) {
                if class != Some(expected) {
                    out.push(violation(
                        CLASS_AGREES,
                        format!(
                            "run {} is recorded {class:?}, but its task ended {:?} with exit {:?} ({}): {expected} ({})",
                            run.run_id,
                            t.desc.stop_code,
                            exit(t),
                            if t.ended_by_itself { "by itself" } else { "stopped" },
                            run.outcome.as_ref().map(|o| o.message.as_str()).unwrap_or("no outcome")
                        ),
                    ));
                }
            }
            let recorded = run.outcome.as_ref().and_then(|o| o.exit_code);
            if recorded.is_some() && t.stopped.is_some() && recorded != exit(t) {
                out.push(violation(
                    RECORD_AGREES,
                    format!(
                        "run {} records exit {recorded:?}, its task exited {:?}",
                        run.run_id,
                        exit(t)
                    ),
                ));
            }
        }
        _ => {}
    }
}

/// The failure class a failed attempt must carry, from how its task really
/// ended; `None` where more than one is right.
fn expected_class(run: &RunRecord, t: &SimTask) -> Option<FailureClass> {
    t.stopped?;
    if t.ended_by_itself {
        let exit = t.desc.containers.first().and_then(|c| c.exit_code);
        return match (t.desc.stop_code.as_deref(), exit) {
            (Some("SpotInterruption"), _) => Some(FailureClass::SpotInterrupted),
            (Some("TaskFailedToStart"), _) => Some(FailureClass::StartFailed),
            (_, Some(137)) => Some(FailureClass::OutOfMemory),
            (_, Some(0)) | (_, None) => None,
            (_, Some(_)) => Some(FailureClass::ExitedNonZero),
        };
    }
    // Stopped by Stevedore: past its deadline, that is the reason.
    match &t.stop_asked {
        Some((at, _)) if *at >= run.deadline => Some(FailureClass::TimedOut),
        _ => None,
    }
}

/// A digest of what happened, to show a seed replays exactly.
pub fn digest(f: &Facts) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in &f.tasks {
        t.desc.task_arn.hash(&mut h);
        t.launch.run_id.hash(&mut h);
        format!("{:?}{:?}", t.desc.stopped_at, t.desc.stop_code).hash(&mut h);
    }
    for r in &f.runs {
        r.run_id.hash(&mut h);
        r.status.as_str().hash(&mut h);
        format!("{:?}{:?}", r.finished_at, r.outcome).hash(&mut h);
    }
    for e in f.executions {
        format!("{e:?}").hash(&mut h);
    }
    f.alerts.len().hash(&mut h);
    f.dead_letters.len().hash(&mut h);
    f.now.unix_timestamp_nanos().hash(&mut h);
    h.finish()
}
