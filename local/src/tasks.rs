//! [`TaskRunner`]s for one machine. Both keep ECS's contract: a repeated
//! client token gets the same task back, a stopped task is described as ECS
//! would describe it, and its stop is delivered as the "ECS Task State
//! Change" event EventBridge would send.
//!
//! - [`ProcessTaskRunner`] runs the job's command as a local process; its
//!   output is the task's log; stop is SIGTERM, then SIGKILL after a grace.
//! - [`SimulatedTaskRunner`] runs nothing: each launch follows a script
//!   (how long it runs, how it ends), on tokio's clock — with a paused
//!   runtime a six-hour job takes no real time. For tests and benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use stevedore_domain::ports::{Clock, Launch, LaunchedTask, RunningTask, TaskRunner};
use stevedore_domain::task::{Attribute, ContainerState, TaskDescription, TaskLookup};
use stevedore_domain::{Error, Result};
use tokio::io::AsyncWriteExt;

/// Where stopped-task events go (the `task-events` handler, in-process).
pub type EventSink = Arc<dyn Fn(Value) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A task runner that reports stops to an event sink (the plane wires
/// `task-events` in).
pub trait LocalRunner: TaskRunner {
    fn set_event_sink(&self, sink: EventSink);
}

impl LocalRunner for ProcessTaskRunner {
    fn set_event_sink(&self, sink: EventSink) {
        self.table.sink.set(sink).ok();
    }
}

impl LocalRunner for SimulatedTaskRunner {
    fn set_event_sink(&self, sink: EventSink) {
        self.table.sink.set(sink).ok();
    }
}

/// The task table both runners share.
struct Table {
    tasks: Mutex<HashMap<String, TaskDescription>>,
    by_token: Mutex<HashMap<String, String>>,
    tags: Mutex<HashMap<String, BTreeMap<String, String>>>,
    sink: OnceLock<EventSink>,
    clock: Arc<dyn Clock>,
}

impl Table {
    fn new(clock: Arc<dyn Clock>) -> Table {
        Table {
            tasks: Mutex::new(HashMap::new()),
            by_token: Mutex::new(HashMap::new()),
            tags: Mutex::new(HashMap::new()),
            sink: OnceLock::new(),
            clock,
        }
    }

    fn known(&self, token: &str) -> Option<LaunchedTask> {
        let arn = self
            .by_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()?;
        let task = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&arn)
            .cloned();
        Some(LaunchedTask {
            task_arn: arn,
            task,
        })
    }

    fn start(&self, launch: &Launch) -> TaskDescription {
        let arn = format!(
            "arn:aws:ecs:local:000000000000:task/local/{}",
            uuid::Uuid::new_v4().simple()
        );
        let now = self.clock.now();
        let container = launch
            .spec
            .container
            .clone()
            .unwrap_or_else(|| "app".into());
        let task = TaskDescription {
            task_arn: arn.clone(),
            cluster_arn: Some("arn:aws:ecs:local:000000000000:cluster/local".into()),
            task_definition_arn: Some(format!(
                "arn:aws:ecs:local:000000000000:task-definition/{}",
                launch.spec.task_definition
            )),
            last_status: "RUNNING".into(),
            desired_status: Some("RUNNING".into()),
            started_by: Some(launch.started_by.clone()),
            containers: vec![ContainerState {
                name: container,
                last_status: Some("RUNNING".into()),
                ..Default::default()
            }],
            cpu: Some(launch.spec.cpu.unwrap_or(1024).to_string()),
            memory: Some(launch.spec.memory.unwrap_or(2048).to_string()),
            capacity_provider_name: Some(
                if launch.capacity.uses_spot() {
                    "FARGATE_SPOT"
                } else {
                    "FARGATE"
                }
                .into(),
            ),
            launch_type: Some("FARGATE".into()),
            attributes: vec![Attribute {
                name: "ecs.cpu-architecture".into(),
                value: Some(std::env::consts::ARCH.replace("aarch64", "arm64")),
            }],
            created_at: Some(now),
            pull_started_at: Some(now),
            started_at: Some(now),
            ..Default::default()
        };
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(arn.clone(), task.clone());
        self.by_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(launch.client_token.clone(), arn.clone());
        self.tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(arn, launch.tags.clone());
        task
    }

    /// Marks a task stopped (first report wins) and delivers the event.
    async fn stopped(
        &self,
        arn: &str,
        exit_code: Option<i32>,
        stop_code: &str,
        reason: &str,
        deliver: bool,
    ) {
        let now = self.clock.now();
        let task = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            let Some(t) = tasks.get_mut(arn) else { return };
            if t.is_stopped() {
                return;
            }
            t.last_status = "STOPPED".into();
            t.desired_status = Some("STOPPED".into());
            // A stop we asked for keeps its code and reason.
            if t.stop_code.is_none() {
                t.stop_code = Some(stop_code.into());
                t.stopped_reason = Some(reason.into());
            }
            t.stopping_at.get_or_insert(now);
            t.stopped_at = Some(now);
            for c in &mut t.containers {
                c.exit_code = exit_code;
                c.last_status = Some("STOPPED".into());
            }
            t.clone()
        };
        if !deliver {
            return;
        }
        if let Some(sink) = self.sink.get() {
            sink(json!({
                "version": "0",
                "id": uuid::Uuid::new_v4().to_string(),
                "detail-type": "ECS Task State Change",
                "source": "aws.ecs",
                "account": "000000000000",
                "region": "local",
                "time": stevedore_domain::task::format_time(now),
                "resources": [arn],
                "detail": task,
            }))
            .await;
        }
    }

    fn mark_stopping(&self, arn: &str, reason: &str) -> bool {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        match tasks.get_mut(arn) {
            Some(t) if !t.is_stopped() => {
                t.desired_status = Some("STOPPED".into());
                t.stop_code = Some("UserInitiated".into());
                t.stopped_reason = Some(reason.into());
                t.stopping_at = Some(self.clock.now());
                true
            }
            _ => false,
        }
    }

    fn started_by(&self, started_by: &str) -> Vec<TaskDescription> {
        let mut out: Vec<TaskDescription> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| t.started_by.as_deref() == Some(started_by))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.task_arn.cmp(&b.task_arn));
        out
    }

    /// Tasks not stopped nor asked to stop, oldest first.
    fn running_with_prefix(&self, prefix: &str) -> Vec<RunningTask> {
        let tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<RunningTask> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| !t.is_stopped() && t.desired_status.as_deref() != Some("STOPPED"))
            .filter_map(|t| {
                let started_by = t.started_by.clone().filter(|s| s.starts_with(prefix))?;
                Some(RunningTask {
                    task_arn: t.task_arn.clone(),
                    started_by,
                    created_at: t.created_at,
                    tags: tags.get(&t.task_arn).cloned().unwrap_or_default(),
                })
            })
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.task_arn).cmp(&(b.created_at, &b.task_arn)));
        out
    }

    fn describe(&self, arns: &[String]) -> Vec<TaskLookup> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        arns.iter()
            .map(|a| match tasks.get(a) {
                Some(t) => TaskLookup::Found(t.clone()),
                None => TaskLookup::Missing {
                    task_arn: a.clone(),
                    reason: "MISSING".into(),
                },
            })
            .collect()
    }
}

