//! The process task runner with real processes: output captured as the log,
//! exit codes reported, stop = SIGTERM then SIGKILL after the grace period,
//! the stop delivered as an "ECS Task State Change" event, client tokens
//! idempotent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use stevedore_domain::ports::{Launch, TaskRunner};
use stevedore_domain::spec::{Capacity, JobSpec};
use stevedore_domain::task::{TaskLookup, TaskStateChange};
use stevedore_local::{LocalClock, LocalRunner, ProcessSettings, ProcessTaskRunner};

fn launch(command: Value, token: &str) -> Launch {
    let spec = JobSpec::from_value(&json!({"job": "p", "taskDefinition": "t", "container": "app", "command": command, "environment": {"GREETING": "hi"}})).unwrap();
    Launch {
        run_id: format!("p-run-{token}"),
        client_token: token.repeat(8),
        capacity: Capacity::OnDemand,
        network: Default::default(),
        started_by: format!("stevedore/p-run-{token}"),
        tags: BTreeMap::from([("stevedore:attempt".to_string(), "2".to_string())]),
        spec,
    }
}

fn runner(
    grace: Duration,
) -> (
    ProcessTaskRunner,
    Arc<Mutex<Vec<Value>>>,
    std::path::PathBuf,
) {
    runner_echoing(grace, None)
}

