//! The interpreter: runs a checked [`Definition`] with AWS's data flow
//! (InputPath → Parameters → task → ResultSelector → ResultPath →
//! OutputPath), Retry/Catch semantics, task tokens, timeouts, and an
//! execution history with AWS's event types. All waiting goes through tokio's
//! clock, so a paused runtime runs hours of virtual time in milliseconds.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::choice;
use crate::definition::{
    Amount, Catcher, Definition, Flow, ResultPath, Retrier, Rule, Seconds, State, Template,
    TemplateValue, Text, Tolerance, Transition, WaitFor, MAX_SECONDS,
};
use crate::jsonata;
use crate::path::{abbreviate, Env, Path, PathError};

/// A Task state's call to a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskCall {
    /// The Resource ARN, as written (`arn:aws:states:::lambda:invoke.waitForTaskToken`).
    pub resource: String,
    /// The effective parameters (after InputPath and Parameters).
    pub parameters: Value,
    pub state: String,
    /// The token, for `.waitForTaskToken` resources.
    pub task_token: Option<String>,
}

/// An error a task (or the runtime) raises: `{"Error", "Cause"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause")]
    pub cause: String,
}

impl Failure {
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        Failure {
            error: error.into(),
            cause: cause.into(),
        }
    }
    fn runtime(cause: impl Into<String>) -> Self {
        Failure::new("States.Runtime", cause)
    }
    fn to_value(&self) -> Value {
        json!({"Error": self.error, "Cause": self.cause})
    }
}

/// What Task states call. For `.waitForTaskToken` resources the answer is
/// ignored and the state waits for the token instead.
#[async_trait]
pub trait Resources: Send + Sync {
    async fn call(&self, call: TaskCall) -> Result<Value, Failure>;
}

/// The longest a Standard workflow execution runs (one year, a Step
/// Functions quota): it then times out.
pub const MAX_EXECUTION_SECONDS: u64 = 365 * 86_400;

/// The most events an execution's history may hold (a Step Functions quota).
pub const MAX_HISTORY_EVENTS: usize = 25_000;

/// One entry of the execution history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEvent {
    pub id: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Succeeded,
    Failed,
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionOutcome {
    pub execution_arn: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub history: Vec<HistoryEvent>,
}

struct Waiter {
    done: oneshot::Sender<Result<Value, Failure>>,
    heartbeat: Arc<Notify>,
}

/// Outstanding task tokens: `.waitForTaskToken` states wait here, and
/// whoever holds a token completes it (what SendTaskSuccess/Failure do).
#[derive(Default)]
pub struct Tokens {
    waiting: Mutex<HashMap<String, Waiter>>,
}

/// What completing a token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// No state waits on it (completed already, timed out, or unknown).
    Closed,
}

impl Tokens {
    fn register(&self, token: &str) -> (oneshot::Receiver<Result<Value, Failure>>, Arc<Notify>) {
        let (tx, rx) = oneshot::channel();
        let heartbeat = Arc::new(Notify::new());
        self.lock().insert(
            token.to_string(),
            Waiter {
                done: tx,
                heartbeat: heartbeat.clone(),
            },
        );
        (rx, heartbeat)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, token: &str) {
        self.lock().remove(token);
    }

    pub fn succeed(&self, token: &str, output: Value) -> Delivery {
        self.complete(token, Ok(output))
    }

    pub fn fail(&self, token: &str, error: &str, cause: &str) -> Delivery {
        self.complete(token, Err(Failure::new(error, cause)))
    }

    pub fn heartbeat(&self, token: &str) -> Delivery {
        match self.lock().get(token) {
            Some(w) => {
                w.heartbeat.notify_one();
                Delivery::Delivered
            }
            None => Delivery::Closed,
        }
    }

    fn complete(&self, token: &str, result: Result<Value, Failure>) -> Delivery {
        let waiter = self.lock().remove(token);
        match waiter.map(|w| w.done.send(result)) {
            Some(Ok(())) => Delivery::Delivered,
            _ => Delivery::Closed,
        }
    }

