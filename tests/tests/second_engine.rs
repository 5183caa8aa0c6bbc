//! The real `statemachines/run-job.asl.json` in a second engine we did not
//! write: moto's Step Functions (a port of LocalStack's interpreter), with
//! its `lambda:invoke` calls reaching the real function binaries through
//! `tests/emulators/lambda_host.py` (the Lambda Invoke and Runtime APIs),
//! ECS, SNS, SQS and Step Functions in moto and the table in DynamoDB Local.
//!
//! EventBridge does not fire in moto, so each test delivers the "ECS Task
//! State Change" event to `task-events` itself, as the rule would.

use std::time::Duration;

use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent};
use serde_json::{json, Value};
use stevedore_domain::RunStatus;
use stevedore_integration_tests::moto_sfn::{stack, stack_alerting_to};

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
    // its process dies: Lambda reports the invocation failed, naming the
    // crash `Runtime.ExitError` (the payload's errorType), which run-job's
    // "Wait for task" must retry.
    s.crash_next("watch-task", "after").await;
    let execution = s.start(&s.spec(json!({}))).await;
    let task = s.next_task(&[]).await;
    // Let the retried watch-task run before the job ends.
    for _ in 0..300 {
        let history = s.history(&execution).await;
        let retried_watch_waits = history
            .iter()
            .any(|e| e.r#type() == &aws_sdk_sfn::types::HistoryEventType::TaskSubmitted)
            && failed_tasks(&history)
                .iter()
                .any(|e| e == "Runtime.ExitError");
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
        ["Runtime.ExitError"],
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
    assert_eq!(bodies[0]["record"]["job"], spec["job"]);
    assert_eq!(bodies[0]["record"]["error"], "ExitedNonZero");
    // Not the job spec (its environment and command): the history keeps it.
    assert!(
        bodies[0].get("state").is_none() && !bodies[0].to_string().contains("\"spec\""),
        "{:#}",
        bodies[0]
    );
}
