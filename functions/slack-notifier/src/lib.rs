//! `slack-notifier`: subscribed to the alerts topic, posts each alert to a
//! Slack incoming webhook as a Block Kit message.
//!
//! - The webhook URL is a credential: it is read from Secrets Manager at run
//!   time, cached for [`WEBHOOK_CACHE_TTL`], and never logged or put in an
//!   error message (errors name the secret's id, not its value).
//! - Slack's answers: 200 is delivered; 429 waits `Retry-After` and tries
//!   again; 5xx and network errors are retried with exponential backoff;
//!   400/403/404/410 (and any other 4xx) are not retried and are reported with
//!   Slack's error code (`channel_not_found`, `invalid_payload`, ...).
//! - What finally fails is returned as the invocation's error, so Lambda
//!   hands the SNS event to the function's dead-letter queue: no alert is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use stevedore_domain::alert::Alert;
use stevedore_domain::ports::{Secret, SecretSource};
use stevedore_domain::redact::redact;
use stevedore_domain::slack;
use stevedore_domain::{Error, FailureClass, Result};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// How long a webhook URL read from Secrets Manager is reused.
pub const WEBHOOK_CACHE_TTL: Duration = Duration::from_secs(300);

/// The longest one delivery may take, every request, back-off and
/// `Retry-After` included: the function's 60 s Timeout holds it with the
/// secret read and the init (tests/deploy/check_template.py checks). A
/// delivery that cannot finish in it fails, and Lambda retries the message
/// later, then sends it to the dead-letter queue.
pub const DELIVERY_BUDGET: Duration = Duration::from_secs(40);

/// How the poster retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Requests per message, the first included.
    pub max_attempts: u32,
    /// The first backoff after a 5xx or a network error; doubled each time.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured; a longer one fails the delivery
    /// (it goes to the dead-letter queue instead of timing the function out).
    pub max_retry_after: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// All requests and waits of one delivery; no wait starts that would
    /// end past it.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            budget: DELIVERY_BUDGET,
        }
    }
}

/// What a delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Requests made, the successful one included.
    pub attempts: u32,
}

/// Posts messages to incoming webhooks.
#[derive(Clone)]
pub struct SlackPoster {
    http: reqwest::Client,
    policy: RetryPolicy,
}

impl SlackPoster {
    pub fn new(policy: RetryPolicy) -> Self {
        let http = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .connect_timeout(policy.request_timeout)
            .build()
            .unwrap_or_default();
        SlackPoster { http, policy }
    }

    /// Posts `body` to the webhook, retrying as the module describes.
    pub async fn post(&self, webhook: &Secret, body: &Value) -> Result<Delivered> {
        check_webhook_url(webhook.expose())?;
        let started = Instant::now();
        // Whether waiting `wait` and sending once more still ends in the budget.
        let fits = |wait: Duration| {
            started.elapsed() + wait + self.policy.request_timeout.min(Duration::from_secs(1))
                <= self.policy.budget
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.policy.max_attempts;
            let left = self.policy.budget.saturating_sub(started.elapsed());
            let sent = self
                .http
                .post(webhook.expose())
                .timeout(self.policy.request_timeout.min(left))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    // reqwest's message would include the URL: drop it.
                    let e = e.without_url();
                    warn!(attempt, error = %e, "Slack webhook unreachable");
                    if last || !fits(self.backoff(attempt)) {
                        return Err(Error::transient(format!(
                            "Slack webhook unreachable after {attempt} attempts: {e}"
                        )));
                    }
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let code = slack_error_code(&resp.text().await.unwrap_or_default());
            match status {
                200..=299 => {
                    info!(attempt, "posted to Slack");
                    return Ok(Delivered { attempts: attempt });
                }
                429 => {
                    let wait = Duration::from_secs(retry_after.unwrap_or(1));
                    warn!(attempt, retry_after = wait.as_secs(), "Slack rate limit");
                    if last || wait > self.policy.max_retry_after || !fits(wait) {
                        return Err(Error::new(
                            FailureClass::Throttled,
                            format!(
                                "Slack rate-limited the webhook (429, Retry-After {}s) after {attempt} attempts",
                                wait.as_secs()
                            ),
                        ));
                    }
                    tokio::time::sleep(wait).await;
                }
                500..=599 => {
                    warn!(attempt, status, code = %code, "Slack server error");
                    if last || !fits(self.backoff(attempt)) {
                        return Err(Error::transient(format!(
                            "Slack answered {status} {code} after {attempt} attempts"
                        )));
                    }
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                _ => {
                    // 400 invalid_payload, 403 action_prohibited, 404
                    // channel_not_found, 410 channel_is_archived: retrying
                    // cannot help; someone has to fix the webhook or the channel.
                    warn!(status, code = %code, "Slack rejected the message");
                    return Err(Error::configuration(format!(
                        "Slack rejected the message: {status} {code}{}",
                        rejection_hint(status)
                    )));
                }
            }
        }
    }

    /// Exponential backoff with a deterministic half and a jittered half.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .policy
            .base_delay
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.policy.max_delay);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let half = exp / 2;
        half + half.mul_f64(f64::from(nanos % 1000) / 1000.0)
    }
}

