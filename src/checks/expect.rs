//! What the run records say happened: which step attempts ran, with which outcome and span, and
//! which runs share counter series with them. This is the ground truth the backends are held to.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::outputs::LINK_OUTPUTS;
use super::time::parse_rfc3339;
use crate::conventions::attr;
use crate::otlp::{SpanId, TraceId};
use crate::workflow::record::{NodeStatus, NodeType, Phase, RunRecord, StepTelemetry};

/// How a step attempt ended, in the terms of the metric `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => crate::conventions::metric::OUTCOME_SUCCESS,
            Outcome::Failure => crate::conventions::metric::OUTCOME_FAILURE,
        }
    }
}

/// One executed attempt of one step: a Pod node that finished and carries telemetry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepAttempt {
    pub run: String,
    pub node_id: String,
    pub node_name: String,
    pub agent: String,
    pub step: String,
    pub attempt: u32,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub outcome: Outcome,
    /// Span attributes whose value the run record determines.
    pub expected_attributes: BTreeMap<String, String>,
}

impl StepAttempt {
    /// `agent/step`, the span name the shim promises.
    pub fn span_name(&self) -> String {
        format!("{}/{}", self.agent, self.step)
    }

    /// How reports name the attempt: `clippy/verify #0 (run wf-abc, span 1f2e...)`.
    pub fn describe(&self) -> String {
        format!(
            "{} #{} (run {}, node {}, span {})",
            self.span_name(),
            self.attempt,
            self.run,
            self.node_id,
            self.span_id
        )
    }
}

/// The records' parameters as the metric labels spell them. Workflows name the PR parameter
/// `prNumber` or `pr`; both are read.
pub fn repo_of(record: &RunRecord) -> Option<&str> {
    record.parameter(attr::REPO)
}

pub fn pr_of(record: &RunRecord) -> Option<&str> {
    record
        .parameter(attr::PR_NUMBER)
        .or_else(|| record.parameter("pr"))
}

pub fn task_of(record: &RunRecord) -> Option<&str> {
    record
        .parameter(attr::TASK_ID)
        .or_else(|| record.parameter("task"))
}

/// Every attempt a finished Pod node made: the one the node ended with, and before it those a
/// dead controller interrupted (recorded from outside, each a failure).
pub fn attempts_of(record: &RunRecord) -> Vec<StepAttempt> {
    let mut attempts: Vec<StepAttempt> = record
        .status
        .nodes
        .values()
        .filter(|n| n.node_type == NodeType::Pod)
        .flat_map(|node| {
            let outcome = match node.phase {
                Phase::Succeeded => Some(Outcome::Success),
                Phase::Failed | Phase::Error => Some(Outcome::Failure),
                _ => None,
            };
            let last = outcome.and_then(|o| Some((node.telemetry.as_ref()?, o)));
            node.interrupted
                .iter()
                .map(|t| (t, Outcome::Failure))
                .chain(last)
                .map(|(telemetry, outcome)| attempt(record, node, telemetry, outcome))
                .collect::<Vec<_>>()
        })
        .collect();
    attempts
        .sort_by(|a, b| (&a.run, &a.node_name, a.attempt).cmp(&(&b.run, &b.node_name, b.attempt)));
    attempts
}

fn attempt(
    record: &RunRecord,
    node: &NodeStatus,
    telemetry: &StepTelemetry,
    outcome: Outcome,
) -> StepAttempt {
    let mut expected = BTreeMap::new();
    expected.insert(attr::AGENT.to_string(), telemetry.agent.clone());
    expected.insert(attr::STEP_NAME.to_string(), telemetry.step.clone());
    expected.insert(attr::NODE_ID.to_string(), node.id.clone());
    expected.insert(attr::WORKFLOW_NAME.to_string(), record.name.clone());
    for (key, value) in [
        (attr::REPO, repo_of(record)),
        (attr::PR_NUMBER, pr_of(record)),
        (attr::TASK_ID, task_of(record)),
        (attr::REF, record.parameter(attr::REF)),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            expected.insert(key.to_string(), value.to_string());
        }
    }
    StepAttempt {
        run: record.name.clone(),
        node_id: node.id.clone(),
        node_name: node.name.clone(),
        agent: telemetry.agent.clone(),
        step: telemetry.step.clone(),
        attempt: telemetry.attempt,
        trace_id: telemetry.trace_id,
        span_id: telemetry.span_id,
        outcome,
        expected_attributes: expected,
    }
}

