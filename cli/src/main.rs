//! `stevedore`: run jobs and state machines on this machine (local mode),
//! and look at run history.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use stevedore_domain::duration::format_duration;
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::{RunQuery, RunRecord};
use stevedore_domain::task::format_time;
use stevedore_domain::{JobSpec, RunStatus};
use stevedore_engine::mocks::{MockCase, MockResources};
use stevedore_engine::{Definition, Engine, ExecutionOutcome, HistoryEvent, Resources, Status};
use stevedore_local::plane::{is_stevedore_call, local_substitutions, substitute};
use stevedore_local::{
    ConsoleNotifier, LocalClock, LocalPlane, PlaneConfig, ProcessSettings, ProcessTaskRunner,
    SqliteRunStore,
};

#[derive(Parser)]
#[command(
    name = "stevedore",
    version,
    about = "Run data jobs as containers on ECS Fargate — or, in local mode, as processes on this machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job spec locally: the real run-job state machine and handlers, the job's command as a local process.
    Run(RunArgs),
    /// Run history.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Check job specs and state machine definitions (*.asl.json).
    Validate {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run any state machine definition locally (what Step Functions Local did).
    Exec(ExecArgs),
}

#[derive(Args)]
struct Home {
    /// Where local runs, logs and secrets live.
    #[arg(long, env = "STEVEDORE_HOME", global = true)]
    home: Option<PathBuf>,
}

impl Home {
    fn dir(&self) -> PathBuf {
        self.home
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".stevedore")))
            .unwrap_or_else(|| PathBuf::from(".stevedore"))
    }
    fn store(&self) -> Result<Arc<SqliteRunStore>> {
        let path = self.dir().join("runs.db");
        Ok(Arc::new(
            SqliteRunStore::open(&path).map_err(|e| anyhow!("{}", e.message))?,
        ))
    }
}

