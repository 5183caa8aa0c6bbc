//! A deployed Stevedore stack, as the operator commands (`--stack NAME`)
//! see it: its outputs, read once with CloudFormation `DescribeStacks`, and
//! the clients for the services they name. The SDK is configured the
//! standard way (profile, region, credentials chain, `AWS_ENDPOINT_URL*`),
//! and every error a user can meet becomes a [`RemoteError`] that says what
//! to do about it.

use std::fmt;
use std::process::ExitCode;

use aws_sdk_sfn::config::ProvideCredentials;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use stevedore_aws::DynamoDbRunStore;
use time::OffsetDateTime;

use crate::operate::StackArgs;

/// The outputs `template.yaml` declares that the CLI reads.
pub const OUTPUT_MARKER: &str = "StevedoreStack";
pub const OUTPUT_STATE_MACHINE: &str = "StateMachineArn";
pub const OUTPUT_TABLE: &str = "RunsTableName";
pub const OUTPUT_CLUSTER: &str = "ClusterArn";
/// The outputs' meaning this CLI understands (`StevedoreStack`'s value).
pub const OUTPUTS_VERSION: &str = "1";

/// Attempts per call: throttling and 5xx are retried with back-off
/// (`AWS_MAX_ATTEMPTS` overrides).
const MAX_ATTEMPTS: u32 = 5;

/// What went wrong talking to AWS, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub kind: Kind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NoCredentials,
    CredentialsRejected,
    NoRegion,
    StackNotFound,
    NotStevedoreStack,
    AccessDenied,
    Throttled,
    Unreachable,
    /// Something the user gave does not exist or is not allowed (a run id,
    /// an execution name already used).
    BadInput,
    /// Any other error AWS answered with.
    Aws,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::NoCredentials => "NoCredentials",
            Kind::CredentialsRejected => "CredentialsRejected",
            Kind::NoRegion => "NoRegion",
            Kind::StackNotFound => "StackNotFound",
            Kind::NotStevedoreStack => "NotStevedoreStack",
            Kind::AccessDenied => "AccessDenied",
            Kind::Throttled => "Throttled",
            Kind::Unreachable => "Unreachable",
            Kind::BadInput => "BadInput",
            Kind::Aws => "AwsError",
        }
    }
}

impl RemoteError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        RemoteError {
            kind,
            message: message.into(),
        }
    }

    /// 2: what the user gave is wrong (a region without the stack, a run id
    /// that does not exist); 3: AWS could not be reached or used.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self.kind {
            Kind::NoRegion | Kind::StackNotFound | Kind::NotStevedoreStack | Kind::BadInput => 2,
            _ => 3,
        })
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for RemoteError {}

const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedException",
    "AuthorizationError",
];
const REJECTED: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
];

/// An SDK error from `action` (`states:StartExecution`) as a [`RemoteError`]
/// (callers look at the service errors they expect first).
pub fn remote_error<E>(action: &str, err: &SdkError<E, Response>) -> RemoteError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let code = stevedore_aws::errors::error_code(se.err());
            let message = se.err().message().unwrap_or("").to_string();
            let status = se.raw().status().as_u16();
            service_error(action, &code, &message, status)
        }
        SdkError::TimeoutError(_) => RemoteError::new(
            Kind::Unreachable,
            format!("{action} timed out: AWS did not answer (check the network, the region, and AWS_ENDPOINT_URL if set)"),
        ),
        SdkError::DispatchFailure(d) => RemoteError::new(
            Kind::Unreachable,
            format!(
                "could not reach AWS for {action} ({}): check the network, the region, and AWS_ENDPOINT_URL if set",
                dispatch_cause(d)
            ),
        ),
        other => RemoteError::new(Kind::Aws, format!("{action}: {}", chain(other))),
    }
}

