//! The alert a run produces, one model for every channel: what failed, why
//! (in plain language, with a hint what to do), where to look (console
//! links, the log tail) and what it cost. Renderings: a subject and plain
//! text for email here, Block Kit for Slack in [`crate::slack`], the
//! structured JSON ([`Alert::to_json`]) for anything else.
//!
//! Every text that comes from the task (log lines, stop reasons, messages)
//! is redacted when the alert is built, so no rendering can leak it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::console::{self, LogStreamRef};
use crate::duration::format_duration;
use crate::error::FailureClass;
use crate::ports::LogTail;
use crate::redact::{redact, redact_in_place};
use crate::run::RunRecord;
use crate::spec::JobSpec;
use crate::task::{format_time, lenient_time, ContainerState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A failure alert, or the notice that a job succeeded again after failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    #[default]
    Failure,
    Recovery,
}

/// A console link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub label: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    #[serde(default)]
    pub kind: AlertKind,
    pub job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub attempt: u32,
    pub max_attempts: u32,
    /// Which interval the run processes (see [`crate::logical`]).
    #[serde(
        with = "lenient_time",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub logical_time: Option<OffsetDateTime>,
    /// The failure; for a recovery notice, the last failure before it.
    pub class: FailureClass,
    /// What happened, in plain language, with this run's numbers.
    pub explanation: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub message: String,
    pub severity: Severity,
    /// Consecutive failed runs before a recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_after: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub containers: Vec<ContainerState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    #[serde(
        with = "lenient_time",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub started_at: Option<OffsetDateTime>,
    #[serde(
        with = "lenient_time",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub stopped_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// `on-demand` or `spot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_stream: Option<LogStreamRef>,
    /// Console links: execution, task, log stream (those that exist).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub links: Vec<Link>,
    /// The last lines of the job container's log, oldest first, redacted.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub log_tail: Vec<String>,
}

/// The numbers an explanation quotes.
#[derive(Debug, Clone, Default)]
struct Context {
    memory_mib: Option<u32>,
    timeout_seconds: Option<u64>,
    exit_code: Option<i32>,
    retried_exit_codes: Vec<i32>,
    retried: bool,
    attempts: u32,
}

impl Alert {
    /// The alert for a run that ended failed.
    pub fn for_run(run: &RunRecord, class: FailureClass, message: &str, log: LogTail) -> Alert {
        let task = run.task.as_ref();
        let spec: Option<JobSpec> = run.job_spec().ok();
        let ctx = Context {
            memory_mib: task
                .and_then(|t| t.memory.as_deref())
                .and_then(|m| m.parse().ok())
                .or(spec.as_ref().and_then(|s| s.memory)),
            timeout_seconds: spec.as_ref().map(|s| s.timeout),
            exit_code: run.outcome.as_ref().and_then(|o| o.exit_code),
            retried_exit_codes: spec
                .as_ref()
                .map(|s| s.retry.exit_codes.clone())
                .unwrap_or_default(),
            retried: spec.as_ref().is_some_and(|s| s.retry.on.contains(&class)),
            attempts: run.max_attempts,
        };
        let (explanation, hint) = explain(class, &ctx);
        let mut alert = Alert::of_run(run, AlertKind::Failure, class, explanation, log);
        alert.hint = hint;
        alert.message = redact(message).into_owned();
        alert
    }

    /// The notice that `run` succeeded after `failed_runs` failed runs, the
    /// last of which failed with `last_class`.
    pub fn recovery(run: &RunRecord, failed_runs: u32, last_class: FailureClass) -> Alert {
        let runs = if failed_runs == 1 { "run" } else { "runs" };
        let explanation = format!(
            "This run succeeded after {failed_runs} failed {runs}; the last of them failed with {last_class}."
        );
        let mut alert = Alert::of_run(
            run,
            AlertKind::Recovery,
            last_class,
            explanation,
            LogTail::default(),
        );
        alert.message = "No action needed.".into();
        alert.severity = Severity::Info;
        alert.recovered_after = Some(failed_runs);
        // A success has nothing to say about how its task stopped.
        alert.containers.clear();
        alert.stop_code = None;
        alert.stopped_reason = None;
        alert
    }

