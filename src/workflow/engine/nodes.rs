//! The node table: `status.nodes` of the run as it goes, behind the few operations the executor
//! needs (begin, update, link, finish). It hides the resume rules: a node the resumed record
//! finished is reused as recorded, an interrupted Pod node starts again as a new attempt, and
//! composite nodes are re-derived. Every change marks the record for the [`Saver`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::saver::Saver;
use crate::otlp::{SpanId, TraceContext, TraceId};
use crate::workflow::clock;
use crate::workflow::record::{
    NodeStatus, NodeType, Outputs, Parameter, Phase, RecordStore, RunRecord, StepTelemetry,
};
use crate::workflow::vars;

/// A finished node, as its parent and its dependents see it.
#[derive(Debug, Clone)]
pub(super) struct NodeResult {
    pub id: String,
    pub phase: Phase,
    pub message: Option<String>,
    pub outputs: Outputs,
    /// Argo's outbound nodes: where the next steps group or dependent task hangs.
    pub outbound: Vec<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl NodeResult {
    /// A node reused from the record being resumed.
    fn reused(node: NodeStatus) -> Self {
        Self {
            outbound: vec![node.id.clone()],
            id: node.id,
            phase: node.phase,
            message: node.message,
            outputs: node.outputs.unwrap_or_default(),
            started_at: node.started_at,
            finished_at: node.finished_at,
        }
    }
}

/// Where a node sits: its names, its template and the node that bounds it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Place<'a> {
    pub name: &'a str,
    pub display: &'a str,
    pub template: &'a str,
    pub boundary: Option<&'a str>,
}

pub(super) enum Begin {
    /// The resumed record finished this node: it is reused as recorded.
    Done(NodeResult),
    Run {
        id: String,
        /// The same Pod node as an interrupted run left it (still Running): its attempt died
        /// with that run's controller.
        interrupted: Option<Box<NodeStatus>>,
    },
}

/// What the saver writes: the record, and what the resumed record held.
pub(super) struct Table {
    pub record: RunRecord,
    /// Nodes of the record being resumed; finished Pod and Skipped nodes are reused from here.
    previous: BTreeMap<String, NodeStatus>,
    pods_run: usize,
}

/// The identity of the run that every step's environment carries.
pub(super) struct RunIdentity {
    pub name: String,
    pub namespace: String,
    pub trace_id: TraceId,
    pub root_span: SpanId,
}

pub(super) struct NodeTable {
    table: Arc<Mutex<Table>>,
    saver: Saver,
    /// The run's name, which node ids are derived from.
    run_name: String,
}

impl NodeTable {
    /// Takes over `record` with `previous` as the nodes a resumed run may reuse, and starts
    /// saving it.
    pub fn open(
        record: RunRecord,
        previous: BTreeMap<String, NodeStatus>,
        store: RecordStore,
    ) -> Self {
        let run_name = record.name.clone();
        let table = Arc::new(Mutex::new(Table {
            record,
            previous,
            pods_run: 0,
        }));
        let saver = Saver::start(table.clone(), store);
        Self {
            table,
            saver,
            run_name,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().expect("node table lock")
    }

    pub fn run_name(&self) -> &str {
        &self.run_name
    }

    pub fn node_id(&self, name: &str) -> String {
        vars::node_id(&self.run_name, name)
    }

    pub fn identity(&self) -> RunIdentity {
        let t = self.lock();
        RunIdentity {
            name: t.record.name.clone(),
            namespace: t.record.namespace.clone(),
            trace_id: t.record.trace_id,
            root_span: t.record.root_span_id,
        }
    }

    /// Creates (or, on resume, reuses) the node at `place`. Only `reusable` nodes (Pod and
    /// Skipped) are reused; composite nodes are always re-derived.
    pub fn begin(&self, place: &Place, node_type: NodeType, reusable: bool) -> Begin {
        let mut t = self.lock();
        let id = vars::node_id(&self.run_name, place.name);
        let previous = t.previous.get(&id).cloned();
        if reusable
            && let Some(prev) = &previous
            && prev.phase.is_finished()
            && !crate::defect::Defect::ResumeReruns.active()
        {
            t.record.status.nodes.insert(id, prev.clone());
            drop(t);
            self.saver.dirty();
            return Begin::Done(NodeResult::reused(prev.clone()));
        }
        let interrupted = previous
            .as_ref()
            .filter(|p| p.node_type == NodeType::Pod && p.phase == Phase::Running)
            .cloned();
        let node = NodeStatus {
            id: id.clone(),
            name: place.name.to_string(),
            display_name: place.display.to_string(),
            node_type,
            template_name: Some(place.template.to_string()),
            phase: if node_type == NodeType::Pod {
                Phase::Pending
            } else {
                Phase::Running
            },
            boundary_id: place.boundary.map(str::to_string),
            children: Vec::new(),
            message: None,
            started_at: Some(
                previous
                    .filter(|_| node_type != NodeType::Pod)
                    .and_then(|p| p.started_at)
                    .unwrap_or_else(clock::now),
            ),
            finished_at: None,
            outputs: None,
            telemetry: None,
            interrupted: interrupted.as_ref().map_or_else(Vec::new, |p| {
                p.interrupted.iter().chain(&p.telemetry).cloned().collect()
            }),
            process_group: None,
        };
        t.record.status.nodes.insert(id.clone(), node);
        drop(t);
        self.saver.dirty();
        Begin::Run {
            id,
            interrupted: interrupted.map(Box::new),
        }
    }

    /// The id of a composite node begun at `place` (never reused, so always running).
    pub fn begin_composite(&self, place: &Place, node_type: NodeType) -> String {
        match self.begin(place, node_type, false) {
            Begin::Run { id, .. } => id,
            Begin::Done(node) => node.id,
        }
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut NodeStatus)) {
        let mut t = self.lock();
        if let Some(node) = t.record.status.nodes.get_mut(id) {
            f(node);
        }
        drop(t);
        self.saver.dirty();
    }

