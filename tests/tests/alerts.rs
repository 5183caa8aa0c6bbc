//! Alerts as users get them. Each scenario runs the real handlers
//! (launch-run → watch-task → record-run → notify-failure) on in-memory
//! ports and renders the alert the way each channel receives it: the SNS
//! message's `email` rendering with its subject, and the Slack message the
//! slack-notifier builds from the SNS message's `lambda` rendering.
//!
//! The renderings are committed under `docs/alerts/`. This test regenerates
//! them: when one differs from the committed file it is rewritten and the
//! test fails, so a change to the alerts shows up in review and the
//! documentation cannot go stale.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use stevedore_aws::sns::{render, sanitize_subject};
use stevedore_domain::alert::{Alert, AlertKind};
use stevedore_domain::console::LogStreamRef;
use stevedore_domain::ports::{LogSource, LogTail};
use stevedore_domain::run::RunRecord;
use stevedore_domain::slack::check_limits;
use stevedore_domain::task::{ContainerState, TaskDescription};
use stevedore_domain::{Error, FailureClass, Result};
use stevedore_integration_tests::world::MemoryWorld;
use time::macros::datetime;
use time::Duration;

/// The job's log as CloudWatch Logs would hand it over: the stream named
/// from the run's task, the lines as the job wrote them.
struct JobLog(Vec<String>);

#[async_trait]
impl LogSource for JobLog {
    async fn tail(&self, run: &RunRecord, lines: usize) -> Result<LogTail> {
        let id = run
            .task_arn
            .as_deref()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or_default();
        let all = &self.0;
        Ok(LogTail {
            lines: all[all.len().saturating_sub(lines)..].to_vec(),
            stream: Some(LogStreamRef {
                region: "us-east-1".into(),
                group: "/stevedore/jobs/orders-ingest".into(),
                stream: format!("orders-ingest/app/{id}"),
            }),
        })
    }
}

fn python_log(last: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = (1..=30)
        .map(|i| {
            let t = 600 + i * 9;
            format!(
                "2026-11-24 06:{:02}:{:02} INFO ingest.orders: loaded batch {i} (5000 rows)",
                t / 60,
                t % 60
            )
        })
        .collect();
    lines.push("2026-11-24 06:15:02 INFO ingest.orders: connecting to postgres://etl:Tr0ub4dor3@warehouse.internal:5432/raw".into());
    lines.extend(last.iter().map(|s| s.to_string()));
    lines
}

