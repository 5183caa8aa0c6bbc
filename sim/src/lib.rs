//! A deterministic simulation of the whole control plane, FoundationDB-style.
//!
//! One seed decides everything: the job's spec, how many executions of it
//! start and when, how each task ends (exit 0/3/137, Spot interruption,
//! failing to start, running past its timeout), RunTask's capacity errors
//! and throttling, ECS events lost, duplicated, delayed and reordered,
//! DescribeTasks and ListTasks not seeing a new task yet, store, task-token,
//! SNS and SQS calls failing before or after their effect, Lambda failing as
//! the service does (before the handler, or after it ran), executions
//! aborted at random moments, outages of one service, EventBridge Scheduler
//! delivering a start twice, and the table's indexes lagging behind it. The real run-job state machine runs in the
//! embedded engine with the real handlers, on tokio's paused clock, so an
//! hour-long job takes no time and every run of a seed is the same.
//!
//! After the world has settled, [`invariants`] checks the promises: every
//! task stopped, never more live tasks than `concurrency.max`, one task per
//! attempt, every execution ended, one terminal record per attempt that
//! agrees with its task, an alert (or its durable fallback) for every final
//! failure and none for a success, every slot free, one execution per
//! scheduled time, and, while AWS answers, every task's end recorded within
//! its check interval and [`invariants::RECORD_BOUND`].

pub mod ecs;
pub mod faults;
pub mod invariants;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use stevedore_domain::memory::MemoryRunStore;
use stevedore_domain::ports::{Clock, Executions, RunStore, TaskRunner};
use stevedore_engine::Status;
use stevedore_local::{LocalClock, LocalPlane, PlaneConfig};
use time::macros::datetime;

use crate::ecs::SimEcs;
use crate::faults::{
    Dice, FaultyLambda, FaultyStore, FaultyTokens, FaultyTopic, Outages, Rates, Service,
    SimExecutions,
};

/// Deliberately broken control planes, to show the simulator catches them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breakage {
    /// No orphan sweep.
    pub no_sweep: bool,
    /// No reaper for aborted executions.
    pub no_reaper: bool,
    /// run-job as it was before issue 23: a watch that failed past its
    /// retries stopped the task ("Wait for task" caught into "Stop task").
    pub watch_failure_stops: bool,
    /// A store that forgets which execution claimed a scheduled time: a
    /// second delivery of a schedule's start runs the job again.
    pub scheduled_twice: bool,
}

/// A promise broken in one seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: String,
    pub detail: String,
}

/// How one execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    /// Failed (or timed out): an alert is owed.
    Failed {
        error: String,
    },
    /// Aborted by the simulation at a random moment.
    Aborted,
    /// Still running at the simulation's horizon.
    Unfinished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionResult {
    pub arn: String,
    pub ending: Ending,
    /// When it ended (or was aborted); `None` while unfinished.
    pub ended_at: Option<time::OffsetDateTime>,
    /// The reaper's event ended in its dead-letter queue (every try failed).
    pub reap_dead_lettered: bool,
}

/// Counts over one seed, for the summary and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub executions: usize,
    pub tasks: usize,
    pub swept: usize,
    pub aborted: usize,
    pub failed: usize,
    pub events_lost: u32,
    pub events_dead_lettered: u32,
    /// Failed executions alerted more than once (at-least-once delivery),
    /// and the extra alerts they got.
    pub executions_alerted_twice: usize,
    pub duplicate_alerts: usize,
    /// Seeds with an outage.
    pub outages: usize,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub executions: usize,
    pub violations: Vec<Violation>,
    pub stats: Stats,
    /// A digest of everything that happened: two runs of a seed agree.
    pub digest: u64,
    /// What happened, when traced.
    pub story: Vec<String>,
}

/// The simulated time after the last execution ends in which the sweep
/// and late events may still act (longer than any timeout plus grace).
const SETTLE: Duration = Duration::from_secs(4 * 3600);
/// An execution not ended by then has not ended.
const HORIZON: Duration = Duration::from_secs(3 * 86_400);

