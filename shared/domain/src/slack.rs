//! The Slack rendering of an alert: a Block Kit message for an incoming
//! webhook (header, explanation and hint, fields, containers, stop reason,
//! log tail in a code block, link buttons), always within Slack's limits,
//! and [`check_limits`], which says where a message breaks them.

use serde_json::{json, Value};

use crate::alert::{truncate_chars, Alert, AlertKind, Severity};

/// Slack's limits for messages and blocks (Block Kit reference).
pub mod limits {
    pub const BLOCKS: usize = 50;
    pub const HEADER_TEXT: usize = 150;
    pub const SECTION_TEXT: usize = 3000;
    pub const SECTION_FIELDS: usize = 10;
    pub const FIELD_TEXT: usize = 2000;
    pub const ACTIONS_ELEMENTS: usize = 25;
    pub const BUTTON_TEXT: usize = 75;
    pub const BUTTON_URL: usize = 3000;
    pub const ACTION_ID: usize = 255;
    pub const CONTEXT_ELEMENTS: usize = 10;
    /// The top-level `text` (the notification fallback) is truncated by
    /// Slack after 40,000 characters; keep it short anyway.
    pub const MESSAGE_TEXT: usize = 40_000;
}

/// Escapes the three characters mrkdwn treats as control characters.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn mrkdwn(text: &str) -> Value {
    json!({"type": "mrkdwn", "text": text})
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": mrkdwn(&truncate_chars(text, limits::SECTION_TEXT))})
}

fn emoji(alert: &Alert) -> &'static str {
    match (alert.kind, alert.severity) {
        (AlertKind::Recovery, _) => ":large_green_circle:",
        (_, Severity::Critical) => ":red_circle:",
        (_, Severity::Warning) => ":large_orange_circle:",
        (_, Severity::Info) => ":large_blue_circle:",
    }
}

/// A code block of the newest log lines that fit in one section.
fn log_block(alert: &Alert) -> Option<Value> {
    if alert.log_tail.is_empty() {
        return None;
    }
    let title = format!(
        "*Last {} log lines* (credentials redacted)\n",
        alert.log_tail.len()
    );
    // A line must not close the code block early.
    let lines: Vec<String> = alert
        .log_tail
        .iter()
        .map(|l| escape(&truncate_chars(l, 500)).replace("```", "'''"))
        .collect();
    let budget = limits::SECTION_TEXT - title.chars().count() - "```\n```".len() - 2;
    let mut kept: Vec<&str> = Vec::new();
    let mut used = 0;
    for line in lines.iter().rev() {
        let n = line.chars().count() + 1;
        if used + n > budget {
            break;
        }
        used += n;
        kept.push(line);
    }
    kept.reverse();
    if kept.is_empty() {
        return None;
    }
    Some(section(&format!("{title}```\n{}\n```", kept.join("\n"))))
}

