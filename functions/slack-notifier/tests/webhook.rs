//! The Slack notifier against a real HTTP server on 127.0.0.1 that answers
//! as Slack's webhook endpoint does: 200, 429 with `Retry-After`, 500, and
//! 404 `channel_not_found`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use slack_notifier::{
    function_handler, CachedWebhook, Deps, RetryPolicy, SlackPoster, WEBHOOK_CACHE_TTL,
};
use stevedore_domain::alert::Alert;
use stevedore_domain::ports::{Secret, SecretSource};
use stevedore_domain::slack::check_limits;
use stevedore_domain::{FailureClass, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One scripted answer: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, String)>, &'static str);

#[derive(Default)]
struct Seen {
    bodies: Vec<Value>,
    paths: Vec<String>,
    at: Vec<Instant>,
}

/// A webhook endpoint that answers from a script (then 200 forever).
struct FakeSlack {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

impl FakeSlack {
    async fn start(script: Vec<Answer>) -> FakeSlack {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script) = (seen2.clone(), script.clone());
                tokio::spawn(async move {
                    // One request per connection is enough; reqwest reconnects.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, length) = loop {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (i + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let body: Value =
                        serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
                    {
                        let mut s = seen.lock().unwrap();
                        s.bodies.push(body);
                        s.paths.push(path);
                        s.at.push(Instant::now());
                    }
                    let (status, headers, text) =
                        script
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((200, vec![], "ok"));
                    let mut response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n",
                        text.len()
                    );
                    for (k, v) in headers {
                        response.push_str(&format!("{k}: {v}\r\n"));
                    }
                    response.push_str("\r\n");
                    response.push_str(text);
                    let _ = sock.write_all(response.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        FakeSlack {
            url: format!("http://{addr}/services/T000/B000/not-a-real-secret-xyz"),
            seen,
        }
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().bodies.len()
    }
}

/// A secret store holding one value, counting reads.
struct OneSecret {
    value: Mutex<String>,
    reads: AtomicUsize,
}

#[async_trait]
impl SecretSource for OneSecret {
    async fn secret(&self, _id: &str) -> Result<Secret> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(Secret::new(self.value.lock().unwrap().clone()))
    }
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        budget: Duration::from_secs(30),
    }
}

fn deps(url: &str) -> (Deps, Arc<OneSecret>) {
    let secret = Arc::new(OneSecret {
        value: Mutex::new(json!({ "url": url }).to_string()),
        reads: AtomicUsize::new(0),
    });
    let deps = Deps {
        webhook: CachedWebhook::new(
            secret.clone(),
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:slack",
            WEBHOOK_CACHE_TTL,
        ),
        poster: SlackPoster::new(fast_policy()),
    };
    (deps, secret)
}

fn sns_event(alert: &Alert) -> Value {
    json!({"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "Sns": {
            "Type": "Notification",
            "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:alerts",
            "Subject": alert.subject(),
            "Message": alert.to_json().to_string(),
            "Timestamp": "2026-11-24T06:10:00.000Z",
            "MessageAttributes": {"job": {"Type": "String", "Value": alert.job}}
        }
    }]})
}

fn alert(job: &str) -> Alert {
    let mut a = Alert::without_run(job, FailureClass::ExitedNonZero, "exit 3", None);
    a.log_tail = vec![
        "Traceback (most recent call last):".into(),
        "ValueError: bad row 17".into(),
    ];
    a
}

#[tokio::test]
async fn slack_answers_200_429_500_then_404_and_each_is_handled_as_slack_means_it() {
    let slack = FakeSlack::start(vec![
        (200, vec![], "ok"),
        (429, vec![("retry-after", "1".into())], "rate_limited"),
        (200, vec![], "ok"),
        (500, vec![], "rollup_error"),
        (200, vec![], "ok"),
        (404, vec![], "channel_not_found"),
    ])
    .await;
    let (deps, secret) = deps(&slack.url);

    // 200: delivered with one request, as a Block Kit message within limits.
    let d = function_handler(&deps, sns_event(&alert("a")))
        .await
        .unwrap();
    assert_eq!(d[0].attempts, 1);
    let first = slack.seen.lock().unwrap().bodies[0].clone();
    assert_eq!(first["blocks"][0]["type"], "header");
    assert!(first["text"]
        .as_str()
        .unwrap()
        .contains("a failed: ExitedNonZero"));
    assert_eq!(check_limits(&first), Vec::<String>::new());
    assert!(first.to_string().contains("ValueError: bad row 17"));

    // 429 with Retry-After: 1: waits at least that long, then delivers.
    let d = function_handler(&deps, sns_event(&alert("b")))
        .await
        .unwrap();
    assert_eq!(d[0].attempts, 2);
    {
        let s = slack.seen.lock().unwrap();
        let waited = s.at[2] - s.at[1];
        assert!(
            waited >= Duration::from_millis(950),
            "waited only {waited:?}"
        );
    }

    // 500: retried with backoff, then delivered.
    let d = function_handler(&deps, sns_event(&alert("c")))
        .await
        .unwrap();
    assert_eq!(d[0].attempts, 2);

    // 404 channel_not_found: one request, no retry, Slack's code in the error.
    let before = slack.requests();
    let err = function_handler(&deps, sns_event(&alert("d")))
        .await
        .unwrap_err();
    assert_eq!(slack.requests(), before + 1, "a 404 must not be retried");
    assert_eq!(err.class, FailureClass::ConfigurationError);
    assert!(
        err.message.contains("404 channel_not_found"),
        "{}",
        err.message
    );
    assert!(
        !err.message.contains("not-a-real-secret"),
        "the URL leaked: {}",
        err.message
    );

    // The secret was read once for the first four invocations, and is read
    // again after the rejection (the webhook may have been rotated).
    assert_eq!(secret.reads.load(Ordering::SeqCst), 1);
    function_handler(&deps, sns_event(&alert("e")))
        .await
        .unwrap();
    assert_eq!(secret.reads.load(Ordering::SeqCst), 2);
    // Every request went to the webhook's path.
    assert!(slack
        .seen
        .lock()
        .unwrap()
        .paths
        .iter()
        .all(|p| p == "/services/T000/B000/not-a-real-secret-xyz"));
}

