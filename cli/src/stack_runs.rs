//! `stevedore runs list|show --stack S`: run history from the stack's
//! DynamoDB table (the `by-job` index for one job, `by-month` across jobs),
//! and one run with its execution's history, console links and log tail.

use std::process::ExitCode;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use stevedore_aws::dynamodb::RunListing;
use stevedore_aws::logs::LogLocation;
use stevedore_domain::console::{execution_url, log_stream_url, task_url};
use stevedore_domain::ports::{LogSource, RunStore};
use stevedore_domain::run::RunRecord;
use stevedore_domain::task::format_time;
use stevedore_domain::RunStatus;
use time::OffsetDateTime;

use crate::operate::ListArgs;
use crate::out::say;
use crate::stack::{from_domain, remote_error, Kind, RemoteError, Stack};

/// The run, or a [`RemoteError`] saying it is not in the stack's table.
pub async fn get_run(stack: &Stack, run_id: &str) -> Result<RunRecord> {
    stack
        .runs
        .get_run(run_id)
        .await
        .map_err(|e| from_domain("dynamodb:GetItem", e))?
        .ok_or_else(|| {
            RemoteError::new(
                Kind::BadInput,
                format!(
                    "no run `{run_id}` in stack `{}` (table {}): `stevedore runs list --stack {}` shows its runs",
                    stack.name, stack.table, stack.name
                ),
            )
            .into()
        })
}

