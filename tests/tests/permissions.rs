//! Every function holds exactly the permissions it uses, proven on its real
//! requests: each handler runs its paths against moto and DynamoDB Local
//! with an SDK whose every request is recorded (`tests/src/iam.rs`); each
//! request becomes the actions, resources and condition keys IAM checks
//! for it, and the function's policy in `template.yaml` — rendered as
//! CloudFormation would render it — must allow every one. The other way
//! round, every action a policy grants must be used by some request, or be
//! named below with the reason the handler itself does not call it.

use std::sync::Arc;

use serde_json::{json, Value};
use stevedore_aws::{
    CloudWatchLogSource, DynamoDbRunStore, EcsSettings, EcsTaskRunner, SecretsManagerSource,
    SfnExecutions, SfnTaskTokens, SnsNotifier,
};
use stevedore_domain::cost::PriceTable;
use stevedore_domain::memory::ManualClock;
use stevedore_domain::ports::{RunStore, SecretSource};
use stevedore_domain::run::{
    ChangeOutcome, CreateOutcome, ExecutionRef, RunChange, RunQuery, RunRecord, SlotGrant,
};
use stevedore_domain::spec::job_stack_family;
use stevedore_domain::{Error, Result, RunStatus};
use stevedore_integration_tests::cfn::{load, Env};
use stevedore_integration_tests::iam::{self, Call, Deployment, Policy, Recorder, ACCOUNT};
use stevedore_integration_tests::{
    emulator, run_store, sdk_config, unique, AlertsFixture, EcsFixture, REGION,
};
use time::OffsetDateTime;

/// Granted to a function for something other than its handler's requests.
/// The stack name the template is rendered with (`AWS::StackName`, tests/src/cfn.rs).
const STACK: &str = "stevedore";

const NOT_THE_HANDLERS: &[(&str, &str)] = &[
    (
        "sqs:SendMessage",
        "Lambda sends a failed asynchronous invocation to the function's dead-letter queue with the function's role",
    ),
    (
        "kms:GenerateDataKey",
        "that dead-letter queue is encrypted with the stack's key: SQS needs kms:GenerateDataKey and kms:Decrypt from the sender (SQS developer guide, key management)",
    ),
    (
        "kms:Decrypt",
        "the same: the encrypted dead-letter queue",
    ),
    (
        "ecs:ListTagsForResource",
        "the sweep reads tags through DescribeTasks' include=TAGS; ECS's documentation does not say whether that is authorized as ListTagsForResource, so the sweep keeps it rather than lose the tags",
    ),
];

struct Rig {
    ecs: EcsFixture,
    moto_sdk: aws_config::SdkConfig,
    ddb_sdk: aws_config::SdkConfig,
    table: String,
    topic_arn: String,
    secret_arn: String,
    clock: Arc<ManualClock>,
    deployment: Deployment,
}

impl Rig {
    async fn new() -> Option<Rig> {
        let moto = emulator("STEVEDORE_TEST_MOTO")?;
        let ddb = emulator("STEVEDORE_TEST_DYNAMODB")?;
        let ecs = EcsFixture::new(&moto).await;
        let table = run_store(&ddb).await.table().to_string();
        let alerts = AlertsFixture::new(&moto).await;
        let moto_sdk = sdk_config(&moto).await;
        let secret = aws_sdk_secretsmanager::Client::new(&moto_sdk)
            .create_secret()
            .name(unique("slack-webhook"))
            .secret_string("https://hooks.slack.com/services/T0/B0/XXXX")
            .send()
            .await
            .expect("create secret");
        Some(Rig {
            moto_sdk,
            ddb_sdk: sdk_config(&ddb).await,
            table,
            topic_arn: alerts.topic_arn.clone(),
            secret_arn: secret.arn().unwrap_or_default().to_string(),
            clock: Arc::new(ManualClock::new(OffsetDateTime::now_utc())),
            deployment: Deployment {
                key_arn: format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/stevedore-key"),
                state_machine_arn: format!(
                    "arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:stevedore-run-job"
                ),
                // What jobs/job.yaml creates under the role path the
                // Stevedore template hands it.
                task_roles: vec![
                    format!("arn:aws:iam::{ACCOUNT}:role/stevedore-jobs/stevedore/orders-TaskRole-1A2B"),
                    format!("arn:aws:iam::{ACCOUNT}:role/stevedore-jobs/stevedore/orders-ExecutionRole-3C4D"),
                ],
            },
            ecs,
        })
    }

