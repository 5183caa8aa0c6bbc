//! Benchmark harness: the control-plane cost of a run under three designs
//! (Stevedore's event-driven wait, a 30 s poll loop, Step Functions'
//! `runTask.sync`), all run by the same engine on virtual time, with every
//! billable call counted.

pub mod engine;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use stevedore_domain::alert::Alert;
use stevedore_domain::memory::MemoryRunStore;
use stevedore_domain::ports::{Clock, Notifier, RunStore, TaskRunner};
use stevedore_domain::run::{
    ChangeOutcome, CreateOutcome, RunChange, RunQuery, RunRecord, SlotGrant,
};
use stevedore_domain::task::TaskLookup;
use stevedore_domain::Result;
use stevedore_engine::{Definition, Engine, ExecutionOutcome, Failure, Resources, TaskCall};
use stevedore_local::tasks::SimOutcome;
use stevedore_local::{LocalClock, LocalPlane, PlaneConfig, SimulatedTaskRunner};
use time::OffsetDateTime;

pub const POLL_LOOP_ASL: &str = include_str!("../designs/poll-loop.asl.json");
pub const RUN_TASK_SYNC_ASL: &str = include_str!("../designs/run-task-sync.asl.json");

/// Prices used (us-east-1, published; see BENCHMARKS.md).
pub const SFN_PER_TRANSITION: f64 = 0.025 / 1000.0;
pub const LAMBDA_PER_REQUEST: f64 = 0.20 / 1_000_000.0;
pub const LAMBDA_PER_GB_SECOND_ARM: f64 = 0.000_013_333_4;
pub const DDB_PER_WRITE_UNIT: f64 = 0.625 / 1_000_000.0;
pub const DDB_PER_READ_UNIT: f64 = 0.125 / 1_000_000.0;
pub const SNS_PER_PUBLISH: f64 = 0.50 / 1_000_000.0;

/// Billable calls of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub transitions: u64,
    pub lambda_invocations: u64,
    pub ddb_read_units: u64,
    pub ddb_write_units: u64,
    pub sns_publishes: u64,
}

/// Assumptions the price needs that a local run cannot measure.
#[derive(Debug, Clone, Copy)]
pub struct Assumptions {
    /// Billed duration of one invocation (Lambda bills per ms).
    pub lambda_ms: f64,
    pub lambda_memory_mb: f64,
}

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            lambda_ms: 50.0,
            lambda_memory_mb: 128.0,
        }
    }
}

impl Counts {
    /// US dollars per 1,000 runs.
    pub fn price_per_1000(&self, a: Assumptions) -> f64 {
        let gb_s =
            self.lambda_invocations as f64 * a.lambda_ms / 1000.0 * a.lambda_memory_mb / 1024.0;
        1000.0
            * (self.transitions as f64 * SFN_PER_TRANSITION
                + self.lambda_invocations as f64 * LAMBDA_PER_REQUEST
                + gb_s * LAMBDA_PER_GB_SECOND_ARM
                + self.ddb_write_units as f64 * DDB_PER_WRITE_UNIT
                + self.ddb_read_units as f64 * DDB_PER_READ_UNIT
                + self.sns_publishes as f64 * SNS_PER_PUBLISH)
    }
}

fn units(bytes: usize, unit: usize) -> u64 {
    bytes.div_ceil(unit).max(1) as u64
}

