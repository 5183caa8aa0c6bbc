//! A simulated ECS cluster on tokio's (virtual) clock: tasks that run for a
//! seeded while and end as real tasks do, RunTask's client-token
//! idempotency, DescribeTasks and ListTasks that do not see a new task for a
//! few seconds, tasks that stay PROVISIONING/PENDING for minutes (an image
//! pull) and DEPROVISIONING for up to two minutes after their container
//! exited, DescribeTasks that shows a stopped task as it was for a few
//! seconds after its event, throttled and timed-out calls, and "ECS Task
//! State Change" events that EventBridge loses, duplicates, delays and
//! reorders, delivered to `task-events` as Lambda's asynchronous invocation
//! does (two retries).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use stevedore_domain::ports::{Clock, Launch, LaunchedTask, RunningTask, TaskRunner};
use stevedore_domain::spec::Capacity;
use stevedore_domain::task::{ContainerState, TaskDescription, TaskLookup};
use stevedore_domain::{Error, FailureClass, Result};
use stevedore_local::tasks::{EventSink, LocalRunner};
use tokio::time::Instant;

use crate::faults::{Dice, Outages, Rates, Service};

/// Runs `task-events` once on an event; an error is a failed invocation.
pub type EventHandler =
    Arc<dyn Fn(Value) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

/// How a task ends when nobody stops it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub after: Duration,
    pub exit_code: Option<i32>,
    pub stop_code: String,
    pub reason: String,
}

/// One task, and what really happened to it.
#[derive(Debug, Clone)]
pub struct SimTask {
    pub desc: TaskDescription,
    pub launch: Launch,
    pub started: Instant,
    /// DescribeTasks and ListTasks see the task from then on.
    pub visible_at: Instant,
    pub natural: Ending,
    /// Its container starts then (PROVISIONING and PENDING before).
    pub running_at: Instant,
    /// Its containers ended (the task is DEPROVISIONING until `stopped`).
    pub exited: Option<Instant>,
    /// What DescribeTasks showed before the stop, shown until then.
    pub stale: Option<(Instant, TaskDescription)>,
    pub stop_requested: Option<Instant>,
    /// When Stevedore asked ECS to stop the task (while it ran), and why.
    pub stop_asked: Option<(time::OffsetDateTime, String)>,
    pub stopped: Option<Instant>,
    /// The task ended on its own, before anyone asked it to stop.
    pub ended_by_itself: bool,
}

impl SimTask {
    /// Alive: not stopped, not asked to stop, its containers not ended.
    pub fn alive(&self) -> bool {
        self.stopped.is_none() && self.stop_requested.is_none() && self.exited.is_none()
    }

    /// Its job's container may be running: not ended, whether or not it
    /// was asked to stop (a stop is SIGTERM, then up to 30 s of grace).
    pub fn container_may_run(&self) -> bool {
        self.stopped.is_none() && self.exited.is_none()
    }
}

#[derive(Default)]
pub struct Cluster {
    pub tasks: BTreeMap<String, SimTask>,
    by_token: BTreeMap<String, String>,
    next: u64,
    /// Violations seen as they happen (concurrency, two tasks for an attempt).
    pub violations: Vec<(String, String)>,
    /// Events whose every delivery attempt failed (EventBridge's DLQ).
    pub dead_lettered_events: u32,
    pub events_sent: u32,
    pub events_lost: u32,
}

pub struct SimEcs {
    pub cluster: Mutex<Cluster>,
    clock: Arc<dyn Clock>,
    dice: Dice,
    rates: Rates,
    outages: Outages,
    events: OnceLock<EventHandler>,
    /// ECS stopping a task (SIGTERM, the container exits) takes this long at most.
    pub stop_seconds: u64,
    /// How long RunTask's request and answer take (a dice of its own, so
    /// the other draws of a seed keep their meaning): while they travel,
    /// the launch that called it can be overtaken by a second invocation or
    /// by the reaper of an aborted execution.
    pace: Dice,
    me: Weak<SimEcs>,
}

impl SimEcs {
    pub fn new(
        clock: Arc<dyn Clock>,
        dice: Dice,
        rates: Rates,
        outages: Outages,
        pace: Dice,
    ) -> Arc<SimEcs> {
        Arc::new_cyclic(|me| SimEcs {
            pace,
            cluster: Mutex::new(Cluster::default()),
            clock,
            dice,
            rates,
            outages,
            events: OnceLock::new(),
            stop_seconds: 30,
            me: me.clone(),
        })
    }

