//! The job spec: what users write (the execution input), parsed and validated
//! in one pass that reports every problem with its field path.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::budget;
use crate::duration::{format_duration, parse_duration};
use crate::error::{Error, FailureClass};

/// Where the task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Capacity {
    /// Fargate, on-demand.
    #[serde(rename = "on-demand")]
    OnDemand,
    /// Fargate Spot only.
    #[serde(rename = "spot")]
    Spot,
    /// Fargate Spot first; on-demand when Spot has no capacity (same attempt)
    /// or interrupted the task (next attempt).
    #[serde(rename = "spot-with-fallback")]
    SpotWithFallback,
}

impl Capacity {
    pub fn as_str(self) -> &'static str {
        match self {
            Capacity::OnDemand => "on-demand",
            Capacity::Spot => "spot",
            Capacity::SpotWithFallback => "spot-with-fallback",
        }
    }
    pub fn parse(s: &str) -> Option<Capacity> {
        match s {
            "on-demand" => Some(Capacity::OnDemand),
            "spot" => Some(Capacity::Spot),
            "spot-with-fallback" => Some(Capacity::SpotWithFallback),
            _ => None,
        }
    }
    /// Whether the task is placed on Fargate Spot.
    pub fn uses_spot(self) -> bool {
        !matches!(self, Capacity::OnDemand)
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Network settings; anything left out comes from the deployment's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assign_public_ip: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    pub max_attempts: u32,
    pub on: Vec<FailureClass>,
    /// When non-empty, `ExitedNonZero` is retried only for these codes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
    /// Delay before the second attempt.
    #[serde(serialize_with = "ser_duration")]
    pub delay: u64,
    /// Each further delay is the previous one times this.
    pub backoff_rate: f64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: 3,
            on: vec![
                FailureClass::CapacityUnavailable,
                FailureClass::SpotInterrupted,
                FailureClass::StartFailed,
            ],
            exit_codes: Vec::new(),
            delay: 30,
            backoff_rate: 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenBusy {
    /// Record the run as skipped; the execution succeeds.
    Skip,
    /// Fail the execution with `JobAlreadyRunning` (and alert).
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencySpec {
    pub max: u32,
    pub when_busy: WhenBusy,
}

impl Default for ConcurrencySpec {
    fn default() -> Self {
        ConcurrencySpec {
            max: 1,
            when_busy: WhenBusy::Skip,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifySpec {
    pub on_failure: bool,
    pub on_recovery: bool,
}

impl Default for NotifySpec {
    fn default() -> Self {
        NotifySpec {
            on_failure: true,
            on_recovery: false,
        }
    }
}

/// A validated job spec. Build it with [`JobSpec::parse`] or
/// [`JobSpec::from_value`]; its JSON form (`serde_json::to_value`) parses back
/// to the same spec with every default written out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub job: String,
    pub task_definition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_secrets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    pub capacity: Capacity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: u64,
    pub retry: RetrySpec,
    pub concurrency: ConcurrencySpec,
    pub notify: NotifySpec,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Which interval the run processes (see [`crate::logical`]); absent:
    /// the execution's start time.
    #[serde(
        default,
        with = "crate::task::lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub logical_time: Option<time::OffsetDateTime>,
    /// The time EventBridge Scheduler fired for, when a schedule started
    /// the run (`jobs/job.yaml` writes it): one execution per job and
    /// scheduled time runs the job, and a second start for the same time
    /// (Scheduler delivers at least once) is skipped. Reruns and backfills
    /// leave it out.
    #[serde(
        default,
        with = "crate::task::lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub scheduled_time: Option<time::OffsetDateTime>,
}

fn ser_duration<S: serde::Serializer>(seconds: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*seconds))
}

/// One problem in a job spec, with the path of the field (`retry.maxAttempts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a job spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<FieldError>);

impl SpecErrors {
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the job spec has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n- {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl From<SpecErrors> for Error {
    fn from(e: SpecErrors) -> Self {
        Error::new(FailureClass::InvalidJobSpec, e.to_string())
    }
}

pub const MIN_TIMEOUT_SECONDS: u64 = 10;
pub const MAX_TIMEOUT_SECONDS: u64 = 7 * 86_400;
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 3_600;
/// `retry.maxAttempts` is 1 to this.
pub const MAX_ATTEMPTS: u32 = 10;
/// ECS caps the characters of a RunTask `overrides` structure.
pub const MAX_OVERRIDES_CHARS: usize = 8_192;
/// ECS allows 50 tags per task; Stevedore adds its own.
pub const MAX_USER_TAGS: usize = 40;
pub const FARGATE_CPU_UNITS: [u32; 7] = [256, 512, 1024, 2048, 4096, 8192, 16384];

const TOP_FIELDS: &[&str] = &[
    "job",
    "taskDefinition",
    "container",
    "command",
    "environment",
    "notSecrets",
    "cpu",
    "memory",
    "capacity",
    "network",
    "timeout",
    "retry",
    "concurrency",
    "notify",
    "tags",
    "logicalTime",
    "scheduledTime",
];

impl JobSpec {
    /// Parses a job spec from JSON text.
    pub fn parse(text: &str) -> Result<JobSpec, SpecErrors> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            SpecErrors(vec![FieldError {
                path: String::new(),
                message: format!(
                    "is not valid JSON (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            }])
        })?;
        JobSpec::from_value(&value)
    }

    /// Validates a job spec already parsed as JSON; reports every problem.
    pub fn from_value(value: &Value) -> Result<JobSpec, SpecErrors> {
        let mut errs = Errors::default();
        let Some(map) = value.as_object() else {
            errs.add(
                "",
                format!("a job spec must be a JSON object, not {}", json_type(value)),
            );
            return Err(errs.finish());
        };
        errs.unknown_fields("", map, TOP_FIELDS);

        let job = errs.required_str(map, "", "job").unwrap_or_default();
        if !job.is_empty() && !is_job_name(&job) {
            errs.add(
                "job",
                format!("`{job}` is not a valid job name: use 1-64 letters, digits, `-` or `_`, starting with a letter or digit"),
            );
        }
        let task_definition = errs
            .required_str(map, "", "taskDefinition")
            .unwrap_or_default();
        if !task_definition.is_empty() {
            if let Err(m) = check_task_definition(&task_definition) {
                errs.add("taskDefinition", m);
            }
        }
        let container = errs.opt_str(map, "", "container");
        if let Some(c) = &container {
            if c.is_empty() || c.len() > 255 {
                errs.add(
                    "container",
                    "must be 1-255 characters (the container's name in the task definition)",
                );
            }
        }
        let command = errs.opt_string_list(map, "", "command");
        if let Some(cmd) = &command {
            if cmd.is_empty() {
                errs.add(
                    "command",
                    "is empty; leave it out to run the task definition's own command",
                );
            }
            for (i, arg) in cmd.iter().enumerate() {
                if let Err(m) = crate::logical::check(arg) {
                    errs.add(format!("command[{i}]"), m);
                }
            }
        }
        let environment = errs.opt_string_map(map, "", "environment");
        for (k, v) in &environment {
            if let Err(m) = crate::logical::check(v) {
                errs.add(format!("environment.{k}"), m);
            }
        }
        let logical_time = errs.opt_time(map, "logicalTime", "write it as 2026-11-27T00:00:00Z");
        let scheduled_time = errs.opt_time(
            map,
            "scheduledTime",
            "the schedule writes it (<aws.scheduler.scheduled-time>); a run started by hand leaves it out",
        );
        let not_secrets = errs
            .opt_string_list(map, "", "notSecrets")
            .unwrap_or_default();
        for name in &environment {
            check_env(&mut errs, name.0, name.1, &not_secrets);
        }
        for (i, name) in not_secrets.iter().enumerate() {
            if !environment.contains_key(name) {
                errs.add(
                    format!("notSecrets[{i}]"),
                    format!("`{name}` is not in `environment`"),
                );
            }
        }
        if (command.is_some() || !environment.is_empty()) && container.is_none() {
            errs.add(
                "container",
                "is required with `command` or `environment`: name the task definition's container they apply to",
            );
        }

        let cpu = errs.opt_u32(map, "", "cpu");
        if let Some(cpu) = cpu {
            if !FARGATE_CPU_UNITS.contains(&cpu) {
                errs.add(
                    "cpu",
                    format!("{cpu} is not a Fargate CPU size; use one of 256, 512, 1024, 2048, 4096, 8192, 16384 (1024 = 1 vCPU)"),
                );
            }
        }
        let memory = errs.opt_u32(map, "", "memory");
        if let Some(memory) = memory {
            if !(512..=122_880).contains(&memory) {
                errs.add(
                    "memory",
                    format!("{memory} MiB is outside Fargate's 512-122880 MiB"),
                );
            } else if let Some(cpu) = cpu.filter(|c| FARGATE_CPU_UNITS.contains(c)) {
                if let Err(m) = check_cpu_memory(cpu, memory) {
                    errs.add("memory", m);
                }
            }
        }

        let capacity = match errs.opt_str(map, "", "capacity") {
            None => Capacity::OnDemand,
            Some(s) => Capacity::parse(&s).unwrap_or_else(|| {
                errs.add(
                    "capacity",
                    format!(
                        "`{s}` is not a capacity; use `on-demand`, `spot` or `spot-with-fallback`"
                    ),
                );
                Capacity::OnDemand
            }),
        };

        let network = errs.opt_object(map, "", "network").map(|n| {
            errs.unknown_fields(
                "network",
                n,
                &["subnets", "securityGroups", "assignPublicIp"],
            );
            let subnets = errs
                .opt_string_list(n, "network", "subnets")
                .unwrap_or_default();
            for (i, s) in subnets.iter().enumerate() {
                if !is_aws_id(s, "subnet-") {
                    errs.add(
                        format!("network.subnets[{i}]"),
                        format!("`{s}` is not a subnet id (subnet-...)"),
                    );
                }
            }
            if subnets.len() > 16 {
                errs.add("network.subnets", "at most 16 subnets");
            }
            let security_groups = errs
                .opt_string_list(n, "network", "securityGroups")
                .unwrap_or_default();
            for (i, s) in security_groups.iter().enumerate() {
                if !is_aws_id(s, "sg-") {
                    errs.add(
                        format!("network.securityGroups[{i}]"),
                        format!("`{s}` is not a security group id (sg-...)"),
                    );
                }
            }
            if security_groups.len() > 5 {
                errs.add("network.securityGroups", "at most 5 security groups");
            }
            let assign_public_ip = errs.opt_bool(n, "network", "assignPublicIp");
            NetworkSpec {
                subnets,
                security_groups,
                assign_public_ip,
            }
        });

        let timeout = match errs.opt_duration(map, "", "timeout") {
            None => DEFAULT_TIMEOUT_SECONDS,
            Some(t) if !(MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS).contains(&t) => {
                errs.add(
                    "timeout",
                    format!("{} is outside 10s-7d", format_duration(t)),
                );
                DEFAULT_TIMEOUT_SECONDS
            }
            Some(t) => t,
        };

        let retry = match errs.opt_object(map, "", "retry") {
            None => RetrySpec::default(),
            Some(r) => parse_retry(&mut errs, r),
        };
        let concurrency = match errs.opt_object(map, "", "concurrency") {
            None => ConcurrencySpec::default(),
            Some(c) => {
                errs.unknown_fields("concurrency", c, &["max", "whenBusy"]);
                let max = errs.opt_u32(c, "concurrency", "max").unwrap_or(1);
                if !(1..=100).contains(&max) {
                    errs.add(
                        "concurrency.max",
                        format!("must be between 1 and 100 (got {max})"),
                    );
                }
                let when_busy = match errs.opt_str(c, "concurrency", "whenBusy").as_deref() {
                    None | Some("skip") => WhenBusy::Skip,
                    Some("fail") => WhenBusy::Fail,
                    Some(other) => {
                        errs.add(
                            "concurrency.whenBusy",
                            format!("`{other}` is not allowed; use `skip` or `fail`"),
                        );
                        WhenBusy::Skip
                    }
                };
                ConcurrencySpec { max, when_busy }
            }
        };
        let notify = match errs.opt_object(map, "", "notify") {
            None => NotifySpec::default(),
            Some(n) => {
                errs.unknown_fields("notify", n, &["onFailure", "onRecovery"]);
                NotifySpec {
                    on_failure: errs.opt_bool(n, "notify", "onFailure").unwrap_or(true),
                    on_recovery: errs.opt_bool(n, "notify", "onRecovery").unwrap_or(false),
                }
            }
        };
        check_execution_fits(&mut errs, timeout, &retry);
        let tags = errs.opt_string_map(map, "", "tags");
        if tags.len() > MAX_USER_TAGS {
            errs.add(
                "tags",
                format!("{} tags; at most {MAX_USER_TAGS}", tags.len()),
            );
        }
        for (k, v) in &tags {
            let path = format!("tags.{k}");
            if k.is_empty() || k.chars().count() > 128 {
                errs.add(path, "a tag key must be 1-128 characters");
            } else if k.to_ascii_lowercase().starts_with("aws:") || k.starts_with("stevedore:") {
                errs.add(path, "the prefixes `aws:` and `stevedore:` are reserved");
            } else if v.chars().count() > 256 {
                errs.add(path, "a tag value must be at most 256 characters");
            }
        }

        let overrides_chars = command
            .iter()
            .flatten()
            .map(|c| c.len() + 3)
            .chain(environment.iter().map(|(k, v)| k.len() + v.len() + 24))
            .sum::<usize>();
        if overrides_chars > MAX_OVERRIDES_CHARS - 512 {
            errs.add(
                "",
                format!("`command` and `environment` together are about {overrides_chars} characters; ECS accepts at most {MAX_OVERRIDES_CHARS} in a task's overrides: move large values into the image or a file"),
            );
        }

        errs.into_result(JobSpec {
            job,
            task_definition,
            container,
            command,
            environment,
            not_secrets,
            cpu,
            memory,
            capacity,
            network,
            timeout,
            retry,
            concurrency,
            notify,
            tags,
            logical_time,
            scheduled_time,
        })
    }

    /// The spec a run of logical time `t` launches: `logicalTime` set, the
    /// placeholders of `command` and `environment` filled.
    pub fn for_logical_time(&self, t: time::OffsetDateTime) -> JobSpec {
        JobSpec {
            command: self
                .command
                .as_ref()
                .map(|c| c.iter().map(|a| crate::logical::fill(a, t)).collect()),
            environment: self
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), crate::logical::fill(v, t)))
                .collect(),
            logical_time: Some(t),
            ..self.clone()
        }
    }

    /// The JSON form, every default written out.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The retry decision for a failed attempt (`attempt` counts from 1).
    pub fn should_retry(&self, class: FailureClass, exit_code: Option<i32>, attempt: u32) -> bool {
        if attempt >= self.retry.max_attempts || !self.retry.on.contains(&class) {
            return false;
        }
        match (class, exit_code) {
            (FailureClass::ExitedNonZero, Some(code)) if !self.retry.exit_codes.is_empty() => {
                self.retry.exit_codes.contains(&code)
            }
            _ => true,
        }
    }

    /// Seconds to wait before attempt `next_attempt` (2 or more).
    pub fn retry_delay(&self, next_attempt: u32) -> u64 {
        self.retry.delay_before(next_attempt)
    }

    /// The longest this job's execution can take: every attempt runs to its
    /// timeout, with the retry delays in between.
    pub fn worst_case_seconds(&self) -> u64 {
        self.retry.worst_case_seconds(self.timeout)
    }

    /// Seconds between polls while an attempt waits, for a configured check
    /// interval (see [`budget::check_seconds`]).
    pub fn check_seconds(&self, interval: u64) -> u64 {
        budget::check_seconds(self.timeout, interval, self.retry.max_attempts)
    }
}

impl RetrySpec {
    /// Seconds to wait before attempt `next_attempt` (2 or more).
    pub fn delay_before(&self, next_attempt: u32) -> u64 {
        let exponent = next_attempt.saturating_sub(2).min(64) as i32;
        let delay = self.delay as f64 * self.backoff_rate.powi(exponent);
        // One hour at most: a longer pause is a schedule, not a retry.
        delay.min(3_600.0).round() as u64
    }

    fn worst_case_seconds(&self, timeout: u64) -> u64 {
        let delays = (2..=self.max_attempts).map(|n| self.delay_before(n)).sum();
        budget::worst_case_seconds(timeout, self.max_attempts, delays)
    }
}

/// A spec whose every attempt, run to its timeout, would outlast run-job's
/// own `TimeoutSeconds` would be cut off by Step Functions: no record, no
/// alert, and the reaper stopping a healthy task. Refuse it here instead.
fn check_execution_fits(errs: &mut Errors, timeout: u64, retry: &RetrySpec) {
    if !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts) {
        return; // Reported already; the sum below would be meaningless (and long).
    }
    let worst = retry.worst_case_seconds(timeout);
    if worst > budget::EXECUTION_TIMEOUT_SECONDS {
        errs.add(
            "timeout",
            format!(
                "with retry.maxAttempts = {} and retry.delay = {}, one execution could take {} ({} per attempt plus retry delays and overheads), longer than run-job's limit of {}: lower `timeout` or `retry.maxAttempts`",
                retry.max_attempts,
                format_duration(retry.delay),
                format_duration(worst),
                format_duration(timeout),
                format_duration(budget::EXECUTION_TIMEOUT_SECONDS)
            ),
        );
    }
}

fn parse_retry(errs: &mut Errors, r: &Map<String, Value>) -> RetrySpec {
    errs.unknown_fields(
        "retry",
        r,
        &["maxAttempts", "on", "exitCodes", "delay", "backoffRate"],
    );
    let defaults = RetrySpec::default();
    let max_attempts = errs
        .opt_u32(r, "retry", "maxAttempts")
        .unwrap_or(defaults.max_attempts);
    if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
        errs.add(
            "retry.maxAttempts",
            format!("must be between 1 and {MAX_ATTEMPTS} (got {max_attempts})"),
        );
    }
    let on = match errs.opt_string_list(r, "retry", "on") {
        None => defaults.on,
        Some(names) => {
            let mut classes = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match name.parse::<FailureClass>() {
                    Ok(c) if c.job_retryable() => classes.push(c),
                    Ok(c) => errs.add(
                        format!("retry.on[{i}]"),
                        format!(
                            "`{c}` cannot be retried by a job; retryable: {}",
                            retryable_names()
                        ),
                    ),
                    Err(_) => errs.add(
                        format!("retry.on[{i}]"),
                        format!(
                            "`{name}` is not a failure class; retryable: {}",
                            retryable_names()
                        ),
                    ),
                }
            }
            classes
        }
    };
    let exit_codes = match r.get("exitCodes") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let mut codes = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_i64() {
                    Some(c) if (1..=255).contains(&c) => codes.push(c as i32),
                    _ => errs.add(
                        format!("retry.exitCodes[{i}]"),
                        "must be an exit code between 1 and 255",
                    ),
                }
            }
            if !codes.is_empty() && !on.contains(&FailureClass::ExitedNonZero) {
                errs.add(
                    "retry.exitCodes",
                    "has no effect unless `retry.on` lists `ExitedNonZero`",
                );
            }
            codes
        }
        Some(other) => {
            errs.add(
                "retry.exitCodes",
                format!("must be an array of exit codes, not {}", json_type(other)),
            );
            Vec::new()
        }
    };
    let delay = match errs.opt_duration(r, "retry", "delay") {
        Some(d) if d > 3_600 => {
            errs.add("retry.delay", "must be at most 1h");
            defaults.delay
        }
        Some(d) => d,
        None => defaults.delay,
    };
    let backoff_rate = match r.get("backoffRate") {
        None => defaults.backoff_rate,
        Some(v) => match v.as_f64() {
            Some(rate) if (1.0..=10.0).contains(&rate) => rate,
            _ => {
                errs.add("retry.backoffRate", "must be a number between 1 and 10");
                defaults.backoff_rate
            }
        },
    };
    RetrySpec {
        max_attempts,
        on,
        exit_codes,
        delay,
        backoff_rate,
    }
}

