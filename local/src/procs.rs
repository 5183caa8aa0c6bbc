//! Which process is which, across restarts of `stevedore` and of the
//! machine. A pid alone is not an identity: after a crash the number may
//! belong to another program. On Linux a process is its pid, its start time
//! (clock ticks since boot, `/proc/<pid>/stat` field 22) and the boot it
//! started in (`/proc/sys/kernel/random/boot_id`); elsewhere only the pid is
//! known and a live pid is taken at its word.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    /// Start time in clock ticks since boot, where the system tells it.
    pub start: Option<u64>,
    /// The boot the process started in.
    pub boot: Option<String>,
}

impl ProcessId {
    /// This process.
    pub fn current() -> ProcessId {
        ProcessId::of(std::process::id())
    }

    /// The process now running as `pid` (whether or not it is alive).
    pub fn of(pid: u32) -> ProcessId {
        ProcessId {
            pid,
            start: start_ticks(pid),
            boot: boot_id(),
        }
    }

    /// Whether this very process is still running: same boot, same pid,
    /// same start time.
    pub fn is_alive(&self) -> bool {
        if self.boot.is_some() && boot_id() != self.boot {
            return false;
        }
        if !pid_exists(self.pid) || is_zombie(self.pid) {
            return false;
        }
        match (self.start, start_ticks(self.pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            // Without /proc there is nothing more to compare.
            _ => true,
        }
    }

    /// Whether any process of the group this process leads is still there
    /// (the leader may be gone while its children run on). `false` once the
    /// machine has restarted.
    pub fn group_alive(&self) -> bool {
        if self.boot.is_some() && boot_id() != self.boot {
            return false;
        }
        // The leader's pid now belongs to another program: the group's pid
        // cannot have been reused while any member lived, so it is gone.
        let reused = pid_exists(self.pid)
            && !is_zombie(self.pid)
            && matches!((self.start, start_ticks(self.pid)), (Some(a), Some(b)) if a != b);
        if reused {
            return false;
        }
        match live_group_members(self.pid) {
            Some(n) => n > 0,
            None => signal_group(self.pid, 0),
        }
    }
}

fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks the pid; no memory is involved.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Sends `sig` to the process group `pgid` (0 only checks it exists).
/// Whether the group exists.
pub fn signal_group(pgid: u32, sig: i32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) on a process group; no memory is involved.
    let r = unsafe { libc::kill(-pgid, sig) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A process that has exited but was not reaped yet (its parent is gone
/// and the machine's init is slow to reap) still has a pid: it is dead.
fn is_zombie(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().map(|s| s == "Z" || s == "X"))
        .unwrap_or(false)
}

/// `/proc/<pid>/stat` from field 3 (the state) on.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// How many processes of group `pgid` are alive (exited but unreaped ones
/// do not count); `None` where /proc cannot tell.
pub fn live_group_members(pgid: u32) -> Option<usize> {
    let dir = std::fs::read_dir("/proc").ok()?;
    let mut n = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(fields) = stat_fields(pid) else {
            continue;
        };
        // Field 3 is the state, field 5 the process group.
        let live = fields.first().is_some_and(|s| s != "Z" && s != "X");
        if live && fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            n += 1;
        }
    }
    Some(n)
}

fn start_ticks(pid: u32) -> Option<u64> {
    // Field 22.
    stat_fields(pid)?.get(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::current();
        assert!(me.is_alive());
        if me.start.is_some() {
            let other = ProcessId {
                start: me.start.map(|s| s + 1),
                ..me.clone()
            };
            assert!(!other.is_alive(), "a reused pid is another process");
            let rebooted = ProcessId {
                boot: Some("another-boot".into()),
                ..me
            };
            assert!(!rebooted.is_alive());
        }
    }

    #[test]
    fn an_unreaped_child_is_not_alive() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let id = ProcessId::of(child.id());
        // Exited, not yet waited for: a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while id.is_alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!id.is_alive());
        child.wait().unwrap();
    }

    #[test]
    fn an_exited_child_is_not_alive_and_its_group_is_gone() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let id = ProcessId::of(child.id());
        child.wait().unwrap();
        assert!(!id.is_alive());
        assert!(!id.group_alive());
    }
}
