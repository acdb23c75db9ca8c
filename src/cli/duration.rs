//! The one parser of every duration flag (`--timeout`, `--shutdown-timeout`, ...).

use std::time::Duration;

/// Parses a duration flag: a bare number is seconds (`90`), otherwise the `humantime` forms
/// (`90s`, `2m`, `1h`, `1h30m`, `500ms`, `2m 30s`). Errors (as clap shows them, exit 1): an
/// empty value, a negative or fractional number, an unknown unit, and a value beyond
/// `Duration::MAX` (about 584 billion years). Large values that fit are accepted: every
/// consumer saturates deadlines instead of overflowing (see `crate::deadline`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let forms = "a duration such as 90 (seconds), 90s, 2m or 1h";
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map(Duration::from_secs).map_err(|_| format!("`{s}` is too large for {forms}"));
    }
    humantime::parse_duration(t).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => format!("`{s}` is too large for {forms}"),
        e => format!("`{s}` is not {forms}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form() {
        let secs = Duration::from_secs;
        assert_eq!(parse_duration("90"), Ok(secs(90)));
        assert_eq!(parse_duration(" 90 "), Ok(secs(90)));
        assert_eq!(parse_duration("90s"), Ok(secs(90)));
        assert_eq!(parse_duration("2m"), Ok(secs(120)));
        assert_eq!(parse_duration("1h"), Ok(secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(parse_duration("2m 30s"), Ok(secs(150)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn errors_instead_of_panics() {
        for bad in ["", "s", "-5", "-5s", "1.5", "5 parsecs", "ten"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("90s, 2m or 1h"), "{bad}: {e}");
        }
        // Beyond what a Duration holds: an error, not an arithmetic overflow.
        for huge in ["400000000000000000m", "99999999999999999999", "18446744073709551616s", "999999999999999999h"] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("too large"), "{huge}: {e}");
        }
        // Large but representable: accepted (consumers saturate).
        assert_eq!(parse_duration("18446744073709551615"), Ok(Duration::from_secs(u64::MAX)));
    }
}
