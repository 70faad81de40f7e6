//! Span checks: every executed step attempt has exactly the span the shim promises (name,
//! required attributes, status matching the outcome), and no span points at a missing parent.
//! Spans are de-duplicated by span id first: OTLP delivery prefers duplicates to loss.

use std::collections::{BTreeMap, BTreeSet};

use super::collect::Observed;
use super::expect::{Expectation, Outcome, StepAttempt};
use super::{CheckId, CheckResult};
use crate::backends::tempo::{Span, StatusCode};
use crate::conventions::attr;
use crate::otlp::{SpanId, TraceId};
use crate::ui::quoted;

/// The spans of one trace, first copy of each span id kept, and the ids seen more than once.
pub fn dedup(spans: &[Span]) -> (Vec<&Span>, BTreeMap<SpanId, usize>) {
    let mut seen: BTreeMap<SpanId, usize> = BTreeMap::new();
    let mut unique = Vec::new();
    for span in spans {
        let count = seen.entry(span.span_id).or_insert(0);
        if *count == 0 {
            unique.push(span);
        }
        *count += 1;
    }
    seen.retain(|_, n| *n > 1);
    (unique, seen)
}

/// A trace's spans by id (first copy of each) and the ids received more than once.
pub struct SpanIndex<'a> {
    pub by_id: BTreeMap<SpanId, &'a Span>,
    pub duplicates: BTreeMap<SpanId, usize>,
}

impl<'a> SpanIndex<'a> {
    pub fn new(spans: &'a [Span]) -> Self {
        let (unique, duplicates) = dedup(spans);
        Self {
            by_id: unique.into_iter().map(|s| (s.span_id, s)).collect(),
            duplicates,
        }
    }
}

fn spans_of(observed: &Observed, trace: TraceId) -> &[Span] {
    observed
        .traces
        .get(&trace)
        .and_then(Option::as_ref)
        .map_or(&[], |t| t.spans.as_slice())
}

fn status_name(code: StatusCode) -> &'static str {
    match code {
        StatusCode::Unset => "UNSET",
        StatusCode::Ok => "OK",
        StatusCode::Error => "ERROR",
    }
}

/// What is wrong with `span` as the span of `attempt`, each fault naming the attribute and what
/// was expected and found; empty when it is right. A required attribute whose value the run does
/// not determine (a workflow without a `repo` parameter) may be empty: the shim has nothing to
/// put there.
pub fn span_faults(attempt: &StepAttempt, span: &Span) -> Vec<String> {
    let mut faults = Vec::new();
    let name = attempt.span_name();
    if span.name != name {
        faults.push(format!(
            "name is {}, expected {}",
            quoted(&span.name),
            quoted(&name)
        ));
    }
    for key in attr::REQUIRED {
        let want = attempt.expected_attributes.get(key);
        match (span.attribute(key).filter(|v| !v.is_empty()), want) {
            (None, Some(want)) => faults.push(format!(
                "attribute {key} missing, expected {}",
                quoted(want)
            )),
            (Some(got), Some(want)) if got != want => faults.push(format!(
                "attribute {key} is {}, expected {}",
                quoted(got),
                quoted(want)
            )),
            _ => {}
        }
    }
    let status_ok = match attempt.outcome {
        Outcome::Failure => span.status.code == StatusCode::Error,
        Outcome::Success => span.status.code != StatusCode::Error,
    };
    if !status_ok {
        faults.push(format!(
            "status is {}, expected {} since the step {}",
            status_name(span.status.code),
            match attempt.outcome {
                Outcome::Success => "OK or UNSET",
                Outcome::Failure => "ERROR",
            },
            match attempt.outcome {
                Outcome::Success => "succeeded",
                Outcome::Failure => "failed",
            }
        ));
    }
    faults
}