/// Everything the checks need to know from the records.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// The runs being verified.
    pub runs: Vec<RunRecord>,
    /// Their executed step attempts.
    pub attempts: Vec<StepAttempt>,
    /// Pod nodes of those runs that finished without telemetry in the record (run without the
    /// shim, or the shim never started): each is a step whose span cannot exist.
    pub untraced: Vec<String>,
    /// Attempts of every recorded run that added to the runs' counter series since `baseline`
    /// (same repo and PR, empty when a run has none): counters carry no run or task label.
    pub counter_attempts: Vec<StepAttempt>,
    /// Attempts of every recorded run with a verified run's name since `baseline`: the duration
    /// histogram carries `workflowName`, the run's name.
    pub histogram_attempts: Vec<StepAttempt>,
    /// Names of the runs whose attempts the metric checks compare against (the verified runs
    /// and any other recorded run sharing their series since `baseline`).
    pub compared_runs: Vec<String>,
    /// Repo and PR pairs the runs belong to; empty strings for a run without the parameter,
    /// which is what the shim's labels then hold.
    pub scopes: BTreeSet<(String, String)>,
    /// Unix nanoseconds: metrics are compared by what they added since then. The start of the
    /// earliest verified run, moved earlier to the start of any recorded run sharing its series
    /// that was still going then.
    pub baseline: u64,
    /// The time window the runs span, in unix nanoseconds (from `baseline`).
    pub window: (u64, u64),
    /// Per verified run, the link outputs its workflow declares (see [`declared_links`]).
    pub declared_links: BTreeMap<String, BTreeSet<&'static str>>,
    /// Verified runs whose trace was not sampled (`obsctl run --sampler-ratio`): their steps have
    /// no spans by design, so span checks leave them out; metrics and logs still count them.
    pub unsampled_runs: BTreeSet<String>,
}

/// The link outputs (`prHtmlUrl`, `actionsRunUrl`, `previewUrl`) a run's workflow declares: an
/// output parameter with that `globalName`, read from the workflow file the record names (the
/// declarations do not depend on parameter values, so none are given). When the file cannot be
/// read or loaded any more (moved, edited, a compiled-in workflow), the links the run set stand
/// for the declaration.
pub fn declared_links(record: &RunRecord) -> BTreeSet<&'static str> {
    match crate::workflow::load::load(&record.workflow_file, &[]) {
        Ok(loaded) => {
            let globals: BTreeSet<&str> = loaded
                .workflow
                .spec
                .templates
                .iter()
                .flat_map(|t| &t.outputs.parameters)
                .filter_map(|p| p.global_name.as_deref())
                .collect();
            LINK_OUTPUTS
                .into_iter()
                .filter(|name| globals.contains(name))
                .collect()
        }
        Err(_) => LINK_OUTPUTS
            .into_iter()
            .filter(|name| record.output(name).is_some())
            .collect(),
    }
}

fn started(record: &RunRecord) -> Option<u64> {
    record.status.started_at.as_deref().and_then(parse_rfc3339)
}

fn finished(record: &RunRecord) -> Option<u64> {
    record.status.finished_at.as_deref().and_then(parse_rfc3339)
}

/// The counter scope of a run: its repo and PR as the metric labels hold them.
pub fn scope_of(record: &RunRecord) -> (String, String) {
    (
        repo_of(record).unwrap_or_default().to_string(),
        pr_of(record).unwrap_or_default().to_string(),
    )
}

