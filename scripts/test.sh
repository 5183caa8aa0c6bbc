#!/usr/bin/env bash
# The test command: installs what the tests need (idempotently), starts
# `sam build` in the background and the emulators, runs the format and lint
# checks and every test, stops the emulators, then checks the deployment
# (ASL, template, deploy rules, the arm64 bootstraps). Fails when anything
# fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

need cargo "the Rust toolchain"
# The release arm64 build of the functions (`sam build`: one fat-LTO link
# per function, mostly on one core) runs beside the debug build and tests.
deploy_log=$(mktemp)
say "sam build in the background (log: $deploy_log)"
start_background "$deploy_log" bash "$ROOT/scripts/check-deploy.sh" build
start_emulators

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "cargo test (unit, adapter and emulator tests)"
cargo test --workspace --locked
say "the simulation: 2,000 more seeds (cargo test ran seeds 1-1000)"
bash "$ROOT/scripts/simulate.sh" --seeds 2000 --first 1001
say "fuzzing every outside input for 30 s (bash scripts/fuzz.sh --seconds N for longer)"
bash "$ROOT/scripts/fuzz.sh" --seconds 30
conformance=${STEVEDORE_ASL_CONFORMANCE:-$ROOT/../shared/asl-conformance}
if [ -f "$conformance/run.py" ]; then
  say "stevedore exec against the executions recorded on AWS ($conformance)"
  report=$(mktemp)
  cargo build --quiet --locked -p stevedore-cli
  python3 "$conformance/run.py" --virtual-time -j 2 --report "$report" \
    --runner "$CARGO_TARGET_DIR/debug/stevedore exec {definition} --input {input} --json" 2>/dev/null | tail -n 2
  grep -q "^agreement: 100.0%" "$report" || { grep -v '^PASS' "$report" >&2; die "stevedore exec disagrees with AWS (report: $report)"; }
  rm -f "$report"
else
  say "no ASL conformance sample at $conformance (set STEVEDORE_ASL_CONFORMANCE): skipped"
fi
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
say "waiting for sam build (started in the background)"
if ! wait "$BACKGROUND_PID"; then
  tail -n 60 "$deploy_log" >&2
  die "sam build failed (its whole log: $deploy_log)"
fi
tail -n 9 "$deploy_log"
bash "$ROOT/scripts/check-deploy.sh" check
say "all tests passed"
