//! The contract between the state machines and the Rust handlers: error
//! names, placeholders, and the fields Choice states read.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use stevedore_domain::FailureClass;

/// Error names the Step Functions runtime and the Lambda integration raise.
const RUNTIME_ERRORS: &[&str] = &[
    "States.ALL",
    "States.Timeout",
    "States.TaskFailed",
    "States.Runtime",
    "States.HeartbeatTimeout",
    "States.Permissions",
    "States.ResultPathMatchFailure",
    "States.ParameterPathFailure",
    "States.BranchFailed",
    "States.NoChoiceMatched",
    "States.IntrinsicFailure",
    "States.ExceedToleratedFailureThreshold",
    "States.ItemReaderFailed",
    "States.ResultWriterFailed",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.Unknown",
    "Sandbox.Timedout",
    "Runtime.ExitError",
    "Runtime.OutOfMemory",
    "Runtime.Unknown",
];

/// What every Lambda task state must retry: the service's transient errors
/// (Step Functions' guidance), a client timeout, and a function that crashed,
/// ran out of memory or timed out. Step Functions' guide names the last
/// `Lambda.Unknown`; where Lambda's payload carries an `errorType`
/// (`Sandbox.Timedout`, `Runtime.ExitError`, ...) the execution reports that
/// name instead, so both are retried. Every handler is safe to call again.
const LAMBDA_TRANSIENT: &[&str] = &[
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.Unknown",
    "Sandbox.Timedout",
    "Runtime.ExitError",
    "Runtime.OutOfMemory",
    "Runtime.Unknown",
];

/// Sample outputs of each function, by its placeholder (`LaunchRunFunctionArn`).
pub type Samples = BTreeMap<String, Vec<Value>>;

/// Every `${Name}` placeholder in a definition.
pub fn placeholders(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                out.insert(after[..end].to_string());
                rest = &after[end..];
            }
            None => break,
        }
    }
    out
}

/// The keys of a state machine's `DefinitionSubstitutions` in a SAM template.
pub fn substitutions(template: &str, state_machine: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_machine = false;
    let mut subs_indent: Option<usize> = None;
    for line in template.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if indent == 2 && trimmed.ends_with(':') {
            in_machine = trimmed.trim_end_matches(':') == state_machine;
            subs_indent = None;
            continue;
        }
        if !in_machine || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match subs_indent {
            None if trimmed == "DefinitionSubstitutions:" => subs_indent = Some(indent),
            Some(base) if indent > base => {
                if let Some((key, _)) = trimmed.split_once(':') {
                    if indent == base + 2 {
                        out.insert(key.trim().to_string());
                    }
                }
            }
            Some(_) => subs_indent = None,
            None => {}
        }
    }
    out
}

fn known_error(name: &str) -> bool {
    RUNTIME_ERRORS.contains(&name) || name.parse::<FailureClass>().is_ok()
}

fn states(def: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    fn walk<'a>(states: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        if let Some(map) = states.as_object() {
            for (name, state) in map {
                out.push((name.clone(), state));
                for branch in state
                    .get("Branches")
                    .and_then(|b| b.as_array())
                    .into_iter()
                    .flatten()
                {
                    walk(&branch["States"], out);
                }
                for key in ["Iterator", "ItemProcessor"] {
                    if let Some(inner) = state.get(key) {
                        walk(&inner["States"], out);
                    }
                }
            }
        }
    }
    walk(&def["States"], &mut out);
    out
}

/// The placeholder of the function a Task state invokes, if it is one of ours.
fn function_of(state: &Value) -> Option<String> {
    let resource = state.get("Resource")?.as_str()?;
    if !resource.starts_with("arn:aws:states:::lambda:invoke") {
        return None;
    }
    let name = state.get("Parameters")?.get("FunctionName")?.as_str()?;
    let inner = name.strip_prefix("${")?.strip_suffix('}')?;
    Some(inner.to_string())
}

