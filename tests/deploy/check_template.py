"""Deploy rules no linter checks, each learnt from what a first real deploy
would hit. Run by scripts/check-deploy.sh with the tools' Python (cfn-lint's
YAML loader reads the short-form intrinsics):

    python tests/deploy/check_template.py template.yaml samconfig.toml README.md

1. A template that nests a stack needs CAPABILITY_AUTO_EXPAND in samconfig.toml
   (and CAPABILITY_IAM / CAPABILITY_NAMED_IAM for roles), or `sam deploy
   --guided` fails.
2. A retained resource encrypted with a KMS key keeps its key: a key pending
   deletion cannot decrypt what was retained. A retained resource has no name
   of its own (an alias, a table name): the name would outlive the stack and
   the next deploy under the same stack name would fail with AlreadyExists.
3. A state machine logs to a group under /aws/vendedlogs/states/, and the KMS
   key of that group lets CloudWatch Logs use it for exactly that group.
4. Every name built from the stack name fits its service's limit for a stack
   name as long as the README allows; the README states that limit.

5. Every function's Timeout is above its worst case: its longest sequence of
   AWS calls (WORST_CALLS, counted in each handler), each taking at most the
   SDK's operation timeout (shared/aws/src/lib.rs), plus its init.

6. Every dead-letter queue (the stack's and each job stack's schedule) has an
   alarm that fires on each new letter, not only while letters wait; no alarm
   publishes to a KMS-encrypted topic (the alarm about a broken key, or a
   failing alerts topic, must not depend on it).

Exit 1 with one line per problem.
"""

import fnmatch
import os
import re
import sys
import tomllib

from cfnlint.decode import cfn_yaml

SAMPLE = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com",
}
NESTED = {"AWS::Serverless::Application", "AWS::CloudFormation::Stack"}
IAM = {"AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User", "AWS::IAM::Group"}
STATE_MACHINES = {"AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"}
# Service limits on names (AWS documentation of each resource's Name property).
NAME_LIMITS = {
    ("AWS::Serverless::StateMachine", "Name"): 80,
    ("AWS::StepFunctions::StateMachine", "StateMachineName"): 80,
    ("AWS::KMS::Alias", "AliasName"): 256,
    ("AWS::Logs::LogGroup", "LogGroupName"): 512,
    ("AWS::SQS::Queue", "QueueName"): 80,
    ("AWS::SNS::Topic", "TopicName"): 256,
    ("AWS::Serverless::Function", "FunctionName"): 64,
    ("AWS::Lambda::Function", "FunctionName"): 64,
    ("AWS::Events::Rule", "Name"): 64,
    ("AWS::Scheduler::Schedule", "Name"): 64,
    ("AWS::IAM::Role", "RoleName"): 64,
}
# CloudFormation's own limit on stack names.
CFN_STACK_NAME_MAX = 128


# The longest sequence of AWS calls one invocation can make, per function
# (read from the handlers; a Lambda that waits on each in turn).
WORST_CALLS = {
    # GetItem; UpdateItem (scheduled-time claim); slot: Query, UpdateItem, PutItem x
    # SLOT_TRIES (3), Query; PutItem (run); UpdateItem (launch claim); RunTask,
    # fallback UpdateItem, RunTask; UpdateItem (RUNNING); a refused write:
    # StopTask, Query + UpdateItem (slot). SLOT_TRIES is read from the store
    # (shared/aws/src/dynamodb.rs), whose mocked-race test holds it to that.
    "LaunchRunFunction": lambda k: 14 + k["SLOT_TRIES"],
    # GetItem, UpdateItem (token), DescribeTasks, UpdateItem (stop seen), SendTask*
    # — or StopTask and UpdateItem after the deadline
    "WatchTaskFunction": 5,
    # GetItem, UpdateItem (STOPPED), SendTask*
    "TaskEventsFunction": 3,
    # GetItem, ListTasks, StopTask (a failed attempt's task), UpdateItem (final),
    # Query (failures before), UpdateItem (slot), Query (a retried recording of
    # a failure lists the attempt's tasks instead of stopping them)
    "RecordRunFunction": 7,
    # GetItem, DescribeTaskDefinition, GetLogEvents, Publish
    "NotifyFailureFunction": 4,
    # Query (runs), then for each live run StopTask, UpdateItem, UpdateItem; slot
    # (two live runs at most: the current attempt and one being recorded), and
    # a ListTasks for a run whose launch was cut short before it named its task
    "ReapExecutionFunction": 9,
}
# sweep-tasks lists the cluster's running tasks (a ListTasks page and a
# DescribeTasks batch per 100 tasks; this many pages, worst case), then works
# within its budget (BUDGET_SECONDS) and finishes the call in flight.
INIT_SECONDS = 5