    pub fn set_event_handler(&self, handler: EventHandler) {
        self.events.set(handler).ok();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn tasks(&self) -> Vec<SimTask> {
        self.lock().tasks.values().cloned().collect()
    }

    fn fault(&self, api: &str) -> Result<()> {
        if self.outages.down(Service::Ecs) || self.dice.chance(self.rates.ecs_before) {
            return Err(if self.dice.chance(0.5) {
                Error::new(
                    FailureClass::Throttled,
                    format!("{api}: Rate exceeded (simulated)"),
                )
            } else {
                Error::transient(format!("{api}: the request timed out (simulated)"))
            });
        }
        Ok(())
    }

    fn fault_after(&self, api: &str) -> Result<()> {
        if self.dice.chance(self.rates.ecs_after) {
            return Err(Error::transient(format!(
                "{api}: the request timed out after ECS took it (simulated)"
            )));
        }
        Ok(())
    }

    /// How this task will end by itself.
    fn draw_ending(&self, capacity: Capacity) -> Ending {
        let d = &self.dice;
        let after = Duration::from_secs(match d.between(0, 9) {
            0..=3 => d.between(5, 120),
            4..=7 => d.between(120, 1800),
            _ => d.between(1800, 3 * 3600),
        });
        let roll = d.between(0, 99);
        let exited = |code: i32, reason: &str| Ending {
            after,
            exit_code: Some(code),
            stop_code: "EssentialContainerExited".into(),
            reason: reason.into(),
        };
        match roll {
            0..=59 => exited(0, "Essential container in task exited"),
            60..=74 => exited(3, "Essential container in task exited"),
            75..=79 => exited(
                137,
                "OutOfMemoryError: Container killed due to memory usage",
            ),
            80..=89 if capacity == Capacity::Spot => Ending {
                after,
                exit_code: Some(143),
                stop_code: "SpotInterruption".into(),
                reason: "Your Spot Task was interrupted.".into(),
            },
            90..=94 => Ending {
                after: Duration::from_secs(d.between(5, 90)),
                exit_code: None,
                stop_code: "TaskFailedToStart".into(),
                reason: "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref".into(),
            },
            _ => exited(0, "Essential container in task exited"),
        }
    }

    /// Ends a task's containers (the first end wins); ECS then takes the
    /// task down for a while (DEPROVISIONING) before it is STOPPED and its
    /// event is sent.
    fn finish(self: &Arc<Self>, arn: &str, exit_code: Option<i32>, stop_code: &str, reason: &str) {
        let now = self.clock.now();
        {
            let mut c = self.lock();
            let Some(t) = c.tasks.get_mut(arn) else {
                return;
            };
            if t.stopped.is_some() || t.exited.is_some() {
                return;
            }
            t.exited = Some(Instant::now());
            t.ended_by_itself = t.stop_requested.is_none();
            t.desc.last_status = "DEPROVISIONING".into();
            t.desc.desired_status = Some("STOPPED".into());
            if t.desc.stop_code.is_none() {
                t.desc.stop_code = Some(stop_code.into());
                t.desc.stopped_reason = Some(reason.into());
            }
            t.desc.stopping_at.get_or_insert(now);
            if stop_code != "TaskFailedToStart" {
                t.desc.started_at.get_or_insert(now);
            }
            for container in &mut t.desc.containers {
                container.exit_code = exit_code;
                container.last_status = Some("STOPPED".into());
            }
        }
        let me = self.clone();
        let arn = arn.to_string();
        let deprovisioning = Duration::from_secs(self.dice.between(1, 120));
        tokio::spawn(async move {
            tokio::time::sleep(deprovisioning).await;
            me.stopped(&arn);
        });
    }

    /// The task is STOPPED: its event goes out. DescribeTasks may show it
    /// as it was for a few seconds more (its API is eventually consistent).
    fn stopped(self: &Arc<Self>, arn: &str) {
        let now = self.clock.now();
        let lag = Duration::from_secs(self.dice.between(0, 10));
        let detail = {
            let mut c = self.lock();
            let Some(t) = c.tasks.get_mut(arn) else {
                return;
            };
            if t.stopped.is_some() {
                return;
            }
            t.stale = Some((Instant::now() + lag, t.desc.clone()));
            t.stopped = Some(Instant::now());
            t.desc.last_status = "STOPPED".into();
            t.desc.stopped_at = Some(now);
            t.desc.clone()
        };
        self.send_event(detail);
    }

    fn send_event(self: &Arc<Self>, detail: TaskDescription) {
        let copies = if self.dice.chance(0.08) {
            self.lock().events_lost += 1;
            0
        } else if self.dice.chance(0.08) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = Duration::from_secs(self.dice.between(0, 90));
            let me = self.clone();
            let event = json!({
                "version": "0",
                "id": format!("event-{}", self.dice.seed()),
                "detail-type": "ECS Task State Change",
                "source": "aws.ecs",
                "account": "123456789012",
                "region": "us-east-1",
                "resources": [detail.task_arn.clone()],
                "detail": detail.clone(),
            });
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                me.deliver(event).await;
            });
        }
    }

    /// Lambda's asynchronous invocation: the first try and two retries
    /// (about a minute, then two, apart); then the event's dead-letter queue.
    /// While Lambda refuses invocations (throttled, or failing itself) the
    /// event waits in Lambda's queue without using up a try: the Lambda
    /// guide says such events are retried for up to six hours.
    async fn deliver(self: Arc<Self>, event: Value) {
        let Some(handler) = self.events.get().cloned() else {
            return;
        };
        self.lock().events_sent += 1;
        for attempt in 0..3u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(60 * attempt)).await;
            }
            wait_for(&self.outages, Service::Lambda, &self.dice).await;
            if self.dice.chance(self.rates.lambda_before) {
                continue;
            }
            let ok = handler(event.clone()).await.is_ok();
            if ok && !self.dice.chance(self.rates.lambda_after) {
                return;
            }
        }
        self.lock().dead_lettered_events += 1;
    }

    fn check_start(&self, c: &mut Cluster, launch: &Launch) {
        let max = launch.spec.concurrency.max as usize;
        let count = |f: fn(&SimTask) -> bool| {
            c.tasks
                .values()
                .filter(|t| t.launch.spec.job == launch.spec.job && f(t))
                .count()
        };
        // Every task whose container may still run counts, one asked to
        // stop included (SIGTERM, then up to 30 s of grace): concurrency
        // holds at every instant, not only among the tasks nobody stopped.
        let may_run = count(SimTask::container_may_run);
        if may_run > max {
            c.violations.push((
                "concurrency".into(),
                format!(
                    "{may_run} tasks of job {} whose containers may run at once (concurrency.max = {max}; {} not asked to stop) when run {} started one",
                    launch.spec.job,
                    count(SimTask::alive),
                    launch.run_id
                ),
            ));
        }
        let same_attempt = c
            .tasks
            .values()
            .filter(|t| t.launch.run_id == launch.run_id)
            .count();
        if same_attempt > 1 {
            c.violations.push((
                "one task per attempt".into(),
                format!("{same_attempt} tasks started for run {}", launch.run_id),
            ));
        }
    }
}

