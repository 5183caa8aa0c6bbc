//! Hostile definitions and inputs: every one ends in a named error (a
//! definition error naming the state and field, or a failed execution with
//! `States.Runtime` / `States.IntrinsicFailure`), never a panic, a hang or a
//! stack overflow. Each test is a site that once panicked or could have.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use stevedore_engine::{
    Definition, Engine, ExecutionOutcome, Failure, Resources, Status, TaskCall,
};

/// Every task fails.
struct Failing;

#[async_trait]
impl Resources for Failing {
    async fn call(&self, _call: TaskCall) -> Result<Value, Failure> {
        Err(Failure::new("Boom", "always"))
    }
}

fn pass_with(parameters: Value) -> Value {
    json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Parameters": parameters, "End": true}}})
}

async fn run(def: Value, input: Value) -> ExecutionOutcome {
    let def = Definition::from_value(&def).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(Arc::new(Failing))
        .execute(&def, "m", "e1", input)
        .await
}

fn failed_with(o: &ExecutionOutcome, error: &str, cause_has: &str) {
    assert_eq!(o.status, Status::Failed, "{o:?}");
    assert_eq!(o.error.as_deref(), Some(error), "{o:?}");
    let cause = o.cause.as_deref().unwrap_or("");
    assert!(cause.contains(cause_has), "`{cause_has}` not in {cause}");
}

fn rejected(def: Value, want: &[&str]) {
    let err = Definition::from_value(&def)
        .err()
        .unwrap_or_else(|| panic!("accepted {def}"))
        .to_string();
    for w in want {
        assert!(err.contains(w), "`{w}` not in: {err}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slice_step_that_overflows_is_a_runtime_error() {
    let o = run(
        pass_with(json!({"x.$": "$.a[1::9223372036854775807]"})),
        json!({"a": [1, 2, 3]}),
    )
    .await;
    failed_with(&o, "States.Runtime", "slice step 9223372036854775807");
    // A step that fits gives the usual selection.
    let o = run(
        pass_with(json!({"x.$": "$.a[0::2]"})),
        json!({"a": [1, 2, 3]}),
    )
    .await;
    assert_eq!(o.output, Some(json!({"x": [1, 3]})));
    // Slice bounds far outside the array are clamped, as Python's are.
    let o = run(
        pass_with(json!({"x.$": "$.a[-9223372036854775808:9223372036854775807]"})),
        json!({"a": [1, 2]}),
    )
    .await;
    assert_eq!(o.output, Some(json!({"x": [1, 2]})));
}

#[tokio::test(start_paused = true)]
async fn an_overflow_in_a_filter_is_a_runtime_error_in_choice_too() {
    let def = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [
            {"Variable": "$.a[?(@.b[1::9223372036854775807])]", "IsPresent": true, "Next": "Y"}
        ], "Default": "Y"},
        "Y": {"Type": "Succeed"}
    }});
    let o = run(def, json!({"a": [{"b": [1, 2, 3]}]})).await;
    failed_with(&o, "States.Runtime", "slice step");
}

#[tokio::test(start_paused = true)]
async fn math_add_and_array_range_do_not_overflow() {
    let o = run(
        pass_with(json!({"x.$": "States.MathAdd(9223372036854775807, 1)"})),
        json!({}),
    )
    .await;
    failed_with(&o, "States.IntrinsicFailure", "outside the range");
    let o = run(
        pass_with(json!({"x.$": "States.MathAdd(-9223372036854775808, -1)"})),
        json!({}),
    )
    .await;
    failed_with(&o, "States.IntrinsicFailure", "outside the range");
    let o = run(
        pass_with(json!({"x.$": "States.ArrayRange(9223372036854775806, 9223372036854775807, 5)"})),
        json!({}),
    )
    .await;
    assert_eq!(
        o.output,
        Some(json!({"x": [9223372036854775806i64]})),
        "{o:?}"
    );
    let o = run(
        pass_with(
            json!({"x.$": "States.ArrayRange(-9223372036854775807, -9223372036854775808, -3)"}),
        ),
        json!({}),
    )
    .await;
    assert_eq!(
        o.output,
        Some(json!({"x": [-9223372036854775807i64]})),
        "{o:?}"
    );
}

#[test]
fn nesting_is_limited_when_the_definition_is_read() {
    let mut call = "States.Array(1)".to_string();
    for _ in 0..40 {
        call = format!("States.Array({call})");
    }
    rejected(
        pass_with(json!({"x.$": call})),
        &["state `P`", "nest more than 16 deep"],
    );
    // A million-deep call would have exhausted the stack.
    let deep = format!(
        "{}1{}",
        "States.Array(".repeat(200_000),
        ")".repeat(200_000)
    );
    rejected(pass_with(json!({"x.$": deep})), &["nest more than 16 deep"]);

    let mut filter = "@.v".to_string();
    for _ in 0..40 {
        filter = format!("@.a[?({filter})]");
    }
    rejected(
        pass_with(json!({"x.$": format!("$.a[?({filter})]")})),
        &["filters nest more than 16 deep"],
    );

    let long = format!("${}", ".a".repeat(100_000));
    rejected(
        json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "ResultPath": long, "End": true}}}),
        &["state `P`", "ResultPath", "at most 128 steps"],
    );
}

