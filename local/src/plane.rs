//! The control plane on one machine: the real `run-job` state machine run by
//! the embedded engine, calling the real handlers in-process with local
//! adapters. Task stops reach `task-events` as the same "ECS Task State
//! Change" event AWS sends; an execution that fails or times out is reaped
//! as EventBridge would have it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use stevedore_domain::cost::PriceTable;
use stevedore_domain::ports::{Clock, Notifier, RunStore, TaskRunner, TaskTokens, TokenDelivery};
use stevedore_domain::{Error, Result};
use stevedore_engine::exec::Observer;
use stevedore_engine::{
    Definition, Delivery, Engine, ExecutionOutcome, Failure, Resources, Status, TaskCall, Tokens,
};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::tasks::LocalRunner;

/// The run-job state machine, as deployed.
pub const RUN_JOB_ASL: &str = include_str!("../../statemachines/run-job.asl.json");
/// Stevedore's functions, by the names local mode calls them.
pub const FUNCTIONS: [&str; 6] = [
    "launch-run",
    "watch-task",
    "task-events",
    "record-run",
    "notify-failure",
    "reap-execution",
];
pub const LOCAL_CLUSTER: &str = "arn:aws:ecs:local:000000000000:cluster/local";
pub const LOCAL_REGION: &str = "local";
/// What local mode tags its tasks with as their stack.
pub const LOCAL_STACK: &str = "local";
/// Where run-job keeps an alert notify-failure could not send (in AWS, the
/// functions' dead-letter queue); locally, [`Handlers::dead_letters`].
pub const LOCAL_DEAD_LETTERS: &str = "local://dead-letters";

/// What `DefinitionSubstitutions` becomes locally: function names.
pub fn local_substitutions() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("LaunchRunFunctionArn", "launch-run"),
        ("WatchTaskFunctionArn", "watch-task"),
        ("RecordRunFunctionArn", "record-run"),
        ("NotifyFailureFunctionArn", "notify-failure"),
        ("ClusterArn", LOCAL_CLUSTER),
        ("AlertFallbackQueueUrl", LOCAL_DEAD_LETTERS),
    ])
}

