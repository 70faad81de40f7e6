//! Time as verification needs it: run-record timestamps (written by `workflow::clock`) as unix
//! nanoseconds for backend queries, and command-line durations in Argo's syntax.

use std::time::Duration;

/// Unix nanoseconds of a run-record timestamp; `None` when it does not parse.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = crate::workflow::clock::parse(text)?;
    Some(crate::encode::unix_nanos(t))
}

/// A clap value parser for `--timeout`/`--since`: `30s`, `1m30s`, `500ms`, `2h`, bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::workflow::vars::parse_duration(text).ok_or_else(|| {
        format!(
            "invalid duration {}: expected for example 500ms, 30s, 5m, 1m30s or 2h",
            crate::ui::quoted(text)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_timestamps_and_durations() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(
            parse_rfc3339("2026-11-23T17:39:59.500Z"),
            Some(1_795_455_599_500_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").unwrap_err().contains("\"soon\""));
    }
}
