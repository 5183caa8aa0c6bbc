//! [`TaskRunner`] on Amazon ECS (Fargate): idempotent RunTask, batched
//! DescribeTasks, StopTask.

use std::collections::HashSet;

use async_trait::async_trait;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    DesiredStatus, KeyValuePair, LaunchType, NetworkConfiguration, PropagateTags, Tag, Task,
    TaskField, TaskOverride,
};
use aws_sdk_ecs::Client;
use stevedore_domain::failure::classify_launch_failure;
use stevedore_domain::ports::{Launch, LaunchedTask, RunningTask, TaskRunner};
use stevedore_domain::spec::Capacity;
use stevedore_domain::task::{Attribute, ContainerState, TaskDescription, TaskLookup};
use stevedore_domain::{Error, FailureClass, Result};
use time::OffsetDateTime;
use tracing::{info, instrument, warn};

use crate::errors::classify;

/// DescribeTasks accepts at most this many ARNs per call.
pub const DESCRIBE_BATCH: usize = 100;

/// The deployment's ECS settings (from the function's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsSettings {
    pub cluster: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
}

pub struct EcsTaskRunner {
    client: Client,
    settings: EcsSettings,
}

impl EcsSettings {
    /// `CLUSTER` (required), `SUBNETS` and `SECURITY_GROUPS` (comma-separated
    /// defaults for job specs that do not name them), `ASSIGN_PUBLIC_IP`
    /// (`true`/`false`, default false).
    pub fn from_env() -> Result<EcsSettings, String> {
        let list = |name: &str| -> Vec<String> {
            crate::env_optional(name)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let assign_public_ip = match crate::env_optional("ASSIGN_PUBLIC_IP").as_deref() {
            None | Some("false") | Some("DISABLED") => false,
            Some("true") | Some("ENABLED") => true,
            Some(other) => {
                return Err(format!(
                    "environment variable ASSIGN_PUBLIC_IP must be true or false, not `{other}`"
                ))
            }
        };
        Ok(EcsSettings {
            cluster: crate::env_required("CLUSTER")?,
            subnets: list("SUBNETS"),
            security_groups: list("SECURITY_GROUPS"),
            assign_public_ip,
        })
    }
}

impl EcsTaskRunner {
    pub fn new(client: Client, settings: EcsSettings) -> Self {
        EcsTaskRunner { client, settings }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, settings: EcsSettings) -> Self {
        Self::new(Client::new(sdk), settings)
    }

    pub fn settings(&self) -> &EcsSettings {
        &self.settings
    }

    /// Every page of ListTasks for one desired status (and `startedBy`, when
    /// given), appended to `arns` without repeats.
    /// Every task ARN ListTasks gives for one filter, all pages.
    async fn list_task_arns(&self, filter: ListFilter<'_>, arns: &mut Vec<String>) -> Result<()> {
        let mut next: Option<String> = None;
        // The whole cluster's running tasks are listed a bounded number of
        // pages at a time (the sweep's time budget, which the function's
        // timeout counts: tests/deploy/check_template.py).
        let max_pages = match filter {
            ListFilter::Running => SWEEP_LIST_PAGES,
            _ => usize::MAX,
        };
        for page in 1.. {
            if page > max_pages {
                warn!(
                    pages = max_pages,
                    "the cluster lists more running tasks than one sweep reads; the rest wait for a later sweep"
                );
                return Ok(());
            }
            let request = self.client.list_tasks().cluster(&self.settings.cluster);
            // The API reference: "When you specify startedBy as the filter,
            // it must be the only filter that you use." It then lists the
            // tasks whose desired status is RUNNING (the default).
            let request = match filter {
                ListFilter::StartedBy(started_by) => request.started_by(started_by),
                ListFilter::Running => request.desired_status(DesiredStatus::Running),
                ListFilter::StoppedOfFamily(family) => request
                    .family(family)
                    .desired_status(DesiredStatus::Stopped),
            };
            let out = request
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| classify("ListTasks", &e))?;
            for arn in out.task_arns() {
                if !arns.contains(arn) {
                    arns.push(arn.clone());
                }
            }
            match out.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_string()),
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}

/// How many pages of ListTasks (100 tasks each) one sweep reads of the
/// cluster's running tasks, with one DescribeTasks per page.
pub const SWEEP_LIST_PAGES: usize = 10;

/// One ListTasks filter, as the API allows them to be combined.
#[derive(Debug, Clone, Copy)]
enum ListFilter<'a> {
    /// Alone: the running tasks started with exactly this value.
    StartedBy(&'a str),
    /// The cluster's tasks whose desired status is RUNNING.
    Running,
    /// The recently stopped tasks of one task definition family.
    StoppedOfFamily(&'a str),
}

fn time_of(t: Option<&aws_smithy_types::DateTime>) -> Option<OffsetDateTime> {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos()).ok())
}