/// Receives each line a task writes, with its run id.
pub type LineEcho = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Settings of the process runner.
#[derive(Clone)]
pub struct ProcessSettings {
    /// Task logs go to `<dir>/<run id>.log`.
    pub log_dir: PathBuf,
    /// Variables a task definition's `secrets` would inject (from the local
    /// environment or a secrets file), never from the spec.
    pub secrets: BTreeMap<String, String>,
    /// SIGTERM, then SIGKILL after this long (ECS's default stopTimeout is 30 s).
    pub stop_grace: Duration,
    /// Echo each log line here as it comes (the CLI prints them).
    pub echo: Option<LineEcho>,
    /// Where each job process is recorded while it runs, so that a later
    /// `stevedore` can stop it if this one dies.
    pub ledger: Option<Arc<dyn crate::ledger::ProcessLedger>>,
}

pub struct ProcessTaskRunner {
    table: Arc<Table>,
    settings: ProcessSettings,
    /// Masks the injected secrets' values in every line of output.
    masker: crate::output::Masker,
    pids: Arc<Mutex<HashMap<String, u32>>>,
    /// Stop events wait while this is held for writing (`hold_events`).
    events: Arc<tokio::sync::RwLock<()>>,
}

impl ProcessTaskRunner {
    pub fn new(clock: Arc<dyn Clock>, settings: ProcessSettings) -> Self {
        let (masker, _) = crate::output::Masker::new(&settings.secrets);
        ProcessTaskRunner {
            table: Arc::new(Table::new(clock)),
            masker,
            settings,
            pids: Arc::new(Mutex::new(HashMap::new())),
            events: Arc::new(tokio::sync::RwLock::new(())),
        }
    }