    fn cluster_arn(&self) -> String {
        format!(
            "arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{}",
            self.ecs.cluster
        )
    }

    fn runner(&self, rec: &Recorder) -> Arc<EcsTaskRunner> {
        Arc::new(EcsTaskRunner::new(
            aws_sdk_ecs::Client::new(&rec.wrap(&self.moto_sdk)),
            EcsSettings {
                cluster: self.ecs.cluster.clone(),
                subnets: vec![self.ecs.subnet.clone()],
                security_groups: vec![self.ecs.security_group.clone()],
                assign_public_ip: false,
            },
        ))
    }

    fn store(&self, rec: &Recorder) -> Arc<DynamoDbRunStore> {
        Arc::new(DynamoDbRunStore::new(
            aws_sdk_dynamodb::Client::new(&rec.wrap(&self.ddb_sdk)),
            self.table.clone(),
        ))
    }

    fn tokens(&self, rec: &Recorder) -> Arc<SfnTaskTokens> {
        Arc::new(SfnTaskTokens::new(aws_sdk_sfn::Client::new(
            &rec.wrap(&self.moto_sdk),
        )))
    }

    fn execution(&self) -> ExecutionRef {
        let name = unique("exec");
        ExecutionRef {
            id: format!("arn:aws:states:{REGION}:{ACCOUNT}:execution:stevedore-run-job:{name}"),
            name,
            start_time: OffsetDateTime::now_utc(),
        }
    }

    /// A job of a job stack: its task definition, registered in moto, is
    /// named as jobs/job.yaml names it.
    async fn job(&self) -> String {
        let job = unique("perm");
        self.ecs.register(&job_stack_family(STACK, &job)).await;
        job
    }

    fn spec(&self, job: &str) -> Value {
        json!({
            "job": job,
            "taskDefinition": job_stack_family(STACK, job),
            "container": "app",
            "command": ["python", "-m", "ingest.orders"],
            "timeout": "10m",
            "retry": {"maxAttempts": 2, "on": ["ExitedNonZero"]},
            "tags": {"team": "data"}
        })
    }

    /// A launched run, by a launch-run whose calls go nowhere we check.
    async fn launched(&self, job: &str) -> (Value, ExecutionRef, launch_run::LaunchOutput) {
        let rec = Recorder::new();
        let spec = self.spec(job);
        let execution = self.execution();
        let out = launch_run::function_handler(
            &self.launch_deps(&rec, self.store(&rec)),
            json!({"spec": spec, "execution": execution, "attempt": 1}),
        )
        .await
        .expect("launch");
        (spec, execution, out)
    }

    fn launch_deps(&self, rec: &Recorder, runs: Arc<dyn RunStore>) -> launch_run::Deps {
        launch_run::Deps {
            tasks: self.runner(rec),
            runs,
            clock: self.clock.clone(),
            config: launch_run::Config {
                stack: Some(STACK.into()),
                task_definitions: Some(
                    launch_run::TaskDefinitions::parse(STACK, "").expect("no hand-made ones"),
                ),
                ..launch_run::Config::default()
            },
        }
    }

    fn record_deps(&self, rec: &Recorder) -> record_run::Deps {
        record_run::Deps {
            runs: self.store(rec),
            tasks: self.runner(rec),
            clock: self.clock.clone(),
            prices: PriceTable::builtin(),
            region: REGION.into(),
        }
    }

    async fn stop(&self, task_arn: &str, exit: i32) {
        self.ecs
            .stop_task(
                task_arn,
                json!({"exitCode": exit, "stopCode": "EssentialContainerExited", "runSeconds": 30}),
            )
            .await;
    }

