//! The `stevedore` binary as a user runs it: local runs of the example jobs
//! (real processes), run history, validation, and `exec` with a mock file.

use std::time::Instant;

use serde_json::{json, Value};

mod common;
use common::*;

#[test]
fn hello_runs_to_success_with_progress_and_shows_in_runs_list() {
    let h = home("hello");
    let out = stevedore(&h, &["run", "examples/jobs/hello.json"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for want in [
        "▸ Launch task",
        "▸ Wait for task",
        "│ hello from stevedore",
        "│ step 3 of 3",
        "✔ execution succeeded",
        "status     SUCCEEDED",
        "exit code  0",
        "cost       $",
    ] {
        assert!(stdout.contains(want), "missing `{want}` in:\n{stdout}");
    }
    let list = stevedore(&h, &["runs", "list"]);
    let listed = text(&list.stdout);
    assert!(list.status.success());
    let row = listed
        .lines()
        .find(|l| l.starts_with("hello-"))
        .unwrap_or_else(|| panic!("{listed}"));
    // An ended run shows its own attempt number, not "1/3" (no attempt follows).
    assert!(row.contains("SUCCEEDED") && !row.contains("1/3"), "{row}");

    let run_id = row.split_whitespace().next().unwrap();
    let show = stevedore(&h, &["runs", "show", run_id]);
    let shown = text(&show.stdout);
    assert!(
        shown.contains("\"status\": \"SUCCEEDED\"")
            && shown.contains("TaskStateEntered")
            && shown.contains("ExecutionSucceeded"),
        "{shown}"
    );
    let log = std::fs::read_to_string(h.join("logs").join(format!("{run_id}.log"))).unwrap();
    assert!(log.contains("hello from stevedore"));
    // `stevedore logs` prints that file; --tail its end; --follow returns
    // at once for an ended run.
    let logs = stevedore(&h, &["logs", run_id]);
    assert_eq!(text(&logs.stdout), log, "{}", text(&logs.stderr));
    let tail = stevedore(&h, &["logs", run_id, "--tail", "1"]);
    assert_eq!(text(&tail.stdout), "step 3 of 3\n");
    let follow = stevedore(&h, &["logs", run_id, "--follow"]);
    assert_eq!((follow.status.code(), text(&follow.stdout)), (Some(0), log));
    let missing = stevedore(&h, &["logs", "no-such-run"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no run `no-such-run`"));
    assert!(!stevedore(&h, &["runs", "show", "no-such-run"])
        .status
        .success());
}

#[test]
fn a_failing_job_prints_the_alert_and_exits_non_zero() {
    let h = home("exit3");
    let out = stevedore(&h, &["run", "examples/jobs/exit-3.json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("ALERT  [Stevedore] orders-ingest failed: ExitedNonZero"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: upstream API returned 503"),
        "the alert carries the log tail: {stderr}"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAILED (ExitedNonZero)") && stdout.contains("exit code  3"),
        "{stdout}"
    );
    let list = text(
        &stevedore(
            &h,
            &[
                "runs",
                "list",
                "--status",
                "failed",
                "--job",
                "orders-ingest",
            ],
        )
        .stdout,
    );
    assert!(list.contains("ExitedNonZero"), "{list}");
}

#[test]
fn the_timeout_example_stops_its_process() {
    let h = home("timeout");
    let start = Instant::now();
    let out = stevedore(
        &h,
        &["run", "examples/jobs/timeout.json", "--stop-grace", "5"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAILED (TimedOut)"), "{stdout}");
    assert!(
        stdout.contains("got SIGTERM, stopping"),
        "the process saw SIGTERM: {stdout}"
    );
    assert!(
        start.elapsed().as_secs() < 30,
        "stopped at its 10 s timeout"
    );
}

#[test]
fn a_retryable_exit_code_gets_a_second_attempt() {
    let h = home("retry");
    let out = stevedore(&h, &["run", "examples/jobs/retry-once.json"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("attempt 2: export done") && stdout.contains("attempts   2 (at most 3)"),
        "{stdout}"
    );
}

#[test]
fn validate_accepts_good_files_and_names_every_problem_in_bad_ones() {
    let h = home("validate");
    let ok = stevedore(
        &h,
        &[
            "validate",
            "examples/jobs/hello.json",
            "statemachines/run-job.asl.json",
            "examples/statemachines/orders.asl.json",
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok.stdout));
    let bad_spec = h.join("bad.json");
    std::fs::create_dir_all(&h).unwrap();
    std::fs::write(
        &bad_spec,
        r#"{"job": "x", "taskDefinition": "t:0", "retry": {"maxAttempts": 0}}"#,
    )
    .unwrap();
    let out = stevedore(
        &h,
        &[
            "validate",
            bad_spec.to_str().unwrap(),
            "tests/fixtures/broken-next.asl.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("taskDefinition:")
            && stdout.contains("retry.maxAttempts: must be between 1 and 10"),
        "{stdout}"
    );
    assert!(
        stdout.contains("`Wait for the task` is not a state"),
        "{stdout}"
    );
}

#[test]
fn exec_runs_a_definition_with_mocks_and_prints_json_for_scripts() {
    let h = home("exec");
    let args = |case: &str| {
        vec![
            "exec",
            "examples/statemachines/orders.asl.json",
            "--input",
            "examples/statemachines/orders.input.json",
            "--mocks",
            "examples/statemachines/orders.mocks.json",
            "--test-case",
            case,
            "--json",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<String>>()
    };
    let run = |case: &str| {
        let a = args(case);
        stevedore(&h, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run("HappyPath");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    assert_eq!(
        v,
        json!({"status": "SUCCEEDED", "output": {
            "batch": "batch-7",
            "priced": [{"id": "a", "total": 20}, {"id": "b", "total": 10}, {"id": "c", "total": 50}],
            "charged": true,
            "notified": true
        }})
    );
    let out = run("NotifyDown");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["output"]["notified"],
        json!(false),
        "the Catch handled the failed notification"
    );

    // Without mocks, a foreign resource fails with a message naming the state.
    let out = stevedore(
        &h,
        &[
            "exec",
            "examples/statemachines/orders.asl.json",
            "--input",
            r#"{"batchId": 1, "orders": [{"id": "a", "qty": 1}]}"#,
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], json!("FAILED"));
    assert!(
        v["cause"].as_str().unwrap().contains("Task state `Price`"),
        "{v}"
    );
}

#[test]
fn every_command_has_help() {
    let h = home("help");
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["runs", "list", "--help"],
        vec!["runs", "show", "--help"],
        vec!["validate", "--help"],
        vec!["exec", "--help"],
        vec!["start", "--help"],
        vec!["stop", "--help"],
        vec!["rerun", "--help"],
        vec!["logs", "--help"],
    ] {
        let out = stevedore(&h, &args);
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}");
    }
    let out = stevedore(&h, &["run", "does-not-exist.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read does-not-exist.json"));
}

/// A webhook on this machine: answers `ok` to each post and keeps the bodies.
fn slack_catcher() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/services/T0/B0/x", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            kept.lock().unwrap().push(text(&body));
            let mut conn = conn;
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (url, bodies)
}

#[test]
fn a_secret_from_the_secrets_file_never_shows_in_the_console_log_alert_or_slack() {
    let h = home("secret");
    let spec = h.join("leaky.json");
    std::fs::write(
        &spec,
        json!({"job": "leaky", "taskDefinition": "etl", "container": "app", "command": ["sh", "-c",
            "[ \"$DB_PASSWORD\" = hunter2xyz ] && echo the job has its secret; echo connecting with $DB_PASSWORD; echo password=$DB_PASSWORD >&2; exit 3"],
            "retry": {"maxAttempts": 1}})
        .to_string(),
    )
    .unwrap();
    let secrets = h.join("sec.env");
    std::fs::write(&secrets, "DB_PASSWORD=hunter2xyz\n").unwrap();
    let (webhook, posted) = slack_catcher();
    let out = command(
        &h,
        &[
            "run",
            spec.to_str().unwrap(),
            "--secrets",
            secrets.to_str().unwrap(),
        ],
    )
    .env("STEVEDORE_SLACK_WEBHOOK", &webhook)
    .output()
    .unwrap();
    let console = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{console}");
    assert!(console.contains("the job has its secret"), "{console}");
    assert!(console.contains("connecting with ***"), "{console}");
    assert!(console.contains("ALERT"), "the alert: {console}");
    assert!(!console.contains("hunter2xyz"), "{console}");
    let posted = posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 1, "one Slack post: {posted:?}");
    assert!(posted[0].contains("connecting with ***"), "{posted:?}");
    assert!(!posted[0].contains("hunter2xyz"), "{posted:?}");
    let run_id = text(&stevedore(&h, &["runs", "list", "--json"]).stdout)
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["runId"].as_str().map(String::from))
        .expect("the run");
    let logs = stevedore(&h, &["logs", &run_id]);
    assert!(text(&logs.stdout).contains("connecting with ***"));
    for file in std::fs::read_dir(h.join("logs")).unwrap().flatten() {
        let bytes = std::fs::read(file.path()).unwrap();
        assert!(!text(&bytes).contains("hunter2xyz"), "{:?}", file.path());
    }
}

#[test]
fn a_job_writing_odd_bytes_and_ten_megabytes_succeeds_with_every_byte_logged_before_the_record() {
    let h = home("bytes");
    let spec = h.join("bytes.json");
    let script = "printf 'caf\\351\\n'; printf 'err caf\\351\\n' >&2; \
                  awk 'BEGIN { for (i = 0; i < 200000; i++) printf \"line %06d 0123456789012345678901234567890123456789\\n\", i }'; \
                  echo the last line";
    std::fs::write(
        &spec,
        json!({"job": "bytes", "taskDefinition": "etl", "container": "app", "command": ["sh", "-c", script]})
            .to_string(),
    )
    .unwrap();
    let out = stevedore(&h, &["run", spec.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("status     SUCCEEDED"),
        "{}",
        &stdout[stdout.len().saturating_sub(2000)..]
    );
    // The job's lines all come before the state machine records the run.
    let last = stdout
        .find("the last line")
        .expect("the job's last line is shown");
    let recorded = stdout.find("▸ Record run").expect("the record step");
    assert!(last < recorded, "a job line after `Record run`");
    assert!(stdout.contains("caf\u{fffd}"), "shown lossily");
    let log = std::fs::read(
        std::fs::read_dir(h.join("logs"))
            .unwrap()
            .flatten()
            .next()
            .expect("the log file")
            .path(),
    )
    .unwrap();
    let lines: Vec<&[u8]> = log
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 200_003, "every line in the log");
    assert!(lines.contains(&&b"caf\xe9"[..]) && lines.contains(&&b"err caf\xe9"[..]));
    assert_eq!(lines[lines.len() - 1], b"the last line");
}
