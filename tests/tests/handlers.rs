//! Handler decisions on in-memory ports: Spot fallback, attempt-level retry,
//! MISSING tasks, bad input. (The emulator tests cover the AWS path.)

use serde_json::{json, Value};
use stevedore_domain::failure::Outcome;
use stevedore_domain::memory::FaultTiming;
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::RunChange;
use stevedore_domain::spec::Capacity;
use stevedore_domain::task::ContainerState;
use stevedore_domain::{Error, FailureClass, RunStatus};
use stevedore_integration_tests::world::MemoryWorld as World;
use time::Duration;

fn spec(extra: Value) -> Value {
    let mut s = json!({"job": "orders", "taskDefinition": "etl:3", "container": "app"});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    s
}

/// What "Record failed launch" passes record-run when attempt 1 of the
/// execution `e1` failed to launch with `err` (Lambda's error shape).
fn caught(spec: &Value, err: &Error) -> Value {
    json!({
        "spec": spec,
        "execution": World::execution("e1"),
        "attempt": 1,
        "error": {"Error": err.class.as_str(), "Cause": json!({"errorType": err.class.as_str(), "errorMessage": err.message}).to_string()}
    })
}

#[tokio::test]
async fn spot_with_fallback_launches_on_demand_when_spot_has_no_capacity() {
    let w = World::new();
    w.tasks.fail_next_launch(Error::new(
        FailureClass::CapacityUnavailable,
        "RunTask failed: Capacity is unavailable at this time",
    ));
    let out = w
        .launch(spec(json!({"capacity": "spot-with-fallback"})), 1, None)
        .await
        .expect("launch");
    assert_eq!(out.capacity, Capacity::OnDemand);
    let launches = w.tasks.launches();
    assert_eq!(
        launches.iter().map(|l| l.capacity).collect::<Vec<_>>(),
        vec![Capacity::Spot, Capacity::OnDemand]
    );
    assert_ne!(
        launches[0].client_token, launches[1].client_token,
        "the fallback is a different request"
    );
    assert_eq!(
        w.store
            .get_run(&out.run_id)
            .await
            .unwrap()
            .unwrap()
            .capacity,
        Capacity::OnDemand,
        "the record says where it ran"
    );

    // Spot only: no fallback, the capacity error is the attempt's outcome.
    let w = World::new();
    w.tasks
        .fail_next_launch(Error::new(FailureClass::CapacityUnavailable, "no capacity"));
    let err = w
        .launch(spec(json!({"capacity": "spot"})), 1, None)
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::CapacityUnavailable);
    assert_eq!(w.tasks.launches().len(), 1);
}

#[tokio::test]
async fn a_spot_interruption_is_retried_on_demand_with_backoff_and_the_slot_kept() {
    let w = World::new();
    let s = spec(
        json!({"capacity": "spot-with-fallback", "retry": {"maxAttempts": 3, "delay": "20s", "backoffRate": 3}}),
    );
    let out = w.launch(s.clone(), 1, None).await.unwrap();
    let arn = out.task_arn.clone().unwrap();
    w.stop(&arn, "SpotInterruption", Some(143));
    assert_eq!(
        watch_task::function_handler(&w.watch_deps(), json!({"runId": out.run_id}))
            .await
            .unwrap()
            .state,
        watch_task::WatchState::Stopped
    );
    let rec = record_run::function_handler(&w.record_deps(), json!({"runId": out.run_id}))
        .await
        .unwrap();
    assert_eq!(rec.error, Some(FailureClass::SpotInterrupted));
    assert!(rec.retry);
    assert_eq!(
        (rec.next_attempt, rec.retry_delay_seconds, rec.next_capacity),
        (Some(2), Some(20), Some(Capacity::OnDemand))
    );
    assert!(!rec.notify, "no alert while another attempt follows");

    // The second attempt (on-demand, as asked) keeps the execution's slot.
    let second = w.launch(s.clone(), 2, Some("on-demand")).await.unwrap();
    assert_eq!(second.capacity, Capacity::OnDemand);
    assert_ne!(second.run_id, out.run_id);
    w.stop(
        second.task_arn.as_deref().unwrap(),
        "SpotInterruption",
        None,
    );
    watch_task::function_handler(&w.watch_deps(), json!({"runId": second.run_id}))
        .await
        .unwrap();
    let rec2 = record_run::function_handler(&w.record_deps(), json!({"runId": second.run_id}))
        .await
        .unwrap();
    assert_eq!(rec2.retry_delay_seconds, Some(60), "20s x 3");

    let third = w.launch(s, 3, Some("on-demand")).await.unwrap();
    w.stop(
        third.task_arn.as_deref().unwrap(),
        "EssentialContainerExited",
        Some(1),
    );
    watch_task::function_handler(&w.watch_deps(), json!({"runId": third.run_id}))
        .await
        .unwrap();
    let last = record_run::function_handler(&w.record_deps(), json!({"runId": third.run_id}))
        .await
        .unwrap();
    assert_eq!(
        (last.retry, last.notify, last.error),
        (false, true, Some(FailureClass::ExitedNonZero))
    );
}

