//! Logical time through the handlers: what launch-run records and launches
//! for a spec with and without `logicalTime`, and that a retry keeps it
//! (a rerun keeps it too: `cli/tests/operate.rs`; a schedule fills it:
//! `job_template.rs`).

use serde_json::{json, Value};
use stevedore_domain::logical::format_logical;
use stevedore_domain::ports::RunStore;
use stevedore_integration_tests::world::MemoryWorld as World;

fn spec(extra: Value) -> Value {
    let mut s = json!({
        "job": "daily_load",
        "taskDefinition": "etl:3",
        "container": "app",
        "command": ["load", "--day", "${logicalDate}", "--hour=${logicalHour}"],
        "environment": {"PARTITION": "dt=${logicalYear}-${logicalMonth}-${logicalDay}", "LITERAL": "$${HOME}"},
        "retry": {"maxAttempts": 2, "on": ["ExitedNonZero"]},
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    s
}

async fn logical_time_of(w: &World, run_id: &str) -> String {
    let run = w.store.get_run(run_id).await.unwrap().unwrap();
    format_logical(run.logical_time.expect("recorded"))
}

#[tokio::test]
async fn the_specs_logical_time_is_launched_filled_and_kept_by_the_retry() {
    let w = World::new();
    let s = spec(json!({"logicalTime": "2026-11-01T06:00:00Z"}));
    let first = w.launch(s.clone(), 1, None).await.unwrap();
    let second = w.launch(s, 2, None).await.unwrap();
    assert_eq!(
        logical_time_of(&w, &first.run_id).await,
        "2026-11-01T06:00:00Z"
    );
    assert_eq!(
        logical_time_of(&w, &second.run_id).await,
        "2026-11-01T06:00:00Z"
    );
    for launch in w.tasks.launches() {
        assert_eq!(
            launch.spec.command.as_deref().unwrap(),
            ["load", "--day", "2026-11-01", "--hour=06"]
        );
        assert_eq!(launch.spec.environment["PARTITION"], "dt=2026-11-01");
        assert_eq!(launch.spec.environment["LITERAL"], "${HOME}");
        let env: Vec<(&str, String)> = launch.run_env();
        assert!(
            env.contains(&("STEVEDORE_LOGICAL_TIME", "2026-11-01T06:00:00Z".into())),
            "{env:?}"
        );
        assert!(
            env.contains(&("STEVEDORE_LOGICAL_DATE", "2026-11-01".into())),
            "{env:?}"
        );
    }
    // The record keeps the spec as given: a rerun fills it again.
    let run = w.store.get_run(&first.run_id).await.unwrap().unwrap();
    assert_eq!(run.spec["command"][2], json!("${logicalDate}"));
}

#[tokio::test]
async fn without_one_it_is_the_executions_start_for_every_attempt() {
    let w = World::new();
    // MemoryWorld's executions start at 2026-11-24T06:00:00Z; the clock moves on.
    let first = w.launch(spec(json!({})), 1, None).await.unwrap();
    w.clock.advance(time::Duration::hours(3));
    let second = w.launch(spec(json!({})), 2, None).await.unwrap();
    assert_eq!(
        logical_time_of(&w, &first.run_id).await,
        "2026-11-24T06:00:00Z"
    );
    assert_eq!(
        logical_time_of(&w, &second.run_id).await,
        "2026-11-24T06:00:00Z"
    );
    let launches = w.tasks.launches();
    assert_eq!(
        launches[1].spec.command.as_deref().unwrap()[2],
        "2026-11-24"
    );
}

#[tokio::test]
async fn an_unknown_placeholder_is_an_invalid_job_spec() {
    let w = World::new();
    let err = w
        .launch(
            spec(json!({"command": ["echo", "${logicalWeek}"]})),
            1,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.class, stevedore_domain::FailureClass::InvalidJobSpec);
    assert!(
        err.message.contains("command[1]") && err.message.contains("${logicalWeek}"),
        "{}",
        err.message
    );
    let err = w
        .launch(spec(json!({"logicalTime": "yesterday"})), 1, None)
        .await
        .unwrap_err();
    assert!(
        err.message.contains("logicalTime") && err.message.contains("RFC 3339"),
        "{}",
        err.message
    );
    assert!(w.tasks.launches().is_empty());
}
