//! In-memory implementations of the ports, for handler tests and benchmarks
//! (feature `mocks`). The run store keeps the same conditional semantics as
//! the DynamoDB one.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use crate::alert::Alert;
use crate::error::{Error, Result};
use crate::lifecycle::RunStatus;
use crate::ports::{
    Clock, ExecutionState, Executions, Launch, LaunchedTask, Notifier, RunStore, TaskRunner,
    TaskTokens, TokenDelivery,
};
use crate::run::{ChangeOutcome, CreateOutcome, RunChange, RunQuery, RunRecord, SlotGrant};
use crate::task::{TaskDescription, TaskLookup};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// job -> slot -> (holder, lease until)
type Slots = BTreeMap<String, BTreeMap<u32, (String, OffsetDateTime)>>;
/// A completed token: the output, or the (error, cause).
pub type SentToken = (String, std::result::Result<Value, (String, String)>);

/// When an injected store failure strikes: before the change is made, or
/// after it (the caller sees an error, but the change is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTiming {
    Before,
    After,
}

#[derive(Default)]
pub struct MemoryRunStore {
    runs: Mutex<BTreeMap<String, RunRecord>>,
    slots: Mutex<Slots>,
    change_faults: Mutex<Vec<(RunStatus, Error, FaultTiming)>>,
    races: Mutex<Vec<(RunStatus, RunChange)>>,
    create_faults: Mutex<Vec<(Error, FaultTiming)>>,
    launch_claims: Mutex<BTreeMap<String, OffsetDateTime>>,
    /// (job, scheduled time) → (execution, claimed until).
    scheduled_starts: Mutex<BTreeMap<(String, String), (String, OffsetDateTime)>>,
}

impl MemoryRunStore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn all_runs(&self) -> Vec<RunRecord> {
        lock(&self.runs).values().cloned().collect()
    }
    /// The slots held now: (job, slot, holder, lease until).
    pub fn held_slots(&self) -> Vec<(String, u32, String, OffsetDateTime)> {
        lock(&self.slots)
            .iter()
            .flat_map(|(job, slots)| {
                slots
                    .iter()
                    .map(|(slot, (holder, until))| (job.clone(), *slot, holder.clone(), *until))
            })
            .collect()
    }
    /// The next change to status `to` fails with `err`, before or after it
    /// is made.
    pub fn fail_next_change_to(&self, to: RunStatus, err: Error, timing: FaultTiming) {
        lock(&self.change_faults).push((to, err, timing));
    }
    /// The next `create_run` fails with `err`, before or after the run is stored.
    pub fn fail_next_create(&self, err: Error, timing: FaultTiming) {
        lock(&self.create_faults).push((err, timing));
    }
    /// Just before the next change to status `to`, another writer applies
    /// `racing` (a concurrent handler that got there first).
    pub fn race_next_change_to(&self, to: RunStatus, racing: RunChange) {
        lock(&self.races).push((to, racing));
    }
    fn take_race(&self, to: RunStatus) -> Option<RunChange> {
        let mut races = lock(&self.races);
        let i = races.iter().position(|(s, _)| *s == to)?;
        Some(races.remove(i).1)
    }
    fn take_change_fault(&self, to: RunStatus) -> Option<(Error, FaultTiming)> {
        let mut faults = lock(&self.change_faults);
        let i = faults.iter().position(|(s, _, _)| *s == to)?;
        let (_, err, timing) = faults.remove(i);
        Some((err, timing))
    }
}

#[async_trait]
impl RunStore for MemoryRunStore {
    async fn create_run(&self, run: &RunRecord) -> Result<CreateOutcome> {
        let fault = {
            let mut faults = lock(&self.create_faults);
            (!faults.is_empty()).then(|| faults.remove(0))
        };
        if let Some((err, FaultTiming::Before)) = fault {
            return Err(err);
        }
        let mut runs = lock(&self.runs);
        if let Some(existing) = runs.get(&run.run_id) {
            return Ok(CreateOutcome::Exists(existing.clone()));
        }
        runs.insert(run.run_id.clone(), run.clone());
        if let Some((err, FaultTiming::After)) = fault {
            return Err(err);
        }
        Ok(CreateOutcome::Created)
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        Ok(lock(&self.runs).get(run_id).cloned())
    }

