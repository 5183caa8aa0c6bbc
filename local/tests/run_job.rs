//! The real `statemachines/run-job.asl.json`, run by the embedded engine
//! with the real handlers, on virtual time: tasks are simulated (how long
//! they run, how they end), everything else is what `stevedore run` uses.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{runs, spec, world};
use serde_json::json;
use stevedore_domain::{Error, FailureClass, RunStatus};
use stevedore_engine::{ExecutionOutcome, Status};
use stevedore_local::SimOutcome;
use tokio::time::Instant;

fn transitions(out: &ExecutionOutcome) -> usize {
    out.history
        .iter()
        .filter(|e| e.kind.ends_with("StateEntered"))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_job_that_exits_0_succeeds_and_is_recorded() {
    let w = world(Arc::new(|_| SimOutcome::exits(Duration::from_secs(120), 0)));
    let out = w.plane.run_job(spec(json!({})), "ok-1").await;
    assert_eq!(out.status, Status::Succeeded, "{out:#?}");
    let runs = runs(&w).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].cost.as_ref().map(|c| c.billed_seconds), Some(120));
    assert!(w.notifier.sent().is_empty());
    let states: Vec<&str> = out
        .history
        .iter()
        .filter(|e| e.kind.ends_with("StateEntered"))
        .filter_map(|e| e.state.as_deref())
        .collect();
    assert_eq!(
        states,
        vec![
            "Launch task",
            "Wait for task",
            "Record run",
            "Retry or finish?",
            "Job succeeded"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn exit_3_is_recorded_notified_and_fails_the_execution_with_exited_non_zero() {
    let w = world(Arc::new(|_| SimOutcome::exits(Duration::from_secs(30), 3)));
    let out = w.plane.run_job(spec(json!({})), "exit3").await;
    assert_eq!(out.status, Status::Failed);
    assert_eq!(out.error.as_deref(), Some("ExitedNonZero"));
    assert!(out.cause.as_deref().unwrap().contains("exited with code 3"));
    let runs = runs(&w).await;
    assert_eq!(runs.len(), 1, "ExitedNonZero is not retried by default");
    assert_eq!(
        (runs[0].status, runs[0].outcome.as_ref().unwrap().exit_code),
        (RunStatus::Failed, Some(3))
    );
    let alerts = w.notifier.sent();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].class, alerts[0].exit_code),
        (FailureClass::ExitedNonZero, Some(3))
    );
    assert!(w.printed.lock().unwrap()[0].contains("orders failed: ExitedNonZero"));
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_is_retried_and_the_second_attempt_succeeds() {
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let w = world(Arc::new(move |_| {
        let mut n = c.lock().unwrap();
        *n += 1;
        if *n == 1 {
            SimOutcome::LaunchFails(Error::new(
                FailureClass::CapacityUnavailable,
                "RunTask failed: Capacity is unavailable at this time",
            ))
        } else {
            SimOutcome::exits(Duration::from_secs(60), 0)
        }
    }));
    let start = Instant::now();
    let out = w
        .plane
        .run_job(
            spec(json!({"retry": {"maxAttempts": 2, "delay": "45s"}})),
            "retry",
        )
        .await;
    assert_eq!(out.status, Status::Succeeded, "{out:#?}");
    let runs = runs(&w).await;
    assert_eq!(
        runs.iter()
            .map(|r| (r.attempt, r.status))
            .collect::<Vec<_>>(),
        vec![(1, RunStatus::Failed), (2, RunStatus::Succeeded)]
    );
    assert_eq!(
        runs[0].outcome.as_ref().unwrap().class,
        Some(FailureClass::CapacityUnavailable)
    );
    assert_eq!(
        start.elapsed().as_secs(),
        30 + 45 + 60,
        "30 s for ECS to list a task the failed launch may have started, 45 s of backoff, then 60 s of work"
    );
    assert!(w.notifier.sent().is_empty(), "no alert: the job recovered");
}