/// The domain's view of an SDK task.
pub fn describe(task: &Task) -> TaskDescription {
    TaskDescription {
        task_arn: task.task_arn().unwrap_or_default().to_string(),
        cluster_arn: task.cluster_arn().map(str::to_string),
        task_definition_arn: task.task_definition_arn().map(str::to_string),
        last_status: task.last_status().unwrap_or_default().to_string(),
        desired_status: task.desired_status().map(str::to_string),
        started_by: task.started_by().map(str::to_string),
        stop_code: task.stop_code().map(|c| c.as_str().to_string()),
        stopped_reason: task.stopped_reason().map(str::to_string),
        containers: task
            .containers()
            .iter()
            .map(|c| ContainerState {
                name: c.name().unwrap_or_default().to_string(),
                exit_code: c.exit_code(),
                reason: c.reason().map(str::to_string),
                last_status: c.last_status().map(str::to_string),
            })
            .collect(),
        cpu: task.cpu().map(str::to_string),
        memory: task.memory().map(str::to_string),
        capacity_provider_name: task.capacity_provider_name().map(str::to_string),
        launch_type: task.launch_type().map(|l| l.as_str().to_string()),
        attributes: task
            .attributes()
            .iter()
            .map(|a| Attribute {
                name: a.name().to_string(),
                value: a.value().map(str::to_string),
            })
            .collect(),
        created_at: time_of(task.created_at()),
        pull_started_at: time_of(task.pull_started_at()),
        started_at: time_of(task.started_at()),
        stopping_at: time_of(task.stopping_at()),
        stopped_at: time_of(task.stopped_at()),
    }
}

fn build_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("RunTask: {what}: {e}"))
}