#[tokio::test]
async fn server_errors_that_do_not_stop_fail_the_delivery_after_the_last_attempt() {
    let slack = FakeSlack::start(vec![(500, vec![], "rollup_error"); 10]).await;
    let (deps, _) = deps(&slack.url);
    let err = function_handler(&deps, sns_event(&alert("a")))
        .await
        .unwrap_err();
    assert_eq!(slack.requests(), 4);
    assert_eq!(err.class, FailureClass::Transient);
    assert!(err.message.contains("500 rollup_error"), "{}", err.message);
}

#[tokio::test]
async fn a_delivery_never_outlasts_its_budget_whatever_slack_answers() {
    // Each Retry-After is allowed on its own, but together they would pass
    // the budget: the poster stops before the wait that would.
    let slack = FakeSlack::start(vec![
        (429, vec![("retry-after", "1".into())], "rate_limited");
        10
    ])
    .await;
    let poster = SlackPoster::new(RetryPolicy {
        max_attempts: 10,
        budget: Duration::from_millis(2500),
        ..fast_policy()
    });
    let started = Instant::now();
    let err = poster
        .post(&Secret::new(slack.url.clone()), &json!({"text": "hi"}))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.class, FailureClass::Throttled);
    assert_eq!(
        slack.requests(),
        2,
        "requests at 0 s and 1 s; a third would end past 2.5 s"
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // The default budget fits in the function's 60 s Timeout with the
    // secret read (12 s at most) and the init.
    assert!(RetryPolicy::default().budget <= Duration::from_secs(60 - 12 - 5));
}

#[tokio::test]
async fn a_retry_after_longer_than_the_budget_fails_at_once_instead_of_timing_out() {
    let slack = FakeSlack::start(vec![(
        429,
        vec![("retry-after", "3600".into())],
        "rate_limited",
    )])
    .await;
    let (deps, _) = deps(&slack.url);
    let started = Instant::now();
    let err = function_handler(&deps, sns_event(&alert("a")))
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Throttled);
    assert_eq!(slack.requests(), 1);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn an_unreachable_webhook_is_retried_and_the_error_does_not_show_the_url() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (deps, _) = deps(&format!(
        "http://127.0.0.1:{port}/services/T1/B2/very-secret-part"
    ));
    let err = function_handler(&deps, sns_event(&alert("a")))
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Transient);
    assert!(err.message.contains("after 4 attempts"), "{}", err.message);
    assert!(!err.message.contains("very-secret-part"), "{}", err.message);
}

#[tokio::test]
async fn bad_secrets_and_bad_events_get_named_errors() {
    let slack = FakeSlack::start(vec![]).await;
    // Not https.
    let (deps, secret) = deps(&slack.url);
    *secret.value.lock().unwrap() = "http://hooks.slack.com/services/T/B/x".into();
    let err = function_handler(&deps, sns_event(&alert("a")))
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::ConfigurationError);
    assert!(err.message.contains("https://"), "{}", err.message);
    assert!(!err.message.contains("T/B/x"));
    // JSON without a url.
    *secret.value.lock().unwrap() = r#"{"token": "x"}"#.into();
    let err = function_handler(&deps, sns_event(&alert("a")))
        .await
        .unwrap_err();
    assert!(err.message.contains("`url`"), "{}", err.message);
    // Not an SNS event.
    let err = function_handler(&deps, json!({"hello": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::InvalidInput);
    assert_eq!(slack.requests(), 0);
}

#[tokio::test]
async fn a_message_that_is_not_an_alert_is_still_posted_redacted() {
    let slack = FakeSlack::start(vec![]).await;
    let (deps, _) = deps(&slack.url);
    let event = json!({"Records": [{"Sns": {
        "Subject": "hand-written",
        "Message": "deploy done; password=hunter2"
    }}]});
    function_handler(&deps, event).await.unwrap();
    let body = slack.seen.lock().unwrap().bodies[0].to_string();
    assert!(body.contains("deploy done"));
    assert!(!body.contains("hunter2"));
}
