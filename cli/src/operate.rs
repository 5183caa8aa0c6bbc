//! The commands that operate a deployed stack (`--stack NAME` or
//! `STEVEDORE_STACK`): `start`, `rerun`, `stop`, `logs`, and `runs
//! list/show` on the stack's table. Their arguments live here; what they do
//! lives in `start.rs`, `stop.rs`, `logs.rs` and `stack_runs.rs`, built with
//! the `aws` feature (the default).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::Home;

/// Which stack a command operates, and how to reach AWS.
#[derive(Args, Clone, Debug, Default)]
pub struct StackArgs {
    /// Operate the deployed stack of this name (CloudFormation) instead of local mode.
    #[arg(long, env = "STEVEDORE_STACK", global = true)]
    pub stack: Option<String>,
    /// The AWS region (otherwise AWS_REGION, or the profile's).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// The AWS profile (otherwise AWS_PROFILE, or `default`).
    #[arg(long, global = true)]
    pub profile: Option<String>,
}

impl StackArgs {
    /// `Some(name)` when the command operates a stack.
    pub fn name(&self) -> Option<&str> {
        self.stack.as_deref().filter(|s| !s.trim().is_empty())
    }
}

#[derive(Args)]
pub struct StartArgs {
    /// The job spec (JSON): checked here before anything is sent.
    pub job: PathBuf,
    /// The execution name (default: <job>-<UTC time>-<random>); Step Functions refuses a name used in the last 90 days.
    #[arg(long)]
    pub name: Option<String>,
    /// Show the steps as they happen, then the run's summary; exit 0 if it succeeded, 1 if not.
    #[arg(long)]
    pub follow: bool,
    /// The interval the run processes (a date or RFC 3339 time): sets the spec's `logicalTime`.
    #[arg(long)]
    pub logical_time: Option<String>,
    /// Seconds between looks at the execution while following.
    #[arg(long, default_value_t = 2.0, hide = true)]
    pub poll: f64,
}

#[derive(Args)]
pub struct RerunArgs {
    /// The run to start again (its execution's input, or its recorded spec).
    pub run_id: String,
    /// The new execution's name (default: <old name>-rerun-<UTC time>).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub follow: bool,
    #[arg(long, default_value_t = 2.0, hide = true)]
    pub poll: f64,
}

#[derive(Args)]
pub struct StopArgs {
    /// A run id, or an execution ARN.
    pub target: String,
    /// Why: kept as the execution's cause and in the run's outcome.
    #[arg(long)]
    pub reason: Option<String>,
    /// How long to wait for the run to be CANCELLED (`90s`, `5m`).
    #[arg(long, default_value = "3m")]
    pub wait: String,
    /// Stop the execution and return at once.
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long, default_value_t = 2.0, hide = true)]
    pub poll: f64,
}

#[derive(Args)]
pub struct LogsArgs {
    /// The run whose task's log to print.
    pub run_id: String,
    /// Keep printing new lines until the run ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines (default: all of it).
    #[arg(long)]
    pub tail: Option<usize>,
    #[arg(long, default_value_t = 2.0, hide = true)]
    pub poll: f64,
    #[command(flatten)]
    pub home: Home,
}

/// The listing flags `runs list` shares between local mode and a stack.
pub struct ListArgs {
    pub job: Option<String>,
    pub status: Option<String>,
    pub since: Option<String>,
    pub limit: u32,
    pub json: bool,
}

#[cfg(feature = "aws")]
mod with_aws {
    use super::*;
    use crate::stack::Stack;

    async fn connect(stack: &StackArgs) -> Result<Stack> {
        Ok(crate::stack::connect(stack).await?)
    }

    pub async fn start(args: StartArgs, stack: &StackArgs) -> Result<ExitCode> {
        crate::start::start(args, &connect(stack).await?).await
    }
    pub async fn rerun(args: RerunArgs, stack: &StackArgs) -> Result<ExitCode> {
        crate::start::rerun(args, &connect(stack).await?).await
    }
    pub async fn stop(args: StopArgs, stack: &StackArgs) -> Result<ExitCode> {
        crate::stop::stop(args, &connect(stack).await?).await
    }
    pub async fn logs(args: LogsArgs, stack: &StackArgs) -> Result<ExitCode> {
        crate::logs::stack(args, &connect(stack).await?).await
    }
    pub async fn stats(
        job: Option<String>,
        since: String,
        json: bool,
        stack: &StackArgs,
    ) -> Result<ExitCode> {
        crate::stack_runs::stats(job, since, json, &connect(stack).await?).await
    }
    pub async fn backfill(
        args: crate::backfill::BackfillArgs,
        stack: &StackArgs,
    ) -> Result<ExitCode> {
        let b = crate::backfill_stack::StackBackfill::new(connect(stack).await?, args.poll);
        crate::backfill::backfill(args, std::sync::Arc::new(b)).await
    }
    pub async fn list(args: ListArgs, stack: &StackArgs) -> Result<ExitCode> {
        crate::stack_runs::list(args, &connect(stack).await?).await
    }
    pub async fn show(run_id: &str, json: bool, stack: &StackArgs) -> Result<ExitCode> {
        crate::stack_runs::show(run_id, json, &connect(stack).await?).await
    }
}

#[cfg(not(feature = "aws"))]
mod with_aws {
    use super::*;

    fn unavailable(stack: &StackArgs) -> anyhow::Error {
        anyhow::anyhow!(
            "this stevedore was built without AWS support (--no-default-features), so it cannot operate stack `{}`: build it with the default features (`cargo install --locked --path cli`)",
            stack.name().unwrap_or_default()
        )
    }
    pub async fn start(_: StartArgs, stack: &StackArgs) -> Result<ExitCode> {
        Err(unavailable(stack))
    }
    pub async fn rerun(_: RerunArgs, stack: &StackArgs) -> Result<ExitCode> {
        Err(unavailable(stack))
    }
    pub async fn stop(_: StopArgs, stack: &StackArgs) -> Result<ExitCode> {
        Err(unavailable(stack))
    }
    pub async fn logs(_: LogsArgs, stack: &StackArgs) -> Result<ExitCode> {
        Err(unavailable(stack))
    }
    pub async fn list(_: ListArgs, stack: &StackArgs) -> Result<ExitCode> {
        Err(unavailable(stack))
    }
    pub async fn show(_: &str, _: bool, stack: &StackArgs) -> Result<ExitCode> {
        Err(unavailable(stack))
    }
    pub async fn stats(
        _: Option<String>,
        _: String,
        _: bool,
        stack: &StackArgs,
    ) -> Result<ExitCode> {
        Err(unavailable(stack))
    }
    pub async fn backfill(_: crate::backfill::BackfillArgs, stack: &StackArgs) -> Result<ExitCode> {
        Err(unavailable(stack))
    }
}

pub use with_aws::{backfill, list, logs, rerun, show, start, stats, stop};

/// The hidden `--poll SECONDS` of the following commands, kept within
/// 50 ms–60 s (anything else, NaN included, is the 2 s default).
pub fn poll_interval(seconds: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(if seconds.is_finite() {
        seconds.clamp(0.05, 60.0)
    } else {
        2.0
    })
}

/// What a command that only exists for a stack says without one.
pub fn needs_stack(command: &str, local: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "NoStack: `stevedore {command}` operates a deployed stack: pass --stack NAME or set STEVEDORE_STACK ({local})"
    )
}