/// The Block Kit message for an alert.
pub fn message(alert: &Alert) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": truncate_chars(&alert.headline(), limits::HEADER_TEXT),
            "emoji": true,
        }
    })];

    let mut summary = format!("{} {}", emoji(alert), escape(&alert.explanation));
    if let Some(h) = &alert.hint {
        summary.push_str(&format!("\n*What to do:* {}", escape(h)));
    }
    if !alert.message.is_empty() && alert.kind == AlertKind::Failure {
        summary.push_str(&format!(
            "\n> {}",
            escape(&alert.message).replace('\n', "\n> ")
        ));
    }
    blocks.push(section(&summary));

    let fields: Vec<Value> = alert
        .facts()
        .into_iter()
        .take(limits::SECTION_FIELDS)
        .map(|(k, v)| {
            let value = match k {
                // Slack shows these in the reader's time zone.
                "Started" | "Stopped" => slack_date(alert, k).unwrap_or_else(|| escape(&v)),
                "Run" | "Task definition" => format!("`{}`", escape(&v)),
                _ => escape(&v),
            };
            mrkdwn(&truncate_chars(
                &format!("*{k}*\n{value}"),
                limits::FIELD_TEXT,
            ))
        })
        .collect();
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }

    let containers = alert.container_lines();
    let mut details = Vec::new();
    if !containers.is_empty() {
        details.push(format!(
            "*Containers*\n{}",
            containers
                .iter()
                .map(|c| format!("• {}", escape(c)))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if let Some(r) = &alert.stopped_reason {
        details.push(format!("*Stop reason*\n{}", escape(r)));
    }
    if !details.is_empty() {
        blocks.push(section(&details.join("\n")));
    }

    if let Some(b) = log_block(alert) {
        blocks.push(b);
    }

    let buttons: Vec<Value> = alert
        .links
        .iter()
        .filter(|l| l.url.chars().count() <= limits::BUTTON_URL)
        .take(limits::ACTIONS_ELEMENTS)
        .enumerate()
        .map(|(i, l)| {
            json!({
                "type": "button",
                "text": {"type": "plain_text", "text": truncate_chars(&l.label, limits::BUTTON_TEXT)},
                "url": l.url,
                "action_id": format!("stevedore-link-{i}"),
            })
        })
        .collect();
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }

    let mut context = format!("Stevedore · severity {}", alert.severity.as_str());
    if let Some(e) = &alert.execution_arn {
        context.push_str(&format!(" · execution `{}`", escape(e)));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [mrkdwn(&truncate_chars(&context, limits::SECTION_TEXT))]
    }));

    blocks.truncate(limits::BLOCKS);
    json!({
        // What notifications and screen readers show.
        "text": truncate_chars(&alert.subject(), limits::MESSAGE_TEXT),
        "blocks": blocks,
    })
}

/// `<!date^…>`: a time each reader sees in their own time zone, with the
/// UTC time as the fallback.
fn slack_date(alert: &Alert, which: &str) -> Option<String> {
    let t = match which {
        "Started" => alert.started_at?,
        _ => alert.stopped_at?,
    };
    Some(format!(
        "<!date^{}^{{date_short_pretty}} {{time_secs}}|{}>",
        t.unix_timestamp(),
        crate::task::format_time(t)
    ))
}

/// A message for text that is not an alert (something else published to
/// the topic): shown as it is, in one section, so nothing is dropped.
pub fn plain_message(subject: Option<&str>, text: &str) -> Value {
    let mut blocks = Vec::new();
    if let Some(s) = subject.filter(|s| !s.trim().is_empty()) {
        blocks.push(json!({
            "type": "header",
            "text": {"type": "plain_text", "text": truncate_chars(s, limits::HEADER_TEXT)}
        }));
    }
    blocks.push(section(&escape(text)));
    json!({
        "text": truncate_chars(subject.unwrap_or(text), 300),
        "blocks": blocks,
    })
}

