//! The seed's dice, and the ports with faults in them: every call can fail
//! before its effect or after it (the caller sees an error, the effect
//! stands), as a timed-out AWS call does; and outages, where one service
//! refuses every call for minutes on end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use stevedore_domain::alert::Alert;
use stevedore_domain::memory::MemoryRunStore;
use stevedore_domain::ports::{
    Clock, ExecutionState, Executions, Notifier, RunStore, TaskTokens, TokenDelivery,
};
use stevedore_domain::run::{
    ChangeOutcome, CreateOutcome, RunChange, RunQuery, RunRecord, SlotGrant,
};
use stevedore_domain::{Error, FailureClass, Result};
use stevedore_engine::{Failure, Resources, TaskCall};
use time::OffsetDateTime;

/// Every random choice of a simulation, from one seed, in call order.
#[derive(Clone)]
pub struct Dice(Arc<Mutex<StdRng>>);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(Arc::new(Mutex::new(StdRng::seed_from_u64(seed))))
    }
    fn rng(&self) -> std::sync::MutexGuard<'_, StdRng> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// True with probability `p`.
    pub fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.rng().random_bool(p.min(1.0))
    }
    /// Uniform in `lo..=hi`.
    pub fn between(&self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        self.rng().random_range(lo..=hi)
    }
    pub fn pick<'a, T>(&self, items: &'a [T]) -> &'a T {
        let i = self.between(0, items.len() as u64 - 1) as usize;
        &items[i]
    }
    pub fn seed(&self) -> u64 {
        self.rng().random()
    }
}

/// How often each kind of call fails. One profile per seed, drawn from the
/// seed: some seeds are calm, some are storms.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// A store call fails before / after its effect.
    pub store_before: f64,
    pub store_after: f64,
    /// A task-token call (SendTaskSuccess/Failure) fails before / after.
    pub token_before: f64,
    pub token_after: f64,
    /// SNS Publish fails before / after.
    pub publish_before: f64,
    pub publish_after: f64,
    /// A Lambda invocation fails as the service does: before the handler
    /// (`Lambda.ServiceException`, `Lambda.TooManyRequestsException`), or
    /// after it ran (`Lambda.Unknown`: a crash or timeout after its effects).
    pub lambda_before: f64,
    pub lambda_after: f64,
    /// An ECS call is throttled or times out (before / after its effect).
    pub ecs_before: f64,
    pub ecs_after: f64,
    /// SQS SendMessage (the alert fallback) fails.
    pub sqs: f64,
}

impl Rates {
    pub fn draw(dice: &Dice) -> Rates {
        // A seed is calm (faults rare), rough, or a storm.
        let scale = *dice.pick(&[0.0, 0.02, 0.05, 0.1, 0.2, 0.35]);
        let r = |w: f64| w * scale;
        Rates {
            store_before: r(1.0),
            store_after: r(0.6),
            token_before: r(1.0),
            token_after: r(0.6),
            publish_before: r(1.0),
            publish_after: r(0.5),
            lambda_before: r(0.6),
            lambda_after: r(0.4),
            ecs_before: r(0.8),
            ecs_after: r(0.4),
            sqs: r(0.5),
        }
    }
}

/// A service the control plane depends on, as an outage sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Invocations refused: the account's concurrency limit
    /// (`TooManyRequestsException`) or the service itself failing.
    Lambda,
    /// Every table call throttled or failing (the runs table).
    DynamoDb,
    /// Every ECS call throttled or failing.
    Ecs,
    /// Step Functions' task-token API (SendTaskSuccess/Failure).
    StepFunctions,
    /// SNS Publish.
    Sns,
}

/// One service down for a while (virtual time).
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub service: Service,
    pub from: tokio::time::Instant,
    pub until: tokio::time::Instant,
}

/// The outages of a seed: correlated failures, where every call to one
/// service fails from one moment to another, unlike the independent
/// per-call faults of [`Rates`].
#[derive(Debug, Clone, Default)]
pub struct Outages(pub Arc<Vec<Outage>>);

/// The longest outage the simulation draws; run-job's promises hold through it.
pub const LONGEST_OUTAGE_MINUTES: u64 = 30;

