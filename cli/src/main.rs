//! `stevedore`: run jobs and state machines on this machine (local mode),
//! and look at run history.

mod backfill;
#[cfg(feature = "aws")]
mod backfill_stack;
mod logs;
mod operate;
mod out;
mod run;
#[cfg(feature = "aws")]
mod stack;
#[cfg(feature = "aws")]
mod stack_runs;
#[cfg(feature = "aws")]
mod start;
mod stats;
#[cfg(feature = "aws")]
mod stop;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::out::{clock_time, color, say, tell};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::RunQuery;
use stevedore_domain::{JobSpec, RunStatus};
use stevedore_engine::mocks::{MockCase, MockResources};
use stevedore_engine::{Definition, Engine, HistoryEvent, Resources, Status};
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
    #[command(flatten)]
    stack: operate::StackArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job spec locally: the real run-job state machine and handlers, the job's command as a local process.
    Run(run::RunArgs),
    /// Start a job on a deployed stack (--stack): StartExecution; --follow shows the steps and the run's summary.
    Start(operate::StartArgs),
    /// Run history: local, or a deployed stack's with --stack.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Print a run's log: the local log file, or with --stack the task's CloudWatch Logs stream.
    Logs(operate::LogsArgs),
    /// Stop a run on a deployed stack (--stack) and wait until it is CANCELLED.
    Stop(operate::StopArgs),
    /// Start a run's job again on a deployed stack (--stack), with the same input.
    Rerun(operate::RerunArgs),
    /// One run per logical time (--from/--to/--every, or --at), at most --max-parallel at once; locally or on a stack.
    Backfill(backfill::BackfillArgs),
    /// Check job specs and state machine definitions (*.asl.json).
    Validate {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run any state machine definition locally (what Step Functions Local did).
    ///
    /// Supported: every state type; JSONPath (InputPath, Parameters,
    /// ResultSelector, ResultPath, OutputPath, intrinsic functions) and
    /// JSONata (QueryLanguage, Arguments, Output, Condition, Items, {% %}
    /// expressions, $states, $partition/$range/$hash/$random/$uuid/$parse);
    /// workflow variables (Assign, $name); Retry and Catch; Map tolerated
    /// failures; task tokens and timeouts; AWS's quotas and error texts.
    /// Not supported: distributed Map's ItemReader, ItemBatcher and
    /// ResultWriter (rejected before running); JSONata functions the
    /// jsonata-rs crate lacks ($formatNumber, $average, $type, $eval, ...;
    /// an error naming them). A Task's Credentials are accepted and not
    /// used. Tasks call Stevedore's functions, or answer from --mocks.
    Exec(ExecArgs),
}

#[derive(Args)]
pub struct Home {
    /// Where local runs, logs and secrets live.
    #[arg(long, env = "STEVEDORE_HOME", global = true)]
    home: Option<PathBuf>,
}

impl Home {
    pub fn dir(&self) -> PathBuf {
        self.home
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".stevedore")))
            .unwrap_or_else(|| PathBuf::from(".stevedore"))
    }
    pub fn store(&self) -> Result<Arc<SqliteRunStore>> {
        let path = self.dir().join("runs.db");
        Ok(Arc::new(
            SqliteRunStore::open(&path).map_err(|e| anyhow!("{}", e.message))?,
        ))
    }
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
        /// Only runs created in this window: `2d`, `12h`.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        home: Home,
    },
    /// Per job: runs, success rate, p50/p95 duration, cost, last failure.
    Stats {
        #[arg(long)]
        job: Option<String>,
        /// How far back: `30d`, `12h`, `1d12h`.
        #[arg(long, default_value = "30d")]
        since: String,
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
    let stack = cli.stack;
    let remote = stack.name().is_some();
    let result = match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Start(args) if remote => operate::start(args, &stack).await,
        Command::Start(_) => Err(operate::needs_stack(
            "start",
            "`stevedore run JOB.json` runs a job on this machine",
        )),
        Command::Rerun(args) if remote => operate::rerun(args, &stack).await,
        Command::Rerun(_) => Err(operate::needs_stack(
            "rerun",
            "locally, `stevedore run JOB.json` runs the job again",
        )),
        Command::Stop(args) if remote => operate::stop(args, &stack).await,
        Command::Stop(_) => Err(operate::needs_stack(
            "stop",
            "a local run stops with Ctrl-C in the terminal that runs it",
        )),
        Command::Backfill(args) if remote => operate::backfill(args, &stack).await,
        Command::Backfill(args) => match backfill::LocalBackfill::new(&args.home).await {
            Ok(local) => backfill::backfill(args, Arc::new(local)).await,
            Err(e) => Err(e),
        },
        Command::Logs(args) if remote => operate::logs(args, &stack).await,
        Command::Logs(args) => logs::local(args).await,
        Command::Runs(RunsCommand::List {
            job,
            status,
            since,
            limit,
            json,
            home,
        }) => {
            let args = operate::ListArgs {
                job,
                status,
                since,
                limit,
                json,
            };
            if remote {
                operate::list(args, &stack).await
            } else {
                list(args, &home).await
            }
        }
        Command::Runs(RunsCommand::Show { run_id, json, .. }) if remote => {
            operate::show(&run_id, json, &stack).await
        }
        Command::Runs(RunsCommand::Show { run_id, json, home }) => show(&run_id, json, &home).await,
        Command::Runs(RunsCommand::Stats {
            job, since, json, ..
        }) if remote => operate::stats(job, since, json, &stack).await,
        Command::Runs(RunsCommand::Stats {
            job,
            since,
            json,
            home,
        }) => stats::stats(job, since, json, &home).await,
        Command::Validate { files } => validate(&files),
        Command::Exec(args) => exec(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tell!("error: {e:#}");
            #[cfg(feature = "aws")]
            if let Some(r) = e.downcast_ref::<stack::RemoteError>() {
                return r.exit_code();
            }
            ExitCode::from(2)
        }
    }
}

