//! What every CLI test file needs: a fresh home, the binary run as a user
//! runs it (from the repository, without colour or Slack), its output as text.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An empty `STEVEDORE_HOME` of this test process.
pub fn home(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stevedore-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn command(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stevedore"));
    c.args(args)
        .env("STEVEDORE_HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("STEVEDORE_SLACK_WEBHOOK")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    c
}

pub fn stevedore(home: &Path, args: &[&str]) -> Output {
    command(home, args).output().expect("run stevedore")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
