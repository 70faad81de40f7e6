//! Reads back from the backends what the checks compare against, polling each one until it holds
//! at least what the run records promise or the deadline passes. Telemetry arrives late (batching,
//! Tempo's idle flush), so one query is not enough and a fixed sleep is a guess.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::expect::{Expectation, Outcome};
use crate::backends::loki::{Direction, LogEntry, quote};
use crate::backends::prometheus::{Exemplar, Sample};
use crate::backends::tempo::Trace;
use crate::backends::{BackendError, Backends};
use crate::conventions::{attr, metric};
use crate::otlp::{SpanId, TraceId};

/// Most log lines read per query; Loki's default `max_entries_limit_per_query`.
pub const LOG_LIMIT: usize = 5000;
/// Slack around the runs' window: clocks differ and exporters batch.
const WINDOW_SLACK_NS: u64 = 5 * 60 * 1_000_000_000;
/// The key OTLP log ingestion gives a record's trace id (Loki structured metadata).
const LOG_TRACE_ID: &str = "trace_id";
const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(100);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct CollectOptions {
    pub timeout: Duration,
    /// `service_name` stream label the step logs carry (Loki's index label for `service.name`).
    pub service_name: String,
}

/// Log lines returned for one label filter (`| repo="..."`).
#[derive(Debug, Clone, Serialize)]
pub struct LogSelection {
    pub label: String,
    pub value: String,
    pub entries: Vec<LogEntry>,
}

/// How many series one metric has.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesCount {
    pub metric: String,
    pub series: usize,
}

/// What the backends held when collection stopped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    /// Every trace looked up: the runs' traces and any that exemplars or logs point at;
    /// `None` when the trace backend does not know the id.
    pub traces: BTreeMap<TraceId, Option<Trace>>,
    pub success_counters: Vec<Sample>,
    pub fail_counters: Vec<Sample>,
    /// `agent_step_duration_ms_count` series of the runs (selected by `workflowName`).
    pub histogram_counts: Vec<Sample>,
    /// The same counter and histogram selectors at the expectation's baseline time: parity
    /// compares what was added since, not lifetime totals.
    pub baseline: Vec<Sample>,
    pub exemplars: Vec<Exemplar>,
    /// Step logs of the runs: selected by `taskId`, or by the run's trace id when it has none.
    pub logs: Vec<LogEntry>,
    /// Step logs selected by `repo` and by `prNumber`.
    pub log_selections: Vec<LogSelection>,
    pub series: Vec<SeriesCount>,
}

/// How the wait went, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct WaitReport {
    pub polls: u32,
    pub elapsed_ms: u64,
    /// Whether every backend reached the expected counts before the timeout.
    pub complete: bool,
    /// What was still missing when the timeout expired.
    pub outstanding: Vec<String>,
}

/// The parts of the wait, each done once its backend holds what is expected.
#[derive(Default)]
struct Progress {
    traces: Option<String>,
    counters: Option<String>,
    exemplars: Option<String>,
    logs: Option<String>,
}

