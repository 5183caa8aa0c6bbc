//! The interpreter, state type by state type and field by field, against the
//! behaviour the AWS Step Functions documentation specifies. Time is virtual
//! (a paused tokio runtime): waits and backoffs take no real time and are
//! measured exactly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{json, Value};
use stevedore_engine::mocks::{MockCase, MockResources};
use stevedore_engine::{
    Definition, Engine, ExecutionOutcome, Failure, Resources, Status, TaskCall,
};
use tokio::time::Instant;

type Script = Box<dyn Fn(&TaskCall, u32) -> Result<Value, Failure> + Send + Sync>;

/// A resource that answers from a script and records every call.
struct Scripted {
    script: Script,
    calls: Mutex<Vec<(TaskCall, Instant)>>,
    counts: Mutex<HashMap<String, u32>>,
}

impl Scripted {
    fn new(
        f: impl Fn(&TaskCall, u32) -> Result<Value, Failure> + Send + Sync + 'static,
    ) -> Arc<Scripted> {
        Arc::new(Scripted {
            script: Box::new(f),
            calls: Mutex::new(Vec::new()),
            counts: Mutex::new(HashMap::new()),
        })
    }
    fn calls(&self) -> Vec<(TaskCall, Instant)> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Resources for Scripted {
    async fn call(&self, call: TaskCall) -> Result<Value, Failure> {
        let n = {
            let mut c = self.counts.lock().unwrap();
            let n = c.entry(call.state.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        self.calls
            .lock()
            .unwrap()
            .push((call.clone(), Instant::now()));
        (self.script)(&call, n)
    }
}

async fn run(def: Value, input: Value, res: Arc<Scripted>) -> ExecutionOutcome {
    let def = Definition::from_value(&def).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(res).execute(&def, "test", "e1", input).await
}

fn echo() -> Arc<Scripted> {
    Scripted::new(|c, _| Ok(c.parameters.clone()))
}

fn fail_with(error: &'static str) -> Failure {
    Failure::new(error, "scripted")
}

#[tokio::test(start_paused = true)]
async fn pass_with_result_and_result_path() {
    let out = run(
        json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": {"x": 1}, "ResultPath": "$.res", "End": true}}}),
        json!({"a": "b"}),
        echo(),
    )
    .await;
    assert_eq!(out.output, Some(json!({"a": "b", "res": {"x": 1}})));
}

#[tokio::test(start_paused = true)]
async fn the_documented_input_and_output_processing() {
    // InputPath selects, Parameters builds (with the context object),
    // ResultSelector reshapes, ResultPath merges into the raw input,
    // OutputPath filters.
    let def = json!({"StartAt": "T", "States": {"T": {
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
        "InputPath": "$.dataset2",
        "Parameters": {"FunctionName": "f", "Payload": {"v.$": "$.val1", "name.$": "$$.Execution.Name", "fixed": 7}},
        "ResultSelector": {"got.$": "$.Payload.v", "count.$": "States.ArrayLength($.list)"},
        "ResultPath": "$.taskresult",
        "OutputPath": "$.taskresult",
        "End": true}}});
    let res = Scripted::new(|c, _| {
        Ok(json!({"Payload": c.parameters["Payload"].clone(), "list": [1, 2, 3]}))
    });
    let out = run(
        def,
        json!({"comment": "x", "dataset1": {"val1": 1}, "dataset2": {"val1": "a"}}),
        res.clone(),
    )
    .await;
    assert_eq!(out.status, Status::Succeeded, "{out:?}");
    assert_eq!(out.output, Some(json!({"got": "a", "count": 3})));
    assert_eq!(
        res.calls()[0].0.parameters,
        json!({"FunctionName": "f", "Payload": {"v": "a", "name": "e1", "fixed": 7}})
    );

    // ResultPath null discards the result; OutputPath null gives {}.
    let def = json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "ResultPath": null, "Next": "U"},
        "U": {"Type": "Pass", "OutputPath": null, "End": true}}});
    let out = run(def, json!({"keep": true}), echo()).await;
    assert_eq!(out.output, Some(json!({})));
    let def = json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "Parameters": {"x": 1}, "ResultPath": null, "End": true}}});
    assert_eq!(
        run(def, json!({"keep": true}), echo()).await.output,
        Some(json!({"keep": true}))
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_path_is_a_runtime_error_that_catch_all_does_not_catch() {
    let def = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "r", "Parameters": {"x.$": "$.missing"}, "End": true,
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
        "Caught": {"Type": "Succeed"}}});
    let out = run(def, json!({}), echo()).await;
    assert_eq!(out.status, Status::Failed);
    assert_eq!(out.error.as_deref(), Some("States.Runtime"));
    assert!(out.cause.unwrap().contains("$.missing"));
}

