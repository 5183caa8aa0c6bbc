//! `stevedore start JOB.json --stack S [--follow]` and `stevedore rerun RUN
//! --stack S`: a new execution of the stack's run-job state machine, and,
//! with `--follow`, its steps as Step Functions records them, then the run's
//! summary from the table.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use aws_sdk_sfn::types::HistoryEvent as SfnEvent;
use aws_smithy_runtime_api::client::result::SdkError;
use serde_json::{json, Value};
use stevedore_domain::console::execution_url;
use stevedore_domain::ports::RunStore;
use stevedore_domain::JobSpec;
use stevedore_engine::HistoryEvent;
use time::OffsetDateTime;

use crate::operate::{RerunArgs, StartArgs};
use crate::out::say;
use crate::stack::{from_domain, remote_error, Kind, RemoteError, Stack};

pub async fn start(args: StartArgs, stack: &Stack) -> Result<ExitCode> {
    let mut value = crate::read_json(&args.job)?;
    if let Some(t) = &args.logical_time {
        crate::backfill::set_logical_time(&mut value, t)?;
    }
    let spec = JobSpec::from_value(&value)
        .map_err(|e| anyhow!("InvalidJobSpec: {}: {e}", args.job.display()))?;
    let name = match args.name {
        Some(n) => {
            check_name(&n)?;
            n
        }
        None => default_name(&spec.job, OffsetDateTime::now_utc()),
    };
    let arn = start_execution(stack, &name, &value).await?;
    started(stack, &name, &arn, args.follow);
    if args.follow {
        follow(stack, &arn, crate::operate::poll_interval(args.poll)).await
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

pub async fn rerun(args: RerunArgs, stack: &Stack) -> Result<ExitCode> {
    let run = crate::stack_runs::get_run(stack, &args.run_id).await?;
    // The execution's own input is what the user gave (the record's spec has
    // every default written out); Step Functions keeps it for 90 days.
    let described = stack
        .sfn
        .describe_execution()
        .execution_arn(&run.execution.id)
        .send()
        .await;
    let mut input: Value = match described {
        Ok(d) => d
            .input()
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or_else(|| run.spec.clone()),
        Err(SdkError::ServiceError(se)) if se.err().is_execution_does_not_exist() => {
            run.spec.clone()
        }
        Err(e) => return Err(remote_error("states:DescribeExecution", &e).into()),
    };
    // The rerun processes the same interval: a run without `logicalTime`
    // in its input had its execution's start, which a new execution would
    // not have.
    if let (Some(t), Some(obj)) = (run.logical_time, input.as_object_mut()) {
        obj.entry("logicalTime")
            .or_insert_with(|| json!(stevedore_domain::task::format_time(t)));
    }
    // A rerun is not the schedule's start: one execution per scheduled
    // time runs, and the rerun would be skipped as the second.
    if let Some(obj) = input.as_object_mut() {
        obj.remove("scheduledTime");
    }
    let name = match args.name {
        Some(n) => {
            check_name(&n)?;
            n
        }
        None => rerun_name(&run.execution.name, OffsetDateTime::now_utc()),
    };
    let arn = start_execution(stack, &name, &input).await?;
    say!("rerun of   {} ({})", run.run_id, run.execution.name);
    started(stack, &name, &arn, args.follow);
    if args.follow {
        follow(stack, &arn, crate::operate::poll_interval(args.poll)).await
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

fn started(stack: &Stack, name: &str, arn: &str, following: bool) {
    say!("started    {name}");
    say!("execution  {arn}");
    if let Some(url) = execution_url(arn) {
        say!("console    {url}");
    }
    if following {
        say!(
            "(Ctrl-C stops following, not the run: `stevedore stop {arn} --stack {}` stops it)\n",
            stack.name
        );
    }
}

/// Step Functions' rules for execution names: 1-80 characters, none of
/// whitespace, `<>{}[]?*"#%\^|~`$&,;:/` or control characters.
pub fn check_name(name: &str) -> Result<()> {
    let bad = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(*c));
    if name.is_empty() || name.chars().count() > 80 {
        return Err(RemoteError::new(
            Kind::BadInput,
            format!("--name `{name}` must be 1 to 80 characters (Step Functions' limit)"),
        )
        .into());
    }
    if let Some(c) = bad {
        return Err(RemoteError::new(
            Kind::BadInput,
            format!("--name `{name}` contains {c:?}: execution names may not contain whitespace, brackets, wildcards or any of \" # % \\ ^ | ~ ` $ & , ; : /"),
        )
        .into());
    }
    Ok(())
}

/// `<job>-<UTC time>-<4 hex>`: readable, and two starts in one second differ.
fn default_name(job: &str, now: OffsetDateTime) -> String {
    let salt = (now.nanosecond() ^ std::process::id().rotate_left(16)) & 0xffff;
    let job: String = job.chars().take(58).collect();
    format!(
        "{job}-{}-{salt:04x}",
        stevedore_domain::logical::compact(now)
    )
}

fn rerun_name(old: &str, now: OffsetDateTime) -> String {
    // Reruns of reruns do not grow the name.
    let base = old.split("-rerun-").next().unwrap_or(old);
    let base: String = base.chars().take(80 - 22).collect();
    format!("{base}-rerun-{}", stevedore_domain::logical::compact(now))
}

async fn start_execution(stack: &Stack, name: &str, input: &Value) -> Result<String> {
    let sent = stack
        .sfn
        .start_execution()
        .state_machine_arn(&stack.state_machine_arn)
        .name(name)
        .input(input.to_string())
        .send()
        .await;
    match sent {
        Ok(out) => Ok(out.execution_arn().to_string()),
        Err(SdkError::ServiceError(se)) => {
            let e = se.err();
            let message = aws_smithy_types::error::metadata::ProvideErrorMetadata::message(e)
                .unwrap_or("")
                .to_string();
            let err = if e.is_execution_already_exists() {
                RemoteError::new(Kind::BadInput, format!("an execution named `{name}` already exists with another input, or has ended (Step Functions keeps names for 90 days; a start with the same name and input while it runs returns it): give another --name"))
            } else if e.is_invalid_name() || e.is_invalid_execution_input() {
                RemoteError::new(
                    Kind::BadInput,
                    format!("Step Functions refused the execution: {message}"),
                )
            } else if e.is_state_machine_does_not_exist() || e.is_state_machine_deleting() {
                RemoteError::new(Kind::NotStevedoreStack, format!("stack `{}` names the state machine {}, which does not exist: the stack is being deleted or was changed by hand", stack.name, stack.state_machine_arn))
            } else {
                remote_error("states:StartExecution", &SdkError::ServiceError(se))
            };
            Err(err.into())
        }
        Err(e) => Err(remote_error("states:StartExecution", &e).into()),
    }
}

/// A Step Functions history event as the local engine's, so `stevedore
/// start --follow` prints what `stevedore run` does.
pub fn local_event(e: &SfnEvent) -> HistoryEvent {
    let timestamp = OffsetDateTime::from_unix_timestamp_nanos(e.timestamp().as_nanos())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let state = e
        .state_entered_event_details()
        .map(|d| d.name().to_string())
        .or_else(|| e.state_exited_event_details().map(|d| d.name().to_string()));
    let error = e
        .task_failed_event_details()
        .and_then(|d| d.error())
        .or_else(|| e.task_timed_out_event_details().and_then(|d| d.error()))
        .or_else(|| e.execution_failed_event_details().and_then(|d| d.error()))
        .or_else(|| {
            e.lambda_function_failed_event_details()
                .and_then(|d| d.error())
        });
    let kind = match e.r#type().as_str() {
        // The run-job wait's timeout is its safety poll; shown as local mode shows a failed task.
        "TaskTimedOut" => "TaskFailed".to_string(),
        other => other.to_string(),
    };
    HistoryEvent {
        id: e.id().max(0) as u64,
        timestamp,
        kind,
        state,
        details: error.map(|e| json!({"Error": e})).unwrap_or(Value::Null),
    }
}

const ENDED: &[&str] = &[
    "ExecutionSucceeded",
    "ExecutionFailed",
    "ExecutionTimedOut",
    "ExecutionAborted",
];

/// The events newer than `after` (0: all of them), oldest first; `None`
/// when Step Functions no longer has the execution (it keeps an ended one
/// 90 days). Asks for the history newest first and stops at the first page
/// that reaches an event already seen, so a long history is not read again
/// on every look. (A server that ignores `reverseOrder`, as moto does, is
/// read to its end.)
pub async fn events_after(stack: &Stack, arn: &str, after: i64) -> Result<Option<Vec<SfnEvent>>> {
    let mut fresh = Vec::new();
    let mut token = None;
    loop {
        let sent = stack
            .sfn
            .get_execution_history()
            .execution_arn(arn)
            .reverse_order(true)
            .max_results(1000)
            .set_next_token(token.take())
            .send()
            .await;
        let page = match sent {
            Ok(p) => p,
            Err(SdkError::ServiceError(se)) if se.err().is_execution_does_not_exist() => {
                return Ok(None)
            }
            Err(e) => return Err(remote_error("states:GetExecutionHistory", &e).into()),
        };
        let events = page.events();
        let newest_first = events.first().map(|e| e.id()) > events.last().map(|e| e.id());
        let reached_seen = events.iter().any(|e| e.id() <= after);
        fresh.extend(events.iter().filter(|e| e.id() > after).cloned());
        match page.next_token() {
            Some(t) if !(newest_first && reached_seen) => token = Some(t.to_string()),
            _ => break,
        }
    }
    fresh.sort_by_key(|e| e.id());
    fresh.dedup_by_key(|e| e.id());
    Ok(Some(fresh))
}

/// Prints the execution's steps until it ends, then the run's summary.
/// 0 when it succeeded, 1 otherwise.
pub async fn follow(stack: &Stack, arn: &str, poll: Duration) -> Result<ExitCode> {
    let mut last = 0;
    loop {
        let events = events_after(stack, arn, last)
            .await?
            .ok_or_else(|| RemoteError::new(Kind::BadInput, format!("no execution {arn}")))?;
        let mut ended = false;
        for e in &events {
            last = last.max(e.id());
            crate::run::progress(&local_event(e));
            ended |= ENDED.contains(&e.r#type().as_str());
        }
        if ended {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    let d = stack
        .sfn
        .describe_execution()
        .execution_arn(arn)
        .send()
        .await
        .map_err(|e| remote_error("states:DescribeExecution", &e))?;
    let status = d.status().as_str().to_string();
    let cause = match (d.error(), d.cause()) {
        (Some(e), Some(c)) if !c.is_empty() => Some(format!("{e}: {c}")),
        (Some(e), _) => Some(e.to_string()),
        _ => None,
    };
    // The table's by-execution index is eventually consistent: give the
    // last write a moment to arrive.
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs = stack
            .runs
            .runs_of_execution(arn)
            .await
            .map_err(|e| from_domain("dynamodb:Query", e))?;
        runs.sort_by_key(|r| r.attempt);
        if runs.last().is_some_and(|r| r.status.is_terminal()) {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    let log = runs
        .last()
        .map(|r| format!("stevedore logs {} --stack {}", r.run_id, stack.name));
    crate::run::summary(&status, cause.as_deref(), &runs, log);
    Ok(if status == "SUCCEEDED" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn names_follow_step_functions_rules() {
        assert!(check_name("orders-2026-11-01").is_ok());
        assert!(check_name("a b").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(81)).is_err());
        assert!(check_name("").is_err());
        let t = datetime!(2026-11-28 03:15:00.5 UTC);
        let n = default_name(&"j".repeat(100), t);
        assert!(n.chars().count() <= 80 && check_name(&n).is_ok(), "{n}");
        assert!(n.contains("-20261128T031500-"), "{n}");
        let r = rerun_name("orders-20261127T000000-abcd-rerun-20261127T120000", t);
        assert_eq!(r, "orders-20261127T000000-abcd-rerun-20261128T031500");
        assert!(check_name(&rerun_name(&"y".repeat(80), t)).is_ok());
    }
}
