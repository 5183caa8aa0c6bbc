"""moto server with one test-only extension: set what ECS would report for a task.

moto's ECS tasks always report exit code 0 and have no stop code or stopped
reason, and no API sets them. Stevedore's failure paths need them, so this
program registers `POST /moto-api/stevedore/ecs/stop-task` before starting moto's
own server (`moto.server.main`). It also answers `GET /moto-api/stevedore/network`
with a default-VPC subnet and security group, so tests need no EC2 client.

With STEVEDORE_LAMBDA_ENDPOINT set (tests/emulators/lambda_host.py), moto's
Step Functions interpreter invokes Lambda functions there instead of in its own
Lambda (which needs Docker): `lambda:invoke` states reach the real function
binaries. moto names a function error by the payload's `errorType`, as Step
Functions does; where Lambda's payload has none, Step Functions reports
`Lambda.Unknown` (AWS Step Functions guide, "Handle Lambda service
exceptions"), and so does this. A crash or timeout keeps the name Lambda puts
in the payload (`Runtime.ExitError`, `Sandbox.Timedout`): run-job retries both
spellings, and a test can tell which one a state machine handles.

It also corrects one deviation of moto's interpreter from Step Functions,
found by running run-job in it: a Catch whose `Next` is the state itself
(run-job's "Wait for task" on `States.Timeout`) is taken as "no Next chosen",
and the state goes on to its own `Next`. The Amazon States Language lets a
Catcher name any state, the failing one included, and Step Functions
re-enters it; so does moto with this launcher.

And it can answer a chosen call with an AWS error instead of moto's answer
(`POST /moto-api/stevedore/faults`), so tests meet the errors users meet on
AWS that moto never produces (AccessDenied, throttling) in the real wire
format of each protocol: the SDK parses them as it parses AWS's.

Usage: python moto_server.py -H 127.0.0.1 -p PORT
"""

import io
import json
import threading
from datetime import datetime, timedelta, timezone

from moto.moto_api._internal import urls as moto_api_urls


def _body(request):
    data = getattr(request, "data", None) or getattr(request, "body", b"") or b"{}"
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    return json.loads(data or "{}")


def _find_task(task_arn):
    from moto.ecs.models import ecs_backends

    for account in ecs_backends.values():
        for backend in account.values():
            for cluster_tasks in backend.tasks.values():
                for arn, task in cluster_tasks.items():
                    if arn == task_arn or task.task_arn == task_arn or arn.endswith(task_arn):
                        return task
    return None


def stop_task(request, full_url, headers):
    """Body: {"taskArn", "exitCode"?, "stopCode"?, "stoppedReason"?, "containerReason"?,
    "cpu"?, "memory"?, "runSeconds"?}; "exitCode": null means the container has none."""
    body = _body(request)
    task = _find_task(body.get("taskArn", ""))
    if task is None:
        return 404, {}, json.dumps({"error": "no such task"})
    now = datetime.now(timezone.utc)
    task.last_status = "STOPPED"
    task.desired_status = "STOPPED"
    task.stopped_reason = body.get("stoppedReason", "Essential container in task exited")
    task.stop_code = body.get("stopCode", "EssentialContainerExited")
    task.stopping_at = now
    task.stopped_at = now
    if "runSeconds" in body:
        started = now - timedelta(seconds=float(body["runSeconds"]))
        task.pull_started_at = started
        task.started_at = started
    if "cpu" in body:
        task.cpu = str(body["cpu"])
    if "memory" in body:
        task.memory = str(body["memory"])
    for container in task.containers:
        container.last_status = "STOPPED"
        code = body.get("exitCode", 0)
        container.exitCode = code
        container.exit_code = code
        if body.get("containerReason"):
            container.reason = body["containerReason"]
    return 200, {}, json.dumps({"taskArn": task.task_arn, "lastStatus": "STOPPED"})


def network(request, full_url, headers):
    from moto.ec2.models import ec2_backends

    region = (_body(request) or {}).get("region", "us-east-1")
    backend = ec2_backends["123456789012"][region]
    subnet = next(s for s in backend.describe_subnets() if s.default_for_az)
    group = next(g for g in backend.describe_security_groups() if g.name == "default" and g.vpc_id == subnet.vpc_id)
    return 200, {}, json.dumps({"subnet": subnet.id, "securityGroup": group.id})