#[test]
fn durations_beyond_aws_limits_are_definition_errors() {
    let wait = |seconds: Value| json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": seconds, "End": true}}});
    rejected(
        wait(json!(100_000_000u64)),
        &["state `W`", "Seconds", "99999999"],
    );
    rejected(wait(json!(u64::MAX)), &["Seconds"]);
    rejected(wait(json!(1e300)), &["Seconds"]);

    let task = |extra: Value| {
        let mut t =
            json!({"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": true});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        json!({"StartAt": "T", "States": {"T": t}})
    };
    rejected(
        task(json!({"TimeoutSeconds": u64::MAX})),
        &["state `T`", "TimeoutSeconds"],
    );
    rejected(
        task(json!({"HeartbeatSeconds": 100_000_000u64})),
        &["HeartbeatSeconds"],
    );
    let retry = |r: Value| task(json!({"Retry": [r]}));
    rejected(
        retry(json!({"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1e300})),
        &["Retry[0].IntervalSeconds", "99999999"],
    );
    rejected(
        retry(json!({"ErrorEquals": ["States.ALL"], "MaxAttempts": 1e12})),
        &["Retry[0].MaxAttempts"],
    );
    rejected(
        retry(json!({"ErrorEquals": ["States.ALL"], "MaxDelaySeconds": 40_000_000})),
        &["Retry[0].MaxDelaySeconds", "31622400"],
    );
    rejected(
        json!({"StartAt": "P", "TimeoutSeconds": u64::MAX, "States": {"P": {"Type": "Pass", "End": true}}}),
        &["TimeoutSeconds", "99999999"],
    );
    rejected(
        json!({"StartAt": "P", "TimeoutSeconds": "soon", "States": {"P": {"Type": "Pass", "End": true}}}),
        &["TimeoutSeconds"],
    );
}

#[tokio::test(start_paused = true)]
async fn durations_from_the_input_beyond_aws_limits_are_runtime_errors() {
    let def = json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "SecondsPath": "$.s", "End": true}}});
    for s in [
        json!(u64::MAX),
        json!(100_000_000u64),
        json!(-1),
        json!(1.5e300),
    ] {
        let o = run(def.clone(), json!({"s": s})).await;
        failed_with(&o, "States.Runtime", "SecondsPath");
    }
    // A timestamp a thousand years away is a long wait, not a panic: the
    // execution's own timeout ends it.
    let def = json!({"StartAt": "W", "TimeoutSeconds": 60, "States": {
        "W": {"Type": "Wait", "TimestampPath": "$.t", "End": true}}});
    let o = run(def, json!({"t": "9999-12-31T23:59:59Z"})).await;
    assert_eq!(o.status, Status::TimedOut, "{o:?}");
}

#[tokio::test(start_paused = true)]
async fn a_steep_backoff_waits_at_most_the_longest_wait() {
    // BackoffRate 1e308 overflows the delay to infinity on the second retry.
    let def = json!({"StartAt": "T", "TimeoutSeconds": 99999999, "States": {"T": {
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": true,
        "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "BackoffRate": 1e308,
                   "MaxAttempts": 3, "JitterStrategy": "FULL"}]
    }}});
    let started = tokio::time::Instant::now();
    let o = run(def, json!({})).await;
    // Every attempt fails; the execution then times out (the third retry
    // would wait 99999999 s, as long as the whole timeout).
    assert!(
        matches!(o.status, Status::Failed | Status::TimedOut),
        "{o:?}"
    );
    assert!(started.elapsed().as_secs() <= 99_999_999 + 1);
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_never_ends_stops_at_the_history_quota() {
    let def = json!({"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Next": "B"},
        "B": {"Type": "Pass", "Next": "A"}}});
    let o = run(def, json!({})).await;
    failed_with(&o, "States.Runtime", "25000 events");
    assert!(o.history.len() <= 25_002, "{}", o.history.len());
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_nests_its_input_ends_at_the_payload_limits() {
    // Found by the fuzzer: each round puts the whole input inside itself,
    // which nested the value until it exhausted the stack.
    let def = json!({"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Next": "A", "ResultPath": "$.a[0]"}}});
    let o = run(def.clone(), json!({"a": [1, 2, 3], "t": "x".repeat(5000)})).await;
    failed_with(&o, "States.DataLimitExceeded", "262144-byte payload quota");
    // Small values nest deeper before they grow large.
    let def = json!({"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Next": "A", "Parameters": {"in.$": "$"}}}});
    let o = run(def, json!({})).await;
    failed_with(&o, "States.DataLimitExceeded", "more than 128 levels deep");
}

#[tokio::test(start_paused = true)]
async fn an_execution_times_out_after_a_year_whatever_it_waits_for() {
    // Found by the fuzzer: a year-long Wait in a loop ran the clock past
    // the year 9999.
    let def = json!({"StartAt": "W", "States": {
        "W": {"Type": "Wait", "Seconds": 31622400, "Next": "W"}}});
    let started = tokio::time::Instant::now();
    let o = run(def, json!({})).await;
    assert_eq!(o.status, Status::TimedOut, "{o:?}");
    assert_eq!(started.elapsed().as_secs(), 365 * 86_400);
    // A longer TimeoutSeconds does not extend it.
    let def = json!({"StartAt": "W", "TimeoutSeconds": 99999999, "States": {
        "W": {"Type": "Wait", "Seconds": 99999999, "End": true}}});
    let started = tokio::time::Instant::now();
    let o = run(def, json!({})).await;
    assert_eq!(o.status, Status::TimedOut);
    assert_eq!(started.elapsed().as_secs(), 365 * 86_400);
}

#[tokio::test(start_paused = true)]
async fn task_timeouts_from_the_input_beyond_aws_limits_are_runtime_errors() {
    for field in ["TimeoutSecondsPath", "HeartbeatSecondsPath"] {
        let def = json!({"StartAt": "T", "States": {"T": {
            "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": true,
            field: "$.s"}}});
        for s in [
            json!(u64::MAX),
            json!(100_000_000u64),
            json!(0),
            json!("soon"),
        ] {
            let o = run(def.clone(), json!({"s": s})).await;
            failed_with(
                &o,
                "States.Runtime",
                "not a positive integer of seconds up to 99999999",
            );
        }
    }
}