#[tokio::test(start_paused = true)]
async fn choice_picks_the_first_matching_rule_or_default_or_fails() {
    let def = |default: bool| {
        let mut d = json!({"StartAt": "C", "States": {
            "C": {"Type": "Choice", "Choices": [
                {"Variable": "$.n", "NumericGreaterThan": 10, "Next": "Big"},
                {"And": [{"Variable": "$.n", "NumericGreaterThan": 5}, {"Variable": "$.tag", "StringMatches": "prod-*"}], "Next": "Mid"}
            ]},
            "Big": {"Type": "Pass", "Result": "big", "End": true},
            "Mid": {"Type": "Pass", "Result": "mid", "End": true},
            "Small": {"Type": "Pass", "Result": "small", "End": true}}});
        if default {
            d["States"]["C"]["Default"] = json!("Small");
        }
        d
    };
    assert_eq!(
        run(def(true), json!({"n": 11, "tag": "x"}), echo())
            .await
            .output,
        Some(json!("big"))
    );
    assert_eq!(
        run(def(true), json!({"n": 6, "tag": "prod-eu"}), echo())
            .await
            .output,
        Some(json!("mid"))
    );
    assert_eq!(
        run(def(true), json!({"n": 6, "tag": "dev"}), echo())
            .await
            .output,
        Some(json!("small"))
    );
    let d = def(false);
    let mut d2 = d.clone();
    d2["States"].as_object_mut().unwrap().remove("Small");
    let out = run(d2, json!({"n": 1, "tag": "x"}), echo()).await;
    assert_eq!(out.error.as_deref(), Some("States.NoChoiceMatched"));
}

#[tokio::test(start_paused = true)]
async fn wait_seconds_timestamps_and_paths_take_virtual_time() {
    let def = json!({"StartAt": "W1", "States": {
        "W1": {"Type": "Wait", "Seconds": 21600, "Next": "W2"},
        "W2": {"Type": "Wait", "SecondsPath": "$.pause", "Next": "W3"},
        "W3": {"Type": "Wait", "TimestampPath": "$.until", "End": true}}});
    let start = Instant::now();
    let wall = time::OffsetDateTime::now_utc();
    let until = (wall + time::Duration::hours(7))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let d = Definition::from_value(&def).unwrap();
    let out = Engine::new(echo())
        .starting_at(wall)
        .execute(&d, "m", "e", json!({"pause": 1800, "until": until}))
        .await;
    assert_eq!(out.status, Status::Succeeded);
    let elapsed = start.elapsed().as_secs();
    assert!(
        (7 * 3600..=7 * 3600 + 1).contains(&elapsed),
        "six hours, half an hour, then until seven hours: {elapsed}"
    );
}

#[tokio::test(start_paused = true)]
async fn retriers_apply_in_order_with_backoff_capped_by_max_delay() {
    // Fails 4 times with Throttled, then succeeds.
    let res = Scripted::new(|_, n| {
        if n < 4 {
            Err(fail_with("Throttled"))
        } else {
            Ok(json!("ok"))
        }
    });
    let def = json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true, "Retry": [
        {"ErrorEquals": ["Other"], "MaxAttempts": 9},
        {"ErrorEquals": ["Throttled"], "IntervalSeconds": 2, "BackoffRate": 3, "MaxDelaySeconds": 10, "MaxAttempts": 4}
    ]}}});
    let out = run(def, json!({}), res.clone()).await;
    assert_eq!(out.status, Status::Succeeded);
    let calls = res.calls();
    let gaps: Vec<u64> = calls
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).as_secs())
        .collect();
    assert_eq!(gaps, vec![2, 6, 10, 10], "2, 2x3, min(18,10), min(54,10)");
}

#[tokio::test(start_paused = true)]
async fn max_attempts_zero_never_retries_and_exhausted_retries_go_to_catch() {
    let res = Scripted::new(|_, _| Err(fail_with("Boom")));
    let def = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "r", "End": true,
              "Retry": [{"ErrorEquals": ["Boom"], "MaxAttempts": 0}, {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5}],
              "Catch": [{"ErrorEquals": ["Boom"], "ResultPath": "$.error", "Next": "Handled"}]},
        "Handled": {"Type": "Pass", "End": true}}});
    let out = run(def, json!({"in": 1}), res.clone()).await;
    assert_eq!(
        res.calls().len(),
        1,
        "the first matching retrier decides, even with MaxAttempts 0"
    );
    assert_eq!(
        out.output,
        Some(json!({"in": 1, "error": {"Error": "Boom", "Cause": "scripted"}}))
    );

    let res = Scripted::new(|_, _| Err(fail_with("Flaky")));
    let def = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "r", "End": true,
              "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2, "IntervalSeconds": 1}],
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Handled"}]},
        "Handled": {"Type": "Pass", "End": true}}});
    let out = run(def, json!({"in": 1}), res.clone()).await;
    assert_eq!(res.calls().len(), 3, "one try and two retries");
    assert_eq!(
        out.output,
        Some(json!({"Error": "Flaky", "Cause": "scripted"})),
        "default Catch ResultPath is $"
    );
}

