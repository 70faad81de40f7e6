//! Metric checks: what the success and fail counters added since the runs' baseline equals what
//! really ran (per agent and step) and the duration histogram's `_count` agrees; exemplars exist and lead to real traces;
//! each step metric stays within its series budget.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::collect::{Observed, added, count, counter_totals, expected_counts};
use super::expect::Expectation;
use super::{CheckId, CheckResult};
use crate::conventions::{attr, metric};
use crate::otlp::{SpanId, TraceId};

/// Series one step metric may have. Counters carry agent, repo, prNumber and stepName; the
/// histogram adds taskId, workflowName and outcome. A dev stack with a few dozen active PRs,
/// tasks and steps stays well below this; crossing it means an unbounded label leaked in.
pub const DEFAULT_SERIES_BUDGET: u64 = 1000;

fn compare(result: &mut CheckResult, what: &str, key: &str, expected: u64, found: f64) {
    result.expected += expected;
    result.found += found.max(0.0) as u64;
    if found < expected as f64 {
        result.missing.push(format!(
            "{what} {key}: expected {expected}, found {}",
            count(found)
        ));
    } else if found > expected as f64 {
        result.duplicated.push(format!(
            "{what} {key}: expected {expected}, found {}",
            count(found)
        ));
    }
}

/// One agent and step's counters: what the records expect and what the success and fail
/// counters added since the baseline. Counter parity judges these; the HTML report draws them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepParity {
    pub agent: String,
    pub step: String,
    pub expected_success: u64,
    pub found_success: f64,
    pub expected_fail: u64,
    pub found_fail: f64,
}

/// Every agent and step either the records or the counters name, in order.
pub fn parity_by_step(expectation: &Expectation, observed: &Observed) -> Vec<StepParity> {
    let expected = expected_counts(&expectation.counter_attempts);
    let success = counter_totals(&added(&observed.success_counters, &observed.baseline));
    let fail = counter_totals(&added(&observed.fail_counters, &observed.baseline));
    let mut keys: Vec<&(String, String)> = expected.keys().collect();
    keys.extend(success.keys().chain(fail.keys()));
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|key| {
            let (expected_success, expected_fail) = expected.get(key).copied().unwrap_or((0, 0));
            StepParity {
                agent: key.0.clone(),
                step: key.1.clone(),
                expected_success,
                found_success: success.get(key).copied().unwrap_or(0.0),
                expected_fail,
                found_fail: fail.get(key).copied().unwrap_or(0.0),
            }
        })
        .collect()
}

pub fn counter_parity(expectation: &Expectation, observed: &Observed) -> CheckResult {
    let mut result = CheckResult::new(CheckId::CounterParity, 0, 0);
    for step in parity_by_step(expectation, observed) {
        let name = format!("{}/{}", step.agent, step.step);
        compare(
            &mut result,
            metric::STEP_SUCCESS_TOTAL,
            &name,
            step.expected_success,
            step.found_success,
        );
        compare(
            &mut result,
            metric::STEP_FAIL_TOTAL,
            &name,
            step.expected_fail,
            step.found_fail,
        );
    }

    let mut want_hist: BTreeMap<(String, String, &str), u64> = BTreeMap::new();
    for a in &expectation.histogram_attempts {
        *want_hist
            .entry((a.agent.clone(), a.step.clone(), a.outcome.label()))
            .or_insert(0) += 1;
    }
    let mut got_hist: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for s in &added(&observed.histogram_counts, &observed.baseline) {
        let key = (
            s.label(attr::AGENT).unwrap_or_default().to_string(),
            s.label(attr::STEP_NAME).unwrap_or_default().to_string(),
            s.label(metric::OUTCOME).unwrap_or_default().to_string(),
        );
        *got_hist.entry(key).or_insert(0.0) += s.value;
    }
    let mut hist_keys: Vec<(String, String, String)> = want_hist
        .keys()
        .map(|(a, s, o)| (a.clone(), s.clone(), o.to_string()))
        .chain(got_hist.keys().cloned())
        .collect();
    hist_keys.sort();
    hist_keys.dedup();
    let count_name = format!("{}_count", metric::STEP_DURATION);
    for (agent, step, outcome) in hist_keys {
        let want = want_hist
            .get(&(agent.clone(), step.clone(), outcome.as_str()))
            .copied()
            .unwrap_or(0);
        let got = got_hist
            .get(&(agent.clone(), step.clone(), outcome.clone()))
            .copied()
            .unwrap_or(0.0);
        compare(
            &mut result,
            &count_name,
            &format!("{agent}/{step} outcome={outcome}"),
            want,
            got,
        );
    }
    result.set_passed(result.missing.is_empty() && result.duplicated.is_empty());
    let runs = plural(expectation.compared_runs.len(), "run");
    result.summary = if result.passed {
        format!(
            "the {} recorded step attempts of {runs} are counted once in the counters and the \
             histogram since the baseline",
            expectation.counter_attempts.len()
        )
    } else {
        let mut parts = Vec::new();
        if !result.missing.is_empty() {
            parts.push(format!(
                "{} short of the records",
                plural(result.missing.len(), "series")
            ));
        }
        if !result.duplicated.is_empty() {
            parts.push(format!(
                "{} over (counted twice, or another run shares the series?)",
                plural(result.duplicated.len(), "series")
            ));
        }
        format!("{} (compared with {runs})", parts.join(", "))
    };
    result
}

