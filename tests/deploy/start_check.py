"""The shipped artifacts start: runs each `bootstrap` that `sam build` left
(arm64, under qemu user-mode emulation on an x86_64 machine) against a Lambda
Runtime API (tests/emulators/lambda_host.py), with the environment Lambda
gives it and every AWS endpoint pointed at that same API, and checks that

- init completes: the first request is the Runtime API's `next`, with no
  network call before it (AWS clients are built without calling AWS);
- one invocation with an event the function cannot use returns the
  function's own error name (a failure class such as `InvalidInput`), not a
  crash of the process (Lambda's `Runtime.*` / `Sandbox.*`).

Usage: python start_check.py [--wrapper qemu-aarch64] NAME=PATH/bootstrap ...
Exit 1 when a function fails a check.
"""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "emulators"))
import lambda_host  # noqa: E402

ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "example",
    "RUNS_TABLE": "runs",
    "CLUSTER": "arn:aws:ecs:us-east-1:123456789012:cluster/data",
    "ALERTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:alerts",
    "SLACK_WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:slack-AbCdEf",
}
BAD_EVENT = b'{"this is": "not an event any Stevedore function takes"}'


def check(name, command, init_timeout):
    log = tempfile.TemporaryFile()
    fn = lambda_host.Function(name, command, {}, timeout=init_timeout, stderr=log)
    endpoint = f"http://{fn.runtime_api()}"
    fn.env = dict(ENV, AWS_ENDPOINT_URL=endpoint)
    started = time.monotonic()
    ok, payload = fn.invoke(BAD_EVENT)
    elapsed = time.monotonic() - started
    problems = []
    if fn.before_first_next:
        problems.append(f"requests during init, before the first `next`: {fn.before_first_next}")
    try:
        body = json.loads(payload)
    except ValueError:
        body = {"raw": payload.decode(errors="replace")}
    error_type = body.get("errorType") if isinstance(body, dict) else None
    # notify-failure alerts even what it cannot read: it publishes (to this
    # API, which refuses), so its error is its own ConfigurationError.
    if ok:
        problems.append(f"the bad event was accepted: {body}")
    elif not error_type or "." in error_type:
        problems.append(f"errorType {error_type!r} is a crash, not the function's own error: {body}")
    fn.kill()
    fn.server.shutdown()
    status = "✔" if not problems else "✘"
    print(f"{status} {name}: init and one bad invocation in {elapsed:.1f} s (emulated), errorType {error_type}")
    for p in problems:
        print(f"    {p}", file=sys.stderr)
    if problems:
        log.seek(0)
        print("    its log:\n" + log.read().decode(errors="replace"), file=sys.stderr)
    return not problems


def main(argv):
    wrapper = []
    args = argv[1:]
    if args[:1] == ["--wrapper"]:
        wrapper = [args[1]]
        args = args[2:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for arg in args:
        name, path = arg.split("=", 1)
        if not check(name, wrapper + [path], init_timeout=60):
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
