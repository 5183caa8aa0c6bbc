//! The orphan sweep's decisions on in-memory ports: which running tasks it
//! stops, which it leaves, and what the run record says afterwards.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use stevedore_domain::failure::Outcome;
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::{RunChange, STACK_TAG};
use stevedore_domain::task::TaskDescription;
use stevedore_domain::{FailureClass, RunStatus};
use stevedore_integration_tests::world::MemoryWorld as World;
use sweep_tasks::{function_handler, SweepReason, GRACE_SECONDS};
use time::Duration;

fn spec() -> Value {
    json!({"job": "orders", "taskDefinition": "etl:3", "container": "app", "timeout": "1h", "concurrency": {"max": 5}})
}

fn scheduled() -> Value {
    json!({"version": "0", "id": "7bf73129", "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012", "time": "2026-11-24T06:05:00Z", "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/sweep"], "detail": {}})
}

/// Launches attempt 1 of `execution`; the task the fake started is RUNNING.
async fn launched(w: &World, execution: &str) -> (String, String) {
    let out = w
        .launch_in(execution, spec(), 1, None)
        .await
        .expect("launch");
    let arn = out.task_arn.clone().unwrap();
    w.tasks.set_task(TaskDescription {
        task_arn: arn.clone(),
        last_status: "RUNNING".into(),
        started_by: Some(format!("stevedore/{}", out.run_id)),
        ..Default::default()
    });
    (out.run_id, arn)
}

fn stopped(w: &World) -> Vec<String> {
    w.tasks.stops().into_iter().map(|(arn, _)| arn).collect()
}

#[tokio::test]
async fn a_task_whose_run_ended_is_stopped_and_the_run_says_so() {
    let w = World::new();
    let (run_id, arn) = launched(&w, "e1").await;
    // The attempt was recorded FAILED while its task ran on (a launch that
    // failed after RunTask, and ListTasks did not show the task yet).
    let change = RunChange {
        outcome: Some(Outcome::failed(
            FailureClass::Transient,
            "UpdateItem timed out",
            None,
        )),
        ..RunChange::to(RunStatus::Failed)
    };
    w.store.change_run(&run_id, &change).await.unwrap();

    let out = function_handler(&w.sweep_deps(None), scheduled())
        .await
        .unwrap();
    assert_eq!(out.examined, 1);
    assert_eq!(out.stopped.len(), 1);
    assert_eq!(out.stopped[0].reason, SweepReason::RunEnded);
    assert_eq!(stopped(&w), vec![arn.clone()]);
    let (_, reason) = &w.tasks.stops()[0];
    assert!(reason.starts_with("Stevedore: sweep: run "), "{reason}");
    assert!(reason.len() <= 255);
    let run = w.store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(
        run.status,
        RunStatus::Failed,
        "an ended run keeps its status"
    );
    assert_eq!(run.notes.len(), 1, "{:?}", run.notes);
    assert!(run.notes[0].contains(&arn) && run.notes[0].contains("sweep stopped"));
}

#[tokio::test]
async fn a_live_run_is_left_to_its_execution_until_its_deadline_and_grace_pass() {
    let w = World::new();
    let (run_id, arn) = launched(&w, "e1").await;
    w.clock
        .advance(Duration::hours(1) + Duration::seconds(GRACE_SECONDS));
    let out = function_handler(&w.sweep_deps(None), scheduled())
        .await
        .unwrap();
    assert!(out.stopped.is_empty(), "{out:?}");
    assert!(stopped(&w).is_empty());

    w.clock.advance(Duration::seconds(1));
    let out = function_handler(&w.sweep_deps(None), scheduled())
        .await
        .unwrap();
    assert_eq!(out.stopped[0].reason, SweepReason::PastDeadline);
    assert_eq!(stopped(&w), vec![arn.clone()]);
    // Its stop event may reach task-events first: the reason alone must say
    // it was a timeout, not somebody's stop (simulator seed 3093).
    let reason = w.tasks.stops()[0].1.clone();
    w.stop(&arn, "UserInitiated", Some(143));
    let mut task = w.tasks.tasks.lock().unwrap()[&arn].clone();
    task.stopped_reason = Some(reason.clone());
    let outcome = stevedore_domain::failure::classify_task(&task, Some("app"), None);
    assert_eq!(outcome.class, Some(FailureClass::TimedOut), "{reason}");
    let run = w.store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let outcome = run.outcome.unwrap();
    assert_eq!(outcome.class, Some(FailureClass::TimedOut));
    assert!(outcome.message.contains("sweep"), "{}", outcome.message);
    assert!(run.finished_at.is_some());
}

