//! AWS console links for what an alert is about: the Step Functions
//! execution, the ECS task and the CloudWatch log stream. The console host
//! depends on the partition (`aws`, `aws-cn`, `aws-us-gov`); the region comes
//! from the ARN. Anything that is not a real AWS ARN (local mode) gets no link.

use serde::{Deserialize, Serialize};

/// The parts of an ARN: `arn:partition:service:region:account:resource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    pub fn parse(arn: &'a str) -> Option<Arn<'a>> {
        let mut parts = arn.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let arn = Arn {
            partition: parts.next()?,
            service: parts.next()?,
            region: parts.next()?,
            account: parts.next()?,
            resource: parts.next()?,
        };
        (!arn.resource.is_empty()).then_some(arn)
    }
}

/// Where a run's log lives in CloudWatch Logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogStreamRef {
    pub region: String,
    pub group: String,
    pub stream: String,
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`: a region a
/// console exists for. `local` (local mode) is not one.
pub fn is_aws_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// `https://<region>.console.aws.amazon.com` and its equivalents in China
/// and GovCloud.
fn console_host(partition: &str, region: &str) -> Option<String> {
    if !is_aws_region(region) {
        return None;
    }
    match partition {
        "aws" => Some(format!("https://{region}.console.aws.amazon.com")),
        "aws-cn" => Some(format!("https://{region}.console.amazonaws.cn")),
        "aws-us-gov" => Some(format!("https://{region}.console.amazonaws-us-gov.com")),
        _ => None,
    }
}

/// The Step Functions console page of an execution.
pub fn execution_url(execution_arn: &str) -> Option<String> {
    let arn = Arn::parse(execution_arn)?;
    if arn.service != "states" || !arn.resource.starts_with("execution:") {
        return None;
    }
    let host = console_host(arn.partition, arn.region)?;
    Some(format!(
        "{host}/states/home?region={}#/v2/executions/details/{execution_arn}",
        arn.region
    ))
}

/// The ECS console page of a task. Task ARNs of the current format name the
/// cluster (`task/<cluster>/<id>`); for the old format, `cluster_arn` does.
pub fn task_url(task_arn: &str, cluster_arn: Option<&str>) -> Option<String> {
    let arn = Arn::parse(task_arn)?;
    if arn.service != "ecs" {
        return None;
    }
    let path = arn.resource.strip_prefix("task/")?;
    let (cluster, id) = match path.split_once('/') {
        Some((cluster, id)) => (cluster.to_string(), id),
        None => {
            let cluster = Arn::parse(cluster_arn?)?;
            (cluster.resource.strip_prefix("cluster/")?.to_string(), path)
        }
    };
    if cluster.is_empty() || id.is_empty() {
        return None;
    }
    let host = console_host(arn.partition, arn.region)?;
    Some(format!(
        "{host}/ecs/v2/clusters/{}/tasks/{}/configuration?region={}",
        encode_component(&cluster),
        encode_component(id),
        arn.region
    ))
}

/// The CloudWatch console page of one log stream. The console's fragment
/// encodes names twice and writes `%` as `$` (`/` becomes `$252F`).
pub fn log_stream_url(log: &LogStreamRef) -> Option<String> {
    let host = console_host(partition_of(&log.region), &log.region)?;
    let fragment = |s: &str| encode_component(&encode_component(s)).replace('%', "$");
    Some(format!(
        "{host}/cloudwatch/home?region={}#logsV2:log-groups/log-group/{}/log-events/{}",
        log.region,
        fragment(&log.group),
        fragment(&log.stream)
    ))
}

/// Percent-encoding of everything but `A-Z a-z 0-9 - _ . ~` (RFC 3986
/// unreserved), like JavaScript's `encodeURIComponent` minus `!*'()`.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_links_follow_the_partition() {
        assert_eq!(
            execution_url("arn:aws:states:eu-west-1:123456789012:execution:stevedore-run-job:orders-1").as_deref(),
            Some("https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/arn:aws:states:eu-west-1:123456789012:execution:stevedore-run-job:orders-1")
        );
        assert!(
            execution_url("arn:aws-cn:states:cn-north-1:123456789012:execution:sm:x")
                .unwrap()
                .starts_with(
                    "https://cn-north-1.console.amazonaws.cn/states/home?region=cn-north-1#"
                )
        );
        assert!(
            execution_url("arn:aws-us-gov:states:us-gov-west-1:123456789012:execution:sm:x")
                .unwrap()
                .starts_with("https://us-gov-west-1.console.amazonaws-us-gov.com/")
        );
    }

    #[test]
    fn task_links_name_the_cluster_and_the_task_id() {
        assert_eq!(
            task_url("arn:aws:ecs:us-east-1:123456789012:task/data-jobs/0123456789abcdef0123456789abcdef", None).as_deref(),
            Some("https://us-east-1.console.aws.amazon.com/ecs/v2/clusters/data-jobs/tasks/0123456789abcdef0123456789abcdef/configuration?region=us-east-1")
        );
        // The old ARN format has no cluster in it.
        assert_eq!(
            task_url(
                "arn:aws:ecs:us-east-1:123456789012:task/0123abcd",
                Some("arn:aws:ecs:us-east-1:123456789012:cluster/legacy")
            )
            .as_deref(),
            Some("https://us-east-1.console.aws.amazon.com/ecs/v2/clusters/legacy/tasks/0123abcd/configuration?region=us-east-1")
        );
        assert_eq!(
            task_url("arn:aws:ecs:us-east-1:1:task/0123abcd", None),
            None
        );
    }

    #[test]
    fn log_stream_links_encode_names_the_console_way() {
        let log = LogStreamRef {
            region: "ap-northeast-1".into(),
            group: "/stevedore/jobs/orders-ingest".into(),
            stream: "orders/app/0123abcd".into(),
        };
        assert_eq!(
            log_stream_url(&log).as_deref(),
            Some("https://ap-northeast-1.console.aws.amazon.com/cloudwatch/home?region=ap-northeast-1#logsV2:log-groups/log-group/$252Fstevedore$252Fjobs$252Forders-ingest/log-events/orders$252Fapp$252F0123abcd")
        );
        let lambda = LogStreamRef {
            region: "ap-northeast-1".into(),
            group: "/aws/lambda/hoge".into(),
            stream: "2020/10/27/[$LATEST]542b".into(),
        };
        assert!(log_stream_url(&lambda)
            .unwrap()
            .ends_with("log-events/2020$252F10$252F27$252F$255B$2524LATEST$255D542b"));
    }

    #[test]
    fn local_and_malformed_arns_get_no_link() {
        assert_eq!(
            execution_url("arn:aws:states:local:000000000000:execution:run-job:x"),
            None
        );
        assert_eq!(
            task_url("arn:aws:ecs:local:000000000000:task/local/1", None),
            None
        );
        assert_eq!(execution_url("not an arn"), None);
        assert_eq!(
            execution_url("arn:aws:states:us-east-1:1:stateMachine:x"),
            None
        );
        assert!(!is_aws_region("us-east"));
        assert!(is_aws_region("us-gov-west-1"));
        assert!(is_aws_region("ap-southeast-5"));
    }
}