    /// Tokens a state is waiting on now.
    pub fn pending(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

pub type Observer = Arc<dyn Fn(&HistoryEvent) + Send + Sync>;

/// Runs state machines. Wall-clock times in the history and the context
/// object advance with tokio's clock (virtual when the runtime is paused).
pub struct Engine {
    resources: Arc<dyn Resources>,
    tokens: Arc<Tokens>,
    observer: Option<Observer>,
    epoch: (OffsetDateTime, Instant),
    account: String,
    region: String,
    /// Jitter and task tokens from this seed instead of the thread's RNG
    /// (a simulation replays exactly).
    rng: Option<std::sync::Mutex<rand::rngs::StdRng>>,
}

impl Engine {
    pub fn new(resources: Arc<dyn Resources>) -> Engine {
        Engine {
            resources,
            tokens: Arc::new(Tokens::default()),
            observer: None,
            epoch: (OffsetDateTime::now_utc(), Instant::now()),
            account: "000000000000".into(),
            region: "local".into(),
            rng: None,
        }
    }

    /// Draws retry jitter and task tokens from `seed`: the same seed and the
    /// same calls give the same execution.
    pub fn with_seed(mut self, seed: u64) -> Engine {
        use rand::SeedableRng;
        self.rng = Some(std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(
            seed,
        )));
        self
    }

    /// A uniform draw in `0..=max`.
    fn jitter(&self, max: f64) -> f64 {
        use rand::Rng;
        if max <= 0.0 {
            return 0.0;
        }
        match &self.rng {
            Some(rng) => rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .random_range(0.0..=max),
            None => rand::random_range(0.0..=max),
        }
    }

    fn new_token(&self) -> String {
        use rand::Rng;
        match &self.rng {
            Some(rng) => {
                let bits: u128 = rng.lock().unwrap_or_else(|p| p.into_inner()).random();
                format!("{bits:032x}")
            }
            None => uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// Starts the wall clock at `start` (for virtual-time runs).
    pub fn starting_at(mut self, start: OffsetDateTime) -> Engine {
        self.epoch = (start, Instant::now());
        self
    }

    /// Shares a clock's epoch exactly: `wall` was the time at `instant`.
    pub fn with_epoch(mut self, wall: OffsetDateTime, instant: Instant) -> Engine {
        self.epoch = (wall, instant);
        self
    }

    pub fn with_observer(mut self, observer: Observer) -> Engine {
        self.observer = Some(observer);
        self
    }

    pub fn with_tokens(mut self, tokens: Arc<Tokens>) -> Engine {
        self.tokens = tokens;
        self
    }

    pub fn tokens(&self) -> Arc<Tokens> {
        self.tokens.clone()
    }

    /// Now, on the engine's clock.
    pub fn now(&self) -> OffsetDateTime {
        let elapsed = Instant::now().saturating_duration_since(self.epoch.1);
        // Past the year 9999 (a clock run for millennia): the last instant.
        self.epoch
            .0
            .checked_add(time::Duration::try_from(elapsed).unwrap_or(time::Duration::MAX))
            .unwrap_or(time::macros::datetime!(9999-12-31 23:59:59.999999999 UTC))
    }

    pub fn execution_arn(&self, state_machine: &str, name: &str) -> String {
        format!(
            "arn:aws:states:{}:{}:execution:{state_machine}:{name}",
            self.region, self.account
        )
    }

    /// Runs one execution to its end.
    pub async fn execute(
        &self,
        def: &Definition,
        state_machine: &str,
        name: &str,
        input: Value,
    ) -> ExecutionOutcome {
        let arn = self.execution_arn(state_machine, name);
        let run = Run {
            engine: self,
            history: Mutex::new(Vec::new()),
            execution: json!({
                "Id": arn,
                "Name": name,
                "StartTime": fmt(self.now()),
                "Input": input,
                "RoleArn": format!("arn:aws:iam::{}:role/stevedore-local", self.account),
                // A local execution is never redriven.
                "RedriveCount": 0,
            }),
            state_machine: json!({
                "Id": format!("arn:aws:states:{}:{}:stateMachine:{state_machine}", self.region, self.account),
                "Name": state_machine,
            }),
        };
        run.event("ExecutionStarted", None, json!({"input": input}));
        let vars = Scope::root();
        // A Standard workflow runs at most a year, whatever its TimeoutSeconds.
        let secs = def
            .timeout_seconds
            .unwrap_or(MAX_EXECUTION_SECONDS)
            .min(MAX_EXECUTION_SECONDS);
        let result = match tokio::time::timeout(
            Duration::from_secs(secs),
            run.machine(def, input, None, &vars),
        )
        .await
        {
            Ok(r) => r.map_err(Some),
            Err(_) => Err(None),
        };
        let (status, output, error, cause) = match result {
            Ok(out) => {
                run.event("ExecutionSucceeded", None, json!({"output": out}));
                (Status::Succeeded, Some(out), None, None)
            }
            Err(Some(f)) => {
                run.event("ExecutionFailed", None, f.to_value());
                // A Fail state without Error or Cause leaves them out (null).
                let some = |s: String| (!s.is_empty()).then_some(s);
                (Status::Failed, None, some(f.error), some(f.cause))
            }
            Err(None) => {
                run.event(
                    "ExecutionTimedOut",
                    None,
                    json!({"error": "States.Timeout"}),
                );
                (
                    Status::TimedOut,
                    None,
                    Some("States.Timeout".into()),
                    Some("The execution ran past its TimeoutSeconds".into()),
                )
            }
        };
        let history = run.history.into_inner().unwrap_or_else(|p| p.into_inner());
        ExecutionOutcome {
            execution_arn: arn,
            status,
            output,
            error,
            cause,
            history,
        }
    }
}

fn fmt(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

struct Run<'e> {
    engine: &'e Engine,
    history: Mutex<Vec<HistoryEvent>>,
    execution: Value,
    state_machine: Value,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a state ended.
enum Step {
    Next(String, Value),
    Done(Value),
}

fn step(t: &Transition, out: Value) -> Step {
    match t {
        Transition::Next(n) => Step::Next(n.clone(), out),
        Transition::End => Step::Done(out),
    }
}

/// The largest state output Step Functions passes on (256 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// How deep a state's output may nest: as deep as a JSON document
/// Stevedore reads back (its history, a task's answer) may be.
pub const MAX_PAYLOAD_DEPTH: usize = 128;

/// A state's output within Step Functions' payload quota, and nested no
/// deeper than Stevedore can read back (a loop of `ResultPath`s would
/// otherwise nest a value until it exhausts the stack).
fn check_payload(state: &str, v: &Value) -> Result<(), Failure> {
    // Depth first, without recursion: serialising a too-deep value would
    // itself recurse.
    let mut stack = vec![(v, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_PAYLOAD_DEPTH {
            return Err(Failure::new(
                "States.DataLimitExceeded",
                format!(
                    "the output of state `{state}` nests more than {MAX_PAYLOAD_DEPTH} levels deep"
                ),
            ));
        }
        match node {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, depth + 1))),
            _ => {}
        }
    }
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            if self.0 > MAX_PAYLOAD_BYTES {
                return Err(std::io::Error::other("too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    if serde_json::to_writer(&mut Counter(0), v).is_err() {
        return Err(Failure::new(
            "States.DataLimitExceeded",
            format!("the output of state `{state}` is larger than the {MAX_PAYLOAD_BYTES}-byte payload quota"),
        ));
    }
    Ok(())
}

fn error_matches(names: &[String], error: &str) -> bool {
    names.iter().any(|n| {
        n == error
            || (n == "States.ALL"
                && error != "States.Runtime"
                && error != "States.DataLimitExceeded")
            || (n == "States.TaskFailed" && error != "States.Timeout" && error != "States.Runtime")
    })
}

/// Workflow variables: one scope for the execution's top-level states and
/// one for each Parallel branch and Map iteration. An inner scope reads the
/// outer ones; what it assigns stays inside it (a branch passes values out
/// through its output only).
pub struct Scope<'p> {
    own: Mutex<Variables>,
    parent: Option<&'p Scope<'p>>,
}

/// A scope's own variables, each with its size as JSON, and their total
/// (kept as values are set, so a quota check reads no value again).
#[derive(Default)]
struct Variables {
    values: HashMap<String, (Value, usize)>,
    bytes: usize,
}

/// The largest value one variable may hold, and the most one `Assign` may
/// set at once (256 KiB each, Step Functions' quotas).
pub const MAX_VARIABLE_BYTES: usize = 256 * 1024;
/// The most all of an execution's variables may hold together (10 MiB).
pub const MAX_VARIABLES_BYTES: usize = 10 * 1024 * 1024;

impl<'p> Scope<'p> {
    pub fn root() -> Scope<'static> {
        Scope {
            own: Mutex::default(),
            parent: None,
        }
    }

    fn child(&'p self) -> Scope<'p> {
        Scope {
            own: Mutex::default(),
            parent: Some(self),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Variables> {
        self.own.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this scope and the scopes around it hold.
    fn bytes(&self) -> usize {
        self.lock().bytes + self.parent.map(|p| p.bytes()).unwrap_or(0)
    }

    /// Sets the variables an `Assign` computed, within the quotas.
    fn assign(&self, values: Map<String, Value>, at: &At) -> Result<(), Failure> {
        let mut sized = Vec::with_capacity(values.len());
        let mut total = 0;
        for (name, v) in values {
            let size = serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0);
            if size > MAX_VARIABLE_BYTES {
                return Err(at.error(
                    "States.Runtime",
                    format!("The variable '{name}' would hold {size} bytes; a variable holds at most {MAX_VARIABLE_BYTES} bytes."),
                ));
            }
            total += size;
            sized.push((name, v, size));
        }
        if total > MAX_VARIABLE_BYTES {
            return Err(at.error(
                "States.Runtime",
                format!("The Assign sets {total} bytes of variables; one Assign sets at most {MAX_VARIABLE_BYTES} bytes."),
            ));
        }
        let outer = self.parent.map(|p| p.bytes()).unwrap_or(0);
        let mut own = self.lock();
        // Values this Assign replaces no longer count.
        let replaced: usize = sized
            .iter()
            .filter_map(|(name, _, _)| own.values.get(name).map(|(_, size)| *size))
            .sum();
        if outer + own.bytes - replaced + total > MAX_VARIABLES_BYTES {
            return Err(at.error(
                "States.Runtime",
                format!("The execution's variables would hold more than {MAX_VARIABLES_BYTES} bytes, the Step Functions quota."),
            ));
        }
        own.bytes = own.bytes - replaced + total;
        for (name, v, size) in sized {
            own.values.insert(name, (v, size));
        }
        Ok(())
    }
}

impl crate::path::Lookup for Scope<'_> {
    fn lookup(&self, name: &str) -> Option<Value> {
        if let Some((v, _)) = self.lock().values.get(name) {
            return Some(v.clone());
        }
        self.parent.and_then(|p| p.lookup(name))
    }
}

/// What `$states` holds for an expression: the state's input, and its
/// result or error output where there is one (the context comes from
/// [`At`]).
#[derive(Clone, Copy)]
struct States<'v> {
    input: &'v Value,
    result: Option<&'v Value>,
    error_output: Option<&'v Value>,
}

impl States<'static> {
    /// For JSONPath fields, which never read `$states`.
    const NONE: States<'static> = States {
        input: &Value::Null,
        result: None,
        error_output: None,
    };
}

/// One state's activation: its name, the id of its `...StateEntered`
/// event, its context object and the variables it sees.
struct At<'s> {
    name: &'s str,
    entered_id: u64,
    ctx: Value,
    vars: &'s Scope<'s>,
}