class Unknown(Exception):
    """An intrinsic this evaluator cannot know before deploy (GetAtt, ...)."""


def evaluate(value, env):
    """Evaluates the intrinsics that names are built from."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [evaluate(v, env) for v in value]
    if not isinstance(value, dict) or len(value) != 1:
        raise Unknown(repr(value))
    (fn, arg), = value.items()
    if fn == "Ref":
        if arg in env:
            return env[arg]
        raise Unknown(f"Ref {arg}")
    if fn == "Fn::Sub":
        text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        scope = dict(env)
        scope.update({k: evaluate(v, env) for k, v in local.items()})

        def sub(m):
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in scope:
                return str(scope[name])
            raise Unknown(f"${{{name}}}")

        return re.sub(r"\$\{([^}]+)\}", sub, text)
    if fn == "Fn::Join":
        sep, items = arg
        return sep.join(str(i) for i in evaluate(items, env))
    if fn == "Fn::Split":
        sep, text = arg
        return evaluate(text, env).split(sep)
    if fn == "Fn::Select":
        index, items = arg
        return evaluate(items, env)[int(evaluate(index, env))]
    raise Unknown(fn)


def environment(template, stack_name):
    env = dict(SAMPLE)
    env["AWS::StackName"] = stack_name
    env["AWS::StackId"] = (
        f"arn:aws:cloudformation:eu-west-1:123456789012:stack/{stack_name}/"
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    )
    for name, p in (template.get("Parameters") or {}).items():
        if "Default" in p:
            env[name] = p["Default"]
    return env


def refs(value):
    """Logical ids a value points to (Ref, GetAtt, Sub's ${X} / ${X.Attr})."""
    out = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "Ref" and isinstance(v, str):
                out.add(v)
            elif k == "Fn::GetAtt":
                out.add(v[0] if isinstance(v, list) else v.split(".")[0])
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                out.update(m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
                out |= refs(v)
            else:
                out |= refs(v)
    elif isinstance(value, list):
        for v in value:
            out |= refs(v)
    return out


def check_capabilities(path, template, samconfig, problems):
    resources = template.get("Resources") or {}
    types = {r.get("Type") for r in resources.values()}
    deploy = samconfig.get("default", {}).get("deploy", {}).get("parameters", {})
    caps = deploy.get("capabilities", "")
    caps = set(caps.split() if isinstance(caps, str) else caps)
    named = any("RoleName" in (r.get("Properties") or {}) for r in resources.values())
    need = set()
    if types & NESTED:
        need.add("CAPABILITY_AUTO_EXPAND")
    if named:
        need.add("CAPABILITY_NAMED_IAM")
    elif types & IAM or any(
        (r.get("Properties") or {}).get("Policies") for r in resources.values()
        if r.get("Type", "").startswith("AWS::Serverless::")
    ):
        need.add("CAPABILITY_IAM")
    for cap in sorted(need - caps):
        why = {
            "CAPABILITY_AUTO_EXPAND": "the template nests a stack",
            "CAPABILITY_IAM": "the template creates IAM roles",
            "CAPABILITY_NAMED_IAM": "the template names IAM roles",
        }[cap]
        problems.append(
            f"{path}: {why}, but samconfig.toml's [default.deploy.parameters] capabilities lack {cap}: `sam deploy --guided` would fail"
        )


def check_retention(path, template, problems):
    resources = template.get("Resources") or {}
    keys = {n for n, r in resources.items() if r.get("Type") == "AWS::KMS::Key"}
    retained = lambda r: r.get("DeletionPolicy") in ("Retain", "RetainExceptOnCreate")  # noqa: E731
    for name, r in resources.items():
        if not retained(r) or r.get("Type") in ("AWS::KMS::Key", "AWS::KMS::Alias"):
            continue
        for key in sorted(refs(r.get("Properties") or {}) & keys):
            if not retained(resources[key]):
                problems.append(
                    f"{path}: {name} is retained but its KMS key {key} is not (DeletionPolicy): after `sam delete` the key is scheduled for deletion and {name} can no longer be read"
                )
    # A retained resource outlives its stack. With a name of its own (an
    # alias named after the stack, say) a failed first deploy or `sam delete`
    # leaves that name taken, and every later deploy under the same stack
    # name fails with AlreadyExists: names are unique per account and Region.
    for name, r in resources.items():
        if not retained(r):
            continue
        for (kind, prop), _ in NAME_LIMITS.items():
            if r.get("Type") == kind and prop in (r.get("Properties") or {}):
                problems.append(
                    f"{path}: {name} is retained and named ({prop}): once its stack is deleted, or its first deploy fails, the name stays taken and the next deploy under the same stack name fails with AlreadyExists; let CloudFormation name it, or do not retain it"
                )


# Values of the job template's Environment parameter: (value, allowed). It is
# pasted into the schedule's JSON input unescaped, so its pattern must keep
# it one flat object of strings.
ENVIRONMENT_SAMPLES = [
    ("{}", True),
    ('{"TARGET_SCHEMA":"raw"}', True),
    ('{"A":"1", "B_2":"x, y: {z}"}', True),
    ('{"QUOTE":"say \\"hi\\""}', True),
    ('{"A":"1"},"taskDefinition":"other-job:1","B":{}', False),
    ('{"A":"1","command":["sh","-c","curl evil"]}', False),
    ('{"A":{"nested":"x"}}', False),
    ('{"A":"1"}}', False),
    ('{"A":"1\\"},"taskDefinition":"x"}', False),
    ('{"A":"1\\"}, \\"B\\":\\"x"}', True),  # escapes keep it one string
    ('{"A":"1"},"x":"', False),
]


def check_environment_pattern(path, template, problems):
    param = (template.get("Parameters") or {}).get("Environment")
    if not param:
        return
    pattern = param.get("AllowedPattern")
    if not pattern:
        problems.append(f"{path}: the Environment parameter has no AllowedPattern; it is pasted into JSON unescaped")
        return
    for value, allowed in ENVIRONMENT_SAMPLES:
        if bool(re.fullmatch(pattern, value)) != allowed:
            problems.append(
                f"{path}: the Environment parameter's AllowedPattern {'refuses' if allowed else 'accepts'} {value!r}"
                + ("" if allowed else ": pasted into the schedule's JSON input, it changes the job spec")
            )


def check_state_machine_logs(path, template, problems):
    resources = template.get("Resources") or {}
    env = environment(template, "stevedore")
    for name, r in resources.items():
        if r.get("Type") not in STATE_MACHINES:
            continue
        props = r.get("Properties") or {}
        logging = props.get("Logging") or props.get("LoggingConfiguration") or {}
        for dest in logging.get("Destinations") or []:
            arn = (dest.get("CloudWatchLogsLogGroup") or {}).get("LogGroupArn")
            for group in refs(arn):
                g = resources.get(group)
                if not g or g.get("Type") != "AWS::Logs::LogGroup":
                    continue
                gprops = g.get("Properties") or {}
                try:
                    group_name = evaluate(gprops.get("LogGroupName"), env)
                except Unknown as e:
                    problems.append(f"{path}: {group} (logs of {name}) has no name known before deploy ({e})")
                    continue
                if not group_name.startswith("/aws/vendedlogs/states/"):
                    problems.append(
                        f"{path}: {name} logs to {group_name}, not under /aws/vendedlogs/states/ (Step Functions' guidance: otherwise every state machine adds to the account's CloudWatch Logs resource policy, which has a size limit)"
                    )
                for key in refs(gprops.get("KmsKeyId")):
                    k = resources.get(key)
                    if not k or k.get("Type") != "AWS::KMS::Key":
                        continue
                    group_arn = f"arn:aws:logs:eu-west-1:123456789012:log-group:{group_name}"
                    if not key_lets_logs_use(k, group_arn, env):
                        problems.append(
                            f"{path}: the KMS key {key} does not let CloudWatch Logs encrypt {group_name} (a kms:EncryptionContext:aws:logs:arn condition matching it): the log group cannot be created"
                        )


def key_lets_logs_use(key, group_arn, env):
    policy = (key.get("Properties") or {}).get("KeyPolicy") or {}
    for st in policy.get("Statement") or []:
        principal = (st.get("Principal") or {}).get("Service")
        try:
            principal = evaluate(principal, env)
        except Unknown:
            continue
        if st.get("Effect") != "Allow" or not str(principal).startswith("logs."):
            continue
        cond = (st.get("Condition") or {}).get("ArnLike") or {}
        patterns = cond.get("kms:EncryptionContext:aws:logs:arn")
        if patterns is None:
            return True
        patterns = patterns if isinstance(patterns, list) else [patterns]
        for p in patterns:
            try:
                if fnmatch.fnmatchcase(group_arn, evaluate(p, env)):
                    return True
            except Unknown:
                continue
    return False


def names_fit(path, template, stack_name, nested_limits):
    """Problems with the names the template builds for this stack name."""
    problems = []
    env = environment(template, stack_name)
    for name, r in (template.get("Resources") or {}).items():
        props = r.get("Properties") or {}
        for (rtype, prop), limit in NAME_LIMITS.items():
            if r.get("Type") == rtype and prop in props:
                try:
                    value = evaluate(props[prop], env)
                except Unknown:
                    continue
                if len(value) > limit:
                    problems.append(f"{name}.{prop} `{value}` has {len(value)} characters; the limit is {limit}")
        if r.get("Type") in NESTED:
            location = props.get("Location") or props.get("TemplateURL")
            limits = nested_limits.get(location) if isinstance(location, str) else None
            for param, value in (props.get("Parameters") or {}).items():
                if not limits or param not in limits:
                    continue
                try:
                    value = evaluate(value, env)
                except Unknown:
                    continue
                pattern, max_len = limits[param]
                if max_len is not None and len(value) > max_len:
                    problems.append(f"{name} parameter {param} `{value}` has {len(value)} characters; {location} allows {max_len}")
                if pattern and not re.fullmatch(pattern, value):
                    problems.append(f"{name} parameter {param} `{value}` does not match {location}'s AllowedPattern {pattern}")
    return problems


def nested_parameter_limits(template_path, template):
    out = {}
    base = os.path.dirname(template_path)
    for r in (template.get("Resources") or {}).values():
        if r.get("Type") not in NESTED:
            continue
        props = r.get("Properties") or {}
        location = props.get("Location") or props.get("TemplateURL")
        if not isinstance(location, str) or location.startswith(("http", "s3:")):
            continue
        nested = cfn_yaml.load(os.path.join(base, location))
        limits = {}
        for name, p in (nested.get("Parameters") or {}).items():
            limits[name] = (p.get("AllowedPattern"), p.get("MaxLength"))
        out[location] = limits
    return out


def check_stack_name_limit(path, template, readme, problems):
    limits = nested_parameter_limits(path, template)
    longest = 0
    for n in range(1, CFN_STACK_NAME_MAX + 1):
        if names_fit(path, template, "s" * n, limits):
            break
        longest = n
    if longest == 0:
        problems.append(f"{path}: no stack name gives names within their limits: " + "; ".join(names_fit(path, template, "s", limits)))
        return
    if longest < CFN_STACK_NAME_MAX:
        why = "; ".join(names_fit(path, template, "s" * (longest + 1), limits))
        stated = re.search(rf"stack name[^.]{{0,40}}\b{longest} characters", readme, re.I)
        if not stated:
            problems.append(
                f"{path}: stack names longer than {longest} characters fail ({why}), and the README does not say so (\"stack name ... {longest} characters\")"
            )
    print(f"stack names up to {longest} characters give names within every limit")


def rust_constant(root, relative, pattern, name):
    """The number `pattern` (a regex with one group) captures in a Rust file."""
    path = os.path.join(root, relative)
    with open(path, encoding="utf-8") as f:
        m = re.search(pattern, f.read())
    if not m:
        raise SystemExit(f"no {name} in {path}")
    return int(m.group(1))


def rust_duration_seconds(root, relative, name):
    """The seconds of `const NAME: Duration = Duration::from_secs(N)` in a Rust file."""
    return rust_constant(root, relative, rf"{name}: Duration = Duration::from_secs\((\d+)\)", name)


def rust_i64(root, relative, name):
    """The value of `const NAME: i64 = N;` in a Rust file."""
    return rust_constant(root, relative, rf"{name}: i64 = (\d+);", name)


def check_function_timeouts(path, template, problems):
    root = os.path.dirname(os.path.abspath(path))
    per_call = rust_duration_seconds(root, "shared/aws/src/lib.rs", "OPERATION_TIMEOUT")
    globals_ = ((template.get("Globals") or {}).get("Function") or {})
    resources = template.get("Resources") or {}
    known = {
        "SLOT_TRIES": rust_constant(root, "shared/aws/src/dynamodb.rs", r"SLOT_TRIES: usize = (\d+);", "SLOT_TRIES"),
    }
    for name, calls in WORST_CALLS.items():
        calls = calls(known) if callable(calls) else calls
        r = resources.get(name)
        if r is None:
            problems.append(f"{path}: no {name} (WORST_CALLS names it)")
            continue
        timeout = (r.get("Properties") or {}).get("Timeout", globals_.get("Timeout", 3))
        need = calls * per_call + INIT_SECONDS
        if int(timeout) < need:
            problems.append(
                f"{path}: {name} has Timeout {timeout} s; its {calls} AWS calls in a row may take {calls} x {per_call} s, plus its init: at least {need} s"
            )
    # slack-notifier: one GetSecretValue, then one delivery within its budget.
    slack = resources.get("SlackNotifierFunction")
    if slack is not None:
        budget = rust_duration_seconds(root, "functions/slack-notifier/src/lib.rs", "DELIVERY_BUDGET")
        timeout = (slack.get("Properties") or {}).get("Timeout", globals_.get("Timeout", 3))
        need = per_call + budget + INIT_SECONDS
        if int(timeout) < need:
            problems.append(
                f"{path}: SlackNotifierFunction has Timeout {timeout} s; reading the secret ({per_call} s) and one delivery (DELIVERY_BUDGET, {budget} s) need {need} s"
            )
    sweep = resources.get("SweepTasksFunction")
    if sweep is not None:
        budget = rust_i64(root, "functions/sweep-tasks/src/lib.rs", "BUDGET_SECONDS")
        timeout = (sweep.get("Properties") or {}).get("Timeout", globals_.get("Timeout", 3))
        pages = rust_constant(root, "shared/aws/src/ecs.rs", r"SWEEP_LIST_PAGES: usize = (\d+);", "SWEEP_LIST_PAGES")
        need = 2 * pages * per_call + budget + per_call + INIT_SECONDS
        if int(timeout) < need:
            problems.append(
                f"{path}: SweepTasksFunction has Timeout {timeout} s; listing {pages} pages of tasks ({2 * pages} calls of {per_call} s), its budget ({budget} s) and the call in flight need {need} s"
            )
    # One launch at a time per attempt: a claim that outlives the function
    # (a retried invocation must not find the claim of one still running).
    launch = resources.get("LaunchRunFunction")
    if launch is not None:
        claim = rust_i64(root, "functions/launch-run/src/lib.rs", "LAUNCH_CLAIM_SECONDS")
        timeout = (launch.get("Properties") or {}).get("Timeout", globals_.get("Timeout", 3))
        if int(timeout) >= claim:
            problems.append(
                f"{path}: LaunchRunFunction has Timeout {timeout} s, not less than LAUNCH_CLAIM_SECONDS ({claim} s): a retry could launch beside an invocation still running"
            )
    special = {"SlackNotifierFunction", "SweepTasksFunction"}
    for name, r in resources.items():
        if r.get("Type") == "AWS::Serverless::Function" and name not in WORST_CALLS and name not in special:
            problems.append(f"{path}: {name} has no worst case in WORST_CALLS")


def check_alarms(path, template, problems):
    """Every dead-letter queue is watched by an alarm that fires on each new
    letter (not only while letters wait), and no alarm publishes to a
    KMS-encrypted topic: the alarm about a broken key or alerts topic must
    not go through them."""
    resources = template.get("Resources") or {}
    alarms = {n: r for n, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Alarm"}
    for name, r in resources.items():
        if r.get("Type") != "AWS::SQS::Queue":
            continue
        watching = [
            a for a, alarm in alarms.items()
            if name in refs((alarm.get("Properties") or {}).get("Metrics"))
            or name in refs((alarm.get("Properties") or {}).get("Dimensions"))
        ]
        if not watching:
            problems.append(f"{path}: no alarm watches the queue {name}")
            continue
        growing = [
            a for a in watching
            if any("DIFF(" in str(m.get("Expression", "")) or "RATE(" in str(m.get("Expression", ""))
                   for m in (alarms[a].get("Properties") or {}).get("Metrics") or [])
        ]
        if not growing:
            problems.append(
                f"{path}: the alarms on {name} ({', '.join(watching)}) fire only while letters wait: a second one arrives unseen"
            )
    for a, alarm in alarms.items():
        for target in refs((alarm.get("Properties") or {}).get("AlarmActions")):
            topic = resources.get(target)
            if topic and topic.get("Type") == "AWS::SNS::Topic" and (topic.get("Properties") or {}).get("KmsMasterKeyId"):
                problems.append(f"{path}: {a} publishes to the KMS-encrypted topic {target}, whose failure it may be reporting")


def check_job_families(path, template, nested_path, nested, problems):
    """A job stack's task definition family and the control plane's RunTask
    permission agree with the family launch-run allows (job_stack_family in
    shared/domain/src/spec.rs): the permission covers this stack's jobs and
    no other stack's, and a job's definition is its own."""
    root = os.path.dirname(os.path.abspath(path))
    with open(os.path.join(root, "shared/domain/src/spec.rs"), encoding="utf-8") as f:
        m = re.search(r'fn job_stack_family\([^)]*\) -> String \{\s*format!\("([^"]+)"', f.read())
    if not m:
        raise SystemExit("no job_stack_family in shared/domain/src/spec.rs")
    rust = m.group(1)
    want_family = rust.replace("{stack}", "${ControlPlaneStack}").replace("{job}", "${JobName}")
    for name, r in (nested.get("Resources") or {}).items():
        if r.get("Type") != "AWS::ECS::TaskDefinition":
            continue
        family = (r.get("Properties") or {}).get("Family")
        got = family.get("Fn::Sub") if isinstance(family, dict) else family
        if got != want_family:
            problems.append(f"{nested_path}: {name} has Family {got!r}; launch-run runs a job's own definition as {want_family!r}")
    want_resource = "task-definition/" + rust.replace("{stack}", "${AWS::StackName}").replace("{job}", "*")
    launch = (template.get("Resources") or {}).get("LaunchRunFunction") or {}
    resources = []
    for policy in (launch.get("Properties") or {}).get("Policies") or []:
        for st in policy.get("Statement") or []:
            actions = st.get("Action")
            actions = actions if isinstance(actions, list) else [actions]
            if "ecs:RunTask" in actions:
                resources.append(st.get("Resource"))
    text = repr(resources)
    if want_resource not in text:
        problems.append(f"{path}: LaunchRunFunction's ecs:RunTask resources {text} do not name this stack's job definitions ({want_resource})")
    if "task-definition/*" in text:
        problems.append(f"{path}: LaunchRunFunction may run any task definition (task-definition/*): scope it to {want_resource}")


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    template_path, samconfig_path, readme_path = argv[1:]
    template = cfn_yaml.load(template_path)
    with open(samconfig_path, "rb") as f:
        samconfig = tomllib.load(f)
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    problems = []
    check_capabilities(template_path, template, samconfig, problems)
    for location in nested_parameter_limits(template_path, template):
        nested_path = os.path.join(os.path.dirname(template_path), location)
        nested = cfn_yaml.load(nested_path)
        check_retention(nested_path, nested, problems)
        check_environment_pattern(nested_path, nested, problems)
        check_alarms(nested_path, nested, problems)
        check_job_families(template_path, template, nested_path, nested, problems)
    check_alarms(template_path, template, problems)
    check_retention(template_path, template, problems)
    check_state_machine_logs(template_path, template, problems)
    check_stack_name_limit(template_path, template, readme, problems)
    check_function_timeouts(template_path, template, problems)
    for p in problems:
        print(f"✘ {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"✔ {template_path}: capabilities, retained keys, state machine logs, name lengths, function timeouts, alarms, job task definitions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
