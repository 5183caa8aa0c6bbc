//! An ECS task as Stevedore sees it: the fields of a `DescribeTasks` task or
//! of an "ECS Task State Change" event's detail (same names, same JSON), and
//! the event envelope. Unknown fields are ignored; bad timestamps become absent.

use serde::{Deserialize, Deserializer, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How long after RunTask a task ECS does not describe may still be one it
/// does not show yet (DescribeTasks and ListTasks are eventually consistent).
pub const MISSING_GRACE_SECONDS: i64 = 120;

/// One container of a task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerState {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Attribute {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A task description (DescribeTasks, or the detail of a task state change event).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskDescription {
    pub task_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
    pub last_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    pub containers: Vec<ContainerState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_provider_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<Attribute>,
    #[serde(with = "lenient_time", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(with = "lenient_time", skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<OffsetDateTime>,
    #[serde(with = "lenient_time", skip_serializing_if = "Option::is_none")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "lenient_time", skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<OffsetDateTime>,
    #[serde(with = "lenient_time", skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<OffsetDateTime>,
}

impl TaskDescription {
    pub fn is_stopped(&self) -> bool {
        self.last_status == "STOPPED"
    }

    /// On its way to STOPPED: asked to stop, or its containers ended and
    /// ECS is still taking it down (DEACTIVATING, STOPPING, DEPROVISIONING,
    /// which can last minutes). How it ended is not final yet.
    pub fn is_winding_down(&self) -> bool {
        !self.is_stopped()
            && (self.desired_status.as_deref() == Some("STOPPED")
                || matches!(
                    self.last_status.as_str(),
                    "DEACTIVATING" | "STOPPING" | "DEPROVISIONING"
                ))
    }

    /// ECS has it in a state where its containers may run: from
    /// PROVISIONING until STOPPED (not a task ECS no longer knows).
    pub fn may_run(&self) -> bool {
        matches!(
            self.last_status.as_str(),
            "PROVISIONING"
                | "PENDING"
                | "ACTIVATING"
                | "RUNNING"
                | "DEACTIVATING"
                | "STOPPING"
                | "DEPROVISIONING"
        )
    }

    /// `x86_64` or `arm64`, from the task's `ecs.cpu-architecture` attribute.
    pub fn architecture(&self) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == "ecs.cpu-architecture")
            .and_then(|a| a.value.as_deref())
    }

    pub fn on_spot(&self) -> bool {
        self.capacity_provider_name.as_deref() == Some("FARGATE_SPOT")
    }

    pub fn container(&self, name: &str) -> Option<&ContainerState> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// What `DescribeTasks` said about one ARN.
// Mostly `Found`; boxing it would only add an allocation per task.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskLookup {
    Found(TaskDescription),
    /// ECS does not know the task (yet): right after RunTask this means "not
    /// visible yet", later it means gone.
    Missing {
        task_arn: String,
        reason: String,
    },
}

impl TaskLookup {
    /// The task, if ECS described it.
    pub fn found(self) -> Option<TaskDescription> {
        match self {
            TaskLookup::Found(t) => Some(t),
            TaskLookup::Missing { .. } => None,
        }
    }
}

/// The EventBridge envelope of an "ECS Task State Change" event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskStateChange {
    #[serde(rename = "detail-type", default)]
    pub detail_type: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub region: Option<String>,
    pub detail: TaskDescription,
}

pub const TASK_STATE_CHANGE: &str = "ECS Task State Change";

pub fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// RFC 3339 timestamps in and out; an unreadable or non-string value is
/// treated as absent rather than failing the whole event.
pub mod lenient_time {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<OffsetDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_time(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(match v {
            serde_json::Value::String(s) => parse_time(&s),
            // Some SDK serialisations use epoch seconds.
            serde_json::Value::Number(n) => n.as_f64().and_then(|secs| {
                OffsetDateTime::from_unix_timestamp_nanos((secs * 1e9) as i128).ok()
            }),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_may_run_from_provisioning_until_stopped() {
        let task = |status: &str| TaskDescription {
            last_status: status.into(),
            ..Default::default()
        };
        for live in ["PROVISIONING", "PENDING", "RUNNING", "DEPROVISIONING"] {
            assert!(task(live).may_run(), "{live}");
        }
        // Stopped, or a task ECS no longer knows (a lookup's placeholder).
        for gone in ["STOPPED", "MISSING", ""] {
            assert!(!task(gone).may_run(), "{gone}");
        }
    }

    #[test]
    fn parses_a_real_task_state_change_event_and_ignores_unknown_fields() {
        let event = include_str!("../tests/fixtures/task-stopped-exit-3.json");
        let e: TaskStateChange = serde_json::from_str(event).unwrap();
        assert_eq!(e.detail_type, TASK_STATE_CHANGE);
        assert!(e.detail.is_stopped());
        assert_eq!(e.detail.container("app").unwrap().exit_code, Some(3));
        assert_eq!(e.detail.architecture(), Some("x86_64"));
        assert!(e.detail.stopped_at.is_some());
        assert_eq!(
            e.detail.stop_code.as_deref(),
            Some("EssentialContainerExited")
        );
    }

    #[test]
    fn unreadable_timestamps_become_absent() {
        let d: TaskDescription = serde_json::from_value(serde_json::json!({
            "taskArn": "arn", "lastStatus": "STOPPED", "stoppedAt": "yesterday", "startedAt": 1700000000.5,
            "somethingNew": {"x": 1}
        }))
        .unwrap();
        assert_eq!(d.stopped_at, None);
        assert_eq!(d.started_at.unwrap().unix_timestamp(), 1_700_000_000);
    }
}

/// The family of a task definition named as `family`, `family:revision` or
/// its ARN (`arn:aws:ecs:...:task-definition/family:revision`).
pub fn family_of(task_definition: &str) -> Option<&str> {
    let name = task_definition
        .rsplit_once(":task-definition/")
        .map_or(task_definition, |(_, rest)| rest);
    let family = name.split(':').next().unwrap_or_default();
    (!family.is_empty()).then_some(family)
}

#[cfg(test)]
mod family_tests {
    use super::family_of;

    #[test]
    fn a_family_is_read_from_every_way_of_naming_a_task_definition() {
        assert_eq!(family_of("etl"), Some("etl"));
        assert_eq!(family_of("etl:3"), Some("etl"));
        assert_eq!(
            family_of("arn:aws:ecs:eu-west-1:123456789012:task-definition/etl-python:12"),
            Some("etl-python")
        );
        assert_eq!(family_of(""), None);
        assert_eq!(family_of(":3"), None);
    }
}
