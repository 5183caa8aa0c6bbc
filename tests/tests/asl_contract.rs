//! The state machines and the Rust handlers agree: every error name the ASL
//! matches is a failure class (or a runtime error) and every failure class is
//! handled; every `${...}` has a substitution in template.yaml; every field a
//! Choice (or a Wait) reads is produced by the handlers with the JSON type
//! it is compared as. The handler outputs checked are real ones, from the
//! handlers run on in-memory ports.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use stevedore_domain::cost::PriceTable;
use stevedore_domain::memory::{
    FakeTaskRunner, ManualClock, MemoryRunStore, RecordingNotifier, RecordingTaskTokens,
};
use stevedore_domain::ports::NoLogs;
use stevedore_domain::task::{ContainerState, TaskDescription};
use stevedore_domain::{Error, FailureClass};
use stevedore_integration_tests::asl::{check, placeholders, substitutions, Samples};
use time::macros::datetime;

fn repo(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn samples() -> Samples {
    let tasks = Arc::new(FakeTaskRunner::default());
    let store = Arc::new(MemoryRunStore::new());
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-24 06:00:00 UTC)));
    let launch = launch_run::Deps {
        tasks: tasks.clone(),
        runs: store.clone(),
        clock: clock.clone(),
        config: launch_run::Config::default(),
    };
    let watch = watch_task::Deps {
        tasks: tasks.clone(),
        runs: store.clone(),
        tokens: Arc::new(RecordingTaskTokens::default()),
        clock: clock.clone(),
        config: watch_task::Config::default(),
    };
    let record = record_run::Deps {
        runs: store.clone(),
        tasks: tasks.clone(),
        clock: clock.clone(),
        prices: PriceTable::builtin(),
        region: "us-east-1".into(),
    };
    let notify = notify_failure::Deps {
        runs: store.clone(),
        notifier: Arc::new(RecordingNotifier::default()),
        logs: Arc::new(NoLogs),
    };
    let exec = |name: &str| json!({"id": format!("arn:aws:states:us-east-1:1:execution:run-job:{name}"), "name": name, "startTime": "2026-11-24T06:00:00Z"});
    let spec = |job: &str, extra: Value| {
        let mut s = json!({"job": job, "taskDefinition": "etl:3", "container": "app", "capacity": "spot-with-fallback", "retry": {"maxAttempts": 2}});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            s[k] = v;
        }
        s
    };
    let stop = |arn: &str, code: &str, exit: Option<i32>| {
        tasks.set_task(TaskDescription {
            task_arn: arn.into(),
            last_status: "STOPPED".into(),
            stop_code: Some(code.into()),
            containers: vec![ContainerState {
                name: "app".into(),
                exit_code: exit,
                ..Default::default()
            }],
            ..Default::default()
        })
    };
    let mut launches = Vec::new();
    let mut records = Vec::new();
    let mut notes = Vec::new();

    // Succeeds.
    let state = json!({"spec": spec("ok", json!({})), "execution": exec("ok"), "attempt": 1});
    let out = launch_run::function_handler(&launch, state.clone())
        .await
        .unwrap();
    stop(
        out.task_arn.as_deref().unwrap(),
        "EssentialContainerExited",
        Some(0),
    );
    let launched = serde_json::to_value(&out).unwrap();
    watch_task::function_handler(&watch, json!({"runId": out.run_id}))
        .await
        .unwrap();
    let mut st = state.clone();
    st["launch"] = launched.clone();
    records.push(
        serde_json::to_value(record_run::function_handler(&record, st).await.unwrap()).unwrap(),
    );
    launches.push(launched);

    // Spot interruption on attempt 1 of 2: retried.
    let state = json!({"spec": spec("spot", json!({})), "execution": exec("spot"), "attempt": 1});
    let out = launch_run::function_handler(&launch, state.clone())
        .await
        .unwrap();
    stop(out.task_arn.as_deref().unwrap(), "SpotInterruption", None);
    watch_task::function_handler(&watch, json!({"runId": out.run_id}))
        .await
        .unwrap();
    let mut st = state.clone();
    st["launch"] = serde_json::to_value(&out).unwrap();
    records.push(
        serde_json::to_value(record_run::function_handler(&record, st).await.unwrap()).unwrap(),
    );

    // Exit 3 on the last attempt: fails and alerts.
    let state = json!({"spec": spec("exit3", json!({})), "execution": exec("exit3"), "attempt": 2});
    let out = launch_run::function_handler(&launch, state.clone())
        .await
        .unwrap();
    stop(
        out.task_arn.as_deref().unwrap(),
        "EssentialContainerExited",
        Some(3),
    );
    watch_task::function_handler(&watch, json!({"runId": out.run_id}))
        .await
        .unwrap();
    let mut st = state.clone();
    st["launch"] = serde_json::to_value(&out).unwrap();
    let rec = serde_json::to_value(
        record_run::function_handler(&record, st.clone())
            .await
            .unwrap(),
    )
    .unwrap();
    st["record"] = rec.clone();
    records.push(rec);
    notes.push(
        serde_json::to_value(notify_failure::function_handler(&notify, st).await.unwrap()).unwrap(),
    );

    // Skipped: the slot is taken.
    let state = json!({"spec": spec("spot", json!({})), "execution": exec("other"), "attempt": 1});
    let skipped = launch_run::function_handler(&launch, state).await.unwrap();
    assert_eq!(skipped.status, launch_run::LaunchStatus::Skipped);
    // The wait completes at once and the record says SKIPPED.
    let mut st = json!({"launch": {"runId": skipped.run_id}});
    st["launch"]["runId"] = json!(skipped.run_id);
    records.push(
        serde_json::to_value(
            record_run::function_handler(&record, json!({"input": st, "execution": exec("other")}))
                .await
                .unwrap(),
        )
        .unwrap(),
    );
    launches.push(serde_json::to_value(skipped).unwrap());

    // A launch that failed (capacity) and one that never validated.
    tasks.fail_next_launch(Error::new(FailureClass::CapacityUnavailable, "no capacity"));
    tasks.fail_next_launch(Error::new(FailureClass::CapacityUnavailable, "no capacity"));
    let state = json!({"spec": spec("cap", json!({})), "execution": exec("cap"), "attempt": 1});
    let err = launch_run::function_handler(&launch, state.clone())
        .await
        .unwrap_err();
    let mut st = state;
    st["error"] = json!({"Error": err.class.as_str(), "Cause": err.message});
    records.push(
        serde_json::to_value(record_run::function_handler(&record, st).await.unwrap()).unwrap(),
    );
    let bad = json!({"spec": {"job": "bad", "cpu": 3}, "execution": exec("bad"), "attempt": 1, "error": {"Error": "InvalidJobSpec", "Cause": "bad"}});
    let rec = serde_json::to_value(
        record_run::function_handler(&record, bad.clone())
            .await
            .unwrap(),
    )
    .unwrap();
    let mut st = bad;
    st["record"] = rec.clone();
    records.push(rec);
    notes.push(
        serde_json::to_value(notify_failure::function_handler(&notify, st).await.unwrap()).unwrap(),
    );

    Samples::from([
        ("LaunchRunFunctionArn".to_string(), launches),
        ("RecordRunFunctionArn".to_string(), records),
        ("NotifyFailureFunctionArn".to_string(), notes),
    ])
}

