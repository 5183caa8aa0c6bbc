//! `stevedore backfill JOB.json --from 2026-11-01 --to 2026-11-30 [--every
//! 1d] [--max-parallel N] [--force] [--stack S]`: one execution per logical
//! time (see `stevedore_domain::logical`), at most N at a time, locally or on
//! a stack; a progress line, then a summary table with the command that
//! runs just the failed ones again. Logical times that already succeeded
//! (any run of the job with that logical time, scheduled ones included)
//! are skipped unless `--force`.
//!
//! Execution names are `<job>-<logical time>` (`orders-20261101T000000`):
//! a second backfill started beside the first gets Step Functions' answer
//! for a name in use (the same execution back, while it runs), not a second
//! run. A logical time whose earlier execution ended without success gets
//! `-2`, `-3`, ... on the name.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use async_trait::async_trait;
use clap::Args;
use serde_json::{json, Value};
use stevedore_domain::duration::{format_duration, parse_duration};
use stevedore_domain::logical::{format_logical, short};
use stevedore_domain::run::RunRecord;
use stevedore_domain::{JobSpec, RunStatus};
use time::OffsetDateTime;

use crate::out::{color, say, tell};
use crate::Home;

/// More than this many runs in one backfill is a typo more often than a plan.
pub const MAX_RUNS: usize = 1000;

#[derive(Args)]
pub struct BackfillArgs {
    /// The job spec (JSON); each run gets it with `logicalTime` set.
    pub job: PathBuf,
    /// The first logical time: a date (midnight UTC) or an RFC 3339 time.
    #[arg(long)]
    pub from: Option<String>,
    /// The last logical time (included).
    #[arg(long)]
    pub to: Option<String>,
    /// The step from --from to --to: `1d`, `6h`, `30m`.
    #[arg(long, default_value = "1d")]
    pub every: String,
    /// One logical time to run (repeatable; with or instead of --from/--to).
    #[arg(long = "at")]
    pub at: Vec<String>,
    /// How many executions run at once (the job's `concurrency.max` caps it).
    #[arg(long, default_value_t = 1)]
    pub max_parallel: usize,
    /// Run logical times that already succeeded, too.
    #[arg(long)]
    pub force: bool,
    /// Seconds between looks at running executions (on a stack).
    #[arg(long, default_value_t = 2.0, hide = true)]
    pub poll: f64,
    #[command(flatten)]
    pub home: Home,
}

/// A date (`2026-11-01`, midnight UTC) or an RFC 3339 time.
pub fn parse_when(s: &str) -> Result<OffsetDateTime, String> {
    let s = s.trim();
    if let Ok(d) = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc());
    }
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| {
        format!("`{s}` is neither a date (2026-11-01) nor an RFC 3339 time (2026-11-01T06:00:00Z)")
    })
}

/// `--logical-time T` of `run` and `start`: the spec's `logicalTime`.
pub fn set_logical_time(spec: &mut Value, when: &str) -> Result<()> {
    let t = parse_when(when).map_err(|e| anyhow!("--logical-time {e}"))?;
    if let Some(obj) = spec.as_object_mut() {
        obj.insert("logicalTime".into(), json!(format_logical(t)));
    }
    Ok(())
}

/// The logical times the arguments name, sorted, without duplicates.
pub fn logical_times(args: &BackfillArgs) -> Result<Vec<OffsetDateTime>> {
    let mut times = BTreeSet::new();
    for a in &args.at {
        times.insert(parse_when(a).map_err(|e| anyhow!("--at {e}"))?);
    }
    match (&args.from, &args.to) {
        (Some(from), Some(to)) => {
            let from = parse_when(from).map_err(|e| anyhow!("--from {e}"))?;
            let to = parse_when(to).map_err(|e| anyhow!("--to {e}"))?;
            if to < from {
                bail!(
                    "--to {} is before --from {}",
                    format_logical(to),
                    format_logical(from)
                );
            }
            let every = parse_duration(&args.every).map_err(|e| anyhow!("--every {e}"))?;
            if every < 60 {
                bail!("--every {}: at least one minute", args.every);
            }
            let step = time::Duration::seconds(every.min(i64::MAX as u64) as i64);
            let mut t = from;
            while t <= to {
                times.insert(t);
                if times.len() > MAX_RUNS {
                    break;
                }
                match t.checked_add(step) {
                    Some(next) => t = next,
                    None => break,
                }
            }
        }
        (None, None) => {}
        _ => bail!("--from and --to go together"),
    }
    if times.is_empty() {
        bail!(
            "name the logical times: --from DATE --to DATE [--every 1d], or --at TIME (repeatable)"
        );
    }
    if times.len() > MAX_RUNS {
        bail!("that is more than {MAX_RUNS} runs; split the backfill, or use a longer --every");
    }
    Ok(times.into_iter().collect())
}