fn spec(extra: Value) -> Value {
    let mut s = json!({
        "job": "orders-ingest",
        "taskDefinition": "etl-python:12",
        "container": "app",
        "command": ["python", "-m", "ingest.orders", "--since", "yesterday"],
        "cpu": 1024,
        "memory": 4096,
        "timeout": "45m",
        "tags": {"team": "data"}
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    s
}

/// A stopped task as ECS describes it.
fn stopped(
    task_arn: &str,
    memory: &str,
    stop_code: &str,
    reason: &str,
    app: ContainerState,
) -> TaskDescription {
    TaskDescription {
        task_arn: task_arn.into(),
        cluster_arn: Some("arn:aws:ecs:us-east-1:123456789012:cluster/data-jobs".into()),
        task_definition_arn: Some(
            "arn:aws:ecs:us-east-1:123456789012:task-definition/etl-python:12".into(),
        ),
        last_status: "STOPPED".into(),
        desired_status: Some("STOPPED".into()),
        stop_code: Some(stop_code.into()),
        stopped_reason: Some(reason.into()),
        containers: vec![app],
        cpu: Some("1024".into()),
        memory: Some(memory.into()),
        capacity_provider_name: Some("FARGATE".into()),
        launch_type: Some("FARGATE".into()),
        created_at: Some(datetime!(2026-11-24 06:00:04 UTC)),
        started_at: Some(datetime!(2026-11-24 06:00:31 UTC)),
        stopped_at: Some(datetime!(2026-11-24 06:17:09 UTC)),
        ..Default::default()
    }
}

/// The task ends with the app container exiting `code`.
fn exits(code: i32) -> impl Fn(&MemoryWorld, u32, &str) + Copy {
    move |w, _, arn| {
        w.tasks.set_task(stopped(
            arn,
            "4096",
            "EssentialContainerExited",
            "Essential container in task exited",
            app(Some(code), None),
        ))
    }
}

fn app(exit: Option<i32>, reason: Option<&str>) -> ContainerState {
    ContainerState {
        name: "app".into(),
        exit_code: exit,
        reason: reason.map(str::to_string),
        last_status: Some("STOPPED".into()),
    }
}

/// Drives one execution to its end; returns what notify-failure published.
async fn run_to_alert(
    w: &MemoryWorld,
    execution: &str,
    spec: Value,
    mut end: impl FnMut(&MemoryWorld, u32, &str),
) -> Option<Alert> {
    let mut attempt = 1;
    loop {
        let state = json!({"spec": spec, "execution": MemoryWorld::execution(execution), "attempt": attempt});
        let record = match w.launch_in(execution, spec.clone(), attempt, None).await {
            Ok(out) => {
                let arn = out.task_arn.clone().expect("task arn");
                // The hook decides how the task ends; the watch observes it
                // (and stops a task past its deadline, after which the hook
                // is asked again).
                for _ in 0..3 {
                    end(w, attempt, &arn);
                    let watched = watch_task::function_handler(
                        &w.watch_deps(),
                        json!({"runId": out.run_id, "taskToken": "t"}),
                    )
                    .await
                    .expect("watch-task");
                    if watched.state == watch_task::WatchState::Stopped {
                        break;
                    }
                }
                let mut input = state.clone();
                input["launch"] = json!({"runId": out.run_id});
                record_run::function_handler(&w.record_deps(), input)
                    .await
                    .expect("record-run")
            }
            Err(e) => {
                let mut input = state.clone();
                input["error"] = json!({"Error": e.class.as_str(), "Cause": json!({"errorType": e.class.as_str(), "errorMessage": e.message}).to_string()});
                record_run::function_handler(&w.record_deps(), input)
                    .await
                    .expect("record-run after a failed launch")
            }
        };
        if record.retry {
            attempt = record.next_attempt.expect("next attempt");
            w.clock.advance(Duration::seconds(
                record.retry_delay_seconds.unwrap_or(0) as i64
            ));
            continue;
        }
        let before = w.notifier.alerts().len();
        let mut input = state;
        input["attempt"] = json!(record.attempt);
        input["record"] = serde_json::to_value(&record).unwrap();
        if record.notify || record.notify_recovery {
            notify_failure::function_handler(&w.notify_deps(), input)
                .await
                .expect("notify-failure");
        }
        return w.notifier.alerts().get(before).cloned();
    }
}

/// The email as SNS sends it: the subject and the `email` rendering.
fn email_of(alert: &Alert) -> String {
    let message: Value = serde_json::from_str(&render(alert)).unwrap();
    format!(
        "Subject: {}\n\n{}",
        sanitize_subject(&alert.subject()),
        message["email"].as_str().unwrap()
    )
}

/// What slack-notifier posts for the SNS message it receives.
fn slack_of(alert: &Alert) -> Value {
    let message: Value = serde_json::from_str(&render(alert)).unwrap();
    slack_notifier::slack_message_for(
        Some(&sanitize_subject(&alert.subject())),
        message["lambda"].as_str().unwrap(),
    )
}

fn docs_alerts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/alerts")
}

/// Writes the snapshot; returns a complaint when it changed.
fn snapshot(name: &str, content: &str) -> Option<String> {
    let path = docs_alerts().join(name);
    let old = std::fs::read_to_string(&path).ok();
    if old.as_deref() == Some(content) {
        return None;
    }
    std::fs::create_dir_all(docs_alerts()).unwrap();
    std::fs::write(&path, content).unwrap();
    Some(format!(
        "docs/alerts/{name} {}",
        if old.is_some() {
            "changed"
        } else {
            "was missing"
        }
    ))
}

struct Scenario {
    name: &'static str,
    alert: Alert,
}

async fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();

    // Exit code 3: the job's own error.
    let mut w = MemoryWorld::new();
    w.logs = Arc::new(JobLog(python_log(&[
        "Traceback (most recent call last):",
        "  File \"/app/ingest/orders.py\", line 88, in load",
        "    rows = validate(batch)",
        "ValueError: order 7731 has no customer_id",
    ])));
    let alert = run_to_alert(&w, "exit-3", spec(json!({})), exits(3))
        .await
        .expect("an alert");
    out.push(Scenario {
        name: "exit-code-3",
        alert,
    });

    // Out of memory at 1024 MiB.
    let mut w = MemoryWorld::new();
    w.logs = Arc::new(JobLog(python_log(&[
        "2026-11-24 06:17:05 INFO ingest.orders: joining 2,400,000 rows in memory",
    ])));
    let alert = run_to_alert(
        &w,
        "oom",
        spec(json!({"memory": 1024, "cpu": 512})),
        |w, _, arn| {
            w.tasks.set_task(stopped(
                arn,
                "1024",
                "EssentialContainerExited",
                "Essential container in task exited",
                app(
                    Some(137),
                    Some("OutOfMemoryError: Container killed due to memory usage"),
                ),
            ));
        },
    )
    .await
    .expect("an alert");
    out.push(Scenario {
        name: "out-of-memory",
        alert,
    });

    // Timeout: the deadline passes, watch-task stops the task, ECS reports it stopped.
    let mut w = MemoryWorld::new();
    w.logs = Arc::new(JobLog(python_log(&[
        "2026-11-24 06:44:59 INFO ingest.orders: waiting for lock on raw.orders",
    ])));
    let alert = run_to_alert(&w, "timeout", spec(json!({})), |w, _, arn| {
        match w.tasks.stops().iter().find(|(a, _)| a == arn) {
            // Still running: pass the deadline; the watch will stop the task.
            None => w.clock.advance(Duration::minutes(46)),
            // Stevedore asked ECS to stop it: ECS reports it stopped.
            Some((_, reason)) => {
                let mut task = stopped(arn, "4096", "UserInitiated", reason, app(Some(143), None));
                task.stopped_at = Some(datetime!(2026-11-24 06:46:02 UTC));
                w.tasks.set_task(task);
            }
        }
    })
    .await
    .expect("a timeout alert");
    out.push(Scenario {
        name: "timeout",
        alert,
    });

    // Capacity unavailable on every attempt.
    let w = MemoryWorld::new();
    for _ in 0..3 {
        w.tasks.fail_next_launch(Error::new(
            FailureClass::CapacityUnavailable,
            "RunTask failed: Capacity is unavailable at this time. Please try again later or in a different availability zone",
        ));
    }
    let alert = run_to_alert(
        &w,
        "capacity",
        spec(json!({"capacity": "on-demand"})),
        |_, _, _| {},
    )
    .await
    .expect("an alert");
    out.push(Scenario {
        name: "capacity-unavailable",
        alert,
    });

    // Recovery: two failed executions, then a success, with notify.onRecovery.
    let w = MemoryWorld::new();
    let s = spec(json!({"notify": {"onFailure": true, "onRecovery": true}}));
    for name in ["r1", "r2"] {
        run_to_alert(&w, name, s.clone(), exits(3))
            .await
            .expect("failure alerts");
        w.clock.advance(Duration::hours(1));
    }
    let alert = run_to_alert(&w, "r3", s.clone(), exits(0))
        .await
        .expect("a recovery notice");
    out.push(Scenario {
        name: "recovered",
        alert,
    });
    out
}

