//! `QueryLanguage: JSONata` states, as the Step Functions documentation
//! describes them ("Transforming data with JSONata in Step Functions"):
//! `Arguments` and `Output` instead of the five JSONPath fields, `{% %}`
//! expressions anywhere in a value, `$states.input/result/errorOutput/
//! context`, `Condition` in Choice rules, expressions for Wait, Fail, Map
//! and timeouts, Step Functions' added functions, and the errors
//! (`States.QueryEvaluationError`, definition errors for the other
//! language's fields).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use stevedore_engine::{
    Definition, Engine, ExecutionOutcome, Failure, Resources, Status, TaskCall,
};
use tokio::time::Instant;

/// Answers a task with its parameters (recording them); `{"fail": "Name"}`
/// raises `Name`.
#[derive(Default)]
struct Echo {
    calls: Mutex<Vec<Value>>,
}

#[async_trait]
impl Resources for Echo {
    async fn call(&self, call: TaskCall) -> Result<Value, Failure> {
        self.calls.lock().unwrap().push(call.parameters.clone());
        match call.parameters.get("fail").and_then(Value::as_str) {
            Some(e) => Err(Failure::new(e, "as asked")),
            None => Ok(call.parameters),
        }
    }
}

async fn run_with(def: Value, input: Value, echo: Arc<Echo>) -> ExecutionOutcome {
    let def = Definition::from_value(&def).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(echo).execute(&def, "m", "e1", input).await
}

async fn run(def: Value, input: Value) -> ExecutionOutcome {
    run_with(def, input, Arc::new(Echo::default())).await
}

/// A JSONata state machine of one state.
fn one(state: Value) -> Value {
    json!({"QueryLanguage": "JSONata", "StartAt": "S", "States": {"S": state}})
}

fn output(o: &ExecutionOutcome) -> Value {
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    o.output.clone().unwrap()
}

fn failed(o: &ExecutionOutcome, error: &str, cause: &str) {
    assert_eq!(o.status, Status::Failed, "{o:?}");
    assert_eq!(o.error.as_deref(), Some(error), "{o:?}");
    let c = o.cause.as_deref().unwrap_or("");
    assert!(c.contains(cause), "`{cause}` not in {c}");
}

fn rejected(def: Value, want: &str) {
    let err = Definition::from_value(&def).unwrap_err().0.join("\n");
    assert!(err.contains(want), "`{want}` not in:\n{err}");
}

#[tokio::test(start_paused = true)]
async fn output_evaluates_expressions_anywhere_and_keeps_other_strings() {
    let o = run(
        one(json!({"Type": "Pass", "End": true, "Output": {
            "sum": "{% $states.input.a + $states.input.b %}",
            "list": [1, "{% $uppercase($states.input.name) %}", "$.not.a.path"],
            "nested": {"name": "{% $states.context.Execution.Name %}"},
            "text": "{% not an expression",
            "missing": "{% $states.input.nothing %}"
        }})),
        json!({"a": 1, "b": 2.5, "name": "ada"}),
    )
    .await;
    assert_eq!(
        output(&o),
        json!({"sum": 3.5, "list": [1, "ADA", "$.not.a.path"],
               "nested": {"name": "e1"}, "text": "{% not an expression"})
    );
    // Without Output, a Pass state's output is its input.
    let o = run(one(json!({"Type": "Pass", "End": true})), json!({"k": 1})).await;
    assert_eq!(output(&o), json!({"k": 1}));
}

#[tokio::test(start_paused = true)]
async fn a_task_gets_its_arguments_and_output_reads_the_result() {
    let echo = Arc::new(Echo::default());
    let o = run_with(
        one(json!({"Type": "Task", "Resource": "echo", "End": true,
            "Arguments": {"id": "{% $states.input.id %}", "fixed": 1},
            "Output": {"got": "{% $states.result.id %}", "input": "{% $states.input %}"}})),
        json!({"id": "x7"}),
        echo.clone(),
    )
    .await;
    assert_eq!(
        echo.calls.lock().unwrap()[0],
        json!({"id": "x7", "fixed": 1})
    );
    assert_eq!(output(&o), json!({"got": "x7", "input": {"id": "x7"}}));
    // Without Output, a task's output is its result; without Arguments, its
    // input is the state's input.
    let o = run(
        one(json!({"Type": "Task", "Resource": "echo", "End": true})),
        json!({"whole": true}),
    )
    .await;
    assert_eq!(output(&o), json!({"whole": true}));
}

