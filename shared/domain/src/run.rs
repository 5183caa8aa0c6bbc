//! A run: one attempt of one execution of a job, as stored in the run store;
//! its identity, and the changes handlers apply to it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::cost::CostEstimate;
use crate::failure::{Outcome, StopRequest};
use crate::lifecycle::RunStatus;
use crate::spec::{Capacity, JobSpec};
use crate::task::{lenient_time, TaskDescription};

/// The `startedBy` of every task Stevedore launches starts with this; the
/// EventBridge rule matches on it.
pub const STARTED_BY_PREFIX: &str = "stevedore/";

/// The tag naming the stack that started a task (`launch-run` sets it from
/// `STACK_NAME`; the sweep stops a task without a run only when it is its own).
pub const STACK_TAG: &str = "stevedore:stack";

/// The Step Functions execution a run belongs to (from the context object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRef {
    /// `$$.Execution.Id` (the execution ARN).
    pub id: String,
    /// `$$.Execution.Name`.
    #[serde(default)]
    pub name: String,
    /// `$$.Execution.StartTime`.
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
}

impl ExecutionRef {
    fn key(&self) -> String {
        // Names are reused after 90 days; the start time keeps identities apart.
        let millis = self.start_time.unix_timestamp_nanos() / 1_000_000;
        format!("{}|{millis}", self.id)
    }
}

fn sha256_hex(input: &str) -> String {
    Sha256::digest(input.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A readable, unique run id: `<job>-<UTC start>-<hash of execution>-<attempt>`,
/// e.g. `orders-ingest-20261124T060955-5d41402a-1`. At most 92 characters of
/// `[A-Za-z0-9_-]`, so `startedBy` (128) can carry it.
pub fn run_id(job: &str, execution: &ExecutionRef, attempt: u32) -> String {
    let t = execution.start_time.to_offset(time::UtcOffset::UTC);
    let hash = sha256_hex(&execution.key());
    format!(
        "{job}-{:04}{:02}{:02}T{:02}{:02}{:02}-{}-{attempt}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        &hash[..8]
    )
}

/// The RunTask `clientToken` for an attempt: deterministic, so a retried
/// launch Lambda gets the same task back instead of starting a second one.
/// 64 hex characters (ECS allows 64).
pub fn client_token(execution: &ExecutionRef, attempt: u32, capacity: Capacity) -> String {
    sha256_hex(&format!(
        "{}|{attempt}|{}",
        execution.key(),
        capacity.as_str()
    ))
}

/// The run id carried in a task's `startedBy`, if the task is ours.
pub fn run_id_from_started_by(started_by: &str) -> Option<&str> {
    started_by
        .strip_prefix(STARTED_BY_PREFIX)
        .filter(|id| !id.is_empty())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub run_id: String,
    pub job: String,
    pub execution: ExecutionRef,
    pub attempt: u32,
    pub max_attempts: u32,
    pub status: RunStatus,
    /// The validated spec, every default written out (its JSON form).
    pub spec: serde_json::Value,
    /// Where this attempt runs (`on-demand` or `spot`).
    pub capacity: Capacity,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    /// When the task that runs this attempt was started (the RunTask that
    /// succeeded; a retried launch can come well after `created_at`).
    #[serde(
        default,
        with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub launched_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_request: Option<StopRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostEstimate>,
    #[serde(
        default,
        with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<OffsetDateTime>,
    /// Epoch seconds after which the store may delete the record (TTL).
    pub expires_at: i64,
    /// Which interval the run processes: the spec's `logicalTime`, or the
    /// execution's start time (see [`crate::logical`]).
    #[serde(
        default,
        with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub logical_time: Option<OffsetDateTime>,
    /// What happened to the run after it ended (the sweep stopping a task
    /// it had left running), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl RunRecord {
    /// The validated spec of this run.
    pub fn job_spec(&self) -> Result<JobSpec, crate::Error> {
        JobSpec::from_value(&self.spec).map_err(|e| {
            crate::Error::invalid_input(format!(
                "run {} holds a spec that no longer parses: {e}",
                self.run_id
            ))
        })
    }

    pub fn started_by(&self) -> String {
        format!("{STARTED_BY_PREFIX}{}", self.run_id)
    }

    /// The family of the task definition the run's spec names
    /// (`etl`, from `etl`, `etl:3` or a task definition ARN).
    pub fn task_family(&self) -> Option<String> {
        let name = self.spec.get("taskDefinition")?.as_str()?;
        crate::task::family_of(name).map(str::to_string)
    }

    /// The container whose exit decides the run.
    pub fn main_container(&self) -> Option<String> {
        self.spec
            .get("container")
            .and_then(|c| c.as_str())
            .map(str::to_string)
    }
}

/// A change to a run: the status it moves to and the fields it sets. The
/// store applies it only if the run's current status is in `to.allowed_from()`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunChange {
    pub to: Option<RunStatus>,
    pub task_arn: Option<String>,
    pub launched_at: Option<OffsetDateTime>,
    pub task_token: Option<String>,
    pub capacity: Option<Capacity>,
    pub stop_request: Option<StopRequest>,
    pub task: Option<TaskDescription>,
    pub outcome: Option<Outcome>,
    pub cost: Option<CostEstimate>,
    pub finished_at: Option<OffsetDateTime>,
}

impl RunChange {
    pub fn to(status: RunStatus) -> Self {
        RunChange {
            to: Some(status),
            ..Default::default()
        }
    }

    pub fn status(&self) -> RunStatus {
        self.to.unwrap_or(RunStatus::Pending)
    }

    /// Whether a store may apply the change to `run`: its status allows the
    /// move, and a change naming a task does not replace a different task
    /// the run already names (two invocations of one launch racing — a
    /// retry after a client-side timeout — must not leave the record naming
    /// the second task while the first runs on unrecorded).
    pub fn applies_to(&self, run: &RunRecord) -> bool {
        self.status().allowed_from().contains(&run.status)
            && match (&self.task_arn, &run.task_arn) {
                (Some(new), Some(old)) => new == old,
                _ => true,
            }
    }

    /// What a change the store refused means, given the run as it is: a
    /// replay when the run is already where the change would put it (and
    /// names the same task), a rejection otherwise.
    pub fn refused(&self, current: RunRecord) -> ChangeOutcome {
        let same_task = match (&self.task_arn, &current.task_arn) {
            (Some(new), Some(old)) => new == old,
            _ => true,
        };
        if current.status == self.status() && same_task {
            ChangeOutcome::Replayed(current)
        } else {
            ChangeOutcome::Rejected(current)
        }
    }

    /// Applies the change to a record in memory (what a store does after its
    /// condition held). Used by in-memory stores and to build expected values.
    pub fn apply_to(&self, run: &mut RunRecord) {
        if let Some(s) = self.to {
            run.status = s;
        }
        if let Some(v) = &self.task_arn {
            run.task_arn = Some(v.clone());
        }
        if let Some(v) = self.launched_at {
            run.launched_at = Some(v);
        }
        if let Some(v) = &self.task_token {
            run.task_token = Some(v.clone());
        }
        if let Some(v) = self.capacity {
            run.capacity = v;
        }
        if let Some(v) = self.stop_request {
            run.stop_request = Some(v);
        }
        if let Some(v) = &self.task {
            run.task = Some(v.clone());
        }
        if let Some(v) = &self.outcome {
            run.outcome = Some(v.clone());
        }
        if let Some(v) = &self.cost {
            run.cost = Some(v.clone());
        }
        if let Some(v) = self.finished_at {
            run.finished_at = Some(v);
        }
    }
}

/// What happened to a change.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeOutcome {
    /// The run moved; the record as it is now.
    Applied(RunRecord),
    /// The run was already in that terminal status: a harmless replay.
    Replayed(RunRecord),
    /// The run is in a status the change may not leave; nothing changed.
    Rejected(RunRecord),
    /// No such run.
    NotFound,
}

