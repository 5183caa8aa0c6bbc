//! Test support: the emulators `scripts/test.sh` starts (moto server with
//! Stevedore's extension, DynamoDB Local), SDK clients pointed at them, and
//! fixtures (table, cluster, task definition, topic → queue).

pub mod asl;
pub mod cfn;
pub mod contract;
pub mod iam;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ecs::config::Credentials;
use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode};
use serde_json::{json, Value};
use stevedore_aws::{DynamoDbRunStore, EcsSettings, EcsTaskRunner, SfnTaskTokens, SnsNotifier};
use stevedore_domain::ports::{TaskTokens, TokenDelivery};
use stevedore_domain::Result;

pub mod moto_sfn;
pub mod proxy;
pub mod world;

pub const REGION: &str = "us-east-1";

/// The log group the fixture's task definition sends its container log to:
/// under the jobs' prefix of a stack named `stevedore`
/// (`/stevedore/<stack>/jobs/<job>`, as jobs/job.yaml names it), the log
/// groups notify-failure may read.
pub const JOB_LOG_GROUP: &str = "/stevedore/stevedore/jobs/it";

/// The endpoint in `var`, or a loud failure saying how to run the tests.
/// `STEVEDORE_SKIP_EMULATOR_TESTS=1` skips instead, saying so.
pub fn emulator(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("STEVEDORE_SKIP_EMULATOR_TESTS").as_deref() == Ok("1") => {
            eprintln!("SKIPPED: {var} is not set and STEVEDORE_SKIP_EMULATOR_TESTS=1");
            None
        }
        _ => panic!(
            "{var} is not set: emulator tests need the emulators that `bash scripts/test.sh` starts \
             (or set STEVEDORE_SKIP_EMULATOR_TESTS=1 to skip them)"
        ),
    }
}

/// SDK configuration for an emulator: fixed test credentials, no retries
/// (an emulator's 500 is a bug to see, not to retry).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "stevedore-tests",
        ))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .load()
        .await
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique within this test process and across runs against one emulator.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000;
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// A DynamoDB Local table with Stevedore's schema.
pub async fn run_store(ddb_endpoint: &str) -> DynamoDbRunStore {
    let sdk = sdk_config(ddb_endpoint).await;
    let store = DynamoDbRunStore::new(aws_sdk_dynamodb::Client::new(&sdk), unique("runs"));
    store
        .create_table()
        .await
        .expect("create table in DynamoDB Local");
    store
}

/// What moto needs for Fargate tasks: a cluster, a task definition and a network.
pub struct EcsFixture {
    pub sdk: SdkConfig,
    pub client: aws_sdk_ecs::Client,
    pub cluster: String,
    pub family: String,
    pub subnet: String,
    pub security_group: String,
    pub moto: String,
}

/// Registers a Fargate task definition of family `family` (container `app`).
pub async fn register_task_definition(client: &aws_sdk_ecs::Client, family: &str) {
    client
        .register_task_definition()
        .family(family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("1024")
        .memory("2048")
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image("111122223333.dkr.ecr.us-east-1.amazonaws.com/etl:1")
                // moto wants a memory setting on each container.
                .memory(2048)
                .essential(true)
                .log_configuration(
                    aws_sdk_ecs::types::LogConfiguration::builder()
                        .log_driver(aws_sdk_ecs::types::LogDriver::Awslogs)
                        .options("awslogs-group", JOB_LOG_GROUP)
                        .options("awslogs-region", REGION)
                        .options("awslogs-stream-prefix", "etl")
                        .build()
                        .expect("log configuration"),
                )
                .build(),
        )
        .send()
        .await
        .expect("register task definition");
}

impl EcsFixture {
    pub async fn new(moto: &str) -> EcsFixture {
        Self::with_family(moto, &unique("etl")).await
    }

    /// Registers one more task definition family in the fixture's account.
    pub async fn register(&self, family: &str) {
        register_task_definition(&self.client, family).await;
    }

    /// A fixture whose task definition family is `family`.
    pub async fn with_family(moto: &str, family: &str) -> EcsFixture {
        let sdk = sdk_config(moto).await;
        let client = aws_sdk_ecs::Client::new(&sdk);
        let cluster = unique("cluster");
        client
            .create_cluster()
            .cluster_name(&cluster)
            .send()
            .await
            .expect("create cluster");
        let family = family.to_string();
        register_task_definition(&client, &family).await;
        let net: Value = http()
            .post(format!("{moto}/moto-api/stevedore/network"))
            .json(&json!({"region": REGION}))
            .send()
            .await
            .expect("moto network")
            .json()
            .await
            .expect("moto network json");
        // Keep tasks RUNNING until a test stops them (moto advances a task
        // one status per DescribeTasks call by default).
        http()
            .post(format!("{moto}/moto-api/state-manager/set-transition"))
            .json(&json!({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000}}))
            .send()
            .await
            .expect("moto state manager");
        EcsFixture {
            sdk,
            client,
            cluster,
            family,
            subnet: net["subnet"].as_str().unwrap_or_default().to_string(),
            security_group: net["securityGroup"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            moto: moto.to_string(),
        }
    }

    pub fn runner(&self) -> EcsTaskRunner {
        EcsTaskRunner::new(
            self.client.clone(),
            EcsSettings {
                cluster: self.cluster.clone(),
                subnets: vec![self.subnet.clone()],
                security_groups: vec![self.security_group.clone()],
                assign_public_ip: false,
            },
        )
    }

