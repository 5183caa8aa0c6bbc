#!/usr/bin/env bash
# Structured fuzzing of everything Stevedore reads from outside: job specs,
# JSONPath, intrinsic functions, state machine definitions, whole executions
# of random small definitions, ECS task state change events, alerts as SNS
# and Slack carry them. Each target runs in a child process, so a panic, an
# abort (a stack overflow) or a broken invariant is caught, and the input
# that did it is saved under fuzz/regressions/<target>/ (where
# `cargo test -p stevedore-fuzz` replays it from then on). Its last line is
#   fuzz: N inputs, P panics
# and it exits 1 on any panic or broken invariant.
#
#   bash scripts/fuzz.sh [--seconds N]     # all targets, N seconds in all (default 60)
#   bash scripts/fuzz.sh --target jsonpath --seconds 30 [--seed S] [--jobs J]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need cargo "the Rust toolchain"
# The test profile's build (shared with `cargo test`), so it costs no extra compile.
cargo build --quiet --locked -p stevedore-fuzz
exec "$CARGO_TARGET_DIR/debug/stevedore-fuzz" "$@"