    pub fn log_path(&self, run_id: &str) -> PathBuf {
        self.settings.log_dir.join(format!("{run_id}.log"))
    }

    /// How many job processes are running.
    pub fn live(&self) -> usize {
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Holds back stop events until the guard is dropped. EventBridge
    /// delivers a task's stop seconds after it; in-process it would come at
    /// once, ahead of a write made right after StopTask (the reaper's
    /// CANCELLED), which AWS's delay leaves time for.
    pub async fn hold_events(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.events.clone().write_owned().await
    }

    /// SIGKILL to every running job's process group, now.
    pub fn kill_all(&self) {
        for pid in self.pids.lock().unwrap_or_else(|p| p.into_inner()).values() {
            signal(*pid, libc::SIGKILL);
        }
    }
}

#[async_trait]
impl TaskRunner for ProcessTaskRunner {
    async fn run_task(&self, launch: &Launch) -> Result<LaunchedTask> {
        if let Some(known) = self.table.known(&launch.client_token) {
            return Ok(known);
        }
        let Some(command) = launch.spec.command.clone().filter(|c| !c.is_empty()) else {
            return Err(Error::configuration(format!(
                "local mode runs the job's `command`, and `{}` has none: add `command` (and `container`) to the job spec",
                launch.spec.job
            )));
        };
        std::fs::create_dir_all(&self.settings.log_dir).map_err(|e| {
            Error::configuration(format!(
                "cannot create the log directory {}: {e}",
                self.settings.log_dir.display()
            ))
        })?;
        // Opened before the process starts: from its start until its waiter
        // runs there is no await, so a dropped launch cannot lose the process.
        let log_path = self.log_path(&launch.run_id);
        let log = tokio::fs::File::create(&log_path).await.map_err(|e| {
            Error::configuration(format!("cannot write {}: {e}", log_path.display()))
        })?;
        let mut cmd = tokio::process::Command::new(&command[0]);
        cmd.args(&command[1..])
            .envs(&self.settings.secrets)
            .envs(&launch.spec.environment)
            .envs(launch.run_env())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own process group, so a stop reaches every process of the
            // job, as stopping a container does.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            // What ECS reports when the entry point cannot start; a missing
            // or non-executable program will not start on a retry either.
            let message = format!(
                "CannotStartContainerError: cannot run `{}`: {e}",
                command[0]
            );
            let class = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    stevedore_domain::FailureClass::ContainerMisconfigured
                }
                _ if e.raw_os_error() == Some(libc::ENOEXEC) => {
                    stevedore_domain::FailureClass::ContainerMisconfigured
                }
                _ => stevedore_domain::failure::start_failure_class(&message),
            };
            Error::new(class, message)
        })?;
        let task = self.table.start(launch);
        let arn = task.task_arn.clone();
        if let Some(pid) = child.id() {
            self.pids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(arn.clone(), pid);
            if let Some(ledger) = &self.settings.ledger {
                ledger.started(&arn, &launch.run_id, &crate::procs::ProcessId::of(pid));
            }
        }
        // The output, as bytes, to its end: each line masked, then into the
        // log file and onto the console, all of it before the task counts as
        // stopped (the stop event is what gets the run recorded).
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(crate::output::pump(stream, tx.clone(), ended.clone()));
        }
        drop(tx);
        let echo = self.settings.echo.clone();
        let masker = self.masker.clone();
        let run_id = launch.run_id.clone();
        let table = self.table.clone();
        let pids = self.pids.clone();
        let ledger = self.settings.ledger.clone();
        let events = self.events.clone();
        let writer = tokio::spawn(async move {
            let mut log = tokio::io::BufWriter::new(log);
            while let Some(line) = rx.recv().await {
                let line = masker.apply(&line);
                let _ = log.write_all(&line).await;
                if let Some(e) = &echo {
                    e(&run_id, &crate::output::shown(&line));
                }
            }
            let _ = log.flush().await;
        });
        tokio::spawn(async move {
            let status = child.wait().await;
            // Whatever the leader left behind in its group goes with it, as
            // a container's processes go with the container.
            if let Some(pid) = child.id().or_else(|| {
                pids.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&arn)
                    .copied()
            }) {
                signal(pid, libc::SIGKILL);
            }
            // Every line is in the log and on the console before the stop is
            // reported; a process that left the group and holds the pipes
            // open is given up on once the output has been quiet a while.
            let _ = ended_tx.send(true);
            let _ = writer.await;
            pids.lock().unwrap_or_else(|p| p.into_inner()).remove(&arn);
            if let Some(ledger) = &ledger {
                ledger.ended(&arn);
            }
            let (code, reason) = match status {
                Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                    (Some(c), _) => (Some(c), "Essential container in task exited".to_string()),
                    // Killed by a signal: report it as a container runtime would (128 + n).
                    (None, Some(sig)) => (
                        Some(128 + sig),
                        format!("Essential container in task exited (signal {sig})"),
                    ),
                    (None, None) => (None, "Essential container in task exited".to_string()),
                },
                Err(e) => (None, format!("the process could not be awaited: {e}")),
            };
            let _open = events.read().await;
            table
                .stopped(&arn, code, "EssentialContainerExited", &reason, true)
                .await;
        });
        Ok(LaunchedTask {
            task_arn: task.task_arn.clone(),
            task: Some(task),
        })
    }

    async fn describe_tasks(&self, task_arns: &[String]) -> Result<Vec<TaskLookup>> {
        Ok(self.table.describe(task_arns))
    }

    async fn find_tasks(
        &self,
        started_by: &str,
        _family: Option<&str>,
    ) -> Result<Vec<TaskDescription>> {
        Ok(self.table.started_by(started_by))
    }

    async fn list_running(&self, prefix: &str) -> Result<Vec<RunningTask>> {
        Ok(self.table.running_with_prefix(prefix))
    }

    async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<()> {
        if !self.table.mark_stopping(task_arn, reason) {
            return Ok(());
        }
        let pid = self
            .pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_arn)
            .copied();
        if let Some(pid) = pid {
            signal(pid, libc::SIGTERM);
            let pids = self.pids.clone();
            let arn = task_arn.to_string();
            let grace = self.settings.stop_grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let still = pids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&arn)
                    .copied();
                if let Some(pid) = still {
                    signal(pid, libc::SIGKILL);
                }
            });
        }
        Ok(())
    }
}

