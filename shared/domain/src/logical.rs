//! Logical time: which interval a run processes, as opposed to when it
//! happened to start. A spec's `logicalTime` (a schedule fills it with its
//! own scheduled time), or else the execution's start time. Retries and
//! reruns keep it, so a failed load of yesterday, rerun today, loads
//! yesterday again.
//!
//! The job sees it as `STEVEDORE_LOGICAL_TIME` (`2026-11-27T00:00:00Z`) and
//! `STEVEDORE_LOGICAL_DATE` (`2026-11-27`), and `command` and `environment`
//! values may hold placeholders, filled at launch ([`PLACEHOLDERS`]);
//! `$${` is a literal `${` (for a shell's `${VAR}`).

use time::OffsetDateTime;

/// The placeholders `command` and `environment` may use, with an example
/// for 2026-11-27T06:30:00Z.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("logicalTime", "2026-11-27T06:30:00Z"),
    ("logicalDate", "2026-11-27"),
    ("logicalYear", "2026"),
    ("logicalMonth", "11"),
    ("logicalDay", "27"),
    ("logicalHour", "06"),
];

/// `2026-11-27T06:30:00Z`: UTC, whole seconds.
pub fn format_logical(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        t.date(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `20261127T063000` (UTC, whole seconds): for names.
pub fn compact(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2026-11-27` (the UTC date).
pub fn format_date(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).date().to_string()
}

fn value(name: &str, t: OffsetDateTime) -> Option<String> {
    let t = t.to_offset(time::UtcOffset::UTC);
    Some(match name {
        "logicalTime" => format_logical(t),
        "logicalDate" => format_date(t),
        "logicalYear" => format!("{:04}", t.year()),
        "logicalMonth" => format!("{:02}", u8::from(t.month())),
        "logicalDay" => format!("{:02}", t.day()),
        "logicalHour" => format!("{:02}", t.hour()),
        _ => return None,
    })
}

/// Fills the placeholders of `text` with `t` (and `$${` becomes `${`);
/// `Err` names an unknown or unclosed placeholder. With `t` `None` only
/// checks.
fn expand(text: &str, t: Option<OffsetDateTime>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            // `$${`: a literal `${`.
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            return Err(format!(
                "`{}` opens a placeholder that is not closed: write `$${{` for a literal `${{`",
                &rest[i..]
            ));
        };
        let name = &rest[i + 2..i + end];
        let known = PLACEHOLDERS.iter().any(|(n, _)| *n == name);
        if !known {
            let names: Vec<String> = PLACEHOLDERS
                .iter()
                .map(|(n, _)| format!("${{{n}}}"))
                .collect();
            return Err(format!(
                "`${{{name}}}` is not a placeholder Stevedore knows ({}); for a literal `${{` (a shell variable) write `$${{{name}}}`",
                names.join(", ")
            ));
        }
        if let Some(t) = t {
            out.push_str(&value(name, t).unwrap_or_default());
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks that `text` uses only known placeholders.
pub fn check(text: &str) -> Result<(), String> {
    expand(text, None).map(|_| ())
}

/// `text` with its placeholders filled from `t`. Text that passed [`check`]
/// always fills; anything else is returned unchanged.
pub fn fill(text: &str, t: OffsetDateTime) -> String {
    expand(text, Some(t)).unwrap_or_else(|_| text.to_string())
}

/// The variables every job container gets for its logical time.
pub fn env(t: OffsetDateTime) -> [(&'static str, String); 2] {
    [
        ("STEVEDORE_LOGICAL_TIME", format_logical(t)),
        ("STEVEDORE_LOGICAL_DATE", format_date(t)),
    ]
}

/// How `runs list` shows it: the date alone at midnight UTC, otherwise
/// `2026-11-27 06:30`.
pub fn short(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    if (t.hour(), t.minute(), t.second()) == (0, 0, 0) {
        format_date(t)
    } else if t.second() == 0 {
        format!("{} {:02}:{:02}", t.date(), t.hour(), t.minute())
    } else {
        format!(
            "{} {:02}:{:02}:{:02}",
            t.date(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn placeholders_fill_and_unknown_ones_are_named() {
        let t = datetime!(2026-11-27 06:30:00 UTC);
        for (name, example) in PLACEHOLDERS {
            assert_eq!(fill(&format!("${{{name}}}"), t), *example, "{name}");
        }
        assert_eq!(
            fill("--date=${logicalDate} --at ${logicalTime}", t),
            "--date=2026-11-27 --at 2026-11-27T06:30:00Z"
        );
        assert_eq!(fill("echo $${HOME} ${logicalDay}", t), "echo ${HOME} 27");
        assert_eq!(fill("$HOME costs $5", t), "$HOME costs $5");
        let e = check("echo ${HOME}").unwrap_err();
        assert!(
            e.contains("`${HOME}` is not a placeholder") && e.contains("$${HOME}"),
            "{e}"
        );
        assert!(check("${logicalDate").unwrap_err().contains("not closed"));
        assert!(check("plain").is_ok());
        // In another offset, the UTC date.
        let late = datetime!(2026-11-27 23:30:00 -02:00);
        assert_eq!(fill("${logicalDate}", late), "2026-11-28");
    }

    #[test]
    fn short_forms() {
        assert_eq!(short(datetime!(2026-11-27 00:00 UTC)), "2026-11-27");
        assert_eq!(short(datetime!(2026-11-27 06:30 UTC)), "2026-11-27 06:30");
        assert_eq!(
            short(datetime!(2026-11-27 06:30:05 UTC)),
            "2026-11-27 06:30:05"
        );
    }
}
