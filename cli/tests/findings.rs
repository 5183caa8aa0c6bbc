//! What a new user met in local mode, each now a test: output into a closed
//! pipe, a program that does not exist, durations and alignment, messages
//! of `validate`, and an engine input that used to panic.

use std::io::Read;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::*;

/// Runs the command with its standard output read for one line and then
/// closed, as `| head -1` does.
fn into_closed_pipe(home: &Path, args: &[&str]) -> Output {
    let mut child = command(home, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    let _ = out.read(&mut first);
    drop(out);
    child.wait_with_output().unwrap()
}

#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    let h = home("pipe");
    let spec = h.join("chatty.json");
    std::fs::write(
        &spec,
        json!({"job": "chatty", "taskDefinition": "chatty", "container": "app",
               "command": ["sh", "-c", "for i in $(seq 1 2000); do echo line $i; done"],
               "timeout": "1m"})
        .to_string(),
    )
    .unwrap();
    let out = into_closed_pipe(&h, &["run", spec.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "the job still ran to its end: {stderr}"
    );
    let runs = stevedore(&h, &["runs", "list", "--json"]);
    assert!(text(&runs.stdout).contains("SUCCEEDED"), "and was recorded");

    for args in [vec!["runs", "list"], vec!["runs", "list", "--json"]] {
        let out = into_closed_pipe(&h, &args);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
    let id = text(&runs.stdout)
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["runId"].as_str().map(str::to_string))
        .unwrap();
    let out = into_closed_pipe(&h, &["runs", "show", &id]);
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_program_that_does_not_exist_fails_at_once_and_says_why_first() {
    let h = home("missing");
    let spec = h.join("missing.json");
    std::fs::write(
        &spec,
        json!({"job": "missing", "taskDefinition": "m", "container": "app",
               "command": ["no-such-program-here", "--flag"], "timeout": "1m"})
        .to_string(),
    )
    .unwrap();
    let started = Instant::now();
    let out = stevedore(&h, &["run", spec.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "not retried, no wait: {:?}",
        started.elapsed()
    );
    assert!(
        stdout.contains("FAILED (ContainerMisconfigured)"),
        "{stdout}"
    );
    assert!(stdout.contains("attempts   1\n"), "{stdout}");
    assert!(
        stdout.contains("outcome    CannotStartContainerError: cannot run `no-such-program-here`: No such file or directory"),
        "{stdout}"
    );
    assert!(!stdout.contains("$-0"), "no negative cost: {stdout}");
    assert!(stdout.contains("cost       - (no task ran)"), "{stdout}");
    assert!(!stderr.contains("ECR"), "no image-pull hint: {stderr}");
    // The alert wraps its lines.
    let words = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("cannot run `no-such-program-here`: No such file or directory"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("attempt 1/3") && !stderr.contains("1 of 3\n"),
        "{stderr}"
    );
}

#[test]
fn the_summary_and_runs_list_agree_on_durations_and_attempts() {
    let h = home("durations");
    let out = stevedore(&h, &["run", "examples/jobs/hello.json"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let summary = stdout
        .lines()
        .find_map(|l| l.strip_prefix("duration   "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    let list = text(&stevedore(&h, &["runs", "list"]).stdout);
    let row: Vec<&str> = list.lines().nth(1).unwrap().split_whitespace().collect();
    // RUN JOB LOGICAL-TIME(1-2 words) STATUS ATTEMPT DATE TIME DURATION EXIT COST
    let status = row.iter().position(|c| *c == "SUCCEEDED").expect(&list);
    assert_eq!(row[status + 1], "1", "{list}");
    assert_eq!(row[status + 4], summary, "{list}\n{stdout}");
    assert_ne!(summary, "0s", "hello runs for about 3 s");
}

#[test]
fn the_history_table_of_runs_show_is_aligned() {
    let h = home("aligned");
    assert!(stevedore(&h, &["run", "examples/jobs/hello.json"])
        .status
        .success());
    let list = text(&stevedore(&h, &["runs", "list", "--json"]).stdout);
    let id = serde_json::from_str::<Value>(list.lines().next().unwrap()).unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = text(&stevedore(&h, &["runs", "show", &id]).stdout);
    let table: Vec<&str> = shown
        .lines()
        .skip_while(|l| !l.starts_with("execution history"))
        .skip(1)
        .collect();
    assert!(table.len() > 10, "{shown}");
    // Every row's type column starts at the same place.
    let column = |l: &str| {
        l.find("Execution")
            .or_else(|| l.find("Task"))
            .or_else(|| l.find("Choice"))
            .or_else(|| l.find("Succeed"))
    };
    let starts: Vec<Option<usize>> = table.iter().map(|l| column(l)).collect();
    assert!(
        starts.iter().all(|s| s.is_some() && *s == starts[0]),
        "{}",
        table.join("\n")
    );
}

#[test]
fn validate_says_why_a_file_cannot_be_read_and_where_json_is_broken_once() {
    let h = home("validate");
    let out = stevedore(&h, &["validate", "missing.json"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("cannot read missing.json: No such file or directory"),
        "{stdout}"
    );
    let broken = h.join("broken.json");
    std::fs::write(&broken, "{\n  \"job\": \n}").unwrap();
    let stdout = text(&stevedore(&h, &["validate", broken.to_str().unwrap()]).stdout);
    assert_eq!(stdout.matches("line 3").count(), 1, "{stdout}");
    let unreachable = h.join("unreachable.asl.json");
    std::fs::write(
        &unreachable,
        json!({"StartAt": "First", "States": {
            "First": {"Type": "Pass", "End": true},
            "Second": {"Type": "Pass", "End": true}}})
        .to_string(),
    )
    .unwrap();
    let stdout = text(&stevedore(&h, &["validate", unreachable.to_str().unwrap()]).stdout);
    assert!(
        stdout.contains("state `Second` is not reachable from StartAt"),
        "{stdout}"
    );
}

#[test]
fn a_path_that_used_to_panic_is_a_runtime_error() {
    let h = home("path");
    let def = h.join("slice.asl.json");
    std::fs::write(
        &def,
        json!({"StartAt": "P", "States": {"P": {"Type": "Pass",
            "Parameters": {"x.$": "$.a[1::9223372036854775807]"}, "End": true}}})
        .to_string(),
    )
    .unwrap();
    let out = stevedore(
        &h,
        &[
            "exec",
            def.to_str().unwrap(),
            "--input",
            r#"{"a": [1, 2, 3]}"#,
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], json!("FAILED"));
    assert_eq!(v["error"], json!("States.Runtime"));
}
