//! Run metrics in CloudWatch's embedded metric format (EMF): one JSON log
//! line per recorded attempt, which CloudWatch Logs turns into metrics — no
//! API call, no added latency, no `cloudwatch:PutMetricData` permission.
//!
//! Namespace `Stevedore`. What one line carries ([`METRICS`] lists them):
//!
//! | metric | unit | dimension sets | when |
//! |---|---|---|---|
//! | `Runs` | Count | (Stack, Job, Status), (Stack, Status) | the run's last attempt ended (no retry follows) |
//! | `Failures` | Count | (Stack, Job, FailureClass), (Stack, FailureClass) | that last attempt failed |
//! | `Duration` | Seconds | (Stack, Job) | the run's last attempt ended: its duration |
//! | `Attempts` | Count | (Stack, Job) | the run's last attempt ended: how many attempts it took |
//! | `Cost` | None (US dollars) | (Stack, Job), (Stack) | every attempt with a cost estimate |
//! | `HandledErrors` | Count | (Stack) | any function's handler ended in an error run-job handles by design ([`handled_error`]) |
//!
//! The CloudWatch dashboard in `template.yaml` plots these; a test checks
//! that every metric it plots is one listed here, with its dimensions.

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::error::FailureClass;
use crate::lifecycle::RunStatus;

pub const NAMESPACE: &str = "Stevedore";

/// One metric the line can carry: its unit and dimension sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    pub unit: &'static str,
    pub dimensions: &'static [&'static [&'static str]],
}

pub const RUNS: MetricDef = MetricDef {
    name: "Runs",
    unit: "Count",
    dimensions: &[&["Stack", "Job", "Status"], &["Stack", "Status"]],
};
pub const FAILURES: MetricDef = MetricDef {
    name: "Failures",
    unit: "Count",
    dimensions: &[
        &["Stack", "Job", "FailureClass"],
        &["Stack", "FailureClass"],
    ],
};
pub const DURATION: MetricDef = MetricDef {
    name: "Duration",
    unit: "Seconds",
    dimensions: &[&["Stack", "Job"]],
};
pub const ATTEMPTS: MetricDef = MetricDef {
    name: "Attempts",
    unit: "Count",
    dimensions: &[&["Stack", "Job"]],
};
pub const COST: MetricDef = MetricDef {
    name: "Cost",
    unit: "None",
    dimensions: &[&["Stack", "Job"], &["Stack"]],
};

pub const HANDLED_ERRORS: MetricDef = MetricDef {
    name: "HandledErrors",
    unit: "Count",
    dimensions: &[&["Stack"]],
};

/// Every metric of the namespace.
pub const METRICS: &[MetricDef] = &[RUNS, FAILURES, DURATION, ATTEMPTS, COST, HANDLED_ERRORS];

/// The EMF line a function writes when its handler ends in an error the
/// state machine handles by design (a busy job, no capacity, throttling, a
/// bad spec: [`FailureClass::handled_by_design`]). Lambda counts every
/// handler error in its `Errors` metric; the functions' error alarm
/// subtracts these, so what it counts is what nobody planned for: a crash,
/// a timeout, a bug, a misconfiguration. `None` for any other error.
pub fn handled_error(
    stack: &str,
    function: &str,
    class: FailureClass,
    at: OffsetDateTime,
) -> Option<Value> {
    if !class.handled_by_design() {
        return None;
    }
    Some(json!({
        "_aws": {
            "Timestamp": (at.unix_timestamp_nanos() / 1_000_000) as i64,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": HANDLED_ERRORS.dimensions,
                "Metrics": [{"Name": HANDLED_ERRORS.name, "Unit": HANDLED_ERRORS.unit}],
            }],
        },
        "Stack": stack,
        "HandledErrors": 1,
        // Not dimensions: for CloudWatch Logs Insights.
        "Function": function,
        "FailureClass": class.as_str(),
    }))
}

/// What one recorded attempt says.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptMetrics<'a> {
    pub stack: &'a str,
    pub job: &'a str,
    pub run_id: &'a str,
    pub attempt: u32,
    pub status: RunStatus,
    pub class: Option<FailureClass>,
    /// No retry follows: the run (the execution's job) is done.
    pub last: bool,
    pub duration_seconds: Option<u64>,
    pub cost_usd: Option<f64>,
    pub logical_time: Option<OffsetDateTime>,
    pub at: OffsetDateTime,
}

/// The EMF document for one recorded attempt (one log line); `None` when
/// there is nothing to count (an attempt that is retried and has no cost).
pub fn emf(m: &AttemptMetrics) -> Option<Value> {
    let mut root = Map::new();
    let mut directives = Vec::new();
    let mut add = |root: &mut Map<String, Value>, defs: &[(MetricDef, Value)]| {
        let Some((first, _)) = defs.first() else {
            return;
        };
        for (d, v) in defs {
            root.insert(d.name.to_string(), v.clone());
        }
        directives.push(json!({
            "Namespace": NAMESPACE,
            "Dimensions": first.dimensions,
            "Metrics": defs.iter().map(|(d, _)| json!({"Name": d.name, "Unit": d.unit})).collect::<Vec<_>>(),
        }));
    };
    if m.last {
        add(&mut root, &[(RUNS, json!(1))]);
        let failed = matches!(m.status, RunStatus::Failed | RunStatus::Cancelled);
        if failed && m.class.is_some() {
            add(&mut root, &[(FAILURES, json!(1))]);
        }
        let mut per_job = vec![(ATTEMPTS, json!(m.attempt))];
        if let Some(d) = m.duration_seconds {
            per_job.insert(0, (DURATION, json!(d)));
        }
        add(&mut root, &per_job);
    }
    if let Some(usd) = m.cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
        add(&mut root, &[(COST, json!(usd))]);
    }
    if directives.is_empty() {
        return None;
    }
    root.insert("Stack".into(), json!(m.stack));
    root.insert("Job".into(), json!(m.job));
    root.insert("Status".into(), json!(m.status.as_str()));
    if let Some(c) = m.class {
        root.insert("FailureClass".into(), json!(c.to_string()));
    }
    // Not dimensions: for CloudWatch Logs Insights.
    root.insert("RunId".into(), json!(m.run_id));
    root.insert("Attempt".into(), json!(m.attempt));
    if let Some(t) = m.logical_time {
        root.insert("LogicalTime".into(), json!(crate::task::format_time(t)));
    }
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": (m.at.unix_timestamp_nanos() / 1_000_000) as i64,
            "CloudWatchMetrics": directives,
        }),
    );
    Some(Value::Object(root))
}
