//! [`Notifier`] for one machine: prints the alert, and posts it to a Slack
//! incoming webhook when one is configured (`STEVEDORE_SLACK_WEBHOOK`).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;
use stevedore_domain::alert::Alert;
use stevedore_domain::ports::Notifier;
use stevedore_domain::{Error, Result};

pub type Printer = Arc<dyn Fn(&str) + Send + Sync>;

pub struct ConsoleNotifier {
    print: Printer,
    webhook: Option<String>,
    sent: Mutex<Vec<Alert>>,
}

impl ConsoleNotifier {
    pub fn new(print: Printer, webhook: Option<String>) -> Self {
        ConsoleNotifier {
            print,
            webhook,
            sent: Mutex::new(Vec::new()),
        }
    }

    pub fn sent(&self) -> Vec<Alert> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl Notifier for ConsoleNotifier {
    async fn publish(&self, alert: &Alert) -> Result<String> {
        let text = alert.email_text();
        (self.print)(&format!("ALERT  {}\n{}", alert.subject(), text));
        let mut id = format!(
            "local-{}",
            self.sent.lock().unwrap_or_else(|p| p.into_inner()).len() + 1
        );
        if let Some(url) = &self.webhook {
            let body = json!({"text": format!("*{}*\n```{}```", alert.subject(), text)});
            let resp = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .map_err(|e| Error::transient(format!("Slack webhook: {e}")))?;
            if !resp.status().is_success() {
                // Never log the URL: it is a credential.
                return Err(Error::transient(format!(
                    "Slack webhook answered {}",
                    resp.status()
                )));
            }
            id.push_str("+slack");
        }
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(alert.clone());
        Ok(id)
    }
}
