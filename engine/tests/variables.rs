//! Workflow variables, as the Step Functions documentation describes them
//! ("Passing data between states with variables"): `Assign` on Pass, Task,
//! Choice, Wait, Parallel and Map (and in Catch), `$name` wherever a path
//! is allowed, values that take effect after the state (an Assign reads the
//! values from before it), scopes for Map iterations and Parallel branches,
//! the size quotas, and names and references checked with the definition.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use stevedore_engine::{
    Definition, Engine, ExecutionOutcome, Failure, Resources, Status, TaskCall,
};

/// Answers a task with its parameters; `{"fail": "Name"}` raises `Name`.
struct Echo;

#[async_trait]
impl Resources for Echo {
    async fn call(&self, call: TaskCall) -> Result<Value, Failure> {
        match call.parameters.get("fail").and_then(Value::as_str) {
            Some(e) => Err(Failure::new(e, "as asked")),
            None => Ok(call.parameters),
        }
    }
}

async fn run(def: Value, input: Value) -> ExecutionOutcome {
    let def = Definition::from_value(&def).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(Arc::new(Echo))
        .execute(&def, "m", "e1", input)
        .await
}

fn output(o: &ExecutionOutcome) -> Value {
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    o.output.clone().unwrap()
}

fn rejected(def: Value, want: &str) {
    let err = Definition::from_value(&def).unwrap_err().0.join("\n");
    assert!(err.contains(want), "`{want}` not in:\n{err}");
}

#[tokio::test(start_paused = true)]
async fn every_state_type_with_assign_sets_variables_later_states_read() {
    let def = json!({"StartAt": "Pass", "States": {
        "Pass": {"Type": "Pass", "Result": {"n": 1, "list": [7, 8]},
                 "Assign": {"fromPass.$": "$.n", "items.$": "$.list", "literal": "$.not.a.path"}, "Next": "Task"},
        "Task": {"Type": "Task", "Resource": "echo", "Parameters": {"v": 2}, "Assign": {"fromTask.$": "$.v"}, "Next": "Wait"},
        "Wait": {"Type": "Wait", "Seconds": 1, "Assign": {"fromWait": 3}, "Next": "Choice"},
        "Choice": {"Type": "Choice", "Choices": [
            {"Variable": "$fromWait", "NumericEquals": 3, "Assign": {"fromRule": 4}, "Next": "Parallel"}
        ], "Default": "Parallel", "Assign": {"fromDefault": 0}},
        "Parallel": {"Type": "Parallel", "Branches": [
            {"StartAt": "B", "States": {"B": {"Type": "Pass", "Result": 5, "End": true}}}
        ], "Assign": {"fromParallel.$": "$[0]"}, "Next": "Map"},
        "Map": {"Type": "Map", "ItemsPath": "$items", "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Pass", "End": true}}},
                "Assign": {"fromMap.$": "States.ArrayLength($)", "items": []}, "Next": "Read"},
        "Read": {"Type": "Pass", "Parameters": {
            "all.$": "States.Array($fromPass, $fromTask, $fromWait, $fromRule, $fromParallel, $fromMap)",
            "literal.$": "$literal", "items.$": "$items"}, "End": true}
    }});
    // A `.$`-less value is a literal, even when it looks like a path; the
    // Map's Assign replaces `items`, which the last state reads.
    let o = run(def, json!({})).await;
    assert_eq!(
        output(&o),
        json!({"all": [1, 2, 3, 4, 5, 2], "literal": "$.not.a.path", "items": []})
    );
}

#[tokio::test(start_paused = true)]
async fn an_assign_reads_the_values_from_before_the_state() {
    // "Step Functions evaluates all the expressions of an Assign, then sets
    // the variables": `b` gets the old `a`, and the output (Parameters runs
    // before) sees the old value too.
    let def = json!({"StartAt": "One", "States": {
        "One": {"Type": "Pass", "Assign": {"a": 1}, "Next": "Two"},
        "Two": {"Type": "Pass", "Parameters": {"seen.$": "$a"}, "Assign": {"a": 2, "b.$": "$a"}, "Next": "Three"},
        "Three": {"Type": "Pass", "Parameters": {"before.$": "$.seen", "a.$": "$a", "b.$": "$b"}, "End": true}
    }});
    assert_eq!(
        output(&run(def, json!({})).await),
        json!({"before": 1, "a": 2, "b": 1})
    );
}

#[tokio::test(start_paused = true)]
async fn a_jsonpath_assign_reads_the_result_after_result_selector() {
    let def = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "echo", "Parameters": {"raw": 1},
              "ResultSelector": {"selected.$": "$.raw"}, "ResultPath": "$.r",
              "Assign": {"x.$": "$.selected"}, "Next": "Read"},
        "Read": {"Type": "Pass", "Parameters": {"x.$": "$x", "r.$": "$.r"}, "End": true}
    }});
    assert_eq!(
        output(&run(def, json!({"in": 0})).await),
        json!({"x": 1, "r": {"selected": 1}})
    );
}

