//! What the run records say happened: which step attempts ran, with which outcome and span, and
//! which runs share counter series with them. This is the ground truth the backends are held to.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

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
    ] {
        if let Some(value) = value {
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
    /// Attempts of every recorded run sharing a counter series (same repo and PR) with the runs
    /// being verified: counters carry no run or task label, so their raw values count all of them.
    pub counter_attempts: Vec<StepAttempt>,
    /// Attempts of every recorded run of the same tasks: the duration histogram carries `taskId`.
    pub histogram_attempts: Vec<StepAttempt>,
    /// Repo and PR pairs the runs belong to.
    pub scopes: BTreeSet<(String, String)>,
    pub task_ids: BTreeSet<String>,
    /// The time window the runs span, in unix nanoseconds.
    pub window: (u64, u64),
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
        let scopes: BTreeSet<(String, String)> = runs
            .iter()
            .filter_map(|r| Some((repo_of(r)?.to_string(), pr_of(r)?.to_string())))
            .collect();
        let task_ids: BTreeSet<String> = runs
            .iter()
            .filter_map(|r| task_of(r).map(str::to_string))
            .collect();
        let verified: BTreeSet<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        // The verified runs themselves always count, even if `all` was read before they finished.
        let others = all.iter().filter(|r| !verified.contains(r.name.as_str()));
        let pool: Vec<&RunRecord> = runs.iter().chain(others).collect();
        let counter_attempts = pool
            .iter()
            .filter(|r| match (repo_of(r), pr_of(r)) {
                (Some(repo), Some(pr)) => scopes.contains(&(repo.to_string(), pr.to_string())),
                _ => false,
            })
            .flat_map(|r| attempts_of(r))
            .collect();
        let histogram_attempts = pool
            .iter()
            .filter(|r| task_of(r).is_some_and(|t| task_ids.contains(t)))
            .flat_map(|r| attempts_of(r))
            .collect();
        let times: Vec<u64> = pool
            .iter()
            .flat_map(|r| [&r.status.started_at, &r.status.finished_at])
            .filter_map(|t| t.as_deref().and_then(parse_rfc3339))
            .collect();
        let now = super::time::now_unix_nanos();
        let window = (
            times.iter().copied().min().unwrap_or(now),
            times.iter().copied().max().unwrap_or(now),
        );
        Self {
            runs,
            attempts,
            untraced,
            counter_attempts,
            histogram_attempts,
            scopes,
            task_ids,
            window,
        }
    }

    /// The distinct traces the verified runs wrote to.
    pub fn trace_ids(&self) -> BTreeSet<TraceId> {
        self.runs
            .iter()
            .map(|r| r.trace_id)
            .chain(self.attempts.iter().map(|a| a.trace_id))
            .collect()
    }
}