#[tokio::test]
async fn a_second_task_for_one_attempt_is_stopped_and_the_runs_own_task_is_not() {
    let w = World::new();
    let (run_id, arn) = launched(&w, "e1").await;
    let second = "arn:aws:ecs:us-east-1:123456789012:task/data-jobs/second".to_string();
    w.tasks.set_task(TaskDescription {
        task_arn: second.clone(),
        last_status: "RUNNING".into(),
        started_by: Some(format!("stevedore/{run_id}")),
        ..Default::default()
    });
    let out = function_handler(&w.sweep_deps(None), scheduled())
        .await
        .unwrap();
    assert_eq!(out.examined, 2);
    assert_eq!(stopped(&w), vec![second]);
    assert_eq!(out.stopped[0].reason, SweepReason::NotTheRunsTask);
    let run = w.store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.task_arn, Some(arn));
    assert_eq!(run.notes.len(), 1);
}

#[tokio::test]
async fn a_task_without_a_run_is_stopped_only_when_it_carries_this_stacks_tag() {
    let w = World::new();
    for (arn, stack) in [("ours", "prod"), ("theirs", "staging"), ("untagged", "")] {
        let arn = format!("arn:aws:ecs:us-east-1:123456789012:task/data-jobs/{arn}");
        w.tasks.set_task(TaskDescription {
            task_arn: arn.clone(),
            last_status: "RUNNING".into(),
            started_by: Some(format!("stevedore/gone-{stack}-1")),
            ..Default::default()
        });
        if !stack.is_empty() {
            w.tasks.tags.lock().unwrap().insert(
                arn,
                BTreeMap::from([(STACK_TAG.to_string(), stack.to_string())]),
            );
        }
    }
    // Not Stevedore's at all.
    w.tasks.set_task(TaskDescription {
        task_arn: "arn:aws:ecs:us-east-1:123456789012:task/data-jobs/service".into(),
        last_status: "RUNNING".into(),
        started_by: Some("ecs-svc/1234".into()),
        ..Default::default()
    });

    let out = function_handler(&w.sweep_deps(Some("prod")), scheduled())
        .await
        .unwrap();
    assert_eq!(out.examined, 3, "only tasks started by Stevedore");
    assert_eq!(
        stopped(&w),
        vec!["arn:aws:ecs:us-east-1:123456789012:task/data-jobs/ours".to_string()]
    );
    assert_eq!(out.stopped[0].reason, SweepReason::NoRun);

    // Without a stack name, the sweep cannot tell its own tasks: it leaves them.
    let w2 = World::new();
    w2.tasks.set_task(TaskDescription {
        task_arn: "arn:aws:ecs:us-east-1:123456789012:task/data-jobs/x".into(),
        last_status: "RUNNING".into(),
        started_by: Some("stevedore/gone-1".into()),
        ..Default::default()
    });
    let out = function_handler(&w2.sweep_deps(None), scheduled())
        .await
        .unwrap();
    assert!(out.stopped.is_empty());
}

#[tokio::test]
async fn launch_tags_tasks_with_the_stack_so_the_sweep_knows_them() {
    let w = World::new();
    let mut deps = w.launch_deps();
    deps.config.stack = Some("prod".into());
    let out = launch_run::function_handler(
        &deps,
        json!({"spec": spec(), "execution": World::execution("e1"), "attempt": 1}),
    )
    .await
    .unwrap();
    let launch = &w.tasks.launches()[0];
    assert_eq!(launch.tags.get(STACK_TAG).map(String::as_str), Some("prod"));
    assert_eq!(launch.started_by, format!("stevedore/{}", out.run_id));
}

#[tokio::test]
async fn a_sweep_out_of_budget_leaves_the_rest_for_the_next_one() {
    let w = World::new();
    launched(&w, "e1").await;
    launched(&w, "e2").await;
    let mut deps = w.sweep_deps(None);
    deps.config.budget_seconds = 0;
    let out = function_handler(&deps, scheduled()).await.unwrap();
    assert_eq!((out.examined, out.deferred), (2, 2));
    assert!(
        out.message.contains("left for the next sweep"),
        "{}",
        out.message
    );
}