fn template_subs() -> std::collections::BTreeSet<String> {
    substitutions(&repo("template.yaml"), "RunJobStateMachine")
}

#[tokio::test]
async fn the_run_job_state_machine_keeps_its_contract_with_the_handlers() {
    let text = repo("statemachines/run-job.asl.json");
    let subs = template_subs();
    assert!(
        subs.contains("LaunchRunFunctionArn") && subs.contains("ClusterArn"),
        "{subs:?}"
    );
    assert_eq!(
        placeholders(&text),
        subs,
        "every substitution is used and every placeholder substituted"
    );
    let problems = check(&text, &subs, &samples().await);
    assert!(problems.is_empty(), "{problems:#?}");
}

fn definition() -> Value {
    serde_json::from_str(&repo("statemachines/run-job.asl.json")).unwrap()
}

async fn problems_of(def: &Value) -> Vec<String> {
    check(&def.to_string(), &template_subs(), &samples().await)
}

#[tokio::test]
async fn an_error_name_rust_does_not_know_fails_the_check() {
    let mut def = definition();
    def["States"]["Record run"]["Retry"][1]["ErrorEquals"] =
        json!(["Throttled", "Transient", "Gremlins"]);
    let problems = problems_of(&def).await;
    assert!(
        problems.iter().any(|p| p.contains("`Gremlins`")),
        "{problems:#?}"
    );
}