#[tokio::test(start_paused = true)]
async fn a_spot_interruption_retries_on_demand() {
    let w = world(Arc::new(|l| {
        if l.capacity.uses_spot() {
            SimOutcome::Runs {
                for_: Duration::from_secs(300),
                exit_code: None,
                stop_code: "SpotInterruption".into(),
                reason: "Your Spot Task was interrupted.".into(),
                lose_event: false,
            }
        } else {
            SimOutcome::exits(Duration::from_secs(60), 0)
        }
    }));
    let out = w
        .plane
        .run_job(spec(json!({"capacity": "spot-with-fallback"})), "spot")
        .await;
    assert_eq!(out.status, Status::Succeeded);
    let caps: Vec<_> = w.runner.launches().iter().map(|l| l.capacity).collect();
    assert_eq!(
        caps,
        vec![
            stevedore_domain::spec::Capacity::Spot,
            stevedore_domain::spec::Capacity::OnDemand
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_timeout_is_stopped_and_times_out() {
    let w = world(Arc::new(|_| {
        SimOutcome::exits(Duration::from_secs(6 * 3600), 0)
    }));
    let start = Instant::now();
    let out = w
        .plane
        .run_job(spec(json!({"timeout": "10m"})), "slow")
        .await;
    assert_eq!(out.error.as_deref(), Some("TimedOut"), "{out:#?}");
    let elapsed = start.elapsed().as_secs();
    assert!(
        (600..=610).contains(&elapsed),
        "stopped at the deadline, not after six hours: {elapsed}"
    );
    let runs = runs(&w).await;
    let task = w.runner.task(runs[0].task_arn.as_deref().unwrap()).unwrap();
    assert!(task
        .stopped_reason
        .unwrap()
        .starts_with("Stevedore: job timeout"));
    assert_eq!(
        runs[0].outcome.as_ref().unwrap().class,
        Some(FailureClass::TimedOut)
    );
}

#[tokio::test(start_paused = true)]
async fn an_invalid_spec_fails_with_invalid_job_spec_and_alerts() {
    let w = world(Arc::new(|_| SimOutcome::exits(Duration::from_secs(1), 0)));
    let out = w
        .plane
        .run_job(
            json!({"job": "orders", "taskDefinition": "etl:0", "retry": {"maxAttempts": 99}}),
            "bad",
        )
        .await;
    assert_eq!(out.error.as_deref(), Some("InvalidJobSpec"));
    let cause = out.cause.unwrap();
    assert!(
        cause.contains("taskDefinition") && cause.contains("retry.maxAttempts"),
        "{cause}"
    );
    assert!(w.runner.launches().is_empty());
    assert_eq!(w.notifier.sent()[0].class, FailureClass::InvalidJobSpec);
}

#[tokio::test(start_paused = true)]
async fn a_lost_task_event_is_caught_by_the_safety_poll() {
    let w = world(Arc::new(|_| SimOutcome::Runs {
        for_: Duration::from_secs(420),
        exit_code: Some(0),
        stop_code: "EssentialContainerExited".into(),
        reason: "Essential container in task exited".into(),
        lose_event: true,
    }));
    let start = Instant::now();
    let out = w.plane.run_job(spec(json!({})), "lost").await;
    assert_eq!(out.status, Status::Succeeded);
    let elapsed = start.elapsed().as_secs();
    assert!(
        (900..=905).contains(&elapsed),
        "found by the first 900 s check: {elapsed}"
    );
    assert_eq!(runs(&w).await[0].status, RunStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_six_hour_job_costs_a_constant_number_of_transitions() {
    let w = world(Arc::new(|_| {
        SimOutcome::exits(Duration::from_secs(6 * 3600 - 10), 0)
    }));
    let real = std::time::Instant::now();
    let out = w
        .plane
        .run_job(spec(json!({"timeout": "7h"})), "long")
        .await;
    assert_eq!(out.status, Status::Succeeded);
    assert!(real.elapsed() < Duration::from_secs(5), "virtual time");
    // Five states, plus one re-entry of the wait per elapsed check interval.
    assert_eq!(transitions(&out), 5 + (6 * 3600 - 10) / 900);
}

#[tokio::test(start_paused = true)]
async fn a_second_run_of_a_busy_job_is_skipped_and_its_execution_succeeds() {
    let w = world(Arc::new(|_| SimOutcome::exits(Duration::from_secs(600), 0)));
    let (first, second) = tokio::join!(w.plane.run_job(spec(json!({})), "first"), async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        w.plane.run_job(spec(json!({})), "second").await
    });
    assert_eq!(
        (first.status, second.status),
        (Status::Succeeded, Status::Succeeded)
    );
    assert!(second
        .history
        .iter()
        .any(|e| e.state.as_deref() == Some("Skipped: job already running")));
    let mut statuses: Vec<RunStatus> = runs(&w).await.iter().map(|r| r.status).collect();
    statuses.sort_by_key(|s| s.as_str());
    assert_eq!(statuses, vec![RunStatus::Skipped, RunStatus::Succeeded]);
    assert_eq!(w.runner.launches().len(), 1, "no task for the skipped run");
}

#[tokio::test(start_paused = true)]
async fn a_job_that_opted_in_gets_a_recovery_notice_through_the_state_machine() {
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    // Two failed executions, then two successful ones.
    let w = world(Arc::new(move |_| {
        let mut n = c.lock().unwrap();
        *n += 1;
        SimOutcome::exits(Duration::from_secs(60), if *n <= 2 { 3 } else { 0 })
    }));
    let s = spec(json!({"notify": {"onFailure": true, "onRecovery": true}}));
    for name in ["f1", "f2"] {
        let out = w.plane.run_job(s.clone(), name).await;
        assert_eq!(out.error.as_deref(), Some("ExitedNonZero"));
    }
    let out = w.plane.run_job(s.clone(), "ok1").await;
    assert_eq!(out.status, Status::Succeeded, "{out:#?}");
    let states: Vec<&str> = out
        .history
        .iter()
        .filter(|e| e.kind.ends_with("StateEntered"))
        .filter_map(|e| e.state.as_deref())
        .collect();
    assert_eq!(
        &states[3..],
        ["Retry or finish?", "Notify recovery", "Job succeeded"]
    );
    let sent = w.notifier.sent();
    assert_eq!(sent.len(), 3, "two failure alerts and one recovery notice");
    assert_eq!(sent[2].headline(), "orders recovered after 2 failed runs");
    assert!(w
        .printed
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.starts_with("RECOVERED  [Stevedore] orders recovered after 2 failed runs")));

    // The next success is no recovery: five states, no notice.
    let out = w.plane.run_job(s, "ok2").await;
    assert_eq!(transitions(&out), 5);
    assert_eq!(w.notifier.sent().len(), 3);
}
