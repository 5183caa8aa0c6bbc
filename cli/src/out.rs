//! Printing that never panics: a closed pipe (`stevedore runs list | head`)
//! or a closed terminal drops what cannot be written instead of aborting
//! the command — and, for `stevedore run`, instead of leaving the job
//! behind.

use std::io::IsTerminal;

/// `println!` that ignores a closed standard output.
macro_rules! say {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a closed standard error.
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub(crate) use {say, tell};

/// `text` in an ANSI colour when standard output is a terminal (and
/// `NO_COLOR` is not set).
pub fn color(code: &str, text: &str) -> String {
    if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

pub fn clock_time(t: time::OffsetDateTime) -> String {
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

/// Rows aligned under their header, two spaces between columns.
pub fn table<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.as_ref().iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        cells
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(&mut header.iter().copied())];
    for row in rows {
        out.push(line(&mut row.as_ref().iter().map(String::as_str)));
    }
    out
}