#[tokio::test(start_paused = true)]
async fn full_jitter_waits_no_longer_than_the_backoff() {
    let res = Scripted::new(|_, n| {
        if n < 3 {
            Err(fail_with("E"))
        } else {
            Ok(json!(1))
        }
    });
    let def = json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "End": true,
        "Retry": [{"ErrorEquals": ["E"], "IntervalSeconds": 4, "BackoffRate": 2, "MaxAttempts": 3, "JitterStrategy": "FULL"}]}}});
    run(def, json!({}), res.clone()).await;
    let calls = res.calls();
    for (i, w) in calls.windows(2).enumerate() {
        let gap = (w[1].1 - w[0].1).as_secs_f64();
        assert!(gap <= 4.0 * 2f64.powi(i as i32) + 0.001, "retry {i}: {gap}");
    }
}

#[tokio::test(start_paused = true)]
async fn task_timeouts_raise_states_timeout() {
    struct Slow;
    #[async_trait]
    impl Resources for Slow {
        async fn call(&self, _: TaskCall) -> Result<Value, Failure> {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            Ok(json!("late"))
        }
    }
    let def = Definition::from_value(&json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "TimeoutSeconds": 60, "End": true}}})).unwrap();
    let start = Instant::now();
    let out = Engine::new(Arc::new(Slow))
        .execute(&def, "m", "e", json!({}))
        .await;
    assert_eq!(out.error.as_deref(), Some("States.Timeout"));
    assert_eq!(start.elapsed().as_secs(), 60);
    assert!(out.history.iter().any(|e| e.kind == "TaskTimedOut"));
}

#[tokio::test(start_paused = true)]
async fn wait_for_task_token_completes_by_token_or_times_out() {
    // The resource hands the token to "someone" who completes it 5 minutes later.
    struct Callback(std::sync::OnceLock<Arc<stevedore_engine::Tokens>>);
    #[async_trait]
    impl Resources for Callback {
        async fn call(&self, call: TaskCall) -> Result<Value, Failure> {
            let token = call.task_token.clone().unwrap();
            assert_eq!(
                call.parameters["token"],
                json!(token),
                "$$.Task.Token reaches the parameters"
            );
            let tokens = self.0.get().unwrap().clone();
            if call.parameters["reply"] == json!(true) {
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(300)).await;
                    tokens.succeed(&token, json!({"done": true}));
                });
            }
            Ok(json!("ignored"))
        }
    }
    for (reply, want) in [(true, Status::Succeeded), (false, Status::Failed)] {
        let res = Arc::new(Callback(std::sync::OnceLock::new()));
        let engine = Engine::new(res.clone());
        res.0.set(engine.tokens()).ok();
        let def = Definition::from_value(&json!({"StartAt": "T", "States": {"T": {
            "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
            "Parameters": {"token.$": "$$.Task.Token", "reply": reply}, "TimeoutSeconds": 600, "End": true}}})).unwrap();
        let start = Instant::now();
        let out = engine.execute(&def, "m", "e", json!({})).await;
        assert_eq!(out.status, want, "{out:?}");
        if reply {
            assert_eq!(out.output, Some(json!({"done": true})));
            assert_eq!(start.elapsed().as_secs(), 300);
            assert!(out.history.iter().any(|e| e.kind == "TaskSubmitted"));
        } else {
            assert_eq!(out.error.as_deref(), Some("States.Timeout"));
            assert_eq!(start.elapsed().as_secs(), 600);
            assert!(
                engine.tokens().pending().is_empty(),
                "a timed-out token is closed"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn parallel_runs_branches_and_fails_with_a_branch_error() {
    let def = json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
        {"StartAt": "A", "States": {"A": {"Type": "Wait", "Seconds": 10, "Next": "A2"}, "A2": {"Type": "Pass", "Result": "a", "End": true}}},
        {"StartAt": "B", "States": {"B": {"Type": "Wait", "Seconds": 10, "Next": "B2"}, "B2": {"Type": "Pass", "Result": "b", "End": true}}}
    ], "ResultSelector": {"first.$": "$[0]", "both.$": "$"}}}});
    let start = Instant::now();
    let out = run(def, json!({}), echo()).await;
    assert_eq!(out.output, Some(json!({"first": "a", "both": ["a", "b"]})));
    assert_eq!(start.elapsed().as_secs(), 10, "branches run concurrently");

    let def = json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
        {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true}}},
        {"StartAt": "B", "States": {"B": {"Type": "Fail", "Error": "BranchBroke", "Cause": "b"}}}
    ], "Catch": [{"ErrorEquals": ["BranchBroke"], "Next": "C"}]}, "C": {"Type": "Pass", "End": true}}});
    let out = run(def, json!({}), echo()).await;
    assert_eq!(
        out.output,
        Some(json!({"Error": "BranchBroke", "Cause": "b"}))
    );
}

