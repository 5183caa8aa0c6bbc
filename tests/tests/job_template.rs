//! `jobs/job.yaml` starts `run-job` with a job spec it renders from its
//! parameters; that spec must be one launch-run accepts. This renders the
//! schedule's input the way CloudFormation's `!Sub` does — for the example
//! job the Stevedore template declares, and for the job template's defaults —
//! and parses it with the domain's job spec parser.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml::Value as Yaml;
use stevedore_domain::JobSpec;

fn load(path: &str) -> Yaml {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn tagged<'a>(v: &'a Yaml, tag: &str) -> &'a Yaml {
    match v {
        Yaml::Tagged(t) if t.tag == tag => &t.value,
        other => panic!("expected {tag}, found {other:?}"),
    }
}

/// `${Name}` replaced from `vars`; panics on a placeholder it cannot fill,
/// as CloudFormation would reject it.
fn substitute(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed placeholder") + start;
        let name = &rest[start + 2..end];
        out.push_str(
            vars.get(name)
                .unwrap_or_else(|| panic!("no value for ${{{name}}} in {template}")),
        );
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The job template's parameter defaults.
fn defaults(job: &Yaml) -> BTreeMap<String, String> {
    job["Parameters"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| {
            let value = match &v["Default"] {
                Yaml::String(s) => s.clone(),
                Yaml::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((k.as_str()?.to_string(), value))
        })
        .collect()
}

/// The schedule input, as CloudFormation renders it for `params`.
/// The time the sample schedule fires at.
const SCHEDULED: &str = "2026-11-27T06:00:00Z";

/// What EventBridge Scheduler sends: the rendered input with its context
/// attribute `<aws.scheduler.scheduled-time>` filled ("Adding context
/// attributes", EventBridge Scheduler User Guide).
fn as_scheduler_sends(rendered: &str) -> String {
    rendered.replace("<aws.scheduler.scheduled-time>", SCHEDULED)
}

fn render_input(job: &Yaml, params: &BTreeMap<String, String>) -> String {
    let input = &job["Resources"]["Schedule"]["Properties"]["Target"]["Input"];
    let branches = tagged(input, "!If")
        .as_sequence()
        .expect("!If [cond, a, b]");
    assert_eq!(branches[0].as_str(), Some("HasNetwork"));
    let mut vars = params.clone();
    vars.insert(
        "TaskDefinition".into(),
        format!(
            "arn:aws:ecs:eu-west-1:123456789012:task-definition/stevedore-{}:1",
            params["JobName"]
        ),
    );
    let with_network = !params.get("Subnets").map(|s| s.is_empty()).unwrap_or(true);
    if with_network {
        let sub = tagged(&branches[1], "!Sub")
            .as_sequence()
            .expect("!Sub [template, vars]");
        let join = |name: &str| params[name].split(',').collect::<Vec<_>>().join("\",\"");
        vars.insert("SubnetList".into(), join("Subnets"));
        vars.insert("GroupList".into(), join("SecurityGroups"));
        substitute(sub[0].as_str().unwrap(), &vars)
    } else {
        substitute(tagged(&branches[2], "!Sub").as_str().unwrap(), &vars)
    }
}

/// The example job's parameters in the Stevedore template, with sample
/// values for what the stack provides.
fn example_params(job: &Yaml) -> BTreeMap<String, String> {
    let main = load("template.yaml");
    let example = &main["Resources"]["ExampleJob"]["Properties"];
    assert_eq!(example["Location"].as_str(), Some("jobs/job.yaml"));
    let mut params = defaults(job);
    for (k, v) in example["Parameters"].as_mapping().unwrap() {
        let value = match v {
            Yaml::String(s) => s.clone(),
            Yaml::Number(n) => n.to_string(),
            Yaml::Tagged(t) if t.tag == "!Sub" => t
                .value
                .as_str()
                .unwrap()
                .replace("${AWS::StackName}", "stevedore"),
            // !Ref / !Join of the stack's own parameters.
            _ => match k.as_str().unwrap() {
                "StateMachineArn" => {
                    "arn:aws:states:eu-west-1:123456789012:stateMachine:stevedore-run-job".into()
                }
                "Subnets" => "subnet-0a1b2c3d,subnet-0e1f2a3b".into(),
                "SecurityGroups" => "sg-0123456789abcdef0".into(),
                "LogRetentionDays" => "30".into(),
                // !Join ["-", ["example", <first group of the stack id's UUID>]]
                "JobName" => "example-0f1e2d3c".into(),
                other => panic!("no sample value for the example job's parameter {other}"),
            },
        };
        params.insert(k.as_str().unwrap().to_string(), value);
    }
    params
}

#[test]
fn the_example_jobs_schedule_input_is_a_job_spec_launch_run_accepts() {
    let job = load("jobs/job.yaml");
    let params = example_params(&job);
    let rendered = render_input(&job, &params);
    // The schedule's own time becomes the run's logical time: retries and
    // reruns (same input) keep it.
    assert!(
        rendered.contains(r#""logicalTime":"<aws.scheduler.scheduled-time>""#),
        "{rendered}"
    );
    let input = as_scheduler_sends(&rendered);
    let value: serde_json::Value =
        serde_json::from_str(&input).unwrap_or_else(|e| panic!("{e}: {input}"));
    let spec = JobSpec::from_value(&value).unwrap_or_else(|e| panic!("{e}: {input}"));
    assert_eq!(
        spec.logical_time
            .map(stevedore_domain::logical::format_logical),
        Some(SCHEDULED.to_string())
    );
    assert_eq!(spec.job, "example-0f1e2d3c");
    assert_eq!(
        spec.task_definition,
        "arn:aws:ecs:eu-west-1:123456789012:task-definition/stevedore-example-0f1e2d3c:1"
    );
    assert_eq!(spec.container.as_deref(), Some("app"));
    assert_eq!(spec.timeout, 600);
    assert_eq!(spec.retry.max_attempts, 2);
    let network = spec.network.expect("the stack's network is passed on");
    assert_eq!(network.subnets, vec!["subnet-0a1b2c3d", "subnet-0e1f2a3b"]);
    assert_eq!(network.security_groups, vec!["sg-0123456789abcdef0"]);
}

#[test]
fn the_job_templates_defaults_and_an_environment_render_valid_specs() {
    let job = load("jobs/job.yaml");
    let mut params = defaults(&job);
    params.insert("JobName".into(), "orders-ingest".into());
    let spec = JobSpec::from_value(
        &serde_json::from_str(&as_scheduler_sends(&render_input(&job, &params))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (spec.timeout, spec.retry.max_attempts, spec.network),
        (3600, 3, None)
    );

    params.insert(
        "Environment".into(),
        r#"{"TARGET_SCHEMA":"raw","BATCH_SIZE":"5000"}"#.into(),
    );
    params.insert("Timeout".into(), "6h".into());
    let spec = JobSpec::from_value(
        &serde_json::from_str(&as_scheduler_sends(&render_input(&job, &params))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        spec.environment.get("TARGET_SCHEMA").map(String::as_str),
        Some("raw")
    );
    assert_eq!(spec.timeout, 6 * 3600);
}

#[test]
fn a_secret_in_the_environment_parameter_is_refused_as_launch_run_would() {
    let job = load("jobs/job.yaml");
    let mut params = defaults(&job);
    params.insert("JobName".into(), "orders-ingest".into());
    params.insert("Environment".into(), r#"{"DB_PASSWORD":"hunter2"}"#.into());
    let value = serde_json::from_str(&as_scheduler_sends(&render_input(&job, &params))).unwrap();
    let err = JobSpec::from_value(&value).unwrap_err().to_string();
    assert!(err.contains("DB_PASSWORD"), "{err}");
}

#[test]
fn every_placeholder_of_the_input_is_a_parameter_or_a_resource() {
    let job = load("jobs/job.yaml");
    let mut known: BTreeMap<String, String> = job["Parameters"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| (k.as_str().unwrap().to_string(), "x".to_string()))
        .collect();
    for k in job["Resources"].as_mapping().unwrap().keys() {
        known.insert(k.as_str().unwrap().to_string(), "x".into());
    }
    known.insert("SubnetList".into(), "x".into());
    known.insert("GroupList".into(), "x".into());
    let input = &job["Resources"]["Schedule"]["Properties"]["Target"]["Input"];
    let branches = tagged(input, "!If").as_sequence().unwrap();
    // substitute() panics on an unknown placeholder.
    substitute(
        tagged(&branches[1], "!Sub").as_sequence().unwrap()[0]
            .as_str()
            .unwrap(),
        &known,
    );
    substitute(tagged(&branches[2], "!Sub").as_str().unwrap(), &known);
}