    /// What every alert about a run says: the run's facts (texts from the
    /// task redacted), its log tail, and the console links.
    fn of_run(
        run: &RunRecord,
        kind: AlertKind,
        class: FailureClass,
        explanation: String,
        log: LogTail,
    ) -> Alert {
        let task = run.task.as_ref();
        let mut containers = task.map(|t| t.containers.clone()).unwrap_or_default();
        for c in &mut containers {
            if let Some(r) = &mut c.reason {
                redact_in_place(r);
            }
        }
        let mut alert = Alert {
            kind,
            job: run.job.clone(),
            run_id: Some(run.run_id.clone()),
            attempt: run.attempt,
            max_attempts: run.max_attempts,
            logical_time: run.logical_time,
            class,
            explanation,
            hint: None,
            message: String::new(),
            severity: severity_of(class),
            recovered_after: None,
            exit_code: run.outcome.as_ref().and_then(|o| o.exit_code),
            containers,
            stop_code: task.and_then(|t| t.stop_code.clone()),
            stopped_reason: task
                .and_then(|t| t.stopped_reason.as_deref())
                .map(|r| redact(r).into_owned()),
            started_at: task.and_then(|t| t.started_at),
            stopped_at: task.and_then(|t| t.stopped_at).or(run.finished_at),
            cost_usd: run.cost.as_ref().map(|c| c.usd),
            capacity: Some(run.capacity.as_str().to_string()),
            task_definition: task
                .and_then(|t| t.task_definition_arn.as_deref())
                .map(short_task_definition),
            execution_arn: Some(run.execution.id.clone()),
            task_arn: run.task_arn.clone(),
            log_stream: log.stream,
            links: Vec::new(),
            log_tail: log.lines.iter().map(|l| redact(l).into_owned()).collect(),
        };
        alert.links = links(
            alert.execution_arn.as_deref(),
            alert.task_arn.as_deref(),
            task.and_then(|t| t.cluster_arn.as_deref()),
            alert.log_stream.as_ref(),
        );
        alert
    }

    /// An alert for a failure that has no run record (an invalid spec).
    pub fn without_run(
        job: &str,
        class: FailureClass,
        message: &str,
        execution_arn: Option<String>,
    ) -> Alert {
        let (explanation, hint) = explain(class, &Context::default());
        Alert {
            kind: AlertKind::Failure,
            job: job.to_string(),
            run_id: None,
            attempt: 0,
            max_attempts: 0,
            logical_time: None,
            class,
            explanation,
            hint,
            message: redact(message).into_owned(),
            severity: severity_of(class),
            recovered_after: None,
            exit_code: None,
            containers: Vec::new(),
            stop_code: None,
            stopped_reason: None,
            started_at: None,
            stopped_at: None,
            cost_usd: None,
            capacity: None,
            task_definition: None,
            links: links(execution_arn.as_deref(), None, None, None),
            execution_arn,
            task_arn: None,
            log_stream: None,
            log_tail: Vec::new(),
        }
    }

    pub fn duration_seconds(&self) -> Option<u64> {
        let (a, b) = (self.started_at?, self.stopped_at?);
        Some((b - a).whole_seconds().max(0) as u64)
    }

    /// The one-line summary: `orders-ingest failed: OutOfMemory`.
    pub fn headline(&self) -> String {
        match self.kind {
            AlertKind::Failure => format!("{} failed: {}", self.job, self.class),
            AlertKind::Recovery => {
                let n = self.recovered_after.unwrap_or(1);
                let runs = if n == 1 { "run" } else { "runs" };
                format!("{} recovered after {n} failed {runs}", self.job)
            }
        }
    }

    /// An email subject, as SNS `Publish` accepts it: printable ASCII, no
    /// line breaks, fewer than [`MAX_SUBJECT_CHARS`] + 1 characters (the API
    /// says "less than 100"; a longer one fails the whole Publish).
    pub fn subject(&self) -> String {
        let mut s = format!("[Stevedore] {}", self.headline());
        // A failure alert is sent once no attempt follows: "attempt 1/3"
        // would promise two more.
        if self.kind == AlertKind::Failure && self.attempt > 1 {
            s.push_str(&format!(" (after {} attempts)", self.attempt));
        }
        let ascii: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if ascii.len() <= MAX_SUBJECT_CHARS {
            return ascii;
        }
        format!("{}...", &ascii[..MAX_SUBJECT_CHARS - 3])
    }

