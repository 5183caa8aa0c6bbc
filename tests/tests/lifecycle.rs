//! A run end to end — launch → watch → task event → record → notify — with
//! the real handlers and the real AWS SDK against moto server (ECS, SNS → SQS,
//! Step Functions) and DynamoDB Local.

use std::sync::Arc;

use serde_json::{json, Value};
use stevedore_aws::dynamodb::slot_holders;
use stevedore_aws::DynamoDbRunStore;
use stevedore_domain::alert::Alert;
use stevedore_domain::cost::PriceTable;
use stevedore_domain::memory::ManualClock;
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::{ExecutionRef, RunRecord};
use stevedore_domain::{Error, FailureClass, RunStatus};
use stevedore_integration_tests::{
    emulator, run_store, unique, AlertsFixture, CapturingTokens, EcsFixture, REGION,
};
use time::{Duration, OffsetDateTime};

struct Plane {
    ecs: EcsFixture,
    store: Arc<DynamoDbRunStore>,
    tokens: Arc<CapturingTokens>,
    alerts: AlertsFixture,
    clock: Arc<ManualClock>,
    launch: launch_run::Deps,
    watch: watch_task::Deps,
    events: task_events::Deps,
    record: record_run::Deps,
    notify: notify_failure::Deps,
    reap: reap_execution::Deps,
}

impl Plane {
    async fn new() -> Option<Plane> {
        let moto = emulator("STEVEDORE_TEST_MOTO")?;
        let ddb = emulator("STEVEDORE_TEST_DYNAMODB")?;
        let ecs = EcsFixture::new(&moto).await;
        let store = Arc::new(run_store(&ddb).await);
        let tokens = CapturingTokens::new(&moto).await;
        let alerts = AlertsFixture::new(&moto).await;
        let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
        let runner = Arc::new(ecs.runner());
        Some(Plane {
            launch: launch_run::Deps {
                tasks: runner.clone(),
                runs: store.clone(),
                clock: clock.clone(),
                config: launch_run::Config::default(),
            },
            watch: watch_task::Deps {
                tasks: runner.clone(),
                runs: store.clone(),
                tokens: tokens.clone(),
                clock: clock.clone(),
                config: watch_task::Config::default(),
            },
            events: task_events::Deps {
                runs: store.clone(),
                tokens: tokens.clone(),
            },
            record: record_run::Deps {
                runs: store.clone(),
                tasks: runner.clone(),
                clock: clock.clone(),
                prices: PriceTable::builtin(),
                region: REGION.into(),
            },
            notify: notify_failure::Deps {
                runs: store.clone(),
                notifier: alerts.notifier.clone(),
                logs: Arc::new(stevedore_aws::CloudWatchLogSource::from_sdk(&ecs.sdk)),
            },
            reap: reap_execution::Deps {
                tasks: runner,
                runs: store.clone(),
                clock: clock.clone(),
                prices: PriceTable::builtin(),
                region: REGION.into(),
            },
            ecs,
            store,
            tokens,
            alerts,
            clock,
        })
    }

    fn execution(&self) -> ExecutionRef {
        let name = unique("exec");
        ExecutionRef {
            id: format!("arn:aws:states:{REGION}:123456789012:execution:run-job:{name}"),
            name,
            start_time: self.clock_now(),
        }
    }

    fn clock_now(&self) -> OffsetDateTime {
        use stevedore_domain::ports::Clock;
        self.clock.now()
    }