#[tokio::test(start_paused = true)]
async fn assign_and_output_see_the_variables_from_before_the_state() {
    let def = json!({"QueryLanguage": "JSONata", "StartAt": "A", "States": {
        "A": {"Type": "Pass", "Assign": {"n": 1}, "Next": "B"},
        "B": {"Type": "Task", "Resource": "echo", "Arguments": {"v": 10},
              "Assign": {"n": "{% $n + $states.result.v %}", "old": "{% $n %}"},
              "Output": "{% $n %}", "Next": "C"},
        "C": {"Type": "Pass", "Output": {"n": "{% $n %}", "old": "{% $old %}", "input": "{% $states.input %}"}, "End": true}
    }});
    assert_eq!(
        output(&run(def, json!({})).await),
        json!({"n": 11, "old": 1, "input": 1})
    );
}

#[tokio::test(start_paused = true)]
async fn choice_conditions_with_the_rule_s_or_the_state_s_output() {
    let def = json!({"QueryLanguage": "JSONata", "StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [
            {"Condition": "{% $states.input.n > 10 %}", "Next": "Big", "Output": {"size": "big"}, "Assign": {"seen": "rule"}},
            {"Condition": false, "Next": "Big"}
        ], "Default": "Small", "Output": {"size": "small"}, "Assign": {"seen": "default"}},
        "Big": {"Type": "Pass", "Output": {"in": "{% $states.input %}", "seen": "{% $seen %}"}, "End": true},
        "Small": {"Type": "Pass", "Output": {"in": "{% $states.input %}", "seen": "{% $seen %}"}, "End": true}
    }});
    assert_eq!(
        output(&run(def.clone(), json!({"n": 11})).await),
        json!({"in": {"size": "big"}, "seen": "rule"})
    );
    assert_eq!(
        output(&run(def.clone(), json!({"n": 1})).await),
        json!({"in": {"size": "small"}, "seen": "default"})
    );
    // A condition that is not a boolean is an error, not a match.
    let o = run(def, json!({"n": "eleven"})).await;
    failed(
        &o,
        "States.QueryEvaluationError",
        "threw an error during evaluation",
    );
}

#[tokio::test(start_paused = true)]
async fn wait_seconds_and_timestamp_from_expressions() {
    let start = Instant::now();
    let o = run(
        one(json!({"Type": "Wait", "Seconds": "{% $states.input.s * 2 %}", "End": true})),
        json!({"s": 30}),
    )
    .await;
    output(&o);
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    let o = run(
        one(json!({"Type": "Wait", "Timestamp": "{% $states.input.at %}", "End": true})),
        json!({"at": "2000-01-01T00:00:00Z"}),
    )
    .await;
    output(&o);
    let o = run(
        one(json!({"Type": "Wait", "Seconds": "{% 'soon' %}", "End": true})),
        json!({}),
    )
    .await;
    failed(
        &o,
        "States.QueryEvaluationError",
        "Expected 'number', but was 'string'",
    );
}

#[tokio::test(start_paused = true)]
async fn fail_error_and_cause_from_expressions() {
    let o = run(
        one(json!({"Type": "Fail", "Error": "{% $states.input.kind %}", "Cause": "{% 'code ' & $string($states.input.code) %}"})),
        json!({"kind": "Upstream", "code": 503}),
    )
    .await;
    failed(&o, "Upstream", "code 503");
}

#[tokio::test(start_paused = true)]
async fn map_items_selector_concurrency_and_tolerance() {
    let def = one(json!({"Type": "Map", "End": true,
        "Items": "{% $states.input.list %}",
        "MaxConcurrency": "{% 1 %}",
        "ItemSelector": {"value": "{% $states.context.Map.Item.Value %}", "index": "{% $states.context.Map.Item.Index %}"},
        "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Pass", "End": true}}},
        "Output": "{% $states.result.value %}"}));
    assert_eq!(
        output(&run(def, json!({"list": ["a", "b"]})).await),
        json!(["a", "b"])
    );
    // Items that are not an array: AWS's message.
    let o = run(
        one(
            json!({"Type": "Map", "End": true, "Items": "{% $states.input %}",
            "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Pass", "End": true}}}}),
        ),
        json!({"not": "a list"}),
    )
    .await;
    failed(
        &o,
        "States.QueryEvaluationError",
        "The JSONata expression '$states.input' specified for the field 'Items' returned an unexpected result type. Expected 'array', but was 'object'",
    );
    // One failure in three is tolerated with a count of 1, not with 0.
    let map = |count: Value| {
        one(
            json!({"Type": "Map", "End": true, "Items": [{"ok": 1}, {"fail": "Bad"}, {"ok": 3}],
            "ToleratedFailureCount": count,
            "ItemProcessor": {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "echo", "End": true}}}}),
        )
    };
    let o = run(map(json!(1)), json!({})).await;
    assert_eq!(
        output(&o),
        json!([{"ok": 1}, {"Error": "Bad", "Cause": "as asked"}, {"ok": 3}])
    );
    let o = run(map(json!("{% 0 %}")), json!({})).await;
    failed(&o, "States.ExceedToleratedFailureThreshold", "1 of 3");
}