/// Signals the job's whole process group (it leads its own group).
fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) on the process group of a child we spawned and
        // still track; no memory is involved.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

/// How a simulated task behaves.
#[derive(Debug, Clone)]
pub enum SimOutcome {
    /// RunTask fails with this error (capacity, start failure, ...).
    LaunchFails(Error),
    /// Runs for a while, then stops like this.
    Runs {
        for_: Duration,
        exit_code: Option<i32>,
        stop_code: String,
        reason: String,
        /// The stop event never arrives (only the poll can find it).
        lose_event: bool,
    },
}

impl SimOutcome {
    pub fn exits(after: Duration, code: i32) -> SimOutcome {
        SimOutcome::Runs {
            for_: after,
            exit_code: Some(code),
            stop_code: "EssentialContainerExited".into(),
            reason: "Essential container in task exited".into(),
            lose_event: false,
        }
    }
}

pub type SimScript = Arc<dyn Fn(&Launch) -> SimOutcome + Send + Sync>;

pub struct SimulatedTaskRunner {
    table: Arc<Table>,
    script: SimScript,
    launches: Mutex<Vec<Launch>>,
}

impl SimulatedTaskRunner {
    pub fn new(clock: Arc<dyn Clock>, script: SimScript) -> Self {
        SimulatedTaskRunner {
            table: Arc::new(Table::new(clock)),
            script,
            launches: Mutex::new(Vec::new()),
        }
    }