    fn spec(&self, job: &str, extra: Value) -> Value {
        let mut spec = json!({
            "job": job,
            "taskDefinition": self.ecs.family,
            "container": "app",
            "command": ["python", "-m", "ingest.orders", "--since", "yesterday"],
            "environment": {"TARGET_SCHEMA": "raw"},
            "timeout": "10m",
            "tags": {"team": "data"}
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        spec
    }

    async fn launch(
        &self,
        spec: &Value,
        execution: &ExecutionRef,
        attempt: u32,
    ) -> Result<launch_run::LaunchOutput, Error> {
        launch_run::function_handler(
            &self.launch,
            json!({"spec": spec, "execution": execution, "attempt": attempt}),
        )
        .await
    }

    async fn watch(&self, run_id: &str, token: &str) -> watch_task::WatchOutput {
        watch_task::function_handler(&self.watch, json!({"runId": run_id, "taskToken": token}))
            .await
            .expect("watch-task")
    }

    async fn event(&self, task_arn: &str) -> task_events::EventOutput {
        let event = self.ecs.state_change_event(task_arn).await;
        task_events::function_handler(&self.events, event)
            .await
            .expect("task-events")
    }

    async fn record(&self, run_id: &str) -> record_run::RecordOutput {
        record_run::function_handler(&self.record, json!({"runId": run_id}))
            .await
            .expect("record-run")
    }

    async fn run(&self, run_id: &str) -> RunRecord {
        self.store
            .get_run(run_id)
            .await
            .expect("get_run")
            .expect("run exists")
    }
}

#[tokio::test]
async fn when_the_container_exits_3_the_run_fails_with_its_exit_code_and_an_alert_reaches_the_queue(
) {
    let Some(p) = Plane::new().await else { return };
    let job = unique("orders-ingest");
    let execution = p.execution();
    let spec = p.spec(&job, json!({}));

    let launched = p.launch(&spec, &execution, 1).await.expect("launch-run");
    assert_eq!(launched.status, launch_run::LaunchStatus::Launched);
    let task_arn = launched.task_arn.clone().expect("task arn");
    let run = p.run(&launched.run_id).await;
    assert_eq!(
        (run.status, run.task_arn.as_deref()),
        (RunStatus::Running, Some(task_arn.as_str()))
    );

    // What ECS received: our startedBy, the overrides and the tags.
    let task = p.ecs.describe(&task_arn).await;
    assert_eq!(
        task.started_by(),
        Some(format!("stevedore/{}", launched.run_id).as_str())
    );
    let overrides = task.overrides().expect("overrides");
    let app = &overrides.container_overrides()[0];
    assert_eq!(app.name(), Some("app"));
    assert_eq!(
        app.command(),
        ["python", "-m", "ingest.orders", "--since", "yesterday"]
    );
    assert_eq!(app.environment()[0].name(), Some("TARGET_SCHEMA"));

    let watching = p.watch(&launched.run_id, "token-1").await;
    assert_eq!(watching.state, watch_task::WatchState::Running);
    assert_eq!(
        p.run(&launched.run_id).await.task_token.as_deref(),
        Some("token-1")
    );
    assert!(
        p.tokens.sent().is_empty(),
        "nothing to report while the task runs"
    );

    p.ecs
        .stop_task(
            &task_arn,
            json!({"exitCode": 3, "cpu": 1024, "memory": 2048, "runSeconds": 125}),
        )
        .await;
    let handled = p.event(&task_arn).await;
    assert_eq!(handled.action, task_events::EventAction::Recorded);

    // The waiting state was completed once, with the result.
    let sent = p.tokens.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "token-1");
    assert_eq!(sent[0].1["result"], "ExitedNonZero");
    assert_eq!(sent[0].1["exitCode"], 3);

    let recorded = p.record(&launched.run_id).await;
    assert_eq!(recorded.status, RunStatus::Failed);
    assert_eq!(recorded.error, Some(FailureClass::ExitedNonZero));
    assert_eq!(recorded.exit_code, Some(3));
    assert!(
        !recorded.retry,
        "ExitedNonZero is not in the default retry.on"
    );
    assert!(recorded.notify);
    assert!(recorded.cost_usd.is_some_and(|c| c > 0.0), "{recorded:?}");

    let stored = p.run(&launched.run_id).await;
    assert_eq!(stored.status, RunStatus::Failed);
    let outcome = stored.outcome.clone().expect("outcome");
    assert_eq!(
        (outcome.class, outcome.exit_code),
        (Some(FailureClass::ExitedNonZero), Some(3))
    );
    let stopped = stored.task.clone().expect("task description stored");
    assert_eq!(stopped.container("app").and_then(|c| c.exit_code), Some(3));
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
    assert!(stopped
        .task_definition_arn
        .as_deref()
        .is_some_and(|a| a.contains(&p.ecs.family)));
    assert_eq!(stored.cost.as_ref().map(|c| c.billed_seconds), Some(125));
    assert!(
        slot_holders(&p.store, &job).await.unwrap().is_empty(),
        "the slot is free after the final attempt"
    );

    // The job's log in CloudWatch Logs (moto), where the task definition's
    // awslogs settings say it is: 30 lines, one with a credential.
    let mut log: Vec<String> = (1..=29).map(|i| format!("processing batch {i}")).collect();
    log.insert(
        25,
        "connecting with password=hunter2 to the warehouse".into(),
    );
    log.push("ValueError: order 7731 has no customer_id".into());
    let stream = p.ecs.write_job_log(&task_arn, &log).await;

    let notified = notify_failure::function_handler(&p.notify, json!({"runId": launched.run_id}))
        .await
        .expect("notify-failure");
    assert_eq!(notified.error, FailureClass::ExitedNonZero);
    let received = p.alerts.received().await;
    assert_eq!(received.len(), 1, "{received:?}");
    let envelope = &received[0];
    let alert: Alert = serde_json::from_str(envelope["Message"].as_str().expect("Message"))
        .expect("the sqs rendering is the structured alert");
    assert_eq!(alert.job, job);
    assert_eq!(alert.class, FailureClass::ExitedNonZero);
    assert_eq!(alert.exit_code, Some(3));
    assert_eq!(alert.run_id.as_deref(), Some(launched.run_id.as_str()));
    assert_eq!(alert.task_arn.as_deref(), Some(task_arn.as_str()));
    // The last 20 lines, newest last, the credential redacted; the stream linked.
    assert_eq!(alert.log_tail.len(), 20, "{:?}", alert.log_tail);
    assert_eq!(
        alert.log_tail[0], "processing batch 12",
        "31 lines written: the first 11 are dropped"
    );
    assert_eq!(
        alert.log_tail.last().unwrap(),
        "ValueError: order 7731 has no customer_id"
    );
    assert!(alert
        .log_tail
        .contains(&"connecting with password=[REDACTED] to the warehouse".to_string()));
    assert!(!envelope.to_string().contains("hunter2"));
    let located = alert.log_stream.clone().expect("log stream located");
    assert_eq!(
        (
            located.group.as_str(),
            located.stream.as_str(),
            located.region.as_str()
        ),
        (
            stevedore_integration_tests::JOB_LOG_GROUP,
            stream.as_str(),
            REGION
        )
    );
    assert!(alert
        .links
        .iter()
        .any(|l| l.label == "Log stream" && l.url.contains("log-events/etl$252Fapp$252F")));
    assert!(envelope["Subject"]
        .as_str()
        .unwrap_or_default()
        .contains("ExitedNonZero"));
    assert_eq!(envelope["MessageAttributes"]["job"]["Value"], json!(job));
    assert_eq!(
        envelope["MessageAttributes"]["severity"]["Value"],
        json!("critical")
    );
}

#[tokio::test]
async fn when_the_container_exits_0_the_run_succeeds_and_frees_its_slot() {
    let Some(p) = Plane::new().await else { return };
    let job = unique("hello");
    let execution = p.execution();
    let launched = p
        .launch(&p.spec(&job, json!({})), &execution, 1)
        .await
        .expect("launch");
    let task_arn = launched.task_arn.clone().unwrap();
    assert_eq!(slot_holders(&p.store, &job).await.unwrap().len(), 1);
    p.watch(&launched.run_id, "t").await;
    p.ecs.stop_task(&task_arn, json!({"exitCode": 0})).await;
    assert_eq!(
        p.event(&task_arn).await.action,
        task_events::EventAction::Recorded
    );
    let recorded = p.record(&launched.run_id).await;
    assert_eq!(
        (recorded.status, recorded.error, recorded.notify),
        (RunStatus::Succeeded, None, false)
    );
    assert_eq!(p.run(&launched.run_id).await.status, RunStatus::Succeeded);
    assert!(slot_holders(&p.store, &job).await.unwrap().is_empty());
    // Recording again is a harmless replay.
    assert_eq!(
        p.record(&launched.run_id).await.status,
        RunStatus::Succeeded
    );
}

#[tokio::test]
async fn a_duplicate_or_late_task_event_changes_nothing() {
    let Some(p) = Plane::new().await else { return };
    let execution = p.execution();
    let launched = p
        .launch(&p.spec(&unique("dup"), json!({})), &execution, 1)
        .await
        .expect("launch");
    let task_arn = launched.task_arn.clone().unwrap();
    p.watch(&launched.run_id, "t").await;
    p.ecs.stop_task(&task_arn, json!({"exitCode": 3})).await;
    assert_eq!(
        p.event(&task_arn).await.action,
        task_events::EventAction::Recorded
    );
    let after_first = p.run(&launched.run_id).await;

    let again = p.event(&task_arn).await;
    assert_eq!(again.action, task_events::EventAction::Duplicate);
    assert_eq!(p.run(&launched.run_id).await, after_first);
    // A duplicate cannot be told from a retry of an invocation that died
    // between its write and SendTaskSuccess: it sends the same token and
    // output again, which Step Functions answers as already closed.
    let sent = p.tokens.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], sent[1], "the same completion, twice");

    // After the run is final, a late event still changes nothing.
    p.record(&launched.run_id).await;
    let final_run = p.run(&launched.run_id).await;
    assert_eq!(
        p.event(&task_arn).await.action,
        task_events::EventAction::Duplicate
    );
    assert_eq!(p.run(&launched.run_id).await, final_run);
}

