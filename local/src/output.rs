//! A local job's output: bytes, read to the end, with the secrets
//! Stevedore injected masked.
//!
//! A job's output is bytes, not text: a byte that is not UTF-8 must neither
//! stop the reading (the job would die of SIGPIPE on its next write) nor be
//! lost. The log file keeps the bytes as written; the console shows them
//! lossily. Every value Stevedore injects from `--secrets` is replaced by
//! [`MASK`] before a line reaches the log file or the console, so nothing
//! that shows a job's output later (`logs`, `runs show`, an alert's log
//! tail, Slack) can show it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};

/// What a masked secret value becomes.
pub const MASK: &[u8] = b"***";

/// A value shorter than this is not masked: masking every `a` or `1` would
/// make the output unreadable, and a secret that short is not one. The
/// run says which secrets it does not mask.
pub const MASK_MIN_LEN: usize = 4;

/// A line longer than this without a newline is passed on in pieces (a
/// job writing binary data must not grow the reader without bound).
pub const MAX_LINE: usize = 64 * 1024;

/// How long the output may stay quiet, after the job's process ended,
/// before a pipe still held open (by a process that left the job's
/// process group) is given up on.
pub const LINGER: Duration = Duration::from_secs(2);

/// Replaces the values of injected secrets in a job's output.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so that a value containing another is masked whole.
    needles: Vec<Vec<u8>>,
}

impl Masker {
    /// From the injected variables; also the names of those too short to
    /// mask (see [`MASK_MIN_LEN`]). A value spanning lines is masked line
    /// by line, as output is read.
    pub fn new(secrets: &BTreeMap<String, String>) -> (Masker, Vec<String>) {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        let mut short = Vec::new();
        for (name, value) in secrets {
            let parts: Vec<&str> = value
                .split('\n')
                .map(|p| p.trim_end_matches('\r'))
                .filter(|p| !p.is_empty())
                .collect();
            if parts.iter().any(|p| p.len() < MASK_MIN_LEN) {
                short.push(name.clone());
            }
            needles.extend(
                parts
                    .into_iter()
                    .filter(|p| p.len() >= MASK_MIN_LEN)
                    .map(|p| p.as_bytes().to_vec()),
            );
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        needles.dedup();
        (Masker { needles }, short)
    }

    /// `line` with every secret value replaced by [`MASK`].
    pub fn apply(&self, line: &[u8]) -> Vec<u8> {
        if self.needles.is_empty() {
            return line.to_vec();
        }
        let mut out = Vec::with_capacity(line.len());
        let mut i = 0;
        'scan: while i < line.len() {
            for needle in &self.needles {
                if line[i..].starts_with(needle) {
                    out.extend_from_slice(MASK);
                    i += needle.len();
                    continue 'scan;
                }
            }
            out.push(line[i]);
            i += 1;
        }
        out
    }
}

/// Reads `stream` to its end and sends it on line by line (each with its
/// newline; a last line without one as it is; a line longer than
/// [`MAX_LINE`] in pieces). Once `ended` turns true (the job's process is
/// gone and its group killed) the reading stops at the end of the stream or
/// after [`LINGER`] without output, whichever comes first.
pub async fn pump<R: AsyncRead + Unpin>(
    mut stream: R,
    lines: mpsc::UnboundedSender<Vec<u8>>,
    mut ended: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    let mut gone = false;
    loop {
        gone = gone || *ended.borrow();
        let read = if gone {
            match tokio::time::timeout(LINGER, stream.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                // `read` is cancel safe: nothing is lost when `ended` wins.
                r = stream.read(&mut buf) => r,
                changed = ended.changed() => {
                    // The waiter gone without a word counts as the end too.
                    gone = changed.is_err();
                    continue;
                }
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = carry[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos + 1;
            if lines.send(carry[start..end].to_vec()).is_err() {
                return;
            }
            start = end;
        }
        carry.drain(..start);
        while carry.len() > MAX_LINE {
            let rest = carry.split_off(MAX_LINE);
            if lines.send(std::mem::replace(&mut carry, rest)).is_err() {
                return;
            }
        }
    }
    if !carry.is_empty() {
        let _ = lines.send(carry);
    }
}

/// A line as the console shows it: lossy UTF-8, without its line ending.
pub fn shown(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(pairs: &[(&str, &str)]) -> (Masker, Vec<String>) {
        Masker::new(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn every_occurrence_of_a_secret_is_masked_and_the_longest_value_wins() {
        let (m, short) = masker(&[("A", "hunter2"), ("B", "hunter2xyz"), ("C", "ab")]);
        assert_eq!(short, ["C"]);
        assert_eq!(
            m.apply(b"pw hunter2xyz and hunter2, hunter2hunter2\n"),
            b"pw *** and ***, ******\n"
        );
        assert_eq!(m.apply(b"ab stays"), b"ab stays");
        // Bytes that are not UTF-8 pass through untouched.
        assert_eq!(m.apply(b"caf\xe9 hunter2"), b"caf\xe9 ***");
    }

    #[test]
    fn a_secret_spanning_lines_is_masked_line_by_line() {
        let (m, _) = masker(&[(
            "KEY",
            "-----BEGIN KEY-----\nMIIEvQIBADAN\n-----END KEY-----\n",
        )]);
        assert_eq!(m.apply(b"MIIEvQIBADAN\n"), b"***\n");
        assert_eq!(m.apply(b"-----END KEY-----"), b"***");
    }

    #[tokio::test]
    async fn pump_passes_every_byte_on_in_lines() {
        let input: Vec<u8> = b"one\ncaf\xe9\n\ntail without newline".to_vec();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_keep, ended) = watch::channel(false);
        pump(&input[..], tx, ended).await;
        let mut got = Vec::new();
        while let Some(l) = rx.recv().await {
            got.push(l);
        }
        assert_eq!(
            got,
            [
                b"one\n".to_vec(),
                b"caf\xe9\n".to_vec(),
                b"\n".to_vec(),
                b"tail without newline".to_vec()
            ]
        );
        assert_eq!(shown(&got[1]), "caf\u{fffd}");
    }

    #[tokio::test]
    async fn a_line_without_end_is_passed_on_in_pieces() {
        let input = vec![b'x'; MAX_LINE * 2 + 10];
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_keep, ended) = watch::channel(false);
        pump(&input[..], tx, ended).await;
        let mut sizes = Vec::new();
        while let Some(l) = rx.recv().await {
            sizes.push(l.len());
        }
        assert_eq!(sizes.iter().sum::<usize>(), input.len());
        assert!(sizes.iter().all(|s| *s <= MAX_LINE), "{sizes:?}");
    }
}
