//! `stevedore backfill --stack S`: the executions run on the stack's
//! run-job state machine; the skip list comes from its runs table.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use aws_smithy_runtime_api::client::result::SdkError;
use serde_json::Value;
use stevedore_aws::dynamodb::RunListing;
use stevedore_domain::logical::format_logical;
use stevedore_domain::ports::RunStore;
use stevedore_domain::RunStatus;
use time::OffsetDateTime;

use crate::backfill::{execution_name, Backfiller, Done};
use crate::stack::{from_domain, remote_error, Stack};

pub struct StackBackfill {
    pub stack: Stack,
    pub poll: Duration,
    cancel: tokio::sync::watch::Sender<bool>,
}

impl StackBackfill {
    pub fn new(stack: Stack, poll: f64) -> StackBackfill {
        StackBackfill {
            stack,
            poll: crate::operate::poll_interval(poll),
            cancel: tokio::sync::watch::channel(false).0,
        }
    }

    /// (status, error, cause) of an execution.
    async fn describe(&self, arn: &str) -> Result<Option<(String, Option<String>)>> {
        match self
            .stack
            .sfn
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
        {
            Ok(d) => Ok(Some((
                d.status().as_str().to_string(),
                d.error().map(str::to_string),
            ))),
            Err(SdkError::ServiceError(se)) if se.err().is_execution_does_not_exist() => Ok(None),
            Err(e) => Err(remote_error("states:DescribeExecution", &e).into()),
        }
    }
}

#[async_trait]
impl Backfiller for StackBackfill {
    async fn succeeded(&self, job: &str) -> Result<BTreeSet<String>> {
        let now = OffsetDateTime::now_utc();
        let (runs, _) = self
            .stack
            .runs
            .list(&RunListing {
                job: Some(job.to_string()),
                status: Some(RunStatus::Succeeded),
                since: None,
                oldest: self.stack.created,
                newest: now,
                limit: usize::MAX,
            })
            .await
            .map_err(|e| from_domain("dynamodb:Query", e))?;
        Ok(runs
            .iter()
            .filter_map(|r| r.logical_time.map(format_logical))
            .collect())
    }

    async fn run(&self, t: OffsetDateTime, job: &str, input: Value) -> Result<Done> {
        let executions = self
            .stack
            .state_machine_arn
            .replacen(":stateMachine:", ":execution:", 1);
        let mut started = None;
        for n in 1..=99 {
            let name = execution_name(job, t, n);
            let sent = self
                .stack
                .sfn
                .start_execution()
                .state_machine_arn(&self.stack.state_machine_arn)
                .name(&name)
                .input(input.to_string())
                .send()
                .await;
            match sent {
                Ok(out) => {
                    started = Some((name, out.execution_arn().to_string()));
                    break;
                }
                Err(SdkError::ServiceError(se)) if se.err().is_execution_already_exists() => {
                    // That name ran before: one still running (another
                    // backfill's) is waited for, one that succeeded counts,
                    // one that did not gets the next name.
                    let arn = format!("{executions}:{name}");
                    match self.describe(&arn).await?.map(|(s, _)| s).as_deref() {
                        Some("RUNNING") => {
                            started = Some((name, arn));
                            break;
                        }
                        Some("SUCCEEDED") => {
                            let runs = self
                                .stack
                                .runs
                                .runs_of_execution(&arn)
                                .await
                                .map_err(|e| from_domain("dynamodb:Query", e))?;
                            return Ok(Done::from_runs("SUCCEEDED", &name, &runs, None));
                        }
                        _ => continue,
                    }
                }
                Err(e) => return Err(remote_error("states:StartExecution", &e).into()),
            }
        }
        let Some((name, arn)) = started else {
            anyhow::bail!(
                "99 executions of {job} for {} already ended without success",
                format_logical(t)
            );
        };
        let mut cancelled = self.cancel.subscribe();
        let mut stop_sent = false;
        let (status, error) = loop {
            if let Some((status, error)) = self.describe(&arn).await? {
                if status != "RUNNING" {
                    break (status, error);
                }
            }
            if *cancelled.borrow() && !stop_sent {
                stop_sent = true;
                self.stack
                    .sfn
                    .stop_execution()
                    .execution_arn(&arn)
                    .error("StoppedByUser")
                    .cause("SIGINT to stevedore backfill")
                    .send()
                    .await
                    .map_err(|e| remote_error("states:StopExecution", &e))?;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = cancelled.changed(), if !stop_sent => {}
            }
        };
        // The by-execution index is eventually consistent.
        let mut runs = Vec::new();
        for _ in 0..5 {
            runs = self
                .stack
                .runs
                .runs_of_execution(&arn)
                .await
                .map_err(|e| from_domain("dynamodb:Query", e))?;
            if status != "SUCCEEDED" || runs.iter().any(|r| r.status == RunStatus::Succeeded) {
                break;
            }
            tokio::time::sleep(self.poll).await;
        }
        Ok(Done::from_runs(&status, &name, &runs, error))
    }

    async fn cancel(&self) {
        let _ = self.cancel.send(true);
    }

    fn stack_flag(&self) -> String {
        format!(" --stack {}", self.stack.name)
    }
}
