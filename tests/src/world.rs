//! The handlers wired to in-memory ports on a manual clock: a control plane
//! in a test, without emulators, driven one handler call at a time.

use std::sync::Arc;

use serde_json::{json, Value};
use stevedore_domain::cost::PriceTable;
use stevedore_domain::memory::{
    FakeTaskRunner, ManualClock, MemoryExecutions, MemoryRunStore, RecordingNotifier,
    RecordingTaskTokens,
};
use stevedore_domain::ports::{LogSource, NoLogs};
use stevedore_domain::task::{ContainerState, TaskDescription};
use stevedore_domain::Error;
use time::macros::datetime;

pub struct MemoryWorld {
    pub tasks: Arc<FakeTaskRunner>,
    pub store: Arc<MemoryRunStore>,
    pub tokens: Arc<RecordingTaskTokens>,
    pub clock: Arc<ManualClock>,
    pub notifier: Arc<RecordingNotifier>,
    pub logs: Arc<dyn LogSource>,
    /// Every execution runs until a test ends it here.
    pub executions: Arc<MemoryExecutions>,
}

impl Default for MemoryWorld {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryWorld {
    pub fn new() -> MemoryWorld {
        MemoryWorld {
            tasks: Arc::new(FakeTaskRunner::default()),
            store: Arc::new(MemoryRunStore::new()),
            tokens: Arc::new(RecordingTaskTokens::default()),
            clock: Arc::new(ManualClock::new(datetime!(2026-11-24 06:00:00 UTC))),
            notifier: Arc::new(RecordingNotifier::default()),
            logs: Arc::new(NoLogs),
            executions: Arc::new(MemoryExecutions::default()),
        }
    }
    pub fn launch_deps(&self) -> launch_run::Deps {
        launch_run::Deps {
            tasks: self.tasks.clone(),
            runs: self.store.clone(),
            clock: self.clock.clone(),
            config: launch_run::Config::default(),
        }
    }
    pub fn watch_deps(&self) -> watch_task::Deps {
        watch_task::Deps {
            tasks: self.tasks.clone(),
            runs: self.store.clone(),
            tokens: self.tokens.clone(),
            clock: self.clock.clone(),
            config: watch_task::Config::default(),
        }
    }
    pub fn record_deps(&self) -> record_run::Deps {
        record_run::Deps {
            runs: self.store.clone(),
            tasks: self.tasks.clone(),
            clock: self.clock.clone(),
            prices: PriceTable::builtin(),
            region: "us-east-1".into(),
        }
    }
    pub fn notify_deps(&self) -> notify_failure::Deps {
        notify_failure::Deps {
            runs: self.store.clone(),
            notifier: self.notifier.clone(),
            logs: self.logs.clone(),
        }
    }
    pub fn sweep_deps(&self, stack: Option<&str>) -> sweep_tasks::Deps {
        sweep_tasks::Deps {
            tasks: self.tasks.clone(),
            runs: self.store.clone(),
            executions: self.executions.clone(),
            clock: self.clock.clone(),
            config: sweep_tasks::Config {
                stack: stack.map(str::to_string),
                ..sweep_tasks::Config::default()
            },
        }
    }
    pub fn reap_deps(&self) -> reap_execution::Deps {
        reap_execution::Deps {
            tasks: self.tasks.clone(),
            runs: self.store.clone(),
            clock: self.clock.clone(),
            prices: PriceTable::builtin(),
            region: "us-east-1".into(),
        }
    }
    /// The reaper, given EventBridge's event for the execution named
    /// `execution` ending with `status`.
    pub async fn reap(
        &self,
        execution: &str,
        status: &str,
    ) -> Result<reap_execution::ReapOutput, Error> {
        let arn = Self::execution(execution)["id"].clone();
        reap_execution::function_handler(
            &self.reap_deps(),
            json!({"detail-type": "Step Functions Execution Status Change", "detail": {"executionArn": arn, "status": status}}),
        )
        .await
    }
    /// The execution (by name) a state machine input carries.
    pub fn execution(name: &str) -> Value {
        json!({"id": format!("arn:aws:states:us-east-1:123456789012:execution:stevedore-run-job:{name}"), "name": name, "startTime": "2026-11-24T06:00:00Z"})
    }
    pub async fn launch(
        &self,
        spec: Value,
        attempt: u32,
        capacity: Option<&str>,
    ) -> Result<launch_run::LaunchOutput, Error> {
        self.launch_in("e1", spec, attempt, capacity).await
    }
    /// Launches attempt `attempt` of the execution named `execution`.
    pub async fn launch_in(
        &self,
        execution: &str,
        spec: Value,
        attempt: u32,
        capacity: Option<&str>,
    ) -> Result<launch_run::LaunchOutput, Error> {
        let mut input = json!({
            "spec": spec,
            "execution": Self::execution(execution),
            "attempt": attempt
        });
        if let Some(c) = capacity {
            input["capacity"] = json!(c);
        }
        launch_run::function_handler(&self.launch_deps(), input).await
    }
    pub fn stop(&self, task_arn: &str, stop_code: &str, exit: Option<i32>) {
        self.tasks.set_task(TaskDescription {
            task_arn: task_arn.into(),
            last_status: "STOPPED".into(),
            stop_code: Some(stop_code.into()),
            containers: vec![ContainerState {
                name: "app".into(),
                exit_code: exit,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
}
