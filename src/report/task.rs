//! Everything `obsctl trace <taskId>` shows about one task: its recorded runs, their traces as
//! waterfalls (with log lines when asked), and links a person can click: the trace in Grafana
//! Explore or on the trace API, and the workflow's PR, Actions run and preview URLs.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::verify::RunSummary;
use super::waterfall::{TraceTree, render};
use crate::backends::loki::{Direction, LogEntry, quote};
use crate::backends::{BackendError, Backends};
use crate::checks::collect::LOG_LIMIT;
use crate::checks::expect::task_of;
use crate::checks::outputs::LINK_OUTPUTS;
use crate::checks::time::parse_rfc3339;
use crate::conventions::attr;
use crate::encode::now_unix_nanos;
use crate::otlp::TraceId;
use crate::workflow::record::RunRecord;

/// How far back a task with no run record is searched for in the trace backend.
const SEARCH_BACK_NS: u64 = 7 * 24 * 3600 * 1_000_000_000;
const SEARCH_LIMIT: usize = 20;
const WINDOW_SLACK_NS: u64 = 5 * 60 * 1_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(
        "unknown task \"{task}\": no run record of it in {dir} and no trace with taskId=\"{task}\" \
         in the trace backend; `obsctl runs` lists recorded runs"
    )]
    Unknown { task: String, dir: PathBuf },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub label: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    pub task_id: String,
    pub runs: Vec<RunSummary>,
    pub traces: Vec<TraceTree>,
    /// Traces the records name that the trace backend does not have (yet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_traces: Vec<TraceId>,
    pub links: Vec<Link>,
}

impl TaskView {
    /// The same view without log lines (see [`TraceTree::without_logs`]).
    pub fn without_logs(&self) -> Self {
        Self {
            traces: self.traces.iter().map(TraceTree::without_logs).collect(),
            ..self.clone()
        }
    }
}

/// Grafana Explore opened on the trace in the provisioned Tempo datasource (uid `tempo`).
pub fn grafana_explore_url(grafana: &str, trace: TraceId) -> String {
    let pane = serde_json::json!({
        "datasource": "tempo",
        "queries": [{
            "refId": "A",
            "datasource": {"type": "tempo", "uid": "tempo"},
            "queryType": "traceql",
            "query": trace.to_hex(),
        }],
        "range": {"from": "now-24h", "to": "now"},
    });
    let grafana = crate::backends::redact(grafana);
    let mut url = match reqwest::Url::parse(&format!("{}/explore", grafana.trim_end_matches('/'))) {
        Ok(url) => url,
        Err(_) => return format!("{grafana}/explore"),
    };
    url.query_pairs_mut()
        .append_pair("orgId", "1")
        .append_pair("left", &pane.to_string());
    url.to_string()
}

pub struct TaskQuery<'a> {
    pub task_id: &'a str,
    pub with_logs: bool,
    pub service_name: &'a str,
    pub state_dir: PathBuf,
}

