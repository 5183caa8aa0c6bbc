#!/usr/bin/env bash
# The control plane's deterministic simulation: runs seeds of run-job (the
# real state machine and handlers) against a simulated ECS with seeded faults
# and checks its invariants. Its last line is
#   simulated N executions (K seeds): V invariant violations
# and it exits 1 on any violation, printing the seed, the invariant and the
# command that replays it.
#
#   bash scripts/simulate.sh [--seeds N] [--first S]   # seeds S .. S+N-1 (default 1000 from 1)
#   bash scripts/simulate.sh --seed S [--trace]        # one seed (twice: it must replay exactly)
#   bash scripts/simulate.sh --break no-sweep|no-reaper|watch-failure-stops|scheduled-twice  # a deliberately broken control plane
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need cargo "the Rust toolchain"
# The test profile's build (shared with `cargo test`), so it costs no extra compile.
cargo build --quiet --locked -p stevedore-sim
exec "$CARGO_TARGET_DIR/debug/stevedore-sim" "$@"
