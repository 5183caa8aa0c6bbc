//! Permissions proven, not read: every AWS request a function makes in the
//! emulator tests is recorded on the wire (an HTTP client wrapped around
//! the SDK's own), turned into what IAM authorizes for it — the actions,
//! resource ARNs and condition keys the Service Authorization Reference
//! lists for that operation — and evaluated against the function's policy
//! as `template.yaml` declares it. A missing action, resource or condition
//! is a failed test, not an AccessDenied on the first deploy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use serde_json::{json, Value};

pub const ACCOUNT: &str = "123456789012";

/// One AWS request as it left the SDK.
#[derive(Debug, Clone)]
pub struct Call {
    /// The signing name (`ecs`, `dynamodb`, `sns`, `states`, `logs`, ...).
    pub service: String,
    pub region: String,
    pub operation: String,
    /// The request's parameters: the JSON body, or the query protocol's form.
    pub params: Value,
}

/// Records the requests of every client built from the configs it wraps.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    pub(crate) calls: Arc<Mutex<Vec<Call>>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// `base` with its HTTP client wrapped: what its clients send is recorded.
    pub fn wrap(&self, base: &SdkConfig) -> SdkConfig {
        // A config loaded without one leaves the choice to each client;
        // the emulators speak plain HTTP, so the SDK's hyper client without TLS.
        let inner = base
            .http_client()
            .unwrap_or_else(|| aws_smithy_http_client::Builder::new().build_http());
        base.clone()
            .into_builder()
            .http_client(Recording {
                inner,
                calls: self.calls.clone(),
            })
            .build()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug)]
struct Recording {
    inner: SharedHttpClient,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl HttpClient for Recording {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(RecordingConnector {
            inner: self.inner.http_connector(settings, components),
            calls: self.calls.clone(),
        })
    }
}

#[derive(Debug)]
struct RecordingConnector {
    inner: SharedHttpConnector,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl HttpConnector for RecordingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if let Some(call) = parse_request(&request) {
            self.calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(call);
        }
        self.inner.call(request)
    }
}

fn parse_request(request: &HttpRequest) -> Option<Call> {
    call_of(
        request.headers().get("authorization")?,
        request.headers().get("x-amz-target"),
        request.body().bytes().unwrap_or_default(),
    )
}

/// The call a signed request makes, from its `Authorization` header, its
/// `X-Amz-Target` header (JSON protocols) and its body (JSON, or the query
/// protocol's form with `Action=`).
pub fn call_of(authorization: &str, target: Option<&str>, body: &[u8]) -> Option<Call> {
    // `Credential=AKID/20261203/us-east-1/ecs/aws4_request`
    let scope = authorization
        .split("Credential=")
        .nth(1)?
        .split(',')
        .next()?;
    let parts: Vec<&str> = scope.split('/').collect();
    let (region, service) = (parts.get(2)?.to_string(), parts.get(3)?.to_string());
    let (operation, params) = match target {
        Some(target) => (
            target.rsplit('.').next().unwrap_or(target).to_string(),
            serde_json::from_slice(body).unwrap_or(Value::Null),
        ),
        None => {
            let form = form_decode(&String::from_utf8_lossy(body));
            let action = form.get("Action").cloned().unwrap_or_default();
            (action, json!(form))
        }
    };
    Some(Call {
        service,
        region,
        operation,
        params,
    })
}

fn form_decode(text: &str) -> BTreeMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |b: u8| (b as char).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// What IAM must allow for a call: an action on a resource, with the
/// request's condition keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub action: String,
    /// A resource ARN, or `*` for actions without resource-level permissions.
    pub resource: String,
    pub context: BTreeMap<String, String>,
    /// The request it came from, for messages.
    pub from: String,
}

/// What the deployment knows that a request does not say.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The KMS key the runs table and the alerts topic are encrypted with.
    pub key_arn: String,
    /// The state machine whose task tokens the functions complete.
    pub state_machine_arn: String,
    /// The roles of the task definitions jobs run (RunTask passes them to ECS).
    pub task_roles: Vec<String>,
}

fn arn(service: &str, region: &str, rest: &str) -> String {
    format!("arn:aws:{service}:{region}:{ACCOUNT}:{rest}")
}

