//! [`RunStore`] on one DynamoDB table.
//!
//! | item | pk | sk | notes |
//! |---|---|---|---|
//! | run | `RUN#<run id>` | `RUN` | every [`RunRecord`] field as an attribute; `jobCreated` and `executionId` feed the indexes; `expiresAt` is the TTL |
//! | concurrency slot | `SLOT#<job>` | `<n>` | `holder` (execution id), `leaseUntil` (epoch s) |
//! | scheduled start | `START#<job>#<scheduled time>` | `START` | `holder` (execution id), `claimUntil` (epoch s), `expiresAt` (TTL) |
//!
//! Index `by-job` (`job`, `jobCreated`): runs of a job, newest first.
//! Index `by-execution` (`executionId`, `attempt`): the attempts of an execution.
//! Index `by-month` (`createdMonth`, `jobCreated`): every job's runs, newest
//! first, one partition per UTC month (`2026-11`), so listing across jobs is
//! a query per month instead of a scan, and no partition takes every write.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValue, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use serde_json::Value;
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::{
    ChangeOutcome, CreateOutcome, RunChange, RunQuery, RunRecord, SlotGrant,
};
use stevedore_domain::task::format_time;
use stevedore_domain::{Error, Result, RunStatus};
use time::OffsetDateTime;
use tracing::{debug, instrument};

use crate::attr::{from_attr, item_from_object, object_from_item, to_attr};
use crate::errors::classify;

pub const INDEX_BY_JOB: &str = "by-job";
pub const INDEX_BY_EXECUTION: &str = "by-execution";
pub const INDEX_BY_MONTH: &str = "by-month";
/// Attributes that exist only for the table's keys and indexes.
const KEY_ATTRS: &[&str] = &["pk", "sk", "jobCreated", "executionId", "createdMonth"];

/// `2026-11`: the `by-month` partition of a run created at `t`.
pub fn created_month(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// `2026-11-24T06:00:00.120Z`: fixed width, so the index's string order is
/// time order (RFC 3339 as `format_time` writes it drops a zero fraction,
/// and `06:00:00.5Z` would sort before `06:00:00Z`).
fn sort_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        t.date(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The month before `month` (`2026-01` → `2025-12`), as [`created_month`] writes it.
fn previous_month(month: &str) -> Option<String> {
    let (y, m) = month.split_once('-')?;
    let (y, m): (i32, u8) = (y.parse().ok()?, m.parse().ok()?);
    Some(if m <= 1 {
        format!("{:04}-12", y - 1)
    } else {
        format!("{y:04}-{:02}", m - 1)
    })
}

/// Which runs [`DynamoDbRunStore::list`] returns, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RunListing {
    /// One job (the `by-job` index), or every job (`by-month`).
    pub job: Option<String>,
    pub status: Option<RunStatus>,
    /// Runs created at or after this.
    pub since: Option<OffsetDateTime>,
    /// Across jobs: the oldest month to look in when `since` is not given
    /// (the stack's creation: no run is older).
    pub oldest: OffsetDateTime,
    /// Across jobs: the newest month to look in (now).
    pub newest: OffsetDateTime,
    pub limit: usize,
}

/// What one listing cost: requests made and items DynamoDB read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListingCost {
    pub requests: u32,
    pub items_read: u64,
}

pub struct DynamoDbRunStore {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn run_key(run_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_string(), s(format!("RUN#{run_id}"))),
        ("sk".to_string(), s("RUN")),
    ])
}

fn decode_run(item: &HashMap<String, AttributeValue>) -> Result<RunRecord> {
    let value = object_from_item(item, KEY_ATTRS);
    serde_json::from_value(value).map_err(|e| {
        let id = item
            .get("runId")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        Error::invalid_input(format!("run item `{id}` cannot be read: {e}"))
    })
}

fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("{what}: {e}"))
}

