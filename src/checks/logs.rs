//! Log correlation: every step attempt's log lines carry its trace and span ids, every line of
//! the task carries ids at all, the logs can be selected by repo, prNumber and taskId, and the
//! trace ids in them lead to traces the trace backend has.

use std::collections::BTreeSet;

use super::collect::Observed;
use super::expect::Expectation;
use super::{CheckId, CheckResult};
use crate::backends::loki::LogEntry;
use crate::ui::quoted;

/// Lines quoted in a report per kind of problem; the count says how many there were.
const QUOTED: usize = 3;

fn quote_line(entry: &LogEntry) -> String {
    const MAX: usize = 80;
    let line: String = entry.line.chars().take(MAX).collect();
    if entry.line.chars().count() > MAX {
        format!("{}…", quoted(&line))
    } else {
        quoted(&line)
    }
}

pub fn log_correlation(expectation: &Expectation, observed: &Observed) -> CheckResult {
    let expected = expectation.attempts.len() as u64;
    let mut result = CheckResult::new(CheckId::LogCorrelation, expected, 0);
    let correlated: BTreeSet<_> = observed
        .logs
        .iter()
        .filter_map(|e| Some((e.trace_id()?, e.span_id()?)))
        .collect();
    for attempt in &expectation.attempts {
        if correlated.contains(&(attempt.trace_id, attempt.span_id)) {
            result.found += 1;
        } else {
            result.missing.push(format!(
                "{}: no log line carrying its trace and span ids",
                attempt.describe()
            ));
        }
    }

    let without_ids: Vec<&LogEntry> = observed
        .logs
        .iter()
        .filter(|e| e.trace_id().is_none() || e.span_id().is_none())
        .collect();
    if !without_ids.is_empty() {
        result.problems.push(format!(
            "{} log line(s) of the task carry no trace_id/span_id, e.g. {}",
            without_ids.len(),
            without_ids
                .iter()
                .take(QUOTED)
                .map(|e| quote_line(e))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let unknown_traces: BTreeSet<_> = observed
        .logs
        .iter()
        .filter_map(LogEntry::trace_id)
        .filter(|id| observed.traces.get(id).and_then(Option::as_ref).is_none())
        .collect();
    for id in &unknown_traces {
        result.problems.push(format!(
            "log lines point at trace {id}, which the trace backend does not have"
        ));
    }

    // Selection by taskId is what found the lines above; repo and prNumber are checked here.
    for selection in &observed.log_selections {
        let spans: BTreeSet<_> = selection
            .entries
            .iter()
            .filter_map(LogEntry::span_id)
            .collect();
        let selector = format!("{}={}", selection.label, quoted(&selection.value));
        let step_spans: BTreeSet<_> = expectation
            .attempts
            .iter()
            .filter(|a| a.expected_attributes.get(&selection.label) == Some(&selection.value))
            .map(|a| a.span_id)
            .collect();
        let absent = step_spans.difference(&spans).count();
        if absent > 0 {
            result.problems.push(format!(
                "selecting logs by {selector} misses the lines of {absent} of {} step attempts",
                step_spans.len()
            ));
        }
    }

    result.set_passed(expected > 0 && result.missing.is_empty() && result.problems.is_empty());
    result.summary = format!(
        "{} of {expected} step attempts have log lines carrying their trace and span ids; {} lines read",
        result.found,
        observed.logs.len()
    );
    result
}