#[tokio::test]
async fn when_the_deadline_passes_the_task_is_stopped_and_the_run_times_out() {
    let Some(p) = Plane::new().await else { return };
    let execution = p.execution();
    let launched = p
        .launch(
            &p.spec(&unique("slow"), json!({"timeout": "2m"})),
            &execution,
            1,
        )
        .await
        .expect("launch");
    let task_arn = launched.task_arn.clone().unwrap();
    assert_eq!(launched.check_seconds, 120);
    assert_eq!(
        p.watch(&launched.run_id, "t1").await.state,
        watch_task::WatchState::Running
    );

    p.clock.advance(Duration::seconds(121));
    let watched = p.watch(&launched.run_id, "t2").await;
    assert_eq!(watched.state, watch_task::WatchState::Stopping);
    let task = p.ecs.describe(&task_arn).await;
    assert_eq!(
        task.desired_status(),
        Some("STOPPED"),
        "StopTask reached ECS"
    );
    assert!(
        task.stopped_reason()
            .unwrap_or_default()
            .starts_with("Stevedore: job timeout"),
        "{:?}",
        task.stopped_reason()
    );
    assert_eq!(p.run(&launched.run_id).await.status, RunStatus::Stopping);

    // ECS stops it (SIGTERM, then SIGKILL: exit 137) and reports the stop.
    p.ecs.stop_task(&task_arn, json!({"exitCode": 137, "stopCode": "UserInitiated", "stoppedReason": task.stopped_reason().unwrap_or_default()})).await;
    assert_eq!(
        p.event(&task_arn).await.action,
        task_events::EventAction::Recorded
    );
    assert_eq!(
        p.tokens
            .sent()
            .last()
            .map(|(t, v)| (t.clone(), v["result"].clone())),
        Some(("t2".to_string(), json!("TimedOut")))
    );
    let recorded = p.record(&launched.run_id).await;
    assert_eq!(
        (recorded.status, recorded.error),
        (RunStatus::Failed, Some(FailureClass::TimedOut))
    );
}