    pub fn add_child(&self, parent: &str, child: &str) {
        self.update(parent, |n| {
            if !n.children.iter().any(|c| c == child) {
                n.children.push(child.to_string());
            }
        });
    }

    pub fn finish(
        &self,
        id: &str,
        phase: Phase,
        message: Option<String>,
        outputs: Outputs,
        outbound: Vec<String>,
    ) -> NodeResult {
        let finished = clock::now();
        let mut started = None;
        self.update(id, |n| {
            n.phase = phase;
            n.message = message.clone();
            n.finished_at = Some(finished.clone());
            n.process_group = None;
            n.outputs = (outputs != Outputs::default()).then(|| outputs.clone());
            started = n.started_at.clone();
        });
        NodeResult {
            id: id.to_string(),
            phase,
            message,
            outputs,
            outbound,
            started_at: started,
            finished_at: Some(finished),
        }
    }

    /// Ends a node without outputs: it is its own outbound node.
    pub fn fail(&self, id: &str, phase: Phase, message: String) -> NodeResult {
        self.finish(
            id,
            phase,
            Some(message),
            Outputs::default(),
            vec![id.to_string()],
        )
    }

    /// A leaf node that never runs: `when` false (Skipped), `depends` false (Omitted), or an
    /// invocation that could not be resolved (Error).
    pub fn leaf(&self, place: &Place, phase: Phase, message: String) -> NodeResult {
        let node_type = if phase == Phase::Error {
            NodeType::Pod
        } else {
            NodeType::Skipped
        };
        match self.begin(place, node_type, true) {
            Begin::Done(node) => node,
            Begin::Run { id, .. } => self.fail(&id, phase, message),
        }
    }

    /// Sets one of the workflow's output parameters (a `globalName`).
    pub fn set_output(&self, name: &str, value: &str) {
        let mut t = self.lock();
        let outputs = t.record.status.outputs.get_or_insert_with(Outputs::default);
        match outputs.parameters.iter_mut().find(|p| p.name == name) {
            Some(p) => p.value = value.to_string(),
            None => outputs.parameters.push(Parameter {
                name: name.to_string(),
                value: value.to_string(),
            }),
        }
        drop(t);
        self.saver.dirty();
    }

    /// When the node started; a composite or Suspend node resumed keeps its first start.
    pub fn started_at(&self, id: &str) -> Option<std::time::SystemTime> {
        let t = self.lock();
        t.record
            .status
            .nodes
            .get(id)?
            .started_at
            .as_deref()
            .and_then(clock::parse)
    }

    pub fn telemetry_of(&self, id: &str) -> Option<StepTelemetry> {
        self.lock().record.status.nodes.get(id)?.telemetry.clone()
    }

    /// The span of a Pod node's attempt, for the link from the attempt that replaces it.
    pub fn span_of(&self, id: &str) -> Option<TraceContext> {
        let t = self.lock();
        let current = t
            .record
            .status
            .nodes
            .get(id)
            .and_then(|n| n.telemetry.clone());
        let recorded = t.previous.get(id).and_then(|n| n.telemetry.clone());
        let telemetry = current.or(recorded)?;
        Some(TraceContext {
            trace_id: telemetry.trace_id,
            span_id: telemetry.span_id,
            sampled: true,
        })
    }

    /// Whether the resumed record holds the node `name` (then its run already waited for it).
    pub fn was_recorded(&self, name: &str) -> bool {
        let id = self.node_id(name);
        self.lock().previous.contains_key(&id)
    }

    pub fn count_pod_run(&self) {
        self.lock().pods_run += 1;
    }

    /// `{{workflow.failures}}`: the failed Pod nodes, shaped as Argo shapes them.
    pub fn failures_json(&self) -> String {
        let t = self.lock();
        let list: Vec<serde_json::Value> = t
            .record
            .status
            .nodes
            .values()
            .filter(|n| {
                n.node_type == NodeType::Pod && matches!(n.phase, Phase::Failed | Phase::Error)
            })
            .map(|n| {
                serde_json::json!({
                    "displayName": n.display_name,
                    "message": n.message.clone().unwrap_or_default(),
                    "templateName": n.template_name.clone().unwrap_or_default(),
                    "phase": n.phase.as_str(),
                    "podName": n.id,
                    "finishedAt": n.finished_at.clone().unwrap_or_default(),
                })
            })
            .collect();
        serde_json::Value::Array(list).to_string()
    }

    /// Ends the run with `phase` and stops saving; the caller writes the final record. Returns
    /// it and the number of Pod nodes that ran in this invocation.
    pub fn close(
        &self,
        phase: Phase,
        message: Option<String>,
        finished: std::time::SystemTime,
    ) -> (RunRecord, usize) {
        let closed = {
            let mut t = self.lock();
            t.record.status.phase = phase;
            t.record.status.message = message;
            t.record.status.finished_at = Some(clock::rfc3339(finished));
            (t.record.clone(), t.pods_run)
        };
        self.saver.stop();
        closed
    }
}