impl<'s> At<'s> {
    fn env(&self) -> Env<'_> {
        Env::new(&self.ctx, self.vars)
    }

    /// A runtime error in AWS's words: where it happened, then what.
    fn error(&self, error: &str, detail: impl std::fmt::Display) -> Failure {
        Failure::new(
            error,
            format!(
                "An error occurred while executing the state '{}' (entered at the event id #{}). {detail}",
                self.name, self.entered_id
            ),
        )
    }

    fn runtime(&self, detail: impl std::fmt::Display) -> Failure {
        self.error("States.Runtime", detail)
    }

    /// `$states` for a JSONata expression (built only when one runs).
    fn states<'v>(
        &self,
        input: &'v Value,
        result: Option<&'v Value>,
        error_output: Option<&'v Value>,
    ) -> States<'v> {
        States {
            input,
            result,
            error_output,
        }
    }

    /// `$states` as an expression reads it: only the members it names (the
    /// context object holds the whole execution input, and converting it
    /// for every expression would cost more than most expressions).
    fn states_value(&self, expr: &str, s: &States) -> Value {
        let whole = expr
            .match_indices("$states")
            .any(|(i, _)| !expr[i + "$states".len()..].starts_with('.'));
        let wants = |member: &str| whole || expr.contains(member);
        let mut m = Map::new();
        if wants("input") {
            m.insert("input".into(), s.input.clone());
        }
        if let (true, Some(r)) = (wants("result"), s.result) {
            m.insert("result".into(), r.clone());
        }
        if let (true, Some(e)) = (wants("errorOutput"), s.error_output) {
            m.insert("errorOutput".into(), e.clone());
        }
        if wants("context") {
            m.insert("context".into(), self.ctx.clone());
        }
        Value::Object(m)
    }

    /// One `{% %}` expression's value; `None` when it is undefined.
    fn expr_or_nothing(
        &self,
        expr: &str,
        field: &str,
        states: &States,
    ) -> Result<Option<Value>, Failure> {
        let detail = match jsonata::eval(expr, self.states_value(expr, states), self.vars) {
            Ok(v) => return Ok(Some(v)),
            Err(jsonata::Problem::Undefined) => return Ok(None),
            Err(jsonata::Problem::Threw(e)) => format!("The JSONata expression '{expr}' specified for the field '{field}' threw an error during evaluation. {e}"),
            Err(jsonata::Problem::Unsupported) => format!("The JSONata expression '{expr}' specified for the field '{field}' returned an unsupported result type."),
        };
        Err(self.error("States.QueryEvaluationError", detail))
    }

    /// One `{% %}` expression's value, which must not be undefined.
    fn expr(&self, expr: &str, field: &str, states: &States) -> Result<Value, Failure> {
        self.expr_or_nothing(expr, field, states)?.ok_or_else(|| {
            self.error(
                "States.QueryEvaluationError",
                format!("The JSONata expression '{expr}' specified for the field '{field}' returned nothing (its value is undefined)."),
            )
        })
    }

    /// A JSONata field's value: its `{% %}` strings evaluated (an object
    /// member whose expression gives nothing is left out, as JSONata's own
    /// object constructor does).
    fn jsonata(&self, v: &Value, field: &str, states: &States) -> Result<Value, Failure> {
        match v {
            Value::String(s) => match jsonata::expression(s) {
                Some(e) => self.expr(e, field, states),
                None => Ok(v.clone()),
            },
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.jsonata(item, &format!("{field}/{i}"), states))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, item) in map {
                    let at = format!("{field}/{k}");
                    let value = match item.as_str().and_then(jsonata::expression) {
                        Some(e) => match self.expr_or_nothing(e, &at, states)? {
                            Some(v) => v,
                            None => continue,
                        },
                        None => self.jsonata(item, &at, states)?,
                    };
                    out.insert(k.clone(), value);
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    /// A payload template: JSONPath (`key.$` paths and intrinsic functions
    /// on `input`) or JSONata (`{% %}` strings, with `$states`).
    fn render(
        &self,
        t: &Template,
        field: &str,
        input: &Value,
        states: &States,
    ) -> Result<Value, Failure> {
        match t {
            Template::Jsonata(v) => self.jsonata(v, field, states),
            t => self.render_paths(t, input),
        }
    }

    fn render_paths(&self, t: &Template, input: &Value) -> Result<Value, Failure> {
        match t {
            Template::Literal(v) | Template::Jsonata(v) => Ok(v.clone()),
            Template::Object(fields) => {
                let mut out = Map::new();
                for (k, v) in fields {
                    let value = match v {
                        TemplateValue::Literal(v) => v.clone(),
                        TemplateValue::Path(p) => p
                            .select(input, &self.env())
                            .map_err(|e| self.runtime(e.for_field(&format!("{k}.$"))))?,
                        TemplateValue::Call(c) => c
                            .eval(input, &self.env())
                            .map_err(|e| Failure::new("States.IntrinsicFailure", e))?,
                        TemplateValue::Nested(n) => self.render_paths(n, input)?,
                    };
                    out.insert(k.clone(), value);
                }
                Ok(Value::Object(out))
            }
        }
    }

    /// Evaluates an `Assign` (JSONPath: `$` is `input`; JSONata: `$states`).
    fn assignments(
        &self,
        assign: &Option<Template>,
        input: &Value,
        states: &States,
    ) -> Result<Option<Map<String, Value>>, Failure> {
        let Some(t) = assign else { return Ok(None) };
        match self.render(t, "Assign", input, states)? {
            Value::Object(m) => Ok(Some(m)),
            _ => Ok(None),
        }
    }

    fn commit(&self, assigned: Option<Map<String, Value>>) -> Result<(), Failure> {
        match assigned {
            Some(m) if !m.is_empty() => self.vars.assign(m, self),
            _ => Ok(()),
        }
    }

    fn input_path(&self, p: &Option<Option<Path>>, raw: &Value) -> Result<Value, Failure> {
        self.io_path(p, raw, "InputPath")
    }

    fn output_path(&self, p: &Option<Option<Path>>, out: Value) -> Result<Value, Failure> {
        self.io_path(p, &out, "OutputPath")
    }

    /// InputPath/OutputPath: absent, `$`; null, `{}`; a path that finds
    /// nothing is AWS's "Invalid path" error.
    fn io_path(&self, p: &Option<Option<Path>>, v: &Value, field: &str) -> Result<Value, Failure> {
        match p {
            None => Ok(v.clone()),
            Some(None) => Ok(json!({})),
            Some(Some(p)) => p.select(v, &self.env()).map_err(|e| match e {
                PathError::Missing { .. } => self.runtime(format!(
                    "Invalid path '{}' : No results for path: {}",
                    p.text(),
                    p.bracketed()
                )),
                other => self.runtime(other.for_field(field)),
            }),
        }
    }

    /// A number from a JSONata expression (`Seconds`, `MaxConcurrency`, ...).
    fn number(&self, expr: &str, field: &str, states: &States) -> Result<f64, Failure> {
        let v = self.expr(expr, field, states)?;
        v.as_f64().ok_or_else(|| {
            self.error(
                "States.QueryEvaluationError",
                format!("The JSONata expression '{expr}' specified for the field '{field}' returned an unexpected result type. Expected 'number', but was '{}' for value: {v}", jsonata::type_name(&v)),
            )
        })
    }

    /// A number given as a value, a `...Path` or an expression, as JSON
    /// for the caller to check.
    fn amount<T: Copy + Into<Value>>(
        &self,
        a: &Amount<T>,
        field: &str,
        input: &Value,
        states: &States,
    ) -> Result<Value, Failure> {
        Ok(match a {
            Amount::Fixed(n) => (*n).into(),
            Amount::Path(p) => p
                .select(input, &self.env())
                .map_err(|e| self.runtime(e.for_field(&format!("{field}Path"))))?,
            Amount::Expr(e) => json!(self.number(e, field, states)?),
        })
    }

    /// Seconds from a fixed value, a path or an expression.
    fn seconds(
        &self,
        s: &Option<Seconds>,
        field: &str,
        input: &Value,
        states: &States,
    ) -> Result<Option<u64>, Failure> {
        let Some(s) = s else { return Ok(None) };
        let v = self.amount(s, field, input, states)?;
        match v.as_f64() {
            Some(n) if n.fract() == 0.0 && n > 0.0 && n <= MAX_SECONDS as f64 => Ok(Some(n as u64)),
            _ => Err(self.runtime(format!(
                "The field '{field}' got {v}, not a positive integer of seconds up to {MAX_SECONDS}"
            ))),
        }
    }

    fn text(
        &self,
        t: &Option<Text>,
        field: &str,
        raw: &Value,
        states: &States,
    ) -> Result<Option<String>, Failure> {
        let as_text = |v: Value| match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Ok(match t {
            None => None,
            Some(Text::Fixed(s)) => Some(s.clone()),
            Some(Text::Path(p)) => match p
                .select(raw, &self.env())
                .map_err(|e| self.runtime(e.for_field(&format!("{field}Path"))))?
            {
                Value::Null => None,
                v => Some(as_text(v)),
            },
            Some(Text::Call(c)) => Some(as_text(
                c.eval(raw, &self.env())
                    .map_err(|e| Failure::new("States.IntrinsicFailure", e))?,
            )),
            Some(Text::Expr(e)) => Some(as_text(self.expr(e, field, states)?)),
        })
    }

    fn tolerance(
        &self,
        t: &Option<Tolerance>,
        field: &str,
        input: &Value,
        states: &States,
    ) -> Result<Option<f64>, Failure> {
        let Some(t) = t else { return Ok(None) };
        let v = self.amount(t, field, input, states)?;
        // A path may give the number as a string ("1"), as AWS accepts.
        let n = match &v {
            Value::String(s) => s.trim().parse::<f64>().ok(),
            v => v.as_f64(),
        };
        match n {
            Some(n) if n >= 0.0 => Ok(Some(n)),
            _ => Err(self.runtime(format!(
                "The field '{field}' got {v}, not a non-negative number"
            ))),
        }
    }
}