#[tokio::test]
async fn a_failed_launch_is_recorded_from_the_caught_error() {
    let w = World::new();
    w.tasks.fail_next_launch(Error::new(
        FailureClass::StartFailed,
        "RunTask failed: RESOURCE:ENI",
    ));
    let s = spec(json!({}));
    let err = w.launch(s.clone(), 1, None).await.unwrap_err();
    let rec = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap();
    assert_eq!(
        (rec.status, rec.error, rec.retry, rec.next_attempt),
        (
            RunStatus::Failed,
            Some(FailureClass::StartFailed),
            true,
            Some(2)
        )
    );
    assert_eq!(rec.cause, "RunTask failed: RESOURCE:ENI");
    let run = w
        .store
        .get_run(rec.run_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
}

#[tokio::test]
async fn a_missing_task_is_not_visible_yet_then_gone() {
    let w = World::new();
    let out = w.launch(spec(json!({})), 1, None).await.unwrap();
    let arn = out.task_arn.clone().unwrap();
    w.tasks.tasks.lock().unwrap().remove(&arn);
    let early = watch_task::function_handler(
        &w.watch_deps(),
        json!({"runId": out.run_id, "taskToken": "t1"}),
    )
    .await
    .unwrap();
    assert_eq!(
        early.state,
        watch_task::WatchState::Running,
        "MISSING right after launch means not visible yet"
    );
    w.clock.advance(Duration::minutes(10));
    let later = watch_task::function_handler(
        &w.watch_deps(),
        json!({"runId": out.run_id, "taskToken": "t2"}),
    )
    .await
    .unwrap();
    assert_eq!(later.state, watch_task::WatchState::Stopped);
    let sent = w.tokens.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1.as_ref().unwrap()["result"],
        "KilledByInfrastructure"
    );
}

#[tokio::test]
async fn a_crash_after_the_on_demand_fallback_gets_that_task_back_not_a_spot_one() {
    let w = World::new();
    w.tasks.fail_next_launch(Error::new(
        FailureClass::CapacityUnavailable,
        "RunTask failed: Capacity is unavailable at this time",
    ));
    // The on-demand task starts, then the run cannot be marked RUNNING (the
    // invocation times out): Step Functions invokes launch-run again.
    w.store.fail_next_change_to(
        RunStatus::Running,
        Error::transient("UpdateItem timed out"),
        FaultTiming::Before,
    );
    let s = spec(json!({"capacity": "spot-with-fallback"}));
    let err = w.launch(s.clone(), 1, None).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Transient);
    // The first invocation may still be running as far as the retry can
    // tell: while its claim lasts, the retry starts nothing.
    let busy = w.launch(s.clone(), 1, None).await.unwrap_err();
    assert_eq!(busy.class, FailureClass::Transient);
    assert!(busy.message.contains("another invocation"), "{busy}");
    assert_eq!(w.tasks.launches().len(), 2);
    w.clock
        .advance(Duration::seconds(launch_run::LAUNCH_CLAIM_SECONDS + 1));
    let out = w.launch(s, 1, None).await.expect("the retried launch");
    let launches = w.tasks.launches();
    assert_eq!(
        launches.iter().map(|l| l.capacity).collect::<Vec<_>>(),
        vec![Capacity::Spot, Capacity::OnDemand, Capacity::OnDemand],
        "the retry asks for the on-demand task again, never Spot"
    );
    assert_eq!(
        launches[1].client_token, launches[2].client_token,
        "with the same client token: ECS gives the same task back"
    );
    assert_eq!(out.capacity, Capacity::OnDemand);
    let run = w.store.get_run(&out.run_id).await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.capacity, run.task_arn),
        (RunStatus::Running, Capacity::OnDemand, out.task_arn)
    );
}