#[tokio::test]
async fn when_the_task_event_is_lost_the_poll_completes_the_run() {
    let Some(p) = Plane::new().await else { return };
    let execution = p.execution();
    let launched = p
        .launch(&p.spec(&unique("lost"), json!({})), &execution, 1)
        .await
        .expect("launch");
    let task_arn = launched.task_arn.clone().unwrap();
    assert_eq!(
        p.watch(&launched.run_id, "t1").await.state,
        watch_task::WatchState::Running
    );
    p.ecs.stop_task(&task_arn, json!({"exitCode": 0})).await;
    // No event arrives; the next check interval's watch finds the stop.
    let watched = p.watch(&launched.run_id, "t2").await;
    assert_eq!(watched.state, watch_task::WatchState::Stopped);
    assert_eq!(
        p.tokens
            .sent()
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
        vec!["t2"]
    );
    assert_eq!(p.run(&launched.run_id).await.status, RunStatus::Stopped);
    // The event, when it finally comes, is a duplicate.
    assert_eq!(
        p.event(&task_arn).await.action,
        task_events::EventAction::Duplicate
    );
    assert_eq!(
        p.record(&launched.run_id).await.status,
        RunStatus::Succeeded
    );
}

#[tokio::test]
async fn when_the_slot_is_taken_the_next_execution_skips_or_fails_as_the_spec_says() {
    let Some(p) = Plane::new().await else { return };
    let job = unique("nightly");
    let first = p.execution();
    let launched = p
        .launch(&p.spec(&job, json!({})), &first, 1)
        .await
        .expect("first launch");

    let second = p.execution();
    let skipped = p
        .launch(
            &p.spec(&job, json!({"concurrency": {"whenBusy": "skip"}})),
            &second,
            1,
        )
        .await
        .expect("skip is not an error");
    assert_eq!(skipped.status, launch_run::LaunchStatus::Skipped);
    assert!(skipped.message.contains(&first.id), "{}", skipped.message);
    let skipped_run = p.run(&skipped.run_id).await;
    assert_eq!(skipped_run.status, RunStatus::Skipped);
    assert!(skipped_run.task_arn.is_none(), "no task was started");

    let third = p.execution();
    let err = p
        .launch(
            &p.spec(&job, json!({"concurrency": {"whenBusy": "fail"}})),
            &third,
            1,
        )
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::JobAlreadyRunning);
    let failed = record_run::function_handler(&p.record, json!({"spec": p.spec(&job, json!({"concurrency": {"whenBusy": "fail"}})), "execution": third, "attempt": 1, "error": {"Error": "JobAlreadyRunning", "Cause": err.message}})).await.expect("record");
    assert_eq!(
        (failed.status, failed.error, failed.notify),
        (
            RunStatus::Failed,
            Some(FailureClass::JobAlreadyRunning),
            true
        )
    );

    // Once the first run is recorded, its slot is free again.
    let task_arn = launched.task_arn.clone().unwrap();
    p.ecs.stop_task(&task_arn, json!({"exitCode": 0})).await;
    p.event(&task_arn).await;
    p.record(&launched.run_id).await;
    let fourth = p.execution();
    assert_eq!(
        p.launch(&p.spec(&job, json!({})), &fourth, 1)
            .await
            .expect("launch")
            .status,
        launch_run::LaunchStatus::Launched
    );
}

