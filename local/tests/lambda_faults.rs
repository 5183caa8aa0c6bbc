//! What AWS does to a Lambda task state and the embedded engine can do too:
//! an invocation that fails as Lambda reports a crash, a function timeout or
//! out-of-memory (`Lambda.Unknown`), or a client timeout
//! (`Lambda.ClientExecutionTimeoutException`) — before the handler ran, or
//! after its side effects. And the history of the worst execution a spec can
//! ask for, against Step Functions' 25,000-event limit.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{runs, spec, world, world_with, World};
use serde_json::{json, Value};
use stevedore_domain::budget::HISTORY_EVENT_LIMIT;
use stevedore_domain::{FailureClass, RunStatus};
use stevedore_engine::{Failure, Resources, Status, TaskCall};
use stevedore_local::plane::{function_name, Handlers};
use stevedore_local::{PlaneConfig, SimOutcome};

/// The names Step Functions gives a Lambda invocation that did not return.
const CRASHES: [&str; 2] = ["Lambda.Unknown", "Lambda.ClientExecutionTimeoutException"];

#[derive(Clone, Copy, Debug)]
enum When {
    /// The invocation never reached the handler.
    Before,
    /// The handler ran (its side effects happened), then the invocation failed.
    After,
}

/// Fails invocations `nth` to `nth + times - 1` of `function` with `error`.
struct FailOnce {
    inner: Arc<Handlers>,
    function: &'static str,
    nth: usize,
    times: usize,
    error: &'static str,
    when: When,
    calls: Mutex<BTreeMap<String, usize>>,
}

#[async_trait]
impl Resources for FailOnce {
    async fn call(&self, call: TaskCall) -> Result<Value, Failure> {
        let name = function_name(&call.parameters).unwrap_or_default();
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(name.clone()).or_default();
            *n += 1;
            *n
        };
        if name != self.function || n < self.nth || n >= self.nth + self.times {
            return self.inner.call(call).await;
        }
        if let When::After = self.when {
            let _ = self.inner.call(call).await;
        }
        Err(Failure::new(
            self.error,
            format!("{} did not return: injected by the test", self.function),
        ))
    }
}

fn faulty(
    script: stevedore_local::tasks::SimScript,
    function: &'static str,
    error: &'static str,
    when: When,
) -> World {
    failing(script, function, error, when, 1)
}

/// `function`'s first `times` invocations fail with `error`.
fn failing(
    script: stevedore_local::tasks::SimScript,
    function: &'static str,
    error: &'static str,
    when: When,
    times: usize,
) -> World {
    world_with(
        script,
        PlaneConfig {
            wrap_resources: Some(Box::new(move |inner| {
                Arc::new(FailOnce {
                    inner,
                    function,
                    nth: 1,
                    times,
                    error,
                    when,
                    calls: Mutex::new(BTreeMap::new()),
                })
            })),
            ..PlaneConfig::default()
        },
    )
}

fn retried(out: &stevedore_engine::ExecutionOutcome, error: &str) -> bool {
    out.history
        .iter()
        .any(|e| e.kind == "TaskFailed" && e.details["Error"] == error)
}