#[tokio::test(start_paused = true)]
async fn a_catcher_assigns_from_the_error_output() {
    let def = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "echo", "Parameters": {"fail": "Oops"},
              "Assign": {"never": true},
              "Catch": [{"ErrorEquals": ["States.ALL"], "Assign": {"error.$": "$.Error"}, "ResultPath": null, "Next": "Read"}],
              "End": true},
        "Read": {"Type": "Pass", "Parameters": {"error.$": "$error"}, "End": true}
    }});
    assert_eq!(output(&run(def, json!({})).await), json!({"error": "Oops"}));
}

#[tokio::test(start_paused = true)]
async fn branches_and_iterations_read_outer_variables_and_keep_their_own() {
    let def = json!({"StartAt": "Set", "States": {
        "Set": {"Type": "Pass", "Assign": {"x": 42, "items": [1, 2]}, "Next": "Map"},
        "Map": {"Type": "Map", "ItemsPath": "$items", "ItemProcessor": {"StartAt": "Inner", "States": {
            "Inner": {"Type": "Pass", "Assign": {"x": 0, "mine.$": "$"}, "Next": "Read"},
            "Read": {"Type": "Pass", "Parameters": {"x.$": "$x", "mine.$": "$mine"}, "End": true}
        }}, "ResultPath": "$.map", "Next": "Parallel"},
        "Parallel": {"Type": "Parallel", "Branches": [
            {"StartAt": "A", "States": {"A": {"Type": "Pass", "Parameters": {"x.$": "$x"}, "End": true}}},
            {"StartAt": "B", "States": {"B": {"Type": "Pass", "Assign": {"x": -1}, "End": true}}}
        ], "ResultPath": "$.parallel", "Next": "After"},
        "After": {"Type": "Pass", "Parameters": {"x.$": "$x", "map.$": "$.map", "parallel.$": "$.parallel"}, "End": true}
    }});
    let o = run(def, json!({})).await;
    let out = output(&o);
    // Each iteration sees its own `x` and `mine`; the outer `x` is untouched.
    assert_eq!(out["x"], json!(42));
    assert_eq!(
        out["map"],
        json!([{"x": 0, "mine": 1}, {"x": 0, "mine": 2}])
    );
    assert_eq!(out["parallel"][0], json!({"x": 42}));
    let o = run(
        json!({"StartAt": "Set", "States": {
            "Set": {"Type": "Pass", "Assign": {"items": [1, 2]}, "Next": "Map"},
            "Map": {"Type": "Map", "ItemsPath": "$items", "ItemProcessor": {"StartAt": "Inner", "States": {
                "Inner": {"Type": "Pass", "Assign": {"inner.$": "$"}, "Next": "Read"},
                "Read": {"Type": "Pass", "Parameters": {"inner.$": "$inner"}, "End": true}
            }}, "Next": "Outside"},
            "Outside": {"Type": "Pass", "Parameters": {"inner.$": "$inner"}, "End": true}
        }}),
        json!({}),
    )
    .await;
    // Inside, each iteration read its own value; outside, `inner` was never set.
    assert_eq!(o.status, Status::Failed, "{o:?}");
    assert_eq!(o.error.as_deref(), Some("States.Runtime"));
    let cause = o.cause.unwrap();
    assert!(
        cause.contains("'Outside'") && cause.contains("inner"),
        "{cause}"
    );
}

#[tokio::test(start_paused = true)]
async fn variables_are_limited_in_size() {
    let big = "x".repeat(300 * 1024);
    let def = json!({"StartAt": "Set", "States": {
        "Set": {"Type": "Pass", "Assign": {"big.$": "$.big"}, "End": true}
    }});
    let o = run(def, json!({"big": big})).await;
    assert_eq!(o.error.as_deref(), Some("States.Runtime"), "{o:?}");
    assert!(o.cause.unwrap().contains("variable 'big'"));
    // Two values under the quota each but over it together.
    let half = "x".repeat(150 * 1024);
    let def = json!({"StartAt": "Set", "States": {
        "Set": {"Type": "Pass", "Assign": {"a.$": "$.h", "b.$": "$.h"}, "End": true}
    }});
    let o = run(def, json!({"h": half})).await;
    assert_eq!(o.error.as_deref(), Some("States.Runtime"), "{o:?}");
    assert!(o.cause.unwrap().contains("one Assign sets at most"));
}

#[test]
fn names_and_references_are_checked_with_the_definition() {
    let pass = |assign: Value| json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Assign": assign, "End": true}}});
    rejected(pass(json!({"1st": 1})), "cannot start with a digit");
    rejected(pass(json!({"states": 1})), "`states` is reserved");
    rejected(pass(json!({"my-var": 1})), "letters, digits and `_` only");
    rejected(pass(json!({"x".repeat(81): 1})), "1 to 80 characters");
    rejected(pass(json!([1])), "must be an object");
    rejected(
        json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Parameters": {"a.$": "$nobody"}, "End": true}}}),
        "state `P`, Parameters.a.$: `$nobody` is a variable that no state's `Assign` sets",
    );
    rejected(
        json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Assign": {"a": 1}, "Parameters": {"f.$": "States.Format('{}', $typo)"}, "End": true}}}),
        "`$typo` is a variable",
    );
    rejected(
        json!({"StartAt": "P", "States": {"P": {"Type": "Succeed", "Assign": {"a": 1}}}}),
        "Assign: is not a field this state type supports",
    );
    rejected(
        json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Assign": {"a": 1}, "ResultPath": "$a", "End": true}}}),
        "ResultPath",
    );
}