/// Every place `message` breaks one of Slack's limits (empty when it fits).
pub fn check_limits(message: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let chars = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
    let mut over = |what: String, n: usize, max: usize| {
        if n > max {
            problems.push(format!("{what}: {n} > {max}"));
        }
    };
    over("text".into(), chars(&message["text"]), limits::MESSAGE_TEXT);
    let empty = Vec::new();
    let blocks = message["blocks"].as_array().unwrap_or(&empty);
    over("blocks".into(), blocks.len(), limits::BLOCKS);
    for (i, b) in blocks.iter().enumerate() {
        let at = |what: &str| format!("blocks[{i}] ({}) {what}", b["type"]);
        match b["type"].as_str() {
            Some("header") => over(at("text"), chars(&b["text"]["text"]), limits::HEADER_TEXT),
            Some("section") => {
                over(at("text"), chars(&b["text"]["text"]), limits::SECTION_TEXT);
                let fields = b["fields"].as_array().unwrap_or(&empty);
                over(at("fields"), fields.len(), limits::SECTION_FIELDS);
                for (j, f) in fields.iter().enumerate() {
                    over(
                        at(&format!("fields[{j}]")),
                        chars(&f["text"]),
                        limits::FIELD_TEXT,
                    );
                }
            }
            Some("actions") => {
                let elements = b["elements"].as_array().unwrap_or(&empty);
                over(at("elements"), elements.len(), limits::ACTIONS_ELEMENTS);
                for (j, e) in elements.iter().enumerate() {
                    over(
                        at(&format!("elements[{j}].text")),
                        chars(&e["text"]["text"]),
                        limits::BUTTON_TEXT,
                    );
                    over(
                        at(&format!("elements[{j}].url")),
                        chars(&e["url"]),
                        limits::BUTTON_URL,
                    );
                    over(
                        at(&format!("elements[{j}].action_id")),
                        chars(&e["action_id"]),
                        limits::ACTION_ID,
                    );
                }
            }
            Some("context") => {
                let elements = b["elements"].as_array().unwrap_or(&empty);
                over(at("elements"), elements.len(), limits::CONTEXT_ELEMENTS);
                for (j, e) in elements.iter().enumerate() {
                    over(
                        at(&format!("elements[{j}]")),
                        chars(&e["text"]),
                        limits::SECTION_TEXT,
                    );
                }
            }
            Some("divider") => {}
            // A type this renderer never produces: 1 > 0 names it.
            _ => over(at("is not a known block type"), 1, 0),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Link;
    use crate::task::ContainerState;
    use crate::FailureClass;

    fn huge_alert() -> Alert {
        let mut a = Alert::without_run(
            &"j".repeat(200),
            FailureClass::ExitedNonZero,
            &"m".repeat(10_000),
            Some(format!(
                "arn:aws:states:us-east-1:123456789012:execution:{}:x",
                "s".repeat(80)
            )),
        );
        a.run_id = Some("r".repeat(5000));
        a.attempt = 3;
        a.max_attempts = 3;
        a.stopped_reason = Some("<reason> & ".repeat(1000));
        a.containers = (0..200)
            .map(|i| ContainerState {
                name: format!("container-{i}"),
                exit_code: Some(i),
                reason: Some("r".repeat(300)),
                last_status: None,
            })
            .collect();
        a.log_tail = (0..200)
            .map(|i| format!("line {i} ``` <b> {}", "x".repeat(400)))
            .collect();
        a.links = (0..40)
            .map(|i| Link {
                label: "l".repeat(100),
                url: format!(
                    "https://example.com/{i}/{}",
                    "u".repeat(if i == 0 { 4000 } else { 10 })
                ),
            })
            .collect();
        a
    }

    #[test]
    fn even_absurd_alerts_fit_slacks_limits() {
        let m = message(&huge_alert());
        assert_eq!(check_limits(&m), Vec::<String>::new());
        // The newest log line is the one that must survive truncation.
        let text = m.to_string();
        assert!(text.contains("line 199"));
        assert!(!text.contains("line 0 "));
        // A log line cannot close the code block.
        let log = m["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| {
                b["text"]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("*Last "))
            })
            .unwrap();
        assert_eq!(
            log["text"]["text"].as_str().unwrap().matches("```").count(),
            2
        );
    }

    #[test]
    fn the_checker_catches_what_slack_would_reject() {
        let m = json!({
            "text": "t",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "h".repeat(151)}},
                {"type": "section", "fields": (0..11).map(|_| json!({"type": "mrkdwn", "text": "f"})).collect::<Vec<_>>()},
                {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b"}, "url": "u".repeat(3001), "action_id": "a"}]},
            ]
        });
        let problems = check_limits(&m);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn mrkdwn_control_characters_are_escaped() {
        let a = Alert::without_run("j", FailureClass::InvalidJobSpec, "a <b> & c", None);
        let m = message(&a).to_string();
        assert!(m.contains("a &lt;b&gt; &amp; c"), "{m}");
    }
}