impl Outages {
    /// Half the seeds have none; the others one or two, of 1 to 30 minutes,
    /// starting in the first three hours (while executions run).
    pub fn draw(dice: &Dice, start: tokio::time::Instant) -> Outages {
        if !dice.chance(0.5) {
            return Outages::default();
        }
        let services = [
            Service::Lambda,
            Service::DynamoDb,
            Service::Ecs,
            Service::StepFunctions,
            Service::Sns,
        ];
        let outages = (0..dice.between(1, 2))
            .map(|_| {
                let from = start + std::time::Duration::from_secs(dice.between(0, 3 * 3600));
                let minutes = dice.between(1, LONGEST_OUTAGE_MINUTES);
                Outage {
                    service: *dice.pick(&services),
                    from,
                    until: from + std::time::Duration::from_secs(minutes * 60),
                }
            })
            .collect();
        Outages(Arc::new(outages))
    }

    /// Whether `service` is down now.
    pub fn down(&self, service: Service) -> bool {
        let now = tokio::time::Instant::now();
        self.0
            .iter()
            .any(|o| o.service == service && o.from <= now && now < o.until)
    }

    /// When `service` is up again (now, if it is up).
    pub fn up_at(&self, service: Service) -> tokio::time::Instant {
        let mut at = tokio::time::Instant::now();
        // Outages of one service may overlap or follow each other.
        while let Some(o) = self
            .0
            .iter()
            .find(|o| o.service == service && o.from <= at && at < o.until)
        {
            at = o.until;
        }
        at
    }

    pub fn describe(&self, origin: tokio::time::Instant) -> Vec<String> {
        self.0
            .iter()
            .map(|o| {
                format!(
                    "{:?} down from +{} s to +{} s",
                    o.service,
                    (o.from - origin).as_secs(),
                    (o.until - origin).as_secs()
                )
            })
            .collect()
    }
}

fn timed_out(what: &str) -> Error {
    Error::transient(format!("{what}: the request timed out (simulated)"))
}

fn throttled(what: &str) -> Error {
    Error::new(
        FailureClass::Throttled,
        format!("{what}: rate exceeded (simulated)"),
    )
}

/// The run store with faults around the in-memory one.
pub struct FaultyStore {
    pub inner: Arc<MemoryRunStore>,
    pub dice: Dice,
    /// The faults of the scheduled-start claim (drawn apart, so seeds
    /// without a schedule draw as they did before it).
    pub claims: Dice,
    /// Broken on purpose: every claim of a scheduled time is granted.
    pub forget_claims: bool,
    /// How far the table's indexes (`by-execution`, `by-job`) lag behind
    /// it: a run written less than this long ago is not listed yet
    /// (DynamoDB's global secondary indexes are eventually consistent).
    pub index_lag: time::Duration,
    pub clock: Arc<dyn Clock>,
    /// When each run's record first became terminal (virtual time).
    pub terminal_at: Mutex<std::collections::BTreeMap<String, OffsetDateTime>>,
    pub rates: Rates,
    pub outages: Outages,
}

impl FaultyStore {
    fn before(&self, what: &str) -> Result<()> {
        if self.outages.down(Service::DynamoDb) || self.dice.chance(self.rates.store_before) {
            return Err(if self.dice.chance(0.5) {
                throttled(what)
            } else {
                timed_out(what)
            });
        }
        Ok(())
    }
    /// What an index lists of `runs`: not the ones written within its lag.
    fn indexed(&self, runs: Vec<RunRecord>) -> Vec<RunRecord> {
        let seen_until = self.clock.now() - self.index_lag;
        runs.into_iter()
            .filter(|r| r.created_at <= seen_until)
            .collect()
    }
    fn after<T>(&self, what: &str, out: T) -> Result<T> {
        if self.dice.chance(self.rates.store_after) {
            return Err(timed_out(what));
        }
        Ok(out)
    }
}

