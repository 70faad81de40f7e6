//! Which recorded runs a verification covers: one run by name, every run of a task, every run
//! started within a recent window, or by default the latest run.

use std::time::Duration;

use super::expect::task_of;
use super::time::{now_unix_nanos, parse_rfc3339};
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
    #[error("no recorded run named {name:?} in {dir}")]
    NoSuchRun { name: String, dir: String },
    #[error("no recorded run of task {task:?} in {dir}")]
    NoSuchTask { task: String, dir: String },
    #[error("no run started in the last {since:?} in {dir}")]
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