/// Waits until `service` is up again, plus a retry's jitter.
pub async fn wait_for(outages: &Outages, service: Service, dice: &Dice) {
    if outages.down(service) {
        tokio::time::sleep_until(outages.up_at(service)).await;
        tokio::time::sleep(Duration::from_secs(dice.between(1, 60))).await;
    }
}

impl LocalRunner for SimEcs {
    /// The plane's own sink is not used: events go through [`SimEcs::set_event_handler`].
    fn set_event_sink(&self, _sink: EventSink) {}
}

#[async_trait]
impl TaskRunner for SimEcs {
    async fn run_task(&self, launch: &Launch) -> Result<LaunchedTask> {
        tokio::time::sleep(Duration::from_millis(self.pace.between(20, 1500))).await;
        self.fault("RunTask")?;
        {
            let c = self.lock();
            if let Some(arn) = c.by_token.get(&launch.client_token) {
                let task = c.tasks.get(arn).map(|t| t.desc.clone());
                return Ok(LaunchedTask {
                    task_arn: arn.clone(),
                    task,
                });
            }
        }
        let no_capacity = match launch.capacity {
            Capacity::Spot => 0.25,
            _ => 0.03,
        };
        if self.dice.chance(no_capacity) {
            return Err(Error::new(
                FailureClass::CapacityUnavailable,
                "RunTask failed: Capacity is unavailable at this time. Please try again later or in a different availability zone (simulated)",
            ));
        }
        let natural = self.draw_ending(launch.capacity);
        let visible_in = Duration::from_secs(self.dice.between(0, 20));
        // Most tasks start in seconds; some wait minutes for capacity or
        // their image (PROVISIONING, PENDING).
        let pending = Duration::from_secs(if self.dice.chance(0.2) {
            self.dice.between(60, 600)
        } else {
            self.dice.between(2, 30)
        });
        let ends_after = if natural.stop_code == "TaskFailedToStart" {
            natural.after
        } else {
            pending + natural.after
        };
        let now = self.clock.now();
        let task = {
            let mut c = self.lock();
            c.next += 1;
            let arn = format!("arn:aws:ecs:us-east-1:123456789012:task/sim/{:08}", c.next);
            let desc = TaskDescription {
                task_arn: arn.clone(),
                last_status: "PROVISIONING".into(),
                desired_status: Some("RUNNING".into()),
                started_by: Some(launch.started_by.clone()),
                containers: vec![ContainerState {
                    name: launch
                        .spec
                        .container
                        .clone()
                        .unwrap_or_else(|| "app".into()),
                    last_status: Some("PENDING".into()),
                    ..Default::default()
                }],
                cpu: Some("1024".into()),
                memory: Some("2048".into()),
                capacity_provider_name: Some(
                    if launch.capacity.uses_spot() {
                        "FARGATE_SPOT"
                    } else {
                        "FARGATE"
                    }
                    .into(),
                ),
                launch_type: Some("FARGATE".into()),
                created_at: Some(now),
                ..Default::default()
            };
            c.tasks.insert(
                arn.clone(),
                SimTask {
                    desc: desc.clone(),
                    launch: launch.clone(),
                    started: Instant::now(),
                    visible_at: Instant::now() + visible_in,
                    natural: natural.clone(),
                    running_at: Instant::now() + pending,
                    exited: None,
                    stale: None,
                    stop_requested: None,
                    stop_asked: None,
                    stopped: None,
                    ended_by_itself: false,
                },
            );
            c.by_token.insert(launch.client_token.clone(), arn.clone());
            self.check_start(&mut c, launch);
            desc
        };
        let arn = task.task_arn.clone();
        let me = self.self_arc();
        tokio::spawn(async move {
            tokio::time::sleep(ends_after).await;
            me.finish(&arn, natural.exit_code, &natural.stop_code, &natural.reason);
        });
        tokio::time::sleep(Duration::from_millis(self.pace.between(20, 3000))).await;
        self.fault_after("RunTask")?;
        Ok(LaunchedTask {
            task_arn: task.task_arn.clone(),
            task: Some(task),
        })
    }

