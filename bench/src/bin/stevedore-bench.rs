//! `stevedore-bench`: prints the benchmark tables of BENCHMARKS.md.
//!
//! - `cost`: control-plane cost per run, three designs, four job durations (virtual time)
//! - `handlers [--iterations N]`: CPU time per warm handler invocation, in-memory ports
//! - `latency [--runs N]`: container exit → run recorded → alert, real processes, real time
//! - `scale [--runs N]`: N concurrent local runs of `sleep 1`: wall time, peak memory, exactly-once
//! - `coldstart --binary PATH... [--python FILE --python-bin PY] [--runs N]`: process start → first
//!   "next invocation" request to a local Lambda Runtime API
//! - `engine --cases DIR [--repeat N]`: the engine's time per execution on the ASL conformance
//!   sample, and a JSONata-heavy execution

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stevedore_bench::{
    poll_loop_run, run_task_sync_run, stevedore_run, virtual_time, Assumptions, Counts,
};
use stevedore_domain::memory::{
    FakeTaskRunner, ManualClock, MemoryRunStore, RecordingNotifier, RecordingTaskTokens,
};
use stevedore_domain::ports::{LogSource, LogTail, RunStore};
use stevedore_domain::task::{ContainerState, TaskDescription};
use stevedore_local::{
    ConsoleNotifier, LocalClock, LocalPlane, PlaneConfig, ProcessSettings, ProcessTaskRunner,
    SqliteRunStore,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    match args.first().map(String::as_str) {
        Some("cost") => cost(),
        Some("handlers") => handlers(opt("--iterations", 20_000)),
        Some("latency") => real_time(latency(opt("--runs", 20) as usize)),
        Some("scale") => real_time(scale(opt("--runs", 1000) as usize)),
        Some("coldstart") => coldstart(&args[1..], opt("--runs", 20) as usize),
        Some("engine") => {
            let cases = args
                .iter()
                .position(|a| a == "--cases")
                .and_then(|i| args.get(i + 1))
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("../shared/asl-conformance/cases"));
            stevedore_bench::engine::run(&cases, opt("--repeat", 20) as usize)
        }
        _ => {
            eprintln!("usage: stevedore-bench cost | handlers [--iterations N] | latency [--runs N] | scale [--runs N] | coldstart --binary PATH... [--python FILE --python-bin PY] [--runs N] | engine [--cases DIR] [--repeat N]");
            std::process::exit(2);
        }
    }
}

fn real_time<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    let median = if xs.is_empty() {
        f64::NAN
    } else {
        xs[xs.len() / 2]
    };
    (
        median,
        xs.first().copied().unwrap_or(f64::NAN),
        xs.last().copied().unwrap_or(f64::NAN),
    )
}

fn cost() {
    let a = Assumptions::default();
    println!("| job duration | design | state transitions | Lambda invocations | DynamoDB RRU / WRU | $ per 1,000 runs |");
    println!("|---|---|---:|---:|---:|---:|");
    for (label, secs) in [
        ("2 min", 120u64),
        ("10 min", 600),
        ("1 h", 3600),
        ("6 h", 6 * 3600),
    ] {
        // Just under the duration, so a check falling on the exit instant is not double counted.
        let d = Duration::from_secs(secs - 10);
        let ours = virtual_time(stevedore_run(d, 0)).0;
        let poll = virtual_time(poll_loop_run(d));
        let sync = virtual_time(run_task_sync_run(d));
        for (name, c) in [
            ("Stevedore (event + 900 s safety poll)", ours),
            ("Wait 30 s → poll → Choice", poll),
            ("ecs:runTask.sync (no record, no alert)", sync),
        ] {
            row(label, name, c, a);
        }
    }
    let failed = virtual_time(stevedore_run(Duration::from_secs(590), 3)).0;
    row("10 min, exit 3", "Stevedore (records, alerts)", failed, a);
    println!(
        "\nAssumed: each Lambda invocation bills {} ms at {} MB (arm64).",
        a.lambda_ms, a.lambda_memory_mb
    );
}

fn row(label: &str, name: &str, c: Counts, a: Assumptions) {
    println!(
        "| {label} | {name} | {} | {} | {} / {} | ${:.4} |",
        c.transitions,
        c.lambda_invocations,
        c.ddb_read_units,
        c.ddb_write_units,
        c.price_per_1000(a)
    );
}

/// CPU time of this process (all threads), in seconds.
fn cpu_seconds() -> f64 {
    let mut ts = libc_timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        clock_gettime(2 /* CLOCK_PROCESS_CPUTIME_ID */, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[repr(C)]
struct libc_timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clk: i32, ts: *mut libc_timespec) -> i32;
}

