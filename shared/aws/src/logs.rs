//! [`LogSource`] on CloudWatch Logs: finds a run's log stream from the task
//! definition's `awslogs` settings (`awslogs-group`, `awslogs-region`,
//! `awslogs-stream-prefix`; the stream is `<prefix>/<container>/<task id>`)
//! and reads its last lines.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::Client as LogsClient;
use aws_sdk_ecs::Client as EcsClient;
use stevedore_domain::console::LogStreamRef;
use stevedore_domain::ports::{LogSource, LogTail};
use stevedore_domain::run::RunRecord;
use stevedore_domain::Result;
use tracing::{debug, instrument};

use crate::errors::{classify, error_code};

/// Where one container of a task definition logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsLogsConfig {
    pub group: String,
    pub region: Option<String>,
    pub stream_prefix: Option<String>,
}

pub struct CloudWatchLogSource {
    ecs: EcsClient,
    logs: LogsClient,
    region: Option<String>,
    /// Task definition revisions never change: (arn, container) → settings.
    cache: Mutex<HashMap<(String, String), Option<AwsLogsConfig>>>,
}

impl CloudWatchLogSource {
    pub fn new(ecs: EcsClient, logs: LogsClient) -> Self {
        let region = logs.config().region().map(|r| r.to_string());
        CloudWatchLogSource {
            ecs,
            logs,
            region,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        Self::new(EcsClient::new(sdk), LogsClient::new(sdk))
    }

    /// The `awslogs` settings of `container` (or, if `None`, of the first
    /// essential container) in a task definition; `None` when it logs elsewhere.
    async fn awslogs(
        &self,
        task_definition: &str,
        container: Option<&str>,
    ) -> Result<Option<(String, AwsLogsConfig)>> {
        let key = (
            task_definition.to_string(),
            container.unwrap_or_default().to_string(),
        );
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(hit.clone().map(|c| (key.1.clone(), c)));
        }
        let out = self
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| classify("DescribeTaskDefinition", &e))?;
        let defs = out
            .task_definition()
            .map(|t| t.container_definitions())
            .unwrap_or_default();
        let def = match container {
            Some(name) => defs.iter().find(|d| d.name() == Some(name)),
            None => defs
                .iter()
                .find(|d| d.essential().unwrap_or(true))
                .or(defs.first()),
        };
        let found = def.and_then(|d| {
            let cfg = d.log_configuration()?;
            if cfg.log_driver().as_str() != "awslogs" {
                return None;
            }
            let options = cfg.options()?;
            Some((
                d.name().unwrap_or_default().to_string(),
                AwsLogsConfig {
                    group: options.get("awslogs-group")?.clone(),
                    region: options.get("awslogs-region").cloned(),
                    stream_prefix: options.get("awslogs-stream-prefix").cloned(),
                },
            ))
        });
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(key, found.as_ref().map(|(_, c)| c.clone()));
        Ok(found)
    }
}

/// `arn:aws:ecs:…:task/<cluster>/<id>` (or the old `task/<id>`) → `<id>`.
fn task_id(task_arn: &str) -> Option<&str> {
    task_arn.rsplit('/').next().filter(|id| !id.is_empty())
}

/// The region in an ARN, if any.
fn arn_region(arn: &str) -> Option<&str> {
    stevedore_domain::console::Arn::parse(arn).map(|a| a.region)
}

/// Where a run's log is, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLocation {
    Stream(LogStreamRef),
    /// No task was started for the run (yet).
    NoTask,
    /// The task definition's container does not use the `awslogs` driver
    /// (or has no stream prefix, without which the stream has no name).
    NotInCloudWatch {
        container: Option<String>,
    },
}

/// A page of a log stream, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogPage {
    /// Each event's lines, with its timestamp (epoch milliseconds).
    pub lines: Vec<(i64, String)>,
    /// Where the next read starts (`nextForwardToken`): equal to the token
    /// read with when the stream has nothing newer.
    pub next: Option<String>,
}