fn service_error(action: &str, code: &str, message: &str, status: u16) -> RemoteError {
    let said = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    if DENIED.contains(&code) || status == 403 && !REJECTED.contains(&code) {
        RemoteError::new(
            Kind::AccessDenied,
            format!("{action} was denied ({said}). Your identity needs `{action}` on the stack's resources: the README's \"Operate\" section has the policy to attach"),
        )
    } else if REJECTED.contains(&code) {
        RemoteError::new(
            Kind::CredentialsRejected,
            format!("AWS refused the credentials for {action} ({said}): they are wrong or expired. Refresh them (`aws sso login`, new keys) or pick another --profile"),
        )
    } else if stevedore_aws::errors::classify_code(action, code, message, status).class
        == stevedore_domain::FailureClass::Throttled
    {
        RemoteError::new(
            Kind::Throttled,
            format!("AWS kept throttling {action} ({said}) through every retry: wait a minute and run the command again"),
        )
    } else {
        RemoteError::new(Kind::Aws, format!("{action}: {said}"))
    }
}

fn dispatch_cause(d: &aws_smithy_runtime_api::client::result::DispatchFailure) -> String {
    let text = chain(d.as_connector_error().map_or(
        &std::io::Error::other("connection failed") as &dyn std::error::Error,
        |c| c as &dyn std::error::Error,
    ));
    if text.is_empty() {
        "connection failed".into()
    } else {
        text
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s = s.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = source.and_then(|e| e.source());
    }
    out
}

/// A deployed stack's outputs and clients.
pub struct Stack {
    pub name: String,
    pub region: String,
    pub state_machine_arn: String,
    pub table: String,
    pub cluster_arn: Option<String>,
    /// No run is older than the stack.
    pub created: OffsetDateTime,
    pub sfn: aws_sdk_sfn::Client,
    pub runs: DynamoDbRunStore,
    pub logs: stevedore_aws::CloudWatchLogSource,
}

