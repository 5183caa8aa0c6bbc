//! The real `statemachines/run-job.asl.json` in a second engine we did not
//! write: moto's Step Functions (a port of LocalStack's interpreter), with
//! its `lambda:invoke` calls reaching the real function binaries through
//! `tests/emulators/lambda_host.py` (the Lambda Invoke and Runtime APIs),
//! ECS, SNS, SQS and Step Functions in moto and the table in DynamoDB Local.
//!
//! EventBridge does not fire in moto, so each test delivers the "ECS Task
//! State Change" event to `task-events` itself, as the rule would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent};
use serde_json::{json, Value};
use stevedore_domain::ports::RunStore;
use stevedore_domain::RunStatus;
use stevedore_integration_tests::{
    emulator, run_store, sdk_config, unique, AlertsFixture, EcsFixture, REGION,
};

const FUNCTIONS: [(&str, &str); 5] = [
    ("launch-run", "LaunchRunFunctionArn"),
    ("watch-task", "WatchTaskFunctionArn"),
    ("task-events", "TaskEventsFunctionArn"),
    ("record-run", "RecordRunFunctionArn"),
    ("notify-failure", "NotifyFailureFunctionArn"),
];

struct Stack {
    sfn: aws_sdk_sfn::Client,
    ecs: EcsFixture,
    alerts: AlertsFixture,
    runs: stevedore_aws::DynamoDbRunStore,
    lambda: String,
    /// Function (`watch-task`) → its name in the Lambda host.
    names: BTreeMap<&'static str, String>,
    state_machine: String,
    http: reqwest::Client,
    /// run-job's `AlertFallbackQueueUrl` (the functions' dead-letter queue).
    dead_letters: String,
}