#[tokio::test]
async fn a_retried_launch_gets_the_same_run_and_task() {
    let Some(p) = Plane::new().await else { return };
    let execution = p.execution();
    let spec = p.spec(&unique("retry"), json!({}));
    let a = p.launch(&spec, &execution, 1).await.expect("launch");
    let b = p.launch(&spec, &execution, 1).await.expect("launch again");
    assert_eq!(
        (a.run_id.clone(), a.task_arn.clone()),
        (b.run_id, b.task_arn)
    );
    let tasks = p
        .ecs
        .client
        .list_tasks()
        .cluster(&p.ecs.cluster)
        .send()
        .await
        .unwrap();
    assert_eq!(tasks.task_arns().len(), 1, "one task per attempt");
}

#[tokio::test]
async fn a_malformed_job_spec_is_rejected_naming_every_bad_field() {
    let Some(p) = Plane::new().await else { return };
    let execution = p.execution();
    let spec = json!({"job": "orders", "taskDefinition": "etl:0", "cpu": 3, "retry": {"maxAttempts": 0}, "timeout": "forever", "environment": {"DB_PASSWORD": "x"}, "colour": "red"});
    let err = p.launch(&spec, &execution, 1).await.unwrap_err();
    assert_eq!(err.class, FailureClass::InvalidJobSpec);
    for field in [
        "taskDefinition",
        "cpu",
        "retry.maxAttempts",
        "timeout",
        "environment.DB_PASSWORD",
        "container",
        "colour",
    ] {
        assert!(
            err.message.contains(&format!("- {field}:")),
            "{field} missing from: {}",
            err.message
        );
    }
    // Nothing was started or stored.
    let tasks = p
        .ecs
        .client
        .list_tasks()
        .cluster(&p.ecs.cluster)
        .send()
        .await
        .unwrap();
    assert!(tasks.task_arns().is_empty());
    // The failure path still alerts, without a run.
    let notified = notify_failure::function_handler(&p.notify, json!({"spec": spec, "execution": execution, "attempt": 1, "error": {"Error": "InvalidJobSpec", "Cause": json!({"errorType": "InvalidJobSpec", "errorMessage": err.message}).to_string()}})).await.expect("notify");
    assert_eq!(notified.error, FailureClass::InvalidJobSpec);
    let received = p.alerts.received().await;
    let alert: Alert = serde_json::from_str(received[0]["Message"].as_str().unwrap()).unwrap();
    assert!(
        alert.message.contains("retry.maxAttempts"),
        "{}",
        alert.message
    );
}

