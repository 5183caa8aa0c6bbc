//! Runs one job spec through the real handlers — launch → watch → task
//! event → record → notify — with the real AWS SDK against the emulators
//! `scripts/demo.sh` starts (moto server, DynamoDB Local).
//!
//! moto does not run containers: the task's exit is simulated (exit code 0,
//! or `--exit-code N`). `stevedore run` (local mode) runs the command for real.

use std::sync::Arc;

use serde_json::json;
use stevedore_domain::cost::PriceTable;
use stevedore_domain::memory::ManualClock;
use stevedore_domain::ports::{Clock, NoLogs, RunStore};
use stevedore_domain::run::ExecutionRef;
use stevedore_domain::JobSpec;
use stevedore_integration_tests::{
    run_store, unique, AlertsFixture, CapturingTokens, EcsFixture, REGION,
};
use time::OffsetDateTime;

fn step(text: &str) {
    println!("  \u{2192} {text}");
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut exit_code = 0;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exit-code" => {
                exit_code = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--exit-code needs a number")?;
            }
            "-h" | "--help" => {
                println!("usage: demo <job.json> [--exit-code N]");
                return Ok(());
            }
            other => path = Some(other.to_string()),
        }
    }
    let path = path.ok_or("usage: demo <job.json> [--exit-code N]")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let spec = JobSpec::parse(&text).map_err(|e| format!("{path}: {e}"))?;
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let moto = std::env::var("STEVEDORE_TEST_MOTO")
        .map_err(|_| "STEVEDORE_TEST_MOTO is not set: run scripts/demo.sh")?;
    let ddb = std::env::var("STEVEDORE_TEST_DYNAMODB")
        .map_err(|_| "STEVEDORE_TEST_DYNAMODB is not set: run scripts/demo.sh")?;

    let family = spec
        .task_definition
        .split(':')
        .next()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let ecs = EcsFixture::with_family(&moto, &family).await;
    let store = Arc::new(run_store(&ddb).await);
    let tokens = CapturingTokens::new(&moto).await;
    let alerts = AlertsFixture::new(&moto).await;
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let runner = Arc::new(ecs.runner());
    let name = unique("demo");
    let execution = ExecutionRef {
        id: format!("arn:aws:states:{REGION}:123456789012:execution:run-job:{name}"),
        name,
        start_time: clock.now(),
    };
    println!(
        "job {} ({path}) on emulated AWS (moto + DynamoDB Local)",
        spec.job
    );

    let launch = launch_run::Deps {
        tasks: runner.clone(),
        runs: store.clone(),
        clock: clock.clone(),
        config: launch_run::Config::default(),
    };
    let launched = launch_run::function_handler(
        &launch,
        json!({"spec": raw, "execution": execution, "attempt": 1}),
    )
    .await
    .map_err(|e| e.to_string())?;
    step(&format!(
        "Launch task: run {} — {}",
        launched.run_id, launched.message
    ));
    let Some(task_arn) = launched.task_arn.clone() else {
        println!("skipped: {}", launched.message);
        return Ok(());
    };
    let watch = watch_task::Deps {
        tasks: runner.clone(),
        runs: store.clone(),
        tokens: tokens.clone(),
        clock: clock.clone(),
        config: watch_task::Config::default(),
    };
    let watched = watch_task::function_handler(
        &watch,
        json!({"runId": launched.run_id, "taskToken": "demo-token"}),
    )
    .await
    .map_err(|e| e.to_string())?;
    step(&format!(
        "Wait for task: {} (checks every {}s)",
        watched.message, launched.check_seconds
    ));

    ecs.stop_task(&task_arn, json!({"exitCode": exit_code, "cpu": spec.cpu.unwrap_or(1024), "memory": spec.memory.unwrap_or(2048), "runSeconds": 42})).await;
    step(&format!(
        "(simulated) the container exited with code {exit_code}"
    ));
    let events = task_events::Deps {
        runs: store.clone(),
        tokens: tokens.clone(),
    };
    let event = ecs.state_change_event(&task_arn).await;
    let handled = task_events::function_handler(&events, event)
        .await
        .map_err(|e| e.to_string())?;
    step(&format!("Task event: {}", handled.message));

    let record = record_run::Deps {
        runs: store.clone(),
        tasks: runner.clone(),
        clock: clock.clone(),
        prices: PriceTable::builtin(),
        region: REGION.into(),
    };
    let recorded = record_run::function_handler(&record, json!({"runId": launched.run_id}))
        .await
        .map_err(|e| e.to_string())?;
    step(&format!("Record run: {}", recorded.status));
    if recorded.notify {
        let notify = notify_failure::Deps {
            runs: store.clone(),
            notifier: alerts.notifier.clone(),
            logs: Arc::new(NoLogs),
        };
        let sent = notify_failure::function_handler(&notify, json!({"runId": launched.run_id}))
            .await
            .map_err(|e| e.to_string())?;
        step(&format!("Notify: alert {} published", sent.message_id));
        for envelope in alerts.received().await {
            println!(
                "\n--- alert as an email subscriber gets it ---\nSubject: {}\n",
                envelope["Subject"].as_str().unwrap_or_default()
            );
        }
    }
    let run = store
        .get_run(&launched.run_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("run vanished")?;
    println!("\nstatus:   {}", run.status);
    println!("attempt:  {} of {}", run.attempt, run.max_attempts);
    println!(
        "exit:     {}",
        run.outcome
            .as_ref()
            .and_then(|o| o.exit_code)
            .map(|c| c.to_string())
            .unwrap_or("-".into())
    );
    println!(
        "cost:     {}",
        run.cost
            .as_ref()
            .map(|c| format!("${:.6} ({}s billed)", c.usd, c.billed_seconds))
            .unwrap_or("-".into())
    );
    if recorded.error.is_some() {
        return Err(format!("the job failed: {}", recorded.cause));
    }
    Ok(())
}