/// A job log's last 20 lines, one carrying a credential: what notify-failure
/// redacts and renders on every alert.
struct TwentyLines;

#[async_trait::async_trait]
impl LogSource for TwentyLines {
    async fn tail(
        &self,
        _run: &stevedore_domain::run::RunRecord,
        lines: usize,
    ) -> stevedore_domain::Result<LogTail> {
        let mut out: Vec<String> = (0..lines.saturating_sub(2))
            .map(|i| format!("2026-11-24 06:{:02}:00 INFO ingest.orders: loaded batch {i} (5000 rows) from s3://acme-raw/orders/2026-11-23/part-{i:04}.parquet", i % 60))
            .collect();
        out.push("2026-11-24 06:15:02 INFO connecting to postgres://etl:Tr0ub4dor3@warehouse.internal:5432/raw".into());
        out.push("ValueError: order 7731 has no customer_id".into());
        Ok(LogTail {
            lines: out,
            stream: None,
        })
    }
}

fn handlers(iterations: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let start = time::OffsetDateTime::now_utc();
        let tasks = Arc::new(FakeTaskRunner::default());
        let store = Arc::new(MemoryRunStore::new());
        let clock = Arc::new(ManualClock::new(start));
        let tokens = Arc::new(RecordingTaskTokens::default());
        let launch = launch_run::Deps { tasks: tasks.clone(), runs: store.clone(), clock: clock.clone(), config: launch_run::Config::default() };
        let watch = watch_task::Deps { tasks: tasks.clone(), runs: store.clone(), tokens: tokens.clone(), clock: clock.clone(), config: watch_task::Config::default() };
        let events = task_events::Deps { runs: store.clone(), tokens: tokens.clone() };
        let record = record_run::Deps { runs: store.clone(), tasks: tasks.clone(), clock: clock.clone(), prices: stevedore_domain::cost::PriceTable::builtin(), region: "us-east-1".into() };
        let notifier = Arc::new(RecordingNotifier::default());
        let notify = notify_failure::Deps { runs: store.clone(), notifier: notifier.clone(), logs: Arc::new(TwentyLines) };
        let spec = json!({"job": "orders-ingest", "taskDefinition": "etl:3", "container": "app", "command": ["python", "-m", "ingest"], "environment": {"TARGET_SCHEMA": "raw"}, "timeout": "45m", "retry": {"maxAttempts": 1}});
        let mut samples: BTreeMap<&str, f64> = BTreeMap::new();
        let mut add = |name: &'static str, secs: f64| *samples.entry(name).or_default() += secs;
        for i in 0..iterations {
            let exec = json!({"id": format!("arn:aws:states:us-east-1:1:execution:run-job:e{i}"), "name": format!("e{i}"), "startTime": "2026-11-24T06:00:00Z"});
            let job = format!("job{i}");
            let mut s = spec.clone();
            s["job"] = json!(job);
            let t = cpu_seconds();
            let out = launch_run::function_handler(&launch, json!({"spec": s, "execution": exec, "attempt": 1})).await.expect("launch");
            add("launch-run", cpu_seconds() - t);
            let t = cpu_seconds();
            watch_task::function_handler(&watch, json!({"runId": out.run_id, "taskToken": format!("t{i}")})).await.expect("watch");
            add("watch-task", cpu_seconds() - t);
            let arn = out.task_arn.clone().expect("arn");
            let stopped = TaskDescription {
                task_arn: arn.clone(),
                last_status: "STOPPED".into(),
                started_by: Some(format!("stevedore/{}", out.run_id)),
                stop_code: Some("EssentialContainerExited".into()),
                containers: vec![ContainerState { name: "app".into(), exit_code: Some(3), ..Default::default() }],
                cpu: Some("1024".into()),
                memory: Some("2048".into()),
                started_at: Some(start),
                stopped_at: Some(start + time::Duration::minutes(10)),
                ..Default::default()
            };
            let event = json!({"detail-type": "ECS Task State Change", "source": "aws.ecs", "detail": stopped});
            let t = cpu_seconds();
            task_events::function_handler(&events, event).await.expect("events");
            add("task-events", cpu_seconds() - t);
            let t = cpu_seconds();
            record_run::function_handler(&record, json!({"runId": out.run_id})).await.expect("record");
            add("record-run", cpu_seconds() - t);
            let t = cpu_seconds();
            notify_failure::function_handler(&notify, json!({"runId": out.run_id})).await.expect("notify");
            add("notify-failure (alert with a 20-line log tail)", cpu_seconds() - t);
            // slack-notifier's own work: the SNS message to a Block Kit message.
            let alert = notifier.alerts.lock().expect("alerts").pop().expect("an alert").to_json().to_string();
            let t = cpu_seconds();
            let message = slack_notifier::slack_message_for(Some("subject"), &alert);
            add("slack-notifier (Block Kit from the SNS message)", cpu_seconds() - t);
            assert!(message["blocks"].is_array());
        }
        // The worst case for redaction: every line of the tail carries a credential.
        let credentials: Vec<String> = (0..20)
            .map(|i| match i % 5 {
                0 => format!("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPL{}", i % 10),
                1 => format!("connecting to postgres://etl:pw{i}@db.internal:5432/raw"),
                2 => format!("retrying login with password=hunter{i}"),
                3 => format!("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.{i}.sig"),
                _ => format!("posting to https://hooks.slack.com/services/T0/B0/x{i}"),
            })
            .collect();
        let t = cpu_seconds();
        for _ in 0..iterations {
            for line in &credentials {
                std::hint::black_box(stevedore_domain::redact::redact(line));
            }
        }
        add("redaction of 20 lines that all carry a credential (worst case)", cpu_seconds() - t);
        println!("| handler | CPU time per invocation (mean of {iterations}) |");
        println!("|---|---:|");
        for (name, total) in samples {
            println!("| {name} | {:.1} µs |", total / iterations as f64 * 1e6);
        }
    });
}