/// Cleans up after `stevedore` processes that died (see
/// `stevedore_local::recovery`), and says what it did.
pub async fn recover(store: &SqliteRunStore, clock: &dyn stevedore_domain::ports::Clock) {
    match stevedore_local::recovery::recover(store, clock).await {
        Ok(r) if r.is_empty() => {}
        Ok(r) => {
            for pid in &r.stopped_processes {
                tell!("stevedore: stopped job process group {pid}, left running by a stevedore that exited");
            }
            for run in &r.failed_runs {
                tell!(
                    "stevedore: run {run} marked FAILED (KilledByInfrastructure): {}",
                    stevedore_local::recovery::CAUSE
                );
            }
        }
        Err(e) => tell!(
            "stevedore: could not clean up after an earlier stevedore: {}",
            e.message
        ),
    }
}

pub fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // serde_json's message ends with the line and column.
    serde_json::from_str(&text).map_err(|e| anyhow!("{} is not valid JSON: {e}", path.display()))
}

pub fn read_secrets(path: &Path) -> Result<BTreeMap<String, String>> {
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

async fn list(args: operate::ListArgs, home: &Home) -> Result<ExitCode> {
    let operate::ListArgs {
        job,
        status,
        since,
        limit,
        json: as_json,
    } = args;
    let status = status
        .map(|s| s.parse::<RunStatus>())
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let store = home.store()?;
    recover(&store, &LocalClock::new(time::OffsetDateTime::now_utc())).await;
    let mut runs = match (&job, &since) {
        (Some(job), None) => {
            store
                .list_runs(&RunQuery {
                    job: job.clone(),
                    status,
                    limit,
                })
                .await
        }
        (None, None) => store.list_all(status, limit),
        // A window: every run in it, filtered here (the local store is small).
        (_, Some(since)) => {
            let from = stats::since_time(since, time::OffsetDateTime::now_utc())?;
            store.runs_since(job.as_deref(), from).map(|mut runs| {
                runs.retain(|r| status.is_none_or(|s| r.status == s));
                runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
                runs
            })
        }
    }
    .map_err(|e| anyhow!("{}", e.message))?;
    runs.truncate(limit as usize);
    if as_json {
        for r in &runs {
            say!("{}", serde_json::to_string(r)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        say!("no runs yet (stevedore run <job.json> starts one)");
        return Ok(ExitCode::SUCCESS);
    }
    for line in out::runs_table(&runs) {
        say!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(run_id: &str, as_json: bool, home: &Home) -> Result<ExitCode> {
    let store = home.store()?;
    recover(&store, &LocalClock::new(time::OffsetDateTime::now_utc())).await;
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
        say!(
            "{}",
            serde_json::to_string_pretty(&json!({"run": run, "history": history}))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    say!("{}", serde_json::to_string_pretty(&run)?);
    if let Some(Value::Array(events)) = history {
        say!("\nexecution history ({})", run.execution.id);
        for line in history_table(&events) {
            say!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// History events as aligned lines: id, UTC time to the millisecond,
/// type, state.
pub fn history_table(events: &[Value]) -> Vec<String> {
    let rows: Vec<[String; 4]> = events
        .iter()
        .map(|e| {
            let at = e["timestamp"].as_str().unwrap_or("");
            [
                e["id"].to_string(),
                stevedore_domain::task::parse_time(at)
                    .map(|t| {
                        let t = t.to_offset(time::UtcOffset::UTC);
                        format!("{} {}.{:03}", t.date(), clock_time(t), t.millisecond())
                    })
                    .unwrap_or_else(|| at.to_string()),
                e["type"].as_str().unwrap_or("").to_string(),
                e["state"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    rows.iter()
        .map(|r| {
            format!("{:>w0$}  {:<w1$}  {:<w2$}  {}", r[0], r[1], r[2], r[3])
                .trim_end()
                .to_string()
        })
        .collect()
}

fn validate(files: &[PathBuf]) -> Result<ExitCode> {
    let mut bad = 0;
    for f in files {
        let value = match read_json(f) {
            Ok(v) => v,
            Err(e) => {
                say!("{} {e:#}", color("31", "✘"));
                bad += 1;
                continue;
            }
        };
        if value.get("StartAt").is_some() && value.get("States").is_some() {
            // Placeholders (${...}) are filled as `sam deploy` would, with local names.
            let text = substitute(&value.to_string(), &local_substitutions());
            match Definition::parse(&text) {
                Ok(_) => say!(
                    "{} {}: a valid state machine",
                    color("32", "✔"),
                    f.display()
                ),
                Err(e) => {
                    bad += 1;
                    say!(
                        "{} {}: not a valid state machine:",
                        color("31", "✘"),
                        f.display()
                    );
                    for p in e.0 {
                        say!("  - {p}");
                    }
                }
            }
        } else {
            match JobSpec::from_value(&value) {
                Ok(s) => say!(
                    "{} {}: a valid job spec for `{}`",
                    color("32", "✔"),
                    f.display(),
                    s.job
                ),
                Err(e) => {
                    bad += 1;
                    say!("{} {}: {e}", color("31", "✘"), f.display());
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
            ledger: None,
        },
    ));
    let notifier = Arc::new(ConsoleNotifier::new(Arc::new(|t: &str| tell!("{t}")), None));
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
            say!(
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
        say!("{}", serde_json::to_string(&body)?);
    } else {
        say!("\n{}", serde_json::to_string_pretty(&body)?);
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
