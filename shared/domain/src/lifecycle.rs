//! Run statuses and the transitions between them. Terminal statuses are
//! absorbing: nothing moves a run out of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Recorded; RunTask not (yet) answered.
    Pending,
    /// ECS accepted the task.
    Running,
    /// Stevedore asked ECS to stop the task (timeout or cancellation).
    Stopping,
    /// The task stopped and its outcome is classified; not yet recorded final.
    Stopped,
    Succeeded,
    Failed,
    /// Not started: the job's concurrency slots were taken and it says `skip`.
    Skipped,
    /// The execution was aborted or timed out before the task finished.
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Stopping,
        RunStatus::Stopped,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Skipped,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "PENDING",
            RunStatus::Running => "RUNNING",
            RunStatus::Stopping => "STOPPING",
            RunStatus::Stopped => "STOPPED",
            RunStatus::Succeeded => "SUCCEEDED",
            RunStatus::Failed => "FAILED",
            RunStatus::Skipped => "SKIPPED",
            RunStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Skipped | RunStatus::Cancelled
        )
    }

    /// Whether the task may still be running in ECS.
    pub fn task_may_run(self) -> bool {
        matches!(
            self,
            RunStatus::Pending | RunStatus::Running | RunStatus::Stopping
        )
    }

    /// The statuses a run may be in for a change to `self` to apply. A
    /// non-terminal status lists itself, so a run can be updated in place
    /// (a new task token while RUNNING); a terminal one never does, so a
    /// second write of the same final status is recognised as a replay.
    pub fn allowed_from(self) -> &'static [RunStatus] {
        use RunStatus::*;
        match self {
            // A pending run may change its fields (launch-run records a
            // capacity fallback before the second RunTask); nothing moves
            // back into PENDING, and SKIPPED is only ever created.
            Pending => &[Pending],
            Skipped => &[],
            Running => &[Pending, Running],
            Stopping => &[Running, Stopping],
            Stopped => &[Pending, Running, Stopping],
            Succeeded => &[Stopped],
            // From RUNNING/STOPPING only when the watch itself failed and
            // the state machine stopped the task.
            Failed => &[Pending, Running, Stopping, Stopped],
            Cancelled => &[Pending, Running, Stopping],
        }
    }

    pub fn can_move_to(self, to: RunStatus) -> bool {
        to.allowed_from().contains(&self)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase();
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == upper)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a run status; use one of {}",
                    RunStatus::ALL.map(|s| s.as_str()).join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_statuses_are_final_and_which_may_have_a_task_running() {
        // Found by cargo-mutants (issue 23): nothing pinned these directly.
        use RunStatus::*;
        let terminal: Vec<RunStatus> = RunStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, vec![Succeeded, Failed, Skipped, Cancelled]);
        let may_run: Vec<RunStatus> = RunStatus::ALL
            .into_iter()
            .filter(|s| s.task_may_run())
            .collect();
        assert_eq!(may_run, vec![Pending, Running, Stopping]);
        assert_eq!(Stopped.to_string(), "STOPPED");
        assert_eq!(format!("{Cancelled}"), "CANCELLED");
    }

    #[test]
    fn terminal_statuses_are_absorbing() {
        for from in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in RunStatus::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_normal_path_is_allowed_and_backwards_moves_are_not() {
        use RunStatus::*;
        for (a, b) in [
            (Pending, Running),
            (Running, Stopping),
            (Stopping, Stopped),
            (Stopped, Succeeded),
            (Stopped, Failed),
            (Pending, Failed),
        ] {
            assert!(a.can_move_to(b), "{a} -> {b}");
        }
        for (a, b) in [
            (Running, Pending),
            (Stopped, Running),
            (Stopping, Running),
            (Stopped, Stopping),
            (Running, Succeeded),
        ] {
            assert!(!a.can_move_to(b), "{a} -> {b}");
        }
    }

    #[test]
    fn statuses_parse_case_insensitively() {
        assert_eq!("failed".parse::<RunStatus>(), Ok(RunStatus::Failed));
        assert!("DONE"
            .parse::<RunStatus>()
            .unwrap_err()
            .contains("SUCCEEDED"));
    }
}
