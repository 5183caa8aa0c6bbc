//! `launch-run`: validates the job spec, takes the job's concurrency slot,
//! records the run and starts its Fargate task (idempotently, by client token).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stevedore_domain::failure::{Outcome, STOP_REASON_PREFIX};
use stevedore_domain::flow::{free_slot, parse_input, unwrap_state};
use stevedore_domain::ports::{Clock, Launch, RunStore, TaskRunner};
use stevedore_domain::run::{
    client_token, run_id, ChangeOutcome, CreateOutcome, ExecutionRef, RunChange, RunRecord,
    SlotGrant, STACK_TAG,
};
use stevedore_domain::spec::{
    job_stack_family, task_definition_family, Capacity, JobSpec, WhenBusy,
};
use stevedore_domain::task::format_time;
use stevedore_domain::{Error, FailureClass, Result, RunStatus};
use tracing::{info, warn};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often the waiting state wakes up to poll when no event came.
    pub check_interval_seconds: u64,
    /// How long run records are kept (TTL).
    pub retention_days: u32,
    /// The stack's name (`STACK_NAME`), tagged on every task as
    /// `stevedore:stack`: the sweep stops a task without a run record only
    /// when it carries its own stack's tag.
    pub stack: Option<String>,
    /// The task definitions this stack's executions may run; `None` (local
    /// mode, tests) lets a spec name any.
    pub task_definitions: Option<TaskDefinitions>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            check_interval_seconds: 900,
            retention_days: 400,
            stack: None,
            task_definitions: None,
        }
    }
}

/// Which task definitions a deployed stack runs: each job stack's job its
/// own definition (family `stevedore-<stack>_<job>`, which no other job's
/// run may name: starting an execution must not run one job's code under
/// another job's role), and the definitions listed by hand in the
/// `TaskDefinitionArns` parameter, which any job may name. The function's
/// `ecs:RunTask` permission is scoped to the same definitions
/// (`template.yaml`); this check names the mistake before IAM refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinitions {
    pub stack: String,
    /// The hand-made definitions: ARNs, each with a revision, `:*`, or a
    /// trailing `*` in the family.
    pub listed: Vec<String>,
}

impl TaskDefinitions {
    /// `TASK_DEFINITIONS`: comma-separated task definition ARNs.
    pub fn parse(stack: &str, listed: &str) -> std::result::Result<TaskDefinitions, String> {
        let mut arns = Vec::new();
        for arn in listed.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if listed_family(arn).is_none() {
                return Err(format!(
                    "TASK_DEFINITIONS holds `{arn}`: give task definition ARNs, comma-separated, each with its revision or `:*` (arn:aws:ecs:eu-west-1:123456789012:task-definition/etl:*), a trailing `*` allowed in the family (task-definition/etl-*)"
                ));
            }
            arns.push(arn.to_string());
        }
        Ok(TaskDefinitions {
            stack: stack.to_string(),
            listed: arns,
        })
    }

    /// Whether `spec` may run its task definition. The revision is left to
    /// IAM: a listed `etl:3` lets the check pass for `etl:4`, which RunTask
    /// then refuses.
    pub fn check(&self, spec: &JobSpec) -> Result<()> {
        let family = task_definition_family(&spec.task_definition);
        let own = job_stack_family(&self.stack, &spec.job);
        let listed = self
            .listed
            .iter()
            .filter_map(|arn| listed_family(arn))
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => family.starts_with(prefix),
                None => family == pattern,
            });
        if family == own || listed {
            return Ok(());
        }
        let other_job = family
            .strip_prefix(&job_stack_family(&self.stack, ""))
            .map(|job| {
                format!(
                    " it is job `{job}`'s definition, which a run of `{}` may not use;",
                    spec.job
                )
            })
            .unwrap_or_default();
        Err(Error::new(
            FailureClass::InvalidJobSpec,
            format!(
                "taskDefinition `{}` is not one this stack runs for job `{}`:{other_job} a job stack's job runs its own definition (family `{own}`), and definitions made by hand must be listed in the stack's TaskDefinitionArns parameter (listed now: {})",
                spec.task_definition,
                spec.job,
                if self.listed.is_empty() {
                    "none".to_string()
                } else {
                    self.listed.join(", ")
                }
            ),
        ))
    }
}