#[tokio::test]
async fn a_launch_retried_minutes_later_is_not_declared_gone_on_its_first_poll() {
    let w = World::new();
    // The first invocation creates the run, then RunTask is throttled past
    // the Lambda's retries; Step Functions retries the state later.
    w.tasks.fail_next_launch(Error::new(
        FailureClass::Throttled,
        "RunTask: Rate exceeded",
    ));
    let err = w.launch(spec(json!({})), 1, None).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Throttled);
    w.clock.advance(Duration::minutes(5));
    let out = w.launch(spec(json!({})), 1, None).await.unwrap();
    let arn = out.task_arn.clone().unwrap();
    // DescribeTasks does not see the new task yet (eventual consistency).
    w.tasks.tasks.lock().unwrap().remove(&arn);
    w.clock.advance(Duration::seconds(5));
    let first = watch_task::function_handler(
        &w.watch_deps(),
        json!({"runId": out.run_id, "taskToken": "t1"}),
    )
    .await
    .unwrap();
    assert_eq!(
        first.state,
        watch_task::WatchState::Running,
        "five seconds after its RunTask the task is new, whatever the run's age"
    );
    assert!(w.tokens.sent().is_empty(), "no outcome reported");
}

#[tokio::test]
async fn a_stop_reported_while_the_reaper_cancels_is_still_recorded() {
    let w = World::new();
    let out = w.launch(spec(json!({})), 1, None).await.unwrap();
    let arn = out.task_arn.clone().unwrap();
    // task-events moves the run to STOPPED between the reaper's read and
    // its write.
    let mut stopped = w.tasks.tasks.lock().unwrap()[&arn].clone();
    stopped.last_status = "STOPPED".into();
    stopped.stop_code = Some("EssentialContainerExited".into());
    stopped.containers = vec![ContainerState {
        name: "app".into(),
        exit_code: Some(0),
        ..Default::default()
    }];
    w.store.race_next_change_to(
        RunStatus::Cancelled,
        RunChange {
            task: Some(stopped),
            outcome: Some(Outcome::succeeded("exited 0")),
            ..RunChange::to(RunStatus::Stopped)
        },
    );
    let reaped = w.reap("e1", "ABORTED").await.unwrap();
    let run = w.store.get_run(&out.run_id).await.unwrap().unwrap();
    assert!(
        run.status.is_terminal(),
        "the run is recorded, not left {} for ever",
        run.status
    );
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(reaped.recorded, vec![out.run_id]);
}

#[tokio::test]
async fn a_slot_taken_before_the_run_could_be_written_is_freed_when_the_launch_fails() {
    let w = World::new();
    // The slot is taken, then the run cannot be written, through every retry.
    w.store
        .fail_next_create(Error::transient("PutItem timed out"), FaultTiming::Before);
    let s = spec(json!({"concurrency": {"max": 1, "whenBusy": "skip"}}));
    let err = w.launch(s.clone(), 1, None).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Transient);
    let rec = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap();
    assert_eq!((rec.status, rec.retry), (RunStatus::Failed, false));
    // The next execution of the job is not blocked until the lease runs out.
    let next = w.launch_in("e2", s, 1, None).await.unwrap();
    assert_eq!(next.status, launch_run::LaunchStatus::Launched);
}

#[tokio::test]
async fn a_task_started_by_a_launch_that_then_failed_is_found_and_watched() {
    let w = World::new();
    // RunTask succeeds, then the run cannot be marked RUNNING: the task ARN
    // is never stored. The state machine gives up and records the failure.
    w.store.fail_next_change_to(
        RunStatus::Running,
        Error::transient("UpdateItem timed out"),
        FaultTiming::Before,
    );
    let s = spec(json!({}));
    let err = w.launch(s.clone(), 1, None).await.unwrap_err();
    let started = w.tasks.launches();
    assert_eq!(started.len(), 1, "the task was started");
    let rec = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap();
    // The job is healthy: the task is found by its startedBy and adopted,
    // not stopped for the store's failure.
    let arn = rec.adopted.clone().expect("adopted");
    assert!(arn.contains(&started[0].client_token[..32]));
    assert_eq!(rec.status, RunStatus::Running);
    assert!(w.tasks.stops().is_empty(), "{:?}", w.tasks.stops());
    let run = w.store.all_runs().pop().unwrap();
    assert_eq!(run.task_arn.as_deref(), Some(arn.as_str()));
}