#[async_trait]
impl RunStore for FaultyStore {
    async fn create_run(&self, run: &RunRecord) -> Result<CreateOutcome> {
        self.before("PutItem")?;
        let out = self.inner.create_run(run).await?;
        self.after("PutItem", out)
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.before("GetItem")?;
        self.inner.get_run(run_id).await
    }
    async fn change_run(&self, run_id: &str, change: &RunChange) -> Result<ChangeOutcome> {
        self.before("UpdateItem")?;
        let out = self.inner.change_run(run_id, change).await?;
        if let ChangeOutcome::Applied(run) = &out {
            if run.status.is_terminal() {
                self.terminal_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(run_id.to_string())
                    .or_insert_with(|| self.clock.now());
            }
        }
        self.after("UpdateItem", out)
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        self.before("Query")?;
        Ok(self.indexed(self.inner.list_runs(query).await?))
    }
    async fn runs_of_execution(&self, execution_id: &str) -> Result<Vec<RunRecord>> {
        self.before("Query")?;
        Ok(self.indexed(self.inner.runs_of_execution(execution_id).await?))
    }
    async fn acquire_slot(
        &self,
        job: &str,
        holder: &str,
        max: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<SlotGrant> {
        self.before("UpdateItem (slot)")?;
        let out = self
            .inner
            .acquire_slot(job, holder, max, lease_until, now)
            .await?;
        self.after("UpdateItem (slot)", out)
    }
    async fn release_slot(&self, job: &str, holder: &str) -> Result<()> {
        self.before("DeleteItem (slot)")?;
        self.inner.release_slot(job, holder).await?;
        self.after("DeleteItem (slot)", ())
    }
    async fn claim_launch(
        &self,
        run_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.before("UpdateItem (launch claim)")?;
        let out = self.inner.claim_launch(run_id, until, now).await?;
        self.after("UpdateItem (launch claim)", out)
    }
    async fn claim_scheduled_start(
        &self,
        job: &str,
        scheduled: &str,
        execution_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<String>> {
        let what = "UpdateItem (scheduled start)";
        if self.outages.down(Service::DynamoDb) || self.claims.chance(self.rates.store_before) {
            return Err(throttled(what));
        }
        let out = self
            .inner
            .claim_scheduled_start(job, scheduled, execution_id, until, now)
            .await?
            .filter(|_| !self.forget_claims);
        if self.claims.chance(self.rates.store_after) {
            return Err(timed_out(what));
        }
        Ok(out)
    }
    async fn add_note(&self, run_id: &str, note: &str) -> Result<bool> {
        self.before("UpdateItem (note)")?;
        let out = self.inner.add_note(run_id, note).await?;
        self.after("UpdateItem (note)", out)
    }
}

/// SendTaskSuccess / SendTaskFailure with faults.
pub struct FaultyTokens {
    pub inner: Arc<dyn TaskTokens>,
    pub dice: Dice,
    pub rates: Rates,
    pub outages: Outages,
}

#[async_trait]
impl TaskTokens for FaultyTokens {
    async fn send_success(&self, token: &str, output: &Value) -> Result<TokenDelivery> {
        if self.outages.down(Service::StepFunctions) || self.dice.chance(self.rates.token_before) {
            return Err(timed_out("SendTaskSuccess"));
        }
        let out = self.inner.send_success(token, output).await?;
        if self.dice.chance(self.rates.token_after) {
            return Err(timed_out("SendTaskSuccess"));
        }
        Ok(out)
    }
    async fn send_failure(&self, token: &str, error: &str, cause: &str) -> Result<TokenDelivery> {
        if self.outages.down(Service::StepFunctions) || self.dice.chance(self.rates.token_before) {
            return Err(timed_out("SendTaskFailure"));
        }
        let out = self.inner.send_failure(token, error, cause).await?;
        if self.dice.chance(self.rates.token_after) {
            return Err(timed_out("SendTaskFailure"));
        }
        Ok(out)
    }
}

/// DescribeExecution: the executions that have ended (as `execution`
/// records them when the engine returns or the abort strikes), refused
/// during a Step Functions outage.
pub struct SimExecutions {
    pub ended: Mutex<std::collections::BTreeMap<String, String>>,
    pub outages: Outages,
}

impl SimExecutions {
    pub fn end(&self, arn: &str, status: &str) {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(arn.to_string(), status.to_string());
    }
}

#[async_trait]
impl Executions for SimExecutions {
    async fn state(&self, execution_arn: &str) -> Result<ExecutionState> {
        if self.outages.down(Service::StepFunctions) {
            return Err(timed_out("DescribeExecution"));
        }
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match ended.get(execution_arn) {
            Some(status) => ExecutionState::Ended(status.clone()),
            None => ExecutionState::Running,
        })
    }
}

/// The SNS topic: what was published, with faults.
pub struct FaultyTopic {
    pub published: Mutex<Vec<Alert>>,
    pub dice: Dice,
    pub rates: Rates,
    pub outages: Outages,
}

impl FaultyTopic {
    pub fn published(&self) -> Vec<Alert> {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Notifier for FaultyTopic {
    async fn publish(&self, alert: &Alert) -> Result<String> {
        if self.outages.down(Service::Sns) || self.dice.chance(self.rates.publish_before) {
            return Err(timed_out("Publish"));
        }
        let id = {
            let mut p = self.published.lock().unwrap_or_else(|p| p.into_inner());
            p.push(alert.clone());
            format!("message-{}", p.len())
        };
        if self.dice.chance(self.rates.publish_after) {
            return Err(timed_out("Publish"));
        }
        Ok(id)
    }
}

/// What the state machine's Task states call, with Lambda's own failures,
/// and the dead-letter queue the alert falls back to.
/// How often an invocation's caller gives up on a handler that runs on.
pub const CLIENT_TIMEOUT_RATE: f64 = 0.02;

pub struct FaultyLambda {
    pub inner: Arc<dyn Resources>,
    pub dice: Dice,
    /// Draws of its own: when a handler starts, and whether the caller
    /// gives up on it while it runs on.
    pub pace: Dice,
    pub rates: Rates,
    pub outages: Outages,
    pub dead_letters: Mutex<Vec<Value>>,
}

impl FaultyLambda {
    pub fn dead_letters(&self) -> Vec<Value> {
        self.dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Resources for FaultyLambda {
    async fn call(&self, call: TaskCall) -> std::result::Result<Value, Failure> {
        if call.resource == "arn:aws:states:::sqs:sendMessage" {
            if self.dice.chance(self.rates.sqs) {
                return Err(Failure::new(
                    "SQS.SdkClientException",
                    "SendMessage timed out (simulated)",
                ));
            }
            let body = call
                .parameters
                .get("MessageBody")
                .cloned()
                .unwrap_or(Value::Null);
            let mut d = self.dead_letters.lock().unwrap_or_else(|p| p.into_inner());
            d.push(body);
            return Ok(json!({"MessageId": format!("dl-{}", d.len())}));
        }
        if !call.resource.starts_with("arn:aws:states:::lambda:invoke") {
            return self.inner.call(call).await;
        }
        if self.outages.down(Service::Lambda) {
            // The account's concurrency is used up, or Lambda itself fails.
            let error = *self
                .dice
                .pick(&["Lambda.TooManyRequestsException", "Lambda.ServiceException"]);
            return Err(Failure::new(error, "(simulated) Lambda is out"));
        }
        if self.dice.chance(self.rates.lambda_before) {
            let error = *self.dice.pick(&[
                "Lambda.ServiceException",
                "Lambda.TooManyRequestsException",
                "Lambda.AWSLambdaException",
            ]);
            return Err(Failure::new(error, "(simulated) the invocation failed"));
        }
        // The invocation runs in Lambda, not in the execution: an execution
        // stopped meanwhile (its future dropped) leaves the handler running
        // to its end, as StopExecution does on AWS.
        let inner = self.inner.clone();
        if self.pace.chance(CLIENT_TIMEOUT_RATE) {
            // The invoke's HTTP call times out on Step Functions' side while
            // the handler, started late (a cold start, a queue), runs on:
            // the state's retry can run beside it.
            let late = Duration::from_millis(self.pace.between(0, 10_000));
            tokio::spawn(async move {
                tokio::time::sleep(late).await;
                let _ = inner.call(call).await;
            });
            tokio::time::sleep(Duration::from_millis(self.pace.between(100, 2000))).await;
            return Err(Failure::new(
                "Lambda.ClientExecutionTimeoutException",
                "(simulated) the invoke timed out; the handler runs on",
            ));
        }
        let out = tokio::spawn(async move { inner.call(call).await })
            .await
            .unwrap_or_else(|e| Err(Failure::new("Lambda.Unknown", e.to_string())));
        if self.dice.chance(self.rates.lambda_after) {
            // The handler ran (its effects stand); its answer is lost.
            let error = *self.dice.pick(&[
                "Lambda.Unknown",
                "Lambda.ClientExecutionTimeoutException",
                "Runtime.ExitError",
                "Sandbox.Timedout",
            ]);
            return Err(Failure::new(
                error,
                "(simulated) the function crashed or timed out after its side effects",
            ));
        }
        out
    }
}