#[tokio::test(start_paused = true)]
async fn map_runs_items_in_order_with_item_selector_and_max_concurrency() {
    let def = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "ItemsPath": "$.orders", "MaxConcurrency": 2,
        "ItemSelector": {"id.$": "$$.Map.Item.Value.id", "index.$": "$$.Map.Item.Index", "region.$": "$.region"},
        "ItemProcessor": {"StartAt": "W", "States": {
            "W": {"Type": "Wait", "Seconds": 10, "Next": "T"},
            "T": {"Type": "Task", "Resource": "r", "End": true}}}}}});
    let res = echo();
    let start = Instant::now();
    let out = run(def, json!({"region": "eu", "orders": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}, {"id": "e"}]}), res.clone()).await;
    assert_eq!(
        out.output.unwrap()[4],
        json!({"id": "e", "index": 4, "region": "eu"})
    );
    assert_eq!(
        start.elapsed().as_secs(),
        30,
        "5 items, 2 at a time, 10 s each"
    );
    let events: Vec<&str> = out.history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == "MapIterationSucceeded")
            .count(),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn fail_states_take_error_and_cause_from_paths_and_intrinsics() {
    let def = json!({"StartAt": "F", "States": {"F": {"Type": "Fail", "ErrorPath": "$.e", "CausePath": "States.Format('job {} failed', $.job)"}}});
    let out = run(def, json!({"e": "ExitedNonZero", "job": "orders"}), echo()).await;
    assert_eq!(
        (out.error.as_deref(), out.cause.as_deref()),
        (Some("ExitedNonZero"), Some("job orders failed"))
    );
}

#[tokio::test(start_paused = true)]
async fn execution_timeout_and_history_event_types() {
    let def = json!({"StartAt": "W", "TimeoutSeconds": 30, "States": {"W": {"Type": "Wait", "Seconds": 60, "End": true}}});
    let out = run(def, json!({}), echo()).await;
    assert_eq!(out.status, Status::TimedOut);
    let kinds: Vec<&str> = out.history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["ExecutionStarted", "WaitStateEntered", "ExecutionTimedOut"]
    );

    let def = json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "r", "Next": "S"}, "S": {"Type": "Succeed"}}});
    let out = run(def, json!({}), echo()).await;
    let kinds: Vec<&str> = out.history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "ExecutionStarted",
            "TaskStateEntered",
            "TaskScheduled",
            "TaskStarted",
            "TaskSucceeded",
            "TaskStateExited",
            "SucceedStateEntered",
            "SucceedStateExited",
            "ExecutionSucceeded"
        ]
    );
    assert!(out.history.windows(2).all(|w| w[0].id + 1 == w[1].id));
}

#[tokio::test(start_paused = true)]
async fn mock_files_answer_task_states_by_invocation() {
    let mocks = r#"{
      "StateMachines": {"Orders": {"TestCases": {"RetryPath": {"Charge": "FlakyCharge"}}}},
      "MockedResponses": {"FlakyCharge": {
        "0": {"Throw": {"Error": "Lambda.TooManyRequestsException", "Cause": "slow down"}},
        "1-2": {"Return": {"StatusCode": 200, "Payload": {"charged": true}}}
      }}
    }"#;
    let case = MockCase::from_file(mocks, None, "RetryPath").unwrap();
    let def = Definition::from_value(&json!({"StartAt": "Charge", "States": {"Charge": {
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "Parameters": {"FunctionName": "charge"},
        "Retry": [{"ErrorEquals": ["Lambda.TooManyRequestsException"], "MaxAttempts": 2}],
        "OutputPath": "$.Payload", "End": true}}})).unwrap();
    let tokens = Arc::new(stevedore_engine::Tokens::default());
    let res = Arc::new(MockResources::new(case, tokens.clone(), None));
    let out = Engine::new(res)
        .with_tokens(tokens)
        .execute(&def, "Orders", "e", json!({}))
        .await;
    assert_eq!(out.output, Some(json!({"charged": true})));
    assert!(MockCase::from_file(mocks, None, "Nope")
        .unwrap_err()
        .contains("RetryPath"));
}
