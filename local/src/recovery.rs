//! After `stevedore` was killed (SIGKILL, a closed terminal, a reboot), the
//! next `stevedore` command cleans up what it left: it stops job processes
//! that outlived it, marks its runs failed (`KilledByInfrastructure`), frees
//! their concurrency slots and closes their execution histories.

use std::time::Duration;

use stevedore_domain::failure::Outcome;
use stevedore_domain::ports::{Clock, RunStore};
use stevedore_domain::run::{ChangeOutcome, RunChange};
use stevedore_domain::{FailureClass, Result, RunStatus};

use crate::procs::signal_group;
use crate::sqlite::SqliteRunStore;

/// How long a job gets between SIGTERM and SIGKILL when its `stevedore` is
/// gone (short: nobody is waiting for it to finish its work).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// What one recovery did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    /// Job processes (their group leaders' pids) that were still running.
    pub stopped_processes: Vec<u32>,
    /// Runs marked FAILED.
    pub failed_runs: Vec<String>,
    /// Executions closed.
    pub executions: Vec<String>,
}

impl Recovered {
    pub fn is_empty(&self) -> bool {
        self.stopped_processes.is_empty()
            && self.failed_runs.is_empty()
            && self.executions.is_empty()
    }
}

pub const CAUSE: &str = "stevedore exited while the job ran";

/// Finds what dead `stevedore` processes left behind and cleans it up.
/// Safe to run from several processes at once: each step is conditional.
pub async fn recover(store: &SqliteRunStore, clock: &dyn Clock) -> Result<Recovered> {
    let mut out = Recovered::default();
    for p in store.orphaned_processes()? {
        if p.process.group_alive() {
            signal_group(p.process.pid, libc::SIGTERM);
            let deadline = std::time::Instant::now() + ORPHAN_GRACE;
            while p.process.group_alive() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if p.process.group_alive() {
                signal_group(p.process.pid, libc::SIGKILL);
            }
            out.stopped_processes.push(p.process.pid);
        }
        store.forget_process(&p.task_arn)?;
    }
    for e in store.orphaned_executions()? {
        let now = clock.now();
        let cause = format!("{CAUSE} (stevedore pid {})", e.owner.pid);
        for run in store.runs_of_execution(&e.execution_id).await? {
            if run.status.is_terminal() {
                continue;
            }
            let change = RunChange {
                outcome: Some(Outcome::failed(
                    FailureClass::KilledByInfrastructure,
                    cause.clone(),
                    None,
                )),
                finished_at: Some(now),
                ..RunChange::to(RunStatus::Failed)
            };
            if let ChangeOutcome::Applied(_) = store.change_run(&run.run_id, &change).await? {
                out.failed_runs.push(run.run_id.clone());
            }
        }
        store.release_slot(&e.job, &e.execution_id).await?;
        store.close_history(&e.execution_id, "KilledByInfrastructure", &cause, now)?;
        store.end_execution(&e.execution_id)?;
        out.executions.push(e.execution_id);
    }
    Ok(out)
}