pub async fn list(args: ListArgs, stack: &Stack) -> Result<ExitCode> {
    let status = args
        .status
        .map(|s| s.parse::<RunStatus>())
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let now = OffsetDateTime::now_utc();
    let since = args
        .since
        .as_deref()
        .map(|s| crate::stats::since_time(s, now))
        .transpose()?;
    let listing = RunListing {
        job: args.job,
        status,
        since,
        oldest: stack.created,
        newest: now,
        limit: args.limit.max(1) as usize,
    };
    let (runs, _) = stack
        .runs
        .list(&listing)
        .await
        .map_err(|e| from_domain("dynamodb:Query", e))?;
    if args.json {
        for r in &runs {
            say!("{}", serde_json::to_string(r)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        say!(
            "no runs in stack `{}` ({}){} (stevedore start JOB.json --stack {} starts one)",
            stack.name,
            stack.region,
            if listing.job.is_some() || status.is_some() || since.is_some() {
                " that match"
            } else {
                ""
            },
            stack.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    for line in crate::out::runs_table(&runs) {
        say!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Every event of an execution, oldest first, as the local engine's
/// (`None`: Step Functions no longer has it).
async fn history(stack: &Stack, arn: &str) -> Result<Option<Vec<Value>>> {
    let Some(events) = crate::start::events_after(stack, arn, 0).await? else {
        return Ok(None);
    };
    events
        .iter()
        .map(|e| Ok(serde_json::to_value(crate::start::local_event(e))?))
        .collect::<Result<Vec<Value>>>()
        .map(Some)
}

pub async fn show(run_id: &str, as_json: bool, stack: &Stack) -> Result<ExitCode> {
    let run = get_run(stack, run_id).await?;
    let mut attempts = stack
        .runs
        .runs_of_execution(&run.execution.id)
        .await
        .map_err(|e| from_domain("dynamodb:Query", e))?;
    attempts.sort_by_key(|r| r.attempt);
    let execution = stack
        .sfn
        .describe_execution()
        .execution_arn(&run.execution.id)
        .send()
        .await;
    let execution = match execution {
        Ok(d) => Some(json!({
            "status": d.status().as_str(),
            "startDate": aws_time(d.start_date()),
            "stopDate": d.stop_date().map(aws_time),
            "error": d.error(),
            "cause": d.cause(),
        })),
        Err(aws_smithy_runtime_api::client::result::SdkError::ServiceError(se))
            if se.err().is_execution_does_not_exist() =>
        {
            None
        }
        Err(e) => return Err(remote_error("states:DescribeExecution", &e).into()),
    };
    let history = history(stack, &run.execution.id).await?;
    let location = stack
        .logs
        .locate(&run)
        .await
        .map_err(|e| from_domain("ecs:DescribeTaskDefinition", e))?;
    let tail = stack
        .logs
        .tail(&run, 20)
        .await
        .map_err(|e| from_domain("logs:GetLogEvents", e))?;
    let stream = match &location {
        LogLocation::Stream(s) => Some(s.clone()),
        _ => None,
    };
    let links = json!({
        "execution": execution_url(&run.execution.id),
        "task": run.task_arn.as_deref().and_then(|t| task_url(t, stack.cluster_arn.as_deref())),
        "log": stream.as_ref().and_then(log_stream_url),
    });
    if as_json {
        say!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "run": run,
                "attempts": attempts,
                "execution": execution,
                "history": history,
                "links": links,
                "log": {"stream": stream, "lines": tail.lines},
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let o = run.outcome.as_ref();
    let mut facts: Vec<(&str, String)> = vec![
        ("run", run.run_id.clone()),
        ("job", run.job.clone()),
        (
            "status",
            format!(
                "{} (attempt {} of at most {})",
                run.status, run.attempt, run.max_attempts
            ),
        ),
        ("created", format_time(run.created_at)),
    ];
    if let Some(t) = run.logical_time {
        facts.push(("logical", stevedore_domain::logical::format_logical(t)));
    }
    if let Some(d) = crate::run::run_duration(&run) {
        facts.push(("duration", stevedore_domain::duration::format_duration(d)));
    }
    if let Some(c) = o.and_then(|o| o.exit_code) {
        facts.push(("exit code", c.to_string()));
    }
    if let Some(o) = o {
        if let Some(class) = o.class {
            facts.push(("error", class.to_string()));
        }
        if !o.message.is_empty() {
            facts.push(("outcome", o.message.clone()));
        }
    }
    if let Some(c) = &run.cost {
        facts.push(("cost", format!("${:.6} ({})", c.usd, c.region)));
    }
    facts.push((
        "execution",
        match &execution {
            Some(e) => format!(
                "{} ({})",
                run.execution.name,
                e["status"].as_str().unwrap_or("?")
            ),
            None => format!("{} (no longer kept by Step Functions)", run.execution.name),
        },
    ));
    if attempts.len() > 1 {
        let all: Vec<String> = attempts
            .iter()
            .map(|a| format!("{} {}", a.run_id, a.status))
            .collect();
        facts.push(("attempts", all.join(", ")));
    }
    if let Some(t) = &run.task_arn {
        facts.push(("task", t.clone()));
    }
    for n in &run.notes {
        facts.push(("note", n.clone()));
    }
    for (k, v) in &facts {
        say!("{k:<10} {v}");
    }
    say!();
    for (name, link) in links.as_object().into_iter().flatten() {
        if let Some(url) = link.as_str() {
            say!("{name:<10} {url}");
        }
    }
    if let Some(events) = &history {
        say!("\nexecution history ({})", run.execution.id);
        for line in crate::history_table(events) {
            say!("{line}");
        }
    }
    match (&location, stream) {
        (LogLocation::NoTask, _) => say!("\nlog: no task was started for this run"),
        (LogLocation::NotInCloudWatch { container }, _) => say!(
            "\nlog: the container {} does not log to CloudWatch Logs (no awslogs driver with a stream prefix)",
            container.as_deref().unwrap_or("?")
        ),
        (_, Some(s)) if tail.lines.is_empty() => {
            say!("\nlog: {} {} has no lines (yet)", s.group, s.stream)
        }
        (_, Some(s)) => {
            say!("\nlog (last {} lines of {} {})", tail.lines.len(), s.group, s.stream);
            // As the alert shows it: secrets the job printed are masked.
            for line in &tail.lines {
                say!("  {}", stevedore_domain::redact::redact(line));
            }
        }
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn aws_time(t: &aws_smithy_types::DateTime) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos())
        .map(format_time)
        .unwrap_or_default()
}

/// `runs stats --stack S`: the same numbers as in local mode, from every
/// run of the window in the stack's table.
pub async fn stats(
    job: Option<String>,
    since: String,
    as_json: bool,
    stack: &Stack,
) -> Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    let from = crate::stats::since_time(&since, now)?;
    let listing = RunListing {
        job,
        status: None,
        since: Some(from),
        oldest: stack.created,
        newest: now,
        limit: usize::MAX,
    };
    let (mut runs, _) = stack
        .runs
        .list(&listing)
        .await
        .map_err(|e| from_domain("dynamodb:Query", e))?;
    runs.reverse();
    crate::stats::report(&runs, &since, from, as_json)
}
