//! A recording proxy for programs the tests run as processes (the
//! `stevedore` CLI): pointed at it with `AWS_ENDPOINT_URL`, a program's
//! requests are recorded as [`Call`]s, as [`Recorder::wrap`] records an
//! in-process client's, then forwarded to the emulator behind it.
//!
//! HTTP/1.1 only, one request per connection: each answer carries
//! `Connection: close`, so the client opens a new connection for the next
//! request and the proxy never has to find where a response ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use crate::iam::{call_of, Call, Recorder};

impl Recorder {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`) that records
    /// every request it forwards; returns its URL. It serves until the test
    /// process ends.
    pub fn proxy(&self, upstream: &str) -> String {
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recording proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let calls = self.calls.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, calls) = (upstream.clone(), calls.clone());
                thread::spawn(move || {
                    forward(client, &upstream, |call| {
                        calls.lock().unwrap_or_else(|p| p.into_inner()).push(call)
                    });
                });
            }
        });
        url
    }
}

/// Forwards one request from `client` to `upstream` and its answer back;
/// a signed AWS request is given to `record` before it is forwarded (so a
/// test that reads the calls once the program has exited sees them all).
fn forward(client: TcpStream, upstream: &str, record: impl FnOnce(Call)) -> Option<()> {
    let mut reader = BufReader::new(client.try_clone().ok()?);
    let mut head = Vec::new();
    let mut line = String::new();
    let (mut length, mut authorization, mut target) = (0usize, None, None);
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim().to_string();
            match name.trim().to_ascii_lowercase().as_str() {
                "connection" => continue,
                "content-length" => length = value.parse().ok()?,
                "authorization" => authorization = Some(value),
                "x-amz-target" => target = Some(value),
                "transfer-encoding" => panic!(
                    "the recording proxy reads bodies by Content-Length only; got Transfer-Encoding: {value}"
                ),
                _ => {}
            }
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    if let Some(call) = authorization
        .as_deref()
        .and_then(|a| call_of(a, target.as_deref(), &body))
    {
        record(call);
    }

    let mut server = TcpStream::connect(upstream).ok()?;
    server.write_all(&head).ok()?;
    server.write_all(b"Connection: close\r\n\r\n").ok()?;
    server.write_all(&body).ok()?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer).ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut out = String::new();
    for header in String::from_utf8_lossy(&answer[..split]).split("\r\n") {
        if !header.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(header);
            out.push_str("\r\n");
        }
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&answer[split + 4..]);
    let mut client = client;
    client.write_all(&out).ok()?;
    client.flush().ok()
}
