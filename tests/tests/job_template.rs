//! `jobs/job.yaml` starts `run-job` with a job spec it renders from its
//! parameters; that spec must be one launch-run accepts. This renders the
//! schedule's input the way CloudFormation's `!Sub` does — for the example
//! job the Stevedore template declares, and for the job template's defaults —
//! and parses it with the domain's job spec parser.

use std::collections::BTreeMap;

use serde_yaml::Value as Yaml;
use stevedore_domain::JobSpec;
use stevedore_integration_tests::cfn::{load, Env};

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

/// The time the sample schedule fires at.
const SCHEDULED: &str = "2026-11-27T06:00:00Z";

/// What EventBridge Scheduler sends: the rendered input with its context
/// attribute `<aws.scheduler.scheduled-time>` filled ("Adding context
/// attributes", EventBridge Scheduler User Guide).
fn as_scheduler_sends(rendered: &str) -> String {
    rendered.replace("<aws.scheduler.scheduled-time>", SCHEDULED)
}

/// The job template's environment for `params` (list parameters as
/// comma-separated text, as a nested stack receives them).
fn env<'a>(job: &'a Yaml, params: &BTreeMap<String, String>) -> Env<'a> {
    let mut env = Env::new(job);
    for (k, v) in params {
        let value = if job["Parameters"][k.as_str()]["Type"].as_str() == Some("CommaDelimitedList")
        {
            serde_json::json!(v.split(',').collect::<Vec<_>>())
        } else {
            serde_json::json!(v)
        };
        env.set(k, value);
    }
    env.set(
        "TaskDefinition",
        format!(
            "arn:aws:ecs:eu-west-1:123456789012:task-definition/stevedore-{}:1",
            params["JobName"]
        ),
    );
    env
}

/// The schedule input, as CloudFormation renders it for `params`.
fn render_input(job: &Yaml, params: &BTreeMap<String, String>) -> String {
    let input = &job["Resources"]["Schedule"]["Properties"]["Target"]["Input"];
    let value = env(job, params)
        .eval(input)
        .unwrap_or_else(|e| panic!("the schedule input: {e}"));
    value.as_str().expect("the input is text").to_string()
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
                "ControlPlaneStack" => "stevedore".into(),
                "AlarmTopicArn" => {
                    "arn:aws:sns:eu-west-1:123456789012:stevedore-OperatorTopic-AbC123".into()
                }
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
    // And it is the scheduled time launch-run runs once (Scheduler
    // delivers at least once).
    assert_eq!(
        spec.scheduled_time
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
    // Every combination of the conditions the input depends on renders.
    let job = load("jobs/job.yaml");
    for (subnets, groups) in [
        ("", ""),
        ("subnet-1", ""),
        ("subnet-1,subnet-2", "sg-1,sg-2"),
    ] {
        let mut params = defaults(&job);
        params.insert("JobName".into(), "orders-ingest".into());
        params.insert("Subnets".into(), subnets.into());
        params.insert("SecurityGroups".into(), groups.into());
        let rendered = as_scheduler_sends(&render_input(&job, &params));
        serde_json::from_str::<serde_json::Value>(&rendered)
            .unwrap_or_else(|e| panic!("{e}: {rendered}"));
    }
}

#[test]
fn a_job_with_its_own_subnets_and_the_stacks_security_groups_gets_a_spec_launch_run_accepts() {
    // Subnets given, SecurityGroups left empty: the input once carried
    // `"securityGroups":[""]`, which the spec parser refuses, so every
    // scheduled run of such a job failed.
    let job = load("jobs/job.yaml");
    let mut params = defaults(&job);
    params.insert("JobName".into(), "orders-ingest".into());
    params.insert("Subnets".into(), "subnet-0a1b2c3d".into());
    let rendered = as_scheduler_sends(&render_input(&job, &params));
    let spec = JobSpec::from_value(&serde_json::from_str(&rendered).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {rendered}"));
    let network = spec.network.expect("the job's subnets");
    assert_eq!(network.subnets, vec!["subnet-0a1b2c3d"]);
    assert!(
        network.security_groups.is_empty(),
        "the control plane's groups apply: {rendered}"
    );
}

#[test]
fn two_stevedore_stacks_can_each_have_a_job_of_the_same_name() {
    // Schedules and log groups are named per account and Region: a name
    // built from the job's name alone makes the second stack's deploy fail.
    let job = load("jobs/job.yaml");
    let schedule = &job["Resources"]["Schedule"]["Properties"];
    assert!(
        schedule["Name"].is_null(),
        "CloudFormation names the schedule uniquely: {:?}",
        schedule["Name"]
    );
    let group = &job["Resources"]["LogGroup"]["Properties"]["LogGroupName"];
    let mut names = Vec::new();
    for stack in ["etl-prod", "etl-staging"] {
        let mut params = defaults(&job);
        params.insert("JobName".into(), "orders-ingest".into());
        params.insert("ControlPlaneStack".into(), stack.into());
        names.push(env(&job, &params).eval(group).unwrap());
    }
    assert_ne!(names[0], names[1]);
    assert_eq!(
        names[0],
        serde_json::json!("/stevedore/etl-prod/jobs/orders-ingest")
    );
    // The Stevedore template passes its own name.
    let main = load("template.yaml");
    assert_eq!(
        main["Resources"]["ExampleJob"]["Properties"]["Parameters"]["ControlPlaneStack"],
        serde_yaml::from_str::<Yaml>("!Ref AWS::StackName").unwrap()
    );
}

#[test]
fn the_readmes_first_run_starts_an_execution_with_a_spec_launch_run_accepts() {
    // README "Add a job", step 5: the schedule's input with the scheduled
    // time filled in as the README does it (Scheduler fills the context
    // attribute only when it invokes the target; get-schedule shows it as
    // written).
    let readme = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("--input \"${input"))
        .expect("README's first run passes --input \"${input...}\"");
    let expansion = &line[line.find("\"${input").unwrap()..];
    let expansion = &expansion[..expansion.rfind('"').unwrap() + 1];
    let job = load("jobs/job.yaml");
    let params = example_params(&job);
    let schedule_input = render_input(&job, &params);
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("printf '%s' {expansion}"))
        .env("input", &schedule_input)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = String::from_utf8(out.stdout).unwrap();
    let value: serde_json::Value =
        serde_json::from_str(&started).unwrap_or_else(|e| panic!("{e}: {started}"));
    let spec = JobSpec::from_value(&value).unwrap_or_else(|e| panic!("{e}: {started}"));
    assert!(spec.logical_time.is_some(), "{started}");
}