#[tokio::test(start_paused = true)]
async fn jsonpath_map_tolerates_failures_by_percentage_and_path() {
    let map = |extra: Value| {
        let mut state = json!({"Type": "Map", "End": true, "ItemsPath": "$.items",
            "ItemProcessor": {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "echo", "End": true}}}});
        for (k, v) in extra.as_object().unwrap() {
            state[k] = v.clone();
        }
        json!({"StartAt": "S", "States": {"S": state}})
    };
    let input = json!({"items": [{"fail": "A"}, {"ok": 1}, {"ok": 2}, {"ok": 3}], "pct": 25});
    let o = run(
        map(json!({"ToleratedFailurePercentage": 25})),
        input.clone(),
    )
    .await;
    assert_eq!(output(&o).as_array().unwrap().len(), 4);
    let o = run(
        map(json!({"ToleratedFailurePercentage": 20})),
        input.clone(),
    )
    .await;
    failed(&o, "States.ExceedToleratedFailureThreshold", "1 of 4");
    let o = run(
        map(json!({"ToleratedFailurePercentagePath": "$.pct"})),
        input.clone(),
    )
    .await;
    output(&o);
    // Without a tolerance the first failure fails the Map.
    let o = run(map(json!({})), input).await;
    failed(&o, "A", "as asked");
}

#[tokio::test(start_paused = true)]
async fn parallel_arguments_and_output() {
    let o = run(
        one(json!({"Type": "Parallel", "End": true,
            "Arguments": {"x": "{% $states.input.x * 2 %}"},
            "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}},
                {"StartAt": "B", "States": {"B": {"Type": "Pass", "Output": "{% $states.input.x + 1 %}", "End": true}}}
            ],
            "Output": {"first": "{% $states.result[0] %}", "second": "{% $states.result[1] %}"}})),
        json!({"x": 5}),
    )
    .await;
    assert_eq!(output(&o), json!({"first": {"x": 10}, "second": 11}));
}

#[tokio::test(start_paused = true)]
async fn a_catcher_outputs_and_assigns_from_the_error_output() {
    let def = json!({"QueryLanguage": "JSONata", "StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "echo", "Arguments": {"fail": "Oops"}, "End": true,
              "Catch": [{"ErrorEquals": ["Oops"], "Next": "After",
                         "Output": {"error": "{% $states.errorOutput.Error %}", "input": "{% $states.input %}"},
                         "Assign": {"cause": "{% $states.errorOutput.Cause %}"}}]},
        "After": {"Type": "Pass", "Output": {"in": "{% $states.input %}", "cause": "{% $cause %}"}, "End": true}
    }});
    assert_eq!(
        output(&run(def, json!({"k": 1})).await),
        json!({"in": {"error": "Oops", "input": {"k": 1}}, "cause": "as asked"})
    );
    // Without Output, the state's output is the error output.
    let def = json!({"QueryLanguage": "JSONata", "StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "echo", "Arguments": {"fail": "Oops"}, "End": true,
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "After"}]},
        "After": {"Type": "Succeed"}
    }});
    assert_eq!(
        output(&run(def, json!({})).await),
        json!({"Error": "Oops", "Cause": "as asked"})
    );
}

#[tokio::test(start_paused = true)]
async fn an_expression_error_is_a_query_evaluation_error_a_catch_can_take() {
    let o = run(
        one(json!({"Type": "Pass", "End": true, "Output": {"r": "{% $nothing() %}"}})),
        json!({}),
    )
    .await;
    failed(
        &o,
        "States.QueryEvaluationError",
        "An error occurred while executing the state 'S' (entered at the event id #2). The JSONata expression '$nothing()' specified for the field 'Output/r' threw an error during evaluation. T1006: Attempted to invoke a non-function",
    );
    let def = json!({"QueryLanguage": "JSONata", "StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "echo", "Arguments": "{% $error('no') %}", "End": true,
              "Catch": [{"ErrorEquals": ["States.QueryEvaluationError"], "Next": "Caught"}]},
        "Caught": {"Type": "Pass", "Output": "{% $states.input.Error %}", "End": true}
    }});
    assert_eq!(
        output(&run(def, json!({})).await),
        json!("States.QueryEvaluationError")
    );
    // A function is not JSON.
    let o = run(
        one(json!({"Type": "Pass", "End": true, "Output": "{% function($x){$x} %}"})),
        json!({}),
    )
    .await;
    failed(
        &o,
        "States.QueryEvaluationError",
        "returned an unsupported result type",
    );
}

