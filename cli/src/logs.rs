//! `stevedore logs RUN [--follow] [--tail N]`: the job's output. Locally it
//! is the run's log file; on a stack (`--stack S`) the task's CloudWatch
//! Logs stream, found as the alerts find it (the task definition's
//! `awslogs` settings).

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::ExitCode;

use anyhow::{bail, Result};
use stevedore_domain::ports::RunStore;

use crate::operate::LogsArgs;
use crate::out::tell;

/// Writes lines to standard output; a closed pipe (`| head`) ends quietly.
fn emit<'a>(lines: impl IntoIterator<Item = &'a str>) -> bool {
    let mut out = std::io::stdout().lock();
    for l in lines {
        if writeln!(out, "{l}").is_err() {
            return false;
        }
    }
    out.flush().is_ok()
}

/// The local run's log file, `<home>/logs/<run>.log`.
pub async fn local(args: LogsArgs) -> Result<ExitCode> {
    let store = args.home.store()?;
    let Some(run) = store
        .get_run(&args.run_id)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?
    else {
        bail!(
            "no run `{}` in {} (stevedore runs list shows the runs; --stack NAME reads a deployed stack's)",
            args.run_id,
            args.home.dir().display()
        );
    };
    let path = args
        .home
        .dir()
        .join("logs")
        .join(format!("{}.log", run.run_id));
    let Ok(mut file) = std::fs::File::open(&path) else {
        tell!(
            "run {} ({}) has no log: {} does not exist (its process never started)",
            run.run_id,
            run.status,
            path.display()
        );
        return Ok(ExitCode::from(1));
    };
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let lines: Vec<&str> = text.lines().collect();
    let skip = args.tail.map_or(0, |n| lines.len().saturating_sub(n));
    if !emit(lines[skip..].iter().copied()) {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut offset = text.len() as u64;
    let mut pending = String::new();
    loop {
        let ended = store
            .get_run(&run.run_id)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?
            .is_none_or(|r| r.status.is_terminal());
        file.seek(SeekFrom::Start(offset))?;
        let mut more = String::new();
        offset += file.read_to_string(&mut more)? as u64;
        pending.push_str(&more);
        if let Some(cut) = pending.rfind('\n') {
            let complete: String = pending.drain(..=cut).collect();
            if !emit(complete.lines()) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if ended {
            if !pending.is_empty() {
                emit([pending.as_str()]);
            }
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(crate::operate::poll_interval(args.poll)).await;
    }
}

#[cfg(feature = "aws")]
pub async fn stack(args: LogsArgs, stack: &crate::stack::Stack) -> Result<ExitCode> {
    use stevedore_aws::logs::LogLocation;

    use crate::stack::from_domain;

    let mut run = crate::stack_runs::get_run(stack, &args.run_id).await?;
    let mut token: Option<String> = None;
    let mut announced = false;
    loop {
        let stream = match stack
            .logs
            .locate(&run)
            .await
            .map_err(|e| from_domain("ecs:DescribeTaskDefinition", e))?
        {
            LogLocation::Stream(s) => Some(s),
            LogLocation::NotInCloudWatch { container } => {
                tell!(
                    "run {}: its container {} does not log to CloudWatch Logs (the task definition has no awslogs log driver with a stream prefix)",
                    run.run_id,
                    container.as_deref().unwrap_or("?")
                );
                return Ok(ExitCode::from(1));
            }
            LogLocation::NoTask => None,
        };
        let page = match &stream {
            Some(s) => {
                let first = token.is_none();
                let (from_head, limit) = match (first, args.tail) {
                    (true, Some(n)) => (false, n),
                    _ => (true, 10_000),
                };
                stack
                    .logs
                    .page(s, token.clone(), from_head, limit)
                    .await
                    .map_err(|e| from_domain("logs:GetLogEvents", e))?
            }
            None => None,
        };
        let ended = run.status.is_terminal();
        match page {
            Some(page) => {
                let unchanged = page.next.is_none() || page.next == token;
                if !emit(page.lines.iter().map(|(_, l)| l.as_str())) {
                    return Ok(ExitCode::SUCCESS);
                }
                token = page.next;
                if !unchanged {
                    // More may be waiting right away: read on without pausing.
                    continue;
                }
                if !args.follow || ended {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            None => {
                let why = match &stream {
                    Some(s) => format!(
                        "its log stream {} in {} does not exist (yet): the container has not written a line",
                        s.stream, s.group
                    ),
                    None if ended => "no task was started for it".to_string(),
                    None => "no task has been started for it yet".to_string(),
                };
                if !args.follow || ended {
                    tell!("run {} ({}): {why}", run.run_id, run.status);
                    return Ok(ExitCode::from(1));
                }
                if !announced {
                    tell!("run {} ({}): {why}; waiting", run.run_id, run.status);
                    announced = true;
                }
            }
        }
        tokio::time::sleep(crate::operate::poll_interval(args.poll)).await;
        run = crate::stack_runs::get_run(stack, &args.run_id).await?;
    }
}
