#!/usr/bin/env bash
# The test command: installs what the tests need (idempotently), starts the
# emulators, runs the format and lint checks and every test, stops the
# emulators, then checks the deployment (ASL, template, sam build). Fails
# when anything fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

need cargo "the Rust toolchain"
start_emulators

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "cargo test (unit, adapter and emulator tests)"
cargo test --workspace --locked
bash "$ROOT/scripts/check-deploy.sh"
say "all tests passed"