#[tokio::test]
async fn the_documented_alerts_are_what_the_handlers_produce() {
    let scenarios = scenarios().await;
    let mut changed = Vec::new();
    for s in &scenarios {
        let email = email_of(&s.alert);
        let slack = slack_of(&s.alert);
        assert_eq!(check_limits(&slack), Vec::<String>::new(), "{}", s.name);
        assert!(sanitize_subject(&s.alert.subject()).chars().count() <= 100);
        changed.extend(snapshot(&format!("{}.email.txt", s.name), &email));
        changed.extend(snapshot(
            &format!("{}.slack.json", s.name),
            &(serde_json::to_string_pretty(&slack).unwrap() + "\n"),
        ));
    }
    assert!(
        changed.is_empty(),
        "regenerated (review and commit them): {changed:#?}"
    );
}

#[tokio::test]
async fn each_alert_says_what_failed_why_and_where_to_look() {
    let scenarios = scenarios().await;
    let get = |name: &str| &scenarios.iter().find(|s| s.name == name).unwrap().alert;

    let exit3 = get("exit-code-3");
    assert_eq!(
        (exit3.class, exit3.exit_code),
        (FailureClass::ExitedNonZero, Some(3))
    );
    assert_eq!((exit3.attempt, exit3.max_attempts), (1, 3));
    assert!(exit3.explanation.contains("exited with code 3"));
    assert_eq!(exit3.log_tail.len(), 20);
    assert_eq!(
        exit3.log_tail.last().unwrap(),
        "ValueError: order 7731 has no customer_id"
    );
    let labels: Vec<&str> = exit3.links.iter().map(|l| l.label.as_str()).collect();
    assert_eq!(labels, ["Execution", "ECS task", "Log stream"]);
    assert!(exit3.links[1]
        .url
        .contains("/ecs/v2/clusters/data-jobs/tasks/"));
    assert!(exit3.links[2].url.contains(
        "log-group/$252Fstevedore$252Fjobs$252Forders-ingest/log-events/orders-ingest$252Fapp$252F"
    ));
    assert!(exit3.cost_usd.is_some_and(|c| c > 0.0));
    assert_eq!(exit3.duration_seconds(), Some(998));

    let oom = get("out-of-memory");
    assert_eq!(oom.class, FailureClass::OutOfMemory);
    assert!(
        oom.explanation.contains("1024 MiB limit"),
        "{}",
        oom.explanation
    );
    assert!(oom.hint.as_deref().unwrap().contains("Raise `memory`"));
    assert_eq!(oom.containers[0].exit_code, Some(137));

    let timeout = get("timeout");
    assert_eq!(timeout.class, FailureClass::TimedOut);
    assert!(
        timeout.explanation.contains("45m timeout"),
        "{}",
        timeout.explanation
    );
    assert!(timeout
        .stopped_reason
        .as_deref()
        .unwrap()
        .starts_with("Stevedore: job timeout"));

    let capacity = get("capacity-unavailable");
    assert_eq!(capacity.class, FailureClass::CapacityUnavailable);
    assert_eq!((capacity.attempt, capacity.max_attempts), (3, 3));
    assert!(capacity
        .hint
        .as_deref()
        .unwrap()
        .contains("already retried it (3 attempts)"));

    let recovered = get("recovered");
    assert_eq!(recovered.kind, AlertKind::Recovery);
    assert_eq!(recovered.recovered_after, Some(2));
    assert_eq!(
        recovered.headline(),
        "orders-ingest recovered after 2 failed runs"
    );
    assert_eq!(recovered.severity.as_str(), "info");
}