/// The result of creating a run.
// Returned once per call, never stored in bulk: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    Created,
    /// A record with this id exists (a retried launch); here it is.
    Exists(RunRecord),
}

/// A concurrency slot request's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotGrant {
    Granted {
        slot: u32,
    },
    /// Every slot is held; by these holders (execution ids).
    Busy {
        holders: Vec<String>,
    },
}

/// Which runs to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunQuery {
    pub job: String,
    pub status: Option<RunStatus>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn exec() -> ExecutionRef {
        ExecutionRef {
            id: "arn:aws:states:eu-west-1:111122223333:execution:run-job:nightly-42".into(),
            name: "nightly-42".into(),
            start_time: datetime!(2026-11-24 06:09:55.123 UTC),
        }
    }

    #[test]
    fn run_ids_are_readable_deterministic_and_fit_started_by() {
        let id = run_id("orders-ingest", &exec(), 1);
        assert!(id.starts_with("orders-ingest-20261124T060955-"), "{id}");
        assert!(id.ends_with("-1"));
        assert_eq!(id, run_id("orders-ingest", &exec(), 1));
        assert_ne!(id, run_id("orders-ingest", &exec(), 2));
        let long_job = "j".repeat(64);
        let started_by = format!("{STARTED_BY_PREFIX}{}", run_id(&long_job, &exec(), 10));
        assert!(started_by.len() <= 128);
        assert!(started_by
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c)));
        assert_eq!(
            run_id_from_started_by(&started_by).unwrap().len(),
            started_by.len() - 10
        );
        assert_eq!(run_id_from_started_by("ecs-svc/123"), None);
    }

    #[test]
    fn a_reused_execution_name_gets_a_new_identity() {
        let mut later = exec();
        later.start_time = datetime!(2027-03-01 06:09:55.123 UTC);
        assert_ne!(
            client_token(&exec(), 1, Capacity::Spot),
            client_token(&later, 1, Capacity::Spot)
        );
    }

    #[test]
    fn client_tokens_are_64_chars_and_differ_per_attempt_and_capacity() {
        let t = client_token(&exec(), 1, Capacity::Spot);
        assert_eq!(t.len(), 64);
        assert_eq!(t, client_token(&exec(), 1, Capacity::Spot));
        assert_ne!(t, client_token(&exec(), 2, Capacity::Spot));
        assert_ne!(t, client_token(&exec(), 1, Capacity::OnDemand));
    }
}
