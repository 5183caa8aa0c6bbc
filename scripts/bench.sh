#!/usr/bin/env bash
# Re-runs every benchmark of BENCHMARKS.md on this machine and prints the
# tables (markdown). Nothing here is a test: benchmarks report, tests assert.
# usage: bash scripts/bench.sh [cost|handlers|latency|scale|coldstart|size|engine|operate]...   (default: all)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
need cargo "the Rust toolchain"
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(machine cost handlers latency scale coldstart size engine operate)
# 1,000 concurrent runs hold a few thousand pipes and files.
[ "$(ulimit -n)" -ge 8192 ] || ulimit -n 8192 2>/dev/null || true

cargo build --quiet --release --locked -p stevedore-bench
bench="$CARGO_TARGET_DIR/release/stevedore-bench"
functions=(launch-run watch-task task-events record-run notify-failure reap-execution sweep-tasks slack-notifier)

for w in "${what[@]}"; do
  case "$w" in
    machine)
      echo "## machine"
      echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r), $(rustc --version)"
      ;;
    cost) echo "## cost"; "$bench" cost ;;
    handlers) echo "## handlers"; "$bench" handlers --iterations 20000 ;;
    latency) echo "## latency"; "$bench" latency --runs 20 ;;
    scale) echo "## scale"; "$bench" scale --runs 1000 ;;
    engine)
      echo "## engine"
      cases="$ROOT/../shared/asl-conformance/cases"
      if [ -d "$cases" ]; then "$bench" engine --cases "$cases" --repeat 20
      else echo "(no ASL conformance sample at $cases: skipped)"; fi
      ;;
    operate)
      echo "## operate"
      # The CLI as `bash scripts/stevedore --stack S` builds it; the seeding
      # and timing program in debug (it waits on the emulators, not the CPU).
      cargo build --quiet --locked --profile local -p stevedore-cli
      cargo build --quiet --locked -p stevedore-bench --features aws --bin stevedore-bench-operate
      start_emulators >/dev/null
      "$CARGO_TARGET_DIR/debug/stevedore-bench-operate" --cli "$CARGO_TARGET_DIR/local/stevedore" --runs 10000 --repeat 20
      ;;
    coldstart)
      echo "## coldstart"
      ensure_moto   # its venv has boto3, for the Python comparison
      cargo build --quiet --release --locked $(printf -- '-p %s ' "${functions[@]}")
      args=()
      for f in "${functions[@]}"; do args+=(--binary "$CARGO_TARGET_DIR/release/$f"); done
      "$bench" coldstart "${args[@]}" --python bench/python/handler.py --python-bin "$VENV/bin/python" --runs 20
      ;;
    size)
      echo "## size"
      ensure_deploy_tools
      cargo lambda build --release --arm64 --output-format zip $(printf -- '--package %s ' "${functions[@]}") >/dev/null 2>&1
      echo "| function | bootstrap.zip (arm64) | bootstrap |"
      echo "|---|---:|---:|"
      for f in "${functions[@]}"; do
        zip="$CARGO_TARGET_DIR/lambda/$f/bootstrap.zip"
        python3 - "$f" "$zip" <<'PY'
import os, sys, zipfile
name, path = sys.argv[1], sys.argv[2]
inner = zipfile.ZipFile(path).getinfo("bootstrap").file_size
print(f"| {name} | {os.path.getsize(path) / 1e6:.2f} MB | {inner / 1e6:.2f} MB |")
PY
      done
      ;;
    *) die "unknown benchmark '$w' (cost, handlers, latency, scale, coldstart, size, engine, operate)" ;;
  esac
done
