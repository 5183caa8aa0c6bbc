//! The real `statemachines/run-job.asl.json` in moto's Step Functions, its
//! `lambda:invoke` calls reaching the real function binaries through
//! `tests/emulators/lambda_host.py`: ECS, SNS, SQS and Step Functions in
//! moto, the table in DynamoDB Local. Used by the second-engine tests and
//! by the CLI's tests of `stevedore start --follow` on a stack.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent};
use serde_json::{json, Value};
use stevedore_domain::ports::RunStore;

use crate::{emulator, run_store, sdk_config, unique, AlertsFixture, EcsFixture, REGION};

const FUNCTIONS: [(&str, &str); 5] = [
    ("launch-run", "LaunchRunFunctionArn"),
    ("watch-task", "WatchTaskFunctionArn"),
    ("task-events", "TaskEventsFunctionArn"),
    ("record-run", "RecordRunFunctionArn"),
    ("notify-failure", "NotifyFailureFunctionArn"),
];

pub struct Stack {
    pub sfn: aws_sdk_sfn::Client,
    pub ecs: EcsFixture,
    pub alerts: AlertsFixture,
    pub runs: stevedore_aws::DynamoDbRunStore,
    pub lambda: String,
    /// Function (`watch-task`) → its name in the Lambda host.
    pub names: BTreeMap<&'static str, String>,
    pub state_machine: String,
    pub http: reqwest::Client,
    /// run-job's `AlertFallbackQueueUrl` (the functions' dead-letter queue).
    pub dead_letters: String,
}

/// Where `cargo test --workspace` put the function binaries (the `lambda`
/// feature's `bootstrap`s, built for this machine).
pub fn binary(function: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(function);
    assert!(
        path.is_file(),
        "{} is missing: the second-engine tests run the function binaries that `cargo test --workspace` builds",
        path.display()
    );
    path
}

/// Makes the moto at `moto` run the definitions of the state machines
/// created after this (a server-wide switch; then it also keeps what
/// StopExecution is given).
pub async fn run_state_machines(moto: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{moto}/moto-api/config"))
        .json(&json!({"stepfunctions": {"execute_state_machine": true}}))
        .send()
        .await
        .expect("moto config");
    assert!(resp.status().is_success());
}

pub async fn stack() -> Option<Stack> {
    stack_alerting_to(None).await
}

/// A stack whose notify-failure publishes to `topic` instead of the
/// fixture's topic (a topic that does not exist: alerts cannot be sent).
pub async fn stack_alerting_to(topic: Option<&str>) -> Option<Stack> {
    // A moto of its own: executing state machines is a server-wide switch.
    let moto = emulator("STEVEDORE_TEST_MOTO_SFN")?;
    let ddb = emulator("STEVEDORE_TEST_DYNAMODB")?;
    let lambda = emulator("STEVEDORE_TEST_LAMBDA")?;
    let http = reqwest::Client::new();
    run_state_machines(&moto).await;
    let ecs = EcsFixture::new(&moto).await;
    let alerts = AlertsFixture::new(&moto).await;
    let runs = run_store(&ddb).await;
    let cluster_arn = format!("arn:aws:ecs:{REGION}:123456789012:cluster/{}", ecs.cluster);
    let mut names = BTreeMap::new();
    let mut subs: BTreeMap<&str, String> = BTreeMap::new();
    for (function, placeholder) in FUNCTIONS {
        let name = unique(function);
        let env = json!({
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": moto,
            "AWS_ENDPOINT_URL_DYNAMODB": ddb,
            "AWS_MAX_ATTEMPTS": "1",
            "RUNS_TABLE": runs.table(),
            "CLUSTER": ecs.cluster,
            "SUBNETS": ecs.subnet,
            "SECURITY_GROUPS": ecs.security_group,
            "ALERTS_TOPIC_ARN": topic.unwrap_or(&alerts.topic_arn),
            "CHECK_INTERVAL_SECONDS": "60",
            "RUST_LOG": "warn",
        });
        let resp = http
            .post(format!("{lambda}/host/functions/{name}"))
            // As deployed, the functions run-job calls time out after 60-90 s.
            .json(&json!({"command": [binary(function)], "env": env, "timeoutSeconds": 90}))
            .send()
            .await
            .expect("register function");
        assert!(resp.status().is_success(), "register {function}");
        subs.insert(
            placeholder,
            format!("arn:aws:lambda:{REGION}:123456789012:function:{name}"),
        );
        names.insert(function, name);
    }
    subs.insert("ClusterArn", cluster_arn);
    let dead_letters = alerts
        .sqs
        .create_queue()
        .queue_name(unique("dead-letters"))
        .send()
        .await
        .expect("dead-letter queue")
        .queue_url()
        .unwrap_or_default()
        .to_string();
    subs.insert("AlertFallbackQueueUrl", dead_letters.clone());
    let mut definition = stevedore_local::plane::RUN_JOB_ASL.to_string();
    for (k, v) in &subs {
        definition = definition.replace(&format!("${{{k}}}"), v);
    }
    let sfn = aws_sdk_sfn::Client::new(&sdk_config(&moto).await);
    let created = sfn
        .create_state_machine()
        .name(unique("run-job"))
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/stevedore-run-job")
        .send()
        .await
        .expect("create state machine in moto");
    Some(Stack {
        sfn,
        ecs,
        alerts,
        runs,
        lambda,
        names,
        state_machine: created.state_machine_arn().to_string(),
        http,
        dead_letters,
    })
}