#[tokio::test(start_paused = true)]
async fn a_lambda_that_did_not_return_is_retried_on_every_state_of_a_successful_run() {
    for function in ["launch-run", "watch-task", "record-run"] {
        for error in CRASHES {
            for when in [When::Before, When::After] {
                let w = faulty(
                    Arc::new(|_| SimOutcome::exits(Duration::from_secs(120), 0)),
                    function,
                    error,
                    when,
                );
                let out = w.plane.run_job(spec(json!({})), "crash").await;
                let case = format!("{function} failing with {error} {when:?} its handler");
                assert_eq!(out.status, Status::Succeeded, "{case}: {out:#?}");
                assert!(
                    retried(&out, error),
                    "{case}: the failure is in the history"
                );
                assert_eq!(w.runner.launches().len(), 1, "{case}: one task, not two");
                let runs = runs(&w).await;
                assert_eq!(runs.len(), 1, "{case}");
                assert_eq!(runs[0].status, RunStatus::Succeeded, "{case}");
                let task = w.runner.task(runs[0].task_arn.as_deref().unwrap()).unwrap();
                assert_eq!(
                    task.stopped_reason.as_deref(),
                    Some("Essential container in task exited"),
                    "{case}: the task ran to its end, nobody stopped it"
                );
                assert!(w.notifier.sent().is_empty(), "{case}: no alert");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_of_notify_failure_is_retried_and_the_alert_still_goes_out() {
    for error in CRASHES {
        for when in [When::Before, When::After] {
            let w = faulty(
                Arc::new(|_| SimOutcome::exits(Duration::from_secs(30), 3)),
                "notify-failure",
                error,
                when,
            );
            let out = w.plane.run_job(spec(json!({})), "exit3").await;
            let case = format!("notify-failure failing with {error} {when:?} its handler");
            assert_eq!(out.error.as_deref(), Some("ExitedNonZero"), "{case}");
            assert!(retried(&out, error), "{case}");
            let sent = w.notifier.sent();
            // At least once: a crash after Publish sends the alert twice.
            let expected = match when {
                When::Before => 1,
                When::After => 2,
            };
            assert_eq!(sent.len(), expected, "{case}");
            assert!(sent.iter().all(|a| a.class == FailureClass::ExitedNonZero));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_alert_that_cannot_be_sent_is_kept_in_the_dead_letter_queue() {
    // notify-failure fails through every retry (Lambda keeps answering
    // ServiceException): the alert must not vanish.
    let w = failing(
        Arc::new(|_| SimOutcome::exits(Duration::from_secs(30), 3)),
        "notify-failure",
        "Lambda.ServiceException",
        When::Before,
        usize::MAX / 2,
    );
    let out = w.plane.run_job(spec(json!({})), "unsent").await;
    assert_eq!(
        out.error.as_deref(),
        Some("ExitedNonZero"),
        "the execution still fails with the job's error"
    );
    assert!(w.notifier.sent().is_empty());
    let kept = w.plane.handlers.dead_letters();
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(kept[0]["kind"], "stevedore-alert-not-sent");
    assert_eq!(kept[0]["record"]["error"], "ExitedNonZero");
    assert_eq!(kept[0]["alertError"]["Error"], "Lambda.ServiceException");
    assert_eq!(kept[0]["record"]["job"], "orders");
    // Only the record and the error, never the job spec (issue 23, G11).
    assert!(!kept[0].to_string().contains("\"spec\""), "{:#}", kept[0]);
}

#[tokio::test(start_paused = true)]
async fn the_worst_spec_accepted_stays_within_the_history_limit() {
    // Every attempt runs to its seven-day timeout; ten attempts; polls as
    // often as the template allows (CheckIntervalSeconds = 60).
    let w = world_with(
        Arc::new(|_| SimOutcome::exits(Duration::from_secs(30 * 86_400), 0)),
        PlaneConfig {
            check_interval_seconds: 60,
            ..PlaneConfig::default()
        },
    );
    let worst = spec(json!({
        "timeout": "7d",
        "retry": {"maxAttempts": 10, "delay": "1h", "backoffRate": 10, "on": ["TimedOut"]}
    }));
    let out = w.plane.run_job(worst, "worst").await;
    assert_eq!(out.error.as_deref(), Some("TimedOut"), "{:?}", out.cause);
    let runs = runs(&w).await;
    assert_eq!(runs.len(), 10);
    assert!(runs
        .iter()
        .all(|r| r.outcome.as_ref().unwrap().class == Some(FailureClass::TimedOut)));
    let events = out.history.len() as u64;
    println!("history of the worst execution: {events} events");
    assert!(
        events < HISTORY_EVENT_LIMIT * 3 / 5,
        "{events} events: too close to Step Functions' limit of {HISTORY_EVENT_LIMIT}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_short_job_keeps_the_configured_check_interval() {
    let w = world(Arc::new(|_| SimOutcome::Runs {
        for_: Duration::from_secs(420),
        exit_code: Some(0),
        stop_code: "EssentialContainerExited".into(),
        reason: "Essential container in task exited".into(),
        lose_event: true,
    }));
    let out = w.plane.run_job(spec(json!({})), "lost").await;
    assert_eq!(out.status, Status::Succeeded);
    let timeouts: Vec<u64> = out
        .history
        .iter()
        .filter(|e| e.kind == "TaskScheduled" && e.state.as_deref() == Some("Wait for task"))
        .filter_map(|e| e.details["timeoutInSeconds"].as_u64())
        .collect();
    assert_eq!(
        timeouts,
        vec![900, 900],
        "the wait, then one poll after the 900 s interval"
    );
}
