//! `stevedore run` interrupted, with real processes: Ctrl-C (SIGINT) and
//! SIGTERM stop the job's whole process group and record the run
//! CANCELLED; a second Ctrl-C kills at once; after a SIGKILL of
//! `stevedore` itself, the next command stops the job it left behind and
//! marks its run. Two `stevedore run`s of one job share its slots.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::*;

fn spawn(home: &Path, args: &[&str]) -> Child {
    command(home, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stevedore")
}

/// A job that writes its pid (its process group) to `pidfile`, starts a
/// child, and handles SIGTERM as `on_term` says.
fn job(home: &Path, name: &str, file: &str, on_term: &str) -> PathBuf {
    let pidfile = home.join(format!("{file}.pid"));
    let spec = json!({
        "job": name,
        "taskDefinition": name,
        "container": "app",
        "command": ["sh", "-c", format!(
            "echo $$ > {}; trap '{on_term}' TERM; sleep 300 & while true; do sleep 1; done",
            pidfile.display()
        )],
        "timeout": "10m",
        "concurrency": {"max": 1, "whenBusy": "fail"}
    });
    let path = home.join(format!("{file}.json"));
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

fn quick_job(home: &Path, name: &str) -> PathBuf {
    let spec = json!({
        "job": name, "taskDefinition": name, "container": "app",
        "command": ["sh", "-c", "echo quick"], "timeout": "1m",
        "concurrency": {"max": 1, "whenBusy": "fail"}
    });
    let path = home.join(format!("{name}-quick.json"));
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

fn wait_for_pid(home: &Path, file: &str) -> u32 {
    let path = home.join(format!("{file}.pid"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live (not zombie) processes of a process group, from /proc.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let live = fields.first().is_some_and(|s| *s != "Z" && *s != "X");
        if live && fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn runs(home: &Path) -> Vec<Value> {
    let out = stevedore(home, &["runs", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn history_types(home: &Path, run_id: &str) -> Vec<String> {
    let out = stevedore(home, &["runs", "show", run_id, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .collect()
}

fn finish(child: Child) -> (Option<i32>, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ctrl_c_stops_the_whole_job_records_it_cancelled_and_frees_the_slot() {
    let h = home("sigint");
    let spec = job(&h, "ctrlc", "ctrlc", "echo got TERM; exit 143");
    let cli = spawn(&h, &["run", spec.to_str().unwrap(), "--stop-grace", "20"]);
    let pgid = wait_for_pid(&h, "ctrlc");
    assert!(group_members(pgid).len() >= 2, "the job and its child run");
    let started = Instant::now();
    signal(cli.id(), "-INT");
    let (code, stdout, stderr) = finish(cli);
    assert_eq!(code, Some(130), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "it did not wait for SIGKILL"
    );
    assert!(stdout.contains("SIGINT: stopping the job"), "{stdout}");
    assert!(stdout.contains("got TERM"), "the job saw SIGTERM: {stdout}");
    assert!(stdout.contains("status     CANCELLED (SIGINT)"), "{stdout}");
    assert_eq!(
        group_members(pgid),
        Vec::<u32>::new(),
        "no process of the job is left"
    );

    let all = runs(&h);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"], json!("CANCELLED"));
    assert_eq!(all[0]["outcome"]["class"], json!("StoppedByUser"));
    assert!(all[0]["outcome"]["message"]
        .as_str()
        .unwrap()
        .contains("SIGINT"));
    let types = history_types(&h, all[0]["runId"].as_str().unwrap());
    for want in ["ExecutionStarted", "TaskSubmitted", "ExecutionAborted"] {
        assert!(types.iter().any(|t| t == want), "{want} in {types:?}");
    }
    // The slot is free: the same job (concurrency.max 1, whenBusy fail) runs.
    let again = stevedore(&h, &["run", quick_job(&h, "ctrlc").to_str().unwrap()]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn sigterm_exits_143_and_a_second_ctrl_c_kills_at_once() {
    let h = home("twice");
    // The job ignores SIGTERM: only SIGKILL ends it.
    let spec = job(&h, "stubborn", "stubborn", "echo ignoring TERM");
    let cli = spawn(&h, &["run", spec.to_str().unwrap(), "--stop-grace", "120"]);
    let pgid = wait_for_pid(&h, "stubborn");
    let started = Instant::now();
    signal(cli.id(), "-TERM");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !group_members(pgid).is_empty(),
        "SIGTERM alone does not end it"
    );
    signal(cli.id(), "-INT");
    let (code, stdout, _) = finish(cli);
    assert_eq!(
        code,
        Some(143),
        "the first signal decides the exit code: {stdout}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "not the 120 s grace"
    );
    assert!(stdout.contains("killing the job now"), "{stdout}");
    assert_eq!(group_members(pgid), Vec::<u32>::new());
    let all = runs(&h);
    assert_eq!(all[0]["status"], json!("CANCELLED"));
}

#[test]
fn after_a_sigkill_the_next_command_stops_the_job_and_marks_the_run() {
    let h = home("sigkill");
    let spec = job(&h, "orphan", "orphan", "exit 143");
    let mut cli = spawn(&h, &["run", spec.to_str().unwrap()]);
    let pgid = wait_for_pid(&h, "orphan");
    // The job starts inside "Launch task"; wait until run-job is waiting for
    // it (a busy machine may take a moment) before killing stevedore, so
    // the history has something written as it went.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = runs(&h);
        if let Some(id) = listed.first().and_then(|r| r["runId"].as_str()) {
            if history_types(&h, id).iter().any(|t| t == "TaskSubmitted") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "run-job never waited for the job"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cli.kill().unwrap();
    cli.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !group_members(pgid).is_empty(),
        "the job outlived stevedore"
    );

    let out = stevedore(&h, &["runs", "list", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("stopped job process group {pgid}")),
        "{stderr}"
    );
    assert_eq!(group_members(pgid), Vec::<u32>::new(), "the job is gone");
    let run: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(run["status"], json!("FAILED"));
    assert_eq!(run["outcome"]["class"], json!("KilledByInfrastructure"));
    assert!(run["outcome"]["message"]
        .as_str()
        .unwrap()
        .contains("stevedore exited while the job ran"));
    // The history was written as the execution went, and is closed now.
    let types = history_types(&h, run["runId"].as_str().unwrap());
    assert!(types.iter().any(|t| t == "TaskSubmitted"), "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("ExecutionAborted"));
    // The slot is free, and a second look finds nothing more to do.
    let again = stevedore(&h, &["run", quick_job(&h, "orphan").to_str().unwrap()]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert!(!String::from_utf8_lossy(&again.stderr).contains("stopped job process group"));
}

#[test]
fn two_runs_of_one_job_at_once_respect_its_concurrency() {
    let h = home("two");
    let spec = job(&h, "single", "single", "exit 143");
    let first = spawn(&h, &["run", spec.to_str().unwrap(), "--stop-grace", "5"]);
    wait_for_pid(&h, "single");
    // whenBusy fail: the second is refused at once (no 30 s wait for a
    // task that cannot exist), and names the holder.
    let started = Instant::now();
    let second = stevedore(&h, &["run", quick_job(&h, "single").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED (JobAlreadyRunning)"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // whenBusy skip: recorded SKIPPED, and the execution succeeds.
    let skip = json!({
        "job": "single", "taskDefinition": "single", "container": "app",
        "command": ["true"], "timeout": "1m",
        "concurrency": {"max": 1, "whenBusy": "skip"}
    });
    let skip_path = h.join("skip.json");
    std::fs::write(&skip_path, skip.to_string()).unwrap();
    let skipped = stevedore(&h, &["run", skip_path.to_str().unwrap()]);
    assert!(
        skipped.status.success(),
        "{}",
        String::from_utf8_lossy(&skipped.stdout)
    );
    let statuses: Vec<String> = runs(&h)
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect();
    assert!(statuses.contains(&"SKIPPED".to_string()), "{statuses:?}");

    signal(first.id(), "-INT");
    let (code, _, _) = finish(first);
    assert_eq!(code, Some(130));
}
