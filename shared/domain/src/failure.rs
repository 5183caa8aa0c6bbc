//! Classification of what ECS reports (a stopped task, a RunTask failure)
//! into failure classes, with a message a person can act on.

use serde::{Deserialize, Serialize};

use crate::error::FailureClass;
use crate::task::TaskDescription;

/// Why Stevedore itself asked ECS to stop a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopRequest {
    /// The job ran past its deadline.
    Timeout,
    /// The execution was aborted, timed out or failed.
    Cancelled,
}

/// The prefix of every stop reason Stevedore gives ECS; lets the classifier
/// recognise our own stops even when the run record does not say so.
pub const STOP_REASON_PREFIX: &str = "Stevedore:";

impl StopRequest {
    pub fn reason(self, detail: &str) -> String {
        let what = match self {
            StopRequest::Timeout => "job timeout",
            StopRequest::Cancelled => "execution ended",
        };
        stop_reason(format!("{STOP_REASON_PREFIX} {what} ({detail})"))
    }
}

/// A StopTask reason as ECS accepts it: at most 255 (bytes, to be safe
/// with any text), cut on a character boundary.
pub fn stop_reason(mut reason: String) -> String {
    if reason.len() > 255 {
        let mut end = 255;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// The classified result of a stopped task or a failed launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// `None` means the job succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl Outcome {
    pub fn succeeded(message: impl Into<String>) -> Self {
        Outcome {
            class: None,
            message: message.into(),
            exit_code: Some(0),
        }
    }
    pub fn failed(class: FailureClass, message: impl Into<String>, exit_code: Option<i32>) -> Self {
        Outcome {
            class: Some(class),
            message: message.into(),
            exit_code,
        }
    }
    pub fn is_success(&self) -> bool {
        self.class.is_none()
    }
}

const START_ERRORS: &[&str] = &[
    "CannotPullContainerError",
    "ResourceInitializationError",
    "CannotStartContainerError",
    "CannotCreateContainerError",
    "CannotInspectContainerError",
    "ResourceNotFoundException",
];

/// What a container runtime says when the container cannot start as
/// configured, however often it is tried: the command or entry point is
/// missing or not executable, or a secret or parameter it needs does not
/// exist (or may not be read).
const MISCONFIGURED: &[&str] = &[
    "executable file not found",
    "no such file or directory",
    "permission denied",
    "exec format error",
    "exec: \"",
    "ResourceNotFoundException",
    "ParameterNotFound",
    "AccessDeniedException",
];

/// `StartFailed`, or `ContainerMisconfigured` when `reasons` say retrying
/// cannot help.
pub fn start_failure_class(reasons: &str) -> FailureClass {
    let lower = reasons.to_ascii_lowercase();
    if MISCONFIGURED
        .iter()
        .any(|m| lower.contains(&m.to_ascii_lowercase()))
    {
        FailureClass::ContainerMisconfigured
    } else {
        FailureClass::StartFailed
    }
}

/// Classifies a stopped task. `main_container` is the job's container
/// (`container` in the spec); without it, a task with one container uses
/// that one, and a task with several fails if any container failed.
pub fn classify_task(
    task: &TaskDescription,
    main_container: Option<&str>,
    requested: Option<StopRequest>,
) -> Outcome {
    let stop_code = task.stop_code.as_deref().unwrap_or("");
    let stopped_reason = task.stopped_reason.as_deref().unwrap_or("");
    let ours = stopped_reason.starts_with(STOP_REASON_PREFIX);
    let requested = requested.or_else(|| {
        (ours && stopped_reason.contains("job timeout")).then_some(StopRequest::Timeout)
    });

    let main = match main_container {
        Some(name) => task.container(name),
        None if task.containers.len() == 1 => task.containers.first(),
        None => None,
    };
    let (exit_code, exit_from) = match (main_container, main) {
        (_, Some(c)) => (c.exit_code, c.name.as_str()),
        (Some(_), None) => (None, ""),
        (None, None) => {
            // Several containers, none named: the first failing one decides.
            match task
                .containers
                .iter()
                .find(|c| c.exit_code.is_some_and(|e| e != 0))
            {
                Some(c) => (c.exit_code, c.name.as_str()),
                None if task.containers.iter().all(|c| c.exit_code == Some(0))
                    && !task.containers.is_empty() =>
                {
                    (Some(0), "")
                }
                None => (None, ""),
            }
        }
    };
    let container_reasons: Vec<&str> = task
        .containers
        .iter()
        .filter_map(|c| c.reason.as_deref())
        .collect();
    let all_reasons = std::iter::once(stopped_reason)
        .chain(container_reasons.iter().copied())
        .collect::<Vec<_>>()
        .join(" | ");
    let in_reasons = |needle: &str| all_reasons.contains(needle);
    let clean_exit = exit_code == Some(0) && stop_code == "EssentialContainerExited";

    match requested {
        Some(StopRequest::Timeout) if !clean_exit => {
            return Outcome::failed(
                FailureClass::TimedOut,
                "the job ran past its timeout and Stevedore stopped the task",
                exit_code,
            );
        }
        Some(StopRequest::Cancelled) if !clean_exit => {
            return Outcome::failed(
                FailureClass::StoppedByUser,
                "the execution ended before the task finished; Stevedore stopped the task",
                exit_code,
            );
        }
        _ => {}
    }

    match stop_code {
        "TaskFailedToStart" => {
            return Outcome::failed(
                start_failure_class(&all_reasons),
                format!(
                    "the task failed to start: {}",
                    non_empty(&all_reasons, "no reason given")
                ),
                exit_code,
            )
        }
        "SpotInterruption" => {
            return Outcome::failed(
                FailureClass::SpotInterrupted,
                format!(
                    "Fargate Spot reclaimed the capacity: {}",
                    non_empty(stopped_reason, "Spot interruption")
                ),
                exit_code,
            )
        }
        "TerminationNotice" if task.on_spot() => {
            return Outcome::failed(
                FailureClass::SpotInterrupted,
                format!(
                    "Fargate Spot sent a termination notice: {}",
                    non_empty(stopped_reason, "termination notice")
                ),
                exit_code,
            )
        }
        "TerminationNotice" | "ServiceSchedulerInitiated" => {
            return Outcome::failed(
                FailureClass::KilledByInfrastructure,
                format!(
                    "AWS stopped the task ({stop_code}): {}",
                    non_empty(stopped_reason, "no reason given")
                ),
                exit_code,
            )
        }
        "UserInitiated" if !clean_exit => {
            return Outcome::failed(
                FailureClass::StoppedByUser,
                format!(
                    "the task was stopped from outside Stevedore: {}",
                    non_empty(stopped_reason, "no reason given")
                ),
                exit_code,
            )
        }
        _ => {}
    }

    if in_reasons("OutOfMemoryError") || exit_code == Some(137) {
        let how = if in_reasons("OutOfMemoryError") {
            "killed for using more memory than its limit"
        } else {
            "killed with SIGKILL (exit 137), which on Fargate almost always means its memory limit"
        };
        return Outcome::failed(
            FailureClass::OutOfMemory,
            format!("container {} was {how}", quoted(exit_from, main_container)),
            exit_code,
        );
    }
    match exit_code {
        Some(0) => Outcome::succeeded(format!("container {} exited 0", quoted(exit_from, main_container))),
        Some(code) => Outcome::failed(
            FailureClass::ExitedNonZero,
            format!("container {} exited with code {code}", quoted(exit_from, main_container)),
            Some(code),
        ),
        None if START_ERRORS.iter().any(|e| in_reasons(e)) => Outcome::failed(
            start_failure_class(&all_reasons),
            format!("the container could not start: {all_reasons}"),
            None,
        ),
        None if main_container.is_some() && main.is_none() => Outcome::failed(
            FailureClass::KilledByInfrastructure,
            format!(
                "the task has no container named `{}`; check `container` in the job spec (containers: {})",
                main_container.unwrap_or_default(),
                task.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
            None,
        ),
        None => Outcome::failed(
            FailureClass::KilledByInfrastructure,
            format!(
                "the task stopped without an exit code from the job's container ({}): {}",
                non_empty(stop_code, "no stop code"),
                non_empty(stopped_reason, "no reason given")
            ),
            None,
        ),
    }
}

/// Classifies one entry of RunTask's `failures` array.
pub fn classify_launch_failure(reason: &str, detail: Option<&str>) -> Outcome {
    let full = match detail {
        Some(d) if !d.is_empty() => format!("{reason} ({d})"),
        _ => reason.to_string(),
    };
    let upper = reason.to_ascii_uppercase();
    let class = if upper.contains("CAPACITY IS UNAVAILABLE")
        || upper.starts_with("RESOURCE:CPU")
        || upper.starts_with("RESOURCE:MEMORY")
        || upper.starts_with("RESOURCE:FARGATE")
    {
        FailureClass::CapacityUnavailable
    } else if upper.starts_with("ATTRIBUTE")
        || upper.starts_with("MISSING")
        || upper.contains("INACTIVE")
    {
        FailureClass::ConfigurationError
    } else {
        // RESOURCE:ENI, AGENT, and whatever ECS adds: the task did not start.
        FailureClass::StartFailed
    };
    let hint = match class {
        FailureClass::CapacityUnavailable => "; Fargate had no capacity for the task",
        FailureClass::ConfigurationError => {
            "; check the cluster, the placement constraints and the task definition"
        }
        _ if upper.starts_with("RESOURCE:ENI") => {
            "; the subnets ran out of network interfaces or IP addresses"
        }
        _ => "",
    };
    Outcome::failed(class, format!("RunTask failed: {full}{hint}"), None)
}

fn non_empty<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if s.trim().is_empty() {
        fallback
    } else {
        s
    }
}

fn quoted(name: &str, fallback: Option<&str>) -> String {
    let name = if name.is_empty() {
        fallback.unwrap_or("")
    } else {
        name
    };
    if name.is_empty() {
        "(all)".to_string()
    } else {
        format!("`{name}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::ContainerState;
    use FailureClass::*;

    #[test]
    fn a_stop_reason_is_cut_to_255_characters_on_a_character_boundary() {
        // 'é' is two bytes: byte 255 falls inside one.
        let reason = StopRequest::Timeout.reason(&"é".repeat(300));
        assert_eq!(reason.len(), 254, "{reason}");
        assert!(reason.ends_with('é'));
        let short = StopRequest::Cancelled.reason("x");
        assert_eq!(short, "Stevedore: execution ended (x)");
    }

    fn container(name: &str, exit: Option<i32>, reason: Option<&str>) -> ContainerState {
        ContainerState {
            name: name.into(),
            exit_code: exit,
            reason: reason.map(Into::into),
            last_status: Some("STOPPED".into()),
        }
    }

    fn task(
        stop_code: Option<&str>,
        reason: Option<&str>,
        containers: Vec<ContainerState>,
    ) -> TaskDescription {
        TaskDescription {
            task_arn: "arn:aws:ecs:eu-west-1:111122223333:task/data/abc".into(),
            last_status: "STOPPED".into(),
            stop_code: stop_code.map(Into::into),
            stopped_reason: reason.map(Into::into),
            containers,
            ..Default::default()
        }
    }

    struct Case {
        name: &'static str,
        task: TaskDescription,
        main: Option<&'static str>,
        requested: Option<StopRequest>,
        want: Option<FailureClass>,
        want_exit: Option<i32>,
        message_has: &'static str,
    }

    #[test]
    fn stopped_tasks_are_classified_from_realistic_payloads() {
        let essential = Some("EssentialContainerExited");
        let essential_reason = Some("Essential container in task exited");
        let cases = vec![
            Case { name: "clean exit", task: task(essential, essential_reason, vec![container("app", Some(0), None)]), main: Some("app"), requested: None, want: None, want_exit: Some(0), message_has: "exited 0" },
            Case { name: "exit 3", task: task(essential, essential_reason, vec![container("app", Some(3), None)]), main: Some("app"), requested: None, want: Some(ExitedNonZero), want_exit: Some(3), message_has: "exited with code 3" },
            Case { name: "exit 137", task: task(essential, essential_reason, vec![container("app", Some(137), None)]), main: Some("app"), requested: None, want: Some(OutOfMemory), want_exit: Some(137), message_has: "exit 137" },
            Case { name: "OutOfMemoryError reason", task: task(essential, Some("OutOfMemoryError: Container killed due to memory usage"), vec![container("app", Some(137), Some("OutOfMemoryError: Container killed due to memory usage"))]), main: Some("app"), requested: None, want: Some(OutOfMemory), want_exit: Some(137), message_has: "memory" },
            Case { name: "image pull", task: task(Some("TaskFailedToStart"), Some("CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref 111122223333.dkr.ecr.eu-west-1.amazonaws.com/etl:nope: not found"), vec![container("app", None, None)]), main: Some("app"), requested: None, want: Some(StartFailed), want_exit: None, message_has: "CannotPullContainerError" },
            Case { name: "secrets", task: task(Some("TaskFailedToStart"), Some("ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed"), vec![container("app", None, None)]), main: Some("app"), requested: None, want: Some(StartFailed), want_exit: None, message_has: "ResourceInitializationError" },
            Case { name: "start error without stop code", task: task(None, None, vec![container("app", None, Some("CannotStartContainerError: exec: \"pyhton\": not found"))]), main: Some("app"), requested: None, want: Some(ContainerMisconfigured), want_exit: None, message_has: "CannotStartContainerError" },
            Case { name: "missing executable", task: task(Some("TaskFailedToStart"), Some("CannotStartContainerError: ResourceInitializationError: failed to create new container runtime task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"etl\": executable file not found in $PATH: unknown"), vec![container("app", None, None)]), main: Some("app"), requested: None, want: Some(ContainerMisconfigured), want_exit: None, message_has: "executable file not found" },
            Case { name: "missing secret", task: task(Some("TaskFailedToStart"), Some("ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: unable to retrieve secret from asm: service call has been retried 1 time(s): failed to fetch secret arn:aws:secretsmanager:eu-west-1:111122223333:secret:etl-db from secrets manager: ResourceNotFoundException: Secrets Manager can't find the specified secret."), vec![container("app", None, None)]), main: Some("app"), requested: None, want: Some(ContainerMisconfigured), want_exit: None, message_has: "ResourceNotFoundException" },
            Case { name: "spot interruption", task: task(Some("SpotInterruption"), Some("Your Spot Task was interrupted."), vec![container("app", Some(143), None)]), main: Some("app"), requested: None, want: Some(SpotInterrupted), want_exit: Some(143), message_has: "Spot" },
            Case { name: "termination notice on spot", task: TaskDescription { capacity_provider_name: Some("FARGATE_SPOT".into()), ..task(Some("TerminationNotice"), Some("Task stopped due to a termination notice"), vec![container("app", None, None)]) }, main: Some("app"), requested: None, want: Some(SpotInterrupted), want_exit: None, message_has: "termination notice" },
            Case { name: "termination notice on-demand", task: task(Some("TerminationNotice"), Some("Task retired"), vec![container("app", None, None)]), main: Some("app"), requested: None, want: Some(KilledByInfrastructure), want_exit: None, message_has: "TerminationNotice" },
            Case { name: "user stop", task: task(Some("UserInitiated"), Some("Stopped by operator"), vec![container("app", Some(143), None)]), main: Some("app"), requested: None, want: Some(StoppedByUser), want_exit: Some(143), message_has: "Stopped by operator" },
            Case { name: "our timeout stop, from the record", task: task(Some("UserInitiated"), Some("Stevedore: job timeout (45m)"), vec![container("app", Some(137), None)]), main: Some("app"), requested: Some(StopRequest::Timeout), want: Some(TimedOut), want_exit: Some(137), message_has: "timeout" },
            Case { name: "our timeout stop, from the reason only", task: task(Some("UserInitiated"), Some("Stevedore: job timeout (45m)"), vec![container("app", Some(143), None)]), main: Some("app"), requested: None, want: Some(TimedOut), want_exit: Some(143), message_has: "timeout" },
            Case { name: "finished just before the timeout stop", task: task(essential, essential_reason, vec![container("app", Some(0), None)]), main: Some("app"), requested: Some(StopRequest::Timeout), want: None, want_exit: Some(0), message_has: "exited 0" },
            Case { name: "unknown stop code, no exit code", task: task(Some("SomethingNew"), Some("host went away"), vec![container("app", None, None)]), main: Some("app"), requested: None, want: Some(KilledByInfrastructure), want_exit: None, message_has: "SomethingNew" },
            Case { name: "unknown stop code, exit code decides", task: task(Some("SomethingNew"), None, vec![container("app", Some(0), None)]), main: Some("app"), requested: None, want: None, want_exit: Some(0), message_has: "exited 0" },
            Case { name: "no exit code at all", task: task(essential, essential_reason, vec![container("app", None, None)]), main: Some("app"), requested: None, want: Some(KilledByInfrastructure), want_exit: None, message_has: "without an exit code" },
            Case { name: "non-essential sidecar failing", task: task(essential, essential_reason, vec![container("app", Some(0), None), container("log-router", Some(1), None)]), main: Some("app"), requested: None, want: None, want_exit: Some(0), message_has: "exited 0" },
            Case { name: "main fails, sidecar fine", task: task(essential, essential_reason, vec![container("log-router", Some(0), None), container("app", Some(2), None)]), main: Some("app"), requested: None, want: Some(ExitedNonZero), want_exit: Some(2), message_has: "`app`" },
            Case { name: "unnamed main, one container", task: task(essential, essential_reason, vec![container("worker", Some(4), None)]), main: None, requested: None, want: Some(ExitedNonZero), want_exit: Some(4), message_has: "`worker`" },
            Case { name: "unnamed main, several containers", task: task(essential, essential_reason, vec![container("a", Some(0), None), container("b", Some(5), None)]), main: None, requested: None, want: Some(ExitedNonZero), want_exit: Some(5), message_has: "`b`" },
            Case { name: "named container missing", task: task(essential, essential_reason, vec![container("web", Some(0), None)]), main: Some("app"), requested: None, want: Some(KilledByInfrastructure), want_exit: None, message_has: "no container named `app`" },
        ];
        for c in cases {
            let out = classify_task(&c.task, c.main, c.requested);
            assert_eq!(out.class, c.want, "{}: {out:?}", c.name);
            assert_eq!(out.exit_code, c.want_exit, "{}", c.name);
            assert!(
                out.message.contains(c.message_has),
                "{}: {}",
                c.name,
                out.message
            );
        }
    }

    #[test]
    fn run_task_failures_are_never_success() {
        let cases = [
            ("Capacity is unavailable at this time. Please try again later or in a different availability zone", None, CapacityUnavailable),
            ("RESOURCE:ENI", Some("subnet-0a1b2c3d"), StartFailed),
            ("RESOURCE:MEMORY", None, CapacityUnavailable),
            ("AGENT", None, StartFailed),
            ("ATTRIBUTE", Some("ecs.cpu-architecture"), ConfigurationError),
            ("MISSING", None, ConfigurationError),
            ("Something ECS adds next year", None, StartFailed),
        ];
        for (reason, detail, want) in cases {
            let out = classify_launch_failure(reason, detail);
            assert_eq!(out.class, Some(want), "{reason}");
            assert!(out.message.contains(reason), "{}", out.message);
            if let Some(d) = detail {
                assert!(out.message.contains(d));
            }
        }
    }

    #[test]
    fn stop_reasons_fit_ecs_limit_and_are_recognised() {
        let long = "x".repeat(400);
        let r = StopRequest::Timeout.reason(&long);
        assert!(r.len() <= 255);
        assert!(r.starts_with(STOP_REASON_PREFIX));
    }

    // Found by cargo-mutants (issue 23): cases the table above did not pin.

    #[test]
    fn a_reason_of_exactly_255_bytes_is_kept_whole() {
        let r = "x".repeat(255);
        assert_eq!(stop_reason(r.clone()), r);
        assert_eq!(stop_reason("x".repeat(256)).len(), 255);
    }

    #[test]
    fn an_outcome_is_a_success_only_without_a_class() {
        assert!(Outcome::succeeded("ok").is_success());
        assert!(!Outcome::failed(ExitedNonZero, "no", Some(3)).is_success());
    }

    fn class_of(
        t: &TaskDescription,
        main: Option<&str>,
        req: Option<StopRequest>,
    ) -> Option<FailureClass> {
        classify_task(t, main, req).class
    }

    #[test]
    fn only_our_own_stop_reasons_say_timeout() {
        // "job timeout" in a reason someone else gave is not our timeout.
        let theirs = task(
            Some("UserInitiated"),
            Some("ops: job timeout was too long, stopping"),
            vec![container("app", Some(143), None)],
        );
        assert_eq!(class_of(&theirs, Some("app"), None), Some(StoppedByUser));
        let ours = task(
            Some("UserInitiated"),
            Some("Stevedore: job timeout (1h)"),
            vec![container("app", Some(143), None)],
        );
        assert_eq!(class_of(&ours, Some("app"), None), Some(TimedOut));
    }

    #[test]
    fn a_clean_exit_wins_over_a_stop_that_came_too_late() {
        // The job exited 0 by itself before the stop (timeout or cancel) landed.
        let clean = task(
            Some("EssentialContainerExited"),
            Some("Essential container in task exited"),
            vec![container("app", Some(0), None)],
        );
        for req in [
            None,
            Some(StopRequest::Timeout),
            Some(StopRequest::Cancelled),
        ] {
            assert_eq!(class_of(&clean, Some("app"), req), None, "{req:?}");
        }
        // Stopped by a user after it had exited 0: still the success it was.
        let user_after_exit = task(
            Some("UserInitiated"),
            Some("stopped by ops"),
            vec![container("app", Some(0), None)],
        );
        assert_eq!(
            class_of(&user_after_exit, Some("app"), None),
            Some(StoppedByUser)
        );
        // A non-clean end under a request is the request's.
        let killed = task(
            Some("UserInitiated"),
            Some("Stevedore: execution ended (x)"),
            vec![container("app", Some(143), None)],
        );
        let cancelled = classify_task(&killed, Some("app"), Some(StopRequest::Cancelled));
        assert_eq!(cancelled.class, Some(StoppedByUser));
        assert!(
            cancelled.message.contains("the execution ended"),
            "our own stop, not somebody else's: {}",
            cancelled.message
        );
        assert_eq!(
            class_of(&killed, Some("app"), Some(StopRequest::Timeout)),
            Some(TimedOut)
        );
    }

    #[test]
    fn without_a_named_container_a_single_one_decides_and_several_need_all_zero() {
        let one = task(
            Some("EssentialContainerExited"),
            None,
            vec![container("only", Some(3), None)],
        );
        assert_eq!(class_of(&one, None, None), Some(ExitedNonZero));
        let one_clean = task(
            Some("EssentialContainerExited"),
            None,
            vec![container("only", Some(0), None)],
        );
        let o = classify_task(&one_clean, None, None);
        assert!(
            o.message.contains("`only`"),
            "names the container: {}",
            o.message
        );
        let all_zero = task(
            Some("EssentialContainerExited"),
            None,
            vec![container("a", Some(0), None), container("b", Some(0), None)],
        );
        assert_eq!(class_of(&all_zero, None, None), None);
        let one_failed = task(
            Some("EssentialContainerExited"),
            None,
            vec![container("a", Some(0), None), container("b", Some(2), None)],
        );
        let o = classify_task(&one_failed, None, None);
        assert_eq!((o.class, o.exit_code), (Some(ExitedNonZero), Some(2)));
        let one_unknown = task(
            Some("EssentialContainerExited"),
            None,
            vec![container("a", Some(0), None), container("b", None, None)],
        );
        assert_eq!(
            class_of(&one_unknown, None, None),
            Some(KilledByInfrastructure)
        );
        let none = task(Some("EssentialContainerExited"), None, vec![]);
        assert_eq!(class_of(&none, None, None), Some(KilledByInfrastructure));
    }

    #[test]
    fn a_failed_start_is_classified_by_its_stop_code_even_with_an_exit_code() {
        let t = task(
            Some("TaskFailedToStart"),
            Some("CannotPullContainerError: pull image manifest has been retried"),
            vec![container("app", Some(0), None)],
        );
        assert_eq!(class_of(&t, Some("app"), None), Some(StartFailed));
    }

    #[test]
    fn aws_stopping_a_task_is_infrastructure_whatever_its_exit_code() {
        for code in ["TerminationNotice", "ServiceSchedulerInitiated"] {
            let t = task(
                Some(code),
                Some("maintenance"),
                vec![container("app", Some(1), None)],
            );
            assert_eq!(
                class_of(&t, Some("app"), None),
                Some(KilledByInfrastructure),
                "{code}"
            );
        }
    }

    #[test]
    fn launch_failures_name_their_class_and_what_to_check() {
        let cap = classify_launch_failure("Capacity is unavailable at this time", None);
        assert_eq!(cap.class, Some(CapacityUnavailable));
        assert!(cap.message.contains("no capacity"), "{}", cap.message);
        let cfg = classify_launch_failure("MISSING", Some("arn:...:container-instance/x"));
        assert_eq!(cfg.class, Some(ConfigurationError));
        assert!(cfg.message.contains("check the cluster"), "{}", cfg.message);
        assert!(
            cfg.message.contains("(arn:...:container-instance/x)"),
            "{}",
            cfg.message
        );
        let empty_detail = classify_launch_failure("AGENT", Some(""));
        assert_eq!(empty_detail.class, Some(StartFailed));
        assert_eq!(empty_detail.message, "RunTask failed: AGENT");
        let eni = classify_launch_failure("RESOURCE:ENI", None);
        assert_eq!(eni.class, Some(StartFailed));
        assert!(
            eni.message.contains("network interfaces"),
            "{}",
            eni.message
        );
    }
}