    async fn describe_tasks(&self, task_arns: &[String]) -> Result<Vec<TaskLookup>> {
        self.fault("DescribeTasks")?;
        let c = self.lock();
        let now = Instant::now();
        Ok(task_arns
            .iter()
            .map(|arn| match c.tasks.get(arn) {
                Some(t) if now >= t.visible_at => {
                    // Just after its stop, DescribeTasks may still show it as it was.
                    if let Some((until, before)) = &t.stale {
                        if now < *until {
                            return TaskLookup::Found(before.clone());
                        }
                    }
                    let mut d = t.desc.clone();
                    if t.stopped.is_none() && t.exited.is_none() {
                        d.last_status = if now >= t.running_at {
                            "RUNNING"
                        } else if now >= t.started + Duration::from_secs(2) {
                            "PENDING"
                        } else {
                            "PROVISIONING"
                        }
                        .into();
                    }
                    TaskLookup::Found(d)
                }
                _ => TaskLookup::Missing {
                    task_arn: arn.clone(),
                    reason: "MISSING".into(),
                },
            })
            .collect())
    }

    async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<()> {
        self.fault("StopTask")?;
        let stopping = {
            let mut c = self.lock();
            match c.tasks.get_mut(task_arn) {
                Some(t)
                    if t.stopped.is_none() && t.stop_requested.is_none() && t.exited.is_none() =>
                {
                    t.stop_requested = Some(Instant::now());
                    t.stop_asked = Some((self.clock.now(), reason.to_string()));
                    t.desc.desired_status = Some("STOPPED".into());
                    t.desc.stop_code = Some("UserInitiated".into());
                    t.desc.stopped_reason = Some(reason.into());
                    t.desc.stopping_at = Some(self.clock.now());
                    true
                }
                _ => false,
            }
        };
        if stopping {
            let me = self.self_arc();
            let arn = task_arn.to_string();
            let after = Duration::from_secs(self.dice.between(1, self.stop_seconds));
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                me.finish(&arn, Some(143), "UserInitiated", "stopped");
            });
        }
        self.fault_after("StopTask")
    }

    async fn find_tasks(
        &self,
        started_by: &str,
        _family: Option<&str>,
    ) -> Result<Vec<TaskDescription>> {
        let arns: Vec<String> = {
            self.fault("ListTasks")?;
            let c = self.lock();
            let now = Instant::now();
            c.tasks
                .values()
                .filter(|t| t.launch.started_by == started_by && now >= t.visible_at)
                .map(|t| t.desc.task_arn.clone())
                .collect()
        };
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .describe_tasks(&arns)
            .await?
            .into_iter()
            .filter_map(TaskLookup::found)
            .collect())
    }

    async fn list_running(&self, prefix: &str) -> Result<Vec<RunningTask>> {
        self.fault("ListTasks")?;
        let c = self.lock();
        let now = Instant::now();
        Ok(c.tasks
            .values()
            .filter(|t| t.alive() && now >= t.visible_at)
            .filter(|t| t.launch.started_by.starts_with(prefix))
            .map(|t| RunningTask {
                task_arn: t.desc.task_arn.clone(),
                started_by: t.launch.started_by.clone(),
                created_at: t.desc.created_at,
                tags: t.launch.tags.clone(),
            })
            .collect())
    }
}

impl SimEcs {
    /// The `Arc` this cluster lives in (its timers hold it).
    fn self_arc(&self) -> Arc<SimEcs> {
        self.me
            .upgrade()
            .expect("the cluster outlives its own calls")
    }
}