/// Checks a definition against the Rust side. `substitutions` are the
/// template's DefinitionSubstitutions keys; `samples` the functions' outputs.
pub fn check(text: &str, substitutions: &BTreeSet<String>, samples: &Samples) -> Vec<String> {
    let mut problems = Vec::new();
    let def: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    for p in placeholders(text) {
        if !substitutions.contains(&p) {
            problems.push(format!(
                "placeholder ${{{p}}} has no DefinitionSubstitutions entry"
            ));
        }
    }
    match def["TimeoutSeconds"].as_u64() {
        Some(t) if t == stevedore_domain::budget::EXECUTION_TIMEOUT_SECONDS => {}
        other => problems.push(format!(
            "TimeoutSeconds is {other:?}, not {} (stevedore_domain::budget::EXECUTION_TIMEOUT_SECONDS, which the spec parser checks every job against)",
            stevedore_domain::budget::EXECUTION_TIMEOUT_SECONDS
        )),
    }
    let all = states(&def);
    let names: BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(start) = def["StartAt"].as_str() {
        if !names.contains(start) {
            problems.push(format!("StartAt `{start}` is not a state"));
        }
    }
    // Where each top-level state path (`$.record`) comes from: function and selector.
    let mut produced: BTreeMap<String, (String, Value)> = BTreeMap::new();

    for (name, state) in &all {
        for next in next_targets(state) {
            if !names.contains(next.as_str()) {
                problems.push(format!("state `{name}`: Next `{next}` is not a state"));
            }
        }
        for (kind, list) in [("Retry", state.get("Retry")), ("Catch", state.get("Catch"))] {
            for rule in list.and_then(|l| l.as_array()).into_iter().flatten() {
                for e in rule["ErrorEquals"].as_array().into_iter().flatten() {
                    let e = e.as_str().unwrap_or_default();
                    if !known_error(e) {
                        problems.push(format!(
                            "state `{name}` {kind}: error name `{e}` is neither a Stevedore failure class nor a Step Functions/Lambda error"
                        ));
                    }
                }
            }
        }
        if state["Type"] == "Fail" {
            if let Some(e) = state["Error"].as_str() {
                if !known_error(e) {
                    problems.push(format!(
                        "Fail state `{name}`: error `{e}` is not a Stevedore failure class"
                    ));
                }
            }
        }
        let Some(function) = function_of(state) else {
            continue;
        };
        let retried: BTreeSet<&str> = state["Retry"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["ErrorEquals"].as_array().into_iter().flatten())
            .filter_map(|e| e.as_str())
            .collect();
        for must in LAMBDA_TRANSIENT
            .iter()
            .copied()
            .chain(["Throttled", "Transient"])
        {
            if !retried.contains(must) && !retried.contains("States.ALL") {
                problems.push(format!("state `{name}` does not retry `{must}`"));
            }
        }
        let caught: BTreeSet<&str> = state["Catch"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["ErrorEquals"].as_array().into_iter().flatten())
            .filter_map(|e| e.as_str())
            .collect();
        if !caught.contains("States.ALL") {
            for class in FailureClass::ALL {
                if !class.step_retryable() && !caught.contains(class.as_str()) {
                    problems.push(format!(
                        "state `{name}` ({function}) does not handle `{class}`"
                    ));
                }
            }
        }
        if let (Some(path), Some(selector)) =
            (state["ResultPath"].as_str(), state.get("ResultSelector"))
        {
            check_selector(
                &mut problems,
                name,
                &function,
                selector,
                samples.get(&function),
            );
            register(&mut produced, path, &function, selector);
        }
    }

    // What Pass states put in the state themselves (`ResultPath` with `Parameters`).
    let mut passed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, state) in &all {
        if let (true, Some(path), Some(params)) = (
            state["Type"] == "Pass",
            state["ResultPath"].as_str(),
            state["Parameters"].as_object(),
        ) {
            passed
                .entry(path.to_string())
                .or_default()
                .extend(params.keys().map(|k| k.trim_end_matches(".$").to_string()));
        }
    }

    // Choice variables, Wait SecondsPath and TimeoutSecondsPath read fields
    // the Rust output types must produce with the right JSON type.
    for (name, state) in &all {
        let mut reads: Vec<(String, Expect)> = Vec::new();
        if state["Type"] == "Choice" {
            for rule in state["Choices"].as_array().into_iter().flatten() {
                collect_choice_reads(rule, &mut reads);
            }
        }
        for key in ["SecondsPath", "TimeoutSecondsPath", "HeartbeatSecondsPath"] {
            if let Some(p) = state[key].as_str() {
                reads.push((p.to_string(), Expect::Integer));
            }
        }
        for (path, expect) in reads {
            let Some((prefix, field)) = split_path(&path) else {
                continue;
            };
            if let Some(fields) = passed.get(&prefix) {
                if !fields.contains(&field) {
                    problems.push(format!(
                        "state `{name}` reads `{path}`, but the Pass state that writes `{prefix}` gives no `{field}`"
                    ));
                }
                continue;
            }
            let Some((function, selector)) = produced.get(&prefix) else {
                if prefix.starts_with("$.")
                    && !["$.spec", "$.execution", "$.attempt"].contains(&prefix.as_str())
                {
                    problems.push(format!(
                        "state `{name}` reads `{path}`, which no Lambda task produces"
                    ));
                }
                continue;
            };
            let Some(source) = selector.get(format!("{field}.$")).and_then(|s| s.as_str()) else {
                problems.push(format!("state `{name}` reads `{path}`, but the selector of `{prefix}` has no `{field}`"));
                continue;
            };
            let payload_field = source.trim_start_matches("$.Payload.");
            let outs = samples.get(function).cloned().unwrap_or_default();
            let values: Vec<&Value> = outs
                .iter()
                .filter_map(|o| lookup(o, payload_field))
                .collect();
            if values.is_empty() {
                problems.push(format!(
                    "state `{name}` reads `{path}`: {function} never produces `{payload_field}`"
                ));
            }
            if let Expect::Integer = expect {
                // Only where the branch is taken must it be an integer; null is allowed elsewhere.
                if !values.iter().any(|v| v.is_u64()) {
                    problems.push(format!("state `{name}` reads `{path}` as seconds, but {function} never gives a whole number there"));
                }
                if values.iter().any(|v| !(v.is_u64() || v.is_null())) {
                    problems.push(format!("state `{name}` reads `{path}` as seconds, but {function} gives a non-integer"));
                }
            } else {
                for v in &values {
                    if !expect.accepts(v) {
                        problems.push(format!("state `{name}` compares `{path}` as {expect:?}, but {function} gives {v}"));
                    }
                }
                if let Expect::StringValue(s) = &expect {
                    if !values.iter().any(|v| v.as_str() == Some(s)) {
                        problems.push(format!("state `{name}` compares `{path}` with \"{s}\", which {function} never produces"));
                    }
                }
            }
        }
    }
    problems
}