impl Progress {
    fn outstanding(&self) -> Vec<String> {
        [&self.traces, &self.counters, &self.exemplars, &self.logs]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

pub async fn collect(
    backends: &Backends,
    expectation: &Expectation,
    options: &CollectOptions,
) -> Result<(Observed, WaitReport), BackendError> {
    let started = Instant::now();
    let deadline = started + options.timeout;
    let mut observed = Observed::default();
    let mut polls = 0;
    let mut interval = FIRST_POLL_INTERVAL;
    let mut progress;
    let (mut traces_done, mut counters_done, mut exemplars_done, mut logs_done) =
        (false, false, false, false);
    let mut last_transient: Option<BackendError>;
    let mut wait = crate::ui::Wait::new("verify", options.timeout);
    loop {
        polls += 1;
        progress = Progress::default();
        last_transient = None;
        if !traces_done {
            match settle(fetch_traces(backends, expectation, &mut observed).await)? {
                Some(e) => (progress.traces, last_transient) = (Some(e.to_string()), Some(e)),
                None => {
                    progress.traces = missing_spans(expectation, &observed);
                    traces_done = progress.traces.is_none();
                }
            }
        }
        if !counters_done {
            match settle(fetch_counters(backends, expectation, &mut observed).await)? {
                Some(e) => (progress.counters, last_transient) = (Some(e.to_string()), Some(e)),
                None => {
                    progress.counters = missing_counts(expectation, &observed);
                    counters_done = progress.counters.is_none();
                }
            }
        }
        if !exemplars_done {
            match settle(fetch_exemplars(backends, expectation, &mut observed).await)? {
                Some(e) => (progress.exemplars, last_transient) = (Some(e.to_string()), Some(e)),
                None => {
                    exemplars_done = !observed.exemplars.is_empty()
                        || expectation.traced_attempts().next().is_none();
                    if !exemplars_done {
                        progress.exemplars = Some(format!(
                            "Prometheus: no exemplar yet on {} for run(s) {}",
                            metric::STEP_DURATION,
                            join(expectation.runs.iter().map(|r| &r.name))
                        ));
                    }
                }
            }
        }
        if !logs_done {
            match settle(fetch_task_logs(backends, expectation, options, &mut observed).await)? {
                Some(e) => (progress.logs, last_transient) = (Some(e.to_string()), Some(e)),
                None => {
                    progress.logs = missing_logs(expectation, &observed);
                    logs_done = progress.logs.is_none();
                }
            }
        }
        let now = Instant::now();
        if (traces_done && counters_done && exemplars_done && logs_done) || now >= deadline {
            break;
        }
        let outstanding = progress.outstanding().join("; ");
        wait.update(&outstanding);
        crate::ui::debug(
            1,
            format!("verify: poll {polls}, still waiting: {outstanding}"),
        );
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(MAX_POLL_INTERVAL);
    }
    drop(wait);
    // A backend still failing when time ran out could not be read: that is "could not run",
    // not a failed check.
    if let Some(e) = last_transient {
        return Err(e);
    }
    // Once the wait is over: the pivots (logs and exemplars to traces), label selections and
    // series counts, read once.
    fetch_referenced_traces(backends, &mut observed).await?;
    fetch_log_selections(backends, expectation, options, &mut observed).await?;
    fetch_series_counts(backends, &mut observed).await?;
    let outstanding = progress.outstanding();
    let report = WaitReport {
        polls,
        elapsed_ms: started.elapsed().as_millis() as u64,
        complete: outstanding.is_empty(),
        outstanding,
    };
    Ok((observed, report))
}

/// A server error (5xx, 429) while waiting is a backend not ready yet: poll again. Anything
/// else (unreachable, a rejected query, a malformed answer) stops at once.
fn settle(result: Result<(), BackendError>) -> Result<Option<BackendError>, BackendError> {
    match result {
        Ok(()) => Ok(None),
        Err(e @ BackendError::Status { status, .. }) if status >= 500 || status == 429 => {
            Ok(Some(e))
        }
        Err(e) => Err(e),
    }
}

fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn label_selector(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join(",")
}

async fn fetch_traces(
    backends: &Backends,
    expectation: &Expectation,
    observed: &mut Observed,
) -> Result<(), BackendError> {
    for id in expectation.trace_ids() {
        let trace = backends.tempo.trace(id).await?;
        observed.traces.insert(id, trace);
    }
    Ok(())
}

fn missing_spans(expectation: &Expectation, observed: &Observed) -> Option<String> {
    let seen: BTreeSet<(TraceId, SpanId)> = observed
        .traces
        .values()
        .flatten()
        .flat_map(|t| t.spans.iter().map(|s| (s.trace_id, s.span_id)))
        .collect();
    let missing: Vec<String> = expectation
        .traced_attempts()
        .filter(|a| !seen.contains(&(a.trace_id, a.span_id)))
        .map(|a| a.span_name())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "Tempo: {} of {} step spans not found ({})",
            missing.len(),
            expectation.traced_attempts().count(),
            missing.join(", ")
        )
    })
}

/// Which of the parity metrics a selector reads.
#[derive(Debug, Clone, Copy)]
enum Counted {
    Success,
    Fail,
    Histogram,
}

/// The counter and histogram selectors of the runs: counters by repo and PR (empty values
/// select series without the label, as PromQL defines), the histogram by run name.
fn metric_selectors(expectation: &Expectation) -> Vec<(Counted, String)> {
    let mut selectors = Vec::new();
    for (repo, pr) in &expectation.scopes {
        let selector = label_selector(&[(attr::REPO, repo), (attr::PR_NUMBER, pr)]);
        selectors.push((
            Counted::Success,
            format!("{}{{{selector}}}", metric::STEP_SUCCESS_TOTAL),
        ));
        selectors.push((
            Counted::Fail,
            format!("{}{{{selector}}}", metric::STEP_FAIL_TOTAL),
        ));
    }
    for run in &expectation.runs {
        selectors.push((
            Counted::Histogram,
            format!(
                "{}_count{{{}}}",
                metric::STEP_DURATION,
                label_selector(&[(attr::WORKFLOW_NAME, &run.name)])
            ),
        ));
    }
    selectors
}

