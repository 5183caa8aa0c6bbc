//! `stevedore stop RUN|EXECUTION --stack S`: StopExecution, then waits for
//! the stack's reap-execution function (on the execution's ABORTED event)
//! to stop the task and record the run CANCELLED.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use aws_smithy_runtime_api::client::result::SdkError;
use stevedore_domain::duration::parse_duration;
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::RunRecord;
use stevedore_domain::RunStatus;

use crate::operate::StopArgs;
use crate::out::{say, tell};
use crate::stack::{from_domain, remote_error, Stack};

/// The execution's runs, by attempt.
async fn runs_of(stack: &Stack, arn: &str) -> Result<Vec<RunRecord>> {
    let mut runs = stack
        .runs
        .runs_of_execution(arn)
        .await
        .map_err(|e| from_domain("dynamodb:Query", e))?;
    runs.sort_by_key(|r| r.attempt);
    Ok(runs)
}

pub async fn stop(args: StopArgs, stack: &Stack) -> Result<ExitCode> {
    let wait = parse_duration(&args.wait).map_err(|e| anyhow!("--wait {e}"))?;
    let poll = crate::operate::poll_interval(args.poll);
    let arn = if args.target.starts_with("arn:") {
        args.target.clone()
    } else {
        crate::stack_runs::get_run(stack, &args.target)
            .await?
            .execution
            .id
    };
    let described = stack
        .sfn
        .describe_execution()
        .execution_arn(&arn)
        .send()
        .await;
    let status = match described {
        Ok(d) => d.status().as_str().to_string(),
        Err(SdkError::ServiceError(se)) if se.err().is_execution_does_not_exist() => {
            return Err(crate::stack::RemoteError::new(
                crate::stack::Kind::BadInput,
                format!("no execution {arn} (Step Functions keeps ended executions 90 days)"),
            )
            .into())
        }
        Err(e) => return Err(remote_error("states:DescribeExecution", &e).into()),
    };
    if status == "RUNNING" {
        let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
        let cause = args
            .reason
            .clone()
            .unwrap_or_else(|| format!("stopped by {user} with stevedore stop"));
        stack
            .sfn
            .stop_execution()
            .execution_arn(&arn)
            .error("StoppedByUser")
            .cause(cause.chars().take(32_768).collect::<String>())
            .send()
            .await
            .map_err(|e| remote_error("states:StopExecution", &e))?;
        say!("stopped    {arn}");
    } else {
        let runs = runs_of(stack, &arn).await?;
        if runs.last().is_none_or(|r| r.status.is_terminal()) {
            tell!(
                "execution {arn} already ended ({status}){}: nothing to stop",
                runs.last()
                    .map(|r| format!("; run {} is {}", r.run_id, r.status))
                    .unwrap_or_default()
            );
            return Ok(ExitCode::from(1));
        }
        say!("execution  {arn} already ended ({status}); its run is still {}: waiting for the reaper", runs.last().map(|r| r.status.to_string()).unwrap_or_default());
    }
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let begun = Instant::now();
    let deadline = begun + Duration::from_secs(wait);
    loop {
        let runs = runs_of(stack, &arn).await?;
        // The index is eventually consistent; the item itself is not.
        let last = match runs.last() {
            Some(r) => stack
                .runs
                .get_run(&r.run_id)
                .await
                .map_err(|e| from_domain("dynamodb:GetItem", e))?,
            None => None,
        };
        match last {
            Some(r) if r.status == RunStatus::Cancelled => {
                say!(
                    "cancelled  {}{}",
                    r.run_id,
                    r.outcome
                        .as_ref()
                        .map(|o| format!(" ({})", o.message))
                        .unwrap_or_default()
                );
                return Ok(ExitCode::SUCCESS);
            }
            Some(r) if r.status.is_terminal() => {
                tell!(
                    "run {} ended {} before the stop reached it{}",
                    r.run_id,
                    r.status,
                    r.outcome
                        .as_ref()
                        .map(|o| format!(": {}", o.message))
                        .unwrap_or_default()
                );
                return Ok(ExitCode::from(1));
            }
            // A launch in flight records its run within seconds.
            None if begun.elapsed() > Duration::from_secs(10)
                || Instant::now() + poll > deadline =>
            {
                say!("no run was recorded for this execution: it was stopped before a task was launched");
                return Ok(ExitCode::SUCCESS);
            }
            _ => {}
        }
        if Instant::now() + poll > deadline {
            let (id, status) = last
                .map(|r| (r.run_id, r.status.to_string()))
                .unwrap_or_default();
            tell!(
                "run {id} is still {status} {} after the stop: the stack's reap-execution function has not handled the execution's ABORTED event. Look at its log group /stevedore/{}/reap-execution and the stack's dead-letter queues; `stevedore stop {arn} --stack {}` waits again",
                args.wait, stack.name, stack.name
            );
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(poll).await;
    }
}