impl CloudWatchLogSource {
    /// Where the run's job container logs: `<prefix>/<container>/<task id>`
    /// in the task definition's `awslogs-group` and region.
    pub async fn locate(&self, run: &RunRecord) -> Result<LogLocation> {
        let Some(task_arn) = run.task_arn.as_deref() else {
            return Ok(LogLocation::NoTask);
        };
        let task_definition = run
            .task
            .as_ref()
            .and_then(|t| t.task_definition_arn.clone())
            .or_else(|| {
                run.spec
                    .get("taskDefinition")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            });
        let (Some(task_definition), Some(id)) = (task_definition, task_id(task_arn)) else {
            return Ok(LogLocation::NoTask);
        };
        let container = run.main_container();
        let Some((container, cfg)) = self.awslogs(&task_definition, container.as_deref()).await?
        else {
            debug!("the container does not log to CloudWatch Logs");
            return Ok(LogLocation::NotInCloudWatch { container });
        };
        // Fargate requires a stream prefix; without one the stream cannot be named.
        let Some(prefix) = cfg.stream_prefix else {
            return Ok(LogLocation::NotInCloudWatch {
                container: Some(container),
            });
        };
        let region = cfg
            .region
            .or_else(|| arn_region(task_arn).map(str::to_string))
            .or_else(|| self.region.clone())
            .unwrap_or_default();
        Ok(LogLocation::Stream(LogStreamRef {
            region,
            group: cfg.group,
            stream: format!("{prefix}/{container}/{id}"),
        }))
    }

    /// Reads a stream: from `token` on, or, without one, its last `limit`
    /// events (`from_head` false) or its first (`from_head` true). `None`
    /// when the stream does not exist (the container has not written a line).
    pub async fn page(
        &self,
        stream: &LogStreamRef,
        token: Option<String>,
        from_head: bool,
        limit: usize,
    ) -> Result<Option<LogPage>> {
        let request = self
            .logs
            .get_log_events()
            .log_group_name(&stream.group)
            .log_stream_name(&stream.stream)
            .start_from_head(from_head)
            .set_next_token(token)
            .limit(limit.clamp(1, 10_000) as i32);
        let region = &stream.region;
        // The log group may live in another region than this client's.
        let sent = if !region.is_empty() && self.region.as_deref() != Some(region.as_str()) {
            let config = aws_sdk_cloudwatchlogs::config::Builder::default()
                .region(aws_sdk_cloudwatchlogs::config::Region::new(region.clone()));
            request.customize().config_override(config).send().await
        } else {
            request.send().await
        };
        let out = match sent {
            Ok(out) => out,
            Err(e) => {
                let code = e.as_service_error().map(error_code).unwrap_or_default();
                if code == "ResourceNotFoundException" {
                    return Ok(None);
                }
                return Err(classify("GetLogEvents", &e));
            }
        };
        let lines = out
            .events()
            .iter()
            .filter_map(|e| Some((e.timestamp().unwrap_or_default(), e.message()?)))
            .flat_map(|(at, m)| {
                m.trim_end_matches('\n')
                    .split('\n')
                    .map(move |l| (at, l.trim_end_matches('\r').to_string()))
            })
            .collect();
        Ok(Some(LogPage {
            lines,
            next: out.next_forward_token().map(str::to_string),
        }))
    }
}

#[async_trait]
impl LogSource for CloudWatchLogSource {
    #[instrument(skip_all, fields(run_id = %run.run_id))]
    async fn tail(&self, run: &RunRecord, lines: usize) -> Result<LogTail> {
        let LogLocation::Stream(stream) = self.locate(run).await? else {
            return Ok(LogTail::default());
        };
        // No stream: the container never wrote a line (it did not start).
        let Some(page) = self.page(&stream, None, false, lines).await? else {
            return Ok(LogTail::default());
        };
        let mut tail: Vec<String> = page.lines.into_iter().map(|(_, l)| l).collect();
        let excess = tail.len().saturating_sub(lines);
        tail.drain(..excess);
        Ok(LogTail {
            lines: tail,
            stream: Some(stream),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_come_from_both_arn_formats() {
        assert_eq!(
            task_id("arn:aws:ecs:us-east-1:1:task/data/0123abcd"),
            Some("0123abcd")
        );
        assert_eq!(
            task_id("arn:aws:ecs:us-east-1:1:task/0123abcd"),
            Some("0123abcd")
        );
        assert_eq!(task_id("arn:aws:ecs:us-east-1:1:task/"), None);
    }
}