impl<'e> Run<'e> {
    fn event(&self, kind: &str, state: Option<&str>, details: Value) -> u64 {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let id = history.len() as u64 + 1;
        let e = HistoryEvent {
            id,
            timestamp: self.engine.now(),
            kind: kind.to_string(),
            state: state.map(str::to_string),
            details,
        };
        if let Some(o) = &self.engine.observer {
            o(&e);
        }
        history.push(e);
        id
    }

    fn context(
        &self,
        state: &str,
        entered: OffsetDateTime,
        retry_count: u32,
        extra: &Option<Value>,
    ) -> Value {
        let mut ctx = json!({
            "Execution": self.execution,
            "StateMachine": self.state_machine,
            "State": {"Name": state, "EnteredTime": fmt(entered), "RetryCount": retry_count},
        });
        if let (Some(Value::Object(extra)), Some(obj)) = (extra, ctx.as_object_mut()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        ctx
    }

    fn machine<'a>(
        &'a self,
        def: &'a Definition,
        input: Value,
        extra: Option<Value>,
        vars: &'a Scope<'a>,
    ) -> BoxFut<'a, Result<Value, Failure>> {
        Box::pin(async move {
            let mut name = def.start_at.clone();
            let mut input = input;
            loop {
                // Step Functions fails an execution whose history reaches
                // its quota; here it also ends a loop that never waits.
                let events = self.history.lock().unwrap_or_else(|p| p.into_inner()).len();
                if events >= MAX_HISTORY_EVENTS {
                    return Err(Failure::runtime(format!(
                        "the execution's history reached {MAX_HISTORY_EVENTS} events, the Step Functions quota (a loop that never ends?)"
                    )));
                }
                // A loop of states that never wait still lets timers (the
                // execution's TimeoutSeconds) and other branches run.
                tokio::task::yield_now().await;
                let state = def
                    .states
                    .get(&name)
                    .ok_or_else(|| Failure::runtime(format!("no state `{name}`")))?;
                match self.state(&name, state, input, &extra, vars).await? {
                    Step::Next(next, out) => {
                        check_payload(&name, &out)?;
                        name = next;
                        input = out;
                    }
                    Step::Done(out) => {
                        check_payload(&name, &out)?;
                        return Ok(out);
                    }
                }
            }
        })
    }

    async fn state(
        &self,
        name: &str,
        state: &State,
        raw: Value,
        extra: &Option<Value>,
        vars: &Scope<'_>,
    ) -> Result<Step, Failure> {
        let kind = match state {
            State::Pass { .. } => "Pass",
            State::Task { .. } => "Task",
            State::Choice { .. } => "Choice",
            State::Wait { .. } => "Wait",
            State::Succeed { .. } => "Succeed",
            State::Fail { .. } => "Fail",
            State::Parallel { .. } => "Parallel",
            State::Map { .. } => "Map",
        };
        let entered = self.engine.now();
        let entered_id = self.event(
            &format!("{kind}StateEntered"),
            Some(name),
            json!({"input": raw}),
        );
        let at = At {
            name,
            entered_id,
            ctx: self.context(name, entered, 0, extra),
            vars,
        };
        let result = self.state_body(&at, state, raw, entered, extra).await;
        match &result {
            Ok(Step::Next(_, out)) | Ok(Step::Done(out)) => {
                self.event(
                    &format!("{kind}StateExited"),
                    Some(name),
                    json!({"output": out}),
                );
            }
            Err(_) => {}
        }
        result
    }

    async fn state_body(
        &self,
        at: &At<'_>,
        state: &State,
        raw: Value,
        entered: OffsetDateTime,
        extra: &Option<Value>,
    ) -> Result<Step, Failure> {
        let name = at.name;
        match state {
            State::Pass {
                flow,
                result,
                transition,
            } => {
                if flow.jsonata {
                    let states = at.states(&raw, None, None);
                    let out = match &flow.output {
                        Some(o) => at.render(o, "Output", &raw, &states)?,
                        None => raw.clone(),
                    };
                    at.commit(at.assignments(&flow.assign, &raw, &states)?)?;
                    return Ok(step(transition, out));
                }
                let effective = at.input_path(&flow.input_path, &raw)?;
                let value = match (&flow.parameters, result) {
                    (Some(p), _) => at.render_paths(p, &effective)?,
                    (None, Some(r)) => r.clone(),
                    (None, None) => effective,
                };
                let assigned = at.assignments(&flow.assign, &value, &States::NONE)?;
                let out = result_path(&flow.result_path, raw, value)?;
                let out = at.output_path(&flow.output_path, out)?;
                at.commit(assigned)?;
                Ok(step(transition, out))
            }
            State::Succeed { flow } => {
                if flow.jsonata {
                    let states = at.states(&raw, None, None);
                    return Ok(Step::Done(match &flow.output {
                        Some(o) => at.render(o, "Output", &raw, &states)?,
                        None => raw,
                    }));
                }
                let effective = at.input_path(&flow.input_path, &raw)?;
                Ok(Step::Done(at.output_path(&flow.output_path, effective)?))
            }
            State::Fail { error, cause } => {
                let states = at.states(&raw, None, None);
                let failure = Failure::new(
                    at.text(error, "Error", &raw, &states)?.unwrap_or_default(),
                    at.text(cause, "Cause", &raw, &states)?.unwrap_or_default(),
                );
                self.event("FailStateEntered", Some(name), failure.to_value());
                Err(failure)
            }
            State::Choice {
                flow,
                choices,
                default,
            } => {
                let states = at.states(&raw, None, None);
                let effective = at.input_path(&flow.input_path, &raw)?;
                let mut taken = None;
                for c in choices {
                    let hit = match &c.rule {
                        Rule::Condition(Template::Jsonata(v)) => {
                            let v = at.jsonata(v, "Condition", &states)?;
                            v.as_bool().ok_or_else(|| at.error("States.QueryEvaluationError", format!(
                                "The JSONata expression specified for the field 'Condition' returned an unexpected result type. Expected 'boolean', but was '{}' for value: {v}", jsonata::type_name(&v)
                            )))?
                        }
                        rule => choice::matches(rule, &effective, &at.env())
                            .map_err(|e| at.runtime(e))?,
                    };
                    if hit {
                        taken = Some((c.next.clone(), &c.assign, &c.output));
                        break;
                    }
                }
                let (next, assign, output) = match (taken, default) {
                    (Some(t), _) => t,
                    (None, Some(d)) => (d.clone(), &flow.assign, &flow.output),
                    (None, None) => {
                        return Err(at.error(
                            "States.NoChoiceMatched",
                            format!("No Choice Rule matched and no Default was given: no choice rule of `{name}` matched its input."),
                        ))
                    }
                };
                let output = output.as_ref().or(flow.output.as_ref());
                let assigned = at.assignments(assign, &effective, &states)?;
                let out = match (flow.jsonata, output) {
                    (true, Some(o)) => at.render(o, "Output", &raw, &states)?,
                    (true, None) => raw,
                    (false, _) => at.output_path(&flow.output_path, effective)?,
                };
                at.commit(assigned)?;
                Ok(Step::Next(next, out))
            }
            State::Wait {
                flow,
                how,
                transition,
            } => {
                let states = at.states(&raw, None, None);
                let effective = at.input_path(&flow.input_path, &raw)?;
                let seconds = match how {
                    WaitFor::Seconds(s) => *s as f64,
                    WaitFor::SecondsPath(p) => {
                        let v = p
                            .select(&effective, &at.env())
                            .map_err(|e| at.runtime(e.for_field("SecondsPath")))?;
                        v.as_u64().filter(|n| *n <= MAX_SECONDS).ok_or_else(|| {
                            at.runtime(format!(
                                "The SecondsPath '{}' gave {v}, not an integer from 0 to {MAX_SECONDS}",
                                p.text()
                            ))
                        })? as f64
                    }
                    WaitFor::SecondsExpr(e) => {
                        let n = at.number(e, "Seconds", &states)?;
                        if !(0.0..=MAX_SECONDS as f64).contains(&n) || n.fract() != 0.0 {
                            return Err(at.runtime(format!(
                                "The JSONata expression '{e}' specified for the field 'Seconds' gave {n}, not an integer from 0 to {MAX_SECONDS}"
                            )));
                        }
                        n
                    }
                    WaitFor::Timestamp(t) => {
                        until(t, self.engine.now()).map_err(|e| at.runtime(e))?
                    }
                    WaitFor::TimestampPath(p) => {
                        let v = p
                            .select(&effective, &at.env())
                            .map_err(|e| at.runtime(e.for_field("TimestampPath")))?;
                        let t = v.as_str().ok_or_else(|| {
                            at.runtime(format!(
                                "The TimestampPath '{}' gave {v}, not a timestamp",
                                p.text()
                            ))
                        })?;
                        until(t, self.engine.now()).map_err(|e| at.runtime(e))?
                    }
                    WaitFor::TimestampExpr(e) => {
                        let v = at.expr(e, "Timestamp", &states)?;
                        let t = v.as_str().ok_or_else(|| {
                            at.error("States.QueryEvaluationError", format!(
                                "The JSONata expression '{e}' specified for the field 'Timestamp' returned an unexpected result type. Expected 'string', but was '{}' for value: {v}", jsonata::type_name(&v)
                            ))
                        })?;
                        until(t, self.engine.now()).map_err(|e| at.runtime(e))?
                    }
                };
                let assigned = at.assignments(&flow.assign, &effective, &states)?;
                let out = match (flow.jsonata, &flow.output) {
                    (true, Some(o)) => at.render(o, "Output", &raw, &states)?,
                    (true, None) => raw,
                    (false, _) => at.output_path(&flow.output_path, effective)?,
                };
                tokio::time::sleep(wait_for(seconds)).await;
                at.commit(assigned)?;
                Ok(step(transition, out))
            }
            State::Task {
                flow,
                resource,
                timeout,
                heartbeat,
                retry,
                catch,
                transition,
            } => {
                let attempt = |retry_count: u32| {
                    let mut at = At {
                        name,
                        entered_id: at.entered_id,
                        ctx: self.context(name, entered, retry_count, extra),
                        vars: at.vars,
                    };
                    let raw = raw.clone();
                    async move {
                        let waits = resource.ends_with(".waitForTaskToken");
                        let token = waits.then(|| self.engine.new_token());
                        if let (Some(t), Some(obj)) = (&token, at.ctx.as_object_mut()) {
                            obj.insert("Task".into(), json!({"Token": t}));
                        }
                        let states = at.states(&raw, None, None);
                        let effective = at.input_path(&flow.input_path, &raw)?;
                        let timeout_s =
                            at.seconds(timeout, "TimeoutSeconds", &effective, &states)?;
                        let heartbeat_s =
                            at.seconds(heartbeat, "HeartbeatSeconds", &effective, &states)?;
                        let params = match &flow.parameters {
                            Some(p) => at.render(p, "Arguments", &effective, &states)?,
                            None => effective,
                        };
                        self.event("TaskScheduled", Some(name), json!({"resource": resource, "parameters": params, "timeoutInSeconds": timeout_s}));
                        let result = self
                            .task(name, resource, params, token, timeout_s, heartbeat_s)
                            .await?;
                        finish(&at, flow, raw, result)
                    }
                };
                self.with_retry(at, &raw, retry, catch, transition, attempt)
                    .await
            }
            State::Parallel {
                flow,
                branches,
                retry,
                catch,
                transition,
            } => {
                let attempt = |retry_count: u32| {
                    let at = At {
                        name,
                        entered_id: at.entered_id,
                        ctx: self.context(name, entered, retry_count, extra),
                        vars: at.vars,
                    };
                    let raw = raw.clone();
                    async move {
                        let states = at.states(&raw, None, None);
                        let effective = at.input_path(&flow.input_path, &raw)?;
                        let input = match &flow.parameters {
                            Some(p) => at.render(p, "Arguments", &effective, &states)?,
                            None => effective,
                        };
                        self.event("ParallelStateStarted", Some(name), Value::Null);
                        let runs = branches.iter().map(|b| {
                            let input = input.clone();
                            let outer = at.vars;
                            async move {
                                let scope = outer.child();
                                self.machine(b, input, None, &scope).await
                            }
                        });
                        let results = futures::future::join_all(runs).await;
                        let outs = self.all_or_first_failure(name, "Parallel", results)?;
                        finish(&at, flow, raw, outs)
                    }
                };
                self.with_retry(at, &raw, retry, catch, transition, attempt)
                    .await
            }
            State::Map {
                flow,
                items_path,
                items,
                tolerated_count,
                tolerated_percentage,
                item_selector,
                processor,
                max_concurrency,
                retry,
                catch,
                transition,
            } => {
                let attempt = |retry_count: u32| {
                    let at = At {
                        name,
                        entered_id: at.entered_id,
                        ctx: self.context(name, entered, retry_count, extra),
                        vars: at.vars,
                    };
                    let raw = raw.clone();
                    async move {
                        let states = at.states(&raw, None, None);
                        let effective = at.input_path(&flow.input_path, &raw)?;
                        let list = match (items, items_path) {
                            (Some(Template::Jsonata(v)), _) => {
                                let got = at.jsonata(v, "Items", &states)?;
                                if !got.is_array() {
                                    let expr = v
                                        .as_str()
                                        .and_then(jsonata::expression)
                                        .unwrap_or_default();
                                    return Err(at.error("States.QueryEvaluationError", format!(
                                        "The JSONata expression '{expr}' specified for the field 'Items' returned an unexpected result type. Expected 'array', but was '{}' for value: {got}", jsonata::type_name(&got)
                                    )));
                                }
                                got
                            }
                            (_, Some(p)) => p
                                .select(&effective, &at.env())
                                .map_err(|e| at.runtime(e.for_field("ItemsPath")))?,
                            _ => effective.clone(),
                        };
                        let Value::Array(list) = list else {
                            return Err(at.runtime(format!(
                                "The Map state needs an array of items, got {}",
                                abbreviate(&list)
                            )));
                        };
                        let got =
                            at.amount(max_concurrency, "MaxConcurrency", &effective, &states)?;
                        let limit = match &got {
                            // A path may give it as a string ("1"), as AWS accepts.
                            Value::String(s) => s.trim().parse::<u64>().ok(),
                            v => v
                                .as_f64()
                                .filter(|n| *n >= 0.0 && n.fract() == 0.0)
                                .map(|n| n as u64),
                        }
                        .ok_or_else(|| {
                            at.runtime(format!(
                                "The field 'MaxConcurrency' gave {got}, not a non-negative integer"
                            ))
                        })? as usize;
                        let count = at.tolerance(
                            tolerated_count,
                            "ToleratedFailureCount",
                            &effective,
                            &states,
                        )?;
                        let percentage = at.tolerance(
                            tolerated_percentage,
                            "ToleratedFailurePercentage",
                            &effective,
                            &states,
                        )?;
                        let limit = if limit == 0 { list.len().max(1) } else { limit };
                        self.event("MapStateStarted", Some(name), json!({"length": list.len()}));
                        let total = list.len();
                        let iterations = list.into_iter().enumerate().map(|(index, item)| {
                            let mut item_ctx = at.ctx.clone();
                            let map = json!({"Item": {"Index": index, "Value": item}});
                            if let Some(obj) = item_ctx.as_object_mut() {
                                obj.insert("Map".into(), map.clone());
                            }
                            let item_at = At {
                                name,
                                entered_id: at.entered_id,
                                ctx: item_ctx,
                                vars: at.vars,
                            };
                            let effective = &effective;
                            let raw = &raw;
                            async move {
                                let input = match item_selector {
                                    Some(s) => {
                                        let states = item_at.states(raw, None, None);
                                        item_at.render(s, "ItemSelector", effective, &states)?
                                    }
                                    None => item,
                                };
                                self.event(
                                    "MapIterationStarted",
                                    Some(name),
                                    json!({"index": index}),
                                );
                                let extra = Some(json!({"Map": map}));
                                let scope = item_at.vars.child();
                                let r = self.machine(processor, input, extra, &scope).await;
                                match &r {
                                    Ok(_) => self.event(
                                        "MapIterationSucceeded",
                                        Some(name),
                                        json!({"index": index}),
                                    ),
                                    Err(f) => self.event(
                                        "MapIterationFailed",
                                        Some(name),
                                        json!({"index": index, "error": f.error}),
                                    ),
                                };
                                r
                            }
                        });
                        let results: Vec<Result<Value, Failure>> =
                            futures::stream::iter(iterations)
                                .buffered(limit)
                                .collect()
                                .await;
                        let outs = if count.is_some() || percentage.is_some() {
                            self.tolerated(&at, total, results, count, percentage)?
                        } else {
                            self.all_or_first_failure(name, "Map", results)?
                        };
                        finish(&at, flow, raw, outs)
                    }
                };
                self.with_retry(at, &raw, retry, catch, transition, attempt)
                    .await
            }
        }
    }

    /// The outputs of a Parallel's branches or a Map's iterations, in order,
    /// or the first failure (which fails the state).
    fn all_or_first_failure(
        &self,
        name: &str,
        kind: &str,
        results: Vec<Result<Value, Failure>>,
    ) -> Result<Value, Failure> {
        let mut outs = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(v) => outs.push(v),
                Err(f) => {
                    self.event(&format!("{kind}StateFailed"), Some(name), f.to_value());
                    return Err(f);
                }
            }
        }
        self.event(&format!("{kind}StateSucceeded"), Some(name), Value::Null);
        Ok(Value::Array(outs))
    }

    /// A Map with a failure tolerance: it fails only when more iterations
    /// failed than `ToleratedFailureCount` or `ToleratedFailurePercentage`
    /// allow; a failed iteration's place in the output holds its error.
    fn tolerated(
        &self,
        at: &At<'_>,
        total: usize,
        results: Vec<Result<Value, Failure>>,
        count: Option<f64>,
        percentage: Option<f64>,
    ) -> Result<Value, Failure> {
        let failed = results.iter().filter(|r| r.is_err()).count();
        let over_count = count.is_some_and(|c| failed as f64 > c);
        let over_percentage =
            percentage.is_some_and(|p| total > 0 && failed as f64 * 100.0 / total as f64 > p);
        if over_count || over_percentage {
            let f = Failure::new(
                "States.ExceedToleratedFailureThreshold",
                format!("The Map state '{}' failed because {failed} of {total} iterations failed, more than its tolerated failure threshold allows.", at.name),
            );
            self.event("MapStateFailed", Some(at.name), f.to_value());
            return Err(f);
        }
        self.event("MapStateSucceeded", Some(at.name), Value::Null);
        Ok(Value::Array(
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|f| f.to_value()))
                .collect(),
        ))
    }

    /// Runs `attempt` under the state's retriers; a final error goes to the
    /// first matching catcher (its Next and the output) or fails the state.
    async fn with_retry<F, Fut>(
        &self,
        at: &At<'_>,
        raw: &Value,
        retriers: &[Retrier],
        catchers: &[Catcher],
        transition: &Transition,
        attempt: F,
    ) -> Result<Step, Failure>
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = Result<Value, Failure>>,
    {
        let mut counts = vec![0u32; retriers.len()];
        let mut total = 0u32;
        loop {
            match attempt(total).await {
                Ok(out) => return Ok(step(transition, out)),
                Err(f) => {
                    let retrier = retriers
                        .iter()
                        .enumerate()
                        .find(|(_, r)| error_matches(&r.errors, &f.error));
                    if let Some((i, r)) = retrier {
                        if counts[i] < r.max_attempts {
                            let mut delay =
                                r.interval_seconds * r.backoff_rate.powi(counts[i] as i32);
                            if let Some(max) = r.max_delay_seconds {
                                delay = delay.min(max);
                            }
                            // A steep BackoffRate overflows to infinity.
                            delay = delay.min(MAX_SECONDS as f64);
                            if r.full_jitter {
                                delay = self.engine.jitter(delay);
                            }
                            counts[i] += 1;
                            total += 1;
                            tokio::time::sleep(wait_for(delay)).await;
                            continue;
                        }
                    }
                    if let Some(c) = catchers.iter().find(|c| error_matches(&c.errors, &f.error)) {
                        let error_output = f.to_value();
                        let states = at.states(raw, None, Some(&error_output));
                        let assigned = at.assignments(&c.assign, &error_output, &states)?;
                        let out = match &c.output {
                            Some(o) => at.render(o, "Output", raw, &states)?,
                            None => match &c.result_path {
                                ResultPath::Discard => raw.clone(),
                                ResultPath::At(p) => {
                                    p.set(raw.clone(), error_output).map_err(|e| {
                                        Failure::new("States.ResultPathMatchFailure", e)
                                    })?
                                }
                            },
                        };
                        at.commit(assigned)?;
                        self.event(
                            "CatchTriggered",
                            Some(at.name),
                            json!({"error": f.error, "next": c.next}),
                        );
                        return Ok(Step::Next(c.next.clone(), out));
                    }
                    return Err(f);
                }
            }
        }
    }

    async fn task(
        &self,
        name: &str,
        resource: &str,
        params: Value,
        token: Option<String>,
        timeout_s: Option<u64>,
        heartbeat_s: Option<u64>,
    ) -> Result<Value, Failure> {
        let call = TaskCall {
            resource: resource.to_string(),
            parameters: params,
            state: name.to_string(),
            task_token: token.clone(),
        };
        let deadline = timeout_s.map(deadline_after);
        let waiter = token.as_ref().map(|t| self.engine.tokens.register(t));
        self.event("TaskStarted", Some(name), json!({"resource": resource}));
        let invoked = match deadline {
            Some(d) => match tokio::time::timeout_at(d, self.engine.resources.call(call)).await {
                Ok(r) => r,
                Err(_) => Err(Failure::new(
                    "States.Timeout",
                    format!("the task ran past {}s", timeout_s.unwrap_or(0)),
                )),
            },
            None => self.engine.resources.call(call).await,
        };
        let result = match (invoked, waiter) {
            (Err(f), waiter) => {
                if waiter.is_some() {
                    if let Some(t) = &token {
                        self.engine.tokens.forget(t);
                    }
                }
                Err(f)
            }
            (Ok(out), None) => Ok(out),
            (Ok(_), Some((rx, heartbeat))) => {
                self.event("TaskSubmitted", Some(name), json!({"resource": resource}));
                let r = wait_token(rx, heartbeat, deadline, heartbeat_s).await;
                if let Some(t) = &token {
                    self.engine.tokens.forget(t);
                }
                r
            }
        };
        let _ = match &result {
            Ok(out) => self.event("TaskSucceeded", Some(name), json!({"output": out})),
            Err(f) if f.error == "States.Timeout" || f.error == "States.HeartbeatTimeout" => {
                self.event("TaskTimedOut", Some(name), f.to_value())
            }
            Err(f) => self.event("TaskFailed", Some(name), f.to_value()),
        };
        result
    }
}

