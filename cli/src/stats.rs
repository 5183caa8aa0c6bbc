//! `stevedore runs stats`: how each job has done lately, from the local run
//! store. An execution (all its attempts) counts once: it succeeded when its
//! last attempt did. Durations are an execution's attempts added up, as the
//! run summary shows them; cost is every attempt's estimate.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use stevedore_domain::duration::{format_duration, parse_duration};
use stevedore_domain::run::RunRecord;
use stevedore_domain::task::format_time;
use stevedore_domain::RunStatus;
use stevedore_local::LocalClock;
use time::OffsetDateTime;

use crate::out::say;
use crate::run::run_duration;
use crate::Home;

/// One job's figures over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStats {
    pub job: String,
    /// Executions started in the window.
    pub runs: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Skipped, cancelled, or not ended yet.
    pub other: usize,
    /// Succeeded out of those that succeeded or failed, in percent.
    pub success_rate: Option<f64>,
    pub p50_seconds: Option<u64>,
    pub p95_seconds: Option<u64>,
    pub cost_usd: f64,
    pub last_failure: Option<LastFailure>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LastFailure {
    pub run_id: String,
    pub at: OffsetDateTime,
    pub class: Option<String>,
}

impl JobStats {
    /// The `--json` form (one line per job).
    pub fn to_json(&self) -> Value {
        json!({
            "job": self.job,
            "runs": self.runs,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "other": self.other,
            "successRate": self.success_rate,
            "p50Seconds": self.p50_seconds,
            "p95Seconds": self.p95_seconds,
            "costUsd": self.cost_usd,
            "lastFailure": self.last_failure.as_ref().map(|f| json!({
                "runId": f.run_id,
                "at": format_time(f.at),
                "class": f.class,
            })),
        })
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The figures of each job in `runs` (every attempt of every execution).
pub fn compute(runs: &[RunRecord]) -> Vec<JobStats> {
    // job -> execution -> its attempts
    let mut jobs: BTreeMap<&str, BTreeMap<&str, Vec<&RunRecord>>> = BTreeMap::new();
    for r in runs {
        jobs.entry(&r.job)
            .or_default()
            .entry(&r.execution.id)
            .or_default()
            .push(r);
    }
    jobs.into_iter()
        .map(|(job, executions)| {
            let mut s = JobStats {
                job: job.to_string(),
                runs: executions.len(),
                succeeded: 0,
                failed: 0,
                other: 0,
                success_rate: None,
                p50_seconds: None,
                p95_seconds: None,
                cost_usd: 0.0,
                last_failure: None,
            };
            let mut durations = Vec::new();
            for attempts in executions.values() {
                let Some(last) = attempts.iter().max_by_key(|r| r.attempt) else {
                    continue;
                };
                s.cost_usd += attempts
                    .iter()
                    .filter_map(|r| r.cost.as_ref().map(|c| c.usd))
                    .sum::<f64>();
                match last.status {
                    RunStatus::Succeeded => s.succeeded += 1,
                    RunStatus::Failed => {
                        s.failed += 1;
                        let at = last.finished_at.unwrap_or(last.created_at);
                        if s.last_failure.as_ref().is_none_or(|f| at >= f.at) {
                            s.last_failure = Some(LastFailure {
                                run_id: last.run_id.clone(),
                                at,
                                class: last
                                    .outcome
                                    .as_ref()
                                    .and_then(|o| o.class)
                                    .map(|c| c.to_string()),
                            });
                        }
                    }
                    _ => s.other += 1,
                }
                if matches!(last.status, RunStatus::Succeeded | RunStatus::Failed) {
                    durations.push(attempts.iter().filter_map(|r| run_duration(r)).sum());
                }
            }
            let ended = s.succeeded + s.failed;
            if ended > 0 {
                s.success_rate = Some(100.0 * s.succeeded as f64 / ended as f64);
            }
            durations.sort_unstable();
            s.p50_seconds = percentile(&durations, 50.0);
            s.p95_seconds = percentile(&durations, 95.0);
            s
        })
        .collect()
}

/// `--since 30d` as the time it names; a window longer than the calendar
/// reaches back means every run.
pub fn since_time(since: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    let window = parse_duration(since).map_err(|e| anyhow!("--since {e}"))?;
    Ok(now
        .checked_sub(time::Duration::seconds(window.min(i64::MAX as u64) as i64))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

pub async fn stats(
    job: Option<String>,
    since: String,
    as_json: bool,
    home: &Home,
) -> Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    let from = since_time(&since, now)?;
    let store = home.store()?;
    crate::recover(&store, &LocalClock::new(now)).await;
    let runs = store
        .runs_since(job.as_deref(), from)
        .map_err(|e| anyhow!("{}", e.message))?;
    report(&runs, &since, from, as_json)
}

/// Prints the stats of `runs` (those of the window `since`, from `from`).
pub fn report(
    runs: &[RunRecord],
    since: &str,
    from: OffsetDateTime,
    as_json: bool,
) -> Result<ExitCode> {
    let stats = compute(runs);
    if as_json {
        for s in &stats {
            say!("{}", s.to_json());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if stats.is_empty() {
        say!(
            "no runs since {} (the last {since})",
            format_time(from)
                .chars()
                .take(19)
                .collect::<String>()
                .replace('T', " ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let header = [
        "JOB",
        "RUNS",
        "OK",
        "FAILED",
        "SUCCESS",
        "P50",
        "P95",
        "COST",
        "LAST FAILURE (UTC)",
    ];
    let seconds = |s: Option<u64>| s.map(format_duration).unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            vec![
                s.job.clone(),
                s.runs.to_string(),
                s.succeeded.to_string(),
                s.failed.to_string(),
                s.success_rate
                    .map(|r| format!("{r:.0}%"))
                    .unwrap_or_else(|| "-".into()),
                seconds(s.p50_seconds),
                seconds(s.p95_seconds),
                format!("${:.4}", s.cost_usd),
                s.last_failure
                    .as_ref()
                    .map(|f| {
                        let when: String = format_time(f.at).chars().take(19).collect();
                        format!(
                            "{} {}",
                            when.replace('T', " "),
                            f.class.as_deref().unwrap_or("")
                        )
                    })
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    for line in crate::out::table(&header, &rows) {
        say!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 95.0), Some(7));
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), Some(10));
        assert_eq!(percentile(&v, 95.0), Some(19));
    }
}
