//! The control plane of local mode on virtual time, for the tests: the real
//! run-job definition and handlers, simulated tasks, SQLite in memory.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::{RunQuery, RunRecord};
use stevedore_local::tasks::SimScript;
use stevedore_local::{
    ConsoleNotifier, LocalClock, LocalPlane, PlaneConfig, SimulatedTaskRunner, SqliteRunStore,
};
use time::macros::datetime;

pub struct World {
    pub plane: LocalPlane,
    pub runner: Arc<SimulatedTaskRunner>,
    pub store: Arc<SqliteRunStore>,
    pub notifier: Arc<ConsoleNotifier>,
    pub printed: Arc<Mutex<Vec<String>>>,
}

pub fn world(script: SimScript) -> World {
    world_with(script, PlaneConfig::default())
}

pub fn world_with(script: SimScript, config: PlaneConfig) -> World {
    let clock = Arc::new(LocalClock::new(datetime!(2026-11-24 06:00:00 UTC)));
    let runner = Arc::new(SimulatedTaskRunner::new(clock.clone(), script));
    let store = Arc::new(SqliteRunStore::in_memory().unwrap());
    let printed = Arc::new(Mutex::new(Vec::new()));
    let sink = printed.clone();
    let notifier = Arc::new(ConsoleNotifier::new(
        Arc::new(move |s: &str| sink.lock().unwrap().push(s.to_string())),
        None,
    ));
    let plane = LocalPlane::new(
        store.clone(),
        runner.clone(),
        notifier.clone(),
        clock,
        config,
    )
    .unwrap();
    World {
        plane,
        runner,
        store,
        notifier,
        printed,
    }
}

/// A job spec for the job `orders`, with `extra` fields on top.
pub fn spec(extra: Value) -> Value {
    let mut s = json!({"job": "orders", "taskDefinition": "etl", "container": "app", "command": ["python", "-m", "orders"], "timeout": "1h"});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    s
}

/// The runs of the job `orders`, by attempt.
pub async fn runs(w: &World) -> Vec<RunRecord> {
    let mut r = w
        .store
        .list_runs(&RunQuery {
            job: "orders".into(),
            status: None,
            limit: 50,
        })
        .await
        .unwrap();
    r.sort_by_key(|r| r.attempt);
    r
}