/// Replaces `${Name}` placeholders.
pub fn substitute(text: &str, subs: &BTreeMap<&str, &str>) -> String {
    let mut out = text.to_string();
    for (k, v) in subs {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// The run-job definition with local function names.
pub fn run_job_definition() -> std::result::Result<Definition, stevedore_engine::DefinitionError> {
    Definition::parse(&substitute(RUN_JOB_ASL, &local_substitutions()))
}

/// Wall time on tokio's clock: real normally, virtual in a paused runtime.
pub struct LocalClock {
    epoch: (OffsetDateTime, Instant),
}

impl LocalClock {
    pub fn new(start: OffsetDateTime) -> LocalClock {
        LocalClock {
            epoch: (start, Instant::now()),
        }
    }
    pub fn start(&self) -> OffsetDateTime {
        self.epoch.0
    }
    /// The wall time and the instant it was read at.
    pub fn epoch(&self) -> (OffsetDateTime, Instant) {
        self.epoch
    }
}

impl Clock for LocalClock {
    fn now(&self) -> OffsetDateTime {
        self.epoch.0 + Instant::now().saturating_duration_since(self.epoch.1)
    }
}

/// [`TaskTokens`] on the engine's token table.
pub struct EngineTokens(pub Arc<Tokens>);

#[async_trait]
impl TaskTokens for EngineTokens {
    async fn send_success(&self, token: &str, output: &Value) -> Result<TokenDelivery> {
        Ok(delivery(self.0.succeed(token, output.clone())))
    }
    async fn send_failure(&self, token: &str, error: &str, cause: &str) -> Result<TokenDelivery> {
        Ok(delivery(self.0.fail(token, error, cause)))
    }
}

fn delivery(d: Delivery) -> TokenDelivery {
    match d {
        Delivery::Delivered => TokenDelivery::Delivered,
        Delivery::Closed => TokenDelivery::AlreadyClosed,
    }
}

/// The six handlers with their local dependencies.
pub struct Handlers {
    pub launch: launch_run::Deps,
    pub watch: watch_task::Deps,
    pub events: Arc<task_events::Deps>,
    pub record: record_run::Deps,
    pub notify: notify_failure::Deps,
    pub reap: reap_execution::Deps,
    pub tasks: Arc<dyn TaskRunner>,
    /// Messages run-job sent to its dead-letter queue (alerts it could not send).
    pub dead_letters: std::sync::Mutex<Vec<Value>>,
}

impl Handlers {
    /// What run-job kept in its dead-letter queue so far.
    pub fn dead_letters(&self) -> Vec<Value> {
        self.dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The Lambda integration: `FunctionName` picks the handler; the result has
/// Lambda's shape (`Payload`, `StatusCode`), and a handler error comes back
/// with its failure class as the error name and Lambda's JSON cause.
#[async_trait]
impl Resources for Handlers {
    async fn call(&self, call: TaskCall) -> std::result::Result<Value, Failure> {
        let resource = call.resource.as_str();
        if resource == "arn:aws:states:::aws-sdk:ecs:stopTask" {
            let task = call.parameters["Task"].as_str().unwrap_or_default();
            let reason = call.parameters["Reason"]
                .as_str()
                .unwrap_or("stopped by the state machine");
            return match self.tasks.stop_task(task, reason).await {
                Ok(()) => Ok(json!({})),
                Err(e) => Err(Failure::new(format!("Ecs.{}", e.class), e.message)),
            };
        }
        if resource == "arn:aws:states:::sqs:sendMessage"
            && call.parameters["QueueUrl"] == LOCAL_DEAD_LETTERS
        {
            let body = call
                .parameters
                .get("MessageBody")
                .cloned()
                .unwrap_or(Value::Null);
            eprintln!("dead letter (an alert that could not be sent): {body}");
            self.dead_letters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(body);
            return Ok(json!({"MessageId": uuid::Uuid::new_v4().to_string()}));
        }
        if !resource.starts_with("arn:aws:states:::lambda:invoke") {
            return Err(Failure::new(
                "States.Runtime",
                format!("Task state `{}`: local mode has no implementation of `{resource}` (give its responses in a mock file)", call.state),
            ));
        }
        let name = function_name(&call.parameters).ok_or_else(|| {
            Failure::new(
                "States.Runtime",
                format!(
                    "Task state `{}`: `Parameters.FunctionName` is missing",
                    call.state
                ),
            )
        })?;
        let payload = call.parameters.get("Payload").cloned().unwrap_or(json!({}));
        let out = match name.as_str() {
            "launch-run" => to_value(launch_run::function_handler(&self.launch, payload).await),
            "watch-task" => to_value(watch_task::function_handler(&self.watch, payload).await),
            "task-events" => to_value(task_events::function_handler(&self.events, payload).await),
            "record-run" => to_value(record_run::function_handler(&self.record, payload).await),
            "notify-failure" => {
                to_value(notify_failure::function_handler(&self.notify, payload).await)
            }
            "reap-execution" => {
                to_value(reap_execution::function_handler(&self.reap, payload).await)
            }
            other => {
                return Err(Failure::new(
                    "Lambda.ResourceNotFoundException",
                    format!(
                        "Task state `{}`: no local function `{other}` (Stevedore's are {})",
                        call.state,
                        FUNCTIONS.join(", ")
                    ),
                ))
            }
        };
        match out {
            Ok(payload) => Ok(json!({"ExecutedVersion": "$LATEST", "Payload": payload, "StatusCode": 200})),
            Err(e) => Err(Failure::new(
                e.class.as_str(),
                json!({"errorMessage": e.message, "errorType": e.class.as_str(), "requestId": uuid::Uuid::new_v4().to_string(), "stackTrace": []}).to_string(),
            )),
        }
    }
}

/// A Stevedore function name from `FunctionName` (a name, or an ARN ending in it).
pub fn function_name(params: &Value) -> Option<String> {
    let raw = params.get("FunctionName")?.as_str()?;
    let name = raw
        .rsplit(':')
        .find(|p| !p.is_empty() && *p != "$LATEST")
        .unwrap_or(raw);
    Some(name.to_string())
}

/// Whether a Task call goes to one of Stevedore's functions.
pub fn is_stevedore_call(call: &TaskCall) -> bool {
    call.resource == "arn:aws:states:::aws-sdk:ecs:stopTask"
        || (call.resource == "arn:aws:states:::sqs:sendMessage"
            && call.parameters["QueueUrl"] == LOCAL_DEAD_LETTERS)
        || (call.resource.starts_with("arn:aws:states:::lambda:invoke")
            && function_name(&call.parameters).is_some_and(|n| FUNCTIONS.contains(&n.as_str())))
}

fn to_value<T: serde::Serialize>(r: Result<T>) -> Result<Value> {
    r.and_then(|v| serde_json::to_value(v).map_err(|e| Error::invalid_input(e.to_string())))
}

/// Everything a local run needs.
pub struct LocalPlane {
    pub store: Arc<dyn RunStore>,
    pub handlers: Arc<Handlers>,
    pub tokens: Arc<Tokens>,
    pub clock: Arc<LocalClock>,
    pub engine: Engine,
    definition: Definition,
}

/// Puts something between the engine and the handlers: what the state
/// machine's Task states call (fault injection in tests and the simulator).
pub type ResourcesWrapper = Box<dyn FnOnce(Arc<Handlers>) -> Arc<dyn Resources> + Send + Sync>;
/// Puts something between the handlers and the engine's task tokens.
pub type TokensWrapper = Box<dyn FnOnce(Arc<dyn TaskTokens>) -> Arc<dyn TaskTokens> + Send + Sync>;

pub struct PlaneConfig {
    pub check_interval_seconds: u64,
    pub retention_days: u32,
    pub observer: Option<Observer>,
    /// Where task logs are, for the log tail in alerts.
    pub log_dir: Option<std::path::PathBuf>,
    /// Wraps the handlers the engine invokes; `None` calls them directly.
    pub wrap_resources: Option<ResourcesWrapper>,
    /// Wraps the task-token port the handlers use (fault injection).
    pub wrap_tokens: Option<TokensWrapper>,
    /// Tagged on tasks as `stevedore:stack` (the sweep's own tasks).
    pub stack: Option<String>,
    /// The engine draws jitter and task tokens from this seed (replayable runs).
    pub seed: Option<u64>,
}

impl Default for PlaneConfig {
    fn default() -> Self {
        PlaneConfig {
            check_interval_seconds: 900,
            retention_days: 400,
            observer: None,
            log_dir: None,
            wrap_resources: None,
            wrap_tokens: None,
            stack: Some(LOCAL_STACK.into()),
            seed: None,
        }
    }
}

impl LocalPlane {
    pub fn new<R: LocalRunner + 'static>(
        store: Arc<dyn RunStore>,
        runner: Arc<R>,
        notifier: Arc<dyn Notifier>,
        clock: Arc<LocalClock>,
        config: PlaneConfig,
    ) -> Result<LocalPlane> {
        let definition = run_job_definition()
            .map_err(|e| Error::invalid_input(format!("statemachines/run-job.asl.json: {e}")))?;
        let tokens = Arc::new(Tokens::default());
        let mut task_tokens: Arc<dyn TaskTokens> = Arc::new(EngineTokens(tokens.clone()));
        if let Some(wrap) = config.wrap_tokens {
            task_tokens = wrap(task_tokens);
        }
        let tasks: Arc<dyn TaskRunner> = runner.clone();
        let prices = PriceTable::builtin();
        let events = Arc::new(task_events::Deps {
            runs: store.clone(),
            tokens: task_tokens.clone(),
        });
        let sink_events = events.clone();
        runner.set_event_sink(Arc::new(move |event: Value| {
            let deps = sink_events.clone();
            Box::pin(async move {
                if let Err(e) = task_events::function_handler(&deps, event).await {
                    eprintln!("task-events: {e}");
                }
            })
        }));
        let handlers = Arc::new(Handlers {
            launch: launch_run::Deps {
                tasks: tasks.clone(),
                runs: store.clone(),
                clock: clock.clone(),
                config: launch_run::Config {
                    check_interval_seconds: config.check_interval_seconds,
                    retention_days: config.retention_days,
                    stack: config.stack.clone(),
                    // Local mode runs processes, not task definitions.
                    task_definitions: None,
                },
            },
            watch: watch_task::Deps {
                tasks: tasks.clone(),
                runs: store.clone(),
                tokens: task_tokens.clone(),
                clock: clock.clone(),
                config: watch_task::Config::default(),
            },
            events,
            record: record_run::Deps {
                runs: store.clone(),
                tasks: tasks.clone(),
                clock: clock.clone(),
                prices: prices.clone(),
                region: LOCAL_REGION.into(),
            },
            notify: notify_failure::Deps {
                runs: store.clone(),
                notifier,
                logs: match &config.log_dir {
                    Some(dir) => Arc::new(crate::tasks::FileLogSource { dir: dir.clone() }),
                    None => Arc::new(stevedore_domain::ports::NoLogs),
                },
            },
            reap: reap_execution::Deps {
                tasks: tasks.clone(),
                runs: store.clone(),
                clock: clock.clone(),
                prices,
                region: LOCAL_REGION.into(),
            },
            tasks,
            dead_letters: std::sync::Mutex::new(Vec::new()),
        });
        let resources: Arc<dyn Resources> = match config.wrap_resources {
            Some(wrap) => wrap(handlers.clone()),
            None => handlers.clone(),
        };
        let mut engine = Engine::new(resources)
            .with_epoch(clock.epoch().0, clock.epoch().1)
            .with_tokens(tokens.clone());
        if let Some(o) = config.observer {
            engine = engine.with_observer(o);
        }
        if let Some(seed) = config.seed {
            engine = engine.with_seed(seed);
        }
        Ok(LocalPlane {
            store,
            handlers,
            tokens,
            clock,
            engine,
            definition,
        })
    }

    /// The run-job definition this plane runs.
    pub fn definition(&self) -> &Definition {
        &self.definition
    }

    /// Runs one job spec through run-job, as an execution named `name`. An
    /// execution that does not succeed is reaped, as in AWS.
    pub async fn run_job(&self, spec: Value, name: &str) -> ExecutionOutcome {
        let outcome = self
            .engine
            .execute(&self.definition, "run-job", name, spec.clone())
            .await;
        let status = match outcome.status {
            Status::Succeeded => None,
            Status::Failed => Some("FAILED"),
            Status::TimedOut => Some("TIMED_OUT"),
        };
        if let Some(status) = status {
            self.reap(&outcome.execution_arn, status, &spec, None).await;
        }
        outcome
    }

    /// The ARN `run_job` gives an execution of this name.
    pub fn execution_arn(&self, name: &str) -> String {
        self.engine.execution_arn("run-job", name)
    }

    /// What Step Functions does after StopExecution: the execution (whose
    /// future the caller has dropped) is ABORTED, and the reaper stops its
    /// task and marks its run CANCELLED.
    pub async fn abort(&self, execution_arn: &str, spec: &Value, cause: &str) {
        self.reap(execution_arn, "ABORTED", spec, Some(cause)).await;
    }

    /// Delivers the "Execution Status Change" event EventBridge would.
    async fn reap(&self, execution_arn: &str, status: &str, spec: &Value, cause: Option<&str>) {
        let event = json!({
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "detail": {
                "executionArn": execution_arn,
                "status": status,
                "input": spec.to_string(),
                "cause": cause,
            },
        });
        if let Err(e) = reap_execution::function_handler(&self.handlers.reap, event).await {
            eprintln!("reap-execution: {e}");
        }
    }
}