/// Every `$.Payload.x` a selector (and its nested objects) reads must be in
/// every sample output of the function.
fn check_selector(
    problems: &mut Vec<String>,
    name: &str,
    function: &str,
    selector: &Value,
    outputs: Option<&Vec<Value>>,
) {
    for (field, source) in selector.as_object().into_iter().flatten() {
        if source.is_object() {
            check_selector(problems, name, function, source, outputs);
            continue;
        }
        let Some(source) = source.as_str() else {
            continue;
        };
        let Some(payload_field) = source.strip_prefix("$.Payload.") else {
            continue;
        };
        match outputs {
            None => problems.push(format!(
                "no sample outputs of {function} to check `{name}` against"
            )),
            Some(outs) => {
                for out in outs {
                    if lookup(out, payload_field).is_none() {
                        problems.push(format!(
                            "state `{name}` selects `{source}` ({field}), but {function} output has no `{payload_field}`: {out}"
                        ));
                    }
                }
            }
        }
    }
}

/// Records which state path each selector (and nested object) fills.
fn register(
    produced: &mut BTreeMap<String, (String, Value)>,
    path: &str,
    function: &str,
    selector: &Value,
) {
    if path != "$" {
        produced.insert(path.to_string(), (function.to_string(), selector.clone()));
    }
    for (key, v) in selector.as_object().into_iter().flatten() {
        if v.is_object() {
            let nested = if path == "$" {
                format!("$.{key}")
            } else {
                format!("{path}.{key}")
            };
            register(produced, &nested, function, v);
        }
    }
}

#[derive(Debug, Clone)]
enum Expect {
    StringValue(String),
    String,
    Boolean,
    Number,
    Integer,
    Any,
}

impl Expect {
    fn accepts(&self, v: &Value) -> bool {
        match self {
            Expect::StringValue(_) | Expect::String => v.is_string(),
            Expect::Boolean => v.is_boolean(),
            Expect::Number | Expect::Integer => v.is_number(),
            Expect::Any => true,
        }
    }
}

fn collect_choice_reads(rule: &Value, reads: &mut Vec<(String, Expect)>) {
    for key in ["And", "Or"] {
        for inner in rule[key].as_array().into_iter().flatten() {
            collect_choice_reads(inner, reads);
        }
    }
    if let Some(inner) = rule.get("Not") {
        collect_choice_reads(inner, reads);
    }
    let Some(var) = rule["Variable"].as_str() else {
        return;
    };
    let expect = rule
        .as_object()
        .into_iter()
        .flatten()
        .find_map(|(k, v)| match k.as_str() {
            "StringEquals" => Some(Expect::StringValue(
                v.as_str().unwrap_or_default().to_string(),
            )),
            k if k.starts_with("String") => Some(Expect::String),
            k if k.starts_with("Boolean") => Some(Expect::Boolean),
            k if k.starts_with("Numeric") => Some(Expect::Number),
            _ => None,
        })
        .unwrap_or(Expect::Any);
    reads.push((var.to_string(), expect));
}

/// `$.record.retry` → (`$.record`, `retry`).
fn split_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("$.")?;
    let (first, field) = rest.split_once('.')?;
    Some((format!("$.{first}"), field.to_string()))
}

fn lookup<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

fn next_targets(state: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |v: &Value| {
        if let Some(s) = v.as_str() {
            out.push(s.to_string());
        }
    };
    push(&state["Next"]);
    push(&state["Default"]);
    for c in state["Choices"].as_array().into_iter().flatten() {
        push(&c["Next"]);
    }
    for c in state["Catch"].as_array().into_iter().flatten() {
        push(&c["Next"]);
    }
    out
}
