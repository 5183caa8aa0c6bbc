//! Credential redaction for text that leaves the task: log tails, stop
//! reasons and messages in alerts. What it removes: AWS access key ids and
//! secret keys, `password=` / `token=` / `secret=`-style values (also as JSON
//! fields or headers), credentials inside URLs, bearer and basic
//! authorization, Slack webhook URLs and Slack tokens.
//!
//! It errs on the side of removing too much: an alert that hides a harmless
//! value costs a click; one that leaks a credential costs a rotation.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex_lite::{Captures, Regex};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

struct Rule {
    /// A cheap test on the lowercased text: without it the pattern cannot
    /// match, so the (much slower) regex is not run. Most log lines pass
    /// no test at all.
    applies: fn(&str) -> bool,
    re: Regex,
    replace: fn(&Captures) -> String,
}

/// Words a credential-like key contains (lowercase).
const KEY_WORDS: &[&str] = &["pass", "pwd", "token", "secret", "key", "credential"];

fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let rule = |applies: fn(&str) -> bool, pattern: &str, replace: fn(&Captures) -> String| Rule {
            applies,
            re: Regex::new(pattern).expect("redaction patterns are valid"),
            replace,
        };
        vec![
            // Slack incoming webhooks (and workflow triggers): the path is the credential.
            rule(
                |l| l.contains("hooks.slack"),
                r"(?i)(https?://hooks\.slack(?:-gov)?\.com/)(?:services|workflows|triggers)/[A-Za-z0-9/_\-]+",
                |c| format!("{}{REDACTED}", &c[1]),
            ),
            // user:password@ in any URL.
            rule(
                |l| l.contains("://") && l.contains('@'),
                r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):[^@\s/]+@",
                |c| format!("{}:{REDACTED}@", &c[1]),
            ),
            // Authorization: Bearer/Basic/token <credential>.
            rule(
                |l| l.contains("bearer") || l.contains("basic"),
                r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/]+=*",
                |c| format!("{}{}{REDACTED}", &c[1], &c[2]),
            ),
            // key=value, key: value, "key": "value" for credential-like keys.
            rule(
                |l| (l.contains('=') || l.contains(':')) && KEY_WORDS.iter().any(|k| l.contains(k)),
                r#"(?i)([A-Za-z0-9_\-.]*(?:password|passwd|pwd|token|secret|api[_\-]?key|access[_\-]?key|private[_\-]?key|credentials?)[A-Za-z0-9_\-.]*"?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&"'}]+)"#,
                |c| {
                    let value = &c[2];
                    // Keep a quoted value quoted, so JSON stays readable.
                    let quote = match value.chars().next() {
                        Some(q @ ('"' | '\'')) => q.to_string(),
                        _ => String::new(),
                    };
                    format!("{}{quote}{REDACTED}{quote}", &c[1])
                },
            ),
            // AWS access key ids (long-term and temporary).
            rule(|l| ["akia", "asia", "abia", "acca"].iter().any(|p| l.contains(p)), r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})\b", |c| {
                format!("{}{REDACTED}", &c[1][..4])
            }),
            // Slack tokens.
            rule(|l| l.contains("xox"), r"\bxox[abposr]-[A-Za-z0-9\-]{8,}", |_| REDACTED.to_string()),
            // GitHub tokens (a runner image clones private repositories with them).
            rule(|l| l.contains("gh") && l.contains('_'), r"\bgh[pousr]_[A-Za-z0-9]{30,}", |_| REDACTED.to_string()),
        ]
    })
}

/// `text` with every credential this module knows replaced by [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    let lower = text.to_ascii_lowercase();
    for rule in rules() {
        // Replacements only ever remove matches, so the test on the
        // original text stays valid for what later rules see.
        if (rule.applies)(&lower) && rule.re.is_match(&out) {
            let replaced = rule.re.replace_all(&out, |c: &Captures| (rule.replace)(c));
            out = Cow::Owned(replaced.into_owned());
        }
    }
    out
}

/// Redacts in place; returns whether anything changed.
pub fn redact_in_place(text: &mut String) -> bool {
    match redact(text) {
        Cow::Borrowed(_) => false,
        Cow::Owned(s) => {
            *text = s;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per kind of credential, with the secret part each must lose.
    pub(crate) fn credential_lines() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
                "AKIAIOSFODNN7EXAMPLE",
            ),
            (
                "using key ASIAY34FZKBOKMUTVV7A for the session",
                "ASIAY34FZKBOKMUTVV7A",
            ),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            ("connecting with password=hunter2 to db", "hunter2"),
            ("refresh token=abc.def.ghi failed", "abc.def.ghi"),
            (r#"{"user": "etl", "password": "s3cr3t!"}"#, "s3cr3t!"),
            (
                "GET https://api.example.com/v1?api_key=k-123456&page=2",
                "k-123456",
            ),
            (
                "postgres://etl:pa55w0rd@db.internal:5432/warehouse",
                "pa55w0rd",
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
                "eyJhbGciOiJIUzI1NiJ9",
            ),
            (
                "posting to https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX",
                "T0001/B0002",
            ),
            ("slack client with xoxb-1234-5678-abcdefghijkl", "xoxb-1234"),
        ]
    }

    #[test]
    fn every_kind_of_credential_is_redacted() {
        for (line, secret) in credential_lines() {
            let out = redact(line);
            assert!(!out.contains(secret), "{line} -> {out}");
            assert!(out.contains(REDACTED), "{line} -> {out}");
        }
    }

    #[test]
    fn the_cheap_tests_do_not_skip_upper_or_mixed_case() {
        for (line, secret) in [
            ("DB_PASSWORD=hunter2", "hunter2"),
            ("authorization: BEARER abc123def456", "abc123def456"),
            ("HTTPS://HOOKS.SLACK.COM/services/T1/B2/zzz", "T1/B2/zzz"),
            ("Api-Key: k-998877", "k-998877"),
            ("FTP://Admin:Secr3t@files.example", "Secr3t"),
        ] {
            let out = redact(line);
            assert!(!out.contains(secret), "{line} -> {out}");
        }
    }

    #[test]
    fn the_rest_of_the_line_stays_readable() {
        assert_eq!(
            redact("postgres://etl:pa55w0rd@db.internal:5432/warehouse"),
            "postgres://etl:[REDACTED]@db.internal:5432/warehouse"
        );
        assert_eq!(
            redact(r#"{"user": "etl", "password": "s3cr3t!"}"#),
            r#"{"user": "etl", "password": "[REDACTED]"}"#
        );
        assert_eq!(
            redact("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE"),
            "export AWS_ACCESS_KEY_ID=[REDACTED]"
        );
        assert_eq!(redact("key AKIAIOSFODNN7EXAMPLE"), "key AKIA[REDACTED]");
        assert_eq!(
            redact("https://hooks.slack.com/services/T1/B2/abc"),
            "https://hooks.slack.com/[REDACTED]"
        );
    }

    #[test]
    fn ordinary_lines_are_left_alone() {
        for line in [
            "Processed 1200 rows from s3://bucket/key in 3.2s",
            "Traceback (most recent call last):",
            "MemoryError: Unable to allocate 2.00 GiB",
            "https://example.com/path?page=2",
            "tokens processed: 42",
        ] {
            assert!(matches!(redact(line), Cow::Borrowed(_)), "{line}");
        }
    }
}