fn ecs_cluster_arn(region: &str, cluster: &str) -> String {
    if cluster.starts_with("arn:") {
        cluster.to_string()
    } else {
        arn("ecs", region, &format!("cluster/{cluster}"))
    }
}

fn cluster_name(cluster_arn: &str) -> &str {
    cluster_arn.rsplit('/').next().unwrap_or(cluster_arn)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// What IAM authorizes for `call`. An operation this table does not know is
/// a need no policy meets, so a new call cannot slip past the check.
pub fn needs(call: &Call, d: &Deployment) -> Vec<Need> {
    let p = &call.params;
    let r = call.region.as_str();
    let from = format!("{}:{}", call.service, call.operation);
    let need = |action: &str, resource: String, context: &[(&str, String)]| Need {
        action: action.to_string(),
        resource,
        context: context
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        from: from.clone(),
    };
    let cluster = ecs_cluster_arn(
        r,
        p.get("cluster")
            .and_then(Value::as_str)
            .unwrap_or("default"),
    );
    let in_cluster = [("ecs:cluster", cluster.clone())];
    let task_arn = |t: &str| {
        if t.starts_with("arn:") {
            t.to_string()
        } else {
            arn("ecs", r, &format!("task/{}/{t}", cluster_name(&cluster)))
        }
    };
    let table = |name: &str| arn("dynamodb", r, &format!("table/{name}"));
    let key_read = || need("kms:Decrypt", d.key_arn.clone(), &[]);
    match (call.service.as_str(), call.operation.as_str()) {
        ("ecs", "RunTask") => {
            let td = str_of(p, "taskDefinition");
            let td_arn = if td.starts_with("arn:") {
                td.to_string()
            } else {
                arn("ecs", r, &format!("task-definition/{td}"))
            };
            let mut out = vec![need("ecs:RunTask", td_arn, &in_cluster)];
            if p.get("tags").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
                // Tagging at creation is authorized as ecs:TagResource on
                // the new task (ECS developer guide, "Grant permission to
                // tag resources on creation").
                out.push(need(
                    "ecs:TagResource",
                    arn("ecs", r, &format!("task/{}/new-task", cluster_name(&cluster))),
                    &[("ecs:CreateAction", "RunTask".into())],
                ));
            }
            for role in &d.task_roles {
                out.push(need(
                    "iam:PassRole",
                    role.clone(),
                    &[("iam:PassedToService", "ecs-tasks.amazonaws.com".into())],
                ));
            }
            out
        }
        ("ecs", "DescribeTasks") => p["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|t| need("ecs:DescribeTasks", task_arn(t), &in_cluster))
            .collect(),
        ("ecs", "StopTask") => vec![need("ecs:StopTask", task_arn(str_of(p, "task")), &in_cluster)],
        ("ecs", "ListTasks") => vec![need("ecs:ListTasks", "*".into(), &in_cluster)],
        ("ecs", "DescribeTaskDefinition") => vec![need("ecs:DescribeTaskDefinition", "*".into(), &[])],
        ("dynamodb", op @ ("GetItem" | "PutItem" | "UpdateItem" | "DeleteItem")) => vec![
            need(&format!("dynamodb:{op}"), table(str_of(p, "TableName")), &[]),
            key_read(),
        ],
        ("dynamodb", "Query") => {
            let mut resource = table(str_of(p, "TableName"));
            if let Some(index) = p.get("IndexName").and_then(Value::as_str) {
                resource = format!("{resource}/index/{index}");
            }
            vec![need("dynamodb:Query", resource, &[]), key_read()]
        }
        ("dynamodb", "TransactWriteItems") => {
            let mut out = vec![key_read()];
            for item in p["TransactItems"].as_array().into_iter().flatten() {
                for (kind, action) in [
                    ("Put", "dynamodb:PutItem"),
                    ("Update", "dynamodb:UpdateItem"),
                    ("Delete", "dynamodb:DeleteItem"),
                    ("ConditionCheck", "dynamodb:ConditionCheckItem"),
                ] {
                    if let Some(op) = item.get(kind) {
                        out.push(need(action, table(str_of(op, "TableName")), &[]));
                    }
                }
            }
            out
        }
        ("sns", "Publish") => vec![
            need("sns:Publish", str_of(p, "TopicArn").to_string(), &[]),
            // An encrypted topic: the publisher needs the key (SNS developer
            // guide, "Managing Amazon SNS encryption keys").
            need("kms:GenerateDataKey", d.key_arn.clone(), &[]),
            key_read(),
        ],
        ("states", "SendTaskSuccess" | "SendTaskFailure" | "SendTaskHeartbeat") => vec![need(
            &format!("states:{}", call.operation),
            d.state_machine_arn.clone(),
            &[],
        )],
        // An execution's actions are authorized on the execution's ARN,
        // starting or listing them on the state machine's (Service
        // Authorization Reference, "Actions defined by AWS Step Functions").
        ("states", op @ ("DescribeExecution" | "StopExecution" | "GetExecutionHistory")) => {
            vec![need(
                &format!("states:{op}"),
                str_of(p, "executionArn").to_string(),
                &[],
            )]
        }
        ("states", op @ ("StartExecution" | "ListExecutions")) => vec![need(
            &format!("states:{op}"),
            str_of(p, "stateMachineArn").to_string(),
            &[],
        )],
        // A stack's ARN ends in its id; a request by name is authorized on
        // `stack/<name>/<id>`, and one without a name on every stack.
        ("cloudformation", "DescribeStacks") => vec![need(
            "cloudformation:DescribeStacks",
            match p.get("StackName").and_then(Value::as_str) {
                Some(name) if name.starts_with("arn:") => name.to_string(),
                Some(name) => arn(
                    "cloudformation",
                    r,
                    &format!("stack/{name}/6a1f2c30-0000-11f0-0000-0a1b2c3d4e5f"),
                ),
                None => "*".to_string(),
            },
            &[],
        )],
        ("logs", "GetLogEvents") => vec![need(
            "logs:GetLogEvents",
            arn(
                "logs",
                r,
                &format!(
                    "log-group:{}:log-stream:{}",
                    str_of(p, "logGroupName"),
                    str_of(p, "logStreamName")
                ),
            ),
            &[],
        )],
        ("secretsmanager", "GetSecretValue") => vec![need(
            "secretsmanager:GetSecretValue",
            str_of(p, "SecretId").to_string(),
            &[],
        )],
        (service, op) => vec![need(
            &format!("{service}:{op}"),
            format!("(no IAM mapping for {service}:{op} in tests/src/iam.rs: add it from the Service Authorization Reference)"),
            &[],
        )],
    }
}

/// One statement of an identity policy.
#[derive(Debug, Clone)]
struct Statement {
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    conditions: Vec<(String, String, Vec<String>)>,
}

/// An identity policy, as CloudFormation renders it (`cfn::Env::eval`).
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

impl Policy {
    /// From rendered policy documents (a function's `Policies`).
    pub fn from_documents(docs: &[Value]) -> Result<Policy, String> {
        let mut statements = Vec::new();
        for doc in docs {
            for s in doc["Statement"]
                .as_array()
                .ok_or("a policy without Statement")?
            {
                for unsupported in ["NotAction", "NotResource", "Principal"] {
                    if s.get(unsupported).is_some() {
                        return Err(format!("{unsupported} is not evaluated here: {s}"));
                    }
                }
                let mut conditions = Vec::new();
                if let Some(c) = s["Condition"].as_object() {
                    for (op, keys) in c {
                        for (key, values) in keys.as_object().ok_or("a condition's keys")? {
                            conditions.push((op.clone(), key.clone(), strings(values)));
                        }
                    }
                }
                statements.push(Statement {
                    allow: s["Effect"] == json!("Allow"),
                    actions: strings(&s["Action"]),
                    resources: strings(&s["Resource"]),
                    conditions,
                });
            }
        }
        Ok(Policy { statements })
    }

    /// Whether the policy allows `need`; `Err` says why not.
    pub fn allows(&self, need: &Need) -> Result<(), String> {
        let applies = |s: &Statement| -> Result<bool, String> {
            let action = s
                .actions
                .iter()
                .any(|a| wildcard(&a.to_ascii_lowercase(), &need.action.to_ascii_lowercase()));
            let resource = s.resources.iter().any(|p| wildcard(p, &need.resource));
            if !(action && resource) {
                return Ok(false);
            }
            for (op, key, values) in &s.conditions {
                if !condition(op, need.context.get(key), values)? {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        let mut allowed = false;
        for s in &self.statements {
            if applies(s)? {
                if !s.allow {
                    return Err(format!("explicitly denied: {need:?}"));
                }
                allowed = true;
            }
        }
        if allowed {
            return Ok(());
        }
        // Say what came closest, so the fix is obvious.
        let near: Vec<String> = self
            .statements
            .iter()
            .filter(|s| {
                s.actions
                    .iter()
                    .any(|a| wildcard(&a.to_ascii_lowercase(), &need.action.to_ascii_lowercase()))
            })
            .map(|s| format!("resources {:?} conditions {:?}", s.resources, s.conditions))
            .collect();
        Err(format!(
            "{} ({}) on {} with {:?} is not allowed{}",
            need.action,
            need.from,
            need.resource,
            need.context,
            if near.is_empty() {
                ": no statement grants the action".to_string()
            } else {
                format!(
                    "; the statements granting the action have {}",
                    near.join("; ")
                )
            }
        ))
    }
}

fn condition(op: &str, value: Option<&String>, expected: &[String]) -> Result<bool, String> {
    let (base, if_exists) = match op.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (op, false),
    };
    let Some(value) = value else {
        return Ok(if_exists);
    };
    Ok(match base {
        "StringEquals" | "ArnEquals" => expected.iter().any(|e| e == value),
        "StringLike" | "ArnLike" => expected.iter().any(|e| wildcard(e, value)),
        "StringNotEquals" | "ArnNotEquals" => expected.iter().all(|e| e != value),
        "Bool" => expected.iter().any(|e| e.eq_ignore_ascii_case(value)),
        other => return Err(format!("condition operator {other} is not evaluated here")),
    })
}

/// IAM's `*` (any run of characters) and `?` (one character).
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Every call `calls` made that `policy` does not allow, one line each.
pub fn denied(policy: &Policy, calls: &[Call], d: &Deployment) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for call in calls {
        for need in needs(call, d) {
            if let Err(why) = policy.allows(&need) {
                if !out.contains(&why) {
                    out.push(why);
                }
            }
        }
    }
    out
}

/// The distinct operations in `calls` (`ecs:RunTask`), for coverage checks.
pub fn operations(calls: &[Call]) -> Vec<String> {
    let mut out: Vec<String> = calls
        .iter()
        .map(|c| format!("{}:{}", c.service, c.operation))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(wildcard(
            "arn:aws:ecs:*:123:task/*",
            "arn:aws:ecs:us-east-1:123:task/c/1"
        ));
        assert!(!wildcard(
            "arn:aws:ecs:*:123:task/*",
            "arn:aws:ecs:us-east-1:123:cluster/c"
        ));
        assert!(wildcard("ecs:*", "ecs:runtask"));
        assert!(wildcard("*", "anything"));
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("a?c", "ac"));
    }

    #[test]
    fn a_missing_action_resource_or_condition_is_denied() {
        let policy = Policy::from_documents(&[json!({"Statement": [
            {"Effect": "Allow", "Action": "ecs:StopTask", "Resource": "arn:aws:ecs:us-east-1:123456789012:task/*",
             "Condition": {"ArnEquals": {"ecs:cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/ours"}}}
        ]})])
        .unwrap();
        let need = |action: &str, resource: &str, cluster: &str| Need {
            action: action.into(),
            resource: resource.into(),
            context: [("ecs:cluster".to_string(), cluster.to_string())].into(),
            from: "test".into(),
        };
        let ours = "arn:aws:ecs:us-east-1:123456789012:cluster/ours";
        let task = "arn:aws:ecs:us-east-1:123456789012:task/ours/1";
        assert!(policy.allows(&need("ecs:StopTask", task, ours)).is_ok());
        assert!(policy
            .allows(&need("ecs:DescribeTasks", task, ours))
            .is_err());
        assert!(policy
            .allows(&need(
                "ecs:StopTask",
                "arn:aws:ecs:us-east-1:123456789012:cluster/ours",
                ours
            ))
            .is_err());
        assert!(policy
            .allows(&need(
                "ecs:StopTask",
                task,
                "arn:aws:ecs:us-east-1:123456789012:cluster/theirs"
            ))
            .is_err());
    }

    #[test]
    fn form_bodies_decode() {
        let f =
            form_decode("Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A1%3At&Message=a+b");
        assert_eq!(f["TopicArn"], "arn:aws:sns:us-east-1:1:t");
        assert_eq!(f["Message"], "a b");
    }
}
