//! Which recorded runs a verification covers: one run by name, every run of a task, every run
//! started within a recent window, or by default the latest run.

use std::time::Duration;

use super::expect::task_of;
use super::time::parse_rfc3339;
use crate::encode::now_unix_nanos;
use crate::workflow::record::RunRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Run(String),
    Task(String),
    Since(Duration),
    Latest,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no recorded runs in {dir}: run a workflow with `obsctl run` first")]
    NoRuns { dir: String },
    #[error("no recorded run named \"{name}\" in {dir}")]
    NoSuchRun { name: String, dir: String },
    #[error("no recorded run of task \"{task}\" in {dir}")]
    NoSuchTask { task: String, dir: String },
    #[error("no run started in the last {}s in {dir}", since.as_secs())]
    NothingSince { since: Duration, dir: String },
}

/// The selected runs, oldest first. `all` is every record in `dir`, oldest first.
pub fn select(
    all: &[RunRecord],
    selection: &Selection,
    dir: &str,
) -> Result<Vec<RunRecord>, SelectError> {
    let dir = dir.to_string();
    if all.is_empty() {
        return Err(SelectError::NoRuns { dir });
    }
    let picked: Vec<RunRecord> = match selection {
        Selection::Run(name) => all.iter().filter(|r| &r.name == name).cloned().collect(),
        Selection::Task(task) => all
            .iter()
            .filter(|r| task_of(r) == Some(task.as_str()))
            .cloned()
            .collect(),
        Selection::Since(since) => {
            let cutoff = now_unix_nanos().saturating_sub(since.as_nanos() as u64);
            all.iter()
                .filter(|r| {
                    r.status
                        .started_at
                        .as_deref()
                        .and_then(parse_rfc3339)
                        .is_some_and(|t| t >= cutoff)
                })
                .cloned()
                .collect()
        }
        Selection::Latest => all.last().cloned().into_iter().collect(),
    };
    if picked.is_empty() {
        return Err(match selection {
            Selection::Run(name) => SelectError::NoSuchRun {
                name: name.clone(),
                dir,
            },
            Selection::Task(task) => SelectError::NoSuchTask {
                task: task.clone(),
                dir,
            },
            Selection::Since(since) => SelectError::NothingSince { since: *since, dir },
            Selection::Latest => SelectError::NoRuns { dir },
        });
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{SpanId, TraceId};
    use crate::workflow::record::{Parameter, Phase, WorkflowStatus};

    fn record(name: &str, task: &str, started: &str) -> RunRecord {
        RunRecord {
            name: name.into(),
            namespace: "default".into(),
            workflow_file: "wf.yaml".into(),
            parameters: vec![Parameter {
                name: "taskId".into(),
                value: task.into(),
            }],
            trace_id: TraceId::random(),
            root_span_id: SpanId::random(),
            sampled: None,
            status: WorkflowStatus {
                phase: Phase::Succeeded,
                started_at: Some(started.into()),
                finished_at: None,
                message: None,
                nodes: Default::default(),
                outputs: None,
            },
        }
    }

    fn names(runs: Vec<RunRecord>) -> Vec<String> {
        runs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn by_name_task_recency_and_latest() {
        let now = crate::workflow::clock::now();
        let all = vec![
            record("old", "T-1", "2020-01-01T00:00:00.000Z"),
            record("mid", "T-2", "2020-01-02T00:00:00.000Z"),
            record("new", "T-1", &now),
        ];
        let sel = |s: Selection| select(&all, &s, "/runs");
        assert_eq!(names(sel(Selection::Latest).unwrap()), ["new"]);
        assert_eq!(names(sel(Selection::Run("mid".into())).unwrap()), ["mid"]);
        assert_eq!(
            names(sel(Selection::Task("T-1".into())).unwrap()),
            ["old", "new"]
        );
        assert_eq!(
            names(sel(Selection::Since(Duration::from_secs(3600))).unwrap()),
            ["new"]
        );
        assert_eq!(
            sel(Selection::Task("T-9".into())).unwrap_err().to_string(),
            "no recorded run of task \"T-9\" in /runs"
        );
        assert!(matches!(
            select(&[], &Selection::Latest, "/runs"),
            Err(SelectError::NoRuns { .. })
        ));
    }
}
