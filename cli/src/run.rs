//! `stevedore run JOB.json`: the real run-job state machine and handlers,
//! the job's command as a local process. Ctrl-C (SIGINT) or SIGTERM stops
//! the job as StopExecution would on AWS: the job gets SIGTERM, then
//! SIGKILL after its grace (a second Ctrl-C kills it at once); the run is
//! recorded CANCELLED; the history is kept; the slot is freed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use stevedore_domain::duration::format_duration;
use stevedore_domain::ports::{Clock, RunStore};
use stevedore_domain::run::RunRecord;
use stevedore_domain::JobSpec;
use stevedore_engine::{HistoryEvent, Status};
use stevedore_local::{
    ConsoleNotifier, LocalClock, LocalPlane, PlaneConfig, ProcessSettings, ProcessTaskRunner,
};
use tokio::signal::unix::{signal, SignalKind};

use crate::out::{clock_time, color, say, tell};
use crate::{read_json, read_secrets, recover, Home};

#[derive(Args)]
pub struct RunArgs {
    /// The job spec (JSON).
    job: PathBuf,
    /// The execution name (default: <job>-<UTC time>); names are unique per home, as in Step Functions.
    #[arg(long)]
    name: Option<String>,
    /// KEY=VALUE lines: the secrets a task definition would inject (default: <home>/secrets.env if present).
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// The interval the run processes (a date or RFC 3339 time): sets the spec's `logicalTime`.
    #[arg(long)]
    logical_time: Option<String>,
    /// Seconds between safety polls when no task event arrives.
    #[arg(long, default_value_t = 900)]
    check_interval: u64,
    /// Seconds between SIGTERM and SIGKILL when a task is stopped.
    #[arg(long, default_value_t = 30)]
    stop_grace: u64,
    /// Do not print the job's output as it runs (it is still in the log file).
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    home: Home,
}

/// How the command ended when a signal interrupted it.
struct Interrupted {
    signal: &'static str,
    exit: u8,
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let mut spec_value = read_json(&args.job)?;
    if let Some(t) = &args.logical_time {
        crate::backfill::set_logical_time(&mut spec_value, t)?;
    }
    let spec = match JobSpec::from_value(&spec_value) {
        Ok(s) => s,
        Err(e) => {
            tell!("{}: InvalidJobSpec: {e}", args.job.display());
            return Ok(ExitCode::from(2));
        }
    };
    if spec.command.is_none() {
        bail!("{}: local mode runs the job's `command` as a process; add `command` (and `container`) to the spec", args.job.display());
    }
    // Signals are ours from here on: a Ctrl-C before the job starts ends
    // the command cleanly too.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let home = args.home.dir();
    let secrets = match &args.secrets {
        Some(p) => read_secrets(p)?,
        None if home.join("secrets.env").exists() => read_secrets(&home.join("secrets.env"))?,
        None => BTreeMap::new(),
    };
    let (_, unmasked) = stevedore_local::output::Masker::new(&secrets);
    if !unmasked.is_empty() {
        tell!(
            "stevedore: not masked in the output (values under {} characters): {}",
            stevedore_local::output::MASK_MIN_LEN,
            unmasked.join(", ")
        );
    }
    let store = args.home.store()?;
    let clock = Arc::new(LocalClock::new(time::OffsetDateTime::now_utc()));
    recover(&store, clock.as_ref()).await;
    let echo: Option<stevedore_local::tasks::LineEcho> = if args.quiet {
        None
    } else {
        Some(Arc::new(|_run: &str, line: &str| {
            say!("          {} {line}", color("2", "│"))
        }))
    };
    let runner = Arc::new(ProcessTaskRunner::new(
        clock.clone(),
        ProcessSettings {
            log_dir: home.join("logs"),
            secrets,
            stop_grace: Duration::from_secs(args.stop_grace),
            echo,
            ledger: Some(store.clone()),
        },
    ));
    let notifier = Arc::new(ConsoleNotifier::new(
        Arc::new(|text: &str| tell!("\n{}\n", color("31", text))),
        std::env::var("STEVEDORE_SLACK_WEBHOOK")
            .ok()
            .filter(|u| !u.is_empty()),
    ));
    // The history is written as the execution goes, so that it survives
    // whatever ends this process.
    let execution: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let observer = {
        let store = store.clone();
        let execution = execution.clone();
        Arc::new(move |e: &HistoryEvent| {
            progress(e);
            if let (Some(arn), Ok(event)) = (execution.get(), serde_json::to_value(e)) {
                if let Err(err) = store.append_event(arn, &event) {
                    tell!(
                        "stevedore: the history of {arn} is incomplete: {}",
                        err.message
                    );
                }
            }
        })
    };
    let plane = LocalPlane::new(
        store.clone(),
        runner.clone(),
        notifier,
        clock.clone(),
        PlaneConfig {
            check_interval_seconds: args.check_interval.clamp(1, 3600),
            retention_days: 400,
            observer: Some(observer),
            log_dir: Some(home.join("logs")),
            ..PlaneConfig::default()
        },
    )
    .map_err(|e| anyhow!("{}", e.message))?;
    let now = clock.start();
    let (name, arn) = execution_name(&plane, &store, &spec.job, args.name.as_deref(), now)?;
    if !store
        .begin_execution(&arn, &spec.job, &spec_value, now)
        .map_err(|e| anyhow!("{}", e.message))?
    {
        bail!("ExecutionAlreadyExists: another stevedore is running the execution `{name}`");
    }
    let _ = execution.set(arn.clone());
    say!(
        "{} {} ({}) — local mode, execution {name}",
        color("1", "stevedore run"),
        spec.job,
        args.job.display()
    );