async fn wait_token(
    mut rx: oneshot::Receiver<Result<Value, Failure>>,
    heartbeat: Arc<Notify>,
    deadline: Option<Instant>,
    heartbeat_s: Option<u64>,
) -> Result<Value, Failure> {
    let far = Instant::now() + Duration::from_secs(100 * 365 * 86_400);
    loop {
        let beat_deadline = heartbeat_s.map(deadline_after).unwrap_or(far);
        let task_deadline = deadline.unwrap_or(far);
        // Biased: a token completed at the instant the task times out
        // counts (and the order of the branches never depends on chance).
        tokio::select! {
            biased;
            r = &mut rx => {
                return r.unwrap_or_else(|_| Err(Failure::runtime("the task token was dropped")));
            }
            _ = heartbeat.notified() => continue,
            _ = tokio::time::sleep_until(task_deadline) => {
                return Err(Failure::new("States.Timeout", "the task was not completed within its TimeoutSeconds"));
            }
            _ = tokio::time::sleep_until(beat_deadline) => {
                return Err(Failure::new("States.HeartbeatTimeout", "no heartbeat within HeartbeatSeconds"));
            }
        }
    }
}

/// A wait of `seconds`, never negative and never longer than the longest
/// a state machine may ask for (a far timestamp, a steep backoff).
fn wait_for(seconds: f64) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(seconds.min(MAX_SECONDS as f64))
}