impl Expectation {
    /// `runs` are verified; `all` are every recorded run, for counters shared between runs.
    pub fn new(runs: Vec<RunRecord>, all: &[RunRecord]) -> Self {
        let attempts: Vec<StepAttempt> = runs.iter().flat_map(attempts_of).collect();
        let untraced = runs
            .iter()
            .flat_map(|r| {
                r.status.nodes.values().filter_map(move |n| {
                    let ran = matches!(n.phase, Phase::Succeeded | Phase::Failed | Phase::Error);
                    (n.node_type == NodeType::Pod && ran && n.telemetry.is_none()).then(|| {
                        format!(
                            "{} (run {}, node {}): ran without telemetry in the run record",
                            n.display_name, r.name, n.id
                        )
                    })
                })
            })
            .collect();
        let scopes: BTreeSet<(String, String)> = runs.iter().map(scope_of).collect();
        let declared_links = runs
            .iter()
            .map(|r| (r.name.clone(), declared_links(r)))
            .collect();
        let verified: BTreeSet<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        // The verified runs themselves always count, even if `all` was read before they finished.
        let others: Vec<&RunRecord> = all
            .iter()
            .filter(|r| !verified.contains(r.name.as_str()))
            .collect();
        let shares_counters = |r: &RunRecord| scopes.contains(&scope_of(r));
        let shares_histogram = |r: &RunRecord| verified.contains(r.name.as_str());
        let sharing: Vec<&RunRecord> = others
            .iter()
            .copied()
            .filter(|r| shares_counters(r) || shares_histogram(r))
            .collect();
        let now = crate::encode::now_unix_nanos();
        let mut baseline = runs.iter().filter_map(started).min().unwrap_or(now);
        // A run sharing series that was still going at the baseline added to them on both sides
        // of it: start before it (repeatedly, as its start may fall inside another such run).
        while let Some(earlier) = sharing
            .iter()
            .filter(|r| finished(r).is_none_or(|f| f >= baseline))
            .filter_map(|r| started(r))
            .filter(|s| *s < baseline)
            .min()
        {
            baseline = earlier;
        }
        let since_baseline: Vec<&RunRecord> = sharing
            .into_iter()
            .filter(|r| started(r).is_some_and(|s| s >= baseline))
            .collect();
        let counter_attempts = runs
            .iter()
            .chain(
                since_baseline
                    .iter()
                    .copied()
                    .filter(|r| shares_counters(r)),
            )
            .flat_map(attempts_of)
            .collect();
        let histogram_attempts = runs
            .iter()
            .chain(
                since_baseline
                    .iter()
                    .copied()
                    .filter(|r| shares_histogram(r)),
            )
            .flat_map(attempts_of)
            .collect();
        let mut compared_runs: Vec<String> = runs
            .iter()
            .chain(since_baseline.iter().copied())
            .map(|r| r.name.clone())
            .collect();
        compared_runs.sort();
        compared_runs.dedup();
        let end = runs
            .iter()
            .chain(since_baseline.iter().copied())
            .flat_map(|r| [started(r), finished(r)])
            .flatten()
            .max()
            .unwrap_or(now);
        let unsampled_runs = runs
            .iter()
            .filter(|r| !r.traced())
            .map(|r| r.name.clone())
            .collect();
        Self {
            runs,
            attempts,
            untraced,
            counter_attempts,
            histogram_attempts,
            compared_runs,
            scopes,
            baseline,
            window: (baseline, end.max(baseline)),
            declared_links,
            unsampled_runs,
        }
    }

    /// The attempts whose run was sampled: the ones that must have a span.
    pub fn traced_attempts(&self) -> impl Iterator<Item = &StepAttempt> {
        self.attempts
            .iter()
            .filter(|a| !self.unsampled_runs.contains(&a.run))
    }

    /// The distinct traces the verified, sampled runs wrote to.
    pub fn trace_ids(&self) -> BTreeSet<TraceId> {
        self.runs
            .iter()
            .filter(|r| r.traced())
            .map(|r| r.trace_id)
            .chain(self.traced_attempts().map(|a| a.trace_id))
            .collect()
    }
}
