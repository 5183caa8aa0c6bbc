//! The generic runner's entrypoint (`examples/runner/entrypoint.sh`), run as
//! the container would run it — without Docker: against a local git
//! repository, with real processes and real signals.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use stevedore_integration_tests::unique;

const APP: &str = r#"import os, signal, sys, time
VERSION = "__VERSION__"

def stop(*_):
    print("graceful stop", flush=True)
    sys.exit(int(os.environ.get("STOP_CODE", "0")))

signal.signal(signal.SIGTERM, stop)
mode = sys.argv[1] if len(sys.argv) > 1 else "print"
if mode == "print":
    print(VERSION, "venv" if sys.prefix != sys.base_prefix else "system", flush=True)
elif mode == "exit":
    sys.exit(int(sys.argv[2]))
elif mode == "sleep":
    print("ready", flush=True)
    time.sleep(60)
    print("not stopped", flush=True)
"#;

struct Repo {
    root: PathBuf,
    dir: PathBuf,
    v1: String,
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(dir: &Path, version: &str, message: &str) -> String {
    std::fs::write(dir.join("app.py"), APP.replace("__VERSION__", version)).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// main: v1 (tagged v1) then v2; branch `feature`: v3. With a requirements file.
fn repo() -> Repo {
    let root = std::env::temp_dir().join(unique("stevedore-runner"));
    let dir = root.join("origin");
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("requirements.txt"), "# no third-party packages\n").unwrap();
    let v1 = commit(&dir, "v1", "v1");
    git(&dir, &["tag", "v1"]);
    commit(&dir, "v2", "v2");
    git(&dir, &["checkout", "--quiet", "-b", "feature"]);
    commit(&dir, "v3", "v3");
    git(&dir, &["checkout", "--quiet", "main"]);
    Repo { root, dir, v1 }
}

fn entrypoint() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/runner/entrypoint.sh")
}

fn runner(repo: &Repo, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(entrypoint())
        .args(args)
        .env("WORK_DIR", repo.root.join("work"))
        .env_remove("APP_REPO")
        .env_remove("APP_REF")
        .env_remove("GIT_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(repo: &Repo, env: &[(&str, &str)], args: &[&str]) -> Output {
    runner(repo, env, args).output().expect("entrypoint runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn runs_the_app_at_the_default_branch_a_tag_a_branch_and_a_commit_in_its_venv() {
    let r = repo();
    let url = r.dir.to_str().unwrap().to_string();
    for (git_ref, expected) in [
        ("", "v2"),
        ("v1", "v1"),
        ("feature", "v3"),
        (r.v1.as_str(), "v1"),
        ("main", "v2"),
    ] {
        let out = run(
            &r,
            &[("APP_REPO", &url), ("APP_REF", git_ref)],
            &["python", "app.py", "print"],
        );
        assert!(out.status.success(), "ref {git_ref:?}: {}", stderr(&out));
        // requirements.txt was installed into a venv the command runs in.
        assert_eq!(
            stdout(&out),
            format!("{expected} venv"),
            "ref {git_ref:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn the_exit_code_is_the_apps() {
    let r = repo();
    let url = r.dir.to_str().unwrap().to_string();
    let out = run(
        &r,
        &[("APP_REPO", &url)],
        &["python", "app.py", "exit", "3"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn sigterm_reaches_the_app_which_stops_gracefully_with_its_own_exit_code() {
    let r = repo();
    let url = r.dir.to_str().unwrap().to_string();
    for stop_code in ["0", "7"] {
        let mut child = runner(
            &r,
            &[("APP_REPO", &url), ("STOP_CODE", stop_code)],
            &["python", "app.py", "sleep"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn entrypoint");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a line").expect("utf-8");
        assert_eq!(first, "ready");
        let started = Instant::now();
        // What ECS does on StopTask or a timeout: SIGTERM to the container's process.
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = child.wait().unwrap();
        let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
        assert_eq!(rest, vec!["graceful stop".to_string()]);
        assert_eq!(status.code(), Some(stop_code.parse().unwrap()));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the app was not stopped by the signal"
        );
    }
}

#[test]
fn a_baked_in_app_runs_without_git() {
    let r = repo();
    let baked = r.root.join("baked");
    std::fs::create_dir_all(&baked).unwrap();
    std::fs::write(baked.join("app.py"), APP.replace("__VERSION__", "baked")).unwrap();
    let out = run(
        &r,
        &[("APP_DIR", baked.to_str().unwrap())],
        &["python3", "app.py", "print"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "baked system", "no requirements.txt: no venv");
}

#[test]
fn runner_failures_have_their_own_exit_codes_and_never_print_credentials() {
    let r = repo();
    let url = r.dir.to_str().unwrap().to_string();
    // No command.
    let out = run(&r, &[("APP_REPO", &url)], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("no command to run"),
        "{}",
        stderr(&out)
    );
    // A ref that does not exist.
    let out = run(
        &r,
        &[("APP_REPO", &url), ("APP_REF", "no-such-ref")],
        &["python", "app.py"],
    );
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("'no-such-ref' is neither a branch, a tag nor a commit"),
        "{}",
        stderr(&out)
    );
    // A private repository that cannot be reached: neither the URL's password nor the token shows.
    let out = run(
        &r,
        &[
            ("APP_REPO", "https://etl:hunter2@127.0.0.1:9/acme/etl.git"),
            ("GIT_TOKEN", "tok-SECRET-123"),
        ],
        &["python", "app.py"],
    );
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !text.contains("hunter2") && !text.contains("tok-SECRET-123"),
        "{text}"
    );
    assert!(
        text.contains("https://[REDACTED]@127.0.0.1:9/acme/etl.git"),
        "{text}"
    );
    // A requirements file that cannot be installed.
    std::fs::write(
        r.dir.join("requirements.txt"),
        "this is not a requirement ===\n",
    )
    .unwrap();
    git(&r.dir, &["commit", "--quiet", "-am", "bad requirements"]);
    let out = run(&r, &[("APP_REPO", &url)], &["python", "app.py"]);
    assert_eq!(out.status.code(), Some(70), "{}", stderr(&out));
}