    let mut running = Box::pin(plane.run_job(spec_value.clone(), &name));
    let ended = tokio::select! {
        outcome = &mut running => Ok(outcome),
        _ = sigint.recv() => Err(Interrupted { signal: "SIGINT", exit: 130 }),
        _ = sigterm.recv() => Err(Interrupted { signal: "SIGTERM", exit: 143 }),
    };
    // Whatever happened, the execution's future is over: dropping it is
    // what StopExecution does to the state machine.
    drop(running);
    let (status_line, code, cause) = match ended {
        Ok(outcome) => {
            let status = match outcome.status {
                Status::Succeeded => color("32", "SUCCEEDED"),
                _ => color(
                    "31",
                    &format!("FAILED ({})", outcome.error.as_deref().unwrap_or("?")),
                ),
            };
            let code = if outcome.status == Status::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
            (status, code, outcome.cause)
        }
        Err(stop) => {
            let cause = format!("{} to stevedore run", stop.signal);
            say!(
                "\n{} {}: stopping the job (SIGTERM now, SIGKILL after {}s; Ctrl-C again kills it now)",
                color("33", "■"),
                stop.signal,
                args.stop_grace
            );
            if let Err(e) = store.close_history(&arn, "StoppedByUser", &cause, clock.now()) {
                tell!("stevedore: {}", e.message);
            }
            {
                // The reaper's CANCELLED is written before the stop's event
                // is delivered, as EventBridge's delay would have it.
                let _held = runner.hold_events().await;
                plane.abort(&arn, &spec_value, &cause).await;
            }
            wait_for_jobs(&runner, args.stop_grace, &mut sigint, &mut sigterm).await;
            // The reaper held the job's slot through the stop's grace (on
            // ECS the container may run until then); here the job's
            // processes are known to have ended, so the slot is free now.
            if let Some(job) = spec_value.get("job").and_then(|j| j.as_str()) {
                if let Err(e) = store.release_slot(job, &arn).await {
                    tell!("stevedore: {}", e.message);
                }
            }
            (
                color("33", &format!("CANCELLED ({})", stop.signal)),
                ExitCode::from(stop.exit),
                Some(cause),
            )
        }
    };
    store
        .end_execution(&arn)
        .map_err(|e| anyhow!("{}", e.message))?;
    let runs = store
        .runs_of_execution(&arn)
        .await
        .map_err(|e| anyhow!("{}", e.message))?;
    let log = runs
        .last()
        .map(|r| home.join("logs").join(format!("{}.log", r.run_id)))
        .filter(|l| l.exists())
        .map(|l| l.display().to_string());
    summary(&status_line, cause.as_deref(), &runs, log);
    Ok(code)
}

/// The execution's name and ARN: the one asked for, which must be new, or
/// `<job>-<UTC time>` made unique.
fn execution_name(
    plane: &LocalPlane,
    store: &stevedore_local::SqliteRunStore,
    job: &str,
    asked: Option<&str>,
    now: time::OffsetDateTime,
) -> Result<(String, String)> {
    let known = |arn: &str| {
        store
            .execution_known(arn)
            .map_err(|e| anyhow!("{}", e.message))
    };
    if let Some(name) = asked {
        let arn = plane.execution_arn(name);
        if known(&arn)? {
            bail!("ExecutionAlreadyExists: an execution named `{name}` already ran in this home; give another --name");
        }
        return Ok((name.to_string(), arn));
    }
    let base = format!("{job}-{}", stevedore_domain::logical::compact(now));
    for n in 1..1000 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let arn = plane.execution_arn(&name);
        if !known(&arn)? {
            return Ok((name, arn));
        }
    }
    bail!("too many executions of `{job}` started this second")
}

