//! The run store contract: what every [`RunStore`] (DynamoDB, in-memory, the
//! local engine's) must do, as one suite each implementation runs.

use serde_json::json;
use stevedore_domain::cost::CostEstimate;
use stevedore_domain::failure::{Outcome, StopRequest};
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::{
    ChangeOutcome, CreateOutcome, ExecutionRef, RunChange, RunQuery, RunRecord, SlotGrant,
};
use stevedore_domain::spec::{Capacity, JobSpec};
use stevedore_domain::task::{ContainerState, TaskDescription};
use stevedore_domain::{FailureClass, RunStatus};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::unique;

pub fn sample_run(
    job: &str,
    execution_id: &str,
    attempt: u32,
    created_at: OffsetDateTime,
) -> RunRecord {
    let spec =
        JobSpec::from_value(&json!({"job": job, "taskDefinition": "etl:3", "container": "app"}))
            .expect("spec");
    let execution = ExecutionRef {
        id: execution_id.to_string(),
        name: execution_id.rsplit(':').next().unwrap_or("x").to_string(),
        start_time: created_at,
    };
    RunRecord {
        run_id: stevedore_domain::run::run_id(job, &execution, attempt),
        job: job.to_string(),
        execution,
        attempt,
        max_attempts: 3,
        status: RunStatus::Pending,
        spec: spec.to_value(),
        capacity: Capacity::OnDemand,
        created_at,
        deadline: created_at + Duration::hours(1),
        task_arn: None,
        launched_at: None,
        task_token: None,
        stop_request: None,
        task: None,
        outcome: None,
        cost: None,
        finished_at: None,
        expires_at: (created_at + Duration::days(400)).unix_timestamp(),
        logical_time: None,
        notes: Vec::new(),
    }
}

fn stopped_task(arn: &str, exit: i32) -> TaskDescription {
    TaskDescription {
        task_arn: arn.to_string(),
        last_status: "STOPPED".into(),
        stop_code: Some("EssentialContainerExited".into()),
        stopped_reason: Some("Essential container in task exited".into()),
        containers: vec![ContainerState {
            name: "app".into(),
            exit_code: Some(exit),
            reason: None,
            last_status: Some("STOPPED".into()),
        }],
        cpu: Some("1024".into()),
        memory: Some("2048".into()),
        started_at: Some(datetime!(2026-11-24 06:00:00 UTC)),
        stopped_at: Some(datetime!(2026-11-24 06:10:00.5 UTC)),
        ..Default::default()
    }
}

async fn change(store: &dyn RunStore, id: &str, c: RunChange) -> ChangeOutcome {
    store.change_run(id, &c).await.expect("change_run")
}

/// Runs the whole contract against `store`.
pub async fn run_store_contract(store: &dyn RunStore) {
    create_and_get(store).await;
    transitions(store).await;
    listing(store).await;
    slots(store).await;
    notes(store).await;
    one_task_per_run(store).await;
    launch_claims(store).await;
    scheduled_starts(store).await;
}

/// One execution per job and scheduled time: the holder may claim again,
/// another execution is told who holds it until the claim runs out; other
/// times and other jobs are separate.
async fn scheduled_starts(store: &dyn RunStore) {
    let t0 = datetime!(2026-11-24 06:00:00 UTC);
    let until = t0 + time::Duration::hours(25);
    let job = unique("job");
    let at = "2026-11-24T06:00:00Z";
    let (e1, e2) = (unique("exec"), unique("exec"));
    let claim = |job: String, at: &'static str, who: String, until, now| async move {
        store
            .claim_scheduled_start(&job, at, &who, until, now)
            .await
            .unwrap()
    };
    assert_eq!(claim(job.clone(), at, e1.clone(), until, t0).await, None);
    let later = t0 + time::Duration::minutes(5);
    assert_eq!(
        claim(job.clone(), at, e1.clone(), until, later).await,
        None,
        "the holder again"
    );
    assert_eq!(
        claim(job.clone(), at, e2.clone(), until, later).await,
        Some(e1.clone()),
        "a second execution for the same time"
    );
    assert_eq!(
        claim(
            job.clone(),
            "2026-11-25T06:00:00Z",
            e2.clone(),
            until,
            later
        )
        .await,
        None
    );
    assert_eq!(
        claim(unique("job"), at, e2.clone(), until, later).await,
        None
    );
    let after = until + time::Duration::seconds(1);
    assert_eq!(
        claim(
            job.clone(),
            at,
            e2.clone(),
            after + time::Duration::hours(25),
            after
        )
        .await,
        None,
        "a claim run out is free"
    );
    assert_eq!(claim(job, at, e1, after, after).await, Some(e2));
}