pub fn span_coverage(
    expectation: &Expectation,
    observed: &Observed,
    min_coverage: f64,
) -> CheckResult {
    let traced: Vec<&StepAttempt> = expectation.traced_attempts().collect();
    let not_sampled = expectation.attempts.len() - traced.len();
    let expected = (traced.len() + expectation.untraced.len()) as u64;
    let mut result = CheckResult::new(CheckId::SpanCoverage, expected, 0);
    result.missing.extend(expectation.untraced.iter().cloned());
    // One index per trace, built once: attempts look their span up by id.
    let mut indexes: BTreeMap<TraceId, SpanIndex> = BTreeMap::new();
    let mut duplicated: BTreeSet<(TraceId, SpanId)> = BTreeSet::new();
    for attempt in traced {
        let index = indexes
            .entry(attempt.trace_id)
            .or_insert_with(|| SpanIndex::new(spans_of(observed, attempt.trace_id)));
        if let Some(n) = index.duplicates.get(&attempt.span_id)
            && duplicated.insert((attempt.trace_id, attempt.span_id))
        {
            result
                .duplicated
                .push(format!("{}: received {n} times", attempt.describe()));
        }
        match index.by_id.get(&attempt.span_id) {
            None => result
                .missing
                .push(format!("{}: no span with this id", attempt.describe())),
            Some(span) => {
                let faults = span_faults(attempt, span);
                if faults.is_empty() {
                    result.found += 1;
                } else {
                    // The span exists: say what is wrong with it, not just that it is missing.
                    result.missing.push(format!(
                        "{}: span present but {}",
                        attempt.describe(),
                        faults.join("; ")
                    ));
                }
            }
        }
    }
    let coverage = if expected == 0 {
        0.0
    } else {
        result.found as f64 / expected as f64
    };
    // Runs left unsampled on purpose are no coverage failure, but a verification where no run
    // was sampled has nothing to judge spans by.
    result.set_passed(expected > 0 && coverage >= min_coverage);
    let unsampled = if expectation.unsampled_runs.is_empty() {
        String::new()
    } else {
        format!(
            "; {} run(s) not sampled ({not_sampled} step attempts without spans by design)",
            expectation.unsampled_runs.len()
        )
    };
    result.summary = if expected == 0 && expectation.attempts.is_empty() {
        "no executed step attempts in the selected runs".to_string()
    } else if expected == 0 {
        format!("no sampled run among the selected runs{unsampled}")
    } else {
        format!(
            "{} of {expected} step attempts of sampled runs have a correct span ({:.1}%, threshold {:.1}%){unsampled}",
            result.found,
            coverage * 100.0,
            min_coverage * 100.0
        )
    };
    result
}

pub fn no_orphans(expectation: &Expectation, observed: &Observed) -> CheckResult {
    let mut result = CheckResult::new(CheckId::NoOrphans, 0, 0);
    let mut absent_traces = Vec::new();
    for trace_id in expectation.trace_ids() {
        if spans_of(observed, trace_id).is_empty() {
            absent_traces.push(trace_id);
            continue;
        }
        let (unique, dups) = dedup(spans_of(observed, trace_id));
        let ids: BTreeSet<SpanId> = unique.iter().map(|s| s.span_id).collect();
        for span in &unique {
            let Some(parent) = span.parent_span_id else {
                continue;
            };
            result.expected += 1;
            if ids.contains(&parent) {
                result.found += 1;
            } else {
                result.missing.push(format!(
                    "span {} {} in trace {trace_id}: parent {parent} is not in the trace",
                    span.span_id,
                    quoted(&span.name)
                ));
            }
        }
        for (span_id, n) in dups {
            result.duplicated.push(format!(
                "span {span_id} in trace {trace_id}: received {n} times"
            ));
        }
    }
    for trace_id in &absent_traces {
        result
            .problems
            .push(format!("trace {trace_id} not found in the trace backend"));
    }
    result.set_passed(result.missing.is_empty() && absent_traces.is_empty());
    result.summary = format!(
        "{} of {} child spans have their parent in the trace{}",
        result.found,
        result.expected,
        if result.duplicated.is_empty() {
            String::new()
        } else {
            format!(
                "; {} span ids received more than once (counted once)",
                result.duplicated.len()
            )
        }
    );
    result
}