/// Runs one seed.
pub fn simulate(seed: u64, breakage: Breakage) -> Report {
    simulate_traced(seed, breakage, false)
}

/// Runs one seed; with `trace`, the report's story tells what happened:
/// every state machine event, then every run and task as they ended.
pub fn simulate_traced(seed: u64, breakage: Breakage, trace: bool) -> Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    rt.block_on(world(seed, breakage, trace))
}

/// The job every execution of a seed runs.
fn job_spec(dice: &Dice) -> Value {
    let retry_on: Vec<&str> = [
        "CapacityUnavailable",
        "SpotInterrupted",
        "StartFailed",
        "ExitedNonZero",
        "TimedOut",
        "OutOfMemory",
    ]
    .into_iter()
    .filter(|_| dice.chance(0.5))
    .collect();
    json!({
        "job": "sim-job",
        "taskDefinition": "etl:1",
        "container": "app",
        "timeout": dice.pick(&["10m", "30m", "1h", "2h"]),
        "capacity": dice.pick(&["on-demand", "spot", "spot-with-fallback"]),
        "retry": {
            "maxAttempts": dice.between(1, 3),
            "delay": dice.pick(&["10s", "1m", "5m"]),
            "on": retry_on,
        },
        "concurrency": {
            "max": dice.between(1, 2),
            "whenBusy": dice.pick(&["skip", "fail"]),
        },
        "notify": {"onFailure": true, "onRecovery": dice.chance(0.3)},
    })
}