fn retryable_names() -> String {
    FailureClass::ALL
        .into_iter()
        .filter(|c| c.job_retryable())
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_job_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_family(s: &str) -> bool {
    (1..=255).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn check_task_definition(td: &str) -> Result<(), String> {
    let hint =
        "use a family (`etl-python`), `family:revision` (`etl-python:7`) or a task definition ARN";
    let tail = if let Some(rest) = td.strip_prefix("arn:") {
        match rest.split_once(":task-definition/") {
            Some((_, tail)) if rest.contains(":ecs:") => tail,
            _ => return Err(format!("`{td}` is not a task definition ARN; {hint}")),
        }
    } else {
        td
    };
    let (family, revision) = match tail.split_once(':') {
        Some((f, r)) => (f, Some(r)),
        None => (tail, None),
    };
    if !is_family(family) {
        return Err(format!("`{td}` has an invalid family name; {hint}"));
    }
    if let Some(r) = revision {
        if !r.parse::<u32>().is_ok_and(|n| n > 0) {
            return Err(format!("`{td}` has an invalid revision `{r}`; {hint}"));
        }
    }
    Ok(())
}

/// The family of a task definition as a spec names it (a family,
/// `family:revision` or an ARN; the spec's checks have accepted its form).
pub fn task_definition_family(td: &str) -> &str {
    let tail = td
        .split_once(":task-definition/")
        .map_or(td, |(_, tail)| tail);
    tail.split_once(':').map_or(tail, |(family, _)| family)
}

/// The task definition family of a job stack's job (`jobs/job.yaml`):
/// `stevedore-<stack>_<job>`. A stack name has no `_`, so the prefix
/// `stevedore-<stack>_` names one stack's jobs and no other stack's, which
/// is what the control plane's `ecs:RunTask` permission is scoped to.
pub fn job_stack_family(stack: &str, job: &str) -> String {
    format!("stevedore-{stack}_{job}")
}

/// Fargate's valid task-level CPU/memory pairs (memory in MiB).
pub fn check_cpu_memory(cpu: u32, memory: u32) -> Result<(), String> {
    let (min, max, step) = match cpu {
        256 => (512, 2048, 512),
        512 => (1024, 4096, 1024),
        1024 => (2048, 8192, 1024),
        2048 => (4096, 16384, 1024),
        4096 => (8192, 30720, 1024),
        8192 => (16384, 61440, 4096),
        16384 => (32768, 122880, 8192),
        _ => return Err(format!("{cpu} is not a Fargate CPU size")),
    };
    let ok = if cpu == 256 {
        [512, 1024, 2048].contains(&memory)
    } else {
        (min..=max).contains(&memory) && (memory - min).is_multiple_of(step)
    };
    if ok {
        Ok(())
    } else if cpu == 256 {
        Err(format!(
            "{memory} MiB does not fit cpu 256; use 512, 1024 or 2048"
        ))
    } else {
        Err(format!(
            "{memory} MiB does not fit cpu {cpu}; use {min}-{max} MiB in steps of {step}"
        ))
    }
}

fn is_aws_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Whether an environment variable name looks like it holds a secret.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    const WORDS: &[&str] = &[
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "CREDENTIAL",
        "PRIVATE",
        "APIKEY",
        "API_KEY",
        "ACCESS_KEY",
    ];
    WORDS.iter().any(|w| upper.contains(w))
        || upper.ends_with("_KEY")
        || upper == "KEY"
        || upper.ends_with("_PWD")
        || upper == "PWD"
}

/// Whether a value carries credentials in a URL (`scheme://user:pass@host`).
pub fn has_url_credentials(value: &str) -> bool {
    value.split("://").skip(1).any(|after| {
        let authority = after.split(['/', '?', '#', ' ']).next().unwrap_or("");
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

fn check_env(errs: &mut Errors, name: &str, value: &str, not_secrets: &[String]) {
    let path = format!("environment.{name}");
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        errs.add(
            path,
            "is not a valid variable name: use letters, digits and `_`, not starting with a digit",
        );
        return;
    }
    if name.starts_with("STEVEDORE_") {
        errs.add(path, "names starting with STEVEDORE_ are reserved: Stevedore sets STEVEDORE_RUN_ID, STEVEDORE_JOB and STEVEDORE_ATTEMPT itself");
        return;
    }
    const WHERE: &str = "a job spec is visible in the Step Functions console and in the task's overrides: put the value in Secrets Manager or SSM Parameter Store and reference it from the task definition's container `secrets`";
    if has_url_credentials(value) {
        errs.add(path, format!("the value has a password in a URL; {WHERE}"));
    } else if looks_secret(name) && !not_secrets.iter().any(|n| n == name) {
        errs.add(
            path,
            format!("looks like a secret; {WHERE}. If it is not a secret, list it in `notSecrets`"),
        );
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Collects field errors while the parser walks the spec.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn finish(self) -> SpecErrors {
        SpecErrors(self.0)
    }

    fn into_result<T>(self, value: T) -> Result<T, SpecErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.finish())
        }
    }

    fn unknown_fields(&mut self, prefix: &str, map: &Map<String, Value>, known: &[&str]) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let hint = match closest(key, known) {
                    Some(k) => format!("did you mean `{k}`?"),
                    None => format!("known fields: {}", known.join(", ")),
                };
                self.add(join(prefix, key), format!("unknown field; {hint}"));
            }
        }
    }

    fn wrong_type(&mut self, prefix: &str, key: &str, want: &str, got: &Value) {
        self.add(
            join(prefix, key),
            format!("must be {want}, not {}", json_type(got)),
        );
    }

    fn required_str(
        &mut self,
        map: &Map<String, Value>,
        prefix: &str,
        key: &str,
    ) -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => {
                self.add(join(prefix, key), "is required");
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.add(join(prefix, key), "must not be empty");
                None
            }
            _ => self.opt_str(map, prefix, key),
        }
    }

    /// A top-level RFC 3339 time; `hint` says how to write it.
    fn opt_time(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        hint: &str,
    ) -> Option<time::OffsetDateTime> {
        let s = self.opt_str(map, "", key)?;
        match time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339) {
            Ok(t) => Some(t),
            Err(_) => {
                self.add(key, format!("`{s}` is not an RFC 3339 time: {hint}"));
                None
            }
        }
    }

    fn opt_str(&mut self, map: &Map<String, Value>, prefix: &str, key: &str) -> Option<String> {
        match map.get(key)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(prefix, key, "a string", other);
                None
            }
        }
    }

    fn opt_bool(&mut self, map: &Map<String, Value>, prefix: &str, key: &str) -> Option<bool> {
        match map.get(key)? {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong_type(prefix, key, "true or false", other);
                None
            }
        }
    }

    fn opt_u32(&mut self, map: &Map<String, Value>, prefix: &str, key: &str) -> Option<u32> {
        match map.get(key)? {
            Value::Null => None,
            Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Some(n),
                None => {
                    self.add(
                        join(prefix, key),
                        format!("must be a whole number, not {n}"),
                    );
                    None
                }
            },
            other => {
                self.wrong_type(prefix, key, "a whole number", other);
                None
            }
        }
    }

    fn opt_duration(&mut self, map: &Map<String, Value>, prefix: &str, key: &str) -> Option<u64> {
        let text = self.opt_str(map, prefix, key)?;
        match parse_duration(&text) {
            Ok(s) => Some(s),
            Err(m) => {
                self.add(join(prefix, key), m);
                None
            }
        }
    }

    fn opt_object<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        prefix: &str,
        key: &str,
    ) -> Option<&'v Map<String, Value>> {
        match map.get(key)? {
            Value::Null => None,
            Value::Object(o) => Some(o),
            other => {
                self.wrong_type(prefix, key, "an object", other);
                None
            }
        }
    }

    fn opt_string_list(
        &mut self,
        map: &Map<String, Value>,
        prefix: &str,
        key: &str,
    ) -> Option<Vec<String>> {
        match map.get(key)? {
            Value::Null => None,
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.add(
                            format!("{}[{i}]", join(prefix, key)),
                            format!("must be a string, not {}", json_type(other)),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(prefix, key, "an array of strings", other);
                None
            }
        }
    }

    fn opt_string_map(
        &mut self,
        map: &Map<String, Value>,
        prefix: &str,
        key: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) => {
                for (k, v) in o {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        other => self.add(
                            format!("{}.{k}", join(prefix, key)),
                            format!(
                                "must be a string, not {} (quote it: \"{}\")",
                                json_type(other),
                                other
                            ),
                        ),
                    }
                }
            }
            Some(other) => self.wrong_type(prefix, key, "an object of strings", other),
        }
        out
    }
}