impl Stack {
    pub fn spec(&self, extra: Value) -> Value {
        let mut s = json!({
            "job": unique("orders").replace('-', "_"),
            "taskDefinition": self.ecs.family,
            "container": "app",
            "command": ["python", "-m", "orders"],
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            s[k] = v;
        }
        s
    }

    pub async fn start(&self, spec: &Value) -> String {
        self.sfn
            .start_execution()
            .state_machine_arn(&self.state_machine)
            .name(unique("exec"))
            .input(spec.to_string())
            .send()
            .await
            .expect("start execution")
            .execution_arn()
            .to_string()
    }

    /// The next task of `job` that is not in `seen`, once launch-run started it.
    pub async fn next_task(&self, seen: &[String]) -> String {
        for _ in 0..300 {
            let listed = self
                .ecs
                .client
                .list_tasks()
                .cluster(&self.ecs.cluster)
                .send()
                .await
                .expect("list tasks");
            if let Some(arn) = listed.task_arns().iter().find(|a| !seen.contains(a)) {
                return arn.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("launch-run started no task within 30 s");
    }

    /// Stops the task as ECS would report it, and delivers the event to
    /// task-events as the EventBridge rule would: an asynchronous invocation,
    /// which Lambda retries twice after a function error (the template's
    /// `EventInvokeConfig.MaximumRetryAttempts`).
    pub async fn task_stops(&self, task_arn: &str, body: Value) {
        self.ecs.stop_task(task_arn, body).await;
        let event = self.ecs.state_change_event(task_arn).await;
        let mut failures = Vec::new();
        for _ in 0..3 {
            match self.invoke("task-events", &event).await {
                (None, _) => return,
                (Some(error), payload) => failures.push(format!("{error}: {payload}")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("task-events failed three times: {failures:#?}");
    }

    /// Invokes a function through the Lambda host: (function error, payload).
    pub async fn invoke(&self, function: &str, payload: &Value) -> (Option<String>, Value) {
        let resp = self
            .http
            .post(format!(
                "{}/2015-03-31/functions/{}/invocations",
                self.lambda, self.names[function]
            ))
            .json(payload)
            .send()
            .await
            .expect("invoke");
        let error = resp
            .headers()
            .get("X-Amz-Function-Error")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        (error, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn crash_next(&self, function: &str, when: &str) {
        let resp = self
            .http
            .post(format!(
                "{}/host/faults/{}",
                self.lambda, self.names[function]
            ))
            .json(&json!({"crash": when, "times": 1}))
            .send()
            .await
            .expect("fault");
        assert!(resp.status().is_success());
    }

    /// Waits for the execution to end; its status, error and history.
    pub async fn finished(
        &self,
        execution: &str,
    ) -> (ExecutionStatus, Option<String>, Vec<HistoryEvent>) {
        for _ in 0..600 {
            let d = self
                .sfn
                .describe_execution()
                .execution_arn(execution)
                .send()
                .await
                .expect("describe execution");
            if *d.status() != ExecutionStatus::Running {
                let history = self.history(execution).await;
                return (d.status().clone(), d.error().map(str::to_string), history);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("execution {execution} did not end within 60 s");
    }

    /// The execution's history so far.
    pub async fn history(&self, execution: &str) -> Vec<HistoryEvent> {
        self.sfn
            .get_execution_history()
            .execution_arn(execution)
            .max_results(1000)
            .send()
            .await
            .expect("history")
            .events()
            .to_vec()
    }

    pub async fn runs_of(&self, execution: &str) -> Vec<stevedore_domain::run::RunRecord> {
        let mut runs = self
            .runs
            .runs_of_execution(execution)
            .await
            .expect("runs of execution");
        runs.sort_by_key(|r| r.attempt);
        runs
    }
}