/// The runner, its lines echoed to `echo` as the CLI prints them.
fn runner_echoing(
    grace: Duration,
    echo: Option<stevedore_local::tasks::LineEcho>,
) -> (
    ProcessTaskRunner,
    Arc<Mutex<Vec<Value>>>,
    std::path::PathBuf,
) {
    let dir = std::env::temp_dir().join(format!(
        "stevedore-proc-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let r = ProcessTaskRunner::new(
        Arc::new(LocalClock::new(time::OffsetDateTime::now_utc())),
        ProcessSettings {
            log_dir: dir.clone(),
            secrets: BTreeMap::from([(
                "DB_PASSWORD".to_string(),
                "from-the-secrets-file".to_string(),
            )]),
            stop_grace: grace,
            echo,
            ledger: None,
        },
    );
    r.set_event_sink(Arc::new(move |e: Value| {
        let sink = sink.clone();
        Box::pin(async move { sink.lock().unwrap().push(e) })
    }));
    (r, events, dir)
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn wait_for_event(events: &Arc<Mutex<Vec<Value>>>, within: Duration) -> TaskStateChange {
    let start = std::time::Instant::now();
    loop {
        if let Some(e) = events.lock().unwrap().first().cloned() {
            return serde_json::from_value(e).unwrap();
        }
        assert!(start.elapsed() < within, "no stop event within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_process_runs_with_its_environment_and_reports_its_exit_code() {
    let (r, events, dir) = runner(Duration::from_secs(5));
    let l = launch(
        json!([
            "sh",
            "-c",
            "echo \"$GREETING attempt $STEVEDORE_ATTEMPT $DB_PASSWORD\"; echo oops >&2; exit 3"
        ]),
        "a",
    );
    let first = r.run_task(&l).await.unwrap();
    // The same client token gives the same task back.
    assert_eq!(r.run_task(&l).await.unwrap().task_arn, first.task_arn);
    let event = wait_for_event(&events, Duration::from_secs(10)).await;
    assert_eq!(event.detail_type, "ECS Task State Change");
    assert_eq!(event.detail.task_arn, first.task_arn);
    assert_eq!(
        event.detail.started_by.as_deref(),
        Some("stevedore/p-run-a")
    );
    assert_eq!(event.detail.container("app").unwrap().exit_code, Some(3));
    assert_eq!(
        event.detail.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
    let log = std::fs::read_to_string(dir.join("p-run-a.log")).unwrap();
    // The secret reached the job; its value never reaches the log.
    assert!(
        log.contains("hi attempt 2 ***") && log.contains("oops"),
        "{log}"
    );
    assert!(!log.contains("from-the-secrets-file"), "{log}");
    let described = r
        .describe_tasks(std::slice::from_ref(&first.task_arn))
        .await
        .unwrap();
    assert!(matches!(&described[0], TaskLookup::Found(t) if t.is_stopped()));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn stop_is_sigterm_then_sigkill_after_the_grace_period() {
    let (r, events, dir) = runner(Duration::from_millis(800));
    let l = launch(
        json!([
            "sh",
            "-c",
            "trap '' TERM; echo started; sleep 30 & wait; sleep 30"
        ]),
        "b",
    );
    let task = r.run_task(&l).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    r.stop_task(&task.task_arn, "Stevedore: job timeout (timeout 10s)")
        .await
        .unwrap();
    let event = wait_for_event(&events, Duration::from_secs(10)).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "killed after the grace period: {took:?}"
    );
    assert_eq!(
        event.detail.container("app").unwrap().exit_code,
        Some(137),
        "SIGKILL"
    );
    assert_eq!(event.detail.stop_code.as_deref(), Some("UserInitiated"));
    assert_eq!(
        event.detail.stopped_reason.as_deref(),
        Some("Stevedore: job timeout (timeout 10s)")
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_command_that_cannot_start_is_misconfigured_and_never_retried() {
    let (r, _events, dir) = runner(Duration::from_secs(1));
    let err = r
        .run_task(&launch(json!(["/no/such/program"]), "c"))
        .await
        .unwrap_err();
    assert_eq!(
        err.class,
        stevedore_domain::FailureClass::ContainerMisconfigured
    );
    assert!(!err.class.job_retryable());
    assert!(err.message.contains("/no/such/program"));
    assert!(
        err.message.contains("No such file or directory"),
        "{}",
        err.message
    );
    // A file that is there but may not be executed.
    let not_executable = dir.join("data.txt");
    std::fs::write(&not_executable, "not a program").unwrap();
    let err = r
        .run_task(&launch(json!([not_executable.to_str().unwrap()]), "d"))
        .await
        .unwrap_err();
    assert_eq!(
        err.class,
        stevedore_domain::FailureClass::ContainerMisconfigured
    );
    assert!(err.message.contains("ermission denied"), "{}", err.message);
    std::fs::remove_dir_all(dir).ok();
}

/// What the CLI would print, line by line.
fn collecting() -> (stevedore_local::tasks::LineEcho, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    (
        Arc::new(move |_run: &str, line: &str| sink.lock().unwrap().push(line.to_string())),
        lines,
    )
}

#[tokio::test]
async fn a_byte_that_is_not_utf8_neither_stops_the_output_nor_fails_the_job() {
    let (echo, shown) = collecting();
    let (r, events, dir) = runner_echoing(Duration::from_secs(5), Some(echo));
    // After the odd byte the job writes far more than a pipe holds: a reader
    // that stopped there would kill it with SIGPIPE.
    let script = "printf 'caf\\351\\n'; printf 'err caf\\351\\n' >&2; \
                  i=0; while [ $i -lt 5000 ]; do echo \"after $i padding padding padding\"; i=$((i+1)); done; \
                  printf 'no newline at the end'";
    let l = launch(json!(["sh", "-c", script]), "u");
    r.run_task(&l).await.unwrap();
    let event = wait_for_event(&events, Duration::from_secs(20)).await;
    assert_eq!(event.detail.container("app").unwrap().exit_code, Some(0));
    let log = std::fs::read(dir.join("p-run-u.log")).unwrap();
    let has = |needle: &[u8]| log.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"caf\xe9\n") && has(b"err caf\xe9\n"),
        "the bytes as written"
    );
    assert!(has(b"after 4999 padding padding padding\n"));
    assert!(
        log.ends_with(b"no newline at the end"),
        "the last bytes, as written"
    );
    let shown = shown.lock().unwrap().clone();
    assert!(shown.contains(&"caf\u{fffd}".to_string()), "shown lossily");
    assert_eq!(shown.len(), 2 + 5000 + 1, "every line shown once");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn every_line_of_a_large_output_is_logged_and_shown_before_the_stop_is_reported() {
    let (echo, shown) = collecting();
    let (r, events, dir) = runner_echoing(Duration::from_secs(5), Some(echo));
    // 200,000 lines, ~10 MB, as fast as the job can write them.
    let script = "awk 'BEGIN { for (i = 0; i < 200000; i++) printf \"line %06d %s\\n\", i, \"0123456789012345678901234567890123456789\" }'";
    let l = launch(json!(["sh", "-c", script]), "v");
    r.run_task(&l).await.unwrap();
    let event = wait_for_event(&events, Duration::from_secs(120)).await;
    assert_eq!(event.detail.container("app").unwrap().exit_code, Some(0));
    // At the moment the stop is reported, all of it is there.
    let shown_then = shown.lock().unwrap().len();
    let log = std::fs::read(dir.join("p-run-v.log")).unwrap();
    let lines: Vec<&[u8]> = log
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 200_000, "every line in the log");
    assert!(log.len() > 10_000_000, "{} bytes", log.len());
    for (i, line) in lines.iter().enumerate().step_by(9973) {
        assert!(
            line.starts_with(format!("line {i:06} ").as_bytes()),
            "in order"
        );
    }
    assert_eq!(shown_then, 200_000, "every line shown before the stop");
    std::fs::remove_dir_all(dir).ok();
}