#[tokio::test]
async fn a_success_without_earlier_failures_or_without_opt_in_sends_no_notice() {
    let w = MemoryWorld::new();
    let ok = exits(0);
    let opted_in = spec(json!({"notify": {"onRecovery": true}}));
    assert!(
        run_to_alert(&w, "a", opted_in.clone(), ok).await.is_none(),
        "nothing to recover from"
    );
    // A failure, then a success of a job that did not opt in: no notice.
    let w = MemoryWorld::new();
    let fail = exits(3);
    run_to_alert(&w, "f", spec(json!({})), fail)
        .await
        .expect("failure alert");
    w.clock.advance(Duration::hours(1));
    assert!(run_to_alert(&w, "s", spec(json!({})), ok).await.is_none());
    // Opted in: the failure, a success (notice), another success (no notice).
    let w = MemoryWorld::new();
    run_to_alert(&w, "f", opted_in.clone(), fail)
        .await
        .expect("failure alert");
    w.clock.advance(Duration::hours(1));
    let notice = run_to_alert(&w, "s1", opted_in.clone(), ok)
        .await
        .expect("recovery notice");
    assert_eq!(notice.recovered_after, Some(1));
    assert_eq!(
        notice.headline(),
        "orders-ingest recovered after 1 failed run"
    );
    w.clock.advance(Duration::hours(1));
    assert!(run_to_alert(&w, "s2", opted_in, ok).await.is_none());
}

