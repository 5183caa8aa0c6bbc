"""moto server with one test-only extension: set what ECS would report for a task.

moto's ECS tasks always report exit code 0 and have no stop code or stopped
reason, and no API sets them. Stevedore's failure paths need them, so this
program registers `POST /moto-api/stevedore/ecs/stop-task` before starting moto's
own server (`moto.server.main`). It also answers `GET /moto-api/stevedore/network`
with a default-VPC subnet and security group, so tests need no EC2 client.

Usage: python moto_server.py -H 127.0.0.1 -p PORT
"""

import json
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


moto_api_urls.url_paths["{0}/moto-api/stevedore/ecs/stop-task$"] = stop_task
moto_api_urls.url_paths["{0}/moto-api/stevedore/network$"] = network

if __name__ == "__main__":
    from moto.server import main

    main()
