//! The loss account: what was sent against what the backends hold, per signal. Spans, counters,
//! orphans and correlation come from `obsctl verify`'s checks (the same fetching and judging);
//! step log lines are accounted here line by line, because a chaos step prints numbered lines
//! and the runner keeps its own copy of each attempt's output as the ground truth.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::backends::loki::LogEntry;
use crate::checks::CheckResult;
use crate::checks::expect::Expectation;
use crate::otlp::SpanId;

/// Items named in a row; the counts say how many there were in all.
const NAMED: usize = 10;

/// One line of a scenario's table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub check: String,
    pub passed: bool,
    pub expected: u64,
    pub found: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// What is lost, duplicated or wrong, named (at most ten of each).
    pub items: Vec<String>,
}

impl Row {
    /// A condition the scenario asserts, with what was seen.
    pub fn condition(check: &str, passed: bool, expected: u64, found: u64, detail: String) -> Self {
        Self {
            check: check.to_string(),
            passed,
            expected,
            found,
            lost: expected.saturating_sub(found),
            duplicated: 0,
            items: if detail.is_empty() {
                Vec::new()
            } else {
                vec![detail]
            },
        }
    }
}

impl Row {
    /// A measured value held to a limit: "expected" is the limit, "found" the measurement.
    pub fn within(check: &str, limit: u64, measured: u64, detail: String) -> Self {
        Self {
            check: check.to_string(),
            passed: measured <= limit,
            expected: limit,
            found: measured,
            lost: 0,
            duplicated: 0,
            items: vec![detail],
        }
    }
}

impl From<&CheckResult> for Row {
    fn from(result: &CheckResult) -> Self {
        let mut items: Vec<String> = result.missing.iter().take(NAMED).cloned().collect();
        items.extend(result.duplicated.iter().take(NAMED).cloned());
        items.extend(result.problems.iter().take(NAMED).cloned());
        Self {
            check: result.check.name().to_string(),
            passed: !result.failed(),
            expected: result.expected,
            found: result.found,
            lost: result.missing.len() as u64,
            duplicated: result.duplicated.len() as u64,
            items,
        }
    }
}

/// What each attempt printed, from the runner's copy: `<state>/<run>/<node>.<attempt>/log`.
pub fn printed_lines(
    state_dir: &Path,
    expectation: &Expectation,
) -> BTreeMap<(SpanId, String), u64> {
    let mut lines = BTreeMap::new();
    for attempt in &expectation.attempts {
        let log = state_dir
            .join(&attempt.run)
            .join(format!("{}.{}", attempt.node_id, attempt.attempt))
            .join("log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines() {
            if line.trim().is_empty() || line.starts_with("obsctl shim: ") {
                continue;
            }
            *lines
                .entry((attempt.span_id, line.to_string()))
                .or_insert(0) += 1;
        }
    }
    lines
}

/// Attempts whose shim got no answer before its export deadline (its warning, in the runner's
/// copy of the attempt's output): a request of theirs may have been committed unanswered and
/// delivered again by the replay, and each such request may repeat the attempt's span, counter
/// points and lines. Returns how many such attempts, and the lines they printed.
pub fn in_doubt(state_dir: &Path, expectation: &Expectation) -> (u64, u64) {
    let mut attempts = 0;
    let mut lines = 0;
    for attempt in &expectation.attempts {
        let log = state_dir
            .join(&attempt.run)
            .join(format!("{}.{}", attempt.node_id, attempt.attempt))
            .join("log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let shim = |l: &&str| l.starts_with("obsctl shim: ");
        if text
            .lines()
            .any(|l| shim(&l) && l.contains(crate::otlp::export::IN_DOUBT))
        {
            attempts += 1;
            lines += text
                .lines()
                .filter(|l| !shim(l) && !l.trim().is_empty())
                .count() as u64;
        }
    }
    (attempts, lines)
}

/// Every printed line must be in the log backend exactly once, under its attempt's span.
pub fn log_lines(printed: &BTreeMap<(SpanId, String), u64>, held: &[LogEntry]) -> Row {
    let mut found_lines: BTreeMap<(SpanId, String), u64> = BTreeMap::new();
    for entry in held {
        if let Some(span) = entry.span_id() {
            *found_lines.entry((span, entry.line.clone())).or_insert(0) += 1;
        }
    }
    let spans: std::collections::BTreeSet<SpanId> = printed.keys().map(|(s, _)| *s).collect();
    let mut row = Row {
        check: "log-lines".into(),
        passed: false,
        expected: printed.values().sum(),
        found: 0,
        lost: 0,
        duplicated: 0,
        items: Vec::new(),
    };
    for ((span, line), want) in printed {
        let got = found_lines
            .get(&(*span, line.clone()))
            .copied()
            .unwrap_or(0);
        row.found += got.min(*want);
        if got < *want {
            row.lost += want - got;
            if row.items.len() < NAMED {
                row.items.push(format!("lost: span {span} {line:?}"));
            }
        }
        if got > *want {
            row.duplicated += got - want;
            if row.items.len() < NAMED {
                row.items.push(format!(
                    "{} extra cop(ies): span {span} {line:?}",
                    got - want
                ));
            }
        }
    }
    for ((span, line), got) in &found_lines {
        if spans.contains(span) && !printed.contains_key(&(*span, line.clone())) {
            row.duplicated += got;
            if row.items.len() < NAMED {
                row.items
                    .push(format!("never printed: span {span} {line:?}"));
            }
        }
    }
    row.passed = row.lost == 0 && row.duplicated == 0;
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(span: SpanId, line: &str) -> LogEntry {
        LogEntry {
            timestamp_ns: 1,
            line: line.into(),
            labels: Default::default(),
            structured_metadata: [("span_id".to_string(), span.to_hex())].into(),
            parsed: Default::default(),
        }
    }

    #[test]
    fn lines_are_counted_as_multisets() {
        let a = SpanId::random();
        let printed: BTreeMap<_, _> = [
            ((a, "line 1".to_string()), 1),
            ((a, "line 2".to_string()), 1),
        ]
        .into();
        let exact = log_lines(&printed, &[entry(a, "line 1"), entry(a, "line 2")]);
        assert!(exact.passed, "{exact:?}");
        let short = log_lines(&printed, &[entry(a, "line 1")]);
        assert_eq!((short.lost, short.duplicated, short.passed), (1, 0, false));
        let twice = log_lines(
            &printed,
            &[entry(a, "line 1"), entry(a, "line 1"), entry(a, "line 2")],
        );
        assert_eq!((twice.lost, twice.duplicated, twice.found), (0, 1, 2));
    }
}
