//! [`Notifier`] on Amazon SNS: one message per alert with a rendering per
//! protocol (`MessageStructure=json`) and attributes subscriptions filter on.

use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sns::Client;
use serde_json::json;
use stevedore_domain::alert::{Alert, AlertKind};
use stevedore_domain::ports::Notifier;
use stevedore_domain::{Error, Result};
use tracing::{info, instrument};

use crate::errors::classify;

/// SNS rejects messages over 256 KiB; stay well below with the log tail.
const MAX_MESSAGE_BYTES: usize = 200 * 1024;

pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
}

impl SnsNotifier {
    /// The topic named by `ALERTS_TOPIC_ARN`.
    pub fn from_env(sdk: &aws_config::SdkConfig) -> std::result::Result<Self, String> {
        Ok(Self::new(
            Client::new(sdk),
            crate::env_required("ALERTS_TOPIC_ARN")?,
        ))
    }

    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        SnsNotifier {
            client,
            topic_arn: topic_arn.into(),
        }
    }
}

/// The SNS message: plain text for email (and the default), the structured
/// alert for programmatic subscribers.
pub fn render(alert: &Alert) -> String {
    let mut alert = alert.clone();
    loop {
        let text = alert.email_text();
        let structured = alert.to_json().to_string();
        let message = json!({
            "default": text,
            "email": text,
            "email-json": structured,
            "sqs": structured,
            "lambda": structured,
            "http": structured,
            "https": structured,
        })
        .to_string();
        if message.len() <= MAX_MESSAGE_BYTES || alert.log_tail.is_empty() {
            return message;
        }
        // Drop the oldest log lines until it fits.
        let drop = alert.log_tail.len().div_ceil(2);
        alert.log_tail.drain(..drop);
    }
}

fn attribute(value: &str) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| Error::invalid_input(format!("SNS attribute: {e}")))
}

#[async_trait]
impl Notifier for SnsNotifier {
    #[instrument(skip_all, fields(job = %alert.job, class = %alert.class))]
    async fn publish(&self, alert: &Alert) -> Result<String> {
        let out = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(sanitize_subject(&alert.subject()))
            .message(render(alert))
            .message_structure("json")
            .message_attributes("job", attribute(&alert.job)?)
            .message_attributes("status", attribute(status_of(alert))?)
            .message_attributes("failureClass", attribute(alert.class.as_str())?)
            .message_attributes("severity", attribute(alert.severity.as_str())?)
            .send()
            .await
            .map_err(|e| classify("Publish", &e))?;
        let id = out.message_id().unwrap_or_default().to_string();
        info!(message_id = %id, "alert published");
        Ok(id)
    }
}

/// The `status` attribute subscriptions filter on.
fn status_of(alert: &Alert) -> &'static str {
    match alert.kind {
        AlertKind::Failure => "FAILED",
        AlertKind::Recovery => "RECOVERED",
    }
}

/// SNS subjects: ASCII printable, no line breaks, at most 100 characters.
pub fn sanitize_subject(subject: &str) -> String {
    let cleaned: String = subject
        .chars()
        .map(|c| match c {
            '…' => '~',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect();
    cleaned.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stevedore_domain::FailureClass;

    #[test]
    fn messages_carry_a_rendering_per_protocol_and_fit_sns() {
        let mut alert = Alert::without_run("orders", FailureClass::ExitedNonZero, "exit 3", None);
        alert.log_tail = (0..10_000)
            .map(|i| format!("line {i} {}", "x".repeat(40)))
            .collect();
        let message = render(&alert);
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        let v: serde_json::Value = serde_json::from_str(&message).unwrap();
        for key in ["default", "email", "sqs", "lambda", "https"] {
            assert!(v[key].is_string(), "{key}");
        }
        let structured: Alert = serde_json::from_str(v["sqs"].as_str().unwrap()).unwrap();
        assert_eq!(structured.class, FailureClass::ExitedNonZero);
        assert!(structured.log_tail.last().unwrap().starts_with("line 9999"));
    }

    #[test]
    fn subjects_are_plain_ascii() {
        assert_eq!(sanitize_subject("a…b\nc"), "a~b?c");
        assert_eq!(sanitize_subject(&"x".repeat(300)).len(), 100);
    }
}
