//! [`Notifier`] for one machine: prints the alert, and posts it to a Slack
//! incoming webhook when one is configured (`STEVEDORE_SLACK_WEBHOOK`), as
//! the same Block Kit message the `slack-notifier` Lambda posts, with the
//! same retry rules.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use slack_notifier::{RetryPolicy, SlackPoster};
use stevedore_domain::alert::Alert;
use stevedore_domain::ports::{Notifier, Secret};
use stevedore_domain::{slack, Result};

pub type Printer = Arc<dyn Fn(&str) + Send + Sync>;

pub struct ConsoleNotifier {
    print: Printer,
    webhook: Option<Secret>,
    poster: SlackPoster,
    sent: Mutex<Vec<Alert>>,
}

impl ConsoleNotifier {
    pub fn new(print: Printer, webhook: Option<String>) -> Self {
        ConsoleNotifier {
            print,
            webhook: webhook.map(Secret::new),
            poster: SlackPoster::new(RetryPolicy::default()),
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
        let label = match alert.kind {
            stevedore_domain::alert::AlertKind::Failure => "ALERT",
            stevedore_domain::alert::AlertKind::Recovery => "RECOVERED",
        };
        (self.print)(&format!(
            "{label}  {}\n{}",
            alert.subject(),
            alert.email_text()
        ));
        let mut id = format!(
            "local-{}",
            self.sent.lock().unwrap_or_else(|p| p.into_inner()).len() + 1
        );
        if let Some(url) = &self.webhook {
            // The alert is on the console already: a Slack failure is
            // reported, not retried by the state machine (which would print
            // the alert again).
            match self.poster.post(url, &slack::message(alert)).await {
                Ok(_) => id.push_str("+slack"),
                Err(e) => (self.print)(&format!("Slack: alert not delivered: {e}")),
            }
        }
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(alert.clone());
        Ok(id)
    }
}
