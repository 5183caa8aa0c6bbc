//! Run metrics: the embedded-metric-format line record-run writes for each
//! recorded attempt, checked against CloudWatch's EMF specification, and the
//! dashboard in `template.yaml`, checked to plot only metrics record-run
//! emits (with their dimensions) and AWS's own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{json, Value};
use serde_yaml::Value as Yaml;
use stevedore_domain::metrics::{METRICS, NAMESPACE};
use stevedore_domain::task::{ContainerState, TaskDescription};
use stevedore_domain::RunStatus;
use stevedore_integration_tests::world::MemoryWorld as World;
use time::macros::datetime;

/// CloudWatch's units (`MetricDatum.Unit`).
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one log line against the EMF specification ("Specification:
/// Embedded metric format", CloudWatch User Guide): the root is a JSON
/// object with `_aws` {`Timestamp`, `CloudWatchMetrics`}; a MetricDirective
/// has exactly `Namespace`, `Dimensions`, `Metrics`; a DimensionSet has at
/// most 30 keys, each naming a root member whose value is a string; a
/// directive has at most 100 metrics, each naming a root member that is a
/// number or an array of at most 100 numbers, with a valid `Unit`. Returns
/// the (metric, dimension set) pairs the line produces.
fn check_emf(line: &str) -> BTreeSet<(String, Vec<String>)> {
    assert!(!line.contains('\n'), "one line: {line}");
    let root: Value = serde_json::from_str(line).expect("the line is one JSON object");
    let root = root.as_object().expect("an object");
    let aws = root["_aws"].as_object().expect("_aws is an object");
    let keys: BTreeSet<&str> = aws.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["CloudWatchMetrics", "Timestamp"]),
        "{line}"
    );
    assert!(
        aws["Timestamp"].as_u64().is_some(),
        "Timestamp: epoch milliseconds"
    );
    let directives = aws["CloudWatchMetrics"].as_array().expect("an array");
    assert!(!directives.is_empty());
    let mut produced = BTreeSet::new();
    for d in directives {
        let d = d.as_object().expect("a MetricDirective object");
        let keys: BTreeSet<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["Dimensions", "Metrics", "Namespace"]),
            "{line}"
        );
        let ns = d["Namespace"].as_str().expect("Namespace is a string");
        assert!((1..=255).contains(&ns.len()) && !ns.starts_with(':'));
        let sets = d["Dimensions"].as_array().expect("Dimensions is an array");
        let metrics = d["Metrics"].as_array().expect("Metrics is an array");
        assert!(!metrics.is_empty() && metrics.len() <= 100);
        for set in sets {
            let set = set.as_array().expect("a DimensionSet is an array");
            assert!(set.len() <= 30, "at most 30 dimensions");
            for key in set {
                let key = key.as_str().expect("dimension keys are strings");
                let value = root
                    .get(key)
                    .unwrap_or_else(|| panic!("dimension {key} is a root member: {line}"));
                let value = value
                    .as_str()
                    .unwrap_or_else(|| panic!("dimension {key} is a string: {line}"));
                assert!(
                    (1..=1024).contains(&value.chars().count()),
                    "{key}: 1 to 1024 characters"
                );
            }
        }
        for m in metrics {
            let m = m.as_object().expect("a MetricDefinition object");
            assert!(m
                .keys()
                .all(|k| ["Name", "Unit", "StorageResolution"].contains(&k.as_str())));
            let name = m["Name"].as_str().expect("Name is a string");
            if let Some(unit) = m.get("Unit") {
                assert!(UNITS.contains(&unit.as_str().unwrap_or("?")), "unit {unit}");
            }
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(values)) => {
                    assert!(values.len() <= 100 && values.iter().all(Value::is_number))
                }
                other => panic!("metric {name} is a number at the root, not {other:?}: {line}"),
            }
            for set in sets {
                let dims = set
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect();
                produced.insert((name.to_string(), dims));
            }
        }
    }
    produced
}

fn spec(extra: Value) -> Value {
    let mut s = json!({"job": "orders", "taskDefinition": "etl:3", "container": "app"});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    s
}

/// Runs an attempt through launch → task stops with `exit` → watch →
/// record, and returns record-run's output with its metrics line.
async fn attempt(
    w: &World,
    spec: Value,
    n: u32,
    exit: i32,
) -> (record_run::RecordOutput, Option<String>) {
    use stevedore_domain::ports::Clock;
    let out = w.launch(spec, n, None).await.unwrap();
    let started = w.clock.now();
    w.clock.advance(time::Duration::seconds(95));
    // A stopped Fargate task as ECS describes it: sizes and times, so the
    // attempt has a cost.
    w.tasks.set_task(TaskDescription {
        task_arn: out.task_arn.clone().unwrap(),
        last_status: "STOPPED".into(),
        stop_code: Some("EssentialContainerExited".into()),
        containers: vec![ContainerState {
            name: "app".into(),
            exit_code: Some(exit),
            ..Default::default()
        }],
        cpu: Some("1024".into()),
        memory: Some("2048".into()),
        started_at: Some(started),
        stopped_at: Some(w.clock.now()),
        ..Default::default()
    });
    watch_task::function_handler(&w.watch_deps(), json!({"runId": out.run_id}))
        .await
        .unwrap();
    let rec = record_run::function_handler(&w.record_deps(), json!({"runId": out.run_id}))
        .await
        .unwrap();
    let line = record_run::metrics_line(&rec, "prod", datetime!(2026-11-28 04:00 UTC));
    (rec, line)
}