/// One log line per kind of credential, and the part that must not survive.
const CREDENTIALS: &[(&str, &str)] = &[
    (
        "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
        "AKIAIOSFODNN7EXAMPLE",
    ),
    (
        "session key ASIAY34FZKBOKMUTVV7A in use",
        "ASIAY34FZKBOKMUTVV7A",
    ),
    (
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI",
    ),
    ("retrying login with password=hunter2", "hunter2"),
    (
        "refreshing with token=eyJraWQiOiJrMSJ9.payload.sig",
        "eyJraWQiOiJrMSJ9",
    ),
    (
        "GET https://etl:s3cr3tpass@api.partner.example/v2/orders",
        "s3cr3tpass",
    ),
    (
        "Authorization: Bearer abcDEF123456ghiJKL",
        "abcDEF123456ghiJKL",
    ),
    (
        "notify https://hooks.slack.com/services/T0AAA/B0BBB/c0ffeec0ffeec0ffee",
        "c0ffeec0ffee",
    ),
];

#[tokio::test]
async fn credentials_in_the_log_are_redacted_in_every_rendering() {
    let mut w = MemoryWorld::new();
    w.logs = Arc::new(JobLog(
        CREDENTIALS.iter().map(|(l, _)| l.to_string()).collect(),
    ));
    let alert = run_to_alert(&w, "creds", spec(json!({})), |w, _, arn| {
        w.tasks.set_task(stopped(
            arn,
            "4096",
            "EssentialContainerExited",
            "Essential container in task exited password=hunter2",
            app(Some(1), None),
        ));
    })
    .await
    .expect("an alert");
    assert_eq!(alert.log_tail.len(), CREDENTIALS.len());

    let sns_message = render(&alert);
    let printed = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = printed.clone();
    let console = stevedore_local::ConsoleNotifier::new(
        Arc::new(move |s: &str| sink.lock().unwrap().push_str(s)),
        None,
    );
    stevedore_domain::ports::Notifier::publish(&console, &alert)
        .await
        .unwrap();
    let renderings = [
        ("email", email_of(&alert)),
        ("sns message (every protocol)", sns_message),
        ("slack", slack_of(&alert).to_string()),
        ("structured json", alert.to_json().to_string()),
        ("local console", printed.lock().unwrap().clone()),
    ];
    for (name, text) in &renderings {
        for (line, secret) in CREDENTIALS {
            assert!(
                !text.contains(secret),
                "{name} leaks `{secret}` from `{line}`"
            );
        }
        assert!(text.contains("[REDACTED]"), "{name}");
        // The rest of the line is still there to read.
        assert!(text.contains("retrying login with password="), "{name}");
    }
}

#[tokio::test]
async fn the_webhook_is_read_from_secrets_manager_and_cached_until_invalidated() {
    use slack_notifier::{CachedWebhook, WEBHOOK_CACHE_TTL};
    use stevedore_aws::SecretsManagerSource;
    use stevedore_integration_tests::{emulator, sdk_config, unique};
    let Some(moto) = emulator("STEVEDORE_TEST_MOTO") else {
        return;
    };
    let sdk = sdk_config(&moto).await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let first = "https://hooks.slack.com/services/T1/B2/first";
    let created = sm
        .create_secret()
        .name(unique("slack-webhook"))
        .secret_string(json!({ "url": first }).to_string())
        .send()
        .await
        .expect("create secret in moto");
    let arn = created.arn().unwrap().to_string();
    let webhook = CachedWebhook::new(
        Arc::new(SecretsManagerSource::from_sdk(&sdk)),
        &arn,
        WEBHOOK_CACHE_TTL,
    );
    let url = webhook.get().await.unwrap();
    assert_eq!(url.expose(), first);
    assert_eq!(
        format!("{url:?}"),
        "Secret(***)",
        "Debug never shows the value"
    );

    // Rotated: the cached URL serves until the cache is dropped (a rejection does that).
    let second = "https://hooks.slack.com/services/T1/B2/second";
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(second)
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.get().await.unwrap().expose(), first);
    webhook.invalidate().await;
    assert_eq!(webhook.get().await.unwrap().expose(), second);

    // A secret that does not exist: a named error that says which one.
    let missing = CachedWebhook::new(
        Arc::new(SecretsManagerSource::from_sdk(&sdk)),
        "stevedore-no-such-secret",
        WEBHOOK_CACHE_TTL,
    );
    let err = missing.get().await.unwrap_err();
    assert!(err.message.contains("GetSecretValue"), "{err}");
}