/// Two unnamed tasks for one attempt (launches with different client
/// tokens): neither is adopted, both are stopped, the failure recorded.
#[tokio::test]
async fn two_unrecorded_tasks_of_a_failed_launch_are_both_stopped() {
    let w = World::new();
    let s = spec(json!({}));
    w.store.fail_next_change_to(
        RunStatus::Running,
        Error::transient("UpdateItem timed out"),
        FaultTiming::Before,
    );
    let err = w.launch(s.clone(), 1, None).await.unwrap_err();
    let mut second = w
        .tasks
        .tasks
        .lock()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    second.task_arn.push_str("-second");
    w.tasks.set_task(second);
    let rec = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap();
    assert_eq!(rec.adopted, None);
    assert_eq!(rec.status, RunStatus::Failed);
    let stops = w.tasks.stops();
    assert_eq!(stops.len(), 2, "{stops:?}");
    assert!(
        stops[0].1.starts_with("Stevedore: the attempt failed"),
        "{}",
        stops[0].1
    );
    let run = w.store.all_runs().pop().unwrap();
    let message = run.outcome.unwrap().message;
    assert!(message.contains(&stops[0].0) && message.contains(&stops[1].0));
}

#[tokio::test]
async fn a_caught_failure_over_a_task_stevedore_stopped_keeps_the_failure_as_its_cause() {
    let w = World::new();
    let s = spec(json!({}));
    let out = w.launch(s.clone(), 1, None).await.unwrap();
    // "Stop task" stopped it after the watch failed.
    w.stop(out.task_arn.as_deref().unwrap(), "UserInitiated", Some(143));
    let err = Error::transient("GetItem: timed out");
    let rec = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap();
    assert_eq!(rec.status, RunStatus::Failed);
    assert_eq!(rec.error, Some(FailureClass::Transient));
    assert!(rec.cause.contains("GetItem: timed out"), "{}", rec.cause);
}

#[tokio::test]
async fn a_caught_failure_asks_again_while_ecs_does_not_show_the_new_task_yet() {
    let w = World::new();
    let s = spec(json!({}));
    let out = w.launch(s.clone(), 1, None).await.unwrap();
    w.tasks.tasks.lock().unwrap().clear();
    let err = Error::transient("GetItem: timed out");
    let again = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap_err();
    assert_eq!(again.class, FailureClass::Transient);
    assert!(
        again.message.contains("does not show task"),
        "{}",
        again.message
    );
    // Two minutes on, a task ECS does not know is gone: stopped to be sure, recorded FAILED.
    w.clock.advance(Duration::seconds(121));
    let rec = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap();
    assert_eq!(rec.status, RunStatus::Failed);
    assert_eq!(w.tasks.stops()[0].0, out.task_arn.unwrap());
}