    /// The facts of the run as label/value pairs, in the order every
    /// rendering shows them.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(r) = &self.run_id {
            out.push(("Run", r.clone()));
        }
        if let Some(t) = self.logical_time {
            out.push(("Logical time", crate::logical::format_logical(t)));
        }
        if self.attempt > 0 {
            let attempt = if self.kind != AlertKind::Failure {
                format!("{} of {}", self.attempt, self.max_attempts)
            } else if self.attempt >= self.max_attempts {
                format!(
                    "{} of {} (no attempts left)",
                    self.attempt, self.max_attempts
                )
            } else {
                format!(
                    "{} of at most {} (not retried)",
                    self.attempt, self.max_attempts
                )
            };
            out.push(("Attempt", attempt));
        }
        if let Some(c) = self.exit_code {
            out.push(("Exit code", c.to_string()));
        }
        if let Some(s) = &self.stop_code {
            out.push(("Stop code", s.clone()));
        }
        if let Some(t) = self.started_at {
            out.push(("Started", format_time(t)));
        }
        if let Some(t) = self.stopped_at {
            out.push(("Stopped", format_time(t)));
        }
        if let Some(d) = self.duration_seconds() {
            out.push(("Duration", format_duration(d)));
        }
        if let Some(c) = self.cost_usd {
            out.push(("Cost", format!("${c:.4} (estimate)")));
        }
        if let Some(c) = &self.capacity {
            out.push(("Capacity", c.clone()));
        }
        if let Some(t) = &self.task_definition {
            out.push(("Task definition", t.clone()));
        }
        out
    }

    /// One line per container that exited or has a reason.
    pub fn container_lines(&self) -> Vec<String> {
        self.containers
            .iter()
            .filter(|c| c.exit_code.is_some() || c.reason.is_some())
            .map(|c| {
                let exit = c
                    .exit_code
                    .map(|e| format!("exit {e}"))
                    .unwrap_or_else(|| "no exit code".into());
                let reason = c
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                format!("{}: {exit}{reason}", c.name)
            })
            .collect()
    }

    /// Plain text, readable in any mail client (no markup, lines under 80
    /// characters except for values that cannot be broken, like URLs).
    pub fn email_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&self.headline());
        out.push_str("\n\n");
        out.push_str(&wrap(&self.explanation, EMAIL_WIDTH));
        if let Some(h) = &self.hint {
            out.push_str(&wrap(&format!("What to do: {h}"), EMAIL_WIDTH));
        }
        if !self.message.is_empty() {
            out.push('\n');
            out.push_str(&wrap(&self.message, EMAIL_WIDTH));
        }
        out.push('\n');
        let width = 16;
        for (k, v) in self.facts() {
            out.push_str(&format!("{k:<width$}{v}\n"));
        }
        for line in self.container_lines() {
            out.push_str(&format!("{:<width$}{line}\n", "Container"));
        }
        if let Some(s) = &self.stopped_reason {
            out.push_str(&format!("{:<width$}{s}\n", "Stop reason"));
        }
        if let Some(e) = &self.execution_arn {
            out.push_str(&format!("{:<width$}{e}\n", "Execution"));
        }
        if let Some(t) = &self.task_arn {
            out.push_str(&format!("{:<width$}{t}\n", "Task"));
        }
        if let Some(l) = &self.log_stream {
            out.push_str(&format!(
                "{:<width$}{}  {}\n",
                "Log stream", l.group, l.stream
            ));
        }
        if !self.links.is_empty() {
            out.push_str("\nOpen in the AWS console:\n");
            for l in &self.links {
                out.push_str(&format!("  {}: {}\n", l.label, l.url));
            }
        }
        if !self.log_tail.is_empty() {
            out.push_str(&format!(
                "\nLast {} log lines (credentials redacted):\n",
                self.log_tail.len()
            ));
            for line in &self.log_tail {
                out.push_str("  | ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The structured form for chat notifiers (and programmatic subscribers).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Prose in emails wraps here; values that cannot break (URLs, ARNs) do not.
const EMAIL_WIDTH: usize = 76;

/// Wraps `text` at word boundaries to `width` characters per line; each
/// line ends with a newline. Words longer than a line stay whole.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                out.push_str(&line);
                out.push('\n');
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn links(
    execution_arn: Option<&str>,
    task_arn: Option<&str>,
    cluster_arn: Option<&str>,
    log: Option<&LogStreamRef>,
) -> Vec<Link> {
    let candidates = [
        ("Execution", execution_arn.and_then(console::execution_url)),
        (
            "ECS task",
            task_arn.and_then(|t| console::task_url(t, cluster_arn)),
        ),
        ("Log stream", log.and_then(console::log_stream_url)),
    ];
    candidates
        .into_iter()
        .filter_map(|(label, url)| {
            url.map(|url| Link {
                label: label.to_string(),
                url,
            })
        })
        .collect()
}

/// `arn:aws:ecs:…:task-definition/etl-python:12` → `etl-python:12`.
fn short_task_definition(arn: &str) -> String {
    arn.rsplit_once("task-definition/")
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| arn.to_string())
}

/// The plain-language explanation of a failure with this run's numbers, and
/// the hint what to do about it.
fn explain(class: FailureClass, ctx: &Context) -> (String, Option<String>) {
    let retry_hint = |class: FailureClass| {
        if ctx.retried {
            format!(
                "Stevedore already retried it ({} attempts); if this keeps happening, raise `retry.maxAttempts`.",
                ctx.attempts
            )
        } else {
            format!("Add `{class}` to `retry.on` to retry it automatically.")
        }
    };
    let (explanation, hint) = match class {
        FailureClass::OutOfMemory => (
            match ctx.memory_mib {
                Some(m) => format!("Out of memory: the container was killed at its {m} MiB limit."),
                None => "Out of memory: the container was killed at its memory limit.".into(),
            },
            match ctx.memory_mib {
                Some(m) => format!(
                    "Raise `memory` above {m} (MiB; the Fargate maximum depends on `cpu`) or process less data per run (smaller batches, streaming instead of loading everything)."
                ),
                None => "Raise `memory` or process less data per run (smaller batches, streaming instead of loading everything).".into(),
            },
        ),
        FailureClass::ExitedNonZero => (
            match ctx.exit_code {
                Some(c) => format!("The job's container exited with code {c}: the job itself reported a failure."),
                None => "The job's container exited with a non-zero code: the job itself reported a failure.".into(),
            },
            if ctx.retried_exit_codes.is_empty() {
                "Read the log lines below (or the full log stream) for the job's own error. To retry known-transient exit codes, list them in `retry.exitCodes` and add `ExitedNonZero` to `retry.on`.".into()
            } else {
                format!(
                    "Read the log lines below (or the full log stream) for the job's own error. Only exit codes {:?} are retried.",
                    ctx.retried_exit_codes
                )
            },
        ),
        FailureClass::TimedOut => (
            match ctx.timeout_seconds {
                Some(t) => format!(
                    "Timed out: the job was still running after its {} timeout, so Stevedore stopped it.",
                    format_duration(t)
                ),
                None => "Timed out: the job ran past its timeout, so Stevedore stopped it.".into(),
            },
            "If the job needs longer, raise `timeout`; if it should have finished, the last log lines show where it stalled.".into(),
        ),
        FailureClass::CapacityUnavailable => (
            "Fargate had no capacity for the task in the subnets' Availability Zones.".into(),
            format!(
                "{} Subnets in more Availability Zones, or `capacity: on-demand` instead of Spot, make this rarer.",
                retry_hint(class)
            ),
        ),
        FailureClass::StartFailed => (
            "The task could not start its container (image pull, network interface or secrets).".into(),
            "Check the image name and tag, that the execution role may pull it and read the task's secrets, and that the subnets reach ECR and Secrets Manager (NAT gateway or VPC endpoints).".into(),
        ),
        FailureClass::ContainerMisconfigured => (
            "The container could not start as configured: its command or entry point does not exist or may not be executed, or a secret it needs is missing. Trying again would not help, so Stevedore did not.".into(),
            "The container runtime's message below says what is missing: fix `command` in the job spec (or the image's entry point), or create the secret, then start the run again.".into(),
        ),
        FailureClass::SpotInterrupted => (
            "Fargate Spot took the capacity back while the job ran.".into(),
            "Use `capacity: spot-with-fallback` so an interrupted run retries on on-demand capacity, or `capacity: on-demand` for jobs that must not be interrupted.".into(),
        ),
        FailureClass::KilledByInfrastructure => (
            "The task stopped before the job's container exited (no exit code): Fargate or ECS ended it.".into(),
            format!("The stop reason says why. {}", retry_hint(class)),
        ),
        FailureClass::StoppedByUser => (
            "The task was stopped from outside Stevedore (StopTask from the console, the CLI or another tool).".into(),
            "The stop reason names who stopped it; start the run again when that was a mistake.".into(),
        ),
        FailureClass::JobAlreadyRunning => (
            "Another run of this job holds its concurrency slot, so this one did not start.".into(),
            "Raise `concurrency.max` to allow parallel runs, or set `concurrency.whenBusy: skip` to skip quietly.".into(),
        ),
        FailureClass::InvalidJobSpec => (
            "The job spec is not valid, so no task was started.".into(),
            "Fix the field the message names; `stevedore validate <spec.json>` checks a spec before you deploy it.".into(),
        ),
        FailureClass::Throttled | FailureClass::Transient => (
            format!("{} Stevedore retried and gave up.", class.explanation()),
            "Start the run again; if it repeats, check the AWS Health Dashboard and the account's API quotas.".into(),
        ),
        FailureClass::ConfigurationError => (
            class.explanation().to_string(),
            "Check the stack's parameters (cluster, subnets, security groups, task role ARNs) and IAM permissions; the message quotes AWS's error.".into(),
        ),
        FailureClass::InvalidInput => (
            class.explanation().to_string(),
            "Check the execution's input in the Step Functions console: it must be a job spec.".into(),
        ),
    };
    (explanation, Some(hint))
}

fn severity_of(class: FailureClass) -> Severity {
    match class {
        FailureClass::JobAlreadyRunning | FailureClass::StoppedByUser => Severity::Warning,
        _ => Severity::Critical,
    }
}

/// At most `max` characters, the last one `…` when cut.
/// SNS rejects a `Subject` of 100 characters or more.
pub const MAX_SUBJECT_CHARS: usize = 99;

pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_ascii_and_shorter_than_100_characters() {
        // The longest job name a spec accepts, the longest class name, the
        // largest attempt numbers: SNS wants fewer than 100 characters.
        let job = "j".repeat(64);
        let mut a = Alert::without_run(&job, FailureClass::KilledByInfrastructure, "m", None);
        a.attempt = 10;
        a.max_attempts = 10;
        let s = a.subject();
        assert!(s.len() < 100, "{} characters: {s}", s.len());
        assert!(s.ends_with("..."), "{s}");
        assert!(s.chars().all(|c| c.is_ascii_graphic() || c == ' '), "{s}");
        let mut b = Alert::without_run("orders", FailureClass::OutOfMemory, "m", None);
        b.kind = AlertKind::Recovery;
        b.recovered_after = Some(2);
        assert_eq!(
            b.subject(),
            "[Stevedore] orders recovered after 2 failed runs"
        );
    }

    #[test]
    fn email_text_names_the_job_the_class_and_the_message() {
        let a = Alert::without_run(
            "orders-ingest",
            FailureClass::InvalidJobSpec,
            "retry.maxAttempts: must be between 1 and 10",
            None,
        );
        let text = a.email_text();
        assert!(text.contains("orders-ingest failed: InvalidJobSpec"));
        assert!(text.contains("retry.maxAttempts"));
        let back: Alert = serde_json::from_value(a.to_json()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn email_prose_wraps_but_urls_stay_whole() {
        let url = format!("https://example.com/{}", "x".repeat(100));
        let text = wrap(&format!("{} {url} end", "word ".repeat(40)), 76);
        assert!(
            text.lines().all(|l| l.chars().count() <= 76 || l == url),
            "{text}"
        );
        assert!(text.lines().any(|l| l == url));
        assert!(text.ends_with("end\n"));
    }
}
