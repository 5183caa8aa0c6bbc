//! Human durations in job specs: `45m`, `1h30m`, `90s`, `2d`.

/// Parses `1h30m`-style durations into seconds. Units: `s`, `m`, `h`, `d`;
/// each at most once, largest first. Returns a message saying what is wrong.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    const HINT: &str = "use a number with a unit, like `90s`, `45m`, `2h` or `1h30m`";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("is empty; {HINT}"));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut last_rank = usize::MAX;
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            number.push(ch);
            continue;
        }
        let (rank, unit_seconds) = match ch {
            'd' => (3, 86_400),
            'h' => (2, 3_600),
            'm' => (1, 60),
            's' => (0, 1),
            _ => return Err(format!("`{text}` has an unexpected `{ch}`; {HINT}")),
        };
        if number.is_empty() {
            return Err(format!("`{text}` has a unit without a number; {HINT}"));
        }
        if rank >= last_rank {
            return Err(format!(
                "`{text}` repeats or misorders units (largest first); {HINT}"
            ));
        }
        last_rank = rank;
        let value: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` has a number too large"))?;
        total = value
            .checked_mul(unit_seconds)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{text}` is too long"))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("`{text}` ends without a unit; {HINT}"));
    }
    Ok(total)
}

/// Formats seconds the way [`parse_duration`] reads them (`1h30m`, `45s`).
pub fn format_duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = seconds;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("45m"), Ok(2700));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration(" 1d2h3m4s "), Ok(93_784));
    }

    #[test]
    fn rejects_what_it_cannot_read_with_a_reason() {
        for bad in [
            "",
            "45",
            "m",
            "1x",
            "30m1h",
            "1m1m",
            "-5m",
            "1.5h",
            "99999999999999999999s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(parse_duration("45")
            .unwrap_err()
            .contains("ends without a unit"));
    }

    #[test]
    fn format_round_trips() {
        for s in [1, 59, 60, 61, 3600, 5400, 86_400, 93_784] {
            assert_eq!(parse_duration(&format_duration(s)), Ok(s));
        }
        assert_eq!(format_duration(5400), "1h30m");
    }
}
