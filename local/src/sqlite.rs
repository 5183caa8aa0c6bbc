//! [`RunStore`] in an embedded SQLite database, with the same conditional
//! semantics as the DynamoDB store (checked by the same contract suite):
//! each change is one transaction that reads the status, checks the
//! transition and writes.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use stevedore_domain::ports::RunStore;
use stevedore_domain::run::{
    ChangeOutcome, CreateOutcome, RunChange, RunQuery, RunRecord, SlotGrant,
};
use stevedore_domain::task::format_time;
use stevedore_domain::{Error, Result, RunStatus};
use time::OffsetDateTime;

pub struct SqliteRunStore {
    conn: Mutex<Connection>,
}

pub(crate) fn db_err(e: impl std::fmt::Display) -> Error {
    Error::transient(format!("local run store: {e}"))
}

fn decode(json: &str) -> Result<RunRecord> {
    serde_json::from_str(json)
        .map_err(|e| Error::invalid_input(format!("a stored run cannot be read: {e}")))
}

/// The run records a query selects (its first column is `record`).
fn records(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<RunRecord>> {
    let mut stmt = conn.prepare(sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params, |r| r.get::<_, String>(0))
        .map_err(db_err)?;
    rows.map(|r| decode(&r.map_err(db_err)?)).collect()
}

/// One run by id (in a transaction or not: a transaction derefs to its connection).
fn read_run(conn: &Connection, run_id: &str) -> Result<Option<RunRecord>> {
    let json: Option<String> = conn
        .query_row(
            "SELECT record FROM runs WHERE run_id = ?1",
            params![run_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    json.map(|j| decode(&j)).transpose()
}

fn encode(run: &RunRecord) -> Result<String> {
    serde_json::to_string(run)
        .map_err(|e| Error::invalid_input(format!("a run cannot be stored: {e}")))
}

impl SqliteRunStore {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<SqliteRunStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::configuration(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path)
            .map_err(|e| Error::configuration(format!("cannot open {}: {e}", path.display())))?;
        Self::init(conn)
    }

    /// An in-memory database (tests, benchmarks).
    pub fn in_memory() -> Result<SqliteRunStore> {
        Self::init(Connection::open_in_memory().map_err(db_err)?)
    }

    fn init(conn: Connection) -> Result<SqliteRunStore> {
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err)?;
        conn.execute_batch(crate::ledger::SCHEMA).map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS runs (
               run_id TEXT PRIMARY KEY,
               job TEXT NOT NULL,
               execution_id TEXT NOT NULL,
               attempt INTEGER NOT NULL,
               status TEXT NOT NULL,
               created_at TEXT NOT NULL,
               record TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, created_at DESC);
             CREATE INDEX IF NOT EXISTS runs_by_execution ON runs (execution_id, attempt);
             CREATE TABLE IF NOT EXISTS slots (
               job TEXT NOT NULL,
               slot INTEGER NOT NULL,
               holder TEXT NOT NULL,
               lease_until INTEGER NOT NULL,
               PRIMARY KEY (job, slot));
             CREATE TABLE IF NOT EXISTS launch_claims (
               run_id TEXT PRIMARY KEY,
               until INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS scheduled_starts (
               job TEXT NOT NULL,
               scheduled TEXT NOT NULL,
               holder TEXT NOT NULL,
               until INTEGER NOT NULL,
               PRIMARY KEY (job, scheduled));
             CREATE TABLE IF NOT EXISTS executions (
               execution_id TEXT PRIMARY KEY,
               history TEXT NOT NULL);",
        )
        .map_err(db_err)?;
        Ok(SqliteRunStore {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs of every job, newest first (the CLI's `runs list` without `--job`).
    pub fn list_all(&self, status: Option<RunStatus>, limit: u32) -> Result<Vec<RunRecord>> {
        records(
            &self.conn(),
            "SELECT record FROM runs WHERE (?1 IS NULL OR status = ?1) ORDER BY created_at DESC, run_id DESC LIMIT ?2",
            params![status.map(|s| s.as_str()), limit],
        )
    }

    /// Every run created at or after `since` (of one job, or of all),
    /// oldest first (`runs stats`).
    pub fn runs_since(&self, job: Option<&str>, since: OffsetDateTime) -> Result<Vec<RunRecord>> {
        records(
            &self.conn(),
            "SELECT record FROM runs WHERE (?1 IS NULL OR job = ?1) AND created_at >= ?2 ORDER BY created_at, run_id",
            params![job, format_time(since)],
        )
    }

    /// Keeps an execution's history (for `runs show`).
    pub fn save_history(&self, execution_id: &str, history: &Value) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO executions (execution_id, history) VALUES (?1, ?2)
                 ON CONFLICT(execution_id) DO UPDATE SET history = excluded.history",
                params![execution_id, history.to_string()],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// An execution's history: the events appended as it ran, or the
    /// whole history saved at its end (older stores).
    pub fn history(&self, execution_id: &str) -> Result<Option<Value>> {
        if let Some(events) = self.appended_history(execution_id)? {
            return Ok(Some(events));
        }
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT history FROM executions WHERE execution_id = ?1",
                params![execution_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}

#[async_trait]
impl RunStore for SqliteRunStore {
    async fn create_run(&self, run: &RunRecord) -> Result<CreateOutcome> {
        let conn = self.conn();
        let inserted = conn
            .execute(
                "INSERT OR IGNORE INTO runs (run_id, job, execution_id, attempt, status, created_at, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    run.run_id,
                    run.job,
                    run.execution.id,
                    run.attempt,
                    run.status.as_str(),
                    format!("{}#{}", format_time(run.created_at), run.run_id),
                    encode(run)?
                ],
            )
            .map_err(db_err)?;
        if inserted == 1 {
            return Ok(CreateOutcome::Created);
        }
        let json: String = conn
            .query_row(
                "SELECT record FROM runs WHERE run_id = ?1",
                params![run.run_id],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        Ok(CreateOutcome::Exists(decode(&json)?))
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        read_run(&self.conn(), run_id)
    }

    async fn change_run(&self, run_id: &str, change: &RunChange) -> Result<ChangeOutcome> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let Some(mut run) = read_run(&tx, run_id)? else {
            return Ok(ChangeOutcome::NotFound);
        };
        if !change.applies_to(&run) {
            return Ok(change.refused(run));
        }
        change.apply_to(&mut run);
        tx.execute(
            "UPDATE runs SET status = ?2, record = ?3 WHERE run_id = ?1",
            params![run_id, run.status.as_str(), encode(&run)?],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(ChangeOutcome::Applied(run))
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        records(
            &self.conn(),
            "SELECT record FROM runs WHERE job = ?1 AND (?2 IS NULL OR status = ?2)
             ORDER BY created_at DESC LIMIT ?3",
            params![query.job, query.status.map(|s| s.as_str()), query.limit],
        )
    }

    async fn runs_of_execution(&self, execution_id: &str) -> Result<Vec<RunRecord>> {
        records(
            &self.conn(),
            "SELECT record FROM runs WHERE execution_id = ?1 ORDER BY attempt",
            params![execution_id],
        )
    }

    async fn acquire_slot(
        &self,
        job: &str,
        holder: &str,
        max: u32,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<SlotGrant> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let mine: Option<u32> = tx
            .query_row(
                "SELECT slot FROM slots WHERE job = ?1 AND holder = ?2",
                params![job, holder],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        let lease = lease_until.unix_timestamp();
        if let Some(slot) = mine {
            tx.execute(
                "UPDATE slots SET lease_until = ?3 WHERE job = ?1 AND slot = ?2",
                params![job, slot, lease],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            return Ok(SlotGrant::Granted { slot });
        }
        for slot in 0..max {
            let taken: Option<i64> = tx
                .query_row(
                    "SELECT lease_until FROM slots WHERE job = ?1 AND slot = ?2",
                    params![job, slot],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if taken.is_none_or(|until| until < now.unix_timestamp()) {
                tx.execute(
                    "INSERT INTO slots (job, slot, holder, lease_until) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(job, slot) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until",
                    params![job, slot, holder, lease],
                )
                .map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                return Ok(SlotGrant::Granted { slot });
            }
        }
        let mut stmt = tx
            .prepare("SELECT holder FROM slots WHERE job = ?1 ORDER BY slot")
            .map_err(db_err)?;
        let holders = stmt
            .query_map(params![job], |r| r.get::<_, String>(0))
            .map_err(db_err)?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(db_err)?;
        Ok(SlotGrant::Busy { holders })
    }

    async fn release_slot(&self, job: &str, holder: &str) -> Result<()> {
        self.conn()
            .execute(
                "DELETE FROM slots WHERE job = ?1 AND holder = ?2",
                params![job, holder],
            )
            .map_err(db_err)?;
        Ok(())
    }

    async fn claim_launch(
        &self,
        run_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let pending = read_run(&tx, run_id)?.is_some_and(|r| r.status == RunStatus::Pending);
        let held: Option<i64> = tx
            .query_row(
                "SELECT until FROM launch_claims WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if !pending || held.is_some_and(|h| h > now.unix_timestamp()) {
            return Ok(false);
        }
        tx.execute(
            "INSERT OR REPLACE INTO launch_claims (run_id, until) VALUES (?1, ?2)",
            params![run_id, until.unix_timestamp()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(true)
    }

    async fn claim_scheduled_start(
        &self,
        job: &str,
        scheduled: &str,
        execution_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<String>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let held: Option<(String, i64)> = tx
            .query_row(
                "SELECT holder, until FROM scheduled_starts WHERE job = ?1 AND scheduled = ?2",
                params![job, scheduled],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err)?;
        if let Some((holder, held_until)) = held {
            if holder != execution_id && held_until > now.unix_timestamp() {
                return Ok(Some(holder));
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO scheduled_starts (job, scheduled, holder, until) VALUES (?1, ?2, ?3, ?4)",
            params![job, scheduled, execution_id, until.unix_timestamp()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(None)
    }

    async fn add_note(&self, run_id: &str, note: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let Some(mut run) = read_run(&tx, run_id)? else {
            return Ok(false);
        };
        run.notes.push(note.to_string());
        tx.execute(
            "UPDATE runs SET record = ?2 WHERE run_id = ?1",
            params![run_id, encode(&run)?],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(true)
    }
}