#[tokio::test]
async fn an_event_that_is_not_the_schedule_is_refused_with_how_to_invoke_it() {
    let w = World::new();
    let err = function_handler(&w.sweep_deps(None), json!({"this is": "not it"}))
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::InvalidInput);
    assert!(err.message.contains("Scheduled Event"), "{}", err.message);
}

#[tokio::test]
async fn the_reaper_stops_the_task_of_a_launch_cut_short_before_it_named_its_task() {
    use stevedore_domain::memory::FaultTiming;
    let w = World::new();
    // RunTask succeeded; recording RUNNING (with the task ARN) failed; then
    // the execution was aborted.
    w.store.fail_next_change_to(
        RunStatus::Running,
        stevedore_domain::Error::transient("UpdateItem timed out"),
        FaultTiming::Before,
    );
    w.launch(spec(), 1, None).await.unwrap_err();
    let run = w.store.all_runs().pop().unwrap();
    assert_eq!(
        (run.status, run.task_arn.clone()),
        (RunStatus::Pending, None)
    );
    let arn = w.tasks.launches()[0].client_token.clone();
    let reap = w.reap_deps();
    let event = json!({"detail-type": "Step Functions Execution Status Change", "detail": {"executionArn": run.execution.id, "status": "ABORTED"}});
    let out = reap_execution::function_handler(&reap, event)
        .await
        .unwrap();
    assert_eq!(out.cancelled, vec![run.run_id.clone()]);
    let stops = stopped(&w);
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert!(stops[0].ends_with(&arn[..32]), "{stops:?}");
}

/// G6: a live run whose execution has ended (the reaper's event was lost,
/// or the execution ended before its launch wrote the run) is watched by
/// nobody: the sweep stops its task, records it CANCELLED and frees its
/// slot after the stop grace. A run whose execution runs is left alone.
#[tokio::test]
async fn a_live_run_whose_execution_ended_is_stopped_and_cancelled() {
    use stevedore_domain::ports::ExecutionState;
    let w = World::new();
    let (ended_run, ended_task) = launched(&w, "e1").await;
    let (live_run, _) = launched(&w, "e2").await;
    let e1 = World::execution("e1")["id"].as_str().unwrap().to_string();
    w.executions
        .set(&e1, ExecutionState::Ended("ABORTED".into()));

    let out = function_handler(&w.sweep_deps(None), scheduled())
        .await
        .unwrap();
    assert_eq!(out.stopped.len(), 1, "{out:?}");
    assert_eq!(out.stopped[0].reason, SweepReason::ExecutionEnded);
    assert_eq!(stopped(&w), vec![ended_task.clone()]);
    let reason = &w.tasks.stops()[0].1;
    assert!(reason.starts_with("Stevedore: execution ended"), "{reason}");
    let run = w.store.get_run(&ended_run).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(
        run.outcome.unwrap().class,
        Some(FailureClass::StoppedByUser)
    );
    let now = stevedore_domain::ports::Clock::now(w.clock.as_ref());
    let slots = w.store.held_slots();
    let e1_slot = slots
        .iter()
        .find(|s| s.2 == e1)
        .expect("held through the grace");
    assert_eq!(
        e1_slot.3,
        now + Duration::seconds(stevedore_domain::flow::STOP_GRACE_SECONDS)
    );
    let live = w.store.get_run(&live_run).await.unwrap().unwrap();
    assert_eq!(live.status, RunStatus::Running);

    // An execution Step Functions no longer knows counts as ended too.
    let (gone_run, _) = launched(&w, "e3").await;
    let e3 = World::execution("e3")["id"].as_str().unwrap().to_string();
    w.executions.set(&e3, ExecutionState::Gone);
    let out = function_handler(&w.sweep_deps(None), scheduled())
        .await
        .unwrap();
    // (The fake keeps the first task listed as running: it ended CANCELLED now.)
    let by_execution: Vec<&str> = out
        .stopped
        .iter()
        .filter(|s| s.reason == SweepReason::ExecutionEnded)
        .map(|s| s.run_id.as_str())
        .collect();
    assert_eq!(by_execution, vec![gone_run.as_str()], "{out:?}");
    let gone = w.store.get_run(&gone_run).await.unwrap().unwrap();
    assert_eq!(gone.status, RunStatus::Cancelled);
}