def _route_lambda_to(endpoint):
    import boto3
    from botocore.config import Config
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    original = lambda_eval_utils.boto_client_for

    def boto_client_for(region, service, state_credentials=None):
        if service != "lambda":
            return original(region=region, service=service, state_credentials=state_credentials)
        return boto3.client(
            "lambda",
            region_name=region,
            endpoint_url=endpoint,
            aws_access_key_id="ak",
            aws_secret_access_key="sk",
            config=Config(retries={"max_attempts": 0, "total_max_attempts": 1}, read_timeout=120, connect_timeout=5),
        )

    lambda_eval_utils.boto_client_for = boto_client_for
    invoke = lambda_eval_utils._invoke_lambda_function

    def invoke_as_step_functions_sees_it(parameters, region, state_credentials):
        response = invoke(parameters=parameters, region=region, state_credentials=state_credentials)
        if response.get("FunctionError"):
            payload = response.get("Payload")
            error_type = payload.get("errorType") if isinstance(payload, dict) else None
            if not error_type:
                response["Payload"] = {
                    "errorType": "Lambda.Unknown",
                    "errorMessage": "The cause could not be determined because Lambda did not return an error type. Returned payload: "
                    + json.dumps(payload),
                }
        return response

    lambda_eval_utils._invoke_lambda_function = invoke_as_step_functions_sees_it


def _catch_may_reenter_its_state():
    from moto.stepfunctions.parser.asl.component.common.catch.catcher_decl import CatcherDecl
    from moto.stepfunctions.parser.asl.component.state.state import CommonStateField

    catcher_eval = CatcherDecl._eval_body
    set_next = CommonStateField._set_next

    def eval_and_mark(self, env):
        catcher_eval(self, env)
        if type(env.stack[-1]).__name__ == "CatcherOutcomeCaught":
            env.stevedore_caught_next = env.next_state_name

    def set_next_unless_caught(self, env):
        caught = getattr(env, "stevedore_caught_next", None)
        env.stevedore_caught_next = None
        if caught is not None and caught == env.next_state_name:
            return
        set_next(self, env)

    CatcherDecl._eval_body = eval_and_mark
    CommonStateField._set_next = set_next_unless_caught


_catch_may_reenter_its_state()

_faults = []
_faults_lock = threading.Lock()
# The last requests of each operation, for tests that check what was sent
# where moto keeps less than AWS (StopExecution's cause).
_recent = {}


def faults(request, full_url, headers):
    """Body: {"action": "DescribeStacks", "code": "AccessDenied", "message"?, "status"? (400),
    "times"? (1), "match"?: a string the request body must contain}, or {"clear": true}."""
    body = _body(request)
    with _faults_lock:
        if body.get("clear"):
            _faults.clear()
        else:
            _faults.append(
                {
                    "action": body["action"],
                    "code": body["code"],
                    "message": body.get("message", ""),
                    "status": int(body.get("status", 400)),
                    "times": int(body.get("times", 1)),
                    "match": body.get("match", ""),
                }
            )
    return 200, {}, "{}"


def requests_sent(request, full_url, headers):
    """Body: {"action": "StopExecution"}: the last 500 request bodies of that operation."""
    action = _body(request).get("action", "")
    with _faults_lock:
        return 200, {}, json.dumps(list(_recent.get(action, [])))


def _action_of(environ, body):
    """The operation a request calls: X-Amz-Target for the JSON protocols
    (`AWSStepFunctions.StartExecution`), Action= for the query protocol."""
    from urllib.parse import parse_qs

    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.rsplit(".", 1)[-1], "json"
    form = parse_qs(body.decode("utf-8", "replace"))
    query = parse_qs(environ.get("QUERY_STRING", ""))
    return (form.get("Action") or query.get("Action") or [""])[0], "query"


def _error_response(fault, protocol, start_response):
    status = f"{fault['status']} Error"
    if protocol == "json":
        body = json.dumps({"__type": fault["code"], "message": fault["message"]}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-ErrorType", fault["code"])]
    else:
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{fault['code']}</Code><Message>{fault['message']}</Message>"
            "</Error><RequestId>stevedore-fault</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml")]
    headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]


def _answer_faults_first():
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    dispatch = DomainDispatcherApplication.__call__

    def call(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith("/moto-api"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            action, protocol = _action_of(environ, body)
            text = body.decode("utf-8", "replace")
            with _faults_lock:
                kept = _recent.setdefault(action, [])
                kept.append(text)
                del kept[:-500]
                hit = next(
                    (f for f in _faults if f["action"] == action and f["times"] > 0 and f["match"] in text),
                    None,
                )
                if hit:
                    hit["times"] -= 1
            if hit:
                return _error_response(hit, protocol, start_response)
        return dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = call


_answer_faults_first()

moto_api_urls.url_paths["{0}/moto-api/stevedore/faults$"] = faults
moto_api_urls.url_paths["{0}/moto-api/stevedore/requests$"] = requests_sent
moto_api_urls.url_paths["{0}/moto-api/stevedore/ecs/stop-task$"] = stop_task
moto_api_urls.url_paths["{0}/moto-api/stevedore/network$"] = network

if __name__ == "__main__":
    import os

    from moto.server import main

    if os.environ.get("STEVEDORE_LAMBDA_ENDPOINT"):
        _route_lambda_to(os.environ["STEVEDORE_LAMBDA_ENDPOINT"])

    main()
