//! `stevedore runs stats`, on runs made by `stevedore run` itself: a job
//! that succeeds, one that fails twice, and one whose first attempt fails and
//! whose retry succeeds (one execution, counted once, as a success).

mod common;

use common::{home, stevedore, text};
use serde_json::Value;

fn stats(h: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["runs", "stats", "--json"];
    all.extend_from_slice(args);
    let out = stevedore(h, &all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn stats_count_executions_rates_durations_and_the_last_failure() {
    let h = home("stats");
    for job in [
        "examples/jobs/exit-3.json",
        "examples/jobs/exit-3.json",
        "examples/jobs/retry-once.json",
    ] {
        stevedore(&h, &["run", "--quiet", job]);
    }
    let all = stats(&h, &[]);
    let by_job = |name: &str| {
        all.iter()
            .find(|s| s["job"] == name)
            .unwrap_or_else(|| panic!("no {name} in {all:?}"))
            .clone()
    };
    let failing = by_job("orders-ingest");
    assert_eq!(failing["runs"], 2);
    assert_eq!(failing["failed"], 2);
    assert_eq!(failing["succeeded"], 0);
    assert_eq!(failing["successRate"], 0.0);
    assert_eq!(failing["lastFailure"]["class"], "ExitedNonZero");
    // Two attempts, one execution, a success.
    let flaky = by_job("flaky-export");
    assert_eq!(flaky["runs"], 1);
    assert_eq!(flaky["succeeded"], 1);
    assert_eq!(flaky["successRate"], 100.0);
    assert!(flaky["lastFailure"].is_null());
    // The retry waits 2 s after the first attempt: its duration counts the
    // attempts only, not the wait, so it stays under the wall time.
    assert!(flaky["p50Seconds"].as_u64().is_some());
    // One job only, and a window with nothing in it.
    let one = stats(&h, &["--job", "flaky-export"]);
    assert_eq!(one.len(), 1);
    assert!(stats(&h, &["--since", "0s"]).is_empty());
    // A window reaching back past any date is every run, not a crash.
    assert_eq!(stats(&h, &["--since", "99999999999d"]).len(), all.len());
    // The table.
    let out = stevedore(&h, &["runs", "stats"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("JOB"), "{table}");
    assert!(
        table.contains("orders-ingest") && table.contains("0%"),
        "{table}"
    );
    assert!(table.contains("ExitedNonZero"), "{table}");
    // A bad window is a named error.
    let out = stevedore(&h, &["runs", "stats", "--since", "a month"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--since"),
        "{}",
        text(&out.stderr)
    );
}
