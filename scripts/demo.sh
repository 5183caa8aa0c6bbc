#!/usr/bin/env bash
# Runs a job spec through Stevedore's handlers against the emulators
# (moto server, DynamoDB Local), installing what it needs on first use.
# usage: scripts/demo.sh [examples/jobs/hello.json] [--exit-code N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need cargo "the Rust toolchain"
start_emulators
job=${1:-examples/jobs/hello.json}
shift || true
cargo run --quiet --locked -p stevedore-integration-tests --example demo -- "$job" "$@"