fn plane(
    home: &std::path::Path,
) -> (
    LocalPlane,
    Arc<SqliteRunStore>,
    Arc<ConsoleNotifier>,
    Arc<LocalClock>,
) {
    let clock = Arc::new(LocalClock::new(time::OffsetDateTime::now_utc()));
    let store = Arc::new(SqliteRunStore::open(&home.join("runs.db")).expect("db"));
    let runner = Arc::new(ProcessTaskRunner::new(
        clock.clone(),
        ProcessSettings {
            log_dir: home.join("logs"),
            secrets: BTreeMap::new(),
            stop_grace: Duration::from_secs(5),
            echo: None,
            ledger: None,
        },
    ));
    let notifier = Arc::new(ConsoleNotifier::new(Arc::new(|_: &str| {}), None));
    let plane = LocalPlane::new(
        store.clone(),
        runner,
        notifier.clone(),
        clock.clone(),
        PlaneConfig::default(),
    )
    .expect("plane");
    (plane, store, notifier, clock)
}

async fn latency(runs: usize) {
    let home = std::env::temp_dir().join(format!("stevedore-bench-latency-{}", std::process::id()));
    let (plane, store, _notifier, _clock) = plane(&home);
    let (mut recorded, mut alerted) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let spec = json!({"job": format!("latency{i}"), "taskDefinition": "t", "container": "app", "command": ["sh", "-c", "exit 3"], "retry": {"maxAttempts": 1}});
        let out = plane.run_job(spec, &format!("latency-{i}")).await;
        let run = store
            .runs_of_execution(&out.execution_arn)
            .await
            .expect("runs")
            .pop()
            .expect("run");
        let exit = run
            .task
            .as_ref()
            .and_then(|t| t.stopped_at)
            .expect("stopped_at");
        let at = |state: &str| {
            out.history
                .iter()
                .find(|e| e.kind == "TaskSucceeded" && e.state.as_deref() == Some(state))
                .map(|e| e.timestamp)
                .expect(state)
        };
        if std::env::var_os("BENCH_DEBUG").is_some() {
            eprintln!(
                "exit {exit} created {} history {:?}",
                run.created_at,
                out.history
                    .iter()
                    .map(|e| (e.kind.clone(), e.state.clone(), e.timestamp))
                    .collect::<Vec<_>>()
            );
        }
        recorded.push((at("Record run") - exit).as_seconds_f64() * 1000.0);
        alerted.push((at("Notify failure") - exit).as_seconds_f64() * 1000.0);
    }
    let (rm, rmin, rmax) = stats(recorded);
    let (am, amin, amax) = stats(alerted);
    println!("| from container exit to | median | min | max |");
    println!("|---|---:|---:|---:|");
    println!("| run recorded (FAILED, exit 3) | {rm:.1} ms | {rmin:.1} ms | {rmax:.1} ms |");
    println!("| alert published | {am:.1} ms | {amin:.1} ms | {amax:.1} ms |");
    println!("\n{runs} runs of `sh -c 'exit 3'`, local mode, SQLite store on disk.");
    std::fs::remove_dir_all(home).ok();
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn scale(runs: usize) {
    let home = std::env::temp_dir().join(format!("stevedore-bench-scale-{}", std::process::id()));
    let (plane, store, _n, _c) = plane(&home);
    let start = Instant::now();
    let futures = (0..runs).map(|i| {
        let spec = json!({"job": format!("scale{i}"), "taskDefinition": "t", "container": "app", "command": ["sleep", "1"]});
        let plane = &plane;
        async move { plane.run_job(spec, &format!("scale-{i}")).await }
    });
    let outcomes = futures::future::join_all(futures).await;
    let wall = start.elapsed();
    let succeeded = outcomes
        .iter()
        .filter(|o| o.status == stevedore_engine::Status::Succeeded)
        .count();
    let mut exactly_once = 0;
    for o in &outcomes {
        let runs = store
            .runs_of_execution(&o.execution_arn)
            .await
            .expect("runs");
        if runs.len() == 1 && runs[0].status == stevedore_domain::RunStatus::Succeeded {
            exactly_once += 1;
        }
    }
    let all = store.list_all(None, (runs * 2) as u32).expect("list");
    println!("| concurrent runs | wall time | peak memory (RSS) | executions succeeded | runs recorded exactly once | run records |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {runs} | {:.2} s | {:.0} MB | {succeeded} | {exactly_once} | {} |",
        wall.as_secs_f64(),
        peak_rss_mb(),
        all.len()
    );
    std::fs::remove_dir_all(home).ok();
}

