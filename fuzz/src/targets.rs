//! The fuzz targets: a generator and a check for each kind of outside input.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use stevedore_domain::alert::Alert;
use stevedore_domain::memory::{MemoryRunStore, RecordingTaskTokens};
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::RunRecord;
use stevedore_domain::task::TaskDescription;
use stevedore_domain::JobSpec;
use stevedore_engine::intrinsics::Call;
use stevedore_engine::path::{Env, Path};
use stevedore_engine::{Definition, Engine, Failure, Resources, Status, TaskCall};

use crate::gen::Gen;
use crate::Target;

pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "job-spec",
            generate: job_spec,
            check: check_job_spec,
        },
        Target {
            name: "jsonpath",
            generate: jsonpath,
            check: check_jsonpath,
        },
        Target {
            name: "intrinsics",
            generate: intrinsic,
            check: check_intrinsic,
        },
        Target {
            name: "definition",
            generate: definition,
            check: check_definition,
        },
        Target {
            name: "execution",
            generate: execution,
            check: check_execution,
        },
        Target {
            name: "ecs-event",
            generate: ecs_event,
            check: check_ecs_event,
        },
        Target {
            name: "alert",
            generate: alert,
            check: check_alert,
        },
        Target {
            name: "jsonata",
            generate: jsonata,
            check: check_jsonata,
        },
    ]
}

// ---- job specs ----------------------------------------------------------

fn job_spec(g: &mut Gen) -> Value {
    let mut spec = json!({
        "job": "orders-ingest",
        "taskDefinition": "etl-python:12",
        "container": "app",
        "command": ["python", "-m", "ingest"],
        "environment": {"TARGET": "raw"},
        "cpu": 1024,
        "memory": 4096,
        "capacity": "spot-with-fallback",
        "timeout": "45m",
        "retry": {"maxAttempts": 3, "on": ["CapacityUnavailable", "ExitedNonZero"], "exitCodes": [75], "delay": "30s", "backoffRate": 2},
        "concurrency": {"max": 1, "whenBusy": "skip"},
        "notify": {"onFailure": true, "onRecovery": true},
        "tags": {"team": "data"}
    });
    // Field by field, values of the right shape but awkward content.
    for field in ["job", "taskDefinition", "container", "capacity", "timeout"] {
        if g.chance(0.3) {
            spec[field] = json!(g.string());
        }
    }
    for field in ["cpu", "memory"] {
        if g.chance(0.3) {
            spec[field] = g.number();
        }
    }
    if g.chance(0.3) {
        spec["retry"]["maxAttempts"] = g.number();
    }
    if g.chance(0.3) {
        spec["retry"]["delay"] = json!(g.string());
    }
    if g.chance(0.3) {
        spec["retry"]["backoffRate"] = g.number();
    }
    if g.chance(0.3) {
        spec["concurrency"]["max"] = g.number();
    }
    if g.chance(0.2) {
        let n = g.below(40);
        let mut env = Map::new();
        for _ in 0..n {
            let k = g.string();
            env.insert(k, json!(g.string()));
        }
        spec["environment"] = Value::Object(env);
    }
    g.mutate(spec, 3)
}

fn check_job_spec(input: &Value) -> Result<(), String> {
    let Ok(spec) = JobSpec::from_value(input) else {
        return Ok(());
    };
    // A spec that parses has a JSON form that parses back to itself.
    let again = JobSpec::from_value(&spec.to_value())
        .map_err(|e| format!("the JSON form of a valid spec does not parse: {e}"))?;
    if again != spec {
        return Err("the JSON form of a valid spec parses to another spec".into());
    }
    Ok(())
}

// ---- JSONPath -------------------------------------------------------------