async fn fetch_counters(
    backends: &Backends,
    expectation: &Expectation,
    observed: &mut Observed,
) -> Result<(), BackendError> {
    observed.success_counters.clear();
    observed.fail_counters.clear();
    observed.histogram_counts.clear();
    observed.baseline.clear();
    let baseline = expectation.baseline as f64 / 1e9;
    for (counted, selector) in metric_selectors(expectation) {
        let now = backends.prometheus.query(&selector, None).await?;
        match counted {
            Counted::Success => observed.success_counters.extend(now),
            Counted::Fail => observed.fail_counters.extend(now),
            Counted::Histogram => observed.histogram_counts.extend(now),
        }
        observed
            .baseline
            .extend(backends.prometheus.query(&selector, Some(baseline)).await?);
    }
    Ok(())
}

/// What each series added since the baseline: its value minus its value then (a series that did
/// not exist then added all of it). A value below the baseline is a counter reset, after which
/// the whole value is new, as Prometheus' `increase()` takes it.
pub fn added(now: &[Sample], baseline: &[Sample]) -> Vec<Sample> {
    let before: BTreeMap<&BTreeMap<String, String>, f64> =
        baseline.iter().map(|s| (&s.labels, s.value)).collect();
    now.iter()
        .map(|s| {
            let was = before.get(&s.labels).copied().unwrap_or(0.0);
            Sample {
                value: if s.value >= was {
                    s.value - was
                } else {
                    s.value
                },
                ..s.clone()
            }
        })
        .collect()
}

/// Sums of counter values by (agent, stepName).
pub fn counter_totals(samples: &[Sample]) -> BTreeMap<(String, String), f64> {
    let mut totals = BTreeMap::new();
    for s in samples {
        let key = (
            s.label(attr::AGENT).unwrap_or_default().to_string(),
            s.label(attr::STEP_NAME).unwrap_or_default().to_string(),
        );
        *totals.entry(key).or_insert(0.0) += s.value;
    }
    totals
}

/// A metric count as people read it: whole numbers without a fraction, and never `-0` (a sum
/// of negative zeros, or a backend answering "-0", is still nothing).
pub fn count(value: f64) -> String {
    if value == 0.0 {
        "0".to_string()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        value.to_string()
    }
}

/// Expected successes and failures by (agent, step).
pub fn expected_counts(
    attempts: &[super::expect::StepAttempt],
) -> BTreeMap<(String, String), (u64, u64)> {
    let mut counts = BTreeMap::new();
    for a in attempts {
        let entry = counts
            .entry((a.agent.clone(), a.step.clone()))
            .or_insert((0, 0));
        match a.outcome {
            Outcome::Success => entry.0 += 1,
            Outcome::Failure => entry.1 += 1,
        }
    }
    counts
}

fn missing_counts(expectation: &Expectation, observed: &Observed) -> Option<String> {
    let success = counter_totals(&added(&observed.success_counters, &observed.baseline));
    let fail = counter_totals(&added(&observed.fail_counters, &observed.baseline));
    let mut short = Vec::new();
    for (key, (s, f)) in expected_counts(&expectation.counter_attempts) {
        let found_s = success.get(&key).copied().unwrap_or(0.0);
        let found_f = fail.get(&key).copied().unwrap_or(0.0);
        if found_s < s as f64 || found_f < f as f64 {
            short.push(format!(
                "{}/{} success {}/{s}, fail {}/{f}",
                key.0,
                key.1,
                count(found_s),
                count(found_f)
            ));
        }
    }
    let histogram: f64 = added(&observed.histogram_counts, &observed.baseline)
        .iter()
        .map(|s| s.value)
        .sum();
    if histogram < expectation.histogram_attempts.len() as f64 {
        short.push(format!(
            "{}_count {}/{}",
            metric::STEP_DURATION,
            count(histogram),
            expectation.histogram_attempts.len()
        ));
    }
    (!short.is_empty()).then(|| format!("Prometheus: counts short: {}", short.join("; ")))
}

async fn fetch_exemplars(
    backends: &Backends,
    expectation: &Expectation,
    observed: &mut Observed,
) -> Result<(), BackendError> {
    let (start, end) = query_window(expectation);
    let (start, end) = (start as f64 / 1e9, end as f64 / 1e9);
    observed.exemplars.clear();
    for run in &expectation.runs {
        let selector = label_selector(&[(attr::WORKFLOW_NAME, &run.name)]);
        // Prometheus keeps exemplars on the `_bucket` series; some stores keep them on the
        // histogram's own name.
        for name in [
            format!("{}_bucket", metric::STEP_DURATION),
            metric::STEP_DURATION.to_string(),
        ] {
            let found = backends
                .prometheus
                .query_exemplars(&format!("{name}{{{selector}}}"), start, end)
                .await?;
            if !found.is_empty() {
                observed.exemplars.extend(found);
                break;
            }
        }
    }
    Ok(())
}

