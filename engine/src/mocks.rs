//! Mocked task responses in the MockConfigFile format of Step Functions
//! Local, so existing mock files keep working:
//!
//! ```json
//! {
//!   "StateMachines": { "Machine": { "TestCases": { "HappyPath": { "State name": "ResponseName" } } } },
//!   "MockedResponses": {
//!     "ResponseName": { "0": { "Return": { ... } }, "1-2": { "Throw": { "Error": "E", "Cause": "c" } } }
//!   }
//! }
//! ```
//!
//! Keys are the state's invocation numbers, from 0 (retries count), or
//! ranges `"1-2"`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

use crate::exec::{Failure, Resources, TaskCall, Tokens};

#[derive(Debug, Clone, PartialEq)]
enum Response {
    Return(Value),
    Throw(Failure),
}

/// The responses of one test case, by state name.
#[derive(Debug, Clone, Default)]
pub struct MockCase {
    states: BTreeMap<String, Vec<(u32, u32, Response)>>,
}

impl MockCase {
    /// Reads a mock file and picks a test case. `machine` may be omitted when
    /// the file describes one state machine.
    pub fn from_file(text: &str, machine: Option<&str>, case: &str) -> Result<MockCase, String> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("the mock file is not valid JSON: {e}"))?;
        let machines = v
            .get("StateMachines")
            .and_then(|m| m.as_object())
            .ok_or("the mock file has no `StateMachines` object")?;
        let (name, m) = match machine {
            Some(n) => (n.to_string(), machines.get(n).ok_or_else(|| format!("the mock file has no state machine `{n}` (it has: {})", machines.keys().cloned().collect::<Vec<_>>().join(", ")))?),
            None if machines.len() == 1 => machines.iter().next().map(|(k, v)| (k.clone(), v)).ok_or("no state machines")?,
            None => {
                return Err(format!(
                    "the mock file describes several state machines ({}); choose one with --state-machine",
                    machines.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            }
        };
        let cases = m
            .get("TestCases")
            .and_then(|c| c.as_object())
            .ok_or_else(|| format!("state machine `{name}` has no `TestCases`"))?;
        let case_map = cases.get(case).and_then(|c| c.as_object()).ok_or_else(|| {
            format!(
                "state machine `{name}` has no test case `{case}` (it has: {})",
                cases.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let responses = v
            .get("MockedResponses")
            .and_then(|r| r.as_object())
            .ok_or("the mock file has no `MockedResponses` object")?;
        let mut out = MockCase::default();
        for (state, response_name) in case_map {
            let response_name = response_name.as_str().ok_or_else(|| {
                format!("test case `{case}`: the response for `{state}` must be a name")
            })?;
            let table = responses
                .get(response_name)
                .and_then(|r| r.as_object())
                .ok_or_else(|| format!("test case `{case}` names response `{response_name}`, which `MockedResponses` lacks"))?;
            let mut entries = Vec::new();
            for (key, body) in table {
                let (from, to) = match key.split_once('-') {
                    Some((a, b)) => (a.trim().parse::<u32>(), b.trim().parse::<u32>()),
                    None => (key.trim().parse::<u32>(), key.trim().parse::<u32>()),
                };
                let (Ok(from), Ok(to)) = (from, to) else {
                    return Err(format!("response `{response_name}`: `{key}` is not an invocation number or range like 0 or 1-3"));
                };
                let response = if let Some(r) = body.get("Return") {
                    Response::Return(r.clone())
                } else if let Some(t) = body.get("Throw") {
                    Response::Throw(Failure::new(
                        t.get("Error")
                            .and_then(|e| e.as_str())
                            .unwrap_or("States.TaskFailed"),
                        t.get("Cause").and_then(|e| e.as_str()).unwrap_or(""),
                    ))
                } else {
                    return Err(format!(
                        "response `{response_name}` `{key}`: needs `Return` or `Throw`"
                    ));
                };
                entries.push((from, to, response));
            }
            out.states.insert(state.clone(), entries);
        }
        Ok(out)
    }

    pub fn mocks(&self, state: &str) -> bool {
        self.states.contains_key(state)
    }
}

/// Answers Task states from a mock case; other states go to `fallback`.
pub struct MockResources {
    case: MockCase,
    calls: Mutex<HashMap<String, u32>>,
    tokens: Arc<Tokens>,
    fallback: Option<Arc<dyn Resources>>,
}

impl MockResources {
    pub fn new(case: MockCase, tokens: Arc<Tokens>, fallback: Option<Arc<dyn Resources>>) -> Self {
        MockResources {
            case,
            calls: Mutex::new(HashMap::new()),
            tokens,
            fallback,
        }
    }
}

#[async_trait]
impl Resources for MockResources {
    async fn call(&self, call: TaskCall) -> Result<Value, Failure> {
        let Some(entries) = self.case.states.get(&call.state) else {
            return match &self.fallback {
                Some(f) => f.call(call).await,
                None => Err(Failure::new(
                    "States.Runtime",
                    format!("Task state `{}` calls `{}`, which has no mocked response in this test case", call.state, call.resource),
                )),
            };
        };
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            let n = calls.entry(call.state.clone()).or_insert(0);
            let current = *n;
            *n += 1;
            current
        };
        let response = entries
            .iter()
            .find(|(from, to, _)| (*from..=*to).contains(&n))
            .map(|(_, _, r)| r.clone())
            .ok_or_else(|| {
                Failure::new(
                    "States.Runtime",
                    format!("no mocked response for invocation {n} of `{}`", call.state),
                )
            })?;
        match (response, &call.task_token) {
            (Response::Return(v), Some(token)) => {
                // A mocked callback task completes at once with its Return.
                self.tokens.succeed(token, v);
                Ok(Value::Null)
            }
            (Response::Return(v), None) => Ok(v),
            (Response::Throw(f), _) => Err(f),
        }
    }
}