fn path_text(g: &mut Gen, depth: usize) -> String {
    let mut p = String::from(if g.chance(0.15) { "$$" } else { "$" });
    for _ in 0..g.below(6) {
        let seg = match g.below(9) {
            0 => format!(
                ".{}",
                g.pick(&["a", "b", "items", "n", "Execution", "Id", "é"])
            ),
            1 => format!("['{}']", g.pick(&["a", "odd key", "", "é"])),
            2 => format!("[{}]", g.int()),
            3 => {
                let part = |g: &mut Gen| {
                    if g.chance(0.3) {
                        String::new()
                    } else {
                        g.int().to_string()
                    }
                };
                let (a, b, c) = (part(g), part(g), part(g));
                if g.chance(0.5) {
                    format!("[{a}:{b}:{c}]")
                } else {
                    format!("[{a}:{b}]")
                }
            }
            4 => "[*]".into(),
            5 => ".*".into(),
            6 => format!("..{}", g.pick(&["a", "n", "*"])),
            7 if depth < 20 => {
                let inner = path_text(g, depth + 1);
                let inner = inner.trim_start_matches('$');
                let op = g.pick(&["", " == ", " != ", " < ", " >= "]);
                if op.is_empty() {
                    format!("[?(@{inner})]")
                } else {
                    let lit = match g.below(3) {
                        0 => g.int().to_string(),
                        1 => format!("'{}'", g.pick(&["a", "x y", ""])),
                        _ => "true".into(),
                    };
                    format!("[?(@{inner}{op}{lit})]")
                }
            }
            _ => g.string(),
        };
        p.push_str(&seg);
    }
    p
}

fn jsonpath(g: &mut Gen) -> Value {
    let path = path_text(g, 0);
    let input = if g.chance(0.5) {
        json!({"a": [1, {"n": 2, "a": [3, 4]}, "x"], "b": {"a": {"n": 5}}, "items": [{"n": 1}, {"n": 9}]})
    } else {
        g.value(4)
    };
    json!({"path": path, "input": input, "write": g.value(1)})
}

fn check_jsonpath(input: &Value) -> Result<(), String> {
    let Some(text) = input["path"].as_str() else {
        return Ok(());
    };
    let Ok(path) = Path::parse(text) else {
        return Ok(());
    };
    let ctx = json!({"Execution": {"Id": "arn:x", "Name": "e"}, "State": {"Name": "s"}});
    // `$v...` paths read a variable that holds the input too.
    let mut vars = Map::new();
    vars.insert("v".into(), input["input"].clone());
    let env = Env::new(&ctx, &vars);
    let selected = path.select(&input["input"], &env);
    let exists = path.exists(&input["input"], &env);
    if path.is_definite() {
        if let (Ok(_), Ok(false)) = (&selected, &exists) {
            return Err(format!("`{text}` selects a value that does not exist"));
        }
    } else if let Ok(v) = &selected {
        if !v.is_array() {
            return Err(format!("the indefinite `{text}` gave a non-array"));
        }
    }
    if path.is_definite() && !path.is_context() {
        if let Ok(out) = path.set(input["input"].clone(), input["write"].clone()) {
            // What was written is what the path now selects.
            if path.select(&out, &env).ok().as_ref() != Some(&input["write"]) {
                return Err(format!("`{text}` does not select what it wrote"));
            }
        }
    }
    Ok(())
}

// ---- intrinsic functions ---------------------------------------------------

const FUNCTIONS: &[(&str, usize)] = &[
    ("States.Format", 3),
    ("States.StringToJson", 1),
    ("States.JsonToString", 1),
    ("States.Array", 3),
    ("States.ArrayPartition", 2),
    ("States.ArrayContains", 2),
    ("States.ArrayRange", 3),
    ("States.ArrayGetItem", 2),
    ("States.ArrayLength", 1),
    ("States.ArrayUnique", 1),
    ("States.Base64Encode", 1),
    ("States.Base64Decode", 1),
    ("States.Hash", 2),
    ("States.JsonMerge", 3),
    ("States.MathRandom", 2),
    ("States.MathAdd", 2),
    ("States.StringSplit", 2),
    ("States.UUID", 0),
];