/// Where `cargo test --workspace` put the function binaries (the `lambda`
/// feature's `bootstrap`s, built for this machine).
fn binary(function: &str) -> PathBuf {
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

async fn stack() -> Option<Stack> {
    stack_alerting_to(None).await
}

/// A stack whose notify-failure publishes to `topic` instead of the
/// fixture's topic (a topic that does not exist: alerts cannot be sent).
async fn stack_alerting_to(topic: Option<&str>) -> Option<Stack> {
    // A moto of its own: executing state machines is a server-wide switch.
    let moto = emulator("STEVEDORE_TEST_MOTO_SFN")?;
    let ddb = emulator("STEVEDORE_TEST_DYNAMODB")?;
    let lambda = emulator("STEVEDORE_TEST_LAMBDA")?;
    let http = reqwest::Client::new();
    // moto runs definitions only when asked to, before they are created.
    let resp = http
        .post(format!("{moto}/moto-api/config"))
        .json(&json!({"stepfunctions": {"execute_state_machine": true}}))
        .send()
        .await
        .expect("moto config");
    assert!(resp.status().is_success());
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
    fn spec(&self, extra: Value) -> Value {
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

    async fn start(&self, spec: &Value) -> String {
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
    async fn next_task(&self, seen: &[String]) -> String {
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
    /// task-events as the EventBridge rule would.
    async fn task_stops(&self, task_arn: &str, body: Value) {
        self.ecs.stop_task(task_arn, body).await;
        let event = self.ecs.state_change_event(task_arn).await;
        let (status, payload) = self.invoke("task-events", &event).await;
        assert_eq!(status, None, "task-events failed: {payload}");
    }

    /// Invokes a function through the Lambda host: (function error, payload).
    async fn invoke(&self, function: &str, payload: &Value) -> (Option<String>, Value) {
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

    async fn crash_next(&self, function: &str, when: &str) {
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
    async fn finished(
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
    async fn history(&self, execution: &str) -> Vec<HistoryEvent> {
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

    async fn runs_of(&self, execution: &str) -> Vec<stevedore_domain::run::RunRecord> {
        let mut runs = self
            .runs
            .runs_of_execution(execution)
            .await
            .expect("runs of execution");
        runs.sort_by_key(|r| r.attempt);
        runs
    }
}

fn entered(history: &[HistoryEvent]) -> Vec<String> {
    history
        .iter()
        .filter_map(|e| e.state_entered_event_details())
        .map(|d| d.name().to_string())
        .collect()
}

fn failed_tasks(history: &[HistoryEvent]) -> Vec<String> {
    history
        .iter()
        .filter_map(|e| e.task_failed_event_details())
        .filter_map(|d| d.error().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_exits_0_succeeds_in_moto_step_functions() {
    let Some(s) = stack().await else { return };
    let execution = s.start(&s.spec(json!({}))).await;
    let task = s.next_task(&[]).await;
    s.task_stops(&task, json!({"exitCode": 0, "runSeconds": 30}))
        .await;
    let (status, error, history) = s.finished(&execution).await;
    assert_eq!(
        status,
        ExecutionStatus::Succeeded,
        "{error:?}: {history:#?}"
    );
    assert_eq!(
        entered(&history),
        [
            "Launch task",
            "Wait for task",
            "Record run",
            "Retry or finish?",
            "Job succeeded"
        ]
    );
    let runs = s.runs_of(&execution).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].task_arn.as_deref(), Some(task.as_str()));
    assert!(
        s.alerts.received().await.is_empty(),
        "no alert for a success"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_3_fails_the_execution_and_the_alert_reaches_the_queue() {
    let Some(s) = stack().await else { return };
    let spec = s.spec(json!({}));
    let execution = s.start(&spec).await;
    let task = s.next_task(&[]).await;
    s.task_stops(&task, json!({"exitCode": 3, "runSeconds": 12}))
        .await;
    let (status, error, history) = s.finished(&execution).await;
    assert_eq!(status, ExecutionStatus::Failed, "{history:#?}");
    assert_eq!(error.as_deref(), Some("ExitedNonZero"));
    assert!(entered(&history).contains(&"Notify failure".to_string()));
    let runs = s.runs_of(&execution).await;
    assert_eq!(
        (
            runs.len(),
            runs[0].status,
            runs[0].outcome.as_ref().and_then(|o| o.exit_code)
        ),
        (1, RunStatus::Failed, Some(3))
    );
    let received = s.alerts.received().await;
    assert_eq!(received.len(), 1, "{received:#?}");
    let attrs = &received[0]["MessageAttributes"];
    assert_eq!(attrs["job"]["Value"], spec["job"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_is_stopped_and_the_execution_fails_timed_out() {
    let Some(s) = stack().await else { return };
    let execution = s.start(&s.spec(json!({"timeout": "10s"}))).await;
    let task = s.next_task(&[]).await;
    // watch-task wakes up on the deadline and asks ECS to stop the task.
    let mut reason = String::new();
    for _ in 0..300 {
        reason = s
            .ecs
            .describe(&task)
            .await
            .stopped_reason()
            .unwrap_or_default()
            .to_string();
        if !reason.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reason.starts_with("Stevedore: job timeout"),
        "stopped reason: {reason:?}"
    );
    s.task_stops(
        &task,
        json!({"exitCode": 143, "stopCode": "UserInitiated", "stoppedReason": reason, "runSeconds": 10}),
    )
    .await;
    let (status, error, history) = s.finished(&execution).await;
    assert_eq!(status, ExecutionStatus::Failed, "{history:#?}");
    assert_eq!(error.as_deref(), Some("TimedOut"));
    let runs = s.runs_of(&execution).await;
    assert_eq!(
        runs[0].outcome.as_ref().and_then(|o| o.class),
        Some(stevedore_domain::FailureClass::TimedOut)
    );
    assert_eq!(s.alerts.received().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_attempt_runs_a_second_task_and_succeeds() {
    let Some(s) = stack().await else { return };
    let spec = s.spec(json!({"retry": {"maxAttempts": 2, "on": ["ExitedNonZero"], "delay": "1s"}}));
    let execution = s.start(&spec).await;
    let first = s.next_task(&[]).await;
    s.task_stops(&first, json!({"exitCode": 3, "runSeconds": 5}))
        .await;
    let second = s.next_task(std::slice::from_ref(&first)).await;
    s.task_stops(&second, json!({"exitCode": 0, "runSeconds": 5}))
        .await;
    let (status, error, history) = s.finished(&execution).await;
    assert_eq!(
        status,
        ExecutionStatus::Succeeded,
        "{error:?}: {history:#?}"
    );
    let runs = s.runs_of(&execution).await;
    assert_eq!(
        runs.iter()
            .map(|r| (r.attempt, r.status))
            .collect::<Vec<_>>(),
        [(1, RunStatus::Failed), (2, RunStatus::Succeeded)]
    );
    assert!(entered(&history).contains(&"Wait before next attempt".to_string()));
    assert!(
        s.alerts.received().await.is_empty(),
        "the job recovered: no alert"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_of_watch_task_is_retried_and_does_not_stop_the_job() {
    let Some(s) = stack().await else { return };
    // The first watch-task invocation stores the token, answers, and then
    // its process dies: Lambda reports the invocation failed.
    s.crash_next("watch-task", "after").await;
    let execution = s.start(&s.spec(json!({}))).await;
    let task = s.next_task(&[]).await;
    // Let the retried watch-task run before the job ends.
    for _ in 0..300 {
        let history = s.history(&execution).await;
        let retried_watch_waits = history
            .iter()
            .any(|e| e.r#type() == &aws_sdk_sfn::types::HistoryEventType::TaskSubmitted)
            && failed_tasks(&history).iter().any(|e| e == "Lambda.Unknown");
        if retried_watch_waits {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.task_stops(&task, json!({"exitCode": 0, "runSeconds": 20}))
        .await;
    let (status, error, history) = s.finished(&execution).await;
    assert_eq!(
        status,
        ExecutionStatus::Succeeded,
        "{error:?}: {history:#?}"
    );
    assert_eq!(
        failed_tasks(&history),
        ["Lambda.Unknown"],
        "one crash, retried: {history:#?}"
    );
    assert!(!entered(&history).contains(&"Stop task".to_string()));
    let described = s.ecs.describe(&task).await;
    assert_eq!(
        described.stopped_reason(),
        Some("Essential container in task exited"),
        "the task ran to its end: nobody stopped it"
    );
    let runs = s.runs_of(&execution).await;
    assert_eq!(runs[0].status, RunStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_cannot_be_published_is_kept_in_the_dead_letter_queue() {
    let Some(s) = stack_alerting_to(Some("arn:aws:sns:us-east-1:123456789012:no-such-topic")).await
    else {
        return;
    };
    let spec = s.spec(json!({}));
    let execution = s.start(&spec).await;
    let task = s.next_task(&[]).await;
    s.task_stops(&task, json!({"exitCode": 3, "runSeconds": 12}))
        .await;
    let (status, error, history) = s.finished(&execution).await;
    assert_eq!(status, ExecutionStatus::Failed, "{history:#?}");
    assert_eq!(
        error.as_deref(),
        Some("ExitedNonZero"),
        "the job's error, still"
    );
    assert!(entered(&history).contains(&"Keep the alert".to_string()));
    let kept = s
        .alerts
        .sqs
        .receive_message()
        .queue_url(&s.dead_letters)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    let bodies: Vec<Value> = kept
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap_or("{}")).expect("JSON body"))
        .collect();
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    assert_eq!(bodies[0]["kind"], "stevedore-alert-not-sent");
    assert_eq!(bodies[0]["state"]["spec"]["job"], spec["job"]);
    assert_eq!(bodies[0]["state"]["record"]["error"], "ExitedNonZero");
}