/// The family pattern of a listed task definition ARN (`etl`, `etl-*`),
/// or `None` when it is not one.
fn listed_family(arn: &str) -> Option<&str> {
    let (head, tail) = arn.split_once(":task-definition/")?;
    if !head.starts_with("arn:") || !head.contains(":ecs:") {
        return None;
    }
    let (family, revision) = match tail.split_once(':') {
        Some((f, r)) => (f, Some(r)),
        None => (tail, None),
    };
    let name = family.strip_suffix('*').unwrap_or(family);
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let revision_ok = match revision {
        None => family.ends_with('*'),
        Some(r) => r == "*" || r.parse::<u32>().is_ok_and(|n| n > 0),
    };
    (name_ok && revision_ok).then_some(family)
}

impl Config {
    /// `CHECK_INTERVAL_SECONDS` (60-3600, default 900), `RETENTION_DAYS` (1-3650, default 400),
    /// `STACK_NAME` (optional; with it, `TASK_DEFINITIONS` lists the
    /// hand-made task definitions any job may run).
    pub fn from_env() -> std::result::Result<Config, String> {
        let mut c = Config::default();
        if let Some(v) = stevedore_aws_env("CHECK_INTERVAL_SECONDS") {
            c.check_interval_seconds = v
                .parse()
                .ok()
                .filter(|n| (60..=3600).contains(n))
                .ok_or("environment variable CHECK_INTERVAL_SECONDS must be 60-3600")?;
        }
        if let Some(v) = stevedore_aws_env("RETENTION_DAYS") {
            c.retention_days = v
                .parse()
                .ok()
                .filter(|n| (1..=3650).contains(n))
                .ok_or("environment variable RETENTION_DAYS must be 1-3650")?;
        }
        c.stack = stevedore_aws_env("STACK_NAME");
        if let Some(stack) = &c.stack {
            c.task_definitions = Some(TaskDefinitions::parse(
                stack,
                &stevedore_aws_env("TASK_DEFINITIONS").unwrap_or_default(),
            )?);
        }
        Ok(c)
    }
}

fn stevedore_aws_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// How long past the attempt's deadline its execution's concurrency slot
/// stays leased if nothing frees it. The sweep stops a task 5 minutes past
/// its deadline, on a 5-minute schedule; an outage of Lambda (which runs
/// the sweep, the state machine's handlers and every launch) of up to 30
/// minutes delays that stop, and the lease must not run out before it, or
/// the job's next run would start beside the task: 5 + 5 + 30, the stop
/// grace, and a margin. A slot whose execution died and whose reaper event
/// was lost stays blocked this long past the deadline.
pub const SLOT_LEASE_PAST_DEADLINE_MINUTES: i64 = 45;

/// How long one invocation's claim on an attempt's launch lasts: longer
/// than the function's timeout (`template.yaml`, checked by
/// `check_template.py`), after which Lambda has ended the invocation.
pub const LAUNCH_CLAIM_SECONDS: i64 = 240;

/// How long past its scheduled time (or now, if later) a scheduled start's
/// claim lasts: longer than EventBridge Scheduler retries a start (at most
/// 24 hours, `MaximumEventAgeInSeconds`), so a late duplicate finds it.
pub const SCHEDULED_START_CLAIM_HOURS: i64 = 25;

pub struct Deps {
    pub tasks: Arc<dyn TaskRunner>,
    pub runs: Arc<dyn RunStore>,
    pub clock: Arc<dyn Clock>,
    pub config: Config,
}

/// The state input: the job spec as the user wrote it, the execution (from
/// the context object), the attempt, and the capacity a retry asks for.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchInput {
    pub spec: Value,
    pub execution: ExecutionRef,
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
}

fn first_attempt() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaunchStatus {
    /// The task is running (or already was, for a retried call).
    Launched,
    /// The job's slots were taken and it says `whenBusy: skip`.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchOutput {
    /// The attempt, echoed so the state machine keeps it in its state:
    /// the spec as given, the execution, the attempt number.
    pub spec: Value,
    pub execution: ExecutionRef,
    pub run_id: String,
    pub job: String,
    pub attempt: u32,
    pub max_attempts: u32,
    pub status: LaunchStatus,
    pub task_arn: Option<String>,
    pub capacity: Capacity,
    /// Seconds the waiting state waits before polling: the job's timeout
    /// divided into equal intervals no longer than the check interval (or
    /// longer, to keep the execution's history bounded), so the last
    /// wake-up falls on the deadline.
    pub check_seconds: u64,
    pub deadline: String,
    pub message: String,
}

