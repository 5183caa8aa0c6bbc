//! Adapter behaviour no emulator can produce — throttling, RunTask
//! `failures`, DescribeTasks `MISSING`, closed task tokens — on the real SDK
//! request and response types (aws-smithy-mocks).

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::get_item::GetItemError;
use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::run_task::{RunTaskError, RunTaskOutput};
use aws_sdk_ecs::operation::stop_task::StopTaskError;
use aws_sdk_ecs::types::{Failure, Task};
use aws_sdk_sfn::operation::send_task_success::SendTaskSuccessError;
use aws_sdk_sfn::types::error::{InvalidToken, TaskDoesNotExist, TaskTimedOut};
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use serde_json::json;
use stevedore_aws::{DynamoDbRunStore, EcsSettings, EcsTaskRunner, SfnTaskTokens};
use stevedore_domain::ports::{Launch, RunStore, TaskRunner, TaskTokens, TokenDelivery};
use stevedore_domain::spec::{Capacity, JobSpec};
use stevedore_domain::task::TaskLookup;
use stevedore_domain::FailureClass;

fn settings() -> EcsSettings {
    EcsSettings {
        cluster: "data".into(),
        subnets: vec!["subnet-0a1b2c3d".into()],
        security_groups: vec!["sg-0123abcd".into()],
        assign_public_ip: false,
    }
}

fn launch() -> Launch {
    let spec = JobSpec::from_value(&json!({"job": "orders", "taskDefinition": "etl:3", "container": "app", "command": ["run"]})).unwrap();
    Launch {
        network: Default::default(),
        run_id: "orders-20261124T060000-abcdef12-1".into(),
        client_token: "a".repeat(64),
        capacity: Capacity::OnDemand,
        started_by: "stevedore/orders-20261124T060000-abcdef12-1".into(),
        tags: Default::default(),
        spec,
    }
}

fn failure(reason: &str, detail: Option<&str>) -> Failure {
    Failure::builder()
        .arn("arn:aws:ecs:eu-west-1:111122223333:container-instance/x")
        .reason(reason)
        .set_detail(detail.map(str::to_string))
        .build()
}

#[tokio::test]
async fn when_run_task_returns_failures_it_is_never_success() {
    let cases = [
        ("Capacity is unavailable at this time. Please try again later or in a different availability zone", None, FailureClass::CapacityUnavailable),
        ("RESOURCE:ENI", Some("subnet-0a1b2c3d"), FailureClass::StartFailed),
        ("AGENT", None, FailureClass::StartFailed),
        ("ATTRIBUTE", Some("ecs.cpu-architecture"), FailureClass::ConfigurationError),
    ];
    for (reason, detail, want) in cases {
        let f = failure(reason, detail);
        let rule = mock!(aws_sdk_ecs::Client::run_task)
            .then_output(move || RunTaskOutput::builder().failures(f.clone()).build());
        let client = mock_client!(aws_sdk_ecs, [&rule]);
        let err = EcsTaskRunner::new(client, settings())
            .run_task(&launch())
            .await
            .unwrap_err();
        assert_eq!(err.class, want, "{reason}");
        assert!(err.message.contains(reason), "{}", err.message);
    }
}

#[tokio::test]
async fn when_run_task_returns_nothing_it_is_not_a_launch() {
    let rule =
        mock!(aws_sdk_ecs::Client::run_task).then_output(|| RunTaskOutput::builder().build());
    let client = mock_client!(aws_sdk_ecs, [&rule]);
    let err = EcsTaskRunner::new(client, settings())
        .run_task(&launch())
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Transient);
}

#[tokio::test]
async fn run_task_sends_the_token_started_by_overrides_and_capacity() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_in = seen.clone();
    let rule = mock!(aws_sdk_ecs::Client::run_task)
        .match_requests(move |req| {
            seen_in.lock().unwrap().push(req.clone());
            true
        })
        .then_output(|| {
            RunTaskOutput::builder()
                .tasks(
                    Task::builder()
                        .task_arn("arn:aws:ecs:eu-west-1:1:task/data/t1")
                        .last_status("PROVISIONING")
                        .build(),
                )
                .build()
        });
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&rule]);
    let runner = EcsTaskRunner::new(client, settings());
    let mut spot = launch();
    spot.capacity = Capacity::Spot;
    let launched = runner.run_task(&spot).await.unwrap();
    assert_eq!(launched.task_arn, "arn:aws:ecs:eu-west-1:1:task/data/t1");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.client_token(), Some("a".repeat(64).as_str()));
    assert_eq!(
        req.started_by(),
        Some("stevedore/orders-20261124T060000-abcdef12-1")
    );
    assert_eq!(req.cluster(), Some("data"));
    assert_eq!(
        req.launch_type(),
        None,
        "a capacity provider strategy, not a launch type"
    );
    assert_eq!(
        req.capacity_provider_strategy()[0].capacity_provider(),
        "FARGATE_SPOT"
    );
    let overrides = req.overrides().unwrap();
    assert_eq!(overrides.container_overrides()[0].command(), ["run"]);
    let vpc = req
        .network_configuration()
        .unwrap()
        .awsvpc_configuration()
        .unwrap();
    assert_eq!(vpc.subnets(), ["subnet-0a1b2c3d"]);
}

