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
say "the README's first command: stevedore run examples/jobs/hello.json, then runs list"
smoke_home=$(mktemp -d)
STEVEDORE_HOME=$smoke_home bash "$ROOT/scripts/stevedore" run --quiet examples/jobs/hello.json
listed=$(STEVEDORE_HOME=$smoke_home bash "$ROOT/scripts/stevedore" runs list)
echo "$listed"
case "$listed" in
  *hello*SUCCEEDED*) ;;
  *) die "stevedore runs list does not show the hello run as SUCCEEDED" ;;
esac
rm -rf "$smoke_home"
bash "$ROOT/scripts/check-deploy.sh"
say "all tests passed"