pub async fn function_handler(deps: &Deps, event: Value) -> Result<LaunchOutput> {
    let input: LaunchInput = parse_input(unwrap_state(event), "launch-run")?;
    let spec = JobSpec::from_value(&input.spec)?;
    if let Some(allowed) = &deps.config.task_definitions {
        allowed.check(&spec)?;
    }
    if input.attempt == 0 || input.attempt > spec.retry.max_attempts {
        return Err(Error::invalid_input(format!(
            "attempt {} is outside 1-{} (retry.maxAttempts)",
            input.attempt, spec.retry.max_attempts
        )));
    }
    let now = deps.clock.now();
    let id = run_id(&spec.job, &input.execution, input.attempt);
    // A retried invocation finds its own run and carries on from there.
    let existing = deps.runs.get_run(&id).await?;
    // The attempt's deadline is fixed when its run is first written: an
    // invocation retried after an outage must not move it later.
    let deadline = existing.as_ref().map_or_else(
        || now + time::Duration::seconds(spec.timeout as i64),
        |run| run.deadline,
    );
    let capacity = input.capacity.unwrap_or(match spec.capacity {
        Capacity::OnDemand => Capacity::OnDemand,
        Capacity::Spot | Capacity::SpotWithFallback => Capacity::Spot,
    });
    // The interval the run processes: the spec's, or the execution's start
    // (the same for every attempt, so a retry processes the same interval).
    let logical_time = spec.logical_time.unwrap_or(input.execution.start_time);
    let record = RunRecord {
        run_id: id.clone(),
        job: spec.job.clone(),
        execution: input.execution.clone(),
        attempt: input.attempt,
        max_attempts: spec.retry.max_attempts,
        status: RunStatus::Pending,
        spec: spec.to_value(),
        capacity,
        created_at: now,
        deadline,
        task_arn: None,
        launched_at: None,
        task_token: None,
        stop_request: None,
        task: None,
        outcome: None,
        cost: None,
        finished_at: None,
        expires_at: (now + time::Duration::days(deps.config.retention_days as i64))
            .unix_timestamp(),
        logical_time: Some(logical_time),
        notes: Vec::new(),
    };
    let output = |status: LaunchStatus,
                  task_arn: Option<String>,
                  capacity: Capacity,
                  message: String| LaunchOutput {
        spec: input.spec.clone(),
        execution: input.execution.clone(),
        run_id: id.clone(),
        job: spec.job.clone(),
        attempt: input.attempt,
        max_attempts: spec.retry.max_attempts,
        status,
        task_arn,
        capacity,
        check_seconds: spec.check_seconds(deps.config.check_interval_seconds),
        deadline: format_time(deadline),
        message,
    };

    if let Some(run) = &existing {
        if let Some(done) = already_settled(run, &output) {
            return done;
        }
    }

    // One execution per scheduled time runs the job: EventBridge Scheduler
    // delivers at least once, and a second execution for the same time is
    // skipped (before it could take a concurrency slot from the first).
    if let Some(scheduled) = spec.scheduled_time {
        let until = scheduled.max(now) + time::Duration::hours(SCHEDULED_START_CLAIM_HOURS);
        let holder = deps
            .runs
            .claim_scheduled_start(
                &spec.job,
                &format_time(scheduled),
                &input.execution.id,
                until,
                now,
            )
            .await?;
        if let Some(holder) = holder {
            let message = format!(
                "{}'s run for its scheduled time {} was started already, by execution {holder}: EventBridge Scheduler delivers a schedule's start at least once, and this second start is skipped",
                spec.job,
                format_time(scheduled)
            );
            let skipped = RunRecord {
                status: RunStatus::Skipped,
                outcome: Some(Outcome::failed(
                    FailureClass::JobAlreadyRunning,
                    message.clone(),
                    None,
                )),
                finished_at: Some(now),
                ..record
            };
            deps.runs.create_run(&skipped).await?;
            warn!(run_id = %id, holder = %holder, "a second start of one scheduled time");
            return Ok(output(LaunchStatus::Skipped, None, capacity, message));
        }
    }

    // The slot is held by the execution, across its attempts, until the lease
    // (deadline plus time to stop and record) runs out or the run ends.
    let lease_until = deadline + time::Duration::minutes(SLOT_LEASE_PAST_DEADLINE_MINUTES);
    let grant = deps
        .runs
        .acquire_slot(
            &spec.job,
            &input.execution.id,
            spec.concurrency.max,
            lease_until,
            now,
        )
        .await?;
    if let SlotGrant::Busy { holders } = grant {
        let message = format!(
            "{} already has {} run(s) in progress (concurrency.max = {}): {}",
            spec.job,
            holders.len(),
            spec.concurrency.max,
            holders.join(", ")
        );
        let (status, outcome) = match spec.concurrency.when_busy {
            WhenBusy::Skip => (
                RunStatus::Skipped,
                Outcome::failed(FailureClass::JobAlreadyRunning, message.clone(), None),
            ),
            WhenBusy::Fail => (
                RunStatus::Failed,
                Outcome::failed(FailureClass::JobAlreadyRunning, message.clone(), None),
            ),
        };
        let busy = RunRecord {
            status,
            outcome: Some(outcome),
            finished_at: Some(now),
            ..record
        };
        deps.runs.create_run(&busy).await?;
        warn!(run_id = %id, "concurrency slot taken");
        return match spec.concurrency.when_busy {
            WhenBusy::Skip => Ok(output(LaunchStatus::Skipped, None, capacity, message)),
            WhenBusy::Fail => Err(Error::new(FailureClass::JobAlreadyRunning, message)),
        };
    }

    let record = match deps.runs.create_run(&record).await? {
        CreateOutcome::Created => record,
        // Another invocation of this launch (or the reaper, cancelling it
        // because the execution ended) got there between our read and now.
        CreateOutcome::Exists(run) => match already_settled(&run, &output) {
            Some(done) => return done,
            None => run,
        },
    };

    // One invocation of this attempt's launch at a time: Step Functions
    // retries an invocation whose answer it gave up on (a client-side
    // timeout) while that invocation may still run, and two RunTasks with
    // different client tokens (Spot, then the on-demand fallback) would
    // start two tasks. The claim outlives this function's timeout, so an
    // invocation that died leaves it to the state's next retry.
    let claim_until = now + time::Duration::seconds(LAUNCH_CLAIM_SECONDS);
    if !deps.runs.claim_launch(&id, claim_until, now).await? {
        if let Some(run) = deps.runs.get_run(&id).await? {
            if let Some(done) = already_settled(&run, &output) {
                return done;
            }
        }
        return Err(Error::transient(format!(
            "another invocation is launching run {id}; asking again shortly"
        )));
    }

    // A launch retried through a long outage may only get here after the
    // attempt's deadline: a task started now would be over its time before
    // it ran, and nothing may be watching it yet. The attempt timed out.
    if now >= deadline {
        return Err(Error::new(
            FailureClass::TimedOut,
            format!(
                "the attempt's deadline {} passed before its task could be launched",
                format_time(deadline)
            ),
        ));
    }

    let mut tags = spec.tags.clone();
    tags.insert("stevedore:job".into(), spec.job.clone());
    tags.insert("stevedore:run-id".into(), id.clone());
    tags.insert("stevedore:attempt".into(), input.attempt.to_string());
    if let Some(stack) = &deps.config.stack {
        tags.insert(STACK_TAG.into(), stack.clone());
    }
    let mut launch = Launch {
        // `${logicalDate}` and the rest filled; STEVEDORE_LOGICAL_* set.
        spec: spec.for_logical_time(record.logical_time.unwrap_or(logical_time)),
        run_id: id.clone(),
        client_token: client_token(&input.execution, input.attempt, record.capacity),
        capacity: record.capacity,
        network: spec.network.clone().unwrap_or_default(),
        started_by: record.started_by(),
        tags,
    };
    let launched = match deps.tasks.run_task(&launch).await {
        Err(e)
            if e.class == FailureClass::CapacityUnavailable
                && launch.capacity == Capacity::Spot
                && spec.capacity == Capacity::SpotWithFallback =>
        {
            warn!(run_id = %id, "no Fargate Spot capacity; falling back to on-demand");
            record_fallback(deps, &id).await?;
            launch.capacity = Capacity::OnDemand;
            launch.client_token = client_token(&input.execution, input.attempt, Capacity::OnDemand);
            deps.tasks.run_task(&launch).await?
        }
        other => other?,
    };

    let change = RunChange {
        task_arn: Some(launched.task_arn.clone()),
        launched_at: Some(now),
        // Keep the record true about where the attempt runs (always: another
        // invocation may have recorded a fallback since `record` was read).
        capacity: Some(launch.capacity),
        ..RunChange::to(RunStatus::Running)
    };
    let run = match deps.runs.change_run(&id, &change).await? {
        ChangeOutcome::Applied(_) | ChangeOutcome::Replayed(_) => None,
        ChangeOutcome::Rejected(run) => Some(run),
        ChangeOutcome::NotFound => {
            return Err(Error::transient(format!("run {id} vanished after launch")))
        }
    };
    if let Some(run) = run {
        if let Some(done) = settle_refused(deps, &run, &launched.task_arn, &output).await? {
            return done;
        }
    }
    info!(run_id = %id, task_arn = %launched.task_arn, "launched");
    Ok(output(
        LaunchStatus::Launched,
        Some(launched.task_arn),
        launch.capacity,
        format!("task started on {} capacity", launch.capacity),
    ))
}