#[tokio::test]
async fn record_run_writes_valid_emf_for_each_attempt() {
    let w = World::new();
    let s = spec(json!({"retry": {"maxAttempts": 2, "on": ["ExitedNonZero"]}}));
    // Attempt 1 fails and is retried: only its cost counts yet.
    let (rec, line) = attempt(&w, s.clone(), 1, 3).await;
    assert!(rec.retry, "{rec:?}");
    let first = line.expect("the attempt's cost");
    let produced = check_emf(&first);
    assert_eq!(
        produced,
        BTreeSet::from([
            (
                "Cost".to_string(),
                vec!["Stack".to_string(), "Job".to_string()]
            ),
            ("Cost".to_string(), vec!["Stack".to_string()]),
        ])
    );
    // Attempt 2 fails too: the run ends FAILED after 2 attempts.
    let (rec, line) = attempt(&w, s, 2, 3).await;
    assert!(!rec.retry && rec.status == RunStatus::Failed, "{rec:?}");
    let last = line.unwrap();
    let produced = check_emf(&last);
    let v: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(
        (
            &v["Stack"],
            &v["Job"],
            &v["Status"],
            &v["FailureClass"],
            &v["Runs"],
            &v["Failures"],
            &v["Attempts"]
        ),
        (
            &json!("prod"),
            &json!("orders"),
            &json!("FAILED"),
            &json!("ExitedNonZero"),
            &json!(1),
            &json!(1),
            &json!(2)
        )
    );
    assert_eq!(v["Duration"], json!(95), "the attempt's duration");
    assert!(v["Cost"].as_f64().unwrap() > 0.0);
    let at = datetime!(2026-11-28 04:00 UTC).unix_timestamp() * 1000;
    assert_eq!(v["_aws"]["Timestamp"], json!(at));
    let names: BTreeSet<&str> = produced.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["Attempts", "Cost", "Duration", "Failures", "Runs"])
    );
    // Every pair it produced is one the domain declares (what the dashboard may plot).
    for (name, dims) in &produced {
        let def = METRICS.iter().find(|m| m.name == name).unwrap();
        assert!(
            def.dimensions
                .iter()
                .any(|d| d.iter().map(|s| s.to_string()).collect::<Vec<_>>() == *dims),
            "{name} {dims:?}"
        );
    }
    // A success: Runs with Status SUCCEEDED, no failure.
    let w = World::new();
    let (rec, line) = attempt(&w, spec(json!({})), 1, 0).await;
    assert_eq!(rec.status, RunStatus::Succeeded);
    let ok: Value = serde_json::from_str(&line.unwrap()).unwrap();
    check_emf(&ok.to_string());
    assert_eq!(
        (&ok["Status"], &ok["Runs"], ok.get("Failures")),
        (&json!("SUCCEEDED"), &json!(1), None)
    );
}

