//! What is running on this machine right now, kept in the run store's
//! SQLite file so that another `stevedore` (or the next one, after a crash
//! or a reboot) can see it: each live execution with the `stevedore`
//! process that drives it, each job process with its owner, and each
//! execution's history, written event by event as it happens.

use rusqlite::{params, OptionalExtension};
use serde_json::Value;
use stevedore_domain::task::format_time;
use stevedore_domain::Result;
use time::OffsetDateTime;

use crate::procs::ProcessId;
use crate::sqlite::{db_err, SqliteRunStore};

/// The tables this module keeps (created with the store's own).
pub(crate) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS live_executions (
      execution_id TEXT PRIMARY KEY,
      job TEXT NOT NULL,
      input TEXT NOT NULL,
      owner TEXT NOT NULL,
      started_at TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS live_processes (
      task_arn TEXT PRIMARY KEY,
      run_id TEXT NOT NULL,
      process TEXT NOT NULL,
      owner TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS history_events (
      execution_id TEXT NOT NULL,
      id INTEGER NOT NULL,
      event TEXT NOT NULL,
      PRIMARY KEY (execution_id, id));";

/// An execution some `stevedore` process drives (or drove, if it is gone).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveExecution {
    pub execution_id: String,
    pub job: String,
    pub input: Value,
    pub owner: ProcessId,
}

/// A job process some `stevedore` process started.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveProcess {
    pub task_arn: String,
    pub run_id: String,
    pub process: ProcessId,
    pub owner: ProcessId,
}

/// Where a process runner reports the job processes it starts and reaps.
pub trait ProcessLedger: Send + Sync {
    fn started(&self, task_arn: &str, run_id: &str, process: &ProcessId);
    fn ended(&self, task_arn: &str);
}

fn to_text(p: &ProcessId) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

fn from_text(s: &str) -> ProcessId {
    // A row that cannot be read names no live process.
    serde_json::from_str(s).unwrap_or(ProcessId {
        pid: 0,
        start: None,
        boot: None,
    })
}

impl SqliteRunStore {
    /// Records that this process now drives `execution_id`. Fails if another
    /// live process already does (Step Functions refuses a second execution
    /// of one name too).
    pub fn begin_execution(
        &self,
        execution_id: &str,
        job: &str,
        input: &Value,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let conn = self.conn();
        let existing: Option<String> = conn
            .query_row(
                "SELECT owner FROM live_executions WHERE execution_id = ?1",
                params![execution_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if existing.is_some_and(|o| from_text(&o).is_alive()) {
            return Ok(false);
        }
        conn.execute(
            "INSERT INTO live_executions (execution_id, job, input, owner, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(execution_id) DO UPDATE SET job = excluded.job, input = excluded.input,
               owner = excluded.owner, started_at = excluded.started_at",
            params![
                execution_id,
                job,
                input.to_string(),
                to_text(&ProcessId::current()),
                format_time(now)
            ],
        )
        .map_err(db_err)?;
        Ok(true)
    }

    /// The execution has ended and everything it needed is recorded.
    pub fn end_execution(&self, execution_id: &str) -> Result<()> {
        self.conn()
            .execute(
                "DELETE FROM live_executions WHERE execution_id = ?1",
                params![execution_id],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Whether an execution of this id was ever recorded here.
    pub fn execution_known(&self, execution_id: &str) -> Result<bool> {
        let conn = self.conn();
        let n: i64 = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM history_events WHERE execution_id = ?1)
                      + (SELECT COUNT(*) FROM executions WHERE execution_id = ?1)
                      + (SELECT COUNT(*) FROM live_executions WHERE execution_id = ?1)",
                params![execution_id],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        Ok(n > 0)
    }

    /// Rows of four text columns.
    fn rows4(&self, sql: &str) -> Result<Vec<[String; 4]>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql).map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]))
            .map_err(db_err)?;
        rows.map(|r| r.map_err(db_err)).collect()
    }

    /// Live executions whose `stevedore` process is gone.
    pub fn orphaned_executions(&self) -> Result<Vec<LiveExecution>> {
        let rows = self.rows4(
            "SELECT execution_id, job, input, owner FROM live_executions ORDER BY started_at",
        )?;
        Ok(rows
            .into_iter()
            .map(|[execution_id, job, input, owner]| LiveExecution {
                execution_id,
                job,
                input: serde_json::from_str(&input).unwrap_or(Value::Null),
                owner: from_text(&owner),
            })
            .filter(|e| !e.owner.is_alive())
            .collect())
    }

    /// Job processes whose `stevedore` process is gone.
    pub fn orphaned_processes(&self) -> Result<Vec<LiveProcess>> {
        let rows = self.rows4("SELECT task_arn, run_id, process, owner FROM live_processes")?;
        Ok(rows
            .into_iter()
            .map(|[task_arn, run_id, process, owner]| LiveProcess {
                task_arn,
                run_id,
                process: from_text(&process),
                owner: from_text(&owner),
            })
            .filter(|p| !p.owner.is_alive())
            .collect())
    }

    /// Appends one history event (its `id` orders it).
    pub fn append_event(&self, execution_id: &str, event: &Value) -> Result<()> {
        let id = event.get("id").and_then(Value::as_u64).unwrap_or(0);
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO history_events (execution_id, id, event) VALUES (?1, ?2, ?3)",
                params![execution_id, id as i64, event.to_string()],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Ends an execution's history the way an aborted one ends: an
    /// `ExecutionAborted` event after the last one recorded.
    pub fn close_history(
        &self,
        execution_id: &str,
        error: &str,
        cause: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        let id = self.last_event_id(execution_id)? + 1;
        self.append_event(
            execution_id,
            &serde_json::json!({
                "id": id,
                "timestamp": format_time(now),
                "type": "ExecutionAborted",
                "details": {"error": error, "cause": cause},
            }),
        )
    }

    /// The id of the last event recorded for an execution (0 when none).
    pub fn last_event_id(&self, execution_id: &str) -> Result<u64> {
        let id: Option<i64> = self
            .conn()
            .query_row(
                "SELECT MAX(id) FROM history_events WHERE execution_id = ?1",
                params![execution_id],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        Ok(id.unwrap_or(0).max(0) as u64)
    }

    /// The events appended so far, in order (None when there are none).
    pub(crate) fn appended_history(&self, execution_id: &str) -> Result<Option<Value>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT event FROM history_events WHERE execution_id = ?1 ORDER BY id")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![execution_id], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        let mut events = Vec::new();
        for row in rows {
            events.push(serde_json::from_str(&row.map_err(db_err)?).unwrap_or(Value::Null));
        }
        Ok((!events.is_empty()).then_some(Value::Array(events)))
    }

    pub fn forget_process(&self, task_arn: &str) -> Result<()> {
        self.conn()
            .execute(
                "DELETE FROM live_processes WHERE task_arn = ?1",
                params![task_arn],
            )
            .map_err(db_err)?;
        Ok(())
    }
}

impl ProcessLedger for SqliteRunStore {
    fn started(&self, task_arn: &str, run_id: &str, process: &ProcessId) {
        let r = self.conn().execute(
            "INSERT OR REPLACE INTO live_processes (task_arn, run_id, process, owner) VALUES (?1, ?2, ?3, ?4)",
            params![task_arn, run_id, to_text(process), to_text(&ProcessId::current())],
        );
        if let Err(e) = r {
            eprintln!(
                "stevedore: cannot record the job process {}: {e}",
                process.pid
            );
        }
    }

    fn ended(&self, task_arn: &str) {
        if let Err(e) = self.forget_process(task_arn) {
            eprintln!("stevedore: {}", e.message);
        }
    }
}