pub fn exemplars(expectation: &Expectation, observed: &Observed) -> CheckResult {
    let mut result = CheckResult::new(CheckId::Exemplars, observed.exemplars.len() as u64, 0);
    let mut span_ids: BTreeMap<TraceId, BTreeSet<SpanId>> = BTreeMap::new();
    for e in &observed.exemplars {
        let Some(trace_id) = e.trace_id() else {
            result.problems.push(format!(
                "exemplar on {} (value {}) carries no trace_id/traceID label",
                e.series_labels
                    .get("__name__")
                    .map_or("a series without a name", String::as_str),
                e.value
            ));
            continue;
        };
        let trace = observed.traces.get(&trace_id).and_then(Option::as_ref);
        match trace {
            None => result.missing.push(format!(
                "exemplar (value {}) points at trace {trace_id}, which the trace backend does not have",
                e.value
            )),
            Some(trace) => match e.span_id() {
                Some(span_id)
                    if !span_ids
                        .entry(trace_id)
                        .or_insert_with(|| trace.spans.iter().map(|s| s.span_id).collect())
                        .contains(&span_id) =>
                {
                    result.missing.push(format!(
                        "exemplar (value {}) points at span {span_id}, not in trace {trace_id}",
                        e.value
                    ))
                }
                _ => result.found += 1,
            },
        }
    }
    let has_any = !observed.exemplars.is_empty();
    // Exemplars are attached only to the steps of sampled runs.
    let needed = expectation.traced_attempts().next().is_some();
    result.set_passed(
        (has_any || !needed) && result.missing.is_empty() && result.problems.is_empty(),
    );
    result.summary = if !has_any && needed {
        format!(
            "no exemplars on {} for {} {}",
            metric::STEP_DURATION,
            if expectation.runs.len() == 1 {
                "run"
            } else {
                "runs"
            },
            expectation
                .runs
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "{} of {} exemplars lead to a trace in the trace backend",
            result.found, result.expected
        )
    };
    result
}

/// `1 run`, `3 runs`, `2 series`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 || noun.ends_with('s') {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

pub fn cardinality(observed: &Observed, budget: u64) -> CheckResult {
    let worst = observed
        .series
        .iter()
        .map(|s| s.series as u64)
        .max()
        .unwrap_or(0);
    let mut result = CheckResult::new(CheckId::Cardinality, budget, worst);
    for s in &observed.series {
        if s.series as u64 > budget {
            result.problems.push(format!(
                "{} has {} series, over the budget of {budget}",
                s.metric, s.series
            ));
        }
    }
    result.set_passed(result.problems.is_empty());
    result.summary = format!(
        "largest step metric has {worst} series (budget {budget}): {}",
        observed
            .series
            .iter()
            .map(|s| format!("{} {}", s.metric, s.series))
            .collect::<Vec<_>>()
            .join(", ")
    );
    result
}
