#!/usr/bin/env bash
# Checks what `sam deploy` would deploy, with the real tools, offline:
# asl-validator on every state machine (and on a broken one, which must fail),
# sam validate --lint, cfn-lint, checkov (zero failed checks) on template.yaml
# and on the job template jobs/job.yaml, Stevedore's own deploy rules
# (tests/deploy/check_template.py: capabilities in samconfig.toml, retained
# keys, state machine log group, name lengths), `sam build` exactly as the
# README says (arm64, a bootstrap per function), and each arm64 bootstrap
# started under qemu against a Lambda Runtime API (tests/deploy/start_check.py).
#
# usage: bash scripts/check-deploy.sh [build|check]
#   (no argument) everything; `build` only sam build; `check` everything but
#   sam build, on what an earlier `build` left in .aws-sam/build.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
mode=${1:-all}
case "$mode" in all | build | check) ;; *) die "usage: bash scripts/check-deploy.sh [build|check]" ;; esac

FUNCTIONS=(LaunchRunFunction WatchTaskFunction TaskEventsFunction RecordRunFunction NotifyFailureFunction ReapExecutionFunction SweepTasksFunction SlackNotifierFunction)

validate() {
  ensure_deploy_tools
  local asl_validator="$NODE_DIR/node_modules/.bin/asl-validator" asl template
  for asl in statemachines/*.asl.json; do
    say "asl-validator $asl"
    "$asl_validator" --json-path "$asl"
  done
  say "asl-validator rejects a broken Next (tests/fixtures/broken-next.asl.json)"
  if "$asl_validator" --silent --json-path tests/fixtures/broken-next.asl.json; then
    die "asl-validator accepted a definition whose Next points nowhere"
  fi
  # The control plane and the per-job template it nests (jobs/job.yaml).
  for template in template.yaml jobs/job.yaml; do
    say "sam validate --lint $template"
    sam validate --lint --template "$template"
    say "cfn-lint $template"
    cfn-lint "$template"
    say "checkov $template"
    "$CHECKOV_VENV/bin/checkov" --file "$template" --framework cloudformation --skip-download --compact --quiet
    # checkov exits non-zero on any failed check; skips carry a written reason in the template.
  done
  say "deploy rules: tests/deploy/check_template.py template.yaml samconfig.toml README.md"
  "$TOOLS/bin/python" tests/deploy/check_template.py template.yaml samconfig.toml README.md
}

build() {
  ensure_sam_tools
  say "sam build, as the README says (samconfig.toml turns on the Rust builder)"
  env -u SAM_CLI_BETA_RUST_CARGO_LAMBDA sam build
}

artifacts() {
  local missing=0 fn
  for fn in "${FUNCTIONS[@]}"; do
    if [ -f ".aws-sam/build/$fn/bootstrap" ]; then
      printf '  %-24s bootstrap %s bytes\n' "$fn" "$(stat -c %s ".aws-sam/build/$fn/bootstrap")"
    else
      echo "  $fn: no bootstrap" >&2
      missing=1
    fi
  done
  [ "$missing" = 0 ] || die "sam build left a function without its bootstrap"
}

start_check() {
  say "the arm64 bootstraps start (qemu-aarch64) and name their errors"
  ensure_qemu_arm64
  local bootstraps=() fn
  for fn in "${FUNCTIONS[@]}"; do
    bootstraps+=("$fn=.aws-sam/build/$fn/bootstrap")
  done
  QEMU_LD_PREFIX=/usr/aarch64-linux-gnu \
    "$TOOLS/bin/python" tests/deploy/start_check.py --wrapper qemu-aarch64 "${bootstraps[@]}"
}

case "$mode" in
  all) validate; build; artifacts; start_check ;;
  build) build; artifacts ;;
  check) validate; artifacts; start_check ;;
esac
say "deploy checks passed ($mode)"