    pub fn launches(&self) -> Vec<Launch> {
        self.launches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn task(&self, arn: &str) -> Option<TaskDescription> {
        self.table
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(arn)
            .cloned()
    }
}

#[async_trait]
impl TaskRunner for SimulatedTaskRunner {
    async fn run_task(&self, launch: &Launch) -> Result<LaunchedTask> {
        if let Some(known) = self.table.known(&launch.client_token) {
            return Ok(known);
        }
        self.launches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(launch.clone());
        match (self.script)(launch) {
            SimOutcome::LaunchFails(e) => Err(e),
            SimOutcome::Runs {
                for_,
                exit_code,
                stop_code,
                reason,
                lose_event,
            } => {
                let task = self.table.start(launch);
                let table = self.table.clone();
                let arn = task.task_arn.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(for_).await;
                    table
                        .stopped(&arn, exit_code, &stop_code, &reason, !lose_event)
                        .await;
                });
                Ok(LaunchedTask {
                    task_arn: task.task_arn.clone(),
                    task: Some(task),
                })
            }
        }
    }

    async fn describe_tasks(&self, task_arns: &[String]) -> Result<Vec<TaskLookup>> {
        Ok(self.table.describe(task_arns))
    }

    async fn find_tasks(
        &self,
        started_by: &str,
        _family: Option<&str>,
    ) -> Result<Vec<TaskDescription>> {
        Ok(self.table.started_by(started_by))
    }

    async fn list_running(&self, prefix: &str) -> Result<Vec<RunningTask>> {
        Ok(self.table.running_with_prefix(prefix))
    }

    async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<()> {
        if self.table.mark_stopping(task_arn, reason) {
            // The container gets SIGTERM and exits 143 a moment later.
            let table = self.table.clone();
            let arn = task_arn.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                table
                    .stopped(&arn, Some(143), "UserInitiated", "stopped", true)
                    .await;
            });
        }
        Ok(())
    }
}

/// [`LogSource`](stevedore_domain::ports::LogSource) for local runs: the
/// last lines of the run's log file.
pub struct FileLogSource {
    pub dir: PathBuf,
}

#[async_trait]
impl stevedore_domain::ports::LogSource for FileLogSource {
    async fn tail(
        &self,
        run: &stevedore_domain::run::RunRecord,
        lines: usize,
    ) -> Result<stevedore_domain::ports::LogTail> {
        let path = self.dir.join(format!("{}.log", run.run_id));
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(_) => return Ok(Default::default()),
        };
        let all: Vec<&str> = text.lines().collect();
        Ok(stevedore_domain::ports::LogTail {
            lines: all[all.len().saturating_sub(lines)..]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            stream: None,
        })
    }
}
