//! The operator commands on a deployed stack (`--stack`), run as a user runs
//! them (the binary, the standard AWS SDK configuration) against the
//! emulators: CloudFormation, Step Functions, ECS and CloudWatch Logs in
//! moto server, the runs table in DynamoDB Local. moto answers with the
//! errors users meet on AWS (AccessDenied, throttling) when a test asks it
//! to (`tests/emulators/moto_server.py`); the rest are real conditions (no
//! credentials, another region, a closed port).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stevedore_aws::DynamoDbRunStore;
use stevedore_domain::cost::PriceTable;
use stevedore_domain::ports::{RunStore, SystemClock};
use stevedore_domain::run::RunRecord;
use stevedore_domain::{FailureClass, RunStatus};
use stevedore_integration_tests::contract::sample_run;
use stevedore_integration_tests::iam::{self, Call, Deployment, Policy, Recorder};
use stevedore_integration_tests::{emulator, run_store, sdk_config, unique, EcsFixture, REGION};
use time::OffsetDateTime;

use common::text;

/// A Stevedore stack in the emulators: a CloudFormation stack whose outputs
/// name a state machine (moto), a table (DynamoDB Local) and a cluster.
struct Deployed {
    moto: String,
    ddb: String,
    /// Where the CLI's requests go: the emulators, or recording proxies in
    /// front of them ([`Deployed::recorded`]).
    cli: (String, String),
    recorder: Recorder,
    name: String,
    table: DynamoDbRunStore,
    sfn: aws_sdk_sfn::Client,
    state_machine: String,
    ecs: EcsFixture,
    home: PathBuf,
}

const PASS_MACHINE: &str =
    r#"{"StartAt":"Wait","States":{"Wait":{"Type":"Wait","Seconds":3600,"End":true}}}"#;

async fn cfn_stack(moto: &str, name: &str, outputs: Value) {
    let template = json!({
        "Resources": {"Marker": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": outputs,
    });
    aws_sdk_cloudformation::Client::new(&sdk_config(moto).await)
        .create_stack()
        .stack_name(name)
        .template_body(template.to_string())
        .send()
        .await
        .expect("create stack in moto");
}

fn outputs(state_machine: &str, table: &str, cluster: &str) -> Value {
    json!({
        "StevedoreStack": {"Value": "1"},
        "StateMachineArn": {"Value": state_machine},
        "RunsTableName": {"Value": table},
        "ClusterArn": {"Value": cluster},
        "AlertsTopicArn": {"Value": format!("arn:aws:sns:{REGION}:123456789012:alerts")},
    })
}

impl Deployed {
    /// A stack whose state machine only waits (moto does not run it): for
    /// everything but following a real run.
    async fn new() -> Option<Deployed> {
        Self::on("STEVEDORE_TEST_MOTO").await
    }

    /// The same stack in the moto named by `var`.
    async fn on(var: &str) -> Option<Deployed> {
        let moto = emulator(var)?;
        let ddb = emulator("STEVEDORE_TEST_DYNAMODB")?;
        if var == "STEVEDORE_TEST_MOTO_SFN" {
            stevedore_integration_tests::moto_sfn::run_state_machines(&moto).await;
        }
        let table = run_store(&ddb).await;
        let sfn = aws_sdk_sfn::Client::new(&sdk_config(&moto).await);
        let state_machine = sfn
            .create_state_machine()
            .name(unique("run-job"))
            .definition(PASS_MACHINE)
            .role_arn("arn:aws:iam::123456789012:role/stevedore")
            .send()
            .await
            .expect("state machine")
            .state_machine_arn()
            .to_string();
        let ecs = EcsFixture::new(&moto).await;
        let name = unique("stevedore");
        let cluster = format!("arn:aws:ecs:{REGION}:123456789012:cluster/{}", ecs.cluster);
        cfn_stack(
            &moto,
            &name,
            outputs(&state_machine, table.table(), &cluster),
        )
        .await;
        let home = common::home(&name);
        Some(Deployed {
            cli: (moto.clone(), ddb.clone()),
            recorder: Recorder::new(),
            moto,
            ddb,
            name,
            table,
            sfn,
            state_machine,
            ecs,
            home,
        })
    }

    /// The same stack, with every request the CLI makes recorded on its way
    /// to the emulators (`self.recorder`).
    fn recorded(mut self) -> Deployed {
        self.cli = (
            self.recorder.proxy(&self.moto),
            self.recorder.proxy(&self.ddb),
        );
        self
    }

    /// `stevedore ARGS` with the stack and the emulators, as a user's shell
    /// would have them (no retries unless a test asks for them).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = common::command(&self.home, args);
        aws_env(&mut c, &self.home, &self.cli.0, &self.cli.1);
        c.env("STEVEDORE_STACK", &self.name);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run stevedore")
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stevedore")
    }

    fn spec(&self, job: &str) -> Value {
        json!({"job": job, "taskDefinition": self.ecs.family, "container": "app", "command": ["python", "-m", "etl"]})
    }

    fn spec_file(&self, spec: &Value) -> PathBuf {
        let path = self.home.join(format!("{}.json", unique("spec")));
        std::fs::write(&path, spec.to_string()).unwrap();
        path
    }

    /// An execution of the stack's state machine (RUNNING: it waits an hour).
    async fn execution(&self, input: &Value) -> String {
        self.sfn
            .start_execution()
            .state_machine_arn(&self.state_machine)
            .name(unique("exec"))
            .input(input.to_string())
            .send()
            .await
            .expect("start execution")
            .execution_arn()
            .to_string()
    }

    /// A run of that execution launched by the real launch-run handler: a
    /// task in moto's ECS, the record in the table.
    async fn launched(&self, job: &str) -> (String, RunRecord) {
        self.launched_with(self.spec(job)).await
    }

    /// The same for a spec of the caller's.
    async fn launched_with(&self, spec: Value) -> (String, RunRecord) {
        let arn = self.execution(&spec).await;
        let d = self
            .sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .unwrap();
        let start = OffsetDateTime::from_unix_timestamp(d.start_date().secs()).unwrap();
        let deps = launch_run::Deps {
            tasks: Arc::new(self.ecs.runner()),
            runs: Arc::new(run_store_of(&self.ddb, self.table.table()).await),
            clock: Arc::new(SystemClock),
            config: launch_run::Config::default(),
        };
        let out = launch_run::function_handler(
            &deps,
            json!({
                "spec": spec,
                "execution": {"id": arn, "name": d.name(), "startTime": stevedore_domain::task::format_time(start)},
                "attempt": 1,
            }),
        )
        .await
        .expect("launch-run");
        let run = self.table.get_run(&out.run_id).await.unwrap().unwrap();
        assert!(run.task_arn.is_some(), "{run:?}");
        (arn, run)
    }

    /// `stevedore rerun RUN`: what it printed, and the execution it started.
    async fn rerun(
        &self,
        run_id: &str,
    ) -> (
        String,
        aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput,
    ) {
        let out = self.run(&["rerun", run_id]);
        assert_eq!(code(&out), 0, "{}", both(&out));
        let stdout = text(&out.stdout);
        let arn = stdout
            .lines()
            .find_map(|l| l.strip_prefix("execution  "))
            .unwrap_or_else(|| panic!("{stdout}"));
        let new = self
            .sfn
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
            .unwrap();
        (stdout, new)
    }

    async fn fault(&self, body: Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/moto-api/stevedore/faults", self.moto))
            .json(&body)
            .send()
            .await
            .expect("fault");
        assert!(resp.status().is_success());
    }
}

