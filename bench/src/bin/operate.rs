//! `stevedore-bench-operate --cli PATH [--runs N] [--repeat N]`: how long
//! `stevedore runs list --stack S` takes on a table of N runs in DynamoDB
//! Local (the stack's outputs in moto server): the whole command as a user
//! runs it — process start, DescribeStacks, the queries, the table printed.
//! Needs `STEVEDORE_TEST_DYNAMODB` and `STEVEDORE_TEST_MOTO` (what
//! `start_emulators` in scripts/lib.sh exports).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use serde_json::json;
use stevedore_aws::dynamodb::{ListingCost, RunListing};
use stevedore_aws::DynamoDbRunStore;
use stevedore_domain::cost::CostEstimate;
use stevedore_domain::failure::Outcome;
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::{ExecutionRef, RunRecord};
use stevedore_domain::spec::{Capacity, JobSpec};
use stevedore_domain::{FailureClass, RunStatus};
use time::OffsetDateTime;

const JOBS: usize = 20;

async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Run `i` of `n`: spread over the last 30 days and 20 jobs, one in 19
/// failed; a record the size of a real one (~1.5 KB).
fn run(i: usize, n: usize, now: OffsetDateTime) -> RunRecord {
    let job = format!("job_{:02}", i % JOBS);
    let spec = JobSpec::from_value(&json!({
        "job": job, "taskDefinition": "etl:12", "container": "app",
        "command": ["python", "-m", "pipelines.load", "--date", "2026-11-01"],
        "environment": {"TARGET_SCHEMA": "raw", "BATCH_SIZE": "5000", "SOURCE": "s3://bucket/prefix/"},
    }))
    .expect("spec");
    let created = now - time::Duration::seconds(((n - i) as i64) * 30 * 86_400 / n as i64);
    let execution = ExecutionRef {
        id: format!("arn:aws:states:us-east-1:123456789012:execution:stevedore-run-job:{job}-{i}"),
        name: format!("{job}-{i}"),
        start_time: created,
    };
    let failed = i % 19 == 7; // 1 in 19: in every job (20 jobs)
    RunRecord {
        run_id: stevedore_domain::run::run_id(&job, &execution, 1),
        job: job.clone(),
        execution,
        attempt: 1,
        max_attempts: 3,
        status: if failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        },
        spec: spec.to_value(),
        capacity: Capacity::OnDemand,
        created_at: created,
        deadline: created + time::Duration::hours(1),
        task_arn: Some(format!(
            "arn:aws:ecs:us-east-1:123456789012:task/data/{i:032x}"
        )),
        launched_at: Some(created + time::Duration::seconds(2)),
        task_token: None,
        stop_request: None,
        task: None,
        outcome: Some(if failed {
            Outcome::failed(
                FailureClass::ExitedNonZero,
                "container `app` exited 3",
                Some(3),
            )
        } else {
            Outcome::succeeded("container `app` exited 0")
        }),
        cost: Some(CostEstimate {
            usd: 0.0042,
            billed_seconds: 300,
            vcpu: 1.0,
            memory_gb: 2.0,
            spot: false,
            architecture: "arm64".into(),
            region: "us-east-1".into(),
        }),
        finished_at: Some(created + time::Duration::seconds(300)),
        expires_at: (created + time::Duration::days(400)).unix_timestamp(),
        logical_time: None,
        notes: Vec::new(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let cli = opt("--cli").expect("--cli PATH (the stevedore binary, built with the aws feature)");
    let n: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let repeat: usize = opt("--repeat").and_then(|v| v.parse().ok()).unwrap_or(20);
    let ddb = std::env::var("STEVEDORE_TEST_DYNAMODB").expect("STEVEDORE_TEST_DYNAMODB");
    let moto = std::env::var("STEVEDORE_TEST_MOTO").expect("STEVEDORE_TEST_MOTO");
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    let table = format!("bench-runs-{stamp}");
    let store = Arc::new(DynamoDbRunStore::new(
        aws_sdk_dynamodb::Client::new(&sdk(&ddb).await),
        &table,
    ));
    store.create_table().await.expect("create table");
    let now = OffsetDateTime::now_utc();
    let seeding = Instant::now();
    let mut pending = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(n.div_ceil(16).max(1)) {
        let store = store.clone();
        let chunk = chunk.to_vec();
        pending.push(tokio::spawn(async move {
            for i in chunk {
                store.create_run(&run(i, n, now)).await.expect("create run");
            }
        }));
    }
    for p in pending {
        p.await.expect("seed");
    }
    eprintln!(
        "seeded {n} runs in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let stack = format!("bench-{stamp}");
    let template = json!({
        "Resources": {"Marker": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {
            "StevedoreStack": {"Value": "1"},
            "StateMachineArn": {"Value": "arn:aws:states:us-east-1:123456789012:stateMachine:bench"},
            "RunsTableName": {"Value": table},
        },
    });
    aws_sdk_cloudformation::Client::new(&sdk(&moto).await)
        .create_stack()
        .stack_name(&stack)
        .template_body(template.to_string())
        .send()
        .await
        .expect("create stack");
    eprintln!("stack {stack}, table {table}");
    // The stack was created now; the runs go back 30 days: a window reaches them all.
    let cases: [(&str, Vec<&str>, RunListing); 4] = [
        (
            "newest 20, every job",
            vec!["runs", "list", "--since", "31d"],
            listing(None, None, now),
        ),
        (
            "newest 20 of one job",
            vec!["runs", "list", "--since", "31d", "--job", "job_07"],
            listing(Some("job_07"), None, now),
        ),
        (
            "newest 20 FAILED, every job",
            vec!["runs", "list", "--since", "31d", "--status", "FAILED"],
            listing(None, Some(RunStatus::Failed), now),
        ),
        (
            "newest 20 FAILED of one job",
            vec![
                "runs", "list", "--since", "31d", "--job", "job_03", "--status", "FAILED",
            ],
            listing(Some("job_03"), Some(RunStatus::Failed), now),
        ),
    ];
    println!("`stevedore runs list --stack S` on {n} runs ({JOBS} jobs, 30 days, 1 in 19 failed), DynamoDB Local; {repeat} runs of the command each:\n");
    println!("| listing | median | p95 | max | queries | items read |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, argv, l) in cases {
        let mut times = Vec::new();
        for _ in 0..repeat {
            let start = Instant::now();
            let out = Command::new(&cli)
                .args(&argv)
                .env("STEVEDORE_STACK", &stack)
                .env("AWS_ENDPOINT_URL", &moto)
                .env("AWS_ENDPOINT_URL_DYNAMODB", &ddb)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "bench")
                .env("AWS_SECRET_ACCESS_KEY", "bench")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .output()
                .expect("run stevedore");
            times.push(start.elapsed());
            let rows = String::from_utf8_lossy(&out.stdout).lines().count();
            assert!(
                out.status.success() && rows == 21,
                "{label}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        times.sort();
        let (runs, cost): (_, ListingCost) = store.list(&l).await.expect("list");
        assert_eq!(runs.len(), 20);
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            ms(percentile(&times, 50.0)),
            ms(percentile(&times, 95.0)),
            ms(*times.last().unwrap()),
            cost.requests,
            cost.items_read
        );
    }
}

fn listing(job: Option<&str>, status: Option<RunStatus>, now: OffsetDateTime) -> RunListing {
    RunListing {
        job: job.map(str::to_string),
        status,
        since: Some(now - time::Duration::days(31)),
        oldest: now,
        newest: now,
        limit: 20,
    }
}