impl DynamoDbRunStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbRunStore {
            client,
            table: table.into(),
        }
    }

    /// The table named by `RUNS_TABLE`.
    pub fn from_env(sdk: &aws_config::SdkConfig) -> std::result::Result<Self, String> {
        Ok(Self::new(
            Client::new(sdk),
            crate::env_required("RUNS_TABLE")?,
        ))
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table with the keys and indexes this store uses (for tests
    /// and local use; deployments create it from `template.yaml`).
    pub async fn create_table(&self) -> Result<()> {
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| internal("key schema", e))
        };
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(|e| internal("attribute definition", e))
        };
        let index = |name: &str, pk: &str, sk: &str| -> Result<GlobalSecondaryIndex> {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(pk, KeyType::Hash)?)
                .key_schema(key(sk, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .map_err(|e| internal("index", e))
        };
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .attribute_definitions(attr("pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("sk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("job", ScalarAttributeType::S)?)
            .attribute_definitions(attr("jobCreated", ScalarAttributeType::S)?)
            .attribute_definitions(attr("executionId", ScalarAttributeType::S)?)
            .attribute_definitions(attr("attempt", ScalarAttributeType::N)?)
            .attribute_definitions(attr("createdMonth", ScalarAttributeType::S)?)
            .global_secondary_indexes(index(INDEX_BY_JOB, "job", "jobCreated")?)
            .global_secondary_indexes(index(INDEX_BY_EXECUTION, "executionId", "attempt")?)
            .global_secondary_indexes(index(INDEX_BY_MONTH, "createdMonth", "jobCreated")?)
            .send()
            .await
            .map_err(|e| classify("CreateTable", &e))?;
        Ok(())
    }

    fn run_item(run: &RunRecord) -> Result<HashMap<String, AttributeValue>> {
        let value = serde_json::to_value(run).map_err(|e| internal("encode run", e))?;
        let Value::Object(map) = value else {
            return Err(internal("encode run", "not an object"));
        };
        let mut item = item_from_object(&map);
        item.extend(run_key(&run.run_id));
        item.insert(
            "jobCreated".into(),
            s(format!("{}#{}", sort_time(run.created_at), run.run_id)),
        );
        item.insert("executionId".into(), s(run.execution.id.clone()));
        item.insert("createdMonth".into(), s(created_month(run.created_at)));
        Ok(item)
    }

    /// Runs, newest first, as [`RunListing`] selects them: the `by-job`
    /// index for one job, otherwise `by-month` from the newest month back.
    /// Pages past DynamoDB's 1 MB per response until `limit` runs are found
    /// or nothing is left.
    pub async fn list(&self, listing: &RunListing) -> Result<(Vec<RunRecord>, ListingCost)> {
        let mut runs = Vec::new();
        let mut cost = ListingCost::default();
        // `2026-11-24T06:00:00.000Z#…` ≥ `2026-11-24T06:00:00.000`: every run from `since` on.
        let since = listing
            .since
            .map(|t| sort_time(t).trim_end_matches('Z').to_string());
        match &listing.job {
            Some(job) => {
                self.query_newest(
                    INDEX_BY_JOB,
                    ("job", job),
                    since.as_deref(),
                    listing,
                    &mut runs,
                    &mut cost,
                )
                .await?
            }
            None => {
                let oldest = created_month(listing.since.unwrap_or(listing.oldest));
                let mut month = created_month(listing.newest);
                while runs.len() < listing.limit && month >= oldest {
                    self.query_newest(
                        INDEX_BY_MONTH,
                        ("createdMonth", &month),
                        since.as_deref(),
                        listing,
                        &mut runs,
                        &mut cost,
                    )
                    .await?;
                    match previous_month(&month) {
                        Some(m) => month = m,
                        None => break,
                    }
                }
            }
        }
        Ok((runs, cost))
    }

    /// One partition of an index, newest first, into `runs` until the
    /// listing's limit.
    async fn query_newest(
        &self,
        index: &str,
        (key, value): (&str, &str),
        since: Option<&str>,
        listing: &RunListing,
        runs: &mut Vec<RunRecord>,
        cost: &mut ListingCost,
    ) -> Result<()> {
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let wanted = listing.limit.saturating_sub(runs.len());
            if wanted == 0 {
                return Ok(());
            }
            // A filter is applied after DynamoDB reads a page: read more
            // than is wanted, so a rare status does not take a request per run.
            let page = if listing.status.is_some() {
                wanted.saturating_mul(10).clamp(100, 1000)
            } else {
                wanted.min(1000)
            };
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .expression_attribute_names("#k", key)
                .expression_attribute_values(":k", s(value))
                .scan_index_forward(false)
                .limit(page as i32)
                .set_exclusive_start_key(start.take());
            req = match since {
                Some(since) => req
                    .key_condition_expression("#k = :k AND jobCreated >= :since")
                    .expression_attribute_values(":since", s(since)),
                None => req.key_condition_expression("#k = :k"),
            };
            if let Some(status) = listing.status {
                req = req
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", s(status.as_str()));
            }
            let out = req.send().await.map_err(|e| classify("Query", &e))?;
            cost.requests += 1;
            cost.items_read += out.scanned_count().max(0) as u64;
            for item in out.items() {
                if runs.len() < listing.limit {
                    runs.push(decode_run(item)?);
                }
            }
            match out.last_evaluated_key() {
                Some(k) if runs.len() < listing.limit => start = Some(k.clone()),
                _ => return Ok(()),
            }
        }
    }

    async fn slot_items(&self, job: &str) -> Result<Vec<HashMap<String, AttributeValue>>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("SLOT#{job}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("Query", &e))?;
        Ok(out.items().to_vec())
    }
}