async fn run_store_of(ddb: &str, table: &str) -> DynamoDbRunStore {
    DynamoDbRunStore::new(aws_sdk_dynamodb::Client::new(&sdk_config(ddb).await), table)
}

/// The standard SDK configuration pointed at the emulators; nothing read
/// from this machine's own AWS files or instance metadata.
fn aws_env(c: &mut Command, home: &Path, moto: &str, ddb: &str) {
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_DEFAULT_REGION",
        "STEVEDORE_STACK",
    ] {
        c.env_remove(var);
    }
    c.env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("no-aws-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", moto)
        .env("AWS_ENDPOINT_URL_DYNAMODB", ddb)
        .env("AWS_MAX_ATTEMPTS", "1");
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn both(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        code(out),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The command exited with `exit` and its standard error says each of `says`.
fn expect_exit(out: &Output, exit: i32, says: &[&str]) {
    assert_eq!(code(out), exit, "{}", both(out));
    for s in says {
        assert!(text(&out.stderr).contains(s), "`{s}` in {}", both(out));
    }
}

fn wait_for(child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("stevedore did not exit within {limit:?}:\n{}", both(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn runs_list_on_an_empty_table_says_there_are_no_runs() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let out = d.run(&["runs", "list"]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert!(
        text(&out.stdout).contains(&format!("no runs in stack `{}`", d.name)),
        "{}",
        both(&out)
    );
    let out = d.run(&["runs", "list", "--json"]);
    assert_eq!((code(&out), text(&out.stdout)), (0, String::new()));
}

/// Runs of ~4 KB each: 400 of them are 1.6 MB, past DynamoDB's 1 MB per response.
async fn seed(
    d: &Deployed,
    job: &str,
    n: usize,
    status: RunStatus,
    from: OffsetDateTime,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let created = from + time::Duration::seconds(i as i64);
        let mut run = sample_run(
            job,
            &format!(
                "arn:aws:states:{REGION}:123456789012:execution:run-job:{}",
                unique("e")
            ),
            1,
            created,
        );
        run.status = status;
        run.spec["environment"] = json!({"PADDING": "x".repeat(4000)});
        if status == RunStatus::Failed {
            run.outcome = Some(stevedore_domain::failure::Outcome::failed(
                FailureClass::ExitedNonZero,
                "exited 3",
                Some(3),
            ));
        }
        run.finished_at = Some(created + time::Duration::seconds(42));
        d.table.create_run(&run).await.expect("create run");
        ids.push(run.run_id);
    }
    ids
}

fn listed(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn runs_list_pages_past_one_megabyte_newest_first_across_jobs_and_months() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let now = OffsetDateTime::now_utc();
    let job = unique("orders");
    // Three failures first, then 400 successes (1.6 MB) after them.
    let failed = seed(
        &d,
        &job,
        3,
        RunStatus::Failed,
        now - time::Duration::hours(3),
    )
    .await;
    let succeeded = seed(
        &d,
        &job,
        400,
        RunStatus::Succeeded,
        now - time::Duration::hours(2),
    )
    .await;
    // Another job's run, 40 days ago: another month's partition.
    let other = unique("exports");
    let old = seed(
        &d,
        &other,
        1,
        RunStatus::Succeeded,
        now - time::Duration::days(40),
    )
    .await;

    let out = d.run(&["runs", "list", "--job", &job, "--limit", "1000", "--json"]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    let runs = listed(&out);
    let ids: Vec<&str> = runs.iter().map(|r| r["runId"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = failed
        .iter()
        .chain(&succeeded)
        .map(String::as_str)
        .collect();
    expected.reverse();
    assert_eq!(ids, expected, "every run of the job, newest first");

    // The failures are behind 1.6 MB of successes.
    let out = d.run(&[
        "runs", "list", "--job", &job, "--status", "FAILED", "--json",
    ]);
    let ids: Vec<String> = listed(&out)
        .iter()
        .map(|r| r["runId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        failed.iter().rev().cloned().collect::<Vec<_>>(),
        "{}",
        both(&out)
    );

    // Across jobs: the newest of all, then back through the months.
    let out = d.run(&["runs", "list", "--limit", "2", "--json"]);
    let ids: Vec<String> = listed(&out)
        .iter()
        .map(|r| r["runId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [succeeded[399].clone(), succeeded[398].clone()],
        "{}",
        both(&out)
    );
    // Back to the stack's creation, or --since: the run of 40 days ago
    // predates this test's stack, so only a window reaches it.
    let out = d.run(&[
        "runs",
        "list",
        "--status",
        "SUCCEEDED",
        "--limit",
        "1000",
        "--json",
    ]);
    assert_eq!(listed(&out).len(), 400, "{}", both(&out));
    let out = d.run(&[
        "runs",
        "list",
        "--status",
        "SUCCEEDED",
        "--since",
        "60d",
        "--limit",
        "1000",
        "--json",
    ]);
    let runs = listed(&out);
    assert_eq!(runs.len(), 401, "{}", both(&out));
    assert_eq!(
        runs[400]["runId"],
        json!(old[0]),
        "last month's run comes last"
    );
    let out = d.run(&["runs", "list", "--since", "30d", "--job", &other, "--json"]);
    assert!(listed(&out).is_empty(), "{}", both(&out));

    // The same numbers `runs stats` gives locally, from the stack's table.
    let out = d.run(&["runs", "stats", "--job", &job, "--since", "1d", "--json"]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    let stats = listed(&out);
    assert_eq!(stats.len(), 1, "{}", both(&out));
    assert_eq!(
        (
            &stats[0]["runs"],
            &stats[0]["succeeded"],
            &stats[0]["failed"]
        ),
        (&json!(403), &json!(400), &json!(3)),
        "{}",
        both(&out)
    );
    assert_eq!(stats[0]["p50Seconds"], json!(42));
    assert_eq!(stats[0]["lastFailure"]["runId"], json!(failed[2]));

    // The table a person reads.
    let out = d.run(&["runs", "list", "--job", &job, "--status", "FAILED"]);
    let table = text(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "RUN",
        "JOB",
        "STATUS",
        "STARTED (UTC)",
        "DURATION",
        "EXIT",
        "COST",
        "ERROR",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("FAILED") && row.contains("42s") && row.contains("ExitedNonZero"),
        "{table}"
    );
}

#[tokio::test]
async fn runs_show_has_the_record_history_links_and_log_tail() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let (execution, run) = d.launched(&unique("orders")).await;
    let task = run.task_arn.clone().unwrap();
    let lines: Vec<String> = (1..=30).map(|i| format!("loading batch {i}")).collect();
    d.ecs.write_job_log(&task, &lines).await;
    let out = d.run(&["runs", "show", &run.run_id]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("run        {}", run.run_id)),
        "{shown}"
    );
    assert!(
        shown.contains("status     RUNNING (attempt 1 of at most"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("execution history ({execution})")),
        "{shown}"
    );
    assert!(shown.contains("ExecutionStarted"), "{shown}");
    assert!(
        shown.contains(&format!("https://{REGION}.console.aws.amazon.com/states/")),
        "{shown}"
    );
    assert!(
        shown.contains("loading batch 30") && !shown.contains("loading batch 10\n"),
        "the last 20 lines: {shown}"
    );
    let out = d.run(&["runs", "show", &run.run_id, "--json"]);
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", both(&out)));
    assert_eq!(v["run"]["runId"], json!(run.run_id));
    assert_eq!(v["execution"]["status"], json!("RUNNING"));
    assert_eq!(v["log"]["lines"].as_array().map(Vec::len), Some(20));
    assert!(
        v["links"]["task"]
            .as_str()
            .is_some_and(|u| u.contains("/ecs/")),
        "{v:#}"
    );

    let out = d.run(&["runs", "show", "no-such-run"]);
    expect_exit(&out, 2, &["no run `no-such-run`"]);
}

#[tokio::test]
async fn logs_prints_the_stream_and_says_when_there_is_none() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let (_, run) = d.launched(&unique("orders")).await;
    // The container has not written a line: the stream does not exist.
    let out = d.run(&["logs", &run.run_id]);
    expect_exit(&out, 1, &["does not exist (yet)"]);

    let lines: Vec<String> = (1..=5).map(|i| format!("line {i}")).collect();
    d.ecs
        .write_job_log(run.task_arn.as_deref().unwrap(), &lines)
        .await;
    let out = d.run(&["logs", &run.run_id]);
    assert_eq!(
        (code(&out), text(&out.stdout)),
        (0, lines.join("\n") + "\n"),
        "{}",
        both(&out)
    );
    let out = d.run(&["logs", &run.run_id, "--tail", "2"]);
    assert_eq!(text(&out.stdout), "line 4\nline 5\n", "{}", both(&out));
}

#[tokio::test]
async fn logs_follow_prints_new_lines_until_the_run_ends() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let (_, run) = d.launched(&unique("orders")).await;
    let task = run.task_arn.clone().unwrap();
    let child = d.spawn(&["logs", &run.run_id, "--follow", "--poll", "0.1"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.ecs.write_job_log(&task, &["first".to_string()]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.ecs.write_job_log(&task, &["second".to_string()]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let change = stevedore_domain::run::RunChange::to(RunStatus::Failed);
    d.table
        .change_run(&run.run_id, &change)
        .await
        .expect("end the run");
    let out = wait_for(child, Duration::from_secs(20));
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert_eq!(text(&out.stdout), "first\nsecond\n", "{}", both(&out));
    assert!(
        text(&out.stderr).contains("waiting"),
        "it said it waits for the stream: {}",
        both(&out)
    );
}

#[tokio::test]
async fn start_checks_the_spec_first_then_starts_and_refuses_a_used_name() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let bad = d.spec_file(&json!({"job": "Bad Name", "taskDefinition": "etl"}));
    let out = d.run(&["start", bad.to_str().unwrap()]);
    expect_exit(&out, 2, &["InvalidJobSpec"]);
    let executions = || async {
        d.sfn
            .list_executions()
            .state_machine_arn(&d.state_machine)
            .send()
            .await
            .unwrap()
            .executions()
            .len()
    };
    assert_eq!(executions().await, 0, "nothing was sent");

    let spec = d.spec("orders_ingest");
    let file = d.spec_file(&spec);
    let name = unique("orders");
    let out = d.run(&["start", file.to_str().unwrap(), "--name", &name]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    let stdout = text(&out.stdout);
    let arn = stdout
        .lines()
        .find_map(|l| l.strip_prefix("execution  "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    let started = d
        .sfn
        .describe_execution()
        .execution_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(started.name(), Some(name.as_str()));
    assert_eq!(
        serde_json::from_str::<Value>(started.input().unwrap()).unwrap(),
        spec
    );

    // The same name and input while it runs: Step Functions returns the
    // same execution (StartExecution is idempotent); another input is refused.
    let again = d.run(&["start", file.to_str().unwrap(), "--name", &name]);
    assert_eq!(code(&again), 0, "{}", both(&again));
    assert!(
        text(&again.stdout).contains(&format!("execution  {arn}\n")),
        "{}",
        both(&again)
    );
    let other = d.spec_file(&d.spec("orders_other"));
    let out = d.run(&["start", other.to_str().unwrap(), "--name", &name]);
    expect_exit(&out, 2, &["already exists"]);
    let out = d.run(&["start", file.to_str().unwrap(), "--name", "has space"]);
    assert_eq!(code(&out), 2, "{}", both(&out));

    // Without a name: <job>-<UTC time>-<salt>, and two starts differ.
    let a = d.run(&["start", file.to_str().unwrap()]);
    let b = d.run(&["start", file.to_str().unwrap()]);
    assert_eq!((code(&a), code(&b)), (0, 0), "{}{}", both(&a), both(&b));
    assert!(text(&a.stdout).contains("started    orders_ingest-"));
    assert_ne!(text(&a.stdout), text(&b.stdout));
    assert_eq!(executions().await, 3, "the idempotent start added none");

    // --logical-time sets the spec's logicalTime.
    let out = d.run(&[
        "start",
        file.to_str().unwrap(),
        "--logical-time",
        "2026-11-03",
    ]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    let arn = text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("execution  ").map(str::to_string))
        .unwrap();
    let started = d
        .sfn
        .describe_execution()
        .execution_arn(&arn)
        .send()
        .await
        .unwrap();
    let input: Value = serde_json::from_str(started.input().unwrap()).unwrap();
    assert_eq!(input["logicalTime"], json!("2026-11-03T00:00:00Z"));
}

#[tokio::test]
async fn rerun_starts_the_same_input_again() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let (execution, run) = d.launched(&unique("orders")).await;
    let (stdout, new) = d.rerun(&run.run_id).await;
    assert_ne!(new.execution_arn(), execution);
    let old = d
        .sfn
        .describe_execution()
        .execution_arn(&execution)
        .send()
        .await
        .unwrap();
    // The execution's own input, as given, with the run's logical time (the
    // old execution's start): the rerun processes the same interval.
    let mut expected: Value = serde_json::from_str(old.input().unwrap()).unwrap();
    expected["logicalTime"] = json!(stevedore_domain::task::format_time(
        run.logical_time.expect("launch-run recorded it")
    ));
    let given: Value = serde_json::from_str(new.input().unwrap()).unwrap();
    assert_eq!(given, expected);
    assert!(
        new.name()
            .unwrap()
            .starts_with(&format!("{}-rerun-", old.name().unwrap())),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_rerun_of_a_scheduled_run_is_not_the_schedules_second_start() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let mut spec = d.spec(&unique("orders"));
    spec["logicalTime"] = json!("2026-11-24T06:00:00Z");
    spec["scheduledTime"] = json!("2026-11-24T06:00:00Z");
    let (_, run) = d.launched_with(spec).await;
    let (_, new) = d.rerun(&run.run_id).await;
    let given: Value = serde_json::from_str(new.input().unwrap()).unwrap();
    // launch-run would skip it as a second start of 06:00's schedule.
    assert_eq!(given.get("scheduledTime"), None, "{given}");
    assert_eq!(given["logicalTime"], json!("2026-11-24T06:00:00Z"));
}

#[tokio::test]
async fn stop_stops_the_execution_and_waits_until_the_reaper_cancels_the_run() {
    // The moto that runs state machines keeps StopExecution's cause.
    let Some(d) = Deployed::on("STEVEDORE_TEST_MOTO_SFN").await else {
        return;
    };
    let (execution, run) = d.launched(&unique("orders")).await;
    let child = d.spawn(&[
        "stop",
        &run.run_id,
        "--reason",
        "wrong input",
        "--poll",
        "0.1",
    ]);
    // The stack's EventBridge rule would hand the ABORTED event to
    // reap-execution; EventBridge does not fire in moto, so the test does.
    let mut aborted = None;
    for _ in 0..200 {
        let d = d
            .sfn
            .describe_execution()
            .execution_arn(&execution)
            .send()
            .await
            .unwrap();
        if d.status().as_str() == "ABORTED" {
            aborted = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let aborted = aborted.expect("stevedore stop called StopExecution");
    // What the CLI asked for (moto does not keep StopExecution's cause; AWS
    // puts it in the execution and its ABORTED event).
    let sent: Vec<String> = reqwest::Client::new()
        .post(format!("{}/moto-api/stevedore/requests", d.moto))
        .json(&json!({"action": "StopExecution"}))
        .send()
        .await
        .expect("requests")
        .json()
        .await
        .expect("requests JSON");
    let sent: Value = sent
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .find(|b| b["executionArn"] == json!(execution))
        .expect("the StopExecution request");
    assert_eq!(sent["error"], json!("StoppedByUser"));
    assert_eq!(sent["cause"], json!("wrong input"));
    let deps = reap_execution::Deps {
        tasks: Arc::new(d.ecs.runner()),
        runs: Arc::new(run_store_of(&d.ddb, d.table.table()).await),
        clock: Arc::new(SystemClock),
        prices: PriceTable::builtin(),
        region: REGION.into(),
    };
    let event = json!({
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "detail": {"executionArn": execution, "status": "ABORTED", "input": aborted.input(), "cause": sent["cause"]},
    });
    reap_execution::function_handler(&deps, event)
        .await
        .expect("reap-execution");
    let out = wait_for(child, Duration::from_secs(30));
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert!(
        text(&out.stdout).contains(&format!("cancelled  {}", run.run_id)),
        "{}",
        both(&out)
    );
    let after = d.table.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(after.status, RunStatus::Cancelled);
    let outcome = after.outcome.clone().expect("an outcome");
    assert!(
        outcome.message.contains("wrong input"),
        "{outcome:?} from {aborted:?}"
    );
    let task = d.ecs.describe(run.task_arn.as_deref().unwrap()).await;
    assert_eq!(
        task.desired_status(),
        Some("STOPPED"),
        "the reaper stopped the task"
    );

    // Stopping it again: nothing to stop.
    let out = d.run(&["stop", &run.run_id]);
    expect_exit(&out, 1, &["already ended (ABORTED)"]);
}

#[tokio::test]
async fn stop_says_why_when_the_run_is_never_cancelled() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let (_, run) = d.launched(&unique("orders")).await;
    // No reaper: the run stays RUNNING.
    let out = d.run(&["stop", &run.run_id, "--wait", "1s", "--poll", "0.1"]);
    expect_exit(&out, 1, &["reap-execution"]);
}

/// README's operator policy ("The permissions these commands need"), its
/// example names (stack `stevedore` in eu-west-1, `<RunsTableName>`, ...)
/// replaced by this stack's; and what the permission check must know of
/// the deployment. The log group stays: the fixture's task definitions
/// log to the example stack's `/stevedore/stevedore/jobs/it`.
fn operator_policy(stack: &str, state_machine: &str, table: &str) -> (Value, Deployment) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split_once("**The permissions these commands need**")
        .expect("README's operator policy")
        .1;
    let block = section
        .split_once("```json\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the policy's json block")
        .0;
    let machine = state_machine.rsplit(':').next().unwrap_or_default();
    let key = format!("arn:aws:kms:{REGION}:123456789012:key/4f1c2d7e-runs");
    let text = block
        .replace("eu-west-1", REGION)
        .replace("stack/stevedore/", &format!("stack/{stack}/"))
        .replace("stevedore-run-job", machine)
        .replace("<RunsTableName>", table)
        .replace("<RunsTableKeyArn>", &key);
    let doc = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("README's operator policy is not JSON ({e}):\n{text}"));
    let deployment = Deployment {
        key_arn: key,
        state_machine_arn: state_machine.to_string(),
        task_roles: Vec::new(),
    };
    (doc, deployment)
}

/// The policy `doc` without its statement `sid`.
fn without(doc: &Value, sid: Option<&str>) -> Policy {
    let mut doc = doc.clone();
    if let Some(statements) = doc["Statement"].as_array_mut() {
        statements.retain(|s| s["Sid"].as_str() != sid);
    }
    Policy::from_documents(&[doc]).expect("an IAM policy the check evaluates")
}

#[tokio::test]
async fn the_readme_operator_policy_allows_every_call_the_commands_make_and_no_action_is_spare() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let d = d.recorded();
    let job = unique("orders");
    let (_, run) = d.launched(&job).await;
    let task = run.task_arn.clone().unwrap();
    d.ecs.write_job_log(&task, &["line 1".to_string()]).await;
    let id = run.run_id.as_str();
    for args in [
        &["runs", "list"][..],
        &[
            "runs", "list", "--job", &job, "--status", "RUNNING", "--since", "1d",
        ],
        &["runs", "show", id],
        &["runs", "stats", "--job", &job],
        &["logs", id, "--tail", "1"],
    ] {
        let out = d.run(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", both(&out));
    }
    let reading: Vec<Call> = d.recorder.calls();
    let spec = d.spec_file(&d.spec(&job));
    let out = d.run(&["start", spec.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", both(&out));
    d.rerun(id).await;
    let out = d.run(&["stop", id, "--wait", "1s", "--poll", "0.1"]);
    expect_exit(&out, 1, &["reap-execution"]);
    let all = d.recorder.calls();

    let (doc, deployment) = operator_policy(&d.name, &d.state_machine, d.table.table());
    let denied = iam::denied(&without(&doc, None), &all, &deployment);
    assert!(
        denied.is_empty(),
        "README's operator policy lacks: {denied:#?}"
    );
    // Reading needs every statement but `Operate`, as the README says.
    let denied = iam::denied(&without(&doc, Some("Operate")), &reading, &deployment);
    assert!(denied.is_empty(), "reading without `Operate`: {denied:#?}");
    let denied = iam::denied(&without(&doc, Some("Operate")), &all, &deployment);
    assert!(
        denied.iter().any(|d| d.contains("states:StartExecution"))
            && denied.iter().any(|d| d.contains("states:StopExecution")),
        "start, rerun and stop need `Operate`: {denied:#?}"
    );
    // Each action of each statement is one some command needs: leave it out
    // and a call is denied.
    let statements = doc["Statement"].as_array().cloned().unwrap_or_default();
    assert!(statements.len() >= 7, "{doc:#}");
    for (i, statement) in statements.iter().enumerate() {
        let actions = match &statement["Action"] {
            Value::String(a) => vec![a.clone()],
            other => other
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from))
                .collect(),
        };
        for action in actions {
            let mut less = doc.clone();
            let kept: Vec<Value> = match &statement["Action"] {
                Value::Array(all) => all
                    .iter()
                    .filter(|a| a.as_str() != Some(action.as_str()))
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            less["Statement"][i]["Action"] = Value::Array(kept);
            let sid = statement["Sid"].as_str().unwrap_or_default();
            assert!(
                !iam::denied(&without(&less, None), &all, &deployment).is_empty(),
                "no command needs `{action}` of README's statement `{sid}`"
            );
        }
    }
    assert_eq!(
        iam::operations(&all),
        [
            "cloudformation:DescribeStacks",
            "dynamodb:GetItem",
            "dynamodb:Query",
            "ecs:DescribeTaskDefinition",
            "logs:GetLogEvents",
            "states:DescribeExecution",
            "states:GetExecutionHistory",
            "states:StartExecution",
            "states:StopExecution",
        ],
        "the operations the commands made (a new one needs README's policy and iam.rs's needs)"
    );
}

#[tokio::test]
async fn errors_name_the_fix() {
    let Some(d) = Deployed::new().await else {
        return;
    };
    let check = |out: Output, exit: i32, says: &[&str]| expect_exit(&out, exit, says);
    // No credentials anywhere.
    let out = d
        .command(&["runs", "list"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    check(out, 3, &["NoCredentials", "AWS_PROFILE"]);
    // No region.
    let out = d
        .command(&["runs", "list"])
        .env_remove("AWS_REGION")
        .output()
        .unwrap();
    check(out, 2, &["NoRegion", "--region"]);
    // The stack is in another region.
    check(
        d.run(&["runs", "list", "--region", "eu-west-1"]),
        2,
        &["StackNotFound", "eu-west-1"],
    );
    check(
        d.run(&["runs", "list", "--stack", "no-such-stack"]),
        2,
        &["StackNotFound", "no-such-stack"],
    );
    // A stack that is not Stevedore's.
    let foreign = unique("website");
    cfn_stack(&d.moto, &foreign, json!({"BucketName": {"Value": "site"}})).await;
    check(
        d.run(&["runs", "list", "--stack", &foreign]),
        2,
        &["NotStevedoreStack"],
    );
    // Access denied: the action is named.
    d.fault(json!({"action": "DescribeStacks", "code": "AccessDenied", "status": 403, "message": "User: arn:aws:iam::123456789012:user/ana is not authorized to perform: cloudformation:DescribeStacks", "match": d.name})).await;
    check(
        d.run(&["runs", "list"]),
        3,
        &["AccessDenied", "cloudformation:DescribeStacks", "Operate"],
    );
    let file = d.spec_file(&d.spec("orders"));
    let name = unique("denied");
    d.fault(json!({"action": "StartExecution", "code": "AccessDeniedException", "message": "not authorized", "match": name})).await;
    check(
        d.run(&["start", file.to_str().unwrap(), "--name", &name]),
        3,
        &["AccessDenied", "states:StartExecution"],
    );
    // Throttling is retried...
    d.fault(json!({"action": "DescribeStacks", "code": "Throttling", "message": "Rate exceeded", "times": 2, "match": d.name})).await;
    let out = d
        .command(&["runs", "list"])
        .env("AWS_MAX_ATTEMPTS", "3")
        .output()
        .unwrap();
    assert_eq!(
        code(&out),
        0,
        "retried past two throttled answers: {}",
        both(&out)
    );
    // ...until the attempts run out.
    d.fault(json!({"action": "DescribeStacks", "code": "Throttling", "message": "Rate exceeded", "times": 2, "match": d.name})).await;
    let out = d
        .command(&["runs", "list"])
        .env("AWS_MAX_ATTEMPTS", "2")
        .output()
        .unwrap();
    check(out, 3, &["Throttled", "cloudformation:DescribeStacks"]);
    // Nothing listening.
    let out = d
        .command(&["runs", "list"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    check(out, 3, &["Unreachable"]);
    // Commands that only exist for a stack say so without one.
    let out = common::stevedore(&d.home, &["stop", "some-run"]);
    assert_eq!(code(&out), 2, "{}", both(&out));
    assert!(text(&out.stderr).contains("--stack"), "{}", both(&out));
}

/// run-job with the real functions in moto's Step Functions
/// (`moto_sfn::Stack`), and a CloudFormation stack whose outputs name it:
/// what `stevedore --stack` operates.
struct RealStack {
    /// Recording proxies in front of moto and DynamoDB Local: every request
    /// the CLI makes is in `recorder`.
    moto: String,
    ddb: String,
    recorder: Recorder,
    name: String,
    home: PathBuf,
    state_machine: String,
    table: String,
}

impl RealStack {
    async fn new() -> Option<(stevedore_integration_tests::moto_sfn::Stack, RealStack)> {
        let s = stevedore_integration_tests::moto_sfn::stack().await?;
        let moto = emulator("STEVEDORE_TEST_MOTO_SFN")?;
        let ddb = emulator("STEVEDORE_TEST_DYNAMODB")?;
        let name = unique("stevedore");
        let cluster = format!(
            "arn:aws:ecs:{REGION}:123456789012:cluster/{}",
            s.ecs.cluster
        );
        cfn_stack(
            &moto,
            &name,
            outputs(&s.state_machine, s.runs.table(), &cluster),
        )
        .await;
        let home = common::home(&name);
        let recorder = Recorder::new();
        let cli = RealStack {
            moto: recorder.proxy(&moto),
            ddb: recorder.proxy(&ddb),
            recorder,
            name,
            home,
            state_machine: s.state_machine.clone(),
            table: s.runs.table().to_string(),
        };
        Some((s, cli))
    }

    /// `stevedore ARGS` on this stack, its output captured.
    fn spawn(&self, args: &[&str]) -> Child {
        let mut c = common::command(&self.home, args);
        aws_env(&mut c, &self.home, &self.moto, &self.ddb);
        c.env("STEVEDORE_STACK", &self.name)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stevedore")
    }

    /// Every request the CLI made is one README's operator policy allows.
    fn within_the_operator_policy(&self) {
        let calls = self.recorder.calls();
        assert!(!calls.is_empty(), "the proxies recorded the CLI's requests");
        let (doc, d) = operator_policy(&self.name, &self.state_machine, &self.table);
        let denied = iam::denied(&without(&doc, None), &calls, &d);
        assert!(
            denied.is_empty(),
            "README's operator policy lacks: {denied:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_follow_shows_the_steps_and_the_summary_of_a_real_run() {
    let Some((s, cli)) = RealStack::new().await else {
        return;
    };
    let spec = s.spec(json!({}));
    let file = cli.home.join("job.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let child = cli.spawn(&["start", file.to_str().unwrap(), "--follow", "--poll", "0.2"]);
    let task = s.next_task(&[]).await;
    s.task_stops(
        &task,
        json!({"exitCode": 0, "runSeconds": 30, "cpu": "1024", "memory": "2048"}),
    )
    .await;
    let out = wait_for(child, Duration::from_secs(60));
    assert_eq!(code(&out), 0, "{}", both(&out));
    let stdout = text(&out.stdout);
    for step in [
        "▸ Launch task",
        "▸ Wait for task",
        "▸ Record run",
        "✔ execution succeeded",
        "status     SUCCEEDED",
        "exit code  0",
        "cost       $",
    ] {
        assert!(stdout.contains(step), "`{step}` in {stdout}");
    }
    assert!(
        stdout.contains(&format!("--stack {}", cli.name)),
        "the log command: {stdout}"
    );
    cli.within_the_operator_policy();
}

/// Plays ECS for a backfill on the moto stack until `child` exits: each
/// task runs ~0.3 s, then stops with exit 3 if it loads `fail_date`, else
/// 0 (delivered to task-events as EventBridge would). Returns the output and
/// the most tasks and RUNNING executions seen at once.
async fn play_ecs(
    s: &stevedore_integration_tests::moto_sfn::Stack,
    mut child: Child,
    fail_date: Option<&str>,
) -> (Output, usize, usize) {
    let mut seen: Vec<(String, Instant)> = Vec::new();
    let mut stopped: Vec<String> = Vec::new();
    let (mut most_tasks, mut most_executions) = (0, 0);
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the backfill did not end in 240 s"
        );
        let listed = s
            .ecs
            .client
            .list_tasks()
            .cluster(&s.ecs.cluster)
            .send()
            .await
            .unwrap();
        for arn in listed.task_arns() {
            if !seen.iter().any(|(a, _)| a == arn) {
                seen.push((arn.clone(), Instant::now()));
            }
        }
        let running = seen.iter().filter(|(a, _)| !stopped.contains(a)).count();
        most_tasks = most_tasks.max(running);
        let executions = s
            .sfn
            .list_executions()
            .state_machine_arn(&s.state_machine)
            .status_filter(aws_sdk_sfn::types::ExecutionStatus::Running)
            .send()
            .await
            .unwrap()
            .executions()
            .len();
        most_executions = most_executions.max(executions);
        for (arn, since) in seen.clone() {
            if stopped.contains(&arn) || since.elapsed() < Duration::from_millis(300) {
                continue;
            }
            let task = s.ecs.describe(&arn).await;
            let date = task
                .overrides()
                .into_iter()
                .flat_map(|o| o.container_overrides())
                .flat_map(|c| c.environment())
                .find(|kv| kv.name() == Some("STEVEDORE_LOGICAL_DATE"))
                .and_then(|kv| kv.value())
                .unwrap_or_else(|| panic!("task {arn} has no STEVEDORE_LOGICAL_DATE"))
                .to_string();
            let exit = if Some(date.as_str()) == fail_date {
                3
            } else {
                0
            };
            s.task_stops(
                &arn,
                json!({"exitCode": exit, "runSeconds": 60, "cpu": "256", "memory": "512"}),
            )
            .await;
            stopped.push(arn);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (
        child.wait_with_output().unwrap(),
        most_tasks,
        most_executions,
    )
}

/// The names of the stack's executions.
async fn execution_names(s: &stevedore_integration_tests::moto_sfn::Stack) -> Vec<String> {
    s.sfn
        .list_executions()
        .state_machine_arn(&s.state_machine)
        .max_results(1000)
        .send()
        .await
        .unwrap()
        .executions()
        .iter()
        .map(|e| e.name().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_on_a_stack_runs_30_days_3_at_a_time_and_its_rerun_skips_what_succeeded() {
    let Some((s, cli)) = RealStack::new().await else {
        return;
    };
    let spec =
        s.spec(json!({"concurrency": {"max": 3}, "command": ["load", "--day", "${logicalDate}"]}));
    let job = spec["job"].as_str().unwrap().to_string();
    let file = cli.home.join("job.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let f = file.to_str().unwrap();
    let backfill = || {
        cli.spawn(&[
            "backfill",
            f,
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
            "--max-parallel",
            "3",
            "--poll",
            "0.2",
        ])
    };

    let (out, most_tasks, most_executions) = play_ecs(&s, backfill(), Some("2026-11-13")).await;
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 1, "{}", both(&out));
    assert!(
        stdout.contains("29 succeeded, 1 did not, 0 skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "--at 2026-11-13T00:00:00Z --max-parallel 3 --stack {}",
            cli.name
        )),
        "{stdout}"
    );
    assert!(
        most_executions <= 3 && most_tasks <= 3,
        "never more than 3 at once: {most_executions} executions, {most_tasks} tasks"
    );
    assert!(most_tasks >= 2, "runs did overlap: {most_tasks}");
    let names = execution_names(&s).await;
    assert_eq!(names.len(), 30, "{names:?}");
    assert!(
        names.contains(&format!("{job}-20261101T000000")),
        "{names:?}"
    );
    // The placeholder was filled in the task's command.
    let executions = s.state_machine.replacen(":stateMachine:", ":execution:", 1);
    let run = s
        .runs_of(&format!("{executions}:{job}-20261105T000000"))
        .await;
    assert_eq!(run.len(), 1);
    assert_eq!(
        run[0]
            .logical_time
            .map(stevedore_domain::logical::format_logical)
            .as_deref(),
        Some("2026-11-05T00:00:00Z")
    );
    let task = s.ecs.describe(run[0].task_arn.as_deref().unwrap()).await;
    let command: Vec<String> = task.overrides().unwrap().container_overrides()[0]
        .command()
        .to_vec();
    assert_eq!(command, ["load", "--day", "2026-11-05"]);

    // Again: only the 13th runs, under the next name, and succeeds.
    let (out, _, _) = play_ecs(&s, backfill(), None).await;
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{}", both(&out));
    assert!(
        stdout.contains("1 succeeded, 0 did not, 29 skipped"),
        "{stdout}"
    );
    let names = execution_names(&s).await;
    assert_eq!(names.len(), 31, "{names:?}");
    assert!(
        names.contains(&format!("{job}-20261113T000000-2")),
        "{names:?}"
    );
    cli.within_the_operator_policy();
}