async fn world(seed: u64, breakage: Breakage, trace: bool) -> Report {
    let story: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let dice = Dice::new(seed);
    let rates = Rates::draw(&dice);
    let origin = tokio::time::Instant::now();
    // Outages draw from dice of their own, so adding them left what every
    // other draw of a seed means as it was.
    let outages = Outages::draw(&Dice::new(seed.rotate_left(32) ^ 0x6f75_7461_6765), origin);
    // So do how long calls take and when handlers start.
    let pace = Dice::new(seed.rotate_left(16) ^ 0x7061_6365);
    // And whether EventBridge Scheduler starts the executions, twice.
    let schedule = Dice::new(seed.rotate_left(48) ^ 0x7363_6865_6475_6c65);
    let definition = Arc::new(run_job(breakage));
    let clock = Arc::new(LocalClock::new(datetime!(2026-11-24 06:00:00 UTC)));
    let memory = Arc::new(MemoryRunStore::new());
    let store = Arc::new(FaultyStore {
        inner: memory.clone(),
        dice: dice.clone(),
        claims: schedule.clone(),
        forget_claims: breakage.scheduled_twice,
        // In half the seeds the indexes lag: by a second or two, or (rarely
        // seen, but DynamoDB promises no bound) up to a minute.
        index_lag: time::Duration::seconds(
            *Dice::new(seed.rotate_left(40) ^ 0x0069_6e64_6578).pick(&[0, 0, 0, 1, 2, 5, 60]),
        ),
        clock: clock.clone(),
        terminal_at: Mutex::new(Default::default()),
        rates,
        outages: outages.clone(),
    });
    let ecs = SimEcs::new(
        clock.clone(),
        dice.clone(),
        rates,
        outages.clone(),
        pace.clone(),
    );
    let topic = Arc::new(FaultyTopic {
        published: Mutex::new(Vec::new()),
        dice: dice.clone(),
        rates,
        outages: outages.clone(),
    });
    let lambda: Arc<OnceLock<Arc<FaultyLambda>>> = Arc::new(OnceLock::new());
    let check_interval_seconds: u64 = *dice.pick(&[60, 300, 900]);
    let config = {
        let (d1, d2, lambda) = (dice.clone(), dice.clone(), lambda.clone());
        let (o1, o2) = (outages.clone(), outages.clone());
        PlaneConfig {
            check_interval_seconds,
            wrap_resources: Some(Box::new(move |handlers| {
                let wrapped = Arc::new(FaultyLambda {
                    inner: handlers,
                    dice: d1,
                    pace,
                    rates,
                    outages: o1,
                    dead_letters: Mutex::new(Vec::new()),
                });
                lambda.set(wrapped.clone()).ok();
                wrapped
            })),
            wrap_tokens: Some(Box::new(move |inner| {
                Arc::new(FaultyTokens {
                    inner,
                    dice: d2,
                    rates,
                    outages: o2,
                })
            })),
            stack: Some("sim".into()),
            seed: Some(dice.seed()),
            observer: trace.then(|| {
                let story = story.clone();
                Arc::new(move |e: &stevedore_engine::HistoryEvent| {
                    let mut details = e.details.to_string();
                    details.truncate(300);
                    story
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!(
                            "{} {} {} {details}",
                            e.timestamp.time(),
                            e.kind,
                            e.state.as_deref().unwrap_or("")
                        ));
                }) as stevedore_engine::exec::Observer
            }),
            ..PlaneConfig::default()
        }
    };
    let plane = Arc::new(
        LocalPlane::new(
            store.clone() as Arc<dyn RunStore>,
            ecs.clone(),
            topic.clone(),
            clock.clone(),
            config,
        )
        .expect("the run-job definition parses"),
    );
    let events = plane.handlers.events.clone();
    ecs.set_event_handler(Arc::new(move |event| {
        let deps = events.clone();
        Box::pin(async move {
            task_events::function_handler(&deps, event)
                .await
                .map(|_| ())
        })
    }));

    let executions = Arc::new(SimExecutions {
        ended: Default::default(),
        outages: outages.clone(),
    });
    let spec = job_spec(&dice);
    let count = dice.between(1, 4) as usize;
    // EventBridge Scheduler: in some seeds every execution is a schedule's
    // start (its own scheduled time in the spec), and one of them is
    // delivered twice (at least once), the second start some time after
    // the first. Drawn from dice of their own, so a seed without a second
    // delivery runs as it did before.
    let scheduled = schedule.chance(0.5);
    let twice = (scheduled && schedule.chance(0.4)).then(|| {
        (
            schedule.between(0, count as u64 - 1) as usize,
            Duration::from_secs(*schedule.pick(&[0, 1, 30, 600, 3000])),
        )
    });
    let mut runs = Vec::new();
    let mut starts = Vec::new();
    for i in 0..count {
        let start_after = Duration::from_secs(dice.between(0, 1800));
        let abort_after = dice
            .chance(0.15)
            .then(|| Duration::from_secs(dice.between(1, 3 * 3600)));
        let mut spec = spec.clone();
        if scheduled {
            spec["scheduledTime"] = json!(format!("2026-11-24T{:02}:00:00Z", 6 + i));
        }
        starts.push((format!("sim-{seed}-{i}"), spec, start_after, abort_after));
        if let Some((_, later)) = twice.filter(|(which, _)| *which == i) {
            let spec = starts[i].1.clone();
            starts.push((
                format!("sim-{seed}-{i}-again"),
                spec,
                start_after + later,
                None,
            ));
        }
    }
    for (name, spec, start_after, abort_after) in starts {
        let reap_tries = if breakage.no_reaper { 0 } else { 3 };
        let (plane, dice, store) = (plane.clone(), dice.clone(), store.clone());
        let (definition, outages, executions) =
            (definition.clone(), outages.clone(), executions.clone());
        runs.push(tokio::spawn(async move {
            tokio::time::sleep(start_after).await;
            execution(
                &plane,
                &definition,
                &outages,
                &executions,
                store,
                spec,
                &name,
                abort_after,
                reap_tries,
                &dice,
            )
            .await
        }));
    }

    let sweeping = Arc::new(std::sync::atomic::AtomicBool::new(!breakage.no_sweep));
    let swept = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sweeper = {
        let deps = sweep_tasks::Deps {
            tasks: ecs.clone() as Arc<dyn TaskRunner>,
            runs: store.clone(),
            executions: executions.clone() as Arc<dyn Executions>,
            clock: clock.clone(),
            config: sweep_tasks::Config {
                stack: Some("sim".into()),
                ..Default::default()
            },
        };
        let (sweeping, swept) = (sweeping.clone(), swept.clone());
        tokio::spawn(async move {
            let period = Duration::from_secs(u64::from(sweep_tasks::SWEEP_MINUTES) * 60);
            loop {
                tokio::time::sleep(period).await;
                if !sweeping.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                let event = json!({"detail-type": sweep_tasks::SCHEDULED_EVENT});
                if let Ok(out) = sweep_tasks::function_handler(&deps, event).await {
                    swept.fetch_add(out.stopped.len(), std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };

    let mut results = Vec::new();
    for r in runs {
        results.push(r.await.expect("an execution task"));
    }
    let quiet_at = clock.now();
    let slots = memory.held_slots();
    // Let the sweep and late events act, then look at what is left.
    tokio::time::sleep(SETTLE).await;
    sweeper.abort();

    let dead_letters = lambda.get().map(|l| l.dead_letters()).unwrap_or_default();
    let facts = invariants::Facts {
        executions: &results,
        tasks: ecs.tasks(),
        runs: memory.all_runs(),
        slots,
        alerts: topic.published(),
        dead_letters,
        quiet_at,
        now: clock.now(),
        // Virtual time: the clock started at 06:00 when tokio's clock was `origin`.
        outages: outages
            .0
            .iter()
            .map(|o| {
                let at =
                    |i: tokio::time::Instant| datetime!(2026-11-24 06:00:00 UTC) + (i - origin);
                (at(o.from), at(o.until))
            })
            .collect(),
        check_interval_seconds,
        // store_before is the seed's fault scale (Rates::draw).
        fault_rate: rates.store_before,
        terminal_at: store
            .terminal_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        cluster_violations: ecs
            .cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .violations
            .clone(),
    };
    let violations = invariants::check(&facts);
    let (events_lost, events_dead_lettered) = {
        let c = ecs.cluster.lock().unwrap_or_else(|p| p.into_inner());
        (c.events_lost, c.dead_lettered_events)
    };
    let alerts_per_execution: Vec<usize> = results
        .iter()
        .map(|e| {
            facts
                .alerts
                .iter()
                .filter(|a| {
                    a.kind == stevedore_domain::alert::AlertKind::Failure
                        && a.execution_arn.as_deref() == Some(&e.arn)
                })
                .count()
        })
        .collect();
    let stats = Stats {
        executions: results.len(),
        tasks: facts.tasks.len(),
        swept: swept.load(std::sync::atomic::Ordering::Relaxed),
        aborted: results
            .iter()
            .filter(|r| r.ending == Ending::Aborted)
            .count(),
        failed: results
            .iter()
            .filter(|r| matches!(r.ending, Ending::Failed { .. }))
            .count(),
        events_lost,
        events_dead_lettered,
        executions_alerted_twice: alerts_per_execution.iter().filter(|n| **n > 1).count(),
        duplicate_alerts: alerts_per_execution
            .iter()
            .map(|n| n.saturating_sub(1))
            .sum(),
        outages: usize::from(!outages.0.is_empty()),
    };
    let digest = invariants::digest(&facts);
    let mut story = std::mem::take(&mut *story.lock().unwrap_or_else(|p| p.into_inner()));
    if trace {
        story.push(format!("spec: {spec}"));
        for o in outages.describe(origin) {
            story.push(format!("outage: {o}"));
        }
        for e in &results {
            story.push(format!("execution {e:?}"));
        }
        for r in &facts.runs {
            story.push(format!(
                "run {} {} task {:?} created {} deadline {} outcome {:?} notes {:?}",
                r.run_id,
                r.status,
                r.task_arn,
                r.created_at.time(),
                r.deadline.time(),
                r.outcome,
                r.notes
            ));
        }
        for t in &facts.tasks {
            story.push(format!(
                "task {} run {} natural {:?} stop asked {:?} ended by itself {} stop {:?} {:?} exit {:?}",
                t.desc.task_arn,
                t.launch.run_id,
                t.natural,
                t.stop_asked,
                t.ended_by_itself,
                t.desc.stop_code,
                t.desc.stopped_reason,
                t.desc.containers.first().and_then(|c| c.exit_code)
            ));
        }
    }
    Report {
        seed,
        executions: results.len(),
        violations,
        stats,
        digest,
        story,
    }
}

/// One execution of run-job: maybe aborted at a random moment; when it does
/// not succeed, EventBridge hands its status change to the reaper (Lambda's
/// asynchronous invocation: a try and two retries, then a dead-letter queue).
#[allow(clippy::too_many_arguments)]
async fn execution(
    plane: &LocalPlane,
    definition: &stevedore_engine::Definition,
    outages: &Outages,
    executions: &SimExecutions,
    store: Arc<FaultyStore>,
    spec: Value,
    name: &str,
    abort_after: Option<Duration>,
    reap_tries: u32,
    dice: &Dice,
) -> ExecutionResult {
    let arn = plane.engine.execution_arn("run-job", name);
    let input = spec.to_string();
    let started = plane.clock.now();
    let run = plane.engine.execute(definition, "run-job", name, spec);
    let limit = abort_after.unwrap_or(HORIZON).min(HORIZON);
    let (ending, status) = match tokio::time::timeout(limit, run).await {
        Ok(outcome) => match outcome.status {
            Status::Succeeded => (Ending::Succeeded, None),
            Status::Failed => (
                Ending::Failed {
                    error: outcome.error.unwrap_or_default(),
                },
                Some("FAILED"),
            ),
            Status::TimedOut => (
                Ending::Failed {
                    error: "States.Timeout".into(),
                },
                Some("TIMED_OUT"),
            ),
        },
        Err(_) if abort_after.is_some() => (Ending::Aborted, Some("ABORTED")),
        Err(_) => (Ending::Unfinished, None),
    };
    let ended_at = (ending != Ending::Unfinished).then(|| plane.clock.now());
    if ending != Ending::Unfinished {
        executions.end(&arn, status.unwrap_or("SUCCEEDED"));
    }
    let mut reap_dead_lettered = false;
    if let Some(status) = status {
        let event = json!({
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "detail": {"executionArn": arn, "status": status, "input": input,
                       "startDate": (started.unix_timestamp_nanos() / 1_000_000) as i64},
        });
        let deps = reap_execution::Deps {
            tasks: plane.handlers.tasks.clone(),
            runs: store,
            clock: plane.clock.clone(),
            prices: stevedore_domain::cost::PriceTable::builtin(),
            region: "us-east-1".into(),
        };
        tokio::time::sleep(Duration::from_secs(dice.between(0, 30))).await;
        let mut done = reap_tries == 0;
        for attempt in 0..reap_tries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(60 * u64::from(attempt))).await;
            }
            // Throttled or failed invocations wait in Lambda's queue.
            ecs::wait_for(outages, Service::Lambda, dice).await;
            if reap_execution::function_handler(&deps, event.clone())
                .await
                .is_ok()
            {
                done = true;
                break;
            }
        }
        reap_dead_lettered = !done && reap_tries > 0;
    }
    ExecutionResult {
        arn,
        ending,
        ended_at,
        reap_dead_lettered,
    }
}

/// The run-job definition the seed runs: the real one, or a broken one.
fn run_job(breakage: Breakage) -> stevedore_engine::Definition {
    let mut text = stevedore_local::plane::RUN_JOB_ASL.to_string();
    if breakage.watch_failure_stops {
        let mut def: Value = serde_json::from_str(&text).expect("run-job is JSON");
        let catches = def["States"]["Wait for task"]["Catch"]
            .as_array_mut()
            .expect("Wait for task has catchers");
        for c in catches.iter_mut() {
            if c["ErrorEquals"] == json!(["States.ALL"]) {
                c["Next"] = json!("Stop task");
                c["ResultPath"] = json!("$.error");
            }
        }
        let states = def["States"].as_object_mut().expect("States");
        for name in [
            "Watch failed: when?",
            "Past the deadline?",
            "Keep watching",
            "Deadline passed unwatched",
        ] {
            states.remove(name);
        }
        text = def.to_string();
    }
    stevedore_engine::Definition::parse(&stevedore_local::plane::substitute(
        &text,
        &stevedore_local::plane::local_substitutions(),
    ))
    .expect("the run-job definition parses")
}
