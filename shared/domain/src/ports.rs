//! The ports: every side effect a handler has crosses one of these traits.
//! AWS adapters implement them in `stevedore-aws`, local ones in the local
//! engine, in-memory ones in [`crate::memory`] (feature `mocks`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use crate::alert::Alert;
use crate::console::LogStreamRef;
use crate::error::Result;
use crate::run::{ChangeOutcome, CreateOutcome, RunChange, RunQuery, RunRecord, SlotGrant};
use crate::spec::{Capacity, JobSpec, NetworkSpec};
use crate::task::{TaskDescription, TaskLookup};

/// Everything RunTask needs for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub spec: JobSpec,
    pub run_id: String,
    pub client_token: String,
    /// `OnDemand` or `Spot` (a fallback is decided before this).
    pub capacity: Capacity,
    /// Subnets, security groups and public IP, defaults already applied.
    pub network: NetworkSpec,
    pub started_by: String,
    /// The spec's tags plus Stevedore's own.
    pub tags: BTreeMap<String, String>,
}

impl Launch {
    /// Variables every job container gets: `STEVEDORE_RUN_ID`, `STEVEDORE_JOB`,
    /// `STEVEDORE_ATTEMPT`, and with a logical time `STEVEDORE_LOGICAL_TIME`
    /// and `STEVEDORE_LOGICAL_DATE`.
    pub fn run_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("STEVEDORE_RUN_ID", self.run_id.clone()),
            ("STEVEDORE_JOB", self.spec.job.clone()),
            (
                "STEVEDORE_ATTEMPT",
                self.tags
                    .get("stevedore:attempt")
                    .cloned()
                    .unwrap_or_else(|| "1".into()),
            ),
        ];
        if let Some(t) = self.spec.logical_time {
            env.extend(crate::logical::env(t));
        }
        env
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaunchedTask {
    pub task_arn: String,
    pub task: Option<TaskDescription>,
}

/// A task ECS has not been asked to stop, as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunningTask {
    pub task_arn: String,
    pub started_by: String,
    pub created_at: Option<OffsetDateTime>,
    /// The task's tags (Stevedore's `stevedore:*` among them).
    pub tags: BTreeMap<String, String>,
}

#[async_trait]
pub trait TaskRunner: Send + Sync {
    /// Starts the task, idempotently by `launch.client_token`. A RunTask
    /// `failures` entry is an error with its failure class, never success.
    async fn run_task(&self, launch: &Launch) -> Result<LaunchedTask>;
    /// Describes tasks (any number; adapters batch). Unknown tasks come back
    /// as [`TaskLookup::Missing`].
    async fn describe_tasks(&self, task_arns: &[String]) -> Result<Vec<TaskLookup>>;
    /// Asks ECS to stop a task; stopping a stopped task is not an error.
    async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<()>;
    /// The tasks started with exactly this `startedBy`, running or recently
    /// stopped (ECS keeps a stopped task about an hour), described: how a
    /// task whose launch was never recorded is found, and how it ended.
    /// `family` (the task definition family the run names) narrows the
    /// search for stopped ones; without it only running tasks are found.
    async fn find_tasks(
        &self,
        started_by: &str,
        family: Option<&str>,
    ) -> Result<Vec<TaskDescription>>;
    /// Every task of the cluster whose desired status is still RUNNING and
    /// whose `startedBy` begins with `prefix`: what the sweep examines.
    async fn list_running(&self, prefix: &str) -> Result<Vec<RunningTask>>;
}

#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates a run; a retried create of the same id returns the existing one.
    async fn create_run(&self, run: &RunRecord) -> Result<CreateOutcome>;
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>>;
    /// Applies a change if the run's status allows it (see [`RunChange`]).
    async fn change_run(&self, run_id: &str, change: &RunChange) -> Result<ChangeOutcome>;
    /// Runs of one job, newest first.
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>>;
    /// Every run (attempt) of one execution, by attempt.
    async fn runs_of_execution(&self, execution_id: &str) -> Result<Vec<RunRecord>>;
    /// Takes one of a job's `max` concurrency slots for `holder` (an
    /// execution id) until `lease_until`. A holder asking again gets its slot
    /// back with the new lease; an expired lease is free.
    async fn acquire_slot(
        &self,
        job: &str,
        holder: &str,
        max: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<SlotGrant>;
    /// Frees the slot `holder` has, if any.
    async fn release_slot(&self, job: &str, holder: &str) -> Result<()>;
    /// Appends a line to the run's `notes`, whatever its status (what the
    /// sweep did to a run that had already ended). No such run: `false`.
    async fn add_note(&self, run_id: &str, note: &str) -> Result<bool>;
    /// Claims the launch of a PENDING run until `until`, so one invocation
    /// of an attempt's launch runs RunTask at a time. `false` when the run
    /// is not PENDING or another invocation's claim lasts beyond `now`.
    async fn claim_launch(
        &self,
        run_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// Claims one scheduled time of a job (`scheduled`, as the schedule
    /// wrote it) for the execution `execution_id` until `until`: EventBridge
    /// Scheduler delivers at least once, and a second execution started for
    /// the same time must not run the job again. `None` when the claim is
    /// this execution's (now or already); `Some(holder)`, the execution that
    /// holds it, otherwise. A claim past its `until` is free to take.
    async fn claim_scheduled_start(
        &self,
        job: &str,
        scheduled: &str,
        execution_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<String>>;
}

/// Whether a task token was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDelivery {
    Delivered,
    /// The waiting task already completed or timed out: nothing to do.
    AlreadyClosed,
}

/// Where a Step Functions execution stands, as the sweep asks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionState {
    Running,
    /// Ended: `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED` or
    /// `PENDING_REDRIVE` (failed, until someone redrives it).
    Ended(String),
    /// Unknown to Step Functions (never started, or closed longer ago than
    /// it keeps executions).
    Gone,
}

#[async_trait]
pub trait Executions: Send + Sync {
    async fn state(&self, execution_arn: &str) -> Result<ExecutionState>;
}

#[async_trait]
pub trait TaskTokens: Send + Sync {
    async fn send_success(&self, token: &str, output: &Value) -> Result<TokenDelivery>;
    async fn send_failure(&self, token: &str, error: &str, cause: &str) -> Result<TokenDelivery>;
}

#[async_trait]
pub trait Notifier: Send + Sync {
    /// Publishes an alert; returns the message id.
    async fn publish(&self, alert: &Alert) -> Result<String>;
}

/// The end of a run's log, and where the whole log is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    /// Oldest first, as the job wrote them (not yet redacted).
    pub lines: Vec<String>,
    /// The CloudWatch Logs stream, when the log lives there.
    pub stream: Option<LogStreamRef>,
}

#[async_trait]
pub trait LogSource: Send + Sync {
    /// The last `lines` lines of the job container's log.
    async fn tail(&self, run: &RunRecord, lines: usize) -> Result<LogTail>;
}

/// No logs: for deployments without a log source.
pub struct NoLogs;

#[async_trait]
impl LogSource for NoLogs {
    async fn tail(&self, _run: &RunRecord, _lines: usize) -> Result<LogTail> {
        Ok(LogTail::default())
    }
}

/// A secret value. Its `Debug` does not show it, so it cannot end up in a
/// log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The current value of the secret `id` (an ARN or a name).
    async fn secret(&self, id: &str) -> Result<Secret>;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