/// `orders-20261101T000000` (the job name shortened to keep 80 characters
/// with a `-NN` suffix).
pub fn execution_name(job: &str, t: OffsetDateTime, n: u32) -> String {
    let stamp = stevedore_domain::logical::compact(t);
    let job: String = job.chars().take(80 - 1 - stamp.len() - 4).collect();
    if n <= 1 {
        format!("{job}-{stamp}")
    } else {
        format!("{job}-{stamp}-{n}")
    }
}

/// How one logical time went.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub status: String,
    pub execution: String,
    pub run_id: Option<String>,
    pub duration: Option<u64>,
    pub error: Option<String>,
}

impl Done {
    /// A logical time that did not get an execution of its own here.
    fn without_run(status: &str, error: String) -> Done {
        Done {
            status: status.into(),
            execution: String::new(),
            run_id: None,
            duration: None,
            error: Some(error),
        }
    }

    pub fn from_runs(
        status: &str,
        execution: &str,
        runs: &[RunRecord],
        error: Option<String>,
    ) -> Done {
        let last = runs.iter().max_by_key(|r| r.attempt);
        Done {
            status: status.to_string(),
            execution: execution.to_string(),
            run_id: last.map(|r| r.run_id.clone()),
            duration: {
                let d: Vec<u64> = runs.iter().filter_map(crate::run::run_duration).collect();
                (!d.is_empty()).then(|| d.iter().sum())
            },
            error: error.or_else(|| {
                last.and_then(|r| r.outcome.as_ref())
                    .and_then(|o| o.class)
                    .map(|c| c.to_string())
            }),
        }
    }
}

/// Where the executions run: this machine, or a stack.
#[async_trait]
pub trait Backfiller: Send + Sync {
    /// The logical times (as [`format_logical`] writes them) of the job's
    /// runs that succeeded.
    async fn succeeded(&self, job: &str) -> Result<BTreeSet<String>>;
    /// Runs the job once for `t` (the spec's `logicalTime` set in `input`)
    /// and waits for the end.
    async fn run(&self, t: OffsetDateTime, job: &str, input: Value) -> Result<Done>;
    /// Stops whatever is running (Ctrl-C).
    async fn cancel(&self) {}
    /// `--stack S` for the commands it prints.
    fn stack_flag(&self) -> String {
        String::new()
    }
}