#[async_trait]
impl TaskRunner for EcsTaskRunner {
    #[instrument(skip_all, fields(run_id = %launch.run_id, job = %launch.spec.job, capacity = %launch.capacity))]
    async fn run_task(&self, launch: &Launch) -> Result<LaunchedTask> {
        let spec = &launch.spec;
        let network = &launch.network;
        let subnets = if network.subnets.is_empty() {
            self.settings.subnets.clone()
        } else {
            network.subnets.clone()
        };
        if subnets.is_empty() {
            return Err(Error::configuration(
                "no subnets: set the deployment's Subnets parameter or `network.subnets` in the job spec",
            ));
        }
        let security_groups = if network.security_groups.is_empty() {
            self.settings.security_groups.clone()
        } else {
            network.security_groups.clone()
        };
        let public_ip = network
            .assign_public_ip
            .unwrap_or(self.settings.assign_public_ip);
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(subnets))
            .set_security_groups(Some(security_groups))
            .assign_public_ip(if public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()
            .map_err(|e| build_err("network", e))?;

        let mut overrides = TaskOverride::builder();
        if let Some(container) = &spec.container {
            let mut co = ContainerOverride::builder().name(container);
            if let Some(command) = &spec.command {
                co = co.set_command(Some(command.clone()));
            }
            for (k, v) in &spec.environment {
                co = co.environment(KeyValuePair::builder().name(k).value(v).build());
            }
            // The job can tell which run and attempt it is (logs, idempotent writes).
            for (k, v) in launch.run_env() {
                co = co.environment(KeyValuePair::builder().name(k).value(v).build());
            }
            overrides = overrides.container_overrides(co.build());
        }
        if let Some(cpu) = spec.cpu {
            overrides = overrides.cpu(cpu.to_string());
        }
        if let Some(memory) = spec.memory {
            overrides = overrides.memory(memory.to_string());
        }

        let mut request = self
            .client
            .run_task()
            .cluster(&self.settings.cluster)
            .task_definition(&spec.task_definition)
            .client_token(&launch.client_token)
            .started_by(&launch.started_by)
            .count(1)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            )
            .overrides(overrides.build())
            .enable_ecs_managed_tags(true)
            .propagate_tags(PropagateTags::TaskDefinition);
        for (k, v) in &launch.tags {
            request = request.tags(Tag::builder().key(k).value(v).build());
        }
        request = match launch.capacity {
            Capacity::OnDemand => request.launch_type(LaunchType::Fargate),
            Capacity::Spot | Capacity::SpotWithFallback => request.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider("FARGATE_SPOT")
                    .weight(1)
                    .build()
                    .map_err(|e| build_err("capacity provider strategy", e))?,
            ),
        };

        let out = request.send().await.map_err(|e| {
            let err = classify("RunTask", &e);
            // "Unable to find task definition", bad container names, bad
            // cpu/memory: ECS answers ClientException/InvalidParameterException.
            if err.class == FailureClass::ConfigurationError {
                Error::configuration(format!(
                    "{}; check the job's taskDefinition `{}` and the cluster `{}`",
                    err.message, spec.task_definition, self.settings.cluster
                ))
            } else {
                err
            }
        })?;

        if let Some(failure) = out.failures().first() {
            let outcome =
                classify_launch_failure(failure.reason().unwrap_or("unknown"), failure.detail());
            warn!(
                reason = failure.reason(),
                detail = failure.detail(),
                "RunTask returned a failure"
            );
            return Err(Error::new(
                outcome.class.unwrap_or(FailureClass::StartFailed),
                outcome.message,
            ));
        }
        let Some(task) = out.tasks().first() else {
            // No task and no failure: never treat that as a launch.
            return Err(Error::transient(
                "RunTask returned neither a task nor a failure",
            ));
        };
        let described = describe(task);
        info!(task_arn = %described.task_arn, "task launched");
        Ok(LaunchedTask {
            task_arn: described.task_arn.clone(),
            task: Some(described),
        })
    }

    #[instrument(skip_all, fields(count = task_arns.len()))]
    async fn describe_tasks(&self, task_arns: &[String]) -> Result<Vec<TaskLookup>> {
        let mut out = Vec::with_capacity(task_arns.len());
        for batch in task_arns.chunks(DESCRIBE_BATCH) {
            let resp = self
                .client
                .describe_tasks()
                .cluster(&self.settings.cluster)
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| classify("DescribeTasks", &e))?;
            let mut seen = HashSet::new();
            for task in resp.tasks() {
                let d = describe(task);
                seen.insert(d.task_arn.clone());
                out.push(TaskLookup::Found(d));
            }
            for failure in resp.failures() {
                let arn = failure.arn().unwrap_or_default().to_string();
                seen.insert(arn.clone());
                out.push(TaskLookup::Missing {
                    task_arn: arn,
                    reason: failure.reason().unwrap_or("MISSING").to_string(),
                });
            }
            // An ARN in neither list is not known to ECS either.
            for arn in batch.iter().filter(|a| !seen.contains(*a)) {
                out.push(TaskLookup::Missing {
                    task_arn: arn.clone(),
                    reason: "MISSING".into(),
                });
            }
        }
        Ok(out)
    }

    #[instrument(skip_all, fields(task_arn = %task_arn))]
    async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<()> {
        match self
            .client
            .stop_task()
            .cluster(&self.settings.cluster)
            .task(task_arn)
            .reason(reason)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = classify("StopTask", &e);
                // Stopping a task ECS no longer has (or already stopped) is done.
                if err.class == FailureClass::ConfigurationError
                    && (err.message.contains("not found") || err.message.contains("stopped"))
                {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    #[instrument(skip_all, fields(started_by = %started_by))]
    async fn find_tasks(
        &self,
        started_by: &str,
        family: Option<&str>,
    ) -> Result<Vec<TaskDescription>> {
        // startedBy cannot be combined with a desired status: the running
        // ones by startedBy, the recently stopped ones by family, matched on
        // startedBy below.
        let mut arns = Vec::new();
        self.list_task_arns(ListFilter::StartedBy(started_by), &mut arns)
            .await?;
        if let Some(family) = family {
            self.list_task_arns(ListFilter::StoppedOfFamily(family), &mut arns)
                .await?;
        }
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .describe_tasks(&arns)
            .await?
            .into_iter()
            .filter_map(TaskLookup::found)
            .filter(|t| t.started_by.as_deref() == Some(started_by))
            .collect())
    }

    #[instrument(skip_all, fields(prefix = %prefix))]
    async fn list_running(&self, prefix: &str) -> Result<Vec<RunningTask>> {
        // ListTasks cannot filter on a startedBy prefix: list the cluster's
        // running tasks, describe them with their tags, keep ours.
        let mut arns = Vec::new();
        self.list_task_arns(ListFilter::Running, &mut arns).await?;
        let mut running = Vec::new();
        for batch in arns.chunks(DESCRIBE_BATCH) {
            let resp = self
                .client
                .describe_tasks()
                .cluster(&self.settings.cluster)
                .set_tasks(Some(batch.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .map_err(|e| classify("DescribeTasks", &e))?;
            for task in resp.tasks() {
                let Some(started_by) = task.started_by().filter(|s| s.starts_with(prefix)) else {
                    continue;
                };
                // Listed as running, stopped since: nothing to sweep.
                if task.desired_status() == Some("STOPPED") || task.last_status() == Some("STOPPED")
                {
                    continue;
                }
                running.push(RunningTask {
                    task_arn: task.task_arn().unwrap_or_default().to_string(),
                    started_by: started_by.to_string(),
                    created_at: time_of(task.created_at()),
                    tags: task
                        .tags()
                        .iter()
                        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                        .collect(),
                });
            }
        }
        Ok(running)
    }
}