    /// The task exits with `exit` and its event reaches task-events (whose
    /// calls are not checked here).
    async fn stopped_and_seen(&self, task_arn: &str, exit: i32) {
        self.stop(task_arn, exit).await;
        let events = task_events::Deps {
            runs: self.store(&Recorder::new()),
            tokens: self.tokens(&Recorder::new()),
        };
        task_events::function_handler(&events, self.ecs.state_change_event(task_arn).await)
            .await
            .expect("the stop is seen");
    }

    /// The template rendered for this rig's resources.
    fn policy(&self, template: &serde_yaml::Value, function: &str) -> Policy {
        self.policy_with(template, function, &[])
    }

    /// The same, with some of the template's parameters set.
    fn policy_with(
        &self,
        template: &serde_yaml::Value,
        function: &str,
        params: &[(&str, Value)],
    ) -> Policy {
        let mut env = Env::new(template);
        for (name, value) in params {
            env.set(name, value.clone());
        }
        env.set("ClusterArn", self.cluster_arn())
            .set(
                "RunsTable.Arn",
                format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", self.table),
            )
            .set("RunsTable", self.table.clone())
            .set("StevedoreKey.Arn", self.deployment.key_arn.clone())
            .set("AlertsTopic", self.topic_arn.clone())
            .set("SlackWebhookSecretArn", self.secret_arn.clone())
            .set(
                "FunctionDeadLetterQueue.Arn",
                format!("arn:aws:sqs:{REGION}:{ACCOUNT}:stevedore-functions-dlq"),
            )
            .set(
                "EventsDeadLetterQueue.Arn",
                format!("arn:aws:sqs:{REGION}:{ACCOUNT}:stevedore-events-dlq"),
            );
        let policies = &template["Resources"][function]["Properties"]["Policies"];
        let docs: Vec<Value> = policies
            .as_sequence()
            .unwrap_or_else(|| panic!("{function} has no Policies"))
            .iter()
            .map(|p| {
                env.eval(p)
                    .unwrap_or_else(|e| panic!("{function}'s policy: {e}"))
            })
            .collect();
        Policy::from_documents(&docs).unwrap_or_else(|e| panic!("{function}: {e}"))
    }
}

/// A run store whose write of the launch's RUNNING status fails: a launch
/// cut short after RunTask (the run never names its task).
struct CutShort(Arc<DynamoDbRunStore>);