/// A run names one task: a change naming another is refused, not applied
/// (two invocations of one launch racing), and leaves the first in place.
async fn one_task_per_run(store: &dyn RunStore) {
    let run = sample_run(
        &unique("job"),
        &format!("arn:aws:states:us-east-1:1:execution:m:{}", unique("e")),
        1,
        datetime!(2026-11-24 06:00:00 UTC),
    );
    store.create_run(&run).await.unwrap();
    let naming = |arn: &str| RunChange {
        task_arn: Some(arn.to_string()),
        ..RunChange::to(RunStatus::Running)
    };
    assert!(matches!(
        change(store, &run.run_id, naming("arn:task/first")).await,
        ChangeOutcome::Applied(_)
    ));
    // The same task again is an update in place (RUNNING may stay RUNNING).
    assert!(matches!(
        change(store, &run.run_id, naming("arn:task/first")).await,
        ChangeOutcome::Applied(_)
    ));
    match change(store, &run.run_id, naming("arn:task/second")).await {
        ChangeOutcome::Rejected(current) => {
            assert_eq!(current.task_arn.as_deref(), Some("arn:task/first"))
        }
        other => panic!("a second task replaced the first: {other:?}"),
    }
    let now = store.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(now.task_arn.as_deref(), Some("arn:task/first"));
}

/// One launch claim at a time on a PENDING run; an expired claim is free
/// again; a run that left PENDING cannot be claimed.
async fn launch_claims(store: &dyn RunStore) {
    let t0 = datetime!(2026-11-24 06:00:00 UTC);
    let run = sample_run(
        &unique("job"),
        &format!("arn:aws:states:us-east-1:1:execution:m:{}", unique("e")),
        1,
        t0,
    );
    store.create_run(&run).await.unwrap();
    let until = t0 + time::Duration::seconds(180);
    assert!(store.claim_launch(&run.run_id, until, t0).await.unwrap());
    let later = t0 + time::Duration::seconds(60);
    assert!(
        !store
            .claim_launch(&run.run_id, later + time::Duration::seconds(180), later)
            .await
            .unwrap(),
        "a live claim is not taken twice"
    );
    let after = t0 + time::Duration::seconds(181);
    assert!(
        store
            .claim_launch(&run.run_id, after + time::Duration::seconds(180), after)
            .await
            .unwrap(),
        "an expired claim is free"
    );
    change(
        store,
        &run.run_id,
        RunChange {
            task_arn: Some("arn:task/x".into()),
            ..RunChange::to(RunStatus::Running)
        },
    )
    .await;
    let much_later = t0 + time::Duration::hours(1);
    assert!(!store
        .claim_launch(&run.run_id, much_later, much_later)
        .await
        .unwrap());
    assert!(!store.claim_launch("no-such-run", until, t0).await.unwrap());
    // The claim does not show in the record.
    let now = store.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(now.status, RunStatus::Running);
}

async fn notes(store: &dyn RunStore) {
    let run = sample_run(
        &unique("job"),
        &format!("arn:aws:states:us-east-1:1:execution:m:{}", unique("e")),
        1,
        datetime!(2026-11-24 06:00:00 UTC),
    );
    store.create_run(&run).await.unwrap();
    let failed = RunChange {
        finished_at: Some(datetime!(2026-11-24 06:01:00 UTC)),
        ..RunChange::to(RunStatus::Failed)
    };
    change(store, &run.run_id, failed).await;
    // A note goes on whatever the status, and leaves the rest as it was.
    assert!(store.add_note(&run.run_id, "first").await.unwrap());
    assert!(store.add_note(&run.run_id, "second").await.unwrap());
    let now = store.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(now.notes, vec!["first".to_string(), "second".to_string()]);
    assert_eq!(now.status, RunStatus::Failed);
    assert!(now.finished_at.is_some());
    assert!(!store.add_note("no-such-run", "x").await.unwrap());
    assert_eq!(store.get_run("no-such-run").await.unwrap(), None);
}