/// `now + seconds`, or a century ahead when that cannot be represented.
fn deadline_after(seconds: u64) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(seconds))
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

fn until(t: &str, now: OffsetDateTime) -> Result<f64, String> {
    let at = choice::parse_timestamp(t)
        .ok_or_else(|| format!("The timestamp '{t}' is not an RFC 3339 timestamp"))?;
    Ok((at - now).as_seconds_f64().max(0.0))
}

/// After a Task, Parallel or Map has its result: JSONPath's ResultSelector,
/// Assign, ResultPath (into the raw input) and OutputPath, or JSONata's
/// Output and Assign; the variables are set last.
fn finish(at: &At<'_>, flow: &Flow, raw: Value, result: Value) -> Result<Value, Failure> {
    if flow.jsonata {
        let states = at.states(&raw, Some(&result), None);
        let assigned = at.assignments(&flow.assign, &raw, &states)?;
        let out = match &flow.output {
            Some(o) => at.render(o, "Output", &raw, &states)?,
            None => result,
        };
        at.commit(assigned)?;
        return Ok(out);
    }
    let result = match &flow.result_selector {
        Some(s) => at.render_paths(s, &result)?,
        None => result,
    };
    let assigned = at.assignments(&flow.assign, &result, &States::NONE)?;
    let out = result_path(&flow.result_path, raw, result)?;
    let out = at.output_path(&flow.output_path, out)?;
    at.commit(assigned)?;
    Ok(out)
}

fn result_path(p: &Option<ResultPath>, raw: Value, result: Value) -> Result<Value, Failure> {
    match p {
        None => Ok(result),
        Some(ResultPath::Discard) => Ok(raw),
        Some(ResultPath::At(p)) => p
            .set(raw, result)
            .map_err(|e| Failure::new("States.ResultPathMatchFailure", e)),
    }
}