/// The known field closest to a misspelt one, if any is close.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key_lower = key.to_ascii_lowercase().replace(['_', '-'], "");
    known
        .iter()
        .map(|k| (edit_distance(&key_lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({"job": "orders-ingest", "taskDefinition": "etl-python"})
    }

    #[test]
    fn when_spec_is_minimal_should_fill_every_default() {
        let spec = JobSpec::from_value(&minimal()).unwrap();
        assert_eq!(spec.capacity, Capacity::OnDemand);
        assert_eq!(spec.timeout, 3600);
        assert_eq!(spec.retry.max_attempts, 3);
        assert_eq!(
            spec.concurrency,
            ConcurrencySpec {
                max: 1,
                when_busy: WhenBusy::Skip
            }
        );
        assert!(spec.notify.on_failure);
        assert!(!spec.notify.on_recovery);
    }

    #[test]
    fn when_spec_is_the_design_example_should_parse_it() {
        let text = r#"{
          "job": "orders-ingest",
          "taskDefinition": "etl-python:12",
          "container": "app",
          "command": ["python", "-m", "ingest.orders", "--since", "yesterday"],
          "environment": { "TARGET_SCHEMA": "raw" },
          "cpu": 1024,
          "memory": 4096,
          "capacity": "spot-with-fallback",
          "timeout": "45m",
          "retry": { "maxAttempts": 3, "on": ["CapacityUnavailable", "SpotInterrupted", "StartFailed"] },
          "concurrency": { "max": 1, "whenBusy": "skip" },
          "notify": { "onFailure": true, "onRecovery": true },
          "tags": { "team": "data" }
        }"#;
        let spec = JobSpec::parse(text).unwrap();
        assert_eq!(spec.timeout, 2700);
        assert_eq!(spec.capacity, Capacity::SpotWithFallback);
        assert_eq!(spec.command.as_ref().unwrap()[2], "ingest.orders");
        // The JSON form parses back to the same spec.
        assert_eq!(JobSpec::from_value(&spec.to_value()).unwrap(), spec);
    }

    #[test]
    fn when_spec_has_many_problems_should_report_every_one_with_its_path() {
        let bad = json!({
            "job": "orders ingest!",
            "taskDefinition": "etl:0",
            "command": "python main.py",
            "environment": {"DB_PASSWORD": "hunter2", "RETRIES": 3, "1BAD": "x"},
            "cpu": 1000,
            "capacity": "cheap",
            "timeout": "45",
            "retry": {"maxAttempts": 0, "on": ["ExitedNonZero", "StoppedByUser", "Gremlins"]},
            "concurrency": {"whenBusy": "queue"},
            "notify": {"onFailure": "yes"},
            "colour": "blue",
            "taskDefinitoin": "x"
        });
        let errs = JobSpec::from_value(&bad).unwrap_err();
        let paths = errs.paths();
        for want in [
            "job",
            "taskDefinition",
            "command",
            "container",
            "environment.DB_PASSWORD",
            "environment.RETRIES",
            "environment.1BAD",
            "cpu",
            "capacity",
            "timeout",
            "retry.maxAttempts",
            "retry.on[1]",
            "retry.on[2]",
            "concurrency.whenBusy",
            "notify.onFailure",
            "colour",
            "taskDefinitoin",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
        let text = errs.to_string();
        assert!(
            text.contains("retry.maxAttempts: must be between 1 and 10 (got 0)"),
            "{text}"
        );
        assert!(
            text.contains("taskDefinitoin: unknown field; did you mean `taskDefinition`?"),
            "{text}"
        );
        assert!(text.contains("Secrets Manager"), "{text}");
        let err: Error = errs.into();
        assert_eq!(err.class, FailureClass::InvalidJobSpec);
    }

    #[test]
    fn when_input_is_not_an_object_or_not_json_should_say_so() {
        for input in ["[1,2]", "\"job\"", "null", "{", ""] {
            let errs = JobSpec::parse(input).unwrap_err();
            assert_eq!(errs.0.len(), 1, "{input}");
        }
        assert!(JobSpec::parse("{")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
    }

    #[test]
    fn secret_like_names_are_rejected_unless_allowed() {
        for name in [
            "DB_PASSWORD",
            "api_token",
            "AWS_SECRET_ACCESS_KEY",
            "STRIPE_KEY",
            "GITHUB_PAT_TOKEN",
            "PRIVATE_PEM",
            "CLIENT_CREDENTIALS",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["TARGET_SCHEMA", "KEYSPACE", "MONKEY_COUNT", "LOG_LEVEL"] {
            assert!(!looks_secret(name), "{name}");
        }
        let mut spec = minimal();
        spec["container"] = json!("app");
        spec["environment"] = json!({"TOKENIZER_MODEL": "bert"});
        assert!(JobSpec::from_value(&spec).is_err());
        spec["notSecrets"] = json!(["TOKENIZER_MODEL"]);
        assert!(JobSpec::from_value(&spec).is_ok());
        spec["notSecrets"] = json!(["TOKENIZER_MODEL", "TYPO"]);
        let errs = JobSpec::from_value(&spec).unwrap_err();
        assert_eq!(errs.paths(), vec!["notSecrets[1]"]);
    }

    #[test]
    fn credentials_in_url_values_are_rejected() {
        assert!(has_url_credentials("postgres://etl:hunter2@db:5432/x"));
        assert!(!has_url_credentials("https://example.com/a@b"));
        assert!(!has_url_credentials("postgres://db:5432/x"));
        let mut spec = minimal();
        spec["container"] = json!("app");
        spec["environment"] = json!({"DATABASE_URL": "postgres://etl:hunter2@db/x"});
        let errs = JobSpec::from_value(&spec).unwrap_err();
        assert_eq!(errs.paths(), vec!["environment.DATABASE_URL"]);
        assert!(!errs.to_string().contains("hunter2"));
    }

    #[test]
    fn fargate_cpu_memory_pairs_are_checked() {
        assert!(check_cpu_memory(256, 512).is_ok());
        assert!(check_cpu_memory(256, 4096).is_err());
        assert!(check_cpu_memory(1024, 4096).is_ok());
        assert!(check_cpu_memory(1024, 4000).is_err());
        assert!(check_cpu_memory(8192, 20480).is_ok());
        assert!(check_cpu_memory(8192, 17408).is_err());
        let mut spec = minimal();
        spec["cpu"] = json!(512);
        spec["memory"] = json!(16384);
        let errs = JobSpec::from_value(&spec).unwrap_err();
        assert_eq!(errs.paths(), vec!["memory"]);
    }

    #[test]
    fn times_are_rfc3339_and_a_placeholder_left_unfilled_says_so() {
        let mut v = minimal();
        v["logicalTime"] = json!("2026-11-27T06:00:00Z");
        v["scheduledTime"] = json!("2026-11-27T06:00:00Z");
        let spec = JobSpec::from_value(&v).unwrap();
        assert_eq!(spec.scheduled_time, spec.logical_time);
        assert_eq!(
            JobSpec::from_value(&spec.to_value())
                .unwrap()
                .scheduled_time,
            spec.scheduled_time,
            "the record's spec keeps it"
        );
        v["scheduledTime"] = json!("<aws.scheduler.scheduled-time>");
        let errs = JobSpec::from_value(&v).unwrap_err();
        assert_eq!(errs.paths(), vec!["scheduledTime"]);
        assert!(
            errs.to_string()
                .contains("a run started by hand leaves it out"),
            "{errs}"
        );
    }

    #[test]
    fn families_of_every_form() {
        for (td, family) in [
            ("etl", "etl"),
            ("etl_python-2:7", "etl_python-2"),
            (
                "arn:aws:ecs:eu-west-1:123456789012:task-definition/etl:3",
                "etl",
            ),
            (
                "arn:aws:ecs:eu-west-1:123456789012:task-definition/etl",
                "etl",
            ),
        ] {
            assert_eq!(task_definition_family(td), family, "{td}");
        }
        assert_eq!(job_stack_family("prod", "orders"), "stevedore-prod_orders");
    }

    #[test]
    fn task_definition_forms() {
        for ok in [
            "etl",
            "etl_python-2:7",
            "arn:aws:ecs:eu-west-1:123456789012:task-definition/etl:3",
        ] {
            assert!(check_task_definition(ok).is_ok(), "{ok}");
        }
        for bad in ["etl:0", "etl:x", "etl python", "arn:aws:s3:::bucket", ""] {
            assert!(check_task_definition(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_huge_max_attempts_is_refused_at_once() {
        let started = std::time::Instant::now();
        let err = JobSpec::from_value(&json!({
            "job": "j", "taskDefinition": "etl", "timeout": "7d",
            "retry": {"maxAttempts": 4_294_967_295u64}
        }))
        .unwrap_err();
        assert_eq!(err.paths(), vec!["retry.maxAttempts"]);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn the_worst_spec_accepted_fits_in_one_execution() {
        let worst = JobSpec::from_value(&json!({
            "job": "long", "taskDefinition": "etl", "container": "app", "timeout": "7d",
            "retry": {"maxAttempts": 10, "delay": "1h", "backoffRate": 10, "on": ["ExitedNonZero"]}
        }))
        .unwrap();
        assert!(worst.worst_case_seconds() > 70 * 86_400);
        assert!(worst.worst_case_seconds() <= budget::EXECUTION_TIMEOUT_SECONDS);
        // Its polls stay within the history budget, whatever the interval.
        let checks =
            u64::from(worst.retry.max_attempts) * worst.timeout.div_ceil(worst.check_seconds(60));
        assert!(checks <= budget::MAX_CHECKS_PER_EXECUTION + 10, "{checks}");
    }

    #[test]
    fn retry_decisions_follow_the_spec() {
        let mut v = minimal();
        v["retry"] = json!({"maxAttempts": 3, "on": ["ExitedNonZero", "CapacityUnavailable"], "exitCodes": [75], "delay": "10s", "backoffRate": 3});
        let spec = JobSpec::from_value(&v).unwrap();
        assert!(spec.should_retry(FailureClass::ExitedNonZero, Some(75), 1));
        assert!(!spec.should_retry(FailureClass::ExitedNonZero, Some(3), 1));
        assert!(spec.should_retry(FailureClass::CapacityUnavailable, None, 2));
        assert!(!spec.should_retry(FailureClass::CapacityUnavailable, None, 3));
        assert!(!spec.should_retry(FailureClass::OutOfMemory, Some(137), 1));
        assert_eq!(spec.retry_delay(2), 10);
        assert_eq!(spec.retry_delay(3), 30);
        v["retry"] = json!({"exitCodes": [75]});
        let errs = JobSpec::from_value(&v).unwrap_err();
        assert_eq!(errs.paths(), vec!["retry.exitCodes"]);
    }

    #[test]
    fn reserved_tags_and_large_overrides_are_rejected() {
        let mut v = minimal();
        v["tags"] = json!({"aws:cloudformation": "x", "stevedore:job": "y", "team": "data"});
        let errs = JobSpec::from_value(&v).unwrap_err();
        assert_eq!(
            errs.paths(),
            vec!["tags.aws:cloudformation", "tags.stevedore:job"]
        );
        let mut v = minimal();
        v["container"] = json!("app");
        v["command"] = json!(["x".repeat(9000)]);
        let errs = JobSpec::from_value(&v).unwrap_err();
        assert!(errs.to_string().contains("overrides"), "{errs}");
    }
}