#[tokio::test]
async fn when_ecs_throttles_the_error_is_throttled() {
    let rule = mock!(aws_sdk_ecs::Client::run_task).then_error(|| {
        RunTaskError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("Rate exceeded")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&rule]);
    let err = EcsTaskRunner::new(client, settings())
        .run_task(&launch())
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Throttled);
    assert!(err.message.contains("Rate exceeded"));

    let rule = mock!(aws_sdk_ecs::Client::run_task).then_error(|| {
        RunTaskError::generic(
            ErrorMetadata::builder()
                .code("ClientException")
                .message("Unable to find task definition")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&rule]);
    let err = EcsTaskRunner::new(client, settings())
        .run_task(&launch())
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::ConfigurationError);
    assert!(err.message.contains("etl:3"), "{}", err.message);
}

#[tokio::test]
async fn describe_tasks_reports_missing_and_batches_by_100() {
    let calls = Arc::new(Mutex::new(Vec::<usize>::new()));
    let calls_in = calls.clone();
    let rule = mock!(aws_sdk_ecs::Client::describe_tasks)
        .match_requests(move |req| {
            calls_in.lock().unwrap().push(req.tasks().len());
            true
        })
        .then_output(|| {
            DescribeTasksOutput::builder()
                .tasks(
                    Task::builder()
                        .task_arn("arn:t/0")
                        .last_status("RUNNING")
                        .build(),
                )
                .failures(Failure::builder().arn("arn:t/1").reason("MISSING").build())
                .build()
        });
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&rule]);
    let runner = EcsTaskRunner::new(client, settings());
    let arns: Vec<String> = (0..150).map(|i| format!("arn:t/{i}")).collect();
    let found = runner.describe_tasks(&arns).await.unwrap();
    assert_eq!(*calls.lock().unwrap(), vec![100, 50]);
    let first = &found[..100];
    assert!(matches!(&first[0], TaskLookup::Found(t) if t.task_arn == "arn:t/0"));
    assert!(first.iter().any(|l| matches!(l, TaskLookup::Missing { task_arn, reason } if task_arn == "arn:t/1" && reason == "MISSING")));
    // ARNs in neither list are missing too (moto's way of saying it).
    assert!(first
        .iter()
        .any(|l| matches!(l, TaskLookup::Missing { task_arn, .. } if task_arn == "arn:t/2")));
}

#[tokio::test]
async fn stopping_a_task_ecs_no_longer_knows_is_done() {
    let rule = mock!(aws_sdk_ecs::Client::stop_task).then_error(|| {
        StopTaskError::generic(
            ErrorMetadata::builder()
                .code("InvalidParameterException")
                .message("The referenced task was not found.")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&rule]);
    EcsTaskRunner::new(client, settings())
        .stop_task("arn:t/9", "Stevedore: job timeout")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_closed_task_token_is_not_an_error() {
    let timed_out = mock!(aws_sdk_sfn::Client::send_task_success).then_error(|| {
        SendTaskSuccessError::TaskTimedOut(
            TaskTimedOut::builder().message("Task Timed Out").build(),
        )
    });
    let gone = mock!(aws_sdk_sfn::Client::send_task_success)
        .then_error(|| SendTaskSuccessError::TaskDoesNotExist(TaskDoesNotExist::builder().build()));
    let invalid = mock!(aws_sdk_sfn::Client::send_task_success).then_error(|| {
        SendTaskSuccessError::InvalidToken(InvalidToken::builder().message("Invalid token").build())
    });
    let client = mock_client!(
        aws_sdk_sfn,
        RuleMode::Sequential,
        [&timed_out, &gone, &invalid]
    );
    let tokens = SfnTaskTokens::new(client);
    assert_eq!(
        tokens.send_success("t", &json!({})).await.unwrap(),
        TokenDelivery::AlreadyClosed
    );
    assert_eq!(
        tokens.send_success("t", &json!({})).await.unwrap(),
        TokenDelivery::AlreadyClosed
    );
    let err = tokens.send_success("t", &json!({})).await.unwrap_err();
    assert_eq!(err.class, FailureClass::InvalidInput);
}

#[tokio::test]
async fn when_dynamodb_throttles_the_error_is_throttled() {
    let rule = mock!(aws_sdk_dynamodb::Client::get_item).then_error(|| {
        GetItemError::ProvisionedThroughputExceededException(
            aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                .message(
                    "The level of configured provisioned throughput for the table was exceeded",
                )
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let err = DynamoDbRunStore::new(client, "runs")
        .get_run("x")
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Throttled);
}

/// A launch's calls stay bounded whatever `concurrency.max` is: when every
/// slot the read shows free is lost to a racing launch (a race no emulator
/// produces on demand), the store tries at most `SLOT_TRIES` of them. The
/// function's timeout counts on it (tests/deploy/check_template.py reads
/// `SLOT_TRIES` for launch-run's worst case).
#[tokio::test]
async fn a_slot_race_costs_at_most_slot_tries_writes_however_many_slots_look_free() {
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use stevedore_aws::dynamodb::SLOT_TRIES;
    use stevedore_domain::run::SlotGrant;

    let query = mock!(aws_sdk_dynamodb::Client::query)
        .sequence()
        .output(|| QueryOutput::builder().count(0).build())
        .repeatedly()
        .build();
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .sequence()
        .error(|| {
            PutItemError::ConditionalCheckFailedException(
                aws_sdk_dynamodb::types::error::ConditionalCheckFailedException::builder()
                    .message("The conditional request failed")
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&query, &put]);
    let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let grant = DynamoDbRunStore::new(client, "runs")
        .acquire_slot("orders", "exec-1", 200, now + time::Duration::hours(1), now)
        .await
        .unwrap();
    assert!(matches!(grant, SlotGrant::Busy { .. }), "{grant:?}");
    assert_eq!(put.num_calls(), SLOT_TRIES, "one write per slot tried");
    assert_eq!(query.num_calls(), 2, "the read, and the holders for Busy");
}