/// Runs the backfill with `backfiller`.
pub async fn backfill(args: BackfillArgs, backfiller: Arc<dyn Backfiller>) -> Result<ExitCode> {
    let value = crate::read_json(&args.job)?;
    let spec = match JobSpec::from_value(&value) {
        Ok(s) => s,
        Err(e) => {
            tell!("{}: InvalidJobSpec: {e}", args.job.display());
            return Ok(ExitCode::from(2));
        }
    };
    let times = logical_times(&args)?;
    let mut parallel = args.max_parallel.max(1);
    if parallel > spec.concurrency.max as usize {
        tell!(
            "note: --max-parallel {parallel} is more than the job's concurrency.max ({}): running {} at a time (raise concurrency.max in the spec to run more)",
            spec.concurrency.max,
            spec.concurrency.max
        );
        parallel = spec.concurrency.max as usize;
    }
    let done_before = if args.force {
        BTreeSet::new()
    } else {
        backfiller.succeeded(&spec.job).await?
    };
    let mut results: BTreeMap<OffsetDateTime, Done> = BTreeMap::new();
    let mut queue = Vec::new();
    for t in &times {
        if done_before.contains(&format_logical(*t)) {
            results.insert(*t, Done::without_run("SKIPPED", "already succeeded".into()));
        } else {
            queue.push(*t);
        }
    }
    say!(
        "{} {}: {} logical times, {} to run ({} already succeeded), {} at a time",
        color("1", "stevedore backfill"),
        spec.job,
        times.len(),
        queue.len(),
        times.len() - queue.len(),
        parallel
    );
    let mut progress = Progress::new(queue.len());
    let mut pending = queue.into_iter();
    let mut running = tokio::task::JoinSet::new();
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut interrupted = false;
    loop {
        while !interrupted && running.len() < parallel {
            let Some(t) = pending.next() else { break };
            let mut input = value.clone();
            if let Some(obj) = input.as_object_mut() {
                obj.insert("logicalTime".into(), json!(format_logical(t)));
                // One scheduled time would let only one of the runs go.
                obj.remove("scheduledTime");
            }
            let b = backfiller.clone();
            let job = spec.job.clone();
            running.spawn(async move { (t, b.run(t, &job, input).await) });
            progress.started();
        }
        progress.draw();
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { break };
                let (t, outcome) = joined.map_err(|e| anyhow!("a backfill run panicked: {e}"))?;
                let done = outcome.unwrap_or_else(|e| Done::without_run("ERROR", format!("{e:#}")));
                progress.finished(t, &done);
                results.insert(t, done);
            }
            _ = sigint.recv() => {
                progress.clear();
                if interrupted {
                    // A second Ctrl-C: leave now. Locally, the next stevedore
                    // command stops what is left (see `stevedore_local::recovery`).
                    tell!("{} SIGINT again: exiting without waiting", color("31", "■"));
                    std::process::exit(130);
                }
                interrupted = true;
                tell!("{} SIGINT: stopping the running executions (Ctrl-C again to leave at once); nothing new starts", color("33", "■"));
                backfiller.cancel().await;
            }
        }
    }
    progress.clear();
    for t in pending {
        results.insert(t, Done::without_run("NOT STARTED", "interrupted".into()));
    }
    summary(&args, &results, &backfiller.stack_flag());
    let failed = results
        .values()
        .any(|d| !matches!(d.status.as_str(), "SUCCEEDED" | "SKIPPED"));
    Ok(if interrupted {
        ExitCode::from(130)
    } else if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn summary(args: &BackfillArgs, results: &BTreeMap<OffsetDateTime, Done>, stack: &str) {
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|(t, d)| {
            [
                short(*t),
                d.status.clone(),
                d.run_id.clone().unwrap_or_else(|| "-".into()),
                d.duration
                    .map(format_duration)
                    .unwrap_or_else(|| "-".into()),
                d.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    say!();
    for line in crate::out::table(
        &["LOGICAL TIME", "STATUS", "RUN", "DURATION", "ERROR"],
        &rows,
    ) {
        say!("{line}");
    }
    let count = |s: &str| results.values().filter(|d| d.status == s).count();
    let (ok, skipped) = (count("SUCCEEDED"), count("SKIPPED"));
    let failed: Vec<&OffsetDateTime> = results
        .iter()
        .filter(|(_, d)| !matches!(d.status.as_str(), "SUCCEEDED" | "SKIPPED"))
        .map(|(t, _)| t)
        .collect();
    say!(
        "\n{ok} succeeded, {} did not, {skipped} skipped (succeeded before)",
        failed.len()
    );
    if !failed.is_empty() {
        let ats: Vec<String> = failed
            .iter()
            .map(|t| format!("--at {}", format_logical(**t)))
            .collect();
        say!(
            "run just those again: stevedore backfill {} {}{}{}",
            args.job.display(),
            ats.join(" "),
            if args.max_parallel > 1 {
                format!(" --max-parallel {}", args.max_parallel)
            } else {
                String::new()
            },
            stack
        );
        say!("(the same backfill command again also runs only what has not succeeded)");
    }
}

/// The progress line: redrawn in place on a terminal, one line per finished
/// run otherwise.
struct Progress {
    total: usize,
    started: usize,
    finished: usize,
    ok: usize,
    failed: usize,
    terminal: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            started: 0,
            finished: 0,
            ok: 0,
            failed: 0,
            terminal: std::io::stdout().is_terminal(),
        }
    }
    fn started(&mut self) {
        self.started += 1;
    }
    fn finished(&mut self, t: OffsetDateTime, d: &Done) {
        self.finished += 1;
        if d.status == "SUCCEEDED" {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        self.clear();
        let mark = if d.status == "SUCCEEDED" {
            color("32", "✔")
        } else {
            color("31", "✘")
        };
        say!(
            "{mark} {}  {}{}",
            short(t),
            d.status,
            d.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    fn line(&self) -> String {
        const WIDTH: usize = 30;
        let filled = (self.finished * WIDTH)
            .checked_div(self.total)
            .unwrap_or(WIDTH);
        format!(
            "[{}{}] {}/{} done, {} running, {} ok, {} failed",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.finished,
            self.total,
            self.started - self.finished,
            self.ok,
            self.failed
        )
    }
    fn draw(&self) {
        if self.terminal {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r{}\x1b[K", self.line());
            let _ = out.flush();
        }
    }
    fn clear(&self) {
        if self.terminal {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[K");
            let _ = out.flush();
        }
    }
}

/// Backfill on this machine: each logical time is `stevedore run`'s
/// execution (the real run-job state machine and handlers, the job's
/// command as a process), with its own plane; the history is kept as
/// `stevedore run` keeps it.
pub struct LocalBackfill {
    home: PathBuf,
    store: Arc<stevedore_local::SqliteRunStore>,
    secrets: BTreeMap<String, String>,
    stop_grace: u64,
    slack: Option<String>,
    cancel: tokio::sync::watch::Sender<bool>,
}

impl LocalBackfill {
    pub async fn new(home: &Home) -> Result<LocalBackfill> {
        let dir = home.dir();
        let store = home.store()?;
        crate::recover(
            &store,
            &stevedore_local::LocalClock::new(OffsetDateTime::now_utc()),
        )
        .await;
        let secrets = if dir.join("secrets.env").exists() {
            crate::read_secrets(&dir.join("secrets.env"))?
        } else {
            BTreeMap::new()
        };
        Ok(LocalBackfill {
            home: dir,
            store,
            secrets,
            stop_grace: 30,
            slack: std::env::var("STEVEDORE_SLACK_WEBHOOK")
                .ok()
                .filter(|u| !u.is_empty()),
            cancel: tokio::sync::watch::channel(false).0,
        })
    }
}

#[async_trait]
impl Backfiller for LocalBackfill {
    async fn succeeded(&self, job: &str) -> Result<BTreeSet<String>> {
        let runs = self
            .store
            .runs_since(Some(job), OffsetDateTime::UNIX_EPOCH)
            .map_err(|e| anyhow!("{}", e.message))?;
        Ok(runs
            .iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .filter_map(|r| r.logical_time.map(format_logical))
            .collect())
    }

    async fn run(&self, t: OffsetDateTime, job: &str, input: Value) -> Result<Done> {
        use std::sync::OnceLock;
        use stevedore_domain::ports::{Clock, RunStore};
        use stevedore_local::{
            ConsoleNotifier, LocalClock, LocalPlane, PlaneConfig, ProcessSettings,
            ProcessTaskRunner,
        };

        let clock = Arc::new(LocalClock::new(OffsetDateTime::now_utc()));
        // A runner of its own: task events go to this plane's engine.
        let runner = Arc::new(ProcessTaskRunner::new(
            clock.clone(),
            ProcessSettings {
                log_dir: self.home.join("logs"),
                secrets: self.secrets.clone(),
                stop_grace: std::time::Duration::from_secs(self.stop_grace),
                echo: None,
                ledger: Some(self.store.clone()),
            },
        ));
        // Alerts still go to Slack when configured; the summary lists the failures.
        let notifier = Arc::new(ConsoleNotifier::new(
            Arc::new(|_: &str| {}),
            self.slack.clone(),
        ));
        let execution: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let observer = {
            let store = self.store.clone();
            let execution = execution.clone();
            Arc::new(move |e: &stevedore_engine::HistoryEvent| {
                if let (Some(arn), Ok(event)) = (execution.get(), serde_json::to_value(e)) {
                    let _ = store.append_event(arn, &event);
                }
            })
        };
        let plane = LocalPlane::new(
            self.store.clone(),
            runner.clone(),
            notifier,
            clock.clone(),
            PlaneConfig {
                observer: Some(observer),
                log_dir: Some(self.home.join("logs")),
                ..PlaneConfig::default()
            },
        )
        .map_err(|e| anyhow!("{}", e.message))?;
        let mut n = 1;
        let (name, arn) = loop {
            let name = execution_name(job, t, n);
            let arn = plane.execution_arn(&name);
            if !self
                .store
                .execution_known(&arn)
                .map_err(|e| anyhow!("{}", e.message))?
            {
                break (name, arn);
            }
            n += 1;
            if n > 99 {
                bail!(
                    "99 executions of {job} for {} already: pick another home",
                    format_logical(t)
                );
            }
        };
        if !self
            .store
            .begin_execution(&arn, job, &input, clock.start())
            .map_err(|e| anyhow!("{}", e.message))?
        {
            bail!("ExecutionAlreadyExists: another stevedore is running {name}");
        }
        let _ = execution.set(arn.clone());
        let mut cancelled = self.cancel.subscribe();
        let mut fut = Box::pin(plane.run_job(input.clone(), &name));
        let outcome = tokio::select! {
            o = &mut fut => Some(o),
            _ = cancelled.wait_for(|c| *c) => None,
        };
        drop(fut);
        let (status, error) = match outcome {
            Some(o) => (
                match o.status {
                    stevedore_engine::Status::Succeeded => "SUCCEEDED",
                    stevedore_engine::Status::Failed => "FAILED",
                    stevedore_engine::Status::TimedOut => "TIMED_OUT",
                },
                o.error,
            ),
            None => {
                let cause = "SIGINT to stevedore backfill";
                let _ = self
                    .store
                    .close_history(&arn, "StoppedByUser", cause, clock.now());
                {
                    let _held = runner.hold_events().await;
                    plane.abort(&arn, &input, cause).await;
                }
                let give_up = tokio::time::Instant::now()
                    + std::time::Duration::from_secs(self.stop_grace + 10);
                while runner.live() > 0 && tokio::time::Instant::now() < give_up {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                runner.kill_all();
                ("ABORTED", Some("StoppedByUser".to_string()))
            }
        };
        self.store
            .end_execution(&arn)
            .map_err(|e| anyhow!("{}", e.message))?;
        let runs = self
            .store
            .runs_of_execution(&arn)
            .await
            .map_err(|e| anyhow!("{}", e.message))?;
        Ok(Done::from_runs(status, &name, &runs, error))
    }

    async fn cancel(&self) {
        let _ = self.cancel.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn args(from: &str, to: &str, every: &str, at: &[&str]) -> BackfillArgs {
        BackfillArgs {
            job: PathBuf::from("job.json"),
            from: (!from.is_empty()).then(|| from.to_string()),
            to: (!to.is_empty()).then(|| to.to_string()),
            every: every.to_string(),
            at: at.iter().map(|s| s.to_string()).collect(),
            max_parallel: 1,
            force: false,
            poll: 2.0,
            home: Home { home: None },
        }
    }

    #[test]
    fn logical_times_from_ranges_and_ats() {
        let t = logical_times(&args("2026-11-01", "2026-11-30", "1d", &[])).unwrap();
        assert_eq!(t.len(), 30);
        assert_eq!(t[0], datetime!(2026-11-01 00:00 UTC));
        assert_eq!(t[29], datetime!(2026-11-30 00:00 UTC));
        let t = logical_times(&args(
            "2026-11-01",
            "2026-11-01T12:00:00Z",
            "6h",
            &["2026-11-01T03:00:00Z"],
        ))
        .unwrap();
        assert_eq!(t.len(), 4, "{t:?}");
        assert!(logical_times(&args("2026-11-02", "2026-11-01", "1d", &[])).is_err());
        assert!(logical_times(&args("2026-11-01", "", "1d", &[])).is_err());
        assert!(logical_times(&args("", "", "1d", &[])).is_err());
        assert!(logical_times(&args("2026-11-01", "2026-11-02", "10s", &[])).is_err());
        assert!(
            logical_times(&args("2020-01-01", "2026-01-01", "1h", &[])).is_err(),
            "too many"
        );
        assert!(logical_times(&args("", "", "1d", &["yesterday"])).is_err());
    }

    #[test]
    fn names_are_job_and_logical_time() {
        let t = datetime!(2026-11-01 06:00 UTC);
        assert_eq!(execution_name("orders", t, 1), "orders-20261101T060000");
        assert_eq!(execution_name("orders", t, 2), "orders-20261101T060000-2");
        let long = execution_name(&"j".repeat(64), t, 99);
        assert!(long.chars().count() <= 80, "{long}");
        assert!(long
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