/// Waits for the job's processes to end: SIGKILL comes after the grace
/// (the runner's own timer), or at once on a second signal.
async fn wait_for_jobs(
    runner: &ProcessTaskRunner,
    grace: u64,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(grace + 10);
    while runner.live() > 0 && tokio::time::Instant::now() < give_up {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = sigint.recv() => {
                say!("{} killing the job now (SIGKILL)", color("33", "■"));
                runner.kill_all();
            }
            _ = sigterm.recv() => runner.kill_all(),
        }
    }
    if runner.live() > 0 {
        runner.kill_all();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints the state machine's progress as it goes.
pub fn progress(e: &HistoryEvent) {
    let at = clock_time(e.timestamp);
    let state = e.state.as_deref().unwrap_or("");
    match e.kind.as_str() {
        k if k.ends_with("StateEntered") && k != "FailStateEntered" => {
            say!("{at}  {} {state}", color("36", "▸"))
        }
        // A wait's timeout is the routine safety poll: CatchTriggered shows it.
        "TaskFailed" => say!(
            "{at}    {} {}",
            color("33", "✗"),
            e.details["Error"].as_str().unwrap_or("")
        ),
        "CatchTriggered" => say!(
            "{at}    {} {} → {}",
            color("33", "↪"),
            e.details["error"].as_str().unwrap_or(""),
            e.details["next"].as_str().unwrap_or("")
        ),
        "ExecutionSucceeded" => say!("{at}  {}", color("32", "✔ execution succeeded")),
        "ExecutionFailed" => say!(
            "{at}  {} {}",
            color("31", "✘ execution failed:"),
            e.details["Error"].as_str().unwrap_or("")
        ),
        "ExecutionTimedOut" => say!("{at}  {}", color("31", "✘ execution timed out")),
        "ExecutionAborted" => say!("{at}  {}", color("33", "■ execution stopped")),
        _ => {}
    }
}

/// The run's duration as `runs list` shows it: from its creation to its end.
pub fn run_duration(r: &RunRecord) -> Option<u64> {
    r.finished_at
        .map(|f| (f - r.created_at).whole_seconds().max(0) as u64)
}

/// The run's summary after its execution ended; `log` says where its log is.
pub fn summary(status: &str, cause: Option<&str>, runs: &[RunRecord], log: Option<String>) {
    say!();
    say!("status     {status}");
    let Some(last) = runs.last() else {
        if let Some(cause) = cause {
            say!("cause      {cause}");
        }
        return;
    };
    say!("run        {}", last.run_id);
    if let Some(t) = last.logical_time {
        say!(
            "logical    {}",
            stevedore_domain::logical::format_logical(t)
        );
    }
    let retried = runs.len() > 1;
    if retried {
        say!("attempts   {} (at most {})", runs.len(), last.max_attempts);
    } else {
        say!("attempts   1");
    }
    if let Some(o) = &last.outcome {
        if let Some(class) = o.class {
            say!("error      {class}");
        }
        if !o.message.is_empty() {
            say!("outcome    {}", o.message);
        }
    }
    let exit = last
        .outcome
        .as_ref()
        .and_then(|o| o.exit_code)
        .map(|c| c.to_string())
        .unwrap_or_else(|| "-".into());
    say!("exit code  {exit}");
    // Each attempt's time, as `runs list` shows them, summed.
    let durations: Vec<u64> = runs.iter().filter_map(run_duration).collect();
    if !durations.is_empty() {
        say!("duration   {}", format_duration(durations.iter().sum()));
    }
    let costs: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.cost.as_ref().map(|c| c.usd))
        .collect();
    if costs.is_empty() {
        // A run stopped from outside (Ctrl-C) is recorded before its task
        // ends, so it has no estimate even though a task ran.
        let ran = runs.iter().any(|r| r.task_arn.is_some());
        say!(
            "cost       - ({})",
            if ran {
                "no estimate for this run"
            } else {
                "no task ran"
            }
        );
    } else {
        // Starting from +0.0: an empty f64 sum is -0.0.
        let cost = costs.iter().fold(0.0_f64, |a, b| a + b);
        say!(
            "cost       ${cost:.6} (Fargate estimate at {} prices)",
            runs.iter()
                .find_map(|r| r.cost.as_ref().map(|c| c.region.clone()))
                .unwrap_or_else(|| "default".into())
        );
    }
    if let Some(log) = log {
        say!("log        {log}");
    }
}