#[tokio::test]
async fn a_caught_failure_over_a_task_ecs_is_still_taking_down_waits_for_how_it_ended() {
    // The watch failed for good while the task's container exited 0; ECS
    // keeps the task in DEPROVISIONING for a while. It is not running:
    // stopping it and recording the watch's error would make a success a
    // failure (issue 23, G3).
    let w = World::new();
    let s = spec(json!({}));
    let out = w.launch(s.clone(), 1, None).await.unwrap();
    let arn = out.task_arn.clone().unwrap();
    w.tasks.set_task(stevedore_domain::task::TaskDescription {
        task_arn: arn.clone(),
        last_status: "DEPROVISIONING".into(),
        desired_status: Some("STOPPED".into()),
        stop_code: Some("EssentialContainerExited".into()),
        containers: vec![ContainerState {
            name: "app".into(),
            exit_code: Some(0),
            last_status: Some("STOPPED".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    let err = Error::transient("GetItem: timed out");
    let again = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap_err();
    assert_eq!(again.class, FailureClass::Transient, "{}", again.message);
    assert!(
        again.message.contains("DEPROVISIONING"),
        "{}",
        again.message
    );
    assert!(
        w.tasks.stops().is_empty(),
        "a task on its way down is not stopped"
    );
    // Once ECS says STOPPED, the attempt is the success it was.
    w.stop(&arn, "EssentialContainerExited", Some(0));
    let rec = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap();
    assert_eq!(rec.status, RunStatus::Succeeded, "{rec:?}");
}

#[tokio::test]
async fn a_stop_recorded_by_an_invocation_that_died_before_completing_the_wait_is_completed_again()
{
    // task-events wrote STOPPED, then its process died before
    // SendTaskSuccess; Lambda retries the event: the retry finds the stop
    // recorded and must still complete the waiting state (issue 23, G3).
    let w = World::new();
    let s = spec(json!({}));
    let out = w.launch(s, 1, None).await.unwrap();
    let arn = out.task_arn.clone().unwrap();
    w.store
        .change_run(
            &out.run_id,
            &RunChange {
                task_token: Some("token-1".into()),
                ..RunChange::to(RunStatus::Running)
            },
        )
        .await
        .unwrap();
    w.stop(&arn, "EssentialContainerExited", Some(0));
    let mut task = w.tasks.tasks.lock().unwrap()[&arn].clone();
    task.started_by = Some(format!("stevedore/{}", out.run_id));
    let run = w.store.get_run(&out.run_id).await.unwrap().unwrap();
    // The first invocation's write, without its SendTaskSuccess.
    w.store
        .change_run(
            &out.run_id,
            &RunChange {
                task: Some(task.clone()),
                outcome: Some(stevedore_domain::failure::classify_task(
                    &task,
                    run.main_container().as_deref(),
                    None,
                )),
                ..RunChange::to(RunStatus::Stopped)
            },
        )
        .await
        .unwrap();
    assert!(w.tokens.sent().is_empty());
    let event = json!({
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "detail": serde_json::to_value(&task).unwrap(),
    });
    let deps = task_events::Deps {
        runs: w.store.clone(),
        tokens: w.tokens.clone(),
    };
    task_events::function_handler(&deps, event).await.unwrap();
    let sent = w.tokens.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "token-1");
}

#[tokio::test]
async fn an_aborted_executions_slot_is_held_through_its_tasks_stop_grace() {
    // The reaper asks ECS to stop the task: SIGTERM, then up to the stop
    // timeout before SIGKILL. Freeing the slot at once let the next run of
    // a concurrency.max 1 job start beside a container still running
    // (simulator seed 2601; issue 23, "concurrency at every instant").
    let w = World::new();
    let s = spec(json!({"concurrency": {"max": 1, "whenBusy": "skip"}}));
    let first = w.launch_in("e1", s.clone(), 1, None).await.unwrap();
    assert!(first.task_arn.is_some());
    let reaped = w.reap("e1", "ABORTED").await.unwrap();
    assert_eq!(reaped.cancelled, vec![first.run_id.clone()]);
    assert_eq!(w.tasks.stops().len(), 1);
    let during = w.launch_in("e2", s.clone(), 1, None).await.unwrap();
    assert_eq!(
        during.status,
        launch_run::LaunchStatus::Skipped,
        "the stopped task may still run: {}",
        during.message
    );
    w.clock.advance(Duration::seconds(
        stevedore_domain::flow::STOP_GRACE_SECONDS + 1,
    ));
    let after = w.launch_in("e3", s, 1, None).await.unwrap();
    assert_eq!(
        after.status,
        launch_run::LaunchStatus::Launched,
        "{}",
        after.message
    );
}

/// G1: Step Functions retries a launch after `ClientExecutionTimeout` while
/// the first invocation still runs; both start a task (the first on Spot,
/// the retry on-demand after its fallback). The first to record its task
/// wins; the other never overwrites it and stops its own task at once.
#[tokio::test]
async fn a_second_launch_of_one_attempt_never_replaces_the_first_ones_task() {
    let w = World::new();
    let first = "arn:aws:ecs:us-east-1:123456789012:task/data-jobs/the-first-launch".to_string();
    w.store.race_next_change_to(
        RunStatus::Running,
        RunChange {
            task_arn: Some(first.clone()),
            capacity: Some(Capacity::Spot),
            ..RunChange::to(RunStatus::Running)
        },
    );
    let out = w.launch(spec(json!({})), 1, None).await.unwrap();
    assert_eq!(out.task_arn.as_deref(), Some(first.as_str()), "{out:?}");
    let run = w.store.get_run(&out.run_id).await.unwrap().unwrap();
    assert_eq!(run.task_arn.as_deref(), Some(first.as_str()));
    let ours = w.tasks.launches().len();
    assert_eq!(ours, 1);
    let stops = w.tasks.stops();
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_ne!(stops[0].0, first, "the recorded task keeps running");
    assert!(stops[0].1.contains("second launch"), "{stops:?}");
}

/// G6: the execution is stopped while launch-run is in flight; the reaper
/// cancels the PENDING run before RunTask returns. The launch stops the task
/// it just started, and the execution's slot stays held through its stop
/// grace (so the job's next run cannot start beside it).
#[tokio::test]
async fn a_launch_whose_run_was_cancelled_meanwhile_stops_its_task() {
    let w = World::new();
    w.store.race_next_change_to(
        RunStatus::Running,
        RunChange {
            stop_request: Some(stevedore_domain::failure::StopRequest::Cancelled),
            outcome: Some(Outcome::failed(
                FailureClass::StoppedByUser,
                "the execution ended ABORTED",
                None,
            )),
            ..RunChange::to(RunStatus::Cancelled)
        },
    );
    let err = w.launch(spec(json!({})), 1, None).await.unwrap_err();
    assert_eq!(err.class, FailureClass::StoppedByUser, "{err}");
    let launched = w.tasks.launches();
    assert_eq!(launched.len(), 1);
    let stops = w.tasks.stops();
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert!(stops[0].1.contains("ended CANCELLED"), "{stops:?}");
    let slots = w.store.held_slots();
    assert_eq!(slots.len(), 1, "{slots:?}");
    let now = stevedore_domain::ports::Clock::now(w.clock.as_ref());
    assert_eq!(
        slots[0].3,
        now + Duration::seconds(stevedore_domain::flow::STOP_GRACE_SECONDS),
        "held through the stop grace, no longer"
    );
}

/// G6: the reaper of an execution whose run is still PENDING (its launch may
/// be in flight) holds the slot through the stop grace instead of freeing
/// it, so a task the launch starts after the reap cannot overlap the next run.
#[tokio::test]
async fn the_reaper_holds_a_pending_runs_slot_through_the_stop_grace() {
    let w = World::new();
    w.store.fail_next_change_to(
        RunStatus::Running,
        Error::transient("the launch is still in flight"),
        FaultTiming::Before,
    );
    let _ = w.launch(spec(json!({})), 1, None).await.unwrap_err();
    w.reap("e1", "ABORTED").await.unwrap();
    let slots = w.store.held_slots();
    assert_eq!(slots.len(), 1, "the slot is held, not freed: {slots:?}");
    let now = stevedore_domain::ports::Clock::now(w.clock.as_ref());
    assert_eq!(
        slots[0].3,
        now + Duration::seconds(stevedore_domain::flow::STOP_GRACE_SECONDS)
    );
}

/// A failed launch whose attempt has a task running after all (started by a
/// concurrent invocation of the launch) is watched, not stopped: record-run
/// adopts it, the run names it, and nothing is recorded as failed.
#[tokio::test]
async fn a_failed_launch_adopts_the_task_a_concurrent_launch_started() {
    let w = World::new();
    let s = spec(json!({"retry": {"maxAttempts": 2}}));
    // The concurrent invocation's task: started, not yet recorded.
    w.store.fail_next_change_to(
        RunStatus::Running,
        Error::transient("answer lost"),
        FaultTiming::Before,
    );
    let _ = w.launch(s.clone(), 1, None).await.unwrap_err();
    let arn = w.tasks.tasks.lock().unwrap().keys().next().unwrap().clone();
    let mut t = w.tasks.tasks.lock().unwrap()[&arn].clone();
    t.last_status = "RUNNING".into();
    t.desired_status = Some("RUNNING".into());
    w.tasks.set_task(t);
    // This invocation's own RunTask had failed.
    let err = Error::new(FailureClass::CapacityUnavailable, "no Spot capacity");
    let out = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap();
    assert_eq!(out.adopted.as_deref(), Some(arn.as_str()), "{out:?}");
    assert!(!out.retry && !out.notify, "{out:?}");
    assert!(w.tasks.stops().is_empty(), "{:?}", w.tasks.stops());
    let run = w
        .store
        .get_run(&out.run_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.task_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(w.store.held_slots().len(), 1, "the attempt keeps its slot");
    // Launching again (what the state machine does next) returns that task.
    let again = w.launch(s, 1, None).await.unwrap();
    assert_eq!(again.task_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(w.tasks.launches().len(), 1, "no second RunTask");
}

/// Past the deadline a failed launch's task is stopped, not adopted.
#[tokio::test]
async fn a_failed_launch_past_the_deadline_does_not_adopt() {
    let w = World::new();
    let s = spec(json!({"timeout": "10m"}));
    w.store.fail_next_change_to(
        RunStatus::Running,
        Error::transient("answer lost"),
        FaultTiming::Before,
    );
    let _ = w.launch(s.clone(), 1, None).await.unwrap_err();
    let arn = w.tasks.tasks.lock().unwrap().keys().next().unwrap().clone();
    let mut t = w.tasks.tasks.lock().unwrap()[&arn].clone();
    t.last_status = "RUNNING".into();
    w.tasks.set_task(t);
    w.clock.advance(Duration::minutes(11));
    let err = Error::new(FailureClass::CapacityUnavailable, "no Spot capacity");
    let out = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .unwrap();
    assert_eq!(out.adopted, None);
    assert_eq!(out.status, RunStatus::Failed);
    assert_eq!(w.tasks.stops().len(), 1);
}

/// A launch retried through a long outage that only gets to RunTask after
/// the attempt's deadline starts nothing: the attempt timed out.
#[tokio::test]
async fn a_launch_past_the_attempts_deadline_starts_no_task() {
    let w = World::new();
    let s = spec(json!({"timeout": "10m"}));
    w.store.fail_next_change_to(
        RunStatus::Running,
        Error::transient("UpdateItem timed out"),
        FaultTiming::Before,
    );
    // The run is written, then its launch is cut short before any task.
    w.tasks
        .fail_next_launch(Error::transient("RunTask: timed out"));
    let _ = w.launch(s.clone(), 1, None).await.unwrap_err();
    w.clock.advance(Duration::minutes(11));
    let err = w.launch(s, 1, None).await.unwrap_err();
    assert_eq!(err.class, FailureClass::TimedOut, "{err}");
    assert!(err.message.contains("deadline"), "{err}");
    assert_eq!(w.tasks.launches().len(), 1, "no RunTask past the deadline");
}

/// The reaper of an execution whose attempt record-run has just recorded
/// (stopping its task) keeps the slot through the stop grace, instead of
/// freeing what record-run cut to that grace (simulator seed 15837).
#[tokio::test]
async fn the_reaper_keeps_a_just_stopped_tasks_grace() {
    let w = World::new();
    let s = spec(json!({}));
    let out = w.launch(s.clone(), 1, None).await.unwrap();
    let err = Error::new(FailureClass::Transient, "the watch failed");
    let mut input = caught(&s, &err);
    input["launch"] = json!({"runId": out.run_id, "taskArn": out.task_arn});
    let mut t = w.tasks.tasks.lock().unwrap()[out.task_arn.as_deref().unwrap()].clone();
    t.last_status = "RUNNING".into();
    w.tasks.set_task(t);
    let rec = record_run::function_handler(&w.record_deps(), input)
        .await
        .unwrap();
    assert_eq!(rec.status, RunStatus::Failed);
    assert_eq!(w.tasks.stops().len(), 1, "record-run stopped the task");
    w.clock.advance(Duration::seconds(5));
    w.reap("e1", "FAILED").await.unwrap();
    let slots = w.store.held_slots();
    assert_eq!(slots.len(), 1, "still held through the grace: {slots:?}");
}

#[tokio::test]
async fn a_run_names_only_its_own_jobs_task_definition_or_one_listed_by_hand() {
    let w = World::new();
    let mut deps = w.launch_deps();
    deps.config.task_definitions = Some(
        launch_run::TaskDefinitions::parse(
            "prod",
            "arn:aws:ecs:us-east-1:123456789012:task-definition/etl-*, arn:aws:ecs:us-east-1:123456789012:task-definition/report:*",
        )
        .expect("valid list"),
    );
    let input = |execution: &str, job: &str, td: &str| {
        json!({
            "spec": {"job": job, "taskDefinition": td, "container": "app"},
            "execution": World::execution(execution),
            "attempt": 1
        })
    };
    for (td, why) in [
        ("stevedore-prod_payroll:4", "job `payroll`'s definition"),
        (
            "arn:aws:ecs:us-east-1:123456789012:task-definition/stevedore-prod-x_orders:1",
            "family `stevedore-prod_orders`",
        ),
        ("admin-tools:1", "TaskDefinitionArns"),
        ("report-admin:1", "TaskDefinitionArns"),
    ] {
        let err = launch_run::function_handler(&deps, input("e1", "orders", td))
            .await
            .expect_err(td);
        assert_eq!(err.class, FailureClass::InvalidJobSpec, "{td}: {err}");
        assert!(err.message.contains(why), "{td}: {err}");
    }
    assert!(w.tasks.launches().is_empty(), "no task started");

    for (execution, job, td) in [
        ("e2", "orders", "stevedore-prod_orders:2"),
        ("e3", "reports", "etl-python:7"),
        (
            "e4",
            "payroll",
            "arn:aws:ecs:us-east-1:123456789012:task-definition/report:9",
        ),
    ] {
        launch_run::function_handler(&deps, input(execution, job, td))
            .await
            .unwrap_or_else(|e| panic!("{td}: {e}"));
    }
    assert_eq!(w.tasks.launches().len(), 3);

    for bad in [
        "etl-*",
        "arn:aws:ecs:us-east-1:123456789012:task-definition/etl",
        "arn:aws:ecs:us-east-1:123456789012:task-definition/etl:x",
        "arn:aws:s3:::bucket/task-definition/etl:*",
    ] {
        let err = launch_run::TaskDefinitions::parse("prod", bad).expect_err(bad);
        assert!(err.contains("TASK_DEFINITIONS"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn a_second_start_for_one_scheduled_time_is_skipped_without_a_task() {
    let w = World::new();
    // Room for all: only the scheduled time may keep one out.
    let scheduled = spec(json!({
        "scheduledTime": "2026-11-24T06:00:00Z",
        "logicalTime": "2026-11-24T06:00:00Z",
        "concurrency": {"max": 4}
    }));
    let first = w
        .launch_in("e1", scheduled.clone(), 1, None)
        .await
        .expect("first");
    assert_eq!(first.status, launch_run::LaunchStatus::Launched);
    let second = w
        .launch_in("e2", scheduled.clone(), 1, None)
        .await
        .expect("second");
    assert_eq!(second.status, launch_run::LaunchStatus::Skipped);
    assert!(second.message.contains("e1"), "{}", second.message);
    assert_eq!(w.tasks.launches().len(), 1, "the duplicate started no task");
    let run = w
        .store
        .get_run(&second.run_id)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(run.status, RunStatus::Skipped);
    assert!(
        w.store.held_slots().iter().all(|s| !s.2.ends_with("e2")),
        "no slot for it"
    );

    // The first execution's own retries go on.
    let retry = w
        .launch_in("e1", scheduled.clone(), 2, None)
        .await
        .expect("attempt 2");
    assert_eq!(retry.status, launch_run::LaunchStatus::Launched);
    // Another scheduled time, and a start without one, are not held back.
    let mut next = scheduled.clone();
    next["scheduledTime"] = json!("2026-11-25T06:00:00Z");
    let other = w.launch_in("e3", next, 1, None).await.expect("next day");
    assert_eq!(other.status, launch_run::LaunchStatus::Launched);
    // A day and more later (past Scheduler's retries), the time is free again.
    w.clock.advance(Duration::hours(26));
    let late = w.launch_in("e4", scheduled, 1, None).await.expect("late");
    assert_eq!(late.status, launch_run::LaunchStatus::Launched);
}

/// record-run stopped the task a failed launch left running, recorded the
/// failure, and its answer was lost: the retried invocation finds the run
/// FAILED, and the next attempt still waits out the stopped task's grace
/// (simulator seed 8374 started it 12 s after the stop, beside it).
#[tokio::test]
async fn a_retried_record_of_a_stopped_stray_task_still_waits_out_its_grace() {
    let w = World::new();
    let s = spec(
        json!({"timeout": "10m", "retry": {"maxAttempts": 2, "on": ["TimedOut"], "delay": "10s"}}),
    );
    w.store.fail_next_change_to(
        RunStatus::Running,
        Error::transient("UpdateItem timed out"),
        FaultTiming::Before,
    );
    let err = w.launch(s.clone(), 1, None).await.unwrap_err();
    w.clock.advance(Duration::minutes(11));
    w.store.fail_next_change_to(
        RunStatus::Failed,
        Error::transient("UpdateItem timed out"),
        FaultTiming::After,
    );
    record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .expect_err("the answer is lost");
    assert_eq!(w.tasks.stops().len(), 1, "the stray task was asked to stop");
    let rec = record_run::function_handler(&w.record_deps(), caught(&s, &err))
        .await
        .expect("recorded again");
    assert_eq!(rec.status, RunStatus::Failed);
    assert!(rec.retry);
    let grace = stevedore_domain::flow::STOP_GRACE_SECONDS as u64;
    assert!(
        rec.retry_delay_seconds.is_some_and(|d| d >= grace),
        "the next attempt waits {:?} s, not the {grace} s of the stop's grace",
        rec.retry_delay_seconds
    );
}