    async fn change_run(&self, run_id: &str, change: &RunChange) -> Result<ChangeOutcome> {
        if let Some(racing) = self.take_race(change.status()) {
            Box::pin(self.change_run(run_id, &racing)).await?;
        }
        let fault = self.take_change_fault(change.status());
        if let Some((err, FaultTiming::Before)) = fault {
            return Err(err);
        }
        let mut runs = lock(&self.runs);
        let Some(run) = runs.get_mut(run_id) else {
            return Ok(ChangeOutcome::NotFound);
        };
        if !change.applies_to(run) {
            return Ok(change.refused(run.clone()));
        }
        change.apply_to(run);
        if let Some((err, FaultTiming::After)) = fault {
            return Err(err);
        }
        Ok(ChangeOutcome::Applied(run.clone()))
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let mut out: Vec<RunRecord> = lock(&self.runs)
            .values()
            .filter(|r| r.job == query.job && query.status.is_none_or(|s| s == r.status))
            .cloned()
            .collect();
        out.sort_by(|a, b| (b.created_at, &b.run_id).cmp(&(a.created_at, &a.run_id)));
        out.truncate(query.limit as usize);
        Ok(out)
    }

    async fn runs_of_execution(&self, execution_id: &str) -> Result<Vec<RunRecord>> {
        let mut out: Vec<RunRecord> = lock(&self.runs)
            .values()
            .filter(|r| r.execution.id == execution_id)
            .cloned()
            .collect();
        out.sort_by_key(|r| r.attempt);
        Ok(out)
    }