/// The digest is `sha256sum`'s of the same text.
#[tokio::test(start_paused = true)]
async fn step_functions_functions() {
    let o = run(
        one(json!({"Type": "Pass", "End": true, "Output": {
            "partition": "{% $partition([1,2,3,4,5], 2) %}",
            "range": "{% $range(0, 10, 5) %}",
            "hash": "{% $hash('input data', 'SHA-256') %}",
            "parse": "{% $parse('{\"a\": [1]}') %}",
            "same": "{% $random(3) = $random(3) %}",
            "uuid": "{% $length($uuid()) %}"
        }})),
        json!({}),
    )
    .await;
    assert_eq!(
        output(&o),
        json!({"partition": [[1, 2], [3, 4], [5]], "range": [0, 5, 10],
               "hash": "b4a697a057313163aee33cd8d40c66e9f0f177e00cac2de32475ffff6169c3e3",
               "parse": {"a": [1]}, "same": true, "uuid": 36})
    );
}

#[tokio::test(start_paused = true)]
async fn task_timeout_from_an_expression() {
    struct Slow;
    #[async_trait]
    impl Resources for Slow {
        async fn call(&self, _call: TaskCall) -> Result<Value, Failure> {
            tokio::time::sleep(Duration::from_secs(100)).await;
            Ok(json!({}))
        }
    }
    let def = Definition::from_value(&one(
        json!({"Type": "Task", "Resource": "slow", "End": true,
        "TimeoutSeconds": "{% $states.input.t %}"}),
    ))
    .unwrap();
    let start = Instant::now();
    let o = Engine::new(Arc::new(Slow))
        .execute(&def, "m", "e1", json!({"t": 5}))
        .await;
    failed(&o, "States.Timeout", "");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn states_mix_query_languages_in_a_jsonpath_machine() {
    let def = json!({"StartAt": "Path", "States": {
        "Path": {"Type": "Pass", "Parameters": {"v.$": "$.v"}, "Assign": {"a": 1}, "Next": "Ata"},
        "Ata": {"Type": "Pass", "QueryLanguage": "JSONata", "Output": {"v": "{% $states.input.v %}", "a": "{% $a %}"}, "Assign": {"b": 2}, "Next": "Back"},
        "Back": {"Type": "Pass", "Parameters": {"all.$": "$", "b.$": "$b"}, "End": true}
    }});
    assert_eq!(
        output(&run(def, json!({"v": 7})).await),
        json!({"all": {"v": 7, "a": 1}, "b": 2})
    );
}

#[test]
fn each_language_rejects_the_other_s_fields_and_bad_expressions() {
    rejected(
        one(json!({"Type": "Pass", "End": true, "InputPath": "$.x"})),
        "state `S`, InputPath: is a JSONPath field",
    );
    rejected(
        one(json!({"Type": "Task", "Resource": "r", "End": true, "Parameters": {}})),
        "state `S`, Parameters: is a JSONPath field",
    );
    rejected(
        json!({"StartAt": "S", "States": {"S": {"Type": "Pass", "QueryLanguage": "JSONata", "ResultPath": "$.r", "End": true}}}),
        "ResultPath: is a JSONPath field: a JSONata state reads its input with `{% %}` expressions in `Arguments`, `Output` and `Assign` (or leave out the state's \"QueryLanguage\": \"JSONata\")",
    );
    rejected(
        one(json!({"Type": "Map", "End": true, "ItemsPath": "$.x",
            "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Pass", "End": true}}}})),
        "ItemsPath: is a JSONPath field",
    );
    rejected(
        json!({"StartAt": "S", "States": {"S": {"Type": "Pass", "End": true, "Output": {}}}}),
        "state `S`, Output: is a JSONata field",
    );
    rejected(
        one(json!({"Type": "Pass", "End": true, "Output": "{% 1 + %}"})),
        "state `S`, Output: `1 +` is not a valid JSONata expression",
    );
    rejected(
        one(json!({"Type": "Pass", "End": true, "QueryLanguage": "JSONPath"})),
        "its states cannot use JSONPath",
    );
    rejected(
        one(
            json!({"Type": "Choice", "Choices": [{"Variable": "$.x", "IsPresent": true, "Next": "S"}], "Default": "S"}),
        ),
        "Choices[0].Condition: is required",
    );
    rejected(
        json!({"StartAt": "C", "States": {"C": {"Type": "Choice", "Default": "D",
            "Choices": [{"Variable": "$.x", "IsPresent": true, "Next": "D", "Output": {}}]},
            "D": {"Type": "Succeed"}}}),
        "Choices[0].Output: is a JSONata field",
    );
    rejected(
        json!({"QueryLanguage": "YAML", "StartAt": "S", "States": {"S": {"Type": "Succeed"}}}),
        "QueryLanguage: \"YAML\" is not JSONPath or JSONata",
    );
    rejected(
        one(
            json!({"Type": "Map", "End": true, "ItemReader": {"Resource": "arn:aws:states:::s3:getObject"},
            "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Pass", "End": true}}}}),
        ),
        "ItemReader: is a distributed Map feature",
    );
}
