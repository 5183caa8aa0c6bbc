//! The alert a failed run produces, and its renderings per channel: a
//! subject and plain text for email, structured JSON for chat notifiers.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::duration::format_duration;
use crate::error::FailureClass;
use crate::run::RunRecord;
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub class: FailureClass,
    pub explanation: String,
    pub message: String,
    pub severity: Severity,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub log_tail: Vec<String>,
}

impl Alert {
    /// The alert for a run that ended failed.
    pub fn for_run(
        run: &RunRecord,
        class: FailureClass,
        message: &str,
        log_tail: Vec<String>,
    ) -> Alert {
        let task = run.task.as_ref();
        Alert {
            job: run.job.clone(),
            run_id: Some(run.run_id.clone()),
            attempt: run.attempt,
            max_attempts: run.max_attempts,
            class,
            explanation: class.explanation().to_string(),
            message: message.to_string(),
            severity: severity_of(class),
            exit_code: run.outcome.as_ref().and_then(|o| o.exit_code),
            containers: task.map(|t| t.containers.clone()).unwrap_or_default(),
            stop_code: task.and_then(|t| t.stop_code.clone()),
            stopped_reason: task.and_then(|t| t.stopped_reason.clone()),
            started_at: task.and_then(|t| t.started_at),
            stopped_at: task.and_then(|t| t.stopped_at).or(run.finished_at),
            cost_usd: run.cost.as_ref().map(|c| c.usd),
            execution_arn: Some(run.execution.id.clone()),
            task_arn: run.task_arn.clone(),
            log_tail,
        }
    }

    /// An alert for a failure that has no run record (an invalid spec).
    pub fn without_run(
        job: &str,
        class: FailureClass,
        message: &str,
        execution_arn: Option<String>,
    ) -> Alert {
        Alert {
            job: job.to_string(),
            run_id: None,
            attempt: 0,
            max_attempts: 0,
            class,
            explanation: class.explanation().to_string(),
            message: message.to_string(),
            severity: severity_of(class),
            exit_code: None,
            containers: Vec::new(),
            stop_code: None,
            stopped_reason: None,
            started_at: None,
            stopped_at: None,
            cost_usd: None,
            execution_arn,
            task_arn: None,
            log_tail: Vec::new(),
        }
    }

    pub fn duration_seconds(&self) -> Option<u64> {
        let (a, b) = (self.started_at?, self.stopped_at?);
        Some((b - a).whole_seconds().max(0) as u64)
    }

    /// An email subject: at most 100 characters.
    pub fn subject(&self) -> String {
        let mut s = format!("[Stevedore] {} failed: {}", self.job, self.class);
        if self.attempt > 0 {
            s.push_str(&format!(
                " (attempt {}/{})",
                self.attempt, self.max_attempts
            ));
        }
        truncate_chars(&s, 100)
    }

    /// Plain text, readable in any mail client.
    pub fn email_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("Job {} failed: {}\n", self.job, self.class));
        out.push_str(&format!("{}\n{}\n\n", self.explanation, self.message));
        let mut field = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
        if let Some(r) = &self.run_id {
            field("Run", r.clone());
        }
        if self.attempt > 0 {
            field(
                "Attempt",
                format!("{} of {}", self.attempt, self.max_attempts),
            );
        }
        if let Some(c) = self.exit_code {
            field("Exit code", c.to_string());
        }
        for c in self
            .containers
            .iter()
            .filter(|c| c.exit_code.is_some() || c.reason.is_some())
        {
            let exit = c
                .exit_code
                .map(|e| e.to_string())
                .unwrap_or_else(|| "-".into());
            let reason = c
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            field("Container", format!("{}: exit {exit}{reason}", c.name));
        }
        if let Some(s) = &self.stop_code {
            field("Stop code", s.clone());
        }
        if let Some(s) = &self.stopped_reason {
            field("Reason", s.clone());
        }
        if let Some(t) = self.started_at {
            field("Started", format_time(t));
        }
        if let Some(t) = self.stopped_at {
            field("Stopped", format_time(t));
        }
        if let Some(d) = self.duration_seconds() {
            field("Duration", format_duration(d));
        }
        if let Some(c) = self.cost_usd {
            field("Cost", format!("${c:.4} (estimate)"));
        }
        if let Some(e) = &self.execution_arn {
            field("Execution", e.clone());
        }
        if let Some(t) = &self.task_arn {
            field("Task", t.clone());
        }
        if !self.log_tail.is_empty() {
            out.push_str(&format!("\nLast {} log lines:\n", self.log_tail.len()));
            for line in &self.log_tail {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The structured form for chat notifiers (and the SNS `default`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

fn severity_of(class: FailureClass) -> Severity {
    match class {
        FailureClass::JobAlreadyRunning | FailureClass::StoppedByUser => Severity::Warning,
        _ => Severity::Critical,
    }
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_fit_in_100_characters() {
        let job = "j".repeat(64);
        let mut a = Alert::without_run(&job, FailureClass::KilledByInfrastructure, "m", None);
        a.attempt = 10;
        a.max_attempts = 10;
        let s = a.subject();
        assert!(s.chars().count() <= 100, "{s}");
        assert!(s.ends_with('…'));
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
}