pub async fn load(
    backends: &Backends,
    records: &[RunRecord],
    query: &TaskQuery<'_>,
) -> Result<TaskView, TaskError> {
    let runs: Vec<&RunRecord> = records
        .iter()
        .filter(|r| task_of(r) == Some(query.task_id))
        .collect();
    let now = now_unix_nanos();
    let mut trace_ids: Vec<TraceId> = Vec::new();
    for run in &runs {
        if !trace_ids.contains(&run.trace_id) {
            trace_ids.push(run.trace_id);
        }
    }
    if trace_ids.is_empty() {
        let hits = backends
            .tempo
            .search(
                &[(attr::TASK_ID, query.task_id)],
                now.saturating_sub(SEARCH_BACK_NS) / 1_000_000_000,
                now / 1_000_000_000 + 60,
                SEARCH_LIMIT,
            )
            .await?;
        trace_ids.extend(hits.into_iter().map(|h| h.trace_id));
    }
    if trace_ids.is_empty() {
        return Err(TaskError::Unknown {
            task: query.task_id.to_string(),
            dir: query.state_dir.clone(),
        });
    }

    let mut fetched = Vec::new();
    let mut missing_traces = Vec::new();
    for id in &trace_ids {
        match backends.tempo.trace(*id).await? {
            Some(trace) => fetched.push((*id, trace)),
            None => missing_traces.push(*id),
        }
    }

    let logs: Vec<LogEntry> = if query.with_logs {
        let times: Vec<u64> = runs
            .iter()
            .flat_map(|r| [&r.status.started_at, &r.status.finished_at])
            .filter_map(|t| t.as_deref().and_then(parse_rfc3339))
            .chain(
                fetched
                    .iter()
                    .flat_map(|(_, t)| t.spans.iter().map(|s| s.start_unix_nano)),
            )
            .collect();
        let start = times
            .iter()
            .min()
            .copied()
            .unwrap_or(now)
            .saturating_sub(WINDOW_SLACK_NS);
        let end = times.iter().max().copied().unwrap_or(now).max(now) + WINDOW_SLACK_NS;
        let logql = format!(
            "{{service_name={}}} | {}={}",
            quote(query.service_name),
            attr::TASK_ID,
            quote(query.task_id)
        );
        backends
            .loki
            .query_range(&logql, start, end, LOG_LIMIT, Direction::Forward)
            .await?
    } else {
        Vec::new()
    };

    let traces: Vec<TraceTree> = fetched
        .iter()
        .map(|(id, trace)| {
            let own: Vec<LogEntry> = logs
                .iter()
                .filter(|e| e.trace_id() == Some(*id))
                .cloned()
                .collect();
            TraceTree::build(*id, &trace.spans, trace.partial, &own)
        })
        .collect();

    let mut links = trace_links(backends, &trace_ids);
    links.extend(run_links(&runs));

    Ok(TaskView {
        task_id: query.task_id.to_string(),
        runs: runs.iter().map(|r| RunSummary::of(r)).collect(),
        traces,
        missing_traces,
        links,
    })
}

/// Each trace in Grafana Explore when the endpoints file names Grafana, else on the trace API.
pub fn trace_links(backends: &Backends, ids: &[TraceId]) -> Vec<Link> {
    ids.iter()
        .map(|id| Link {
            label: format!("trace {id}"),
            url: match &backends.urls.grafana {
                Some(grafana) => grafana_explore_url(grafana, *id),
                None => backends.tempo.trace_url(*id),
            },
        })
        .collect()
}

/// The links of verified runs: each distinct trace, then the runs' link outputs.
pub fn links_of_runs(backends: &Backends, runs: &[RunRecord]) -> Vec<Link> {
    let mut ids: Vec<TraceId> = Vec::new();
    for run in runs {
        if !ids.contains(&run.trace_id) {
            ids.push(run.trace_id);
        }
    }
    let mut links = trace_links(backends, &ids);
    links.extend(run_links(&runs.iter().collect::<Vec<_>>()));
    links
}

/// The PR, Actions run and preview URLs the runs set as outputs, each labelled with its run when
/// there are several.
pub fn run_links(runs: &[&RunRecord]) -> Vec<Link> {
    let mut links = Vec::new();
    for run in runs {
        for name in LINK_OUTPUTS {
            if let Some(url) = run.output(name) {
                let label = if runs.len() > 1 {
                    format!("{name} ({})", run.name)
                } else {
                    name.to_string()
                };
                links.push(Link {
                    label,
                    url: url.to_string(),
                });
            }
        }
    }
    links
}

/// The task as text: runs, one waterfall per trace, then the links.
pub fn render_task(view: &TaskView, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "task {}", view.task_id);
    for run in &view.runs {
        let _ = writeln!(out, "  run {} ({})", run.name, run.phase.as_str());
    }
    for tree in &view.traces {
        let _ = writeln!(out);
        out.push_str(&render(tree, color));
    }
    for id in &view.missing_traces {
        let _ = writeln!(
            out,
            "\ntrace {id}: not in the trace backend (yet); telemetry may still be in flight"
        );
    }
    let _ = writeln!(out, "\nlinks:");
    let width = view.links.iter().map(|l| l.label.len()).max().unwrap_or(0);
    for link in &view.links {
        let _ = writeln!(out, "  {:<width$}  {}", link.label, link.url);
    }
    out
}
