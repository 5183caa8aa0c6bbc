//! At most one ECS task per attempt, even when the launch Lambda is retried:
//! both invocations send the same RunTask `clientToken` (ECS returns the
//! first task for a repeated token; no emulator implements that, so the ECS
//! side is an SDK-level mock).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_ecs::operation::run_task::RunTaskOutput;
use aws_sdk_ecs::types::Task;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use serde_json::json;
use stevedore_aws::{EcsSettings, EcsTaskRunner};
use stevedore_domain::memory::{ManualClock, MemoryRunStore};
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::{
    ChangeOutcome, CreateOutcome, RunChange, RunQuery, RunRecord, SlotGrant,
};
use stevedore_domain::{Error, FailureClass, Result, RunStatus};
use time::macros::datetime;
use time::OffsetDateTime;

/// A store whose first status change fails, as if DynamoDB timed out right
/// after ECS accepted the task.
struct FailFirstChange {
    inner: MemoryRunStore,
    failed: Mutex<bool>,
}

#[async_trait]
impl RunStore for FailFirstChange {
    async fn create_run(&self, run: &RunRecord) -> Result<CreateOutcome> {
        self.inner.create_run(run).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.inner.get_run(run_id).await
    }
    async fn change_run(&self, run_id: &str, change: &RunChange) -> Result<ChangeOutcome> {
        let first = !std::mem::replace(&mut *self.failed.lock().unwrap(), true);
        if first {
            return Err(Error::transient("UpdateItem: timed out"));
        }
        self.inner.change_run(run_id, change).await
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        self.inner.list_runs(query).await
    }
    async fn runs_of_execution(&self, execution_id: &str) -> Result<Vec<RunRecord>> {
        self.inner.runs_of_execution(execution_id).await
    }
    async fn acquire_slot(
        &self,
        job: &str,
        holder: &str,
        max: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<SlotGrant> {
        self.inner
            .acquire_slot(job, holder, max, lease_until, now)
            .await
    }
    async fn release_slot(&self, job: &str, holder: &str) -> Result<()> {
        self.inner.release_slot(job, holder).await
    }
    async fn claim_launch(
        &self,
        run_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.inner.claim_launch(run_id, until, now).await
    }
    async fn claim_scheduled_start(
        &self,
        job: &str,
        scheduled: &str,
        execution_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<String>> {
        self.inner
            .claim_scheduled_start(job, scheduled, execution_id, until, now)
            .await
    }
    async fn add_note(&self, run_id: &str, note: &str) -> Result<bool> {
        self.inner.add_note(run_id, note).await
    }
}

#[tokio::test]
async fn a_retried_launch_sends_the_same_client_token_and_records_one_task() {
    let tokens = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = tokens.clone();
    let rule = mock!(aws_sdk_ecs::Client::run_task)
        .match_requests(move |req| {
            seen.lock()
                .unwrap()
                .push(req.client_token().unwrap_or_default().to_string());
            true
        })
        .then_output(|| {
            RunTaskOutput::builder()
                .tasks(
                    Task::builder()
                        .task_arn("arn:aws:ecs:us-east-1:1:task/data/only-one")
                        .last_status("PROVISIONING")
                        .build(),
                )
                .build()
        });
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&rule]);
    let runner = EcsTaskRunner::new(
        client,
        EcsSettings {
            cluster: "data".into(),
            subnets: vec!["subnet-0a1b2c3d".into()],
            security_groups: vec![],
            assign_public_ip: false,
        },
    );
    let store = Arc::new(FailFirstChange {
        inner: MemoryRunStore::new(),
        failed: Mutex::new(false),
    });
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-24 06:00:00 UTC)));
    let deps = launch_run::Deps {
        tasks: Arc::new(runner),
        runs: store.clone(),
        clock: clock.clone(),
        config: launch_run::Config::default(),
    };
    let input = json!({
        "spec": {"job": "orders", "taskDefinition": "etl:3"},
        "execution": {"id": "arn:aws:states:us-east-1:1:execution:run-job:nightly", "name": "nightly", "startTime": "2026-11-24T06:00:00.123Z"},
        "attempt": 1
    });

    let first = launch_run::function_handler(&deps, input.clone())
        .await
        .unwrap_err();
    assert_eq!(
        first.class,
        FailureClass::Transient,
        "the state machine retries this"
    );
    // The retry comes once the first invocation's claim on the launch has
    // run out (Step Functions' backoff reaches it within minutes).
    clock.advance(time::Duration::seconds(
        launch_run::LAUNCH_CLAIM_SECONDS + 1,
    ));
    let second = launch_run::function_handler(&deps, input)
        .await
        .expect("the retry succeeds");

    let sent = tokens.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], sent[1], "both invocations use one client token");
    assert_eq!(sent[0].len(), 64);
    assert_eq!(
        second.task_arn.as_deref(),
        Some("arn:aws:ecs:us-east-1:1:task/data/only-one")
    );
    let runs = store.inner.all_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Running);
}