    async fn acquire_slot(
        &self,
        job: &str,
        holder: &str,
        max: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<SlotGrant> {
        let mut slots = lock(&self.slots);
        let job_slots = slots.entry(job.to_string()).or_default();
        if let Some((slot, entry)) = job_slots.iter_mut().find(|(_, (h, _))| h == holder) {
            entry.1 = lease_until;
            return Ok(SlotGrant::Granted { slot: *slot });
        }
        for slot in 0..max {
            let free = job_slots.get(&slot).is_none_or(|(_, until)| *until < now);
            if free {
                job_slots.insert(slot, (holder.to_string(), lease_until));
                return Ok(SlotGrant::Granted { slot });
            }
        }
        Ok(SlotGrant::Busy {
            holders: job_slots.values().map(|(h, _)| h.clone()).collect(),
        })
    }

    async fn release_slot(&self, job: &str, holder: &str) -> Result<()> {
        if let Some(job_slots) = lock(&self.slots).get_mut(job) {
            job_slots.retain(|_, (h, _)| h != holder);
        }
        Ok(())
    }

    async fn claim_launch(
        &self,
        run_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let runs = lock(&self.runs);
        if runs.get(run_id).map(|r| r.status) != Some(RunStatus::Pending) {
            return Ok(false);
        }
        let mut claims = lock(&self.launch_claims);
        if claims.get(run_id).is_some_and(|held| *held > now) {
            return Ok(false);
        }
        claims.insert(run_id.to_string(), until);
        Ok(true)
    }

    async fn claim_scheduled_start(
        &self,
        job: &str,
        scheduled: &str,
        execution_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<String>> {
        let mut claims = lock(&self.scheduled_starts);
        let key = (job.to_string(), scheduled.to_string());
        match claims.get(&key) {
            Some((holder, held)) if holder != execution_id && *held > now => {
                Ok(Some(holder.clone()))
            }
            _ => {
                claims.insert(key, (execution_id.to_string(), until));
                Ok(None)
            }
        }
    }

    async fn add_note(&self, run_id: &str, note: &str) -> Result<bool> {
        Ok(match lock(&self.runs).get_mut(run_id) {
            Some(run) => {
                run.notes.push(note.to_string());
                true
            }
            None => false,
        })
    }
}

/// A task runner that records launches and answers from a scripted state.
#[derive(Default)]
pub struct FakeTaskRunner {
    pub launches: Mutex<Vec<Launch>>,
    pub stops: Mutex<Vec<(String, String)>>,
    /// Task descriptions by ARN; absent means MISSING.
    pub tasks: Mutex<BTreeMap<String, TaskDescription>>,
    /// Errors to return from the next RunTask calls, in order.
    pub launch_errors: Mutex<Vec<Error>>,
    /// The tags each task was started with, by ARN.
    pub tags: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

impl FakeTaskRunner {
    pub fn set_task(&self, task: TaskDescription) {
        lock(&self.tasks).insert(task.task_arn.clone(), task);
    }
    pub fn fail_next_launch(&self, err: Error) {
        lock(&self.launch_errors).push(err);
    }
    pub fn launches(&self) -> Vec<Launch> {
        lock(&self.launches).clone()
    }
    pub fn stops(&self) -> Vec<(String, String)> {
        lock(&self.stops).clone()
    }
}

#[async_trait]
impl TaskRunner for FakeTaskRunner {
    async fn run_task(&self, launch: &Launch) -> Result<LaunchedTask> {
        lock(&self.launches).push(launch.clone());
        {
            let mut errors = lock(&self.launch_errors);
            if !errors.is_empty() {
                return Err(errors.remove(0));
            }
        }
        // Same token, same task: like ECS's clientToken.
        let task_arn = format!(
            "arn:aws:ecs:us-east-1:123456789012:task/data-jobs/{}",
            &launch.client_token[..32.min(launch.client_token.len())]
        );
        let task = TaskDescription {
            task_arn: task_arn.clone(),
            last_status: "PROVISIONING".into(),
            started_by: Some(launch.started_by.clone()),
            ..Default::default()
        };
        lock(&self.tasks)
            .entry(task_arn.clone())
            .or_insert(task.clone());
        lock(&self.tags).insert(task_arn.clone(), launch.tags.clone());
        Ok(LaunchedTask {
            task_arn,
            task: Some(task),
        })
    }

    async fn describe_tasks(&self, task_arns: &[String]) -> Result<Vec<TaskLookup>> {
        let tasks = lock(&self.tasks);
        Ok(task_arns
            .iter()
            .map(|arn| match tasks.get(arn) {
                Some(t) => TaskLookup::Found(t.clone()),
                None => TaskLookup::Missing {
                    task_arn: arn.clone(),
                    reason: "MISSING".into(),
                },
            })
            .collect())
    }

    async fn find_tasks(
        &self,
        started_by: &str,
        _family: Option<&str>,
    ) -> Result<Vec<TaskDescription>> {
        Ok(lock(&self.tasks)
            .values()
            .filter(|t| t.started_by.as_deref() == Some(started_by))
            .cloned()
            .collect())
    }

    async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<()> {
        lock(&self.stops).push((task_arn.to_string(), reason.to_string()));
        Ok(())
    }

    async fn list_running(&self, prefix: &str) -> Result<Vec<crate::ports::RunningTask>> {
        Ok(lock(&self.tasks)
            .values()
            .filter(|t| !t.is_stopped() && t.desired_status.as_deref() != Some("STOPPED"))
            .filter_map(|t| {
                let started_by = t.started_by.clone().filter(|s| s.starts_with(prefix))?;
                Some(crate::ports::RunningTask {
                    task_arn: t.task_arn.clone(),
                    started_by,
                    created_at: t.created_at,
                    tags: lock(&self.tags)
                        .get(&t.task_arn)
                        .cloned()
                        .unwrap_or_default(),
                })
            })
            .collect())
    }
}

/// Executions as a test sets them: any execution it was not told about is
/// still running.
#[derive(Default)]
pub struct MemoryExecutions {
    ended: Mutex<BTreeMap<String, ExecutionState>>,
}

impl MemoryExecutions {
    pub fn set(&self, execution_arn: &str, state: ExecutionState) {
        lock(&self.ended).insert(execution_arn.to_string(), state);
    }
}

#[async_trait]
impl Executions for MemoryExecutions {
    async fn state(&self, execution_arn: &str) -> Result<ExecutionState> {
        Ok(lock(&self.ended)
            .get(execution_arn)
            .cloned()
            .unwrap_or(ExecutionState::Running))
    }
}

/// Records every token completion; a token completes once.
#[derive(Default)]
pub struct RecordingTaskTokens {
    pub sent: Mutex<Vec<SentToken>>,
}

impl RecordingTaskTokens {
    pub fn sent(&self) -> Vec<SentToken> {
        lock(&self.sent).clone()
    }
    fn deliver(
        &self,
        token: &str,
        what: std::result::Result<Value, (String, String)>,
    ) -> TokenDelivery {
        let mut sent = lock(&self.sent);
        if sent.iter().any(|(t, _)| t == token) {
            return TokenDelivery::AlreadyClosed;
        }
        sent.push((token.to_string(), what));
        TokenDelivery::Delivered
    }
}

#[async_trait]
impl TaskTokens for RecordingTaskTokens {
    async fn send_success(&self, token: &str, output: &Value) -> Result<TokenDelivery> {
        Ok(self.deliver(token, Ok(output.clone())))
    }
    async fn send_failure(&self, token: &str, error: &str, cause: &str) -> Result<TokenDelivery> {
        Ok(self.deliver(token, Err((error.to_string(), cause.to_string()))))
    }
}

#[derive(Default)]
pub struct RecordingNotifier {
    pub alerts: Mutex<Vec<Alert>>,
}

impl RecordingNotifier {
    pub fn alerts(&self) -> Vec<Alert> {
        lock(&self.alerts).clone()
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn publish(&self, alert: &Alert) -> Result<String> {
        let mut alerts = lock(&self.alerts);
        alerts.push(alert.clone());
        Ok(format!("message-{}", alerts.len()))
    }
}

/// A clock tests move by hand.
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        ManualClock(Mutex::new(start))
    }
    pub fn advance(&self, by: time::Duration) {
        let mut t = lock(&self.0);
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *lock(&self.0)
    }
}
