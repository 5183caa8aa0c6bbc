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
    Catcher, Definition, Flow, MaxConcurrency, ResultPath, Retrier, Seconds, State, Template,
    TemplateValue, Text, Transition, WaitFor, MAX_SECONDS,
};
use crate::path::{abbreviate, Path};

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
            }),
            state_machine: json!({
                "Id": format!("arn:aws:states:{}:{}:stateMachine:{state_machine}", self.region, self.account),
                "Name": state_machine,
            }),
        };
        run.event("ExecutionStarted", None, json!({"input": input}));
        // A Standard workflow runs at most a year, whatever its TimeoutSeconds.
        let secs = def
            .timeout_seconds
            .unwrap_or(MAX_EXECUTION_SECONDS)
            .min(MAX_EXECUTION_SECONDS);
        let result =
            match tokio::time::timeout(Duration::from_secs(secs), run.machine(def, input, None))
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
                (Status::Failed, None, Some(f.error), Some(f.cause))
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

impl<'e> Run<'e> {
    fn event(&self, kind: &str, state: Option<&str>, details: Value) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let e = HistoryEvent {
            id: history.len() as u64 + 1,
            timestamp: self.engine.now(),
            kind: kind.to_string(),
            state: state.map(str::to_string),
            details,
        };
        if let Some(o) = &self.engine.observer {
            o(&e);
        }
        history.push(e);
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
                match self.state(&name, state, input, &extra).await? {
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
        self.event(
            &format!("{kind}StateEntered"),
            Some(name),
            json!({"input": raw}),
        );
        let ctx = self.context(name, entered, 0, extra);
        let result = self
            .state_body(name, state, raw, &ctx, entered, extra)
            .await;
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
        name: &str,
        state: &State,
        raw: Value,
        ctx: &Value,
        entered: OffsetDateTime,
        extra: &Option<Value>,
    ) -> Result<Step, Failure> {
        match state {
            State::Pass {
                flow,
                result,
                transition,
            } => {
                let effective = input_path(&flow.input_path, &raw, ctx)?;
                let value = match (&flow.parameters, result) {
                    (Some(p), _) => render(p, &effective, ctx)?,
                    (None, Some(r)) => r.clone(),
                    (None, None) => effective,
                };
                let out = result_path(&flow.result_path, raw, value)?;
                Ok(step(transition, output_path(&flow.output_path, out, ctx)?))
            }
            State::Succeed { flow } => {
                let effective = input_path(&flow.input_path, &raw, ctx)?;
                Ok(Step::Done(output_path(&flow.output_path, effective, ctx)?))
            }
            State::Fail { error, cause } => {
                let text = |t: &Option<Text>| -> Result<String, Failure> {
                    Ok(match t {
                        None => String::new(),
                        Some(Text::Fixed(s)) => s.clone(),
                        Some(Text::Path(p)) => {
                            match p.select(&raw, ctx).map_err(Failure::runtime)? {
                                Value::String(s) => s,
                                Value::Null => String::new(),
                                other => other.to_string(),
                            }
                        }
                        Some(Text::Call(c)) => match c
                            .eval(&raw, ctx)
                            .map_err(|e| Failure::new("States.IntrinsicFailure", e))?
                        {
                            Value::String(s) => s,
                            other => other.to_string(),
                        },
                    })
                };
                let failure = Failure::new(text(error)?, text(cause)?);
                self.event("FailStateEntered", Some(name), failure.to_value());
                Err(failure)
            }
            State::Choice {
                flow,
                choices,
                default,
            } => {
                let effective = input_path(&flow.input_path, &raw, ctx)?;
                for (rule, next) in choices {
                    if choice::matches(rule, &effective, ctx).map_err(Failure::runtime)? {
                        return Ok(Step::Next(
                            next.clone(),
                            output_path(&flow.output_path, effective, ctx)?,
                        ));
                    }
                }
                match default {
                    Some(d) => Ok(Step::Next(
                        d.clone(),
                        output_path(&flow.output_path, effective, ctx)?,
                    )),
                    None => Err(Failure::new(
                        "States.NoChoiceMatched",
                        format!("no choice rule of `{name}` matched, and it has no Default"),
                    )),
                }
            }
            State::Wait {
                flow,
                how,
                transition,
            } => {
                let effective = input_path(&flow.input_path, &raw, ctx)?;
                let seconds = match how {
                    WaitFor::Seconds(s) => *s as f64,
                    WaitFor::SecondsPath(p) => {
                        let v = p.select(&effective, ctx).map_err(Failure::runtime)?;
                        v.as_u64().filter(|n| *n <= MAX_SECONDS).ok_or_else(|| {
                            Failure::runtime(format!(
                                "SecondsPath `{}` gave {v}, not an integer from 0 to {MAX_SECONDS}",
                                p.text()
                            ))
                        })? as f64
                    }
                    WaitFor::Timestamp(t) => until(t, self.engine.now())?,
                    WaitFor::TimestampPath(p) => {
                        let v = p.select(&effective, ctx).map_err(Failure::runtime)?;
                        let t = v.as_str().ok_or_else(|| {
                            Failure::runtime(format!(
                                "TimestampPath `{}` gave {v}, not a timestamp",
                                p.text()
                            ))
                        })?;
                        until(t, self.engine.now())?
                    }
                };
                tokio::time::sleep(wait_for(seconds)).await;
                Ok(step(
                    transition,
                    output_path(&flow.output_path, effective, ctx)?,
                ))
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
                    let ctx = self.context(name, entered, retry_count, extra);
                    let raw = raw.clone();
                    async move {
                        let effective = input_path(&flow.input_path, &raw, &ctx)?;
                        let timeout_s = seconds_of(timeout, &effective, &ctx)?;
                        let heartbeat_s = seconds_of(heartbeat, &effective, &ctx)?;
                        let waits = resource.ends_with(".waitForTaskToken");
                        let token = waits.then(|| self.engine.new_token());
                        let mut ctx = ctx;
                        if let (Some(t), Some(obj)) = (&token, ctx.as_object_mut()) {
                            obj.insert("Task".into(), json!({"Token": t}));
                        }
                        let params = match &flow.parameters {
                            Some(p) => render(p, &effective, &ctx)?,
                            None => effective,
                        };
                        self.event("TaskScheduled", Some(name), json!({"resource": resource, "parameters": params, "timeoutInSeconds": timeout_s}));
                        let result = self
                            .task(name, resource, params, token, timeout_s, heartbeat_s)
                            .await?;
                        finish(flow, raw, result, &ctx)
                    }
                };
                self.with_retry(name, &raw, retry, catch, transition, attempt)
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
                    let ctx = self.context(name, entered, retry_count, extra);
                    let raw = raw.clone();
                    async move {
                        let effective = input_path(&flow.input_path, &raw, &ctx)?;
                        let input = match &flow.parameters {
                            Some(p) => render(p, &effective, &ctx)?,
                            None => effective,
                        };
                        self.event("ParallelStateStarted", Some(name), Value::Null);
                        let runs = branches
                            .iter()
                            .map(|b| self.machine(b, input.clone(), None));
                        let results = futures::future::join_all(runs).await;
                        let outs = self.all_or_first_failure(name, "Parallel", results)?;
                        finish(flow, raw, outs, &ctx)
                    }
                };
                self.with_retry(name, &raw, retry, catch, transition, attempt)
                    .await
            }
            State::Map {
                flow,
                items_path,
                item_selector,
                processor,
                max_concurrency,
                retry,
                catch,
                transition,
            } => {
                let attempt = |retry_count: u32| {
                    let ctx = self.context(name, entered, retry_count, extra);
                    let raw = raw.clone();
                    async move {
                        let effective = input_path(&flow.input_path, &raw, &ctx)?;
                        let items = match items_path {
                            Some(p) => p.select(&effective, &ctx).map_err(Failure::runtime)?,
                            None => effective.clone(),
                        };
                        let Value::Array(items) = items else {
                            return Err(Failure::runtime(format!(
                                "the Map state `{name}` needs an array of items, got {}",
                                abbreviate(&items)
                            )));
                        };
                        let limit = match max_concurrency {
                            MaxConcurrency::Fixed(n) => *n as usize,
                            MaxConcurrency::Path(p) => {
                                p.select(&effective, &ctx)
                                    .map_err(Failure::runtime)?
                                    .as_u64()
                                    .unwrap_or(0) as usize
                            }
                        };
                        let limit = if limit == 0 {
                            items.len().max(1)
                        } else {
                            limit
                        };
                        self.event(
                            "MapStateStarted",
                            Some(name),
                            json!({"length": items.len()}),
                        );
                        let iterations = items.into_iter().enumerate().map(|(index, item)| {
                            let mut item_ctx = ctx.clone();
                            if let Some(obj) = item_ctx.as_object_mut() {
                                obj.insert(
                                    "Map".into(),
                                    json!({"Item": {"Index": index, "Value": item}}),
                                );
                            }
                            let effective = &effective;
                            async move {
                                let input = match item_selector {
                                    Some(s) => render(s, effective, &item_ctx)?,
                                    None => item,
                                };
                                self.event(
                                    "MapIterationStarted",
                                    Some(name),
                                    json!({"index": index}),
                                );
                                let extra = Some(json!({"Map": item_ctx["Map"].clone()}));
                                let r = self.machine(processor, input, extra).await;
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
                                }
                                r
                            }
                        });
                        let results: Vec<Result<Value, Failure>> =
                            futures::stream::iter(iterations)
                                .buffered(limit)
                                .collect()
                                .await;
                        let outs = self.all_or_first_failure(name, "Map", results)?;
                        finish(flow, raw, outs, &ctx)
                    }
                };
                self.with_retry(name, &raw, retry, catch, transition, attempt)
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