#[async_trait::async_trait]
impl RunStore for CutShort {
    async fn create_run(&self, run: &RunRecord) -> Result<CreateOutcome> {
        self.0.create_run(run).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.0.get_run(run_id).await
    }
    async fn change_run(&self, run_id: &str, change: &RunChange) -> Result<ChangeOutcome> {
        if change.status() == RunStatus::Running {
            return Err(Error::transient("UpdateItem: timed out (test)"));
        }
        self.0.change_run(run_id, change).await
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        self.0.list_runs(query).await
    }
    async fn runs_of_execution(&self, execution_id: &str) -> Result<Vec<RunRecord>> {
        self.0.runs_of_execution(execution_id).await
    }
    async fn acquire_slot(
        &self,
        job: &str,
        holder: &str,
        max: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<SlotGrant> {
        self.0
            .acquire_slot(job, holder, max, lease_until, now)
            .await
    }
    async fn release_slot(&self, job: &str, holder: &str) -> Result<()> {
        self.0.release_slot(job, holder).await
    }
    async fn claim_launch(
        &self,
        run_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.0.claim_launch(run_id, until, now).await
    }
    async fn claim_scheduled_start(
        &self,
        job: &str,
        scheduled: &str,
        execution_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<String>> {
        self.0
            .claim_scheduled_start(job, scheduled, execution_id, until, now)
            .await
    }
    async fn add_note(&self, run_id: &str, note: &str) -> Result<bool> {
        self.0.add_note(run_id, note).await
    }
}

/// What each function's handler did, by its template logical id.
async fn exercise(rig: &Rig) -> Vec<(&'static str, Vec<Call>)> {
    let mut out = Vec::new();

    // launch-run: a launch, and the same launch retried.
    let rec = Recorder::new();
    let deps = rig.launch_deps(&rec, rig.store(&rec));
    let input =
        json!({"spec": rig.spec(&rig.job().await), "execution": rig.execution(), "attempt": 1});
    launch_run::function_handler(&deps, input.clone())
        .await
        .expect("launch");
    launch_run::function_handler(&deps, input)
        .await
        .expect("launch again");
    out.push(("LaunchRunFunction", rec.calls()));

    // watch-task: stores the token and polls; past the deadline it stops the
    // task; once the task stopped it completes the token.
    let rec = Recorder::new();
    let (_, _, launched) = rig.launched(&rig.job().await).await;
    let watch = watch_task::Deps {
        tasks: rig.runner(&rec),
        runs: rig.store(&rec),
        tokens: rig.tokens(&rec),
        clock: rig.clock.clone(),
        config: watch_task::Config::default(),
    };
    let token = unique("token");
    let body = json!({"runId": launched.run_id, "taskToken": token});
    watch_task::function_handler(&watch, body.clone())
        .await
        .expect("watch");
    let late = watch_task::Deps {
        clock: Arc::new(ManualClock::new(
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        )),
        ..watch
    };
    watch_task::function_handler(&late, body.clone())
        .await
        .expect("watch past the deadline");
    rig.stop(launched.task_arn.as_deref().unwrap(), 143).await;
    // moto knows no such token: the call is made (and recorded) all the same.
    let _ = watch_task::function_handler(&late, body).await;
    out.push(("WatchTaskFunction", rec.calls()));

    // task-events: the stop event of a run waiting with its token.
    let rec = Recorder::new();
    let (_, _, launched) = rig.launched(&rig.job().await).await;
    let task_arn = launched.task_arn.clone().unwrap();
    rig.store(&Recorder::new())
        .change_run(
            &launched.run_id,
            &RunChange {
                task_token: Some(unique("token")),
                ..RunChange::to(RunStatus::Running)
            },
        )
        .await
        .expect("token");
    rig.stop(&task_arn, 0).await;
    let events = task_events::Deps {
        runs: rig.store(&rec),
        tokens: rig.tokens(&rec),
    };
    let _ =
        task_events::function_handler(&events, rig.ecs.state_change_event(&task_arn).await).await;
    out.push(("TaskEventsFunction", rec.calls()));

    // record-run: a finished attempt (its slot freed); an attempt whose watch failed for good
    // (its task still running: described, then stopped); a launch cut short
    // before the run named its task (found by its startedBy).
    let rec = Recorder::new();
    let record = rig.record_deps(&rec);
    let (spec, execution, launched) = rig.launched(&rig.job().await).await;
    let task_arn = launched.task_arn.clone().unwrap();
    rig.stopped_and_seen(&task_arn, 0).await;
    let state = json!({"spec": spec, "execution": execution, "attempt": 1,
        "launch": {"runId": launched.run_id, "taskArn": task_arn}});
    record_run::function_handler(&record, state)
        .await
        .expect("record");
    let (spec, execution, launched) = rig.launched(&rig.job().await).await;
    let state = json!({"spec": spec, "execution": execution, "attempt": 1,
        "launch": {"runId": launched.run_id, "taskArn": launched.task_arn},
        "error": {"Error": "Lambda.ServiceException", "Cause": "watch-task could not run"}});
    record_run::function_handler(&record, state)
        .await
        .expect("record a failed watch");
    let cut_short = Arc::new(CutShort(rig.store(&Recorder::new())));
    let spec = rig.spec(&rig.job().await);
    let execution = rig.execution();
    let launch_input = json!({"spec": spec, "execution": execution, "attempt": 1});
    launch_run::function_handler(&rig.launch_deps(&Recorder::new(), cut_short), launch_input)
        .await
        .expect_err("the launch is cut short");
    let state = json!({"spec": spec, "execution": execution, "attempt": 1,
        "error": {"Error": "Transient", "Cause": "UpdateItem: timed out (test)"}});
    record_run::function_handler(&record, state)
        .await
        .expect("record a cut-short launch");
    out.push(("RecordRunFunction", rec.calls()));

    // notify-failure: the alert of a failed run, with its log tail.
    let rec = Recorder::new();
    let (spec, execution, launched) = rig.launched(&rig.job().await).await;
    let task_arn = launched.task_arn.clone().unwrap();
    rig.ecs
        .write_job_log(&task_arn, &["loading".into(), "Traceback: boom".into()])
        .await;
    rig.stopped_and_seen(&task_arn, 3).await;
    let notify = notify_failure::Deps {
        runs: rig.store(&rec),
        notifier: Arc::new(SnsNotifier::new(
            aws_sdk_sns::Client::new(&rec.wrap(&rig.moto_sdk)),
            rig.topic_arn.clone(),
        )),
        logs: Arc::new(CloudWatchLogSource::from_sdk(&rec.wrap(&rig.moto_sdk))),
    };
    notify_failure::function_handler(
        &notify,
        json!({"input": {"spec": spec, "execution": execution, "attempt": 1,
                         "launch": {"runId": launched.run_id, "taskArn": task_arn},
                         "record": {"runId": launched.run_id, "status": "FAILED", "error": "ExitedNonZero", "cause": "exit 3"}},
               "execution": execution}),
    )
    .await
    .expect("notify");
    out.push(("NotifyFailureFunction", rec.calls()));

    // reap-execution: an aborted execution whose task runs, and one whose
    // launch was cut short.
    let rec = Recorder::new();
    let reap = reap_execution::Deps {
        tasks: rig.runner(&rec),
        runs: rig.store(&rec),
        clock: rig.clock.clone(),
        prices: PriceTable::builtin(),
        region: REGION.into(),
    };
    let (_, execution, _) = rig.launched(&rig.job().await).await;
    let aborted = |execution: &ExecutionRef| {
        json!({
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "detail": {"executionArn": execution.id, "status": "ABORTED"}
        })
    };
    reap_execution::function_handler(&reap, aborted(&execution))
        .await
        .expect("reap");
    let cut_short = Arc::new(CutShort(rig.store(&Recorder::new())));
    let execution = rig.execution();
    launch_run::function_handler(
        &rig.launch_deps(&Recorder::new(), cut_short),
        json!({"spec": rig.spec(&rig.job().await), "execution": execution, "attempt": 1}),
    )
    .await
    .expect_err("the launch is cut short");
    reap_execution::function_handler(&reap, aborted(&execution))
        .await
        .expect("reap a cut-short launch");
    // And one whose task had already ended: nothing to stop, the slot freed.
    let (_, execution, launched) = rig.launched(&rig.job().await).await;
    rig.stopped_and_seen(launched.task_arn.as_deref().unwrap(), 0)
        .await;
    reap_execution::function_handler(&reap, aborted(&execution))
        .await
        .expect("reap an ended run");
    out.push(("ReapExecutionFunction", rec.calls()));

    // sweep-tasks: a task whose run ended while it ran on.
    let rec = Recorder::new();
    let (_, _, orphan) = rig.launched(&rig.job().await).await;
    rig.store(&Recorder::new())
        .change_run(
            &orphan.run_id,
            &RunChange {
                finished_at: Some(OffsetDateTime::now_utc()),
                outcome: Some(stevedore_domain::failure::Outcome::failed(
                    stevedore_domain::FailureClass::Transient,
                    "test",
                    None,
                )),
                ..RunChange::to(RunStatus::Failed)
            },
        )
        .await
        .expect("end the run");
    // And a task whose run is live but whose execution Step Functions does
    // not know (the reaper's event was lost): DescribeExecution decides.
    let _ = rig.launched(&rig.job().await).await;
    let sweep = sweep_tasks::Deps {
        tasks: rig.runner(&rec),
        runs: rig.store(&rec),
        executions: Arc::new(SfnExecutions::new(aws_sdk_sfn::Client::new(
            &rec.wrap(&rig.moto_sdk),
        ))),
        clock: Arc::new(ManualClock::new(
            OffsetDateTime::now_utc() + time::Duration::minutes(10),
        )),
        config: sweep_tasks::Config {
            stack: Some(STACK.into()),
            ..Default::default()
        },
    };
    let _ =
        sweep_tasks::function_handler(&sweep, json!({"detail-type": sweep_tasks::SCHEDULED_EVENT}))
            .await;
    out.push(("SweepTasksFunction", rec.calls()));

    // slack-notifier: the webhook URL, read from Secrets Manager.
    let rec = Recorder::new();
    SecretsManagerSource::from_sdk(&rec.wrap(&rig.moto_sdk))
        .secret(&rig.secret_arn)
        .await
        .expect("the webhook secret");
    out.push(("SlackNotifierFunction", rec.calls()));
    out
}

/// The operations each scenario must have made: a path that stops making
/// its call would otherwise leave its permission unchecked.
fn expected_operations(function: &str) -> &'static [&'static str] {
    match function {
        "LaunchRunFunction" => &[
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "ecs:RunTask",
        ],
        "WatchTaskFunction" => &[
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
            "ecs:DescribeTasks",
            "ecs:StopTask",
            "states:SendTaskSuccess",
        ],
        "TaskEventsFunction" => &[
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
            "states:SendTaskSuccess",
        ],
        "RecordRunFunction" => &[
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
            "dynamodb:Query",
            "dynamodb:DeleteItem",
            "ecs:DescribeTasks",
            "ecs:ListTasks",
            "ecs:StopTask",
        ],
        "NotifyFailureFunction" => &[
            "dynamodb:GetItem",
            "ecs:DescribeTaskDefinition",
            "logs:GetLogEvents",
            "sns:Publish",
        ],
        "ReapExecutionFunction" => &[
            "dynamodb:Query",
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "ecs:ListTasks",
            "ecs:DescribeTasks",
            "ecs:StopTask",
        ],
        "SweepTasksFunction" => &[
            "ecs:ListTasks",
            "ecs:DescribeTasks",
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
            "dynamodb:Query",
            "ecs:StopTask",
            "states:DescribeExecution",
        ],
        "SlackNotifierFunction" => &["secretsmanager:GetSecretValue"],
        _ => &[],
    }
}

/// The actions a policy grants that no request needed.
fn unused(policy_actions: &[String], calls: &[Call], d: &Deployment) -> Vec<String> {
    let used: Vec<String> = calls
        .iter()
        .flat_map(|c| iam::needs(c, d))
        .map(|n| n.action.to_ascii_lowercase())
        .collect();
    policy_actions
        .iter()
        .filter(|a| {
            !used
                .iter()
                .any(|u| iam::wildcard(&a.to_ascii_lowercase(), u))
        })
        .filter(|a| !NOT_THE_HANDLERS.iter().any(|(n, _)| n == a))
        .cloned()
        .collect()
}

fn granted_actions(template: &serde_yaml::Value, function: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in template["Resources"][function]["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        for s in p["Statement"].as_sequence().into_iter().flatten() {
            match &s["Action"] {
                serde_yaml::Value::String(a) => out.push(a.clone()),
                serde_yaml::Value::Sequence(l) => {
                    out.extend(l.iter().filter_map(|a| a.as_str().map(String::from)))
                }
                _ => {}
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_holds_exactly_the_permissions_its_requests_need() {
    let Some(rig) = Rig::new().await else { return };
    let template = load("template.yaml");
    let mut problems = Vec::new();
    for (function, calls) in exercise(&rig).await {
        let ops = iam::operations(&calls);
        for must in expected_operations(function) {
            if !ops.iter().any(|o| o == must) {
                problems.push(format!(
                    "{function}: the scenario made no {must} (it made {ops:?})"
                ));
            }
        }
        let policy = rig.policy(&template, function);
        for why in iam::denied(&policy, &calls, &rig.deployment) {
            problems.push(format!("{function}: {why}"));
        }
        for action in unused(
            &granted_actions(&template, function),
            &calls,
            &rig.deployment,
        ) {
            problems.push(format!(
                "{function}: grants {action}, which none of its requests needs"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_an_action_resource_or_condition_it_needs_fails_the_check() {
    let Some(rig) = Rig::new().await else { return };
    let template = load("template.yaml");
    let calls: Vec<(&str, Vec<Call>)> = exercise(&rig).await;
    let record = &calls
        .iter()
        .find(|(f, _)| *f == "RecordRunFunction")
        .expect("record-run's calls")
        .1;
    // Each mutation of record-run's policy must be caught.
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "ecs:DescribeTasks removed",
            Box::new(|t: &mut serde_yaml::Value| {
                for s in statements(t, "RecordRunFunction") {
                    if let serde_yaml::Value::Sequence(l) = &mut s["Action"] {
                        l.retain(|a| a.as_str() != Some("ecs:DescribeTasks"));
                    }
                }
            }),
        ),
        (
            "StopTask's resource narrowed to another cluster's tasks",
            Box::new(|t: &mut serde_yaml::Value| {
                for s in statements(t, "RecordRunFunction") {
                    if s["Sid"].as_str() == Some("StopTasksLeftRunning") {
                        s["Resource"] = serde_yaml::Value::String(
                            "arn:aws:ecs:us-east-1:123456789012:task/elsewhere/*".into(),
                        );
                    }
                }
            }),
        ),
        (
            "ListTasks' cluster condition pointing at another cluster",
            Box::new(|t: &mut serde_yaml::Value| {
                for s in statements(t, "RecordRunFunction") {
                    if s["Sid"].as_str() == Some("FindTasksLeftRunning") {
                        s["Condition"]["ArnEquals"]["ecs:cluster"] = serde_yaml::Value::String(
                            "arn:aws:ecs:us-east-1:123456789012:cluster/elsewhere".into(),
                        );
                    }
                }
            }),
        ),
    ];
    for (what, mutate) in mutations {
        let mut broken = template.clone();
        mutate(&mut broken);
        let policy = rig.policy(&broken, "RecordRunFunction");
        assert!(
            !iam::denied(&policy, record, &rig.deployment).is_empty(),
            "record-run's policy with {what} still allowed every request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_run_runs_only_this_stacks_job_definitions_and_those_listed_by_hand() {
    let Some(rig) = Rig::new().await else { return };
    let template = load("template.yaml");
    let run_task = |td: &str| Call {
        service: "ecs".into(),
        region: REGION.into(),
        operation: "RunTask".into(),
        params: json!({"cluster": rig.cluster_arn(), "taskDefinition": td}),
    };
    let allowed = |policy: &Policy, td: &str| {
        iam::denied(policy, &[run_task(td)], &rig.deployment).is_empty()
    };
    let by_default = rig.policy(&template, "LaunchRunFunction");
    let listed = rig.policy_with(
        &template,
        "LaunchRunFunction",
        &[(
            "TaskDefinitionArns",
            json!([
                format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/etl-*"),
                format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/report:3"),
            ]),
        )],
    );
    for policy in [&by_default, &listed] {
        assert!(allowed(policy, &job_stack_family(STACK, "orders")));
        assert!(allowed(
            policy,
            &format!("{}:12", job_stack_family(STACK, "orders"))
        ));
        // Another stack whose name starts with this one's.
        assert!(!allowed(
            policy,
            &format!("{}:1", job_stack_family("stevedore-x", "orders"))
        ));
        assert!(!allowed(policy, "admin-tools:1"));
    }
    assert!(!allowed(&by_default, "etl-python:7"));
    assert!(allowed(&listed, "etl-python:7"));
    assert!(allowed(&listed, "report:3"));
    assert!(!allowed(&listed, "report:4"));
}

/// A change to a template, for the checks that must catch it.
type Mutation = Box<dyn Fn(&mut serde_yaml::Value)>;

fn statements<'a>(
    template: &'a mut serde_yaml::Value,
    function: &str,
) -> Vec<&'a mut serde_yaml::Value> {
    let mut out = Vec::new();
    if let Some(policies) =
        template["Resources"][function]["Properties"]["Policies"].as_sequence_mut()
    {
        for p in policies {
            if let Some(list) = p["Statement"].as_sequence_mut() {
                out.extend(list.iter_mut());
            }
        }
    }
    out
}