type Output<'a> =
    dyn Fn(LaunchStatus, Option<String>, Capacity, String) -> LaunchOutput + Send + Sync + 'a;

/// What a launch that finds its run already written returns: the task
/// another invocation launched, the skip, or the end the run already had.
/// `None` when the run is still waiting for its task.
fn already_settled(run: &RunRecord, output: &Output) -> Option<Result<LaunchOutput>> {
    if let Some(arn) = run.task_arn.clone() {
        info!(run_id = %run.run_id, "launch already done");
        return Some(Ok(output(
            LaunchStatus::Launched,
            Some(arn),
            run.capacity,
            "already launched".into(),
        )));
    }
    if run.status == RunStatus::Skipped {
        return Some(Ok(output(
            LaunchStatus::Skipped,
            None,
            run.capacity,
            skipped_message(&run.outcome),
        )));
    }
    if run.status.is_terminal() {
        return Some(Err(ended(run)));
    }
    None
}

/// The error a launch returns for a run that ended without it.
fn ended(run: &RunRecord) -> Error {
    let outcome = run
        .outcome
        .clone()
        .unwrap_or_else(|| Outcome::failed(FailureClass::InvalidInput, "ended", None));
    Error::new(
        outcome.class.unwrap_or(FailureClass::InvalidInput),
        outcome.message,
    )
}