async fn create_and_get(store: &dyn RunStore) {
    let job = unique("job");
    let run = sample_run(
        &job,
        &format!("arn:aws:states:us-east-1:1:execution:m:{}", unique("e")),
        1,
        datetime!(2026-11-24 06:00:00.123 UTC),
    );
    assert_eq!(
        store.create_run(&run).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(store.get_run(&run.run_id).await.unwrap(), Some(run.clone()));
    // A retried create finds the first record and changes nothing.
    let mut other = run.clone();
    other.max_attempts = 9;
    assert_eq!(
        store.create_run(&other).await.unwrap(),
        CreateOutcome::Exists(run.clone())
    );
    assert_eq!(store.get_run("no-such-run").await.unwrap(), None);
    assert_eq!(
        change(store, "no-such-run", RunChange::to(RunStatus::Running)).await,
        ChangeOutcome::NotFound
    );
}

async fn transitions(store: &dyn RunStore) {
    let job = unique("job");
    let run = sample_run(
        &job,
        &format!("arn:aws:states:us-east-1:1:execution:m:{}", unique("e")),
        1,
        datetime!(2026-11-24 06:00:00 UTC),
    );
    let id = run.run_id.clone();
    store.create_run(&run).await.unwrap();

    // A pending run may change its fields (the capacity of a fallback launch).
    let ChangeOutcome::Applied(r) = change(
        store,
        &id,
        RunChange {
            capacity: Some(Capacity::OnDemand),
            ..RunChange::to(RunStatus::Pending)
        },
    )
    .await
    else {
        panic!("PENDING -> PENDING with a capacity must apply");
    };
    assert_eq!(
        (r.status, r.capacity),
        (RunStatus::Pending, Capacity::OnDemand)
    );

    let launched = datetime!(2026-11-24 06:05:00.25 UTC);
    let ChangeOutcome::Applied(r) = change(
        store,
        &id,
        RunChange {
            task_arn: Some("arn:task/1".into()),
            launched_at: Some(launched),
            ..RunChange::to(RunStatus::Running)
        },
    )
    .await
    else {
        panic!("PENDING -> RUNNING must apply");
    };
    assert_eq!(
        (r.status, r.task_arn.as_deref(), r.launched_at),
        (RunStatus::Running, Some("arn:task/1"), Some(launched))
    );
    assert_eq!(
        store.get_run(&id).await.unwrap().unwrap().launched_at,
        Some(launched)
    );
    // Nothing goes back to PENDING.
    let ChangeOutcome::Rejected(_) = change(store, &id, RunChange::to(RunStatus::Pending)).await
    else {
        panic!("RUNNING -> PENDING must be rejected");
    };
    // An update in place (a new task token) keeps the status.
    let ChangeOutcome::Applied(r) = change(
        store,
        &id,
        RunChange {
            task_token: Some("token-2".into()),
            ..RunChange::to(RunStatus::Running)
        },
    )
    .await
    else {
        panic!("RUNNING -> RUNNING with a token must apply");
    };
    assert_eq!(r.task_token.as_deref(), Some("token-2"));
    assert_eq!(r.task_arn.as_deref(), Some("arn:task/1"));

    // No skipping the observation: RUNNING cannot become SUCCEEDED.
    let ChangeOutcome::Rejected(r) = change(store, &id, RunChange::to(RunStatus::Succeeded)).await
    else {
        panic!("RUNNING -> SUCCEEDED must be rejected");
    };
    assert_eq!(r.status, RunStatus::Running);

    let ChangeOutcome::Applied(r) = change(
        store,
        &id,
        RunChange {
            stop_request: Some(StopRequest::Timeout),
            ..RunChange::to(RunStatus::Stopping)
        },
    )
    .await
    else {
        panic!("RUNNING -> STOPPING must apply");
    };
    assert_eq!(r.stop_request, Some(StopRequest::Timeout));

    let outcome = Outcome::failed(
        FailureClass::ExitedNonZero,
        "container `app` exited with code 3",
        Some(3),
    );
    let observed = RunChange {
        task: Some(stopped_task("arn:task/1", 3)),
        outcome: Some(outcome.clone()),
        ..RunChange::to(RunStatus::Stopped)
    };
    let ChangeOutcome::Applied(r) = change(store, &id, observed.clone()).await else {
        panic!("STOPPING -> STOPPED must apply");
    };
    assert_eq!(r.task, Some(stopped_task("arn:task/1", 3)));
    assert_eq!(r.outcome, Some(outcome.clone()));
    // The same observation again is a replay, and changes nothing.
    let ChangeOutcome::Replayed(r2) = change(store, &id, observed).await else {
        panic!("STOPPED again must be a replay");
    };
    assert_eq!(r2, r);

    let cost = CostEstimate {
        usd: 0.0123,
        billed_seconds: 601,
        vcpu: 1.0,
        memory_gb: 2.0,
        spot: false,
        architecture: "x86_64".into(),
        region: "us-east-1".into(),
    };
    let fin = RunChange {
        cost: Some(cost.clone()),
        finished_at: Some(datetime!(2026-11-24 06:10:00.5 UTC)),
        ..RunChange::to(RunStatus::Failed)
    };
    let ChangeOutcome::Applied(done) = change(store, &id, fin.clone()).await else {
        panic!("STOPPED -> FAILED must apply");
    };
    assert_eq!(done.cost, Some(cost));
    assert_eq!(done.finished_at, Some(datetime!(2026-11-24 06:10:00.5 UTC)));
    // Terminal statuses are absorbing: replays are recognised, moves refused.
    assert_eq!(
        change(store, &id, fin).await,
        ChangeOutcome::Replayed(done.clone())
    );
    for to in [
        RunStatus::Succeeded,
        RunStatus::Cancelled,
        RunStatus::Running,
        RunStatus::Stopped,
        RunStatus::Pending,
    ] {
        assert_eq!(
            change(store, &id, RunChange::to(to)).await,
            ChangeOutcome::Rejected(done.clone()),
            "FAILED -> {to}"
        );
    }
    assert_eq!(store.get_run(&id).await.unwrap(), Some(done));
}

async fn listing(store: &dyn RunStore) {
    let job = unique("job");
    let other_job = unique("job");
    let t0 = datetime!(2026-11-20 00:00:00 UTC);
    let exec = format!("arn:aws:states:us-east-1:1:execution:m:{}", unique("e"));
    let mut ids = Vec::new();
    for day in 0..3 {
        let run = sample_run(&job, &format!("{exec}-{day}"), 1, t0 + Duration::days(day));
        store.create_run(&run).await.unwrap();
        ids.push(run.run_id);
    }
    let second_attempt = sample_run(
        &job,
        &format!("{exec}-0"),
        2,
        t0 + Duration::days(0) + Duration::minutes(5),
    );
    store.create_run(&second_attempt).await.unwrap();
    store
        .create_run(&sample_run(&other_job, &exec, 1, t0))
        .await
        .unwrap();
    change(store, &ids[1], RunChange::to(RunStatus::Running)).await;

    let all = store
        .list_runs(&RunQuery {
            job: job.clone(),
            status: None,
            limit: 10,
        })
        .await
        .unwrap();
    let got: Vec<_> = all.iter().map(|r| r.run_id.clone()).collect();
    assert_eq!(
        got,
        vec![
            ids[2].clone(),
            ids[1].clone(),
            second_attempt.run_id.clone(),
            ids[0].clone()
        ],
        "newest first"
    );
    let two = store
        .list_runs(&RunQuery {
            job: job.clone(),
            status: None,
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].run_id, ids[2]);
    let running = store
        .list_runs(&RunQuery {
            job: job.clone(),
            status: Some(RunStatus::Running),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        running
            .iter()
            .map(|r| r.run_id.as_str())
            .collect::<Vec<_>>(),
        vec![ids[1].as_str()]
    );
    let pending_one = store
        .list_runs(&RunQuery {
            job: job.clone(),
            status: Some(RunStatus::Pending),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(
        pending_one.len(),
        1,
        "a status filter still fills the limit"
    );

    let attempts = store.runs_of_execution(&format!("{exec}-0")).await.unwrap();
    assert_eq!(
        attempts.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(store
        .runs_of_execution("arn:nothing")
        .await
        .unwrap()
        .is_empty());
}

async fn slots(store: &dyn RunStore) {
    let job = unique("job");
    let now = datetime!(2026-11-24 06:00:00 UTC);
    let lease = now + Duration::hours(1);
    assert_eq!(
        store
            .acquire_slot(&job, "exec-a", 1, lease, now)
            .await
            .unwrap(),
        SlotGrant::Granted { slot: 0 }
    );
    assert_eq!(
        store
            .acquire_slot(&job, "exec-b", 1, lease, now)
            .await
            .unwrap(),
        SlotGrant::Busy {
            holders: vec!["exec-a".into()]
        }
    );
    // The holder asking again (a retried launch, the next attempt) keeps it.
    assert_eq!(
        store
            .acquire_slot(&job, "exec-a", 1, lease + Duration::hours(1), now)
            .await
            .unwrap(),
        SlotGrant::Granted { slot: 0 }
    );
    // Releasing someone else's slot does nothing.
    store.release_slot(&job, "exec-b").await.unwrap();
    assert!(matches!(
        store
            .acquire_slot(&job, "exec-b", 1, lease, now)
            .await
            .unwrap(),
        SlotGrant::Busy { .. }
    ));
    store.release_slot(&job, "exec-a").await.unwrap();
    assert_eq!(
        store
            .acquire_slot(&job, "exec-b", 1, lease, now)
            .await
            .unwrap(),
        SlotGrant::Granted { slot: 0 }
    );
    // An expired lease is free for the next execution.
    let later = lease + Duration::seconds(1);
    assert_eq!(
        store
            .acquire_slot(&job, "exec-c", 1, later + Duration::hours(1), later)
            .await
            .unwrap(),
        SlotGrant::Granted { slot: 0 }
    );

    let wide = unique("job");
    assert_eq!(
        store.acquire_slot(&wide, "x", 2, lease, now).await.unwrap(),
        SlotGrant::Granted { slot: 0 }
    );
    assert_eq!(
        store.acquire_slot(&wide, "y", 2, lease, now).await.unwrap(),
        SlotGrant::Granted { slot: 1 }
    );
    let SlotGrant::Busy { mut holders } =
        store.acquire_slot(&wide, "z", 2, lease, now).await.unwrap()
    else {
        panic!("two slots, two holders: the third must wait");
    };
    holders.sort();
    assert_eq!(holders, vec!["x".to_string(), "y".to_string()]);

    // One holder asking from concurrent invocations (a retried Lambda racing
    // the first) gets one slot, not several.
    let raced = unique("job");
    let ask = || store.acquire_slot(&raced, "exec-r", 3, lease, now);
    let (a, b, c, d, e, f) = tokio::join!(ask(), ask(), ask(), ask(), ask(), ask());
    let granted: std::collections::BTreeSet<u32> = [a, b, c, d, e, f]
        .into_iter()
        .map(|g| match g.expect("acquire_slot") {
            SlotGrant::Granted { slot } => slot,
            busy => panic!("the holder's own slot cannot be busy: {busy:?}"),
        })
        .collect();
    assert_eq!(granted.len(), 1, "one holder, one slot: {granted:?}");
    for other in ["exec-s", "exec-t"] {
        assert!(matches!(
            store
                .acquire_slot(&raced, other, 3, lease, now)
                .await
                .unwrap(),
            SlotGrant::Granted { .. }
        ));
    }
    assert!(matches!(
        store
            .acquire_slot(&raced, "exec-u", 3, lease, now)
            .await
            .unwrap(),
        SlotGrant::Busy { .. }
    ));
}