/// How many free-looking slots one `acquire_slot` tries before it reports
/// the job busy (each lost to a concurrent launch).
pub const SLOT_TRIES: usize = 3;

fn holder_of(item: &HashMap<String, AttributeValue>) -> Option<String> {
    item.get("holder").and_then(|v| v.as_s().ok()).cloned()
}

#[async_trait]
impl RunStore for DynamoDbRunStore {
    #[instrument(skip_all, fields(run_id = %run.run_id))]
    async fn create_run(&self, run: &RunRecord) -> Result<CreateOutcome> {
        let item = Self::run_item(run)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(CreateOutcome::Created),
            Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                match se.err() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => {
                        match c.item() {
                            Some(item) => Ok(CreateOutcome::Exists(decode_run(item)?)),
                            None => self
                                .get_run(&run.run_id)
                                .await?
                                .map(CreateOutcome::Exists)
                                .ok_or_else(|| Error::transient("run vanished while being created")),
                        }
                    }
                    _ => Err(Error::transient("unexpected condition failure")),
                }
            }
            Err(e) => Err(classify("PutItem", &e)),
        }
    }

    #[instrument(skip_all, fields(run_id = %run_id))]
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(run_key(run_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("GetItem", &e))?;
        out.item().map(decode_run).transpose()
    }

    #[instrument(skip_all, fields(run_id = %run_id, to = %change.status()))]
    async fn change_run(&self, run_id: &str, change: &RunChange) -> Result<ChangeOutcome> {
        let to = change.status();
        let allowed = to.allowed_from();
        if allowed.is_empty() {
            // Nothing may move into this status (PENDING, SKIPPED): it is only created.
            return Ok(match self.get_run(run_id).await? {
                None => ChangeOutcome::NotFound,
                Some(run) if run.status == to => ChangeOutcome::Replayed(run),
                Some(run) => ChangeOutcome::Rejected(run),
            });
        }
        let mut names = HashMap::from([("#status".to_string(), "status".to_string())]);
        let mut values = HashMap::from([(":to".to_string(), s(to.as_str()))]);
        let mut sets = vec!["#status = :to".to_string()];
        let mut set = |field: &str, value: Value| {
            names.insert(format!("#{field}"), field.to_string());
            values.insert(format!(":{field}"), to_attr(&value));
            sets.push(format!("#{field} = :{field}"));
        };
        if let Some(v) = &change.task_arn {
            set("taskArn", Value::String(v.clone()));
        }
        if let Some(v) = change.launched_at {
            set("launchedAt", Value::String(format_time(v)));
        }
        if let Some(v) = &change.task_token {
            set("taskToken", Value::String(v.clone()));
        }
        if let Some(v) = &change.capacity {
            set("capacity", json(v));
        }
        if let Some(v) = &change.stop_request {
            set("stopRequest", json(v));
        }
        if let Some(v) = &change.task {
            set("task", json(v));
        }
        if let Some(v) = &change.outcome {
            set("outcome", json(v));
        }
        if let Some(v) = &change.cost {
            set("cost", json(v));
        }
        if let Some(v) = change.finished_at {
            set("finishedAt", Value::String(format_time(v)));
        }
        let mut placeholders = Vec::new();
        for (i, st) in allowed.iter().enumerate() {
            let p = format!(":from{i}");
            values.insert(p.clone(), s(st.as_str()));
            placeholders.push(p);
        }
        let mut condition = format!(
            "attribute_exists(pk) AND #status IN ({})",
            placeholders.join(", ")
        );
        if change.task_arn.is_some() {
            // Never replace the task a run names with another one.
            condition.push_str(" AND (attribute_not_exists(#taskArn) OR #taskArn = :taskArn)");
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(run_key(run_id)))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => match out.attributes() {
                Some(item) => Ok(ChangeOutcome::Applied(decode_run(item)?)),
                None => Err(Error::transient("UpdateItem returned no attributes")),
            },
            Err(SdkError::ServiceError(se)) => match se.err() {
                UpdateItemError::ConditionalCheckFailedException(c) => match c.item() {
                    None => Ok(ChangeOutcome::NotFound),
                    Some(item) => {
                        let current = decode_run(item)?;
                        debug!(current = %current.status, "condition failed");
                        Ok(change.refused(current))
                    }
                },
                _ => Err(classify("UpdateItem", &SdkError::ServiceError(se))),
            },
            Err(e) => Err(classify("UpdateItem", &e)),
        }
    }

    #[instrument(skip_all, fields(job = %query.job))]
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let mut runs = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(INDEX_BY_JOB)
                .key_condition_expression("job = :job")
                .expression_attribute_values(":job", s(query.job.clone()))
                .scan_index_forward(false)
                .limit(query.limit.clamp(1, 1000) as i32)
                .set_exclusive_start_key(start.take());
            if let Some(status) = query.status {
                req = req
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", s(status.as_str()));
            }
            let out = req.send().await.map_err(|e| classify("Query", &e))?;
            for item in out.items() {
                if runs.len() < query.limit as usize {
                    runs.push(decode_run(item)?);
                }
            }
            match out.last_evaluated_key() {
                Some(k) if runs.len() < query.limit as usize => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(runs)
    }

    #[instrument(skip_all)]
    async fn runs_of_execution(&self, execution_id: &str) -> Result<Vec<RunRecord>> {
        let mut runs = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(INDEX_BY_EXECUTION)
                .key_condition_expression("executionId = :e")
                .expression_attribute_values(":e", s(execution_id))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify("Query", &e))?;
            for item in out.items() {
                runs.push(decode_run(item)?);
            }
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        Ok(runs)
    }

    #[instrument(skip_all, fields(job = %job, max = max))]
    async fn acquire_slot(
        &self,
        job: &str,
        holder: &str,
        max: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<SlotGrant> {
        let lease = lease_until.unix_timestamp();
        let existing = self.slot_items(job).await?;
        // The same execution asking again (a retried Lambda, the next attempt)
        // keeps its slot and extends the lease.
        if let Some(item) = existing
            .iter()
            .find(|i| holder_of(i).as_deref() == Some(holder))
        {
            let sk = item.get("sk").cloned().unwrap_or_else(|| s("0"));
            let slot = sk.as_s().ok().and_then(|v| v.parse().ok()).unwrap_or(0);
            let updated = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(format!("SLOT#{job}")))
                .key("sk", sk)
                .update_expression("SET leaseUntil = :lease, expiresAt = :exp")
                .condition_expression("holder = :holder")
                .expression_attribute_values(":lease", n(lease))
                .expression_attribute_values(":exp", n(lease + 86_400))
                .expression_attribute_values(":holder", s(holder))
                .send()
                .await;
            match updated {
                Ok(_) => return Ok(SlotGrant::Granted { slot }),
                Err(SdkError::ServiceError(se))
                    if se.err().is_conditional_check_failed_exception() =>
                {
                    // Lost it between the read and the write: try for a free one.
                }
                Err(e) => return Err(classify("UpdateItem", &e)),
            }
        }
        // A slot this holder already has counts as free for it: two
        // concurrent invocations of one execution (a retried Lambda racing the
        // first) both land on the same slot instead of taking two. Only the
        // slots the (strongly consistent) read showed free are tried, and at
        // most SLOT_TRIES of them: the calls one launch makes stay bounded
        // whatever `concurrency.max` is (the function's timeout counts them).
        let now_secs = now.unix_timestamp();
        let free = |slot: u32| {
            existing
                .iter()
                .find(|i| {
                    i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str)
                        == Some(slot.to_string().as_str())
                })
                .is_none_or(|i| {
                    holder_of(i).as_deref() == Some(holder)
                        || i.get("leaseUntil")
                            .and_then(|v| v.as_n().ok())
                            .and_then(|v| v.parse::<i64>().ok())
                            .is_none_or(|until| until < now_secs)
                })
        };
        let candidates: Vec<u32> = (0..max).filter(|s| free(*s)).take(SLOT_TRIES).collect();
        for slot in candidates {
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("SLOT#{job}")))
                .item("sk", s(slot.to_string()))
                .item("holder", s(holder))
                .item("leaseUntil", n(lease))
                .item("expiresAt", n(lease + 86_400))
                .condition_expression(
                    "attribute_not_exists(pk) OR leaseUntil < :now OR holder = :holder",
                )
                .expression_attribute_values(":now", n(now.unix_timestamp()))
                .expression_attribute_values(":holder", s(holder))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(SlotGrant::Granted { slot }),
                Err(SdkError::ServiceError(se))
                    if se.err().is_conditional_check_failed_exception() =>
                {
                    continue
                }
                Err(e) => return Err(classify("PutItem", &e)),
            }
        }
        let holders = self
            .slot_items(job)
            .await?
            .iter()
            .filter_map(holder_of)
            .collect();
        Ok(SlotGrant::Busy { holders })
    }

    #[instrument(skip_all, fields(job = %job))]
    async fn release_slot(&self, job: &str, holder: &str) -> Result<()> {
        for item in self.slot_items(job).await? {
            if holder_of(&item).as_deref() != Some(holder) {
                continue;
            }
            let Some(sk) = item.get("sk").cloned() else {
                continue;
            };
            let result = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(format!("SLOT#{job}")))
                .key("sk", sk)
                .condition_expression("holder = :holder")
                .expression_attribute_values(":holder", s(holder))
                .send()
                .await;
            match result {
                Ok(_) => {}
                // Someone took it over after our lease expired: not ours to free.
                Err(SdkError::ServiceError(se))
                    if se.err().is_conditional_check_failed_exception() => {}
                Err(e) => return Err(classify("DeleteItem", &e)),
            }
        }
        Ok(())
    }

    #[instrument(skip_all, fields(run_id = %run_id))]
    async fn claim_launch(
        &self,
        run_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(run_key(run_id)))
            .update_expression("SET #claim = :until")
            .condition_expression(
                "attribute_exists(pk) AND #status = :pending AND (attribute_not_exists(#claim) OR #claim <= :now)",
            )
            .expression_attribute_names("#claim", "launchClaimUntil")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":until", n(until.unix_timestamp()))
            .expression_attribute_values(":now", n(now.unix_timestamp()))
            .expression_attribute_values(":pending", s(RunStatus::Pending.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                Ok(false)
            }
            Err(e) => Err(classify("UpdateItem", &e)),
        }
    }

    #[instrument(skip_all, fields(job = %job, scheduled = %scheduled))]
    async fn claim_scheduled_start(
        &self,
        job: &str,
        scheduled: &str,
        execution_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<String>> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("START#{job}#{scheduled}")))
            .key("sk", s("START"))
            .update_expression("SET holder = :me, claimUntil = :until, expiresAt = :exp")
            .condition_expression("attribute_not_exists(pk) OR holder = :me OR claimUntil <= :now")
            .expression_attribute_values(":me", s(execution_id))
            .expression_attribute_values(":until", n(until.unix_timestamp()))
            .expression_attribute_values(":now", n(now.unix_timestamp()))
            // DynamoDB's TTL deletes within days, not at once: the
            // condition on claimUntil decides, expiresAt only cleans up.
            .expression_attribute_values(":exp", n(until.unix_timestamp() + 86_400))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(SdkError::ServiceError(se)) => match se.err() {
                UpdateItemError::ConditionalCheckFailedException(c) => Ok(Some(
                    c.item()
                        .and_then(|item| item.get("holder"))
                        .and_then(|h| h.as_s().ok())
                        .cloned()
                        .unwrap_or_else(|| "another execution".to_string()),
                )),
                _ => Err(classify("UpdateItem", &SdkError::ServiceError(se))),
            },
            Err(e) => Err(classify("UpdateItem", &e)),
        }
    }

    #[instrument(skip_all, fields(run_id = %run_id))]
    async fn add_note(&self, run_id: &str, note: &str) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(run_key(run_id)))
            .update_expression("SET #notes = list_append(if_not_exists(#notes, :none), :note)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#notes", "notes")
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":note", AttributeValue::L(vec![s(note)]))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                Ok(false)
            }
            Err(e) => Err(classify("UpdateItem", &e)),
        }
    }
}

/// Reads the `holder` and lease of a job's slots (for operators and tests).
pub async fn slot_holders(store: &DynamoDbRunStore, job: &str) -> Result<Vec<(String, i64)>> {
    Ok(store
        .slot_items(job)
        .await?
        .iter()
        .filter_map(|i| {
            let lease = i
                .get("leaseUntil")
                .map(from_attr)
                .and_then(|v| v.as_i64())?;
            Some((holder_of(i)?, lease))
        })
        .collect())
}

/// A nested record field as JSON.
fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