#[tokio::test]
async fn a_broken_next_or_placeholder_fails_the_check() {
    let mut def = definition();
    def["States"]["Wait for task"]["Next"] = json!("Record teh run");
    let problems = problems_of(&def).await;
    assert!(
        problems
            .iter()
            .any(|p| p.contains("Next `Record teh run` is not a state")),
        "{problems:#?}"
    );

    let text =
        repo("statemachines/run-job.asl.json").replacen("${ClusterArn}", "${ClusterName}", 1);
    let problems = check(&text, &template_subs(), &samples().await);
    assert!(
        problems.iter().any(|p| p.contains("${ClusterName}")),
        "{problems:#?}"
    );
}

#[tokio::test]
async fn a_choice_on_a_field_or_value_rust_does_not_produce_fails_the_check() {
    let choices = |def: &Value| {
        def["States"]["Retry or finish?"]["Choices"]
            .as_array()
            .unwrap()
            .clone()
    };
    let mut def = definition();
    let mut c = choices(&def);
    let i = c
        .iter()
        .position(|r| r["StringEquals"] == json!("SUCCEEDED"))
        .unwrap();
    c[i]["StringEquals"] = json!("SUCCESS");
    def["States"]["Retry or finish?"]["Choices"] = Value::Array(c);
    let problems = problems_of(&def).await;
    assert!(
        problems.iter().any(|p| p.contains("\"SUCCESS\"")),
        "{problems:#?}"
    );

    let text = repo("statemachines/run-job.asl.json").replace(
        "\"retry.$\": \"$.Payload.retry\"",
        "\"retry.$\": \"$.Payload.retrying\"",
    );
    let problems = check(&text, &template_subs(), &samples().await);
    assert!(
        problems.iter().any(|p| p.contains("`retrying`")),
        "{problems:#?}"
    );

    let mut def = definition();
    let mut c = choices(&def);
    c[0] = json!({"Variable": "$.record.retry", "StringEquals": "true", "Next": "Wait before next attempt"});
    def["States"]["Retry or finish?"]["Choices"] = Value::Array(c);
    let problems = problems_of(&def).await;
    assert!(
        problems.iter().any(|p| p.contains("$.record.retry")),
        "{problems:#?}"
    );

    let mut def = definition();
    def["States"]["Wait for task"]["TimeoutSecondsPath"] = json!("$.launch.checkEvery");
    let problems = problems_of(&def).await;
    assert!(
        problems.iter().any(|p| p.contains("$.launch.checkEvery")),
        "{problems:#?}"
    );
}

#[tokio::test]
async fn a_lambda_task_without_a_catch_for_every_class_fails_the_check() {
    let mut def: Value = serde_json::from_str(&repo("statemachines/run-job.asl.json")).unwrap();
    def["States"]["Record run"]["Catch"][0]["ErrorEquals"] = json!(["ExitedNonZero"]);
    let problems = check(&def.to_string(), &template_subs(), &samples().await);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`Record run`") && p.contains("does not handle `InvalidJobSpec`")),
        "{problems:#?}"
    );
}