#[derive(Args)]
struct RunArgs {
    /// The job spec (JSON).
    job: PathBuf,
    /// The execution name (default: <job>-<UTC time>).
    #[arg(long)]
    name: Option<String>,
    /// KEY=VALUE lines: the secrets a task definition would inject (default: <home>/secrets.env if present).
    #[arg(long)]
    secrets: Option<PathBuf>,
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

#[derive(Subcommand)]
enum RunsCommand {
    /// List runs, newest first.
    List {
        #[arg(long)]
        job: Option<String>,
        /// PENDING, RUNNING, STOPPING, STOPPED, SUCCEEDED, FAILED, SKIPPED or CANCELLED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        home: Home,
    },
    /// Show one run and its execution history.
    Show {
        run_id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        home: Home,
    },
}

#[derive(Args)]
struct ExecArgs {
    /// The state machine definition (ASL JSON).
    definition: PathBuf,
    /// The execution input: JSON text, a file, or - for standard input.
    #[arg(long, default_value = "{}")]
    input: String,
    /// A Step Functions Local MockConfigFile.
    #[arg(long, requires = "test_case")]
    mocks: Option<PathBuf>,
    /// The mock file's test case.
    #[arg(long)]
    test_case: Option<String>,
    /// The mock file's state machine (when it has several).
    #[arg(long)]
    state_machine: Option<String>,
    /// The execution name.
    #[arg(long, default_value = "local")]
    name: String,
    /// Print only {"status","output"} or {"status","error","cause"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    home: Home,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args).await,
        Command::Runs(RunsCommand::List {
            job,
            status,
            limit,
            json,
            home,
        }) => list(job, status, limit, json, &home).await,
        Command::Runs(RunsCommand::Show { run_id, json, home }) => show(&run_id, json, &home).await,
        Command::Validate { files } => validate(&files),
        Command::Exec(args) => exec(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{} is not valid JSON (line {}, column {}): {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

fn read_secrets(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secrets file {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("{} line {}: expected KEY=VALUE", path.display(), i + 1))?;
        out.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
    }
    Ok(out)
}

fn color(code: &str, text: &str) -> String {
    if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn clock_time(t: time::OffsetDateTime) -> String {
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

/// Prints the state machine's progress as it goes.
fn progress(e: &HistoryEvent) {
    let at = clock_time(e.timestamp);
    let state = e.state.as_deref().unwrap_or("");
    match e.kind.as_str() {
        k if k.ends_with("StateEntered") && k != "FailStateEntered" => {
            println!("{at}  {} {state}", color("36", "▸"))
        }
        // A wait's timeout is the routine safety poll: CatchTriggered shows it.
        "TaskFailed" => println!(
            "{at}    {} {}",
            color("33", "✗"),
            e.details["Error"].as_str().unwrap_or("")
        ),
        "CatchTriggered" => println!(
            "{at}    {} {} → {}",
            color("33", "↪"),
            e.details["error"].as_str().unwrap_or(""),
            e.details["next"].as_str().unwrap_or("")
        ),
        "ExecutionSucceeded" => println!("{at}  {}", color("32", "✔ execution succeeded")),
        "ExecutionFailed" => println!(
            "{at}  {} {}",
            color("31", "✘ execution failed:"),
            e.details["Error"].as_str().unwrap_or("")
        ),
        "ExecutionTimedOut" => println!("{at}  {}", color("31", "✘ execution timed out")),
        _ => {}
    }
}

async fn run(args: RunArgs) -> Result<ExitCode> {
    let spec_value = read_json(&args.job)?;
    let spec = match JobSpec::from_value(&spec_value) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: InvalidJobSpec: {e}", args.job.display());
            return Ok(ExitCode::from(2));
        }
    };
    if spec.command.is_none() {
        bail!("{}: local mode runs the job's `command` as a process; add `command` (and `container`) to the spec", args.job.display());
    }
    let home = args.home.dir();
    let secrets = match &args.secrets {
        Some(p) => read_secrets(p)?,
        None if home.join("secrets.env").exists() => read_secrets(&home.join("secrets.env"))?,
        None => BTreeMap::new(),
    };
    let store = args.home.store()?;
    let clock = Arc::new(LocalClock::new(time::OffsetDateTime::now_utc()));
    let echo: Option<stevedore_local::tasks::LineEcho> = if args.quiet {
        None
    } else {
        Some(Arc::new(|_run: &str, line: &str| {
            println!("          {} {line}", color("2", "│"))
        }))
    };
    let runner = Arc::new(ProcessTaskRunner::new(
        clock.clone(),
        ProcessSettings {
            log_dir: home.join("logs"),
            secrets,
            stop_grace: Duration::from_secs(args.stop_grace),
            echo,
        },
    ));
    let notifier = Arc::new(ConsoleNotifier::new(
        Arc::new(|text: &str| {
            let mut err = std::io::stderr();
            let _ = writeln!(err, "\n{}\n", color("31", text));
        }),
        std::env::var("STEVEDORE_SLACK_WEBHOOK")
            .ok()
            .filter(|u| !u.is_empty()),
    ));
    let plane = LocalPlane::new(
        store.clone(),
        runner.clone(),
        notifier,
        clock.clone(),
        PlaneConfig {
            check_interval_seconds: args.check_interval.clamp(1, 3600),
            retention_days: 400,
            observer: Some(Arc::new(progress)),
            log_dir: Some(home.join("logs")),
            ..PlaneConfig::default()
        },
    )
    .map_err(|e| anyhow!("{}", e.message))?;
    let now = clock.start();
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "{}-{:04}{:02}{:02}T{:02}{:02}{:02}",
            spec.job,
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        )
    });
    println!(
        "{} {} ({}) — local mode, execution {name}",
        color("1", "stevedore run"),
        spec.job,
        args.job.display()
    );
    let outcome = plane.run_job(spec_value, &name).await;
    store
        .save_history(
            &outcome.execution_arn,
            &serde_json::to_value(&outcome.history)?,
        )
        .map_err(|e| anyhow!("{}", e.message))?;
    let runs = store
        .runs_of_execution(&outcome.execution_arn)
        .await
        .map_err(|e| anyhow!("{}", e.message))?;
    summary(&outcome, &runs, &home);
    Ok(if outcome.status == Status::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn summary(outcome: &ExecutionOutcome, runs: &[RunRecord], home: &Path) {
    println!();
    let status = match outcome.status {
        Status::Succeeded => color("32", "SUCCEEDED"),
        _ => color(
            "31",
            &format!("FAILED ({})", outcome.error.as_deref().unwrap_or("?")),
        ),
    };
    println!("status     {status}");
    if let Some(last) = runs.last() {
        println!("run        {}", last.run_id);
        println!("attempts   {} of {}", runs.len(), last.max_attempts);
        let exit = last
            .outcome
            .as_ref()
            .and_then(|o| o.exit_code)
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        println!("exit code  {exit}");
        if let Some(o) = &last.outcome {
            if !o.message.is_empty() {
                println!("outcome    {}", o.message);
            }
        }
        let started = runs.first().map(|r| r.created_at);
        if let (Some(s), Some(f)) = (started, last.finished_at) {
            println!(
                "duration   {}",
                format_duration((f - s).whole_seconds().max(0) as u64)
            );
        }
        let cost: f64 = runs
            .iter()
            .filter_map(|r| r.cost.as_ref().map(|c| c.usd))
            .sum();
        println!(
            "cost       ${cost:.6} (Fargate estimate at {} prices)",
            runs.iter()
                .find_map(|r| r.cost.as_ref().map(|c| c.region.clone()))
                .unwrap_or_else(|| "default".into())
        );
        println!(
            "log        {}",
            home.join("logs")
                .join(format!("{}.log", last.run_id))
                .display()
        );
    } else if let Some(cause) = &outcome.cause {
        println!("cause      {cause}");
    }
}

async fn list(
    job: Option<String>,
    status: Option<String>,
    limit: u32,
    as_json: bool,
    home: &Home,
) -> Result<ExitCode> {
    let status = status
        .map(|s| s.parse::<RunStatus>())
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let store = home.store()?;
    let runs = match job {
        Some(job) => store.list_runs(&RunQuery { job, status, limit }).await,
        None => store.list_all(status, limit),
    }
    .map_err(|e| anyhow!("{}", e.message))?;
    if as_json {
        for r in &runs {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs yet (stevedore run <job.json> starts one)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 8]> = runs
        .iter()
        .map(|r| {
            let dur = r
                .finished_at
                .map(|f| format_duration((f - r.created_at).whole_seconds().max(0) as u64))
                .unwrap_or_else(|| "-".into());
            let o = r.outcome.as_ref();
            [
                r.run_id.clone(),
                r.job.clone(),
                r.status.to_string(),
                format!("{}/{}", r.attempt, r.max_attempts),
                format_time(r.created_at)
                    .chars()
                    .take(19)
                    .collect::<String>()
                    .replace('T', " "),
                dur,
                o.and_then(|o| o.exit_code)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                o.and_then(|o| o.class)
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "RUN",
        "JOB",
        "STATUS",
        "ATTEMPT",
        "STARTED (UTC)",
        "DURATION",
        "EXIT",
        "ERROR",
    ];
    let mut widths = header.map(|h| h.len());
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(&header.map(String::from)));
    for row in &rows {
        println!("{}", line(row));
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(run_id: &str, as_json: bool, home: &Home) -> Result<ExitCode> {
    let store = home.store()?;
    let Some(run) = store
        .get_run(run_id)
        .await
        .map_err(|e| anyhow!("{}", e.message))?
    else {
        bail!(
            "no run `{run_id}` in {} (stevedore runs list shows the runs)",
            home.dir().display()
        );
    };
    let history = store
        .history(&run.execution.id)
        .map_err(|e| anyhow!("{}", e.message))?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"run": run, "history": history}))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", serde_json::to_string_pretty(&run)?);
    if let Some(Value::Array(events)) = history {
        println!("\nexecution history ({})", run.execution.id);
        for e in events {
            println!(
                "{:>4}  {}  {:<24} {}",
                e["id"],
                e["timestamp"].as_str().unwrap_or(""),
                e["type"].as_str().unwrap_or(""),
                e["state"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(files: &[PathBuf]) -> Result<ExitCode> {
    let mut bad = 0;
    for f in files {
        let value = match read_json(f) {
            Ok(v) => v,
            Err(e) => {
                println!("{} {e}", color("31", "✘"));
                bad += 1;
                continue;
            }
        };
        if value.get("StartAt").is_some() && value.get("States").is_some() {
            // Placeholders (${...}) are filled as `sam deploy` would, with local names.
            let text = substitute(&value.to_string(), &local_substitutions());
            match Definition::parse(&text) {
                Ok(_) => println!(
                    "{} {}: a valid state machine",
                    color("32", "✔"),
                    f.display()
                ),
                Err(e) => {
                    bad += 1;
                    println!(
                        "{} {}: not a valid state machine:",
                        color("31", "✘"),
                        f.display()
                    );
                    for p in e.0 {
                        println!("  - {p}");
                    }
                }
            }
        } else {
            match JobSpec::from_value(&value) {
                Ok(s) => println!(
                    "{} {}: a valid job spec for `{}`",
                    color("32", "✔"),
                    f.display(),
                    s.job
                ),
                Err(e) => {
                    bad += 1;
                    println!("{} {}: {e}", color("31", "✘"), f.display());
                }
            }
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_input(input: &str) -> Result<Value> {
    let text = if input == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else if Path::new(input).is_file() {
        std::fs::read_to_string(input)?
    } else {
        input.to_string()
    };
    serde_json::from_str(&text)
        .map_err(|e| anyhow!("--input is not valid JSON (or a file of it): {e}"))
}

async fn exec(args: ExecArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.definition)
        .with_context(|| format!("cannot read {}", args.definition.display()))?;
    let text = substitute(&text, &local_substitutions());
    let def = Definition::parse(&text).map_err(|e| {
        anyhow!(
            "{} is not a valid state machine:\n{e}",
            args.definition.display()
        )
    })?;
    let input = read_input(&args.input)?;
    let machine = args.state_machine.clone().unwrap_or_else(|| {
        args.definition
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("local")
            .trim_end_matches(".asl")
            .to_string()
    });

    // Stevedore's own functions run in-process (with a local plane); other
    // Task resources answer from the mock file.
    let store = args.home.store()?;
    let clock = Arc::new(LocalClock::new(time::OffsetDateTime::now_utc()));
    let home = args.home.dir();
    let runner = Arc::new(ProcessTaskRunner::new(
        clock.clone(),
        ProcessSettings {
            log_dir: home.join("logs"),
            secrets: BTreeMap::new(),
            stop_grace: Duration::from_secs(30),
            echo: None,
        },
    ));
    let notifier = Arc::new(ConsoleNotifier::new(
        Arc::new(|t: &str| eprintln!("{t}")),
        None,
    ));
    let plane = LocalPlane::new(
        store,
        runner,
        notifier,
        clock.clone(),
        PlaneConfig::default(),
    )
    .map_err(|e| anyhow!("{}", e.message))?;
    let tokens = plane.tokens.clone();
    let stevedore: Arc<dyn Resources> = Arc::new(StevedoreOnly(plane.handlers.clone()));
    let resources: Arc<dyn Resources> = match &args.mocks {
        Some(path) => {
            let mocks = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let case = MockCase::from_file(
                &mocks,
                args.state_machine.as_deref(),
                args.test_case.as_deref().unwrap_or_default(),
            )
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            Arc::new(MockResources::new(case, tokens.clone(), Some(stevedore)))
        }
        None => stevedore,
    };
    let mut engine = Engine::new(resources)
        .with_epoch(clock.epoch().0, clock.epoch().1)
        .with_tokens(tokens);
    if !args.json {
        engine = engine.with_observer(Arc::new(|e: &HistoryEvent| {
            println!(
                "{:>4}  {}  {:<26} {}",
                e.id,
                clock_time(e.timestamp),
                e.kind,
                e.state.as_deref().unwrap_or("")
            );
        }));
    }
    let outcome = engine.execute(&def, &machine, &args.name, input).await;
    let body = match outcome.status {
        Status::Succeeded => json!({"status": "SUCCEEDED", "output": outcome.output}),
        s => {
            json!({"status": serde_json::to_value(s)?, "error": outcome.error, "cause": outcome.cause})
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&body)?);
    } else {
        println!("\n{}", serde_json::to_string_pretty(&body)?);
    }
    Ok(if outcome.status == Status::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Stevedore's functions; anything else is an error naming the state.
struct StevedoreOnly(Arc<stevedore_local::plane::Handlers>);

#[async_trait::async_trait]
impl Resources for StevedoreOnly {
    async fn call(
        &self,
        call: stevedore_engine::TaskCall,
    ) -> std::result::Result<Value, stevedore_engine::Failure> {
        if is_stevedore_call(&call) {
            self.0.call(call).await
        } else {
            Err(stevedore_engine::Failure::new(
                "States.Runtime",
                format!("Task state `{}` calls `{}`: give its responses in a mock file (--mocks FILE --test-case NAME)", call.state, call.resource),
            ))
        }
    }
}
