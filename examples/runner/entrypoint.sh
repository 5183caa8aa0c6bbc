#!/usr/bin/env bash
# Stevedore's generic runner: fetch an application from git at a ref (or use
# the one baked into the image), install its requirements, run the command.
#
#   APP_REPO    git URL to clone (https://github.com/acme/etl.git); unset: run the baked-in app
#   APP_REF     branch, tag or commit to run (default: the remote's default branch)
#   APP_SUBDIR  directory inside the repository to run in (default: its root)
#   APP_DIR     the baked-in application (default: /app)
#   WORK_DIR    where the repository is cloned (default: /tmp/stevedore-app)
#   GIT_TOKEN   a token for private HTTPS repositories (pass it as a container secret);
#               sent as an HTTP header, never put in a URL or printed
#
# The command is the container's command (the job spec's `command`). Signals
# (SIGTERM from ECS when a run is stopped or times out, SIGINT, SIGHUP) are
# forwarded to it, and the runner exits with the application's exit code.
# The runner's own failures have their own codes, so a job spec can retry them
# (`retry.exitCodes`) or not: 64 no command, 69 fetch failed, 70 requirements
# failed to install.
set -uo pipefail

log() { printf 'stevedore-runner: %s\n' "$*" >&2; }

# Never print a URL with credentials in it.
safe_url() { sed -E 's#(://)[^/@]+@#\1[REDACTED]@#' <<<"$1"; }

if [ "$#" -eq 0 ]; then
  log "no command to run: give the container a command (the job spec's \`command\`, e.g. [\"python\", \"-m\", \"app\"])"
  exit 64
fi

# git, with the token as a header (not in the URL) and credentials removed
# from anything it prints.
git_() {
  local args=(-c credential.helper=)
  if [ -n "${GIT_TOKEN:-}" ]; then
    args+=(-c "http.extraHeader=Authorization: Basic $(printf 'x-access-token:%s' "$GIT_TOKEN" | base64 | tr -d '\n')")
  fi
  git "${args[@]}" "$@" 2> >(sed -E 's#(://)[^/@ ]+@#\1[REDACTED]@#g' >&2)
}

fetch_app() {
  local repo=$1 ref=${APP_REF:-} dir=${WORK_DIR:-/tmp/stevedore-app}
  rm -rf "$dir" && mkdir -p "$dir" || return 1
  log "fetching $(safe_url "$repo") at ${ref:-its default branch}"
  (
    cd "$dir" || exit 1
    git init --quiet . && git_ remote add origin "$repo" || exit 1
    if [ -z "$ref" ]; then
      git_ fetch --quiet --depth 1 origin HEAD && git checkout --quiet FETCH_HEAD && exit 0
      exit 1
    fi
    # A branch, tag or commit, shallow when the server allows it...
    if git_ fetch --quiet --depth 1 origin "$ref" 2>/dev/null; then
      git checkout --quiet FETCH_HEAD && exit 0
    fi
    # ...else the whole history (servers that do not serve commits by id).
    git_ fetch --quiet --tags origin '+refs/heads/*:refs/remotes/origin/*' || exit 1
    git checkout --quiet "$ref" 2>/dev/null \
      || git checkout --quiet "origin/$ref" 2>/dev/null \
      || { log "ref '$ref' is neither a branch, a tag nor a commit of $(safe_url "$repo")"; exit 1; }
  ) || return 1
  APP_HOME="$dir"
}

if [ -n "${APP_REPO:-}" ]; then
  fetch_app "$APP_REPO" || { log "could not fetch the application from $(safe_url "$APP_REPO")"; exit 69; }
  log "running commit $(git -C "$APP_HOME" rev-parse --short HEAD)"
else
  APP_HOME=${APP_DIR:-/app}
fi
if [ -n "${APP_SUBDIR:-}" ]; then
  APP_HOME="$APP_HOME/$APP_SUBDIR"
fi
cd "$APP_HOME" || { log "no application directory $APP_HOME"; exit 69; }

if [ -f requirements.txt ]; then
  log "installing requirements.txt into $APP_HOME/.venv"
  python3 -m venv .venv \
    && .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input -r requirements.txt \
    || { log "installing requirements.txt failed"; exit 70; }
  export VIRTUAL_ENV="$APP_HOME/.venv"
  export PATH="$VIRTUAL_ENV/bin:$PATH"
fi

# The application runs as a child so the signals ECS sends reach it, and
# its exit code becomes the container's.
"$@" &
child=$!
signalled=0
forward() { signalled=1; kill -s "$1" "$child" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward HUP' HUP
status=""
while :; do
  signalled=0
  wait "$child"
  rc=$?
  # After an interrupted wait, the application's status may already have
  # been collected: `wait` then answers 127 and the last status stands.
  if [ "$rc" = 127 ] && [ -n "$status" ] && ! kill -0 "$child" 2>/dev/null; then
    break
  fi
  status=$rc
  # A forwarded signal interrupts `wait` (status 128+n) before the
  # application has exited: wait again for the application's own status.
  [ "$signalled" = 1 ] || break
done
exit "$status"
