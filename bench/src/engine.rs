//! The engine's time per execution: every case of the ASL conformance
//! sample (`../shared/asl-conformance/cases`, 393 executions recorded on
//! AWS) and a JSONata-heavy execution, each run repeatedly on a paused
//! clock (waits take no time), so what is measured is the interpreter.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use stevedore_engine::{Definition, Engine, Failure, Resources, TaskCall};

/// The sample has no Task states; a task here would be a mistake.
struct NoTasks;

#[async_trait]
impl Resources for NoTasks {
    async fn call(&self, call: TaskCall) -> Result<Value, Failure> {
        Err(Failure::new("NoTasks", call.resource))
    }
}

/// One execution's time (definition parsed once, outside the timing).
fn time_execution(def: &Definition, input: &Value, repeat: usize) -> Vec<Duration> {
    crate::virtual_time(async {
        let engine = Engine::new(Arc::new(NoTasks));
        let mut out = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            let start = Instant::now();
            let o = engine.execute(def, "bench", "e1", input.clone()).await;
            out.push(start.elapsed());
            std::hint::black_box(o);
        }
        out
    })
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn row(label: &str, mut xs: Vec<Duration>) {
    let executions = xs.len();
    xs.sort();
    println!(
        "| {label} | {executions} | {:.1} µs | {:.1} µs | {:.1} µs |",
        quantile(&xs, 0.5).as_secs_f64() * 1e6,
        quantile(&xs, 0.99).as_secs_f64() * 1e6,
        xs.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
    )
}

/// A JSONata-heavy execution: a Map over 100 items, each iteration a
/// Pass with four expressions and an Assign, a Choice on a condition and
/// a Pass that reads the variable; then a Pass that aggregates.
pub fn jsonata_heavy() -> (Value, Value, usize) {
    let def = json!({
        "QueryLanguage": "JSONata",
        "StartAt": "Each",
        "States": {
            "Each": {"Type": "Map", "Items": "{% $states.input.orders %}", "MaxConcurrency": 10,
                "ItemProcessor": {"StartAt": "Price", "States": {
                    "Price": {"Type": "Pass", "Assign": {"net": "{% $states.input.qty * $states.input.price %}"},
                        "Output": {
                            "id": "{% $uppercase($states.input.id) %}",
                            "total": "{% $round($states.input.qty * $states.input.price * 1.2, 2) %}",
                            "tags": "{% $join($states.input.tags, ',') %}",
                            "big": "{% $states.input.qty > 5 %}"
                        }, "Next": "Big?"},
                    "Big?": {"Type": "Choice", "Choices": [
                        {"Condition": "{% $states.input.big %}", "Next": "Flag"}
                    ], "Default": "Keep"},
                    "Flag": {"Type": "Pass", "Output": "{% $merge([$states.input, {'net': $net, 'flag': true}]) %}", "End": true},
                    "Keep": {"Type": "Pass", "Output": "{% $merge([$states.input, {'net': $net}]) %}", "End": true}
                }},
                "Next": "Sum"},
            "Sum": {"Type": "Pass", "Output": {
                "orders": "{% $count($states.input) %}",
                "total": "{% $sum($states.input.total) %}",
                "flagged": "{% $count($states.input[flag]) %}"
            }, "End": true}
        }
    });
    let orders: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("o-{i}"), "qty": i % 10, "price": 9.99, "tags": ["a", "b"]}))
        .collect();
    // Expressions evaluated: 1 (Items) + 100 × (1 Assign + 4 Output + 1
    // Condition + 1 Output) + 3.
    (def, json!({"orders": orders}), 1 + 100 * 7 + 3)
}

pub fn run(cases: &Path, repeat: usize) {
    let mut all = Vec::new();
    let mut jsonata = Vec::new();
    let mut jsonpath = Vec::new();
    let mut files: Vec<_> = match std::fs::read_dir(cases) {
        Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) => {
            eprintln!("{}: {e}", cases.display());
            std::process::exit(2);
        }
    };
    files.sort();
    let parse_start = Instant::now();
    let mut parsed = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let Ok(case) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Ok(def) = Definition::from_value(&case["definition"]) else {
            continue;
        };
        let tagged = case["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "jsonata"));
        parsed.push((def, case["input"].clone(), tagged));
    }
    let parse_each = parse_start.elapsed() / parsed.len().max(1) as u32;
    for (def, input, tagged) in &parsed {
        let times = time_execution(def, input, repeat);
        if *tagged {
            jsonata.extend(times.iter().copied());
        } else {
            jsonpath.extend(times.iter().copied());
        }
        all.extend(times);
    }
    println!("| executions | runs | median | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    row(&format!("all {} sample cases", parsed.len()), all);
    row("JSONPath cases", jsonpath);
    row("JSONata cases", jsonata);
    let (def, input, expressions) = jsonata_heavy();
    let def = Definition::from_value(&def).expect("the JSONata-heavy definition is valid");
    let heavy = time_execution(&def, &input, repeat.clamp(1, 50));
    let mut sorted = heavy.clone();
    sorted.sort();
    let median = quantile(&sorted, 0.5);
    row(
        &format!("JSONata-heavy (Map of 100, {expressions} expressions)"),
        heavy,
    );
    println!();
    println!(
        "definition parse + check: {:.1} µs per sample definition; JSONata-heavy: {:.1} µs per expression",
        parse_each.as_secs_f64() * 1e6,
        median.as_secs_f64() * 1e6 / expressions as f64
    );
}