/// A run store that counts DynamoDB request units as the DynamoDB adapter
/// would spend them (item size rounded up to 1 KB per write, 4 KB per
/// strongly consistent read).
pub struct CountingStore {
    inner: MemoryRunStore,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

impl Default for CountingStore {
    fn default() -> Self {
        CountingStore {
            inner: MemoryRunStore::new(),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }
}

fn size(run: &RunRecord) -> usize {
    serde_json::to_string(run).map(|s| s.len()).unwrap_or(1024) + 200
}

impl CountingStore {
    fn read(&self, bytes: usize) {
        self.reads.fetch_add(units(bytes, 4096), Ordering::Relaxed);
    }
    fn write(&self, bytes: usize) {
        self.writes.fetch_add(units(bytes, 1024), Ordering::Relaxed);
    }
}

#[async_trait]
impl RunStore for CountingStore {
    async fn create_run(&self, run: &RunRecord) -> Result<CreateOutcome> {
        self.write(size(run));
        self.inner.create_run(run).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let r = self.inner.get_run(run_id).await?;
        self.read(r.as_ref().map(size).unwrap_or(100));
        Ok(r)
    }
    async fn change_run(&self, run_id: &str, change: &RunChange) -> Result<ChangeOutcome> {
        let out = self.inner.change_run(run_id, change).await?;
        let bytes = match &out {
            ChangeOutcome::Applied(r) | ChangeOutcome::Replayed(r) | ChangeOutcome::Rejected(r) => {
                size(r)
            }
            ChangeOutcome::NotFound => 100,
        };
        self.write(bytes);
        Ok(out)
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let r = self.inner.list_runs(query).await?;
        self.read(r.iter().map(size).sum());
        Ok(r)
    }
    async fn runs_of_execution(&self, execution_id: &str) -> Result<Vec<RunRecord>> {
        let r = self.inner.runs_of_execution(execution_id).await?;
        self.read(r.iter().map(size).sum());
        Ok(r)
    }
    async fn acquire_slot(
        &self,
        job: &str,
        holder: &str,
        max: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<SlotGrant> {
        // The adapter queries the job's slots, then writes one.
        self.read(200);
        self.write(200);
        self.inner
            .acquire_slot(job, holder, max, lease_until, now)
            .await
    }
    async fn release_slot(&self, job: &str, holder: &str) -> Result<()> {
        self.read(200);
        self.write(200);
        self.inner.release_slot(job, holder).await
    }
    async fn claim_launch(
        &self,
        run_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.inner.claim_launch(run_id, until, now).await
    }
    async fn claim_scheduled_start(
        &self,
        job: &str,
        scheduled: &str,
        execution_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<String>> {
        self.inner
            .claim_scheduled_start(job, scheduled, execution_id, until, now)
            .await
    }
    async fn add_note(&self, run_id: &str, note: &str) -> Result<bool> {
        self.write(note.len() + 100);
        self.inner.add_note(run_id, note).await
    }
}

#[derive(Default)]
pub struct CountingNotifier(pub AtomicU64);

#[async_trait]
impl Notifier for CountingNotifier {
    async fn publish(&self, _alert: &Alert) -> Result<String> {
        Ok(format!("m{}", self.0.fetch_add(1, Ordering::Relaxed)))
    }
}

fn count_transitions(out: &ExecutionOutcome) -> u64 {
    out.history
        .iter()
        .filter(|e| e.kind.ends_with("StateEntered"))
        .count() as u64
}

fn count_lambda(out: &ExecutionOutcome) -> u64 {
    out.history
        .iter()
        .filter(|e| {
            e.kind == "TaskScheduled"
                && e.details["resource"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("arn:aws:states:::lambda:invoke"))
        })
        .count() as u64
}

fn spec() -> Value {
    json!({"job": "bench", "taskDefinition": "etl", "container": "app", "command": ["run"], "timeout": "7h"})
}

/// Stevedore's run-job, for a job that runs `job` and exits `exit_code`.
pub async fn stevedore_run(job: Duration, exit_code: i32) -> (Counts, ExecutionOutcome) {
    let clock = Arc::new(LocalClock::new(OffsetDateTime::now_utc()));
    let runner = Arc::new(SimulatedTaskRunner::new(
        clock.clone(),
        Arc::new(move |_| SimOutcome::exits(job, exit_code)),
    ));
    let store = Arc::new(CountingStore::default());
    let notifier = Arc::new(CountingNotifier::default());
    let plane = LocalPlane::new(
        store.clone(),
        runner,
        notifier.clone(),
        clock,
        PlaneConfig::default(),
    )
    .expect("plane");
    let out = plane.run_job(spec(), "bench").await;
    let counts = Counts {
        transitions: count_transitions(&out),
        // Plus task-events, invoked by EventBridge once per run.
        lambda_invocations: count_lambda(&out) + 1,
        ddb_read_units: store.reads.load(Ordering::Relaxed),
        ddb_write_units: store.writes.load(Ordering::Relaxed),
        sns_publishes: notifier.0.load(Ordering::Relaxed),
    };
    (counts, out)
}

/// The poll-loop design's functions: launch (RunTask + a run record), poll
/// (DescribeTasks), record (the final write).
struct PollLoop {
    tasks: Arc<SimulatedTaskRunner>,
    store: Arc<CountingStore>,
    clock: Arc<LocalClock>,
}

#[async_trait]
impl Resources for PollLoop {
    async fn call(&self, call: TaskCall) -> std::result::Result<Value, Failure> {
        let f = call.parameters["FunctionName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let fail = |e: stevedore_domain::Error| Failure::new(e.class.as_str(), e.message);
        match f.as_str() {
            "launch" => {
                let spec = stevedore_domain::JobSpec::from_value(&spec())
                    .map_err(|e| Failure::new("InvalidJobSpec", e.to_string()))?;
                let exec = stevedore_domain::run::ExecutionRef {
                    id: "arn:poll".into(),
                    name: "poll".into(),
                    start_time: self.clock.now(),
                };
                let run = stevedore_local_run(&spec, &exec, self.clock.now());
                self.store.create_run(&run).await.map_err(fail)?;
                let launched = self
                    .tasks
                    .run_task(&stevedore_domain::ports::Launch {
                        spec,
                        run_id: run.run_id.clone(),
                        client_token: "poll".repeat(16),
                        capacity: stevedore_domain::spec::Capacity::OnDemand,
                        network: Default::default(),
                        started_by: run.started_by(),
                        tags: Default::default(),
                    })
                    .await
                    .map_err(fail)?;
                Ok(json!({"Payload": {"taskArn": launched.task_arn}}))
            }
            "poll" => {
                let arn = call.parameters["Payload"]["taskArn"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let found = self.tasks.describe_tasks(&[arn]).await.map_err(fail)?;
                let stopped = matches!(found.first(), Some(TaskLookup::Found(t)) if t.is_stopped());
                Ok(json!({"Payload": {"stopped": stopped}}))
            }
            _ => {
                let runs = self.store.inner.all_runs();
                if let Some(run) = runs.first() {
                    self.store.write(size(run));
                }
                Ok(json!({"Payload": {}}))
            }
        }
    }
}

fn stevedore_local_run(
    spec: &stevedore_domain::JobSpec,
    exec: &stevedore_domain::run::ExecutionRef,
    now: OffsetDateTime,
) -> RunRecord {
    RunRecord {
        run_id: stevedore_domain::run::run_id(&spec.job, exec, 1),
        job: spec.job.clone(),
        execution: exec.clone(),
        attempt: 1,
        max_attempts: 1,
        status: stevedore_domain::RunStatus::Running,
        spec: spec.to_value(),
        capacity: stevedore_domain::spec::Capacity::OnDemand,
        created_at: now,
        deadline: now,
        task_arn: None,
        launched_at: None,
        task_token: None,
        stop_request: None,
        task: None,
        outcome: None,
        cost: None,
        finished_at: None,
        expires_at: 0,
        logical_time: None,
        notes: Vec::new(),
    }
}

/// The classic Wait 30 s → poll → Choice loop.
pub async fn poll_loop_run(job: Duration) -> Counts {
    let clock = Arc::new(LocalClock::new(OffsetDateTime::now_utc()));
    let tasks = Arc::new(SimulatedTaskRunner::new(
        clock.clone(),
        Arc::new(move |_| SimOutcome::exits(job, 0)),
    ));
    let store = Arc::new(CountingStore::default());
    let res = Arc::new(PollLoop {
        tasks,
        store: store.clone(),
        clock: clock.clone(),
    });
    let def = Definition::parse(POLL_LOOP_ASL).expect("poll-loop definition");
    let out = Engine::new(res)
        .with_epoch(clock.epoch().0, clock.epoch().1)
        .execute(&def, "poll-loop", "bench", json!({}))
        .await;
    Counts {
        transitions: count_transitions(&out),
        lambda_invocations: count_lambda(&out),
        ddb_read_units: store.reads.load(Ordering::Relaxed),
        ddb_write_units: store.writes.load(Ordering::Relaxed),
        sns_publishes: 0,
    }
}

/// `ecs:runTask.sync`: Step Functions waits for the task itself.
struct RunTaskSync {
    tasks: Arc<SimulatedTaskRunner>,
}

#[async_trait]
impl Resources for RunTaskSync {
    async fn call(&self, _call: TaskCall) -> std::result::Result<Value, Failure> {
        let spec = stevedore_domain::JobSpec::from_value(&spec())
            .map_err(|e| Failure::new("InvalidJobSpec", e.to_string()))?;
        let launched = self
            .tasks
            .run_task(&stevedore_domain::ports::Launch {
                spec,
                run_id: "sync".into(),
                client_token: "sync".repeat(16),
                capacity: stevedore_domain::spec::Capacity::OnDemand,
                network: Default::default(),
                started_by: "sync".into(),
                tags: Default::default(),
            })
            .await
            .map_err(|e| Failure::new(e.class.as_str(), e.message))?;
        loop {
            let found = self
                .tasks
                .describe_tasks(std::slice::from_ref(&launched.task_arn))
                .await
                .map_err(|e| Failure::new(e.class.as_str(), e.message))?;
            if matches!(found.first(), Some(TaskLookup::Found(t)) if t.is_stopped()) {
                return Ok(json!({"TaskArn": launched.task_arn}));
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
}

pub async fn run_task_sync_run(job: Duration) -> Counts {
    let clock = Arc::new(LocalClock::new(OffsetDateTime::now_utc()));
    let tasks = Arc::new(SimulatedTaskRunner::new(
        clock.clone(),
        Arc::new(move |_| SimOutcome::exits(job, 0)),
    ));
    let def = Definition::parse(RUN_TASK_SYNC_ASL).expect("runTask.sync definition");
    let out = Engine::new(Arc::new(RunTaskSync { tasks }))
        .with_epoch(clock.epoch().0, clock.epoch().1)
        .execute(&def, "sync", "bench", json!({"taskDefinition": "etl"}))
        .await;
    Counts {
        transitions: count_transitions(&out),
        ..Default::default()
    }
}

/// Runs `f` on a paused (virtual-time) runtime.
pub fn virtual_time<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_driven_design_costs_the_same_whatever_the_job_duration_and_less_than_polling() {
        let ten_min = virtual_time(stevedore_run(Duration::from_secs(600), 0)).0;
        let six_hours = virtual_time(stevedore_run(Duration::from_secs(6 * 3600 - 10), 0)).0;
        let poll = virtual_time(poll_loop_run(Duration::from_secs(590)));
        let a = Assumptions::default();
        assert!(
            ten_min.price_per_1000(a) < poll.price_per_1000(a),
            "{ten_min:?} vs {poll:?}"
        );
        // Only the safety poll grows with duration: one wait per check interval.
        assert!(six_hours.transitions <= ten_min.transitions + 72);
        assert_eq!(
            poll.transitions,
            2 + 3 * 20,
            "launch, record, and 3 per 30 s poll for a job of just under 10 minutes"
        );
        assert_eq!(
            virtual_time(run_task_sync_run(Duration::from_secs(600))).transitions,
            1
        );
    }
}