fn query_window(expectation: &Expectation) -> (u64, u64) {
    let now = crate::encode::now_unix_nanos();
    (
        expectation.window.0.saturating_sub(WINDOW_SLACK_NS),
        expectation.window.1.max(now) + WINDOW_SLACK_NS,
    )
}

fn log_stream(options: &CollectOptions, label: &str, value: &str) -> String {
    format!(
        "{{service_name={}}} | {label}={}",
        quote(&options.service_name),
        quote(value)
    )
}

/// One query per task, or per trace for a run without a task: `taskId=""` would select every
/// line of every run without one.
fn task_log_queries(expectation: &Expectation, options: &CollectOptions) -> BTreeSet<String> {
    expectation
        .runs
        .iter()
        .map(
            |run| match super::expect::task_of(run).filter(|t| !t.is_empty()) {
                Some(task) => log_stream(options, attr::TASK_ID, task),
                None => log_stream(options, LOG_TRACE_ID, &run.trace_id.to_hex()),
            },
        )
        .collect()
}

async fn fetch_task_logs(
    backends: &Backends,
    expectation: &Expectation,
    options: &CollectOptions,
    observed: &mut Observed,
) -> Result<(), BackendError> {
    let (start, end) = query_window(expectation);
    observed.logs.clear();
    for query in task_log_queries(expectation, options) {
        observed.logs.extend(
            backends
                .loki
                .query_range(&query, start, end, LOG_LIMIT, Direction::Forward)
                .await?,
        );
    }
    Ok(())
}

fn missing_logs(expectation: &Expectation, observed: &Observed) -> Option<String> {
    let seen: BTreeSet<_> = observed.logs.iter().filter_map(LogEntry::span_id).collect();
    let missing: Vec<String> = expectation
        .attempts
        .iter()
        .filter(|a| !seen.contains(&a.span_id))
        .map(|a| a.span_name())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "Loki: no log line with the span id of {} of {} step attempts ({})",
            missing.len(),
            expectation.attempts.len(),
            missing.join(", ")
        )
    })
}

async fn fetch_log_selections(
    backends: &Backends,
    expectation: &Expectation,
    options: &CollectOptions,
    observed: &mut Observed,
) -> Result<(), BackendError> {
    let (start, end) = query_window(expectation);
    observed.log_selections.clear();
    // A run without the parameter has nothing to select by.
    let repos: BTreeSet<&String> = expectation
        .scopes
        .iter()
        .map(|(r, _)| r)
        .filter(|r| !r.is_empty())
        .collect();
    let prs: BTreeSet<&String> = expectation
        .scopes
        .iter()
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
        .collect();
    let selections = repos
        .into_iter()
        .map(|r| (attr::REPO, r))
        .chain(prs.into_iter().map(|p| (attr::PR_NUMBER, p)));
    for (label, value) in selections {
        let query = log_stream(options, label, value);
        let entries = backends
            .loki
            .query_range(&query, start, end, LOG_LIMIT, Direction::Forward)
            .await?;
        observed.log_selections.push(LogSelection {
            label: label.to_string(),
            value: value.clone(),
            entries,
        });
    }
    Ok(())
}

/// Looks up the traces that exemplars and log lines point at and that are not yet known.
async fn fetch_referenced_traces(
    backends: &Backends,
    observed: &mut Observed,
) -> Result<(), BackendError> {
    let referenced: BTreeSet<TraceId> = observed
        .exemplars
        .iter()
        .filter_map(Exemplar::trace_id)
        .chain(observed.logs.iter().filter_map(LogEntry::trace_id))
        .filter(|id| !observed.traces.contains_key(id))
        .collect();
    for id in referenced {
        let trace = backends.tempo.trace(id).await?;
        observed.traces.insert(id, trace);
    }
    Ok(())
}

/// Series per step metric. `count()` is cheap on a real Prometheus; a backend that does not
/// take it gets the plain selector, counted here.
async fn fetch_series_counts(
    backends: &Backends,
    observed: &mut Observed,
) -> Result<(), BackendError> {
    observed.series.clear();
    for name in [
        metric::STEP_SUCCESS_TOTAL.to_string(),
        metric::STEP_FAIL_TOTAL.to_string(),
        format!("{}_count", metric::STEP_DURATION),
    ] {
        let series = match backends
            .prometheus
            .query(&format!("count({name})"), None)
            .await
        {
            Ok(samples) => samples.first().map_or(0, |s| s.value as usize),
            Err(BackendError::Query { .. }) => backends.prometheus.query(&name, None).await?.len(),
            Err(e) => return Err(e),
        };
        observed.series.push(SeriesCount {
            metric: name,
            series,
        });
    }
    Ok(())
}