    /// Runs `attempt` under the state's retriers; a final error goes to the
    /// first matching catcher (its Next and the output) or fails the state.
    async fn with_retry<F, Fut>(
        &self,
        name: &str,
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
                        let out = match &c.result_path {
                            ResultPath::Discard => raw.clone(),
                            ResultPath::At(p) => p
                                .set(raw.clone(), f.to_value())
                                .map_err(|e| Failure::new("States.ResultPathMatchFailure", e))?,
                        };
                        self.event(
                            "CatchTriggered",
                            Some(name),
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
        match &result {
            Ok(out) => self.event("TaskSucceeded", Some(name), json!({"output": out})),
            Err(f) if f.error == "States.Timeout" || f.error == "States.HeartbeatTimeout" => {
                self.event("TaskTimedOut", Some(name), f.to_value())
            }
            Err(f) => self.event("TaskFailed", Some(name), f.to_value()),
        }
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

fn until(t: &str, now: OffsetDateTime) -> Result<f64, Failure> {
    let at = choice::parse_timestamp(t)
        .ok_or_else(|| Failure::runtime(format!("`{t}` is not an RFC 3339 timestamp")))?;
    Ok((at - now).as_seconds_f64().max(0.0))
}

fn seconds_of(s: &Option<Seconds>, input: &Value, ctx: &Value) -> Result<Option<u64>, Failure> {
    match s {
        None => Ok(None),
        Some(Seconds::Fixed(n)) => Ok(Some(*n)),
        Some(Seconds::Path(p)) => {
            let v = p.select(input, ctx).map_err(Failure::runtime)?;
            match v.as_u64() {
                Some(n) if n > 0 && n <= MAX_SECONDS => Ok(Some(n)),
                _ => Err(Failure::runtime(format!(
                    "`{}` gave {v}, not a positive integer of seconds up to {MAX_SECONDS}",
                    p.text()
                ))),
            }
        }
    }
}

/// ResultSelector, then ResultPath (into the raw input), then OutputPath.
fn finish(flow: &Flow, raw: Value, result: Value, ctx: &Value) -> Result<Value, Failure> {
    let result = match &flow.result_selector {
        Some(s) => render(s, &result, ctx)?,
        None => result,
    };
    let out = result_path(&flow.result_path, raw, result)?;
    output_path(&flow.output_path, out, ctx)
}

fn input_path(p: &Option<Option<Path>>, raw: &Value, ctx: &Value) -> Result<Value, Failure> {
    match p {
        None => Ok(raw.clone()),
        Some(None) => Ok(json!({})),
        Some(Some(p)) => p
            .select(raw, ctx)
            .map_err(|e| Failure::runtime(format!("Invalid path for InputPath: {e}"))),
    }
}

fn output_path(p: &Option<Option<Path>>, out: Value, ctx: &Value) -> Result<Value, Failure> {
    match p {
        None => Ok(out),
        Some(None) => Ok(json!({})),
        Some(Some(p)) => p
            .select(&out, ctx)
            .map_err(|e| Failure::runtime(format!("Invalid path for OutputPath: {e}"))),
    }
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

/// Renders a payload template against `input` and the context object.
pub fn render(t: &Template, input: &Value, ctx: &Value) -> Result<Value, Failure> {
    match t {
        Template::Literal(v) => Ok(v.clone()),
        Template::Object(fields) => {
            let mut out = Map::new();
            for (k, v) in fields {
                let value = match v {
                    TemplateValue::Literal(v) => v.clone(),
                    TemplateValue::Path(p) => p.select(input, ctx).map_err(|e| {
                        Failure::runtime(format!(
                            "The value for the field '{k}.$' must be a valid JSONPath: {e}"
                        ))
                    })?,
                    TemplateValue::Call(c) => c
                        .eval(input, ctx)
                        .map_err(|e| Failure::new("States.IntrinsicFailure", e))?,
                    TemplateValue::Nested(n) => render(n, input, ctx)?,
                };
                out.insert(k.clone(), value);
            }
            Ok(Value::Object(out))
        }
    }
}