/// The run refused to name the task this invocation started. If a fast
/// task was already reported, it is ours and all is well (`None`).
/// Otherwise the task is one too many and is stopped now, not left to the
/// sweep: the run names another task (a second invocation of this launch,
/// retried after a client-side timeout, won the race), or the run ended
/// while RunTask ran (the execution was aborted: the reaper cancelled it).
async fn settle_refused(
    deps: &Deps,
    run: &RunRecord,
    ours: &str,
    output: &Output<'_>,
) -> Result<Option<Result<LaunchOutput>>> {
    let named = run
        .task_arn
        .clone()
        .or_else(|| run.task.as_ref().map(|t| t.task_arn.clone()));
    if named.as_deref() == Some(ours) {
        info!(run_id = %run.run_id, status = %run.status, "run moved on before the launch was recorded");
        return Ok(None);
    }
    let why = match &named {
        Some(other) => format!(
            "a second launch of run {}: the run's task is {other}",
            run.run_id
        ),
        None => format!(
            "run {} ended {} while its task launched",
            run.run_id, run.status
        ),
    };
    warn!(run_id = %run.run_id, task_arn = ours, %why, "stopping a task the run does not name");
    deps.tasks
        .stop_task(
            ours,
            &stevedore_domain::failure::stop_reason(format!("{STOP_REASON_PREFIX} {why}")),
        )
        .await?;
    if run.status == RunStatus::Cancelled {
        // The reaper freed (or cut) the execution's slot before this task
        // existed: hold it through the stop grace, so the job's next run
        // cannot start beside the task while it winds down.
        free_slot(
            deps.runs.as_ref(),
            &run.job,
            &run.execution.id,
            true,
            deps.clock.now(),
        )
        .await?;
    }
    Ok(Some(match named {
        Some(other) => Ok(output(
            LaunchStatus::Launched,
            Some(other),
            run.capacity,
            "already launched (a second launch's task was stopped)".into(),
        )),
        None => Err(ended(run)),
    }))
}

/// Records the on-demand fallback before its RunTask: an invocation retried
/// after a crash then launches with the on-demand client token and gets that
/// task back, instead of trying Spot again with the first token (two tasks
/// for one attempt).
async fn record_fallback(deps: &Deps, id: &str) -> Result<()> {
    let change = RunChange {
        capacity: Some(Capacity::OnDemand),
        ..RunChange::to(RunStatus::Pending)
    };
    match deps.runs.change_run(id, &change).await? {
        ChangeOutcome::Applied(_) => Ok(()),
        ChangeOutcome::Replayed(run) | ChangeOutcome::Rejected(run) => Err(Error::transient(
            format!("run {id} is {} before its on-demand launch", run.status),
        )),
        ChangeOutcome::NotFound => Err(Error::transient(format!(
            "run {id} vanished before its on-demand launch"
        ))),
    }
}

fn skipped_message(outcome: &Option<Outcome>) -> String {
    outcome
        .as_ref()
        .map(|o| o.message.clone())
        .unwrap_or_else(|| "skipped".into())
}
