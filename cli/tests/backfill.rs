//! `stevedore backfill` in local mode: real processes, the real run-job
//! state machine and handlers. (On a stack: `cli/tests/operate.rs`.)

mod common;

use std::collections::BTreeMap;

use common::{home, stevedore, text};
use serde_json::{json, Value};

/// From the job's own log lines (`start|end <date> <ns>`): the most runs
/// that were in progress at one time.
fn peak(log: &str) -> usize {
    let mut events: Vec<(u128, i32)> = log
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let kind = w.next().filter(|k| *k == "start" || *k == "end")?;
            let _date = w.next()?;
            let ns: u128 = w.next()?.parse().ok()?;
            Some((ns, if kind == "start" { 1 } else { -1 }))
        })
        .collect();
    // An end before a start at the same instant: not an overlap.
    events.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn a_backfill_runs_each_logical_time_at_most_n_at_once_and_its_rerun_skips_what_succeeded() {
    let h = home("backfill");
    let log = h.join("job.log");
    let fail = h.join("fail-13");
    std::fs::write(&fail, "").unwrap();
    // Each run says which day it loads, from the placeholder, the variable
    // and the environment; the 13th fails while `fail-13` exists.
    let script = format!(
        "echo start ${{logicalDate}} $(date +%s%N) >> {log}; echo env $STEVEDORE_LOGICAL_DATE $DAY $STEVEDORE_LOGICAL_TIME >> {log}; sleep 0.3; echo end ${{logicalDate}} $(date +%s%N) >> {log}; test ${{logicalDay}} != 13 || test ! -e {fail}",
        log = log.display(),
        fail = fail.display()
    );
    let spec = json!({
        "job": "daily_load",
        "taskDefinition": "daily-load",
        "container": "app",
        "command": ["sh", "-c", script],
        "environment": {"DAY": "${logicalDay}"},
        "concurrency": {"max": 3},
        // Copied from a schedule's input: the backfill's runs are not that
        // one scheduled start (else all but one would be skipped).
        "scheduledTime": "2026-11-01T00:00:00Z",
    });
    let file = h.join("daily_load.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let f = file.to_str().unwrap();
    let args = [
        "backfill",
        f,
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--max-parallel",
        "3",
    ];

    let out = stevedore(&h, &args);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the 13th failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("29 succeeded, 1 did not, 0 skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("run just those again: stevedore backfill {f} --at 2026-11-13T00:00:00Z --max-parallel 3")),
        "{stdout}"
    );
    let written = std::fs::read_to_string(&log).unwrap();
    let starts = written.lines().filter(|l| l.starts_with("start")).count();
    assert_eq!(starts, 30, "{written}");
    let most = peak(&written);
    assert!(
        (2..=3).contains(&most),
        "at most 3 at once, and more than 1: {most}\n{written}"
    );
    // The placeholder, STEVEDORE_LOGICAL_DATE/TIME and the environment agree.
    for l in written.lines().filter(|l| l.starts_with("env")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(w.len(), 4, "{l}");
        assert_eq!(&w[1][8..], w[2], "{l}");
        assert_eq!(w[3], format!("{}T00:00:00Z", w[1]), "{l}");
    }

    // Every run records its logical time.
    let listed = text(&stevedore(&h, &["runs", "list", "--limit", "100", "--json"]).stdout);
    let runs: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_day: BTreeMap<String, String> = runs
        .iter()
        .map(|r| {
            (
                r["logicalTime"].as_str().unwrap()[..10].to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(by_day.len(), 30, "{listed}");
    assert_eq!(by_day["2026-11-13"], "FAILED");
    assert_eq!(by_day["2026-11-14"], "SUCCEEDED");

    // The same command again: only the 13th runs (and now succeeds).
    std::fs::remove_file(&fail).unwrap();
    std::fs::write(&log, "").unwrap();
    let out = stevedore(&h, &args);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("1 succeeded, 0 did not, 29 skipped"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(&log).unwrap();
    let again: Vec<&str> = written.lines().filter(|l| l.starts_with("start")).collect();
    assert_eq!(again.len(), 1, "{written}");
    assert!(again[0].starts_with("start 2026-11-13 "), "{written}");

    // --force runs a succeeded one again, under the next name.
    let out = stevedore(&h, &["backfill", f, "--at", "2026-11-02", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let listed = text(&stevedore(&h, &["runs", "list", "--limit", "100", "--json"]).stdout);
    let executions: Vec<String> = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["logicalTime"].as_str().unwrap().starts_with("2026-11-02"))
        .map(|r| r["execution"]["name"].as_str().unwrap().to_string())
        .collect();
    for name in ["daily_load-20261102T000000", "daily_load-20261102T000000-2"] {
        assert!(
            executions.iter().any(|e| e == name),
            "{name} in {executions:?}"
        );
    }
}

#[test]
fn bad_backfill_arguments_are_named() {
    let h = home("backfill-args");
    let file = h.join("job.json");
    std::fs::write(
        &file,
        json!({"job": "j", "taskDefinition": "t", "container": "app", "command": ["true"]})
            .to_string(),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    for (args, says) in [
        (vec!["backfill", f], "name the logical times"),
        (
            vec!["backfill", f, "--from", "2026-11-01"],
            "--from and --to go together",
        ),
        (
            vec!["backfill", f, "--from", "2026-11-31", "--to", "2026-12-01"],
            "--from `2026-11-31` is neither",
        ),
        (
            vec!["backfill", f, "--from", "2026-11-02", "--to", "2026-11-01"],
            "is before --from",
        ),
        (
            vec![
                "backfill",
                f,
                "--from",
                "2020-01-01",
                "--to",
                "2026-01-01",
                "--every",
                "1h",
            ],
            "more than 1000 runs",
        ),
    ] {
        let out = stevedore(&h, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // A placeholder the job spec cannot have.
    std::fs::write(&file, json!({"job": "j", "taskDefinition": "t", "container": "app", "command": ["echo", "${HOME}"]}).to_string()).unwrap();
    let out = stevedore(&h, &["backfill", f, "--at", "2026-11-01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("InvalidJobSpec") && text(&out.stderr).contains("$${HOME}"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_takes_a_logical_time_for_one_run() {
    let h = home("run-logical");
    let out = stevedore(
        &h,
        &[
            "run",
            "examples/jobs/daily-load.json",
            "--logical-time",
            "2026-11-05",
            "--quiet",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("logical    2026-11-05T00:00:00Z"),
        "{stdout}"
    );
    let listed = text(&stevedore(&h, &["runs", "list", "--json"]).stdout);
    let run: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(run["logicalTime"], json!("2026-11-05T00:00:00Z"));
    let log = text(&stevedore(&h, &["logs", run["runId"].as_str().unwrap()]).stdout);
    assert_eq!(
        log,
        "loading partition dt=2026-11-05 for 2026-11-05\ndone\n"
    );
    let bad = stevedore(
        &h,
        &[
            "run",
            "examples/jobs/daily-load.json",
            "--logical-time",
            "soon",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("--logical-time `soon` is neither"));
}