/// A minimal Lambda Runtime API: records when the first "next invocation"
/// request arrives, and whether anything else was asked for first.
async fn time_to_first_next(mut cmd: tokio::process::Command) -> (f64, Vec<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    cmd.env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://{addr}/unexpected-aws-call"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut other = Vec::new();
    let elapsed = loop {
        let accepted = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await;
        let Ok(Ok((mut sock, _))) = accepted else {
            break f64::NAN;
        };
        let mut buf = vec![0u8; 4096];
        let n = sock.read(&mut buf).await.unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        if head.contains("/runtime/invocation/next") {
            break start.elapsed().as_secs_f64() * 1000.0;
        }
        other.push(head);
        let _ = sock
            .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
            .await;
    };
    let _ = child.kill().await;
    (elapsed, other)
}

fn coldstart(args: &[String], runs: usize) {
    let mut binaries = Vec::new();
    let mut python: Option<(PathBuf, String)> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--binary" => {
                binaries.push(PathBuf::from(&args[i + 1]));
                i += 2;
            }
            "--python" => {
                let bin = args
                    .iter()
                    .position(|a| a == "--python-bin")
                    .and_then(|p| args.get(p + 1))
                    .cloned()
                    .unwrap_or_else(|| "python3".into());
                python = Some((PathBuf::from(&args[i + 1]), bin));
                i += 2;
            }
            _ => i += 1,
        }
    }
    let env = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "example"),
        ("AWS_LAMBDA_FUNCTION_NAME", "bench"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("RUNS_TABLE", "runs"),
        ("CLUSTER", "arn:aws:ecs:us-east-1:123456789012:cluster/data"),
        (
            "ALERTS_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:alerts",
        ),
        (
            "SLACK_WEBHOOK_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:slack-AbCdEf",
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| function | cold start median | min | max | requests before the first `next` |");
    println!("|---|---:|---:|---:|---|");
    let mut medians = BTreeMap::new();
    let mut measure = |name: String, make: &dyn Fn() -> tokio::process::Command| {
        let mut times = Vec::new();
        let mut others = Vec::new();
        for _ in 0..runs {
            let (t, o) = rt.block_on(time_to_first_next(make()));
            times.push(t);
            others.extend(o);
        }
        let (m, lo, hi) = stats(times);
        medians.insert(name.clone(), m);
        println!(
            "| {name} | {m:.1} ms | {lo:.1} ms | {hi:.1} ms | {} |",
            if others.is_empty() {
                "none".to_string()
            } else {
                others.join("; ")
            }
        );
        let _ = std::io::stdout().flush();
    };
    for b in &binaries {
        let name = b
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        measure(name, &|| {
            let mut c = tokio::process::Command::new(b);
            c.envs(env);
            c
        });
    }
    if let Some((script, bin)) = &python {
        measure("Python 3.11 + boto3 (same clients)".into(), &|| {
            let mut c = tokio::process::Command::new(bin);
            c.arg(script).envs(env);
            c
        });
    }
    let rust: Vec<f64> = medians
        .iter()
        .filter(|(k, _)| !k.starts_with("Python"))
        .map(|(_, v)| *v)
        .collect();
    if let (Some(py), false) = (
        medians
            .iter()
            .find(|(k, _)| k.starts_with("Python"))
            .map(|(_, v)| *v),
        rust.is_empty(),
    ) {
        let worst = rust.iter().cloned().fold(f64::NAN, f64::max);
        println!("\nPython median / slowest Rust median: {:.1}×", py / worst);
    }
}