fn rejection_hint(status: u16) -> &'static str {
    match status {
        404 | 410 => {
            " (the channel is gone or archived: create a new webhook and update the secret)"
        }
        403 => " (the workspace does not allow this webhook to post)",
        400 => " (Slack could not read the message)",
        _ => "",
    }
}

/// Slack answers errors with a short plain-text code; keep it short and
/// printable whatever comes back.
fn slack_error_code(body: &str) -> String {
    let code: String = body
        .trim()
        .chars()
        .take(80)
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect();
    if code.is_empty() {
        "(no error code)".into()
    } else {
        code
    }
}

/// A webhook must be `https://` (plain `http://` only to this machine, for
/// tests and local mode). The message never contains the URL.
pub fn check_webhook_url(url: &str) -> Result<()> {
    let ok = url.starts_with("https://")
        || url.starts_with("http://127.0.0.1:")
        || url.starts_with("http://localhost:");
    if ok && !url.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(Error::configuration(
            "the Slack webhook must be an https:// URL (https://hooks.slack.com/services/...)",
        ))
    }
}

/// The webhook URL in a secret: the URL itself, or a JSON object with
/// `url`, `webhookUrl` or `webhook_url`.
pub fn webhook_from_secret(id: &str, secret: &Secret) -> Result<Secret> {
    let raw = secret.expose().trim();
    let url = if raw.starts_with('{') {
        let v: Value = serde_json::from_str(raw).map_err(|_| {
            Error::configuration(format!(
                "secret {id} is neither a URL nor valid JSON: store the webhook URL as plain text"
            ))
        })?;
        ["url", "webhookUrl", "webhook_url"]
            .iter()
            .find_map(|k| v.get(k).and_then(|u| u.as_str()))
            .ok_or_else(|| {
                Error::configuration(format!(
                    "secret {id} is JSON without a `url` field: store the webhook URL as plain text or as {{\"url\": \"https://hooks.slack.com/...\"}}"
                ))
            })?
            .to_string()
    } else {
        raw.to_string()
    };
    check_webhook_url(&url)
        .map_err(|e| Error::configuration(format!("secret {id}: {}", e.message)))?;
    Ok(Secret::new(url))
}

/// The webhook URL, read from a secret and cached.
pub struct CachedWebhook {
    source: Arc<dyn SecretSource>,
    id: String,
    ttl: Duration,
    cached: Mutex<Option<(Secret, Instant)>>,
}

impl CachedWebhook {
    pub fn new(source: Arc<dyn SecretSource>, id: impl Into<String>, ttl: Duration) -> Self {
        CachedWebhook {
            source,
            id: id.into(),
            ttl,
            cached: Mutex::new(None),
        }
    }

    pub async fn get(&self) -> Result<Secret> {
        let mut cached = self.cached.lock().await;
        if let Some((url, at)) = cached.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(url.clone());
            }
        }
        let url = webhook_from_secret(&self.id, &self.source.secret(&self.id).await?)?;
        *cached = Some((url.clone(), Instant::now()));
        Ok(url)
    }

    /// Forgets the cached URL (after Slack rejected it: it may have been rotated).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

pub struct Deps {
    pub webhook: CachedWebhook,
    pub poster: SlackPoster,
}

#[derive(Debug, Deserialize)]
struct SnsEvent {
    #[serde(rename = "Records", default)]
    records: Vec<SnsRecord>,
}

#[derive(Debug, Deserialize)]
struct SnsRecord {
    #[serde(rename = "Sns")]
    sns: SnsMessage,
}

#[derive(Debug, Deserialize)]
struct SnsMessage {
    #[serde(rename = "MessageId", default)]
    message_id: String,
    #[serde(rename = "Subject", default)]
    subject: Option<String>,
    #[serde(rename = "Message", default)]
    message: String,
}

/// The Slack message for one SNS message: the Block Kit alert when it is
/// one, else the text as it came (redacted), so nothing is dropped.
pub fn slack_message_for(subject: Option<&str>, message: &str) -> Value {
    match serde_json::from_str::<Alert>(message) {
        Ok(alert) => slack::message(&alert),
        Err(_) => slack::plain_message(
            subject.map(|s| redact(s).into_owned()).as_deref(),
            &redact(message),
        ),
    }
}

/// Handles one SNS event (SNS delivers one record per invocation; more are
/// handled in order). Fails if any message could not be delivered.
pub async fn function_handler(deps: &Deps, event: Value) -> Result<Vec<Delivered>> {
    let event: SnsEvent = serde_json::from_value(event)
        .map_err(|e| Error::invalid_input(format!("slack-notifier expects an SNS event: {e}")))?;
    if event.records.is_empty() {
        return Err(Error::invalid_input(
            "slack-notifier expects an SNS event with at least one record",
        ));
    }
    let mut delivered = Vec::new();
    let mut failures = Vec::new();
    for record in &event.records {
        let body = slack_message_for(record.sns.subject.as_deref(), &record.sns.message);
        let result = match deps.webhook.get().await {
            Ok(url) => deps.poster.post(&url, &body).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(d) => delivered.push(d),
            Err(e) => {
                if e.class == FailureClass::ConfigurationError {
                    deps.webhook.invalidate().await;
                }
                warn!(message_id = %record.sns.message_id, error = %e, "alert not delivered to Slack");
                failures.push(e);
            }
        }
    }
    match failures.into_iter().next() {
        None => Ok(delivered),
        Some(first) => Err(first),
    }
}