    /// Makes moto report the task stopped, as ECS would (test extension).
    pub async fn stop_task(&self, task_arn: &str, body: Value) {
        let mut body = body;
        body["taskArn"] = json!(task_arn);
        let resp = http()
            .post(format!("{}/moto-api/stevedore/ecs/stop-task", self.moto))
            .json(&body)
            .send()
            .await
            .expect("moto stop-task");
        assert!(
            resp.status().is_success(),
            "moto stop-task: {}",
            resp.status()
        );
    }

    /// Writes `lines` to the task's log stream (`etl/app/<task id>` in
    /// [`JOB_LOG_GROUP`]), as the awslogs driver would.
    pub async fn write_job_log(&self, task_arn: &str, lines: &[String]) -> String {
        let logs = aws_sdk_cloudwatchlogs::Client::new(&self.sdk);
        let _ = logs
            .create_log_group()
            .log_group_name(JOB_LOG_GROUP)
            .send()
            .await;
        let stream = format!(
            "etl/app/{}",
            task_arn.rsplit('/').next().unwrap_or_default()
        );
        // A second write to the same task's stream appends to it.
        if let Err(e) = logs
            .create_log_stream()
            .log_group_name(JOB_LOG_GROUP)
            .log_stream_name(&stream)
            .send()
            .await
        {
            let exists = e
                .as_service_error()
                .is_some_and(|se| se.is_resource_already_exists_exception());
            assert!(exists, "create log stream: {e:?}");
        }
        let start = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        let events: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(start + i as i64)
                    .message(l)
                    .build()
                    .expect("log event")
            })
            .collect();
        logs.put_log_events()
            .log_group_name(JOB_LOG_GROUP)
            .log_stream_name(&stream)
            .set_log_events(Some(events))
            .send()
            .await
            .expect("put log events");
        stream
    }

    /// The raw DescribeTasks JSON of a task, as the SDK sees it.
    pub async fn describe(&self, task_arn: &str) -> aws_sdk_ecs::types::Task {
        let out = self
            .client
            .describe_tasks()
            .cluster(&self.cluster)
            .tasks(task_arn)
            .send()
            .await
            .expect("describe tasks");
        out.tasks().first().cloned().expect("task exists")
    }

    /// The "ECS Task State Change" event EventBridge would deliver for a task.
    pub async fn state_change_event(&self, task_arn: &str) -> Value {
        let task = stevedore_aws::ecs::describe(&self.describe(task_arn).await);
        json!({
            "version": "0",
            "id": unique("event"),
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "account": "123456789012",
            "region": REGION,
            "resources": [task_arn],
            "detail": serde_json::to_value(task).expect("task json"),
        })
    }
}

/// A topic with an SQS queue subscribed: what an alert subscriber receives.
pub struct AlertsFixture {
    pub notifier: Arc<SnsNotifier>,
    pub topic_arn: String,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl AlertsFixture {
    pub async fn new(moto: &str) -> AlertsFixture {
        let sdk = sdk_config(moto).await;
        let sns = aws_sdk_sns::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let topic = sns
            .create_topic()
            .name(unique("alerts"))
            .send()
            .await
            .expect("create topic");
        let topic_arn = topic.topic_arn().unwrap_or_default().to_string();
        let queue = sqs
            .create_queue()
            .queue_name(unique("alerts-q"))
            .send()
            .await
            .expect("create queue");
        let queue_url = queue.queue_url().unwrap_or_default().to_string();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes");
        let queue_arn = attrs
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .expect("subscribe");
        AlertsFixture {
            notifier: Arc::new(SnsNotifier::new(sns, topic_arn.clone())),
            topic_arn,
            sqs,
            queue_url,
        }
    }

    /// Every SNS envelope delivered to the queue so far.
    pub async fn received(&self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let resp = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive");
            let messages = resp.messages();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                out.push(
                    serde_json::from_str(m.body().unwrap_or("{}")).expect("SNS envelope JSON"),
                );
            }
        }
    }
}

/// Step Functions tokens through the real adapter (moto accepts the call),
/// recording what was sent so tests can assert on it: moto does not run the
/// waiting state, so it cannot tell us.
pub struct CapturingTokens {
    inner: SfnTaskTokens,
    pub sent: Mutex<Vec<(String, Value)>>,
}

impl CapturingTokens {
    pub async fn new(moto: &str) -> Arc<CapturingTokens> {
        let sdk = sdk_config(moto).await;
        Arc::new(CapturingTokens {
            inner: SfnTaskTokens::new(aws_sdk_sfn::Client::new(&sdk)),
            sent: Mutex::new(Vec::new()),
        })
    }

    pub fn sent(&self) -> Vec<(String, Value)> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl TaskTokens for CapturingTokens {
    async fn send_success(&self, token: &str, output: &Value) -> Result<TokenDelivery> {
        let delivery = self.inner.send_success(token, output).await?;
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((token.to_string(), output.clone()));
        Ok(delivery)
    }

    async fn send_failure(&self, token: &str, error: &str, cause: &str) -> Result<TokenDelivery> {
        let delivery = self.inner.send_failure(token, error, cause).await?;
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((token.to_string(), json!({"Error": error, "Cause": cause})));
        Ok(delivery)
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}