/// Loads the SDK configuration, checks region and credentials, and reads
/// the stack's outputs.
pub async fn connect(args: &StackArgs) -> Result<Stack, RemoteError> {
    let name = args.name().unwrap_or_default().to_string();
    let mut loader = stevedore_aws::sdk_defaults();
    let attempts = std::env::var("AWS_MAX_ATTEMPTS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(MAX_ATTEMPTS);
    loader =
        loader.retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(attempts));
    if let Some(p) = &args.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &args.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    let sdk = loader.load().await;
    let Some(region) = sdk.region().map(|r| r.to_string()) else {
        return Err(RemoteError::new(
                Kind::NoRegion,
                "no AWS region is configured: pass --region, set AWS_REGION, or give the profile a region (`aws configure set region eu-west-1`)",
            ));
    };
    let Some(credentials) = sdk.credentials_provider() else {
        return Err(no_credentials("no credentials provider is configured"));
    };
    if let Err(e) = credentials.provide_credentials().await {
        return Err(no_credentials(&chain(&e)));
    }
    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    let described = cfn.describe_stacks().stack_name(&name).send().await;
    let out = match described {
        Ok(out) => out,
        Err(SdkError::ServiceError(se))
            if stevedore_aws::errors::error_code(se.err()) == "ValidationError"
                && se.err().message().unwrap_or("").contains("does not exist") =>
        {
            return Err(RemoteError::new(
                    Kind::StackNotFound,
                    format!("no stack `{name}` in {region}: check the name (`aws cloudformation list-stacks`), or the region (--region, AWS_REGION) it was deployed to"),
                ));
        }
        Err(e) => return Err(remote_error("cloudformation:DescribeStacks", &e)),
    };
    let Some(stack) = out.stacks().first() else {
        return Err(RemoteError::new(
            Kind::StackNotFound,
            format!("no stack `{name}` in {region}"),
        ));
    };
    let output = |key: &str| {
        stack
            .outputs()
            .iter()
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let status = stack.stack_status().map(|s| s.as_str()).unwrap_or("");
    let marker = output(OUTPUT_MARKER);
    let (Some(state_machine_arn), Some(table)) =
        (output(OUTPUT_STATE_MACHINE), output(OUTPUT_TABLE))
    else {
        return Err(RemoteError::new(
            Kind::NotStevedoreStack,
            if marker.is_some() {
                format!("stack `{name}` ({status}) lacks the outputs {OUTPUT_STATE_MACHINE} and {OUTPUT_TABLE}: it has not finished deploying, or its template is not Stevedore's")
            } else {
                format!("stack `{name}` is not a Stevedore stack (it has no {OUTPUT_MARKER}, {OUTPUT_STATE_MACHINE} or {OUTPUT_TABLE} output): name the stack `sam deploy` created")
            },
        ));
    };
    if let Some(v) = marker.as_deref().filter(|v| *v != OUTPUTS_VERSION) {
        return Err(RemoteError::new(
                Kind::NotStevedoreStack,
                format!("stack `{name}` was deployed by a Stevedore whose outputs are version {v}; this stevedore reads version {OUTPUTS_VERSION}: use the stevedore of the same release"),
            ));
    }
    let created = stack
        .creation_time()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Ok(Stack {
        name,
        region,
        state_machine_arn,
        table: table.clone(),
        cluster_arn: output(OUTPUT_CLUSTER),
        created,
        sfn: aws_sdk_sfn::Client::new(&sdk),
        runs: DynamoDbRunStore::new(aws_sdk_dynamodb::Client::new(&sdk), table),
        logs: stevedore_aws::CloudWatchLogSource::from_sdk(&sdk),
    })
}

fn no_credentials(why: &str) -> RemoteError {
    RemoteError::new(
        Kind::NoCredentials,
        format!("no AWS credentials found ({why}): set AWS_PROFILE or pass --profile, run `aws sso login` or `aws configure`, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    )
}

/// A domain error from a stevedore-aws adapter, as a [`RemoteError`]: the
/// adapters word their errors `Operation: Code: message`.
pub fn from_domain(action: &str, e: stevedore_domain::Error) -> RemoteError {
    use stevedore_domain::FailureClass as C;
    let text = e.message;
    let code = text
        .split(": ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if DENIED.contains(&code.as_str()) || REJECTED.contains(&code.as_str()) {
        let message = text.splitn(3, ": ").nth(2).unwrap_or("");
        return service_error(action, &code, message, 400);
    }
    match e.class {
        C::Throttled => RemoteError::new(
            Kind::Throttled,
            format!("AWS kept throttling {action} through every retry ({text}): wait a minute and run the command again"),
        ),
        C::Transient if text.contains("could not reach") || text.contains("timed out") => {
            RemoteError::new(
                Kind::Unreachable,
                format!("{text}: check the network, the region, and AWS_ENDPOINT_URL if set"),
            )
        }
        _ => RemoteError::new(Kind::Aws, format!("{action}: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_name_their_fix() {
        let e = service_error("states:StartExecution", "AccessDeniedException", "no", 400);
        assert_eq!(e.kind, Kind::AccessDenied);
        assert!(e.message.contains("`states:StartExecution`"), "{e}");
        assert_eq!(e.exit_code(), ExitCode::from(3));
        let e = service_error("dynamodb:Query", "ExpiredTokenException", "", 400);
        assert_eq!(e.kind, Kind::CredentialsRejected);
        let e = service_error("logs:GetLogEvents", "ThrottlingException", "Rate", 400);
        assert_eq!(e.kind, Kind::Throttled);
        let e = service_error("x:Y", "Weird", "", 403);
        assert_eq!(e.kind, Kind::AccessDenied);
        let e = service_error("x:Y", "ValidationException", "bad", 400);
        assert_eq!(
            (e.kind, e.message.as_str()),
            (Kind::Aws, "x:Y: ValidationException: bad")
        );
    }

    #[test]
    fn adapter_errors_keep_their_meaning() {
        let e = from_domain(
            "dynamodb:Query",
            stevedore_domain::Error::new(
                stevedore_domain::FailureClass::ConfigurationError,
                "Query: AccessDeniedException: User is not authorized",
            ),
        );
        assert_eq!(e.kind, Kind::AccessDenied);
        assert!(e.message.contains("User is not authorized"), "{e}");
        let e = from_domain(
            "dynamodb:Query",
            stevedore_domain::Error::transient("Query: could not reach AWS (x)"),
        );
        assert_eq!(e.kind, Kind::Unreachable);
    }
}