#[tokio::test]
async fn an_aborted_execution_has_its_task_stopped_and_its_run_cancelled() {
    let Some(p) = Plane::new().await else { return };
    let job = unique("aborted");
    let execution = p.execution();
    let launched = p
        .launch(&p.spec(&job, json!({})), &execution, 1)
        .await
        .expect("launch");
    let task_arn = launched.task_arn.clone().unwrap();
    let event = json!({
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "detail": {"executionArn": execution.id, "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:run-job", "status": "ABORTED", "startDate": 1, "stopDate": 2, "somethingNew": true}
    });
    let out = reap_execution::function_handler(&p.reap, event)
        .await
        .expect("reap");
    assert_eq!(out.cancelled, vec![launched.run_id.clone()]);
    let task = p.ecs.describe(&task_arn).await;
    assert_eq!(task.desired_status(), Some("STOPPED"));
    assert!(task
        .stopped_reason()
        .unwrap_or_default()
        .starts_with("Stevedore: execution ended"));
    let run = p.run(&launched.run_id).await;
    assert_eq!(run.status, RunStatus::Cancelled);
    // The slot is held through the stopped task's grace, then frees itself:
    // its lease now ends within STOP_GRACE_SECONDS.
    let holders = slot_holders(&p.store, &job).await.unwrap();
    let grace_end = p.clock_now().unix_timestamp() + stevedore_domain::flow::STOP_GRACE_SECONDS;
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0].0, execution.id);
    assert!(
        holders[0].1 <= grace_end,
        "{holders:?}, grace ends {grace_end}"
    );
}

#[tokio::test]
async fn a_task_is_found_by_its_exact_started_by_through_ecs_list_tasks() {
    let Some(p) = Plane::new().await else { return };
    let job = unique("orphan");
    let spec = p.spec(&job, json!({"concurrency": {"max": 2}}));
    let launched = p.launch(&spec, &p.execution(), 1).await.expect("launch");
    let stopped = p.launch(&spec, &p.execution(), 1).await.expect("launch");
    p.ecs
        .stop_task(
            stopped.task_arn.as_deref().unwrap(),
            json!({"exitCode": 3, "stopCode": "EssentialContainerExited"}),
        )
        .await;
    let runner = p.ecs.runner();
    use stevedore_domain::ports::TaskRunner;
    let found = |run_id: &str, family: Option<String>| {
        let runner = &runner;
        let started_by = format!("stevedore/{run_id}");
        async move {
            runner
                .find_tasks(&started_by, family.as_deref())
                .await
                .expect("ListTasks")
                .into_iter()
                .map(|t| t.task_arn)
                .collect::<Vec<_>>()
        }
    };
    let family = Some(p.ecs.family.clone());
    assert_eq!(
        found(&launched.run_id, family.clone()).await,
        vec![launched.task_arn.clone().unwrap()]
    );
    // A task that already stopped is found through its family.
    assert_eq!(
        found(&stopped.run_id, family.clone()).await,
        vec![stopped.task_arn.clone().unwrap()]
    );
    assert!(found(&format!("{}-other", launched.run_id), family)
        .await
        .is_empty());
    // The API reference: "When you specify startedBy as the filter, it must
    // be the only filter that you use." moto accepts more, so the requests
    // themselves are checked.
    let sent: Vec<String> = reqwest::Client::new()
        .post(format!("{}/moto-api/stevedore/requests", p.ecs.moto))
        .json(&json!({"action": "ListTasks"}))
        .send()
        .await
        .expect("requests")
        .json()
        .await
        .expect("requests JSON");
    let ours: Vec<Value> = sent
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .filter(|b| b["cluster"] == json!(p.ecs.cluster))
        .collect();
    assert!(
        ours.iter().any(|b| b.get("startedBy").is_some()),
        "{ours:#?}"
    );
    for body in &ours {
        if body.get("startedBy").is_some() {
            let others: Vec<&String> = body
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| {
                    !["cluster", "startedBy", "nextToken", "maxResults"].contains(&k.as_str())
                })
                .collect();
            assert!(
                others.is_empty(),
                "ListTasks with startedBy and {others:?}: {body}"
            );
        }
    }
}