fn call_text(g: &mut Gen, depth: usize) -> String {
    let (name, arity) = *g.pick(FUNCTIONS);
    let n = if g.chance(0.8) { arity } else { g.below(5) };
    let args: Vec<String> = (0..n)
        .map(|_| match g.below(7) {
            0 if depth < 20 => call_text(g, depth + 1),
            1 => g.int().to_string(),
            2 => format!("'{}'", g.string().replace('\'', "\\'")),
            3 => g
                .pick(&["$.a", "$.s", "$.n", "$.arr", "$$.Execution.Name", "$.a[0]"])
                .to_string(),
            4 => g
                .pick(&["true", "false", "null", "1.5", "-0", "1e400"])
                .to_string(),
            5 => g
                .pick(&[
                    "'{}'",
                    "'{} {}'",
                    "'\\{}'",
                    "'MD5'",
                    "'SHA-512'",
                    "'SHA-3'",
                    "','",
                ])
                .to_string(),
            _ => g.number().to_string(),
        })
        .collect();
    format!("{name}({})", args.join(", "))
}

fn intrinsic(g: &mut Gen) -> Value {
    let mut text = call_text(g, 0);
    if g.chance(0.1) {
        // Cut or damage the text.
        let cut = g.below(text.len() + 1);
        let mut end = cut;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    json!({
        "call": text,
        "input": {"a": [1, 2, 2, "x"], "s": g.string(), "n": g.number(), "arr": g.value(2)},
    })
}

fn check_intrinsic(input: &Value) -> Result<(), String> {
    let Some(text) = input["call"].as_str() else {
        return Ok(());
    };
    let Ok(call) = Call::parse(text) else {
        return Ok(());
    };
    let ctx = json!({"Execution": {"Name": "e"}});
    let _ = call.eval(&input["input"], &Env::context_only(&ctx));
    Ok(())
}

// ---- JSONata expressions ------------------------------------------------------

const JSONATA_ATOMS: &[&str] = &[
    "$states.input",
    "$states.input.a",
    "$states.input.a[0]",
    "$states.input.items.n",
    "$states.context.Execution.Name",
    "$v",
    "$v.deep.er",
    "$",
    "a.b",
    "*",
    "**",
    "%",
    "1",
    "-1.5e300",
    "1e400",
    "'text'",
    "\"\\u0041\"",
    "true",
    "null",
    "[]",
    "{}",
    "[1..5]",
    "[0..99999]",
    "/a+/i",
    "function($x){$x * 2}",
    "$x",
];

const JSONATA_FUNCTIONS: &[&str] = &[
    "$sum",
    "$count",
    "$string",
    "$number",
    "$length",
    "$uppercase",
    "$substring",
    "$split",
    "$join",
    "$map",
    "$filter",
    "$reduce",
    "$sort",
    "$reverse",
    "$keys",
    "$merge",
    "$append",
    "$exists",
    "$not",
    "$boolean",
    "$round",
    "$power",
    "$sqrt",
    "$abs",
    "$distinct",
    "$partition",
    "$range",
    "$hash",
    "$random",
    "$parse",
    "$uuid",
    "$lookup",
    "$each",
    "$formatNumber",
    "$average",
    "$type",
    "$eval",
    "$now",
    "$fromMillis",
    "$error",
    "$assert",
    "$replace",
    "$match",
    "$contains",
    "$zip",
    "$single",
    "$spread",
    "$sift",
];

const JSONATA_OPERATORS: &[&str] = &[
    "+", "-", "*", "/", "%", "=", "!=", "<", "<=", ">", ">=", "&", "and", "or", "in", "~>", ".",
    "..", "??", "?:",
];

fn jsonata_text(g: &mut Gen, depth: usize) -> String {
    if depth > 6 {
        return g.pick(JSONATA_ATOMS).to_string();
    }
    match g.below(10) {
        0 | 1 => g.pick(JSONATA_ATOMS).to_string(),
        2 => g.int().to_string(),
        3 => format!("'{}'", g.string().replace('\'', "")),
        4 => {
            let f = g.pick(JSONATA_FUNCTIONS).to_string();
            let args: Vec<String> = (0..g.below(4))
                .map(|_| jsonata_text(g, depth + 1))
                .collect();
            format!("{f}({})", args.join(", "))
        }
        5 => format!(
            "{} {} {}",
            jsonata_text(g, depth + 1),
            g.pick(JSONATA_OPERATORS),
            jsonata_text(g, depth + 1)
        ),
        6 => format!(
            "{}[{}]",
            jsonata_text(g, depth + 1),
            jsonata_text(g, depth + 1)
        ),
        7 => format!(
            "{{{}: {}}}",
            jsonata_text(g, depth + 1),
            jsonata_text(g, depth + 1)
        ),
        8 => format!(
            "({} ? {} : {})",
            jsonata_text(g, depth + 1),
            jsonata_text(g, depth + 1),
            jsonata_text(g, depth + 1)
        ),
        _ => format!(
            "($x := {}; {})",
            jsonata_text(g, depth + 1),
            jsonata_text(g, depth + 1)
        ),
    }
}

fn jsonata(g: &mut Gen) -> Value {
    let mut text = jsonata_text(g, 0);
    if g.chance(0.2) {
        // Damage it: cut it, or repeat a piece of it.
        let cut = g.below(text.len() + 1);
        let mut end = cut;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if g.chance(0.5) {
            text.truncate(end);
        } else {
            let piece = text[..end].to_string();
            text = piece.repeat(1 + g.below(50)) + &text[end..];
        }
    }
    json!({
        "expr": text,
        "input": {"a": [1, 2, "x"], "items": [{"n": 1}, {"n": 2}], "s": g.string()},
        "v": g.value(3),
    })
}

fn check_jsonata(input: &Value) -> Result<(), String> {
    let Some(expr) = input["expr"].as_str() else {
        return Ok(());
    };
    let _ = stevedore_engine::jsonata::check(expr);
    let mut vars = Map::new();
    vars.insert("v".into(), input["v"].clone());
    let states = json!({"input": input["input"], "context": {"Execution": {"Name": "e"}}});
    let first = stevedore_engine::jsonata::eval(expr, states.clone(), &vars);
    // What comes back is JSON within the engine's nesting limit, and (for
    // an expression without randomness or the clock) the same every time.
    if let Ok(v) = &first {
        let text = serde_json::to_string(v).map_err(|e| e.to_string())?;
        serde_json::from_str::<Value>(&text)
            .map_err(|e| format!("`{expr}` gave JSON that does not read back: {e}"))?;
    }
    // Randomness and the clock differ by design; what lists an object's
    // members comes in the crate's hash order (a known gap, README).
    let random = [
        "$random", "$uuid", "$now", "$millis", "$keys", "$each", "*", "$string", "$spread",
        "$sift", "$merge",
    ];
    let timed_out = matches!(&first, Err(stevedore_engine::jsonata::Problem::Threw(e)) if e.starts_with("U1001"));
    if !random.iter().any(|r| expr.contains(r)) && !timed_out {
        let second = stevedore_engine::jsonata::eval(expr, states.clone(), &vars);
        if first != second {
            return Err(format!("`{expr}` gave {first:?}, then {second:?}"));
        }
    }
    Ok(())
}

// ---- definitions and executions -------------------------------------------

const STATE_NAMES: &[&str] = &["A", "B", "C", "D", "E"];

fn state(g: &mut Gen, depth: usize) -> Value {
    let next = |g: &mut Gen| -> (String, Value) {
        if g.chance(0.35) {
            ("End".into(), json!(true))
        } else {
            ("Next".into(), json!(g.pick(STATE_NAMES)))
        }
    };
    let mut s = match g.below(8) {
        0 => json!({"Type": "Pass"}),
        1 => json!({"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke"}),
        2 => json!({"Type": "Choice", "Default": g.pick(STATE_NAMES),
            "Choices": [{"Variable": path_text(g, 0), g.pick(&["NumericGreaterThan", "StringEquals", "IsPresent", "BooleanEquals", "TimestampLessThan", "StringMatches"]).to_string(): g.value(0), "Next": g.pick(STATE_NAMES)}]}),
        3 => {
            let how = *g.pick(&["Seconds", "SecondsPath", "Timestamp", "TimestampPath"]);
            let v = match how {
                "Seconds" => g.number(),
                "Timestamp" => json!(g.string()),
                _ => json!(g.pick(&["$.n", "$.t", "$.a"])),
            };
            json!({"Type": "Wait", how: v})
        }
        4 => json!({"Type": "Succeed"}),
        5 => json!({"Type": "Fail", "Error": g.string(), "Cause": g.string()}),
        6 if depth < 2 => {
            json!({"Type": "Parallel", "Branches": [machine(g, depth + 1), machine(g, depth + 1)]})
        }
        _ if depth < 2 => {
            json!({"Type": "Map", "ItemsPath": g.pick(&["$.a", "$.items", "$"]), "MaxConcurrency": g.below(3),
            "ItemProcessor": machine(g, depth + 1)})
        }
        _ => json!({"Type": "Pass"}),
    };
    let kind = s["Type"].as_str().unwrap_or("").to_string();
    if !matches!(kind.as_str(), "Choice" | "Succeed" | "Fail") {
        let (k, v) = next(g);
        s[k] = v;
    }
    if matches!(kind.as_str(), "Pass" | "Task" | "Parallel" | "Map") {
        if g.chance(0.4) {
            s["Parameters"] = json!({"x.$": if g.chance(0.5) { path_text(g, 0) } else { call_text(g, 0) }, "k": g.value(1)});
        }
        if g.chance(0.3) {
            s["ResultPath"] = json!(g.pick(&["$.r", "$", "$.a.b", "$.a[0]", "$$.x"]));
        }
        if g.chance(0.2) {
            s["OutputPath"] = json!(path_text(g, 0));
        }
    }
    if matches!(kind.as_str(), "Task" | "Parallel" | "Map") {
        if g.chance(0.5) {
            s["Retry"] = json!([{"ErrorEquals": [g.pick(&["States.ALL", "Boom", "States.TaskFailed"])],
                "IntervalSeconds": g.number(), "MaxAttempts": g.below(4), "BackoffRate": g.number(),
                "JitterStrategy": g.pick(&["FULL", "NONE"])}]);
        }
        if g.chance(0.4) {
            s["Catch"] = json!([{"ErrorEquals": ["States.ALL"], "Next": g.pick(STATE_NAMES), "ResultPath": "$.error"}]);
        }
        if kind == "Task" && g.chance(0.3) {
            s["TimeoutSeconds"] = g.number();
        }
    }
    if g.chance(0.2) {
        s["InputPath"] = json!(path_text(g, 0));
    }
    if !matches!(kind.as_str(), "Succeed" | "Fail") && g.chance(0.3) {
        s["Assign"] = json!({"v": g.value(1), "w.$": path_text(g, 0)});
    }
    if g.chance(0.2) {
        // The same state in JSONata: the JSONPath fields become expressions.
        s["QueryLanguage"] = json!("JSONata");
        for f in [
            "InputPath",
            "OutputPath",
            "Parameters",
            "ResultPath",
            "ResultSelector",
            "ItemsPath",
        ] {
            s.as_object_mut().map(|o| o.remove(f));
        }
        if s.get("Assign").is_some() {
            s["Assign"] = json!({"v": format!("{{% {} %}}", jsonata_text(g, 3))});
        }
        if !matches!(kind.as_str(), "Fail") {
            s["Output"] = json!({"o": format!("{{% {} %}}", jsonata_text(g, 2)), "k": g.value(1)});
        }
        if kind == "Map" {
            s["Items"] = json!(format!(
                "{{% {} %}}",
                g.pick(&["$states.input.a", "$states.input", "[1,2]", "$v"])
            ));
        }
        if kind == "Choice" {
            s["Choices"] = json!([{"Condition": format!("{{% {} %}}", jsonata_text(g, 3)), "Next": g.pick(STATE_NAMES)}]);
        }
    }
    s
}

fn machine(g: &mut Gen, depth: usize) -> Value {
    let n = 1 + g.below(STATE_NAMES.len());
    let mut states = Map::new();
    for name in &STATE_NAMES[..n] {
        states.insert(name.to_string(), state(g, depth));
    }
    // Most links point at states that exist, so most machines validate;
    // most point forward, so most executions end before the history quota.
    for (k, s) in states.values_mut().enumerate() {
        for field in ["Next", "Default"] {
            if s.get(field).is_some() && g.chance(0.9) {
                let to = if k + 1 < n && g.chance(0.85) {
                    k + 1 + g.below(n - k - 1)
                } else {
                    g.below(n)
                };
                s[field] = json!(STATE_NAMES[to]);
            }
        }
    }
    json!({"StartAt": "A", "States": states})
}

fn definition(g: &mut Gen) -> Value {
    let m = machine(g, 0);
    let m = g.mutate(m, 2);
    json!({"definition": m})
}

fn check_definition(input: &Value) -> Result<(), String> {
    let _ = Definition::from_value(&input["definition"]);
    Ok(())
}

/// A task resource whose answers the input decides.
struct Scripted {
    answers: Vec<Value>,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Resources for Scripted {
    async fn call(&self, call: TaskCall) -> Result<Value, Failure> {
        let i = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.answers.get(i % self.answers.len().max(1)) {
            Some(Value::String(e)) if e.starts_with("fail:") => {
                Err(Failure::new(e.trim_start_matches("fail:"), "scripted"))
            }
            Some(v) => Ok(v.clone()),
            None => Ok(call.parameters),
        }
    }
}

fn execution(g: &mut Gen) -> Value {
    let mut m = machine(g, 0);
    if g.chance(0.3) {
        m["TimeoutSeconds"] = json!(1 + g.below(100_000));
    }
    let answers: Vec<Value> = (0..1 + g.below(4))
        .map(|_| {
            if g.chance(0.4) {
                json!(format!(
                    "fail:{}",
                    g.pick(&["Boom", "States.TaskFailed", "States.Timeout"])
                ))
            } else {
                g.value(2)
            }
        })
        .collect();
    let input = if g.chance(0.6) {
        json!({"a": [1, 2, 3], "items": [{"n": 1}], "n": g.number(), "t": g.string(), "r": null})
    } else {
        g.value(3)
    };
    json!({"definition": m, "input": input, "answers": answers})
}

fn check_execution(input: &Value) -> Result<(), String> {
    let Ok(def) = Definition::from_value(&input["definition"]) else {
        return Ok(());
    };
    let resources = Arc::new(Scripted {
        answers: input["answers"].as_array().cloned().unwrap_or_default(),
        calls: Default::default(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    let engine = Engine::new(resources).with_seed(7);
    let outcome = rt.block_on(engine.execute(&def, "fuzz", "e1", input["input"].clone()));
    // The history is numbered 1, 2, 3, ... and ends with the execution's end.
    for (i, e) in outcome.history.iter().enumerate() {
        if e.id != i as u64 + 1 {
            return Err(format!("history event {} has id {}", i + 1, e.id));
        }
    }
    let last = outcome
        .history
        .last()
        .map(|e| e.kind.as_str())
        .unwrap_or("");
    let want = match outcome.status {
        Status::Succeeded => "ExecutionSucceeded",
        Status::Failed => "ExecutionFailed",
        Status::TimedOut => "ExecutionTimedOut",
    };
    if last != want {
        return Err(format!(
            "{:?} execution's history ends with {last}",
            outcome.status
        ));
    }
    match outcome.status {
        Status::Succeeded if outcome.output.is_none() => Err("a success without output".into()),
        // Only a Fail state without an Error ends an execution without one
        // (AWS reports it as null).
        Status::Failed if outcome.error.is_none() => {
            let n = outcome.history.len();
            let by_fail_state = n >= 2
                && outcome.history[n - 2].kind == "FailStateEntered"
                && outcome.history[n - 2].details["Error"] == "";
            if by_fail_state {
                Ok(())
            } else {
                Err("a failure without an error".into())
            }
        }
        _ => Ok(()),
    }
}

// ---- ECS task state change events -------------------------------------------

const TASK_ARN: &str = "arn:aws:ecs:eu-west-1:111122223333:task/stevedore/0123456789abcdef";

fn ecs_event(g: &mut Gen) -> Value {
    let stop = *g.pick(&[
        "EssentialContainerExited",
        "TaskFailedToStart",
        "SpotInterruption",
        "UserInitiated",
        "TerminationNotice",
        "ServiceSchedulerInitiated",
        "Something",
    ]);
    let reason = g
        .pick(&[
            "Essential container in task exited",
            "CannotPullContainerError: pull image manifest has been retried 5 time(s): not found",
            "ResourceInitializationError: unable to pull secrets: ResourceNotFoundException",
            "CannotStartContainerError: exec: \"etl\": executable file not found in $PATH",
            "OutOfMemoryError: Container killed due to memory usage",
            "Stevedore: job timeout (45m)",
        ])
        .to_string();
    let exit = if g.chance(0.8) {
        json!(g.pick(&[0, 1, 3, 137, 143, -1, 255]))
    } else {
        g.number()
    };
    let event = json!({
        "version": "0",
        "id": "e1",
        "detail-type": if g.chance(0.9) { "ECS Task State Change" } else { "ECS Container Instance State Change" },
        "source": "aws.ecs",
        "account": "111122223333",
        "time": "2026-11-24T06:05:00Z",
        "region": "eu-west-1",
        "resources": [TASK_ARN],
        "detail": {
            "taskArn": if g.chance(0.8) { TASK_ARN.to_string() } else { g.string() },
            "clusterArn": "arn:aws:ecs:eu-west-1:111122223333:cluster/stevedore",
            "lastStatus": g.pick(&["STOPPED", "RUNNING", "DEPROVISIONING", ""]),
            "desiredStatus": "STOPPED",
            "startedBy": if g.chance(0.8) { "stevedore/run-1".to_string() } else { g.string() },
            "stopCode": stop,
            "stoppedReason": reason,
            "createdAt": g.pick(&["2026-11-24T06:00:00.123Z", "2026-11-24T06:00:00Z", "nonsense"]),
            "stoppedAt": "2026-11-24T06:05:00Z",
            "cpu": "1024",
            "memory": "4096",
            "capacityProviderName": g.pick(&["FARGATE", "FARGATE_SPOT"]),
            "containers": [
                {"name": g.pick(&["app", "log-router", ""]), "exitCode": exit, "lastStatus": "STOPPED", "reason": reason},
            ],
        }
    });
    let event = g.mutate(event, 3);
    json!({"event": event, "run_task_matches": g.chance(0.7), "run_status": g.pick(&["RUNNING", "PENDING", "STOPPING", "SUCCEEDED"])})
}

fn run_record(status: &str, task_arn: Option<&str>) -> Option<RunRecord> {
    let spec = JobSpec::from_value(
        &json!({"job": "orders", "taskDefinition": "etl:1", "container": "app", "timeout": "45m"}),
    )
    .ok()?;
    serde_json::from_value(json!({
        "runId": "run-1",
        "job": "orders",
        "execution": {"id": "arn:aws:states:eu-west-1:111122223333:execution:run-job:e1", "name": "e1", "startTime": "2026-11-24T06:00:00Z"},
        "attempt": 1,
        "maxAttempts": 3,
        "status": status,
        "spec": spec.to_value(),
        "capacity": "on-demand",
        "createdAt": "2026-11-24T06:00:00Z",
        "deadline": "2026-11-24T06:45:00Z",
        "taskArn": task_arn,
        "taskToken": "token-1",
        "expiresAt": 1_800_000_000,
    }))
    .ok()
}

fn check_ecs_event(input: &Value) -> Result<(), String> {
    // What classify_task makes of the task, on its own.
    if let Ok(task) = serde_json::from_value::<TaskDescription>(input["event"]["detail"].clone()) {
        for main in [Some("app"), None] {
            let out = stevedore_domain::failure::classify_task(&task, main, None);
            if out.class.is_none() && out.exit_code != Some(0) {
                return Err(format!("a success without exit code 0: {out:?}"));
            }
        }
    }
    // And the task-events handler, with a run the event may belong to.
    let status = input["run_status"].as_str().unwrap_or("RUNNING");
    let arn = if input["run_task_matches"] == json!(true) {
        Some(TASK_ARN)
    } else {
        Some("arn:other")
    };
    let Some(run) = run_record(status, arn) else {
        return Err("the fuzzer's own run record does not parse".into());
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let runs = Arc::new(MemoryRunStore::new());
        let _ = runs.create_run(&run).await;
        let deps = task_events::Deps {
            runs: runs.clone(),
            tokens: Arc::new(RecordingTaskTokens::default()),
        };
        let _ = task_events::function_handler(&deps, input["event"].clone()).await;
        // Whatever happened, the run is in a status it may be in.
        if let Ok(Some(after)) = runs.get_run("run-1").await {
            if after.status != run.status && !after.status.allowed_from().contains(&run.status) {
                return Err(format!(
                    "the run moved from {} to {}",
                    run.status, after.status
                ));
            }
        }
        Ok(())
    })
}

// ---- alerts ------------------------------------------------------------------

fn alert(g: &mut Gen) -> Value {
    let mut a = json!({
        "kind": g.pick(&["failure", "recovery"]),
        "job": "orders-ingest",
        "runId": "orders-ingest-20261124T060000-f3b9ce4d-1",
        "attempt": g.below(12),
        "maxAttempts": g.below(12),
        "class": g.pick(&["ExitedNonZero", "OutOfMemory", "TimedOut", "CapacityUnavailable", "ContainerMisconfigured", "StoppedByUser"]),
        "explanation": g.string(),
        "hint": g.string(),
        "message": g.string(),
        "exitCode": g.int(),
        "stopCode": g.string(),
        "logTail": {"lines": (0..g.below(60)).map(|_| g.string()).collect::<Vec<_>>(), "truncated": g.chance(0.5)},
        "containers": [{"name": g.string(), "exitCode": g.int(), "reason": g.string()}],
        "executionArn": "arn:aws:states:us-east-1:123456789012:execution:run-job:e",
        "region": "us-east-1",
    });
    if g.chance(0.3) {
        a["job"] = json!(g.string());
    }
    let a = g.mutate(a, 3);
    json!({"subject": if g.chance(0.5) { Value::String(g.string()) } else { Value::Null }, "alert": a})
}

fn check_alert(input: &Value) -> Result<(), String> {
    let message = input["alert"].to_string();
    let body = slack_notifier::slack_message_for(input["subject"].as_str(), &message);
    let broken = stevedore_domain::slack::check_limits(&body);
    if !broken.is_empty() {
        return Err(format!(
            "the Slack message breaks Slack's limits: {broken:?}"
        ));
    }
    if let Ok(alert) = serde_json::from_value::<Alert>(input["alert"].clone()) {
        let subject = alert.subject();
        if subject.len() >= 100 || !subject.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err(format!("an SNS subject SNS would refuse: {subject:?}"));
        }
        let _ = alert.email_text();
    }
    Ok(())
}