fn load_template() -> Yaml {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// The dashboard body as CloudFormation renders it (`${...}` filled).
fn dashboard() -> Value {
    let t = load_template();
    let body = match &t["Resources"]["Dashboard"]["Properties"]["DashboardBody"] {
        Yaml::Tagged(tag) if tag.tag == "!Sub" => tag.value.as_str().unwrap().to_string(),
        other => panic!("DashboardBody is a !Sub string, not {other:?}"),
    };
    let vars = BTreeMap::from([
        ("AWS::StackName", "prod"),
        ("AWS::Region", "eu-west-1"),
        (
            "RunJobStateMachine",
            "arn:aws:states:eu-west-1:123456789012:stateMachine:prod-run-job",
        ),
        (
            "FunctionDeadLetterQueue.QueueName",
            "prod-FunctionDeadLetterQueue-1",
        ),
        (
            "EventsDeadLetterQueue.QueueName",
            "prod-EventsDeadLetterQueue-1",
        ),
    ]);
    let mut out = body.clone();
    for (k, v) in &vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    assert!(
        !out.contains("${"),
        "a placeholder the test does not know: {out}"
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("the dashboard body is not JSON: {e}"))
}

/// `SEARCH('{Namespace,Dim,...} ... MetricName="Name"', ...)` → (namespace, name, dims).
fn search_terms(expr: &str) -> Option<(String, String, BTreeSet<String>)> {
    let start = expr.find("SEARCH('{")? + "SEARCH('{".len();
    let end = start + expr[start..].find('}')?;
    let mut parts = expr[start..end].split(',').map(|p| p.trim().to_string());
    let namespace = parts.next()?;
    let dims = parts.collect();
    let name_at = expr.find("MetricName=\"")? + "MetricName=\"".len();
    let name_end = name_at + expr[name_at..].find('"')?;
    Some((namespace, expr[name_at..name_end].to_string(), dims))
}

#[test]
fn the_dashboard_plots_only_metrics_record_run_emits() {
    let d = dashboard();
    let declared: BTreeSet<(String, BTreeSet<String>)> = METRICS
        .iter()
        .flat_map(|m| {
            m.dimensions.iter().map(move |set| {
                (
                    m.name.to_string(),
                    set.iter().map(|s| s.to_string()).collect(),
                )
            })
        })
        .collect();
    let mut plotted = BTreeSet::new();
    let mut aws = 0;
    for w in d["widgets"].as_array().unwrap() {
        assert!(["metric", "text"].contains(&w["type"].as_str().unwrap()));
        for row in w["properties"]["metrics"].as_array().into_iter().flatten() {
            let row = row.as_array().unwrap();
            match row.first() {
                Some(Value::Object(o)) => {
                    let expr = o["expression"].as_str().unwrap();
                    if let Some((ns, name, dims)) = search_terms(expr) {
                        assert_eq!(ns, NAMESPACE, "{expr}");
                        plotted.insert((name, dims));
                    }
                }
                Some(Value::String(ns)) if ns == NAMESPACE => {
                    let name = row[1].as_str().unwrap().to_string();
                    let dims = row[2..]
                        .chunks(2)
                        .filter_map(|c| c[0].as_str())
                        .map(str::to_string)
                        .collect();
                    plotted.insert((name, dims));
                }
                Some(Value::String(ns)) => {
                    assert!(ns == "AWS/States" || ns == "AWS/SQS", "{ns}");
                    aws += 1;
                }
                other => panic!("a metric row: {other:?}"),
            }
        }
    }
    for p in &plotted {
        assert!(
            declared.contains(p),
            "the dashboard plots {p:?}, which record-run does not emit (declared: {declared:?})"
        );
    }
    // Each widget the issue asks for is there.
    let names: BTreeSet<&str> = plotted.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["Cost", "Duration", "Failures", "Runs"])
    );
    assert_eq!(aws, 7, "five execution metrics and two dead-letter queues");
    let t = load_template();
    let url = &t["Outputs"]["DashboardUrl"]["Value"];
    assert!(
        format!("{url:?}").contains("#dashboards/dashboard/${Dashboard}"),
        "{url:?}"
    );
}

#[test]
fn the_function_errors_alarm_leaves_out_the_errors_run_job_handles() {
    // Lambda counts every handler error; run-job catches JobAlreadyRunning,
    // CapacityUnavailable, Throttled, ... by design. The alarm subtracts the
    // HandledErrors the functions write, and each Lambda series is filled,
    // so a function not invoked in a period does not blank the sum.
    let t = load_template();
    let alarm = &t["Resources"]["FunctionErrorsAlarm"]["Properties"];
    let metrics = alarm["Metrics"].as_sequence().unwrap();
    let returned: Vec<&Yaml> = metrics
        .iter()
        .filter(|m| m["ReturnData"].as_bool() != Some(false))
        .collect();
    assert_eq!(returned.len(), 1);
    let expr = returned[0]["Expression"].as_str().unwrap();
    let lambda_ids: Vec<&str> = metrics
        .iter()
        .filter(|m| m["MetricStat"]["Metric"]["Namespace"].as_str() == Some("AWS/Lambda"))
        .map(|m| m["Id"].as_str().unwrap())
        .collect();
    assert_eq!(lambda_ids.len(), 7, "{lambda_ids:?}");
    for id in &lambda_ids {
        assert!(
            expr.contains(&format!("FILL({id}, 0)")),
            "{id} unfilled in {expr}"
        );
    }
    assert!(expr.trim_end().ends_with("- handled"), "{expr}");
    let handled = metrics
        .iter()
        .find(|m| m["MetricStat"]["Metric"]["MetricName"].as_str() == Some("HandledErrors"))
        .expect("the HandledErrors metric");
    let metric = &handled["MetricStat"]["Metric"];
    assert_eq!(metric["Namespace"].as_str(), Some(NAMESPACE));
    let dims: Vec<String> = metric["Dimensions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| d["Name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        stevedore_domain::metrics::HANDLED_ERRORS
            .dimensions
            .iter()
            .any(|set| set.iter().map(|s| s.to_string()).collect::<Vec<_>>() == dims),
        "the alarm reads HandledErrors by {dims:?}, which the functions do not write"
    );
    // What a function writes for a busy job is a valid EMF line of that metric.
    let line = stevedore_domain::metrics::handled_error(
        "prod",
        "prod-LaunchRunFunction-1",
        stevedore_domain::FailureClass::JobAlreadyRunning,
        time::OffsetDateTime::UNIX_EPOCH,
    )
    .unwrap();
    let declared = check_emf(&line.to_string());
    assert!(declared.contains(&("HandledErrors".to_string(), vec!["Stack".to_string()])));
    assert!(stevedore_domain::metrics::handled_error(
        "prod",
        "f",
        stevedore_domain::FailureClass::ConfigurationError,
        time::OffsetDateTime::UNIX_EPOCH,
    )
    .is_none());
}
