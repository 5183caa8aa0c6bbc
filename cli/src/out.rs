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

/// The terminal's width in columns when standard output is one (`COLUMNS`
/// wins, as shells set it), otherwise `None`: a pipe gets whole lines.
pub fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return Some(c);
    }
    // SAFETY: TIOCGWINSZ writes a `winsize` into the struct we pass.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// [`table`] narrowed to `width` columns: the columns in `droppable` go,
/// in that order, until the lines fit (the others are what a row is).
pub fn fitted_table<R: AsRef<[String]>>(
    header: &[&str],
    rows: &[R],
    droppable: &[&str],
    width: Option<usize>,
) -> Vec<String> {
    let mut keep: Vec<usize> = (0..header.len()).collect();
    let render = |keep: &[usize]| {
        let h: Vec<&str> = keep.iter().map(|&i| header[i]).collect();
        let r: Vec<Vec<String>> = rows
            .iter()
            .map(|row| keep.iter().map(|&i| row.as_ref()[i].clone()).collect())
            .collect();
        table(&h, &r)
    };
    let mut lines = render(&keep);
    let Some(width) = width else { return lines };
    for name in droppable {
        if lines.iter().all(|l| l.chars().count() <= width) {
            break;
        }
        if let Some(i) = header.iter().position(|h| h == name) {
            keep.retain(|&k| k != i);
            lines = render(&keep);
        }
    }
    lines
}

/// The runs table of `runs list`, local or on a stack.
pub fn runs_table(runs: &[stevedore_domain::run::RunRecord]) -> Vec<String> {
    let rows: Vec<[String; 10]> = runs
        .iter()
        .map(|r| {
            let dur = crate::run::run_duration(r)
                .map(stevedore_domain::duration::format_duration)
                .unwrap_or_else(|| "-".into());
            let o = r.outcome.as_ref();
            [
                r.run_id.clone(),
                r.job.clone(),
                r.logical_time
                    .map(stevedore_domain::logical::short)
                    .unwrap_or_else(|| "-".into()),
                r.status.to_string(),
                // "1/3" while another attempt may follow; an ended run's row
                // is its own attempt (a retry is a row of its own).
                if r.status.is_terminal() {
                    r.attempt.to_string()
                } else {
                    format!("{}/{}", r.attempt, r.max_attempts)
                },
                stevedore_domain::task::format_time(r.created_at)
                    .chars()
                    .take(19)
                    .collect::<String>()
                    .replace('T', " "),
                dur,
                o.and_then(|o| o.exit_code)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.cost
                    .as_ref()
                    .map(|c| format!("${:.4}", c.usd))
                    .unwrap_or_else(|| "-".into()),
                o.and_then(|o| o.class)
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "RUN",
        "JOB",
        "LOGICAL TIME",
        "STATUS",
        "ATTEMPT",
        "STARTED (UTC)",
        "DURATION",
        "EXIT",
        "COST",
        "ERROR",
    ];
    fitted_table(
        &header,
        &rows,
        &["COST", "ATTEMPT", "EXIT", "ERROR", "JOB", "LOGICAL TIME"],
        terminal_width(),
    )
}
