//! The persisted record of one `obsctl run`: Argo-shaped status (phase, nodes keyed by node id,
//! outputs) plus what obsctl adds (span ids, step identity), written as the run progresses and
//! read back by `obsctl runs`, `--resume`, `verify` and `trace`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::otlp::{SpanId, TraceId};

/// Argo's node and workflow phases, spelled as Argo spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Error,
    Skipped,
    Omitted,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Running,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Error,
        Phase::Skipped,
        Phase::Omitted,
    ];

    /// The phase Argo spells `text`; `None` for a spelling Argo does not use.
    pub fn from_argo(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, Phase::Pending | Phase::Running)
    }

    /// As Argo spells it (`Succeeded`), for people and for Argo-shaped JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Error => "Error",
            Phase::Skipped => "Skipped",
            Phase::Omitted => "Omitted",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Argo's node types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeType {
    Pod,
    Steps,
    StepGroup,
    DAG,
    TaskGroup,
    Retry,
    Skipped,
    Suspend,
}

impl std::fmt::Display for NodeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeType::Pod => "Pod",
            NodeType::Steps => "Steps",
            NodeType::StepGroup => "StepGroup",
            NodeType::DAG => "DAG",
            NodeType::TaskGroup => "TaskGroup",
            NodeType::Retry => "Retry",
            NodeType::Skipped => "Skipped",
            NodeType::Suspend => "Suspend",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(default, rename = "exitCode", skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<String>,
    /// A step's stdout (Argo's `outputs.result`), trailing newline trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// What obsctl knows about a Pod node's telemetry, beyond Argo's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepTelemetry {
    pub agent: String,
    pub step: String,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// 0 for the first attempt; a resumed or retried attempt gets a new span and a higher number.
    pub attempt: u32,
}

/// One node of `status.nodes`, as Argo shapes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub id: String,
    pub name: String,
    pub display_name: String,
    #[serde(rename = "type")]
    pub node_type: NodeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    pub phase: Phase,
    /// Argo spells it `boundaryID`.
    #[serde(
        default,
        rename = "boundaryID",
        alias = "boundaryId",
        skip_serializing_if = "Option::is_none"
    )]
    pub boundary_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339, as Argo writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
    /// obsctl's addition: the step's span, for Pod nodes that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<StepTelemetry>,
    /// obsctl's addition: earlier attempts of this Pod node that a dead controller (a
    /// `kill -9` of `obsctl run`) interrupted; a resumed run recorded each from outside, as a
    /// failed attempt, and started the node again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupted: Vec<StepTelemetry>,
    /// obsctl's addition: the OS process group of a running Pod node, so that a resumed run
    /// can stop what an interrupted one left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_group: Option<i32>,
}

/// `status` of a Workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
}

/// One run as persisted: enough to resume it and to verify its telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The workflow's `metadata.name` for this run (generated from `generateName`).
    pub name: String,
    pub namespace: String,
    pub workflow_file: PathBuf,
    pub parameters: Vec<Parameter>,
    /// The run's root span: every step span is its child, so one run is one trace.
    pub trace_id: TraceId,
    pub root_span_id: SpanId,
    /// Whether the run's trace was sampled (`obsctl run --sampler-ratio`, decided once per run);
    /// absent in records written before obsctl decided per run, which were all sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled: Option<bool>,
    pub status: WorkflowStatus,
}

impl RunRecord {
    /// Whether the run's steps exported spans (see [`RunRecord::sampled`]).
    pub fn traced(&self) -> bool {
        self.sampled != Some(false)
    }

    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }

    pub fn output(&self, name: &str) -> Option<&str> {
        self.status
            .outputs
            .as_ref()?
            .parameters
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write run record {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read run record {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("run record {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no run named {name:?} in {dir}")]
    NotFound { name: String, dir: PathBuf },
}

/// Run records on disk: one JSON file per run, replaced atomically on every update so that a
/// crash leaves either the previous or the new record, never a torn one.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn save(&self, record: &RunRecord) -> Result<(), RecordError> {
        let body = serde_json::to_vec_pretty(record).expect("run records always serialize");
        self.write(&record.name, &body, true)
    }

    /// Writes a record already serialized by the caller (who may hold the record under a lock
    /// only while serializing), without syncing to disk: for the frequent saves of a run in
    /// progress, which need to survive the process (kill -9), not a power cut.
    pub fn save_serialized(&self, name: &str, body: &[u8]) -> Result<(), RecordError> {
        self.write(name, body, false)
    }

    fn write(&self, name: &str, body: &[u8], sync: bool) -> Result<(), RecordError> {
        let path = self.path_of(name);
        let write_err = |source| RecordError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(write_err)?;
        let tmp = self.dir.join(format!(".{name}.json.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(write_err)?;
        file.write_all(body).map_err(write_err)?;
        if sync {
            file.sync_data().map_err(write_err)?;
        }
        std::fs::rename(&tmp, &path).map_err(write_err)
    }

    pub fn load(&self, name: &str) -> Result<RunRecord, RecordError> {
        let path = self.path_of(name);
        let body = std::fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => RecordError::NotFound {
                name: name.to_string(),
                dir: self.dir.clone(),
            },
            _ => RecordError::Read {
                path: path.clone(),
                source,
            },
        })?;
        serde_json::from_slice(&body).map_err(|source| RecordError::Corrupt { path, source })
    }

    /// Every record in the directory, oldest start first. A missing directory is an empty list.
    pub fn list(&self) -> Result<Vec<RunRecord>, RecordError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RecordError::Read {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| RecordError::Read {
                path: self.dir.clone(),
                source,
            })?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if let Some(name) = file_name.strip_suffix(".json")
                && !file_name.starts_with('.')
            {
                records.push(self.load(name)?);
            }
        }
        records.sort_by(|a, b| a.status.started_at.cmp(&b.status.started_at));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, started: &str) -> RunRecord {
        RunRecord {
            name: name.to_string(),
            namespace: "default".into(),
            workflow_file: "workflows/agent-pipeline.yaml".into(),
            parameters: vec![Parameter {
                name: "taskId".into(),
                value: "T-1".into(),
            }],
            trace_id: TraceId::random(),
            root_span_id: SpanId::random(),
            sampled: None,
            status: WorkflowStatus {
                phase: Phase::Running,
                started_at: Some(started.to_string()),
                finished_at: None,
                message: None,
                nodes: BTreeMap::new(),
                outputs: None,
            },
        }
    }

    #[test]
    fn save_load_list_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path());
        let b = sample("b", "2026-01-02T00:00:00Z");
        let a = sample("a", "2026-01-01T00:00:00Z");
        store.save(&b).unwrap();
        store.save(&a).unwrap();
        assert_eq!(store.load("b").unwrap(), b);
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(a.parameter("taskId"), Some("T-1"));
        assert!(matches!(
            store.load("missing"),
            Err(RecordError::NotFound { .. })
        ));
    }
}
