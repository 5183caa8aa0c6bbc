//! A Lambda Runtime API for one invocation, to test a built function binary
//! as Lambda starts it: the init must end with the runtime's `next` request
//! and no other network call (AWS clients are built without calling AWS),
//! and an event the function cannot use must come back as the function's
//! own error (`errorType` a failure class), not as a crash.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The environment Lambda gives a function, with sample configuration for
/// every Stevedore function.
pub const ENV: &[(&str, &str)] = &[
    ("AWS_REGION", "us-east-1"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    ("AWS_SECRET_ACCESS_KEY", "example"),
    ("AWS_LAMBDA_FUNCTION_NAME", "start-check"),
    ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
    ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ("RUNS_TABLE", "runs"),
    ("CLUSTER", "arn:aws:ecs:us-east-1:123456789012:cluster/data"),
    (
        "ALERTS_TOPIC_ARN",
        "arn:aws:sns:us-east-1:123456789012:alerts",
    ),
    (
        "SLACK_WEBHOOK_SECRET_ARN",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:slack-AbCdEf",
    ),
];

/// What the binary did: the requests it made, in order, and the error it
/// posted for the bad event.
#[derive(Debug)]
pub struct StartCheck {
    /// Request lines (`GET /2018-06-01/runtime/invocation/next`).
    pub requests: Vec<String>,
    /// The body of the `/error` post, if one came.
    pub error: Option<serde_json::Value>,
}

struct Request {
    line: String,
    body: Vec<u8>,
    conn: TcpStream,
}

/// Starts `program` against a Runtime API on 127.0.0.1 (every AWS endpoint
/// pointed there too, so a call to AWS shows up as a request), hands it
/// `event` and returns what it asked for until it answered.
pub fn start_and_invoke(program: &str, event: &[u8]) -> StartCheck {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Runtime API");
    let addr = listener.local_addr().expect("address");
    let mut child = spawn(program, &addr.to_string());
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || read_requests(conn, tx));
        }
    });
    let mut out = StartCheck {
        requests: Vec::new(),
        error: None,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut delivered = false;
    while let Ok(mut req) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.requests.push(req.line.clone());
        if req.line.starts_with("GET ") && req.line.contains("/runtime/invocation/next") {
            if delivered {
                break; // It answered and asks for more: done.
            }
            delivered = true;
            respond(
                &mut req.conn,
                "200 OK",
                &[
                    ("Lambda-Runtime-Aws-Request-Id", "start-check-1"),
                    ("Lambda-Runtime-Deadline-Ms", &deadline_ms()),
                    (
                        "Lambda-Runtime-Invoked-Function-Arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:start-check",
                    ),
                    (
                        "Lambda-Runtime-Trace-Id",
                        "Root=1-00000000-000000000000000000000000",
                    ),
                ],
                event,
            );
        } else if req.line.contains("/runtime/invocation/start-check-1/") {
            if req.line.contains("/error") {
                out.error = serde_json::from_slice(&req.body).ok();
            }
            respond(&mut req.conn, "202 Accepted", &[], b"{\"status\":\"OK\"}");
            if !req.line.contains("/error") {
                break;
            }
        } else {
            respond(&mut req.conn, "404 Not Found", &[], b"{}");
        }
    }
    stop(&mut child);
    out
}

fn spawn(program: &str, runtime_api: &str) -> Child {
    let mut cmd = Command::new(program);
    cmd.envs(ENV.iter().copied())
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_ENDPOINT_URL", format!("http://{runtime_api}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn deadline_ms() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_millis() + 30_000).to_string()
}

/// Reads HTTP/1.1 requests off one connection (keep-alive), in order.
fn read_requests(conn: TcpStream, tx: mpsc::Sender<Request>) {
    let Ok(reader) = conn.try_clone() else { return };
    let mut reader = BufReader::new(reader);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let Ok(conn) = conn.try_clone() else { return };
        let request = Request {
            line: line.trim_end().to_string(),
            body,
            conn,
        };
        if tx.send(request).is_err() {
            return;
        }
    }
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
    let _ = conn.flush();
}

/// An event no Stevedore function takes.
pub const BAD_EVENT: &[u8] = br#"{"this is": "not an event any Stevedore function takes"}"#;

impl StartCheck {
    /// The requests made before the first `next`: none, for a function
    /// whose init builds its AWS clients without calling AWS.
    pub fn before_first_next(&self) -> &[String] {
        let first = self
            .requests
            .iter()
            .position(|r| r.starts_with("GET ") && r.contains("/runtime/invocation/next"))
            .unwrap_or(self.requests.len());
        &self.requests[..first]
    }

    /// The `errorType` the function posted, when it posted an error.
    pub fn error_type(&self) -> Option<&str> {
        self.error.as_ref()?.get("errorType")?.as_str()
    }
}

/// Starts `program`, hands it [`BAD_EVENT`], and asserts that its init made
/// no call before asking for the event and that it answered with an error of
/// its own (a failure class: Lambda's crash names, `Runtime.*` and
/// `Sandbox.*`, have a dot). Returns what happened, for further checks.
pub fn assert_starts_and_answers_a_bad_event(program: &str) -> StartCheck {
    let check = start_and_invoke(program, BAD_EVENT);
    assert!(
        !check.requests.is_empty() && check.before_first_next().is_empty(),
        "{program}: the init must end with the runtime's `next`, with no call before it; requests: {:?}",
        check.requests
    );
    let error_type = check.error_type().unwrap_or_else(|| {
        panic!(
            "{program}: no error posted for a bad event; requests: {:?}",
            check.requests
        )
    });
    assert!(
        !error_type.is_empty() && !error_type.contains('.'),
        "{program}: the error is the function's own, not a crash: {:?}",
        check.error
    );
    check
}