#[tokio::test]
async fn the_sweep_finds_our_running_tasks_with_their_tags_and_stops_the_orphan() {
    let Some(mut p) = Plane::new().await else {
        return;
    };
    let stack = unique("stack");
    p.launch.config.stack = Some(stack.clone());
    let job = unique("swept");
    let spec = p.spec(&job, json!({"concurrency": {"max": 2}}));
    let kept = p.launch(&spec, &p.execution(), 1).await.expect("launch");
    let orphan = p.launch(&spec, &p.execution(), 1).await.expect("launch");
    // The orphan's attempt ended without its task being stopped.
    let failed = stevedore_domain::run::RunChange {
        outcome: Some(stevedore_domain::failure::Outcome::failed(
            FailureClass::Transient,
            "the launch was cut short",
            None,
        )),
        ..stevedore_domain::run::RunChange::to(RunStatus::Failed)
    };
    p.store.change_run(&orphan.run_id, &failed).await.unwrap();

    let runner = Arc::new(p.ecs.runner());
    use stevedore_domain::ports::TaskRunner;
    let listed = runner.list_running("stevedore/").await.expect("ListTasks");
    let ours: Vec<_> = listed
        .iter()
        .filter(|t| t.tags.get("stevedore:stack") == Some(&stack))
        .collect();
    assert_eq!(ours.len(), 2, "{listed:?}");
    // (moto leaves out `createdAt`; the sweep then orders by ARN.)
    assert!(
        ours.iter()
            .all(|t| t.tags.get("stevedore:job") == Some(&job)),
        "{ours:?}"
    );

    let sweep = sweep_tasks::Deps {
        tasks: runner,
        runs: p.store.clone(),
        // Both executions still run (they are not in moto's Step Functions).
        executions: Arc::new(stevedore_domain::memory::MemoryExecutions::default()),
        clock: p.clock.clone(),
        config: sweep_tasks::Config {
            stack: Some(stack),
            ..Default::default()
        },
    };
    let event = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let out = sweep_tasks::function_handler(&sweep, event)
        .await
        .expect("sweep");
    let swept: Vec<&str> = out.stopped.iter().map(|s| s.run_id.as_str()).collect();
    assert_eq!(swept, vec![orphan.run_id.as_str()], "{out:?}");
    let task = p.ecs.describe(orphan.task_arn.as_ref().unwrap()).await;
    assert_eq!(task.desired_status(), Some("STOPPED"));
    assert!(task
        .stopped_reason()
        .unwrap_or_default()
        .starts_with("Stevedore: sweep:"));
    let kept_task = p.ecs.describe(kept.task_arn.as_ref().unwrap()).await;
    assert_eq!(kept_task.desired_status(), Some("RUNNING"));
    let run = p.run(&orphan.run_id).await;
    assert_eq!(run.notes.len(), 1, "{:?}", run.notes);
    assert_eq!(run.status, RunStatus::Failed);
}
