//! `obsctl run --argo-server`: instrument a workflow for this run (its steps' parent is the
//! run's root span), submit it, follow it, and keep the same run record a local run keeps
//! (Argo's node ids, phases and outputs, each step's span), so `verify`, `trace` and `runs` work
//! alike. The record is saved under the name Argo gave the workflow, replaced on every update:
//! a watch that reconnects never makes a second one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use super::client::{ArgoClient, ClientError, WatchEnd, Workflow};
use super::instrument::{self, InstrumentError, Options};
use crate::conventions::annotation;
use crate::otlp::{SpanId, TraceContext, TraceId};
use crate::workflow::engine::Event;
use crate::workflow::record::{
    NodeStatus, NodeType, Outputs, Parameter, Phase, RecordError, RecordStore, RunRecord,
    StepTelemetry, WorkflowStatus,
};
use crate::workflow::telemetry::{self, Correlation, OtelConfig, RootSpan};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Instrument(#[from] InstrumentError),
    #[error("{file}: -p {name}: the workflow declares no parameter {name:?} in spec.arguments")]
    UnknownParameter { file: PathBuf, name: String },
    /// The Argo Server refused or never took the workflow: nothing runs.
    #[error(transparent)]
    Submit(ClientError),
    /// Following the submitted workflow failed; it may still run on the cluster.
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(
        "workflow {workflow} was not instrumented by obsctl (no trace.context annotation on its \
         templates): its steps emitted no telemetry obsctl can find"
    )]
    NotInstrumented { workflow: String },
}

/// What a remote run needs.
pub struct RemoteRun<'a> {
    pub client: &'a ArgoClient,
    pub file: &'a Path,
    pub overrides: &'a [(String, String)],
    /// Instrumentation (its `traceparent` is set here) and where steps send telemetry.
    pub instrument: Options,
    pub otel: OtelConfig,
    pub store: RecordStore,
}

/// How a remote run ended.
pub struct RemoteOutcome {
    pub record: RunRecord,
    /// The user detached (second Ctrl-C) while the workflow still ran.
    pub detached: bool,
    pub root_span_error: Option<telemetry::RootSpanError>,
}

impl RemoteRun<'_> {
    /// Submits and follows the workflow. `interrupt` resolves on each Ctrl-C: the first stops
    /// the workflow on the server (`PUT …/stop`), the second detaches.
    pub async fn run<F>(
        self,
        on_event: &(dyn Fn(Event) + Send + Sync),
        interrupt: impl Fn() -> F,
    ) -> Result<RemoteOutcome, RemoteError>
    where
        F: std::future::Future<Output = ()>,
    {
        let trace_id = TraceId::random();
        let root_span_id = SpanId::random();
        let sampled = self.otel.run_sampled(trace_id);
        let mut opts = self.instrument.clone();
        opts.traceparent = Some(
            TraceContext {
                trace_id,
                span_id: root_span_id,
                sampled,
            }
            .to_traceparent(),
        );
        let (mut doc, report) = instrument::instrument_file(self.file, &opts)?;
        let parameters = set_parameters(&mut doc, self.file, self.overrides)?;
        let body = serde_json::to_value(&doc).expect("YAML values convert to JSON");
        let submitted = self
            .client
            .submit(&body)
            .await
            .map_err(RemoteError::Submit)?;
        let started = SystemTime::now();
        let mut record = RunRecord {
            name: submitted.metadata.name.clone(),
            namespace: self.client.config().namespace.clone(),
            workflow_file: self.file.to_path_buf(),
            parameters,
            trace_id,
            root_span_id,
            sampled: Some(sampled),
            status: pending(Some(crate::workflow::clock::now())),
        };
        self.store.save(&record)?;
        let mut seen = Seen::default();
        let name = record.name.clone();
        let stop_then_detach = async {
            interrupt().await;
            eprintln!(
                "obsctl: stopping workflow {name} on the Argo Server (Ctrl-C again detaches)"
            );
            if let Err(e) = self.client.stop(&name, "stopped by obsctl (Ctrl-C)").await {
                eprintln!("obsctl: warning: {e}");
            }
            interrupt().await;
        };
        let mut save_error = None;
        let end = self
            .client
            .watch(
                &name,
                |wf| {
                    apply(&mut record, wf, &report.steps);
                    seen.announce(&record, on_event);
                    if let Err(e) = self.store.save(&record) {
                        save_error.get_or_insert(e);
                    }
                },
                stop_then_detach,
            )
            .await?;
        if let Some(e) = save_error {
            return Err(e.into());
        }
        let detached = matches!(end, WatchEnd::Detached);
        let root_span_error = if detached {
            None
        } else {
            let corr = Correlation::from_parameters(
                &record
                    .parameters
                    .iter()
                    .map(|p| (p.name.clone(), p.value.clone()))
                    .collect::<Vec<_>>(),
            );
            telemetry::emit_root_span(
                &self.otel,
                &RootSpan {
                    trace_id,
                    span_id: root_span_id,
                    workflow_name: &record.name,
                    namespace: &record.namespace,
                    corr: &corr,
                    start: started,
                    end: SystemTime::now(),
                    phase: record.status.phase.as_str(),
                    environment: &self.otel.environment,
                },
            )
            .await
            .err()
        };
        Ok(RemoteOutcome {
            record,
            detached,
            root_span_error,
        })
    }
}

/// The run record of a workflow that ran on Argo without `obsctl run` following it, for
/// `verify --argo-server`: its nodes and phases from Argo, its trace from the `trace.context`
/// annotation `instrument` put on its templates (the uid form: the workflow's uid), and each
/// step's span from its node id (`OBSCTL_SPAN_ID_FROM=node`).
pub fn record_of(wf: &Workflow, server: &str) -> Result<RunRecord, RemoteError> {
    let file = PathBuf::from(format!(
        "{server}/workflows/{}/{}",
        wf.metadata.namespace, wf.metadata.name
    ));
    let not_instrumented = || RemoteError::NotInstrumented {
        workflow: wf.metadata.name.clone(),
    };
    let annotation = wf.spec["templates"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|t| t["metadata"]["annotations"][annotation::TRACE_CONTEXT].as_str())
        .ok_or_else(not_instrumented)?;
    let parent = if annotation.contains("{{") {
        let uid = wf.metadata.uid.replace('-', "");
        TraceContext::parse_traceparent(&format!("00-{uid}-{}-01", &uid[..uid.len().min(16)]))
    } else {
        TraceContext::parse_traceparent(annotation)
    }
    .map_err(|_| not_instrumented())?;
    let mut doc = serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": wf.metadata.name},
        "spec": wf.spec,
    });
    let mut yaml = serde_norway::to_value(&doc).expect("JSON values convert to YAML");
    let report = instrument::instrument(&mut yaml, &file, &Options::default())?;
    let parameters = doc["spec"]["arguments"]["parameters"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some(Parameter {
                name: p["name"].as_str()?.to_string(),
                value: p["value"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect();
    let mut record = RunRecord {
        name: wf.metadata.name.clone(),
        namespace: wf.metadata.namespace.clone(),
        workflow_file: file,
        parameters,
        trace_id: parent.trace_id,
        root_span_id: parent.span_id,
        sampled: Some(parent.sampled),
        status: pending(None),
    };
    apply(&mut record, wf, &report.steps);
    Ok(record)
}

/// `GET` the workflow and make it a run record ([`record_of`]).
pub async fn fetch_record(client: &ArgoClient, name: &str) -> Result<RunRecord, RemoteError> {
    let wf = client.get(name).await?;
    record_of(&wf, &client.config().base)
}

/// Sets `-p` values in `spec.arguments.parameters`, and a fresh `taskId` when it is declared
/// empty and not given (as a local run does), and answers every parameter's value.
fn set_parameters(
    doc: &mut serde_norway::Value,
    file: &Path,
    overrides: &[(String, String)],
) -> Result<Vec<Parameter>, RemoteError> {
    let params = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("arguments"))
        .and_then(|a| a.get_mut("parameters"))
        .and_then(serde_norway::Value::as_sequence_mut);
    let params = match params {
        Some(p) => p,
        None if overrides.is_empty() => return Ok(Vec::new()),
        None => {
            return Err(RemoteError::UnknownParameter {
                file: file.to_path_buf(),
                name: overrides[0].0.clone(),
            });
        }
    };
    let task_id = crate::conventions::attr::TASK_ID;
    let fresh = (!overrides.iter().any(|(name, _)| name == task_id)
        && params.iter().any(|p| {
            p.get("name").and_then(serde_norway::Value::as_str) == Some(task_id)
                && p.get("value").and_then(serde_norway::Value::as_str) == Some("")
        }))
    .then(|| (task_id.to_string(), telemetry::new_task_id()));
    for (name, value) in overrides.iter().chain(&fresh) {
        let slot = params
            .iter_mut()
            .find(|p| p.get("name").and_then(serde_norway::Value::as_str) == Some(name))
            .ok_or_else(|| RemoteError::UnknownParameter {
                file: file.to_path_buf(),
                name: name.clone(),
            })?;
        if let Some(m) = slot.as_mapping_mut() {
            m.insert("value".into(), value.as_str().into());
        }
    }
    let as_text = |v: &serde_norway::Value| match v {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::Bool(b) => b.to_string(),
        _ => String::new(),
    };
    Ok(params
        .iter()
        .filter_map(|p| {
            Some(Parameter {
                name: p.get("name")?.as_str()?.to_string(),
                value: p.get("value").map(as_text).unwrap_or_default(),
            })
        })
        .collect())
}

/// The workflow's state from Argo, into the record: phase, times, outputs, nodes, and for each
/// Pod node whose main container ran (it has an exit code) the step's span. `steps`: each
/// wrapped template's agent and step (`instrument::Report::steps`).
pub fn apply(record: &mut RunRecord, wf: &Workflow, steps: &BTreeMap<String, (String, String)>) {
    let status = &wf.status;
    record.status.phase = phase_of(&status.phase);
    if status.started_at.is_some() {
        record.status.started_at.clone_from(&status.started_at);
    }
    record.status.finished_at.clone_from(&status.finished_at);
    record.status.message.clone_from(&status.message);
    record.status.outputs = status.outputs.as_ref().and_then(outputs_of);
    record.status.nodes = status
        .nodes
        .iter()
        .filter_map(|(id, node)| Some((id.clone(), node_of(node, record.trace_id, steps)?)))
        .collect();
}

/// A workflow's status before Argo reported any.
fn pending(started_at: Option<String>) -> WorkflowStatus {
    WorkflowStatus {
        phase: Phase::Pending,
        started_at,
        finished_at: None,
        message: None,
        nodes: BTreeMap::new(),
        outputs: None,
    }
}

/// Argo's phase, `Pending` while it has none (a workflow the controller has not picked up).
fn phase_of(text: &str) -> Phase {
    Phase::from_argo(text).unwrap_or(Phase::Pending)
}

fn node_type_of(text: &str) -> Option<NodeType> {
    Some(match text {
        "Pod" | "Container" => NodeType::Pod,
        "Steps" => NodeType::Steps,
        "StepGroup" => NodeType::StepGroup,
        "DAG" => NodeType::DAG,
        "TaskGroup" => NodeType::TaskGroup,
        "Retry" => NodeType::Retry,
        "Skipped" => NodeType::Skipped,
        "Suspend" => NodeType::Suspend,
        _ => return None,
    })
}

fn outputs_of(v: &Value) -> Option<Outputs> {
    let text = |v: &Value| v.as_str().map(String::from);
    let outputs = Outputs {
        parameters: v
            .get("parameters")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| {
                        Some(Parameter {
                            name: text(p.get("name")?)?,
                            value: text(p.get("value")?)?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
        exit_code: v.get("exitCode").and_then(text),
        result: v.get("result").and_then(text),
    };
    (outputs != Outputs::default()).then_some(outputs)
}

/// One of Argo's nodes as the record keeps it; `None` for node types a local run never has
/// (HTTP, Plugin), which carry no step span.
fn node_of(
    v: &Value,
    trace_id: TraceId,
    steps: &BTreeMap<String, (String, String)>,
) -> Option<NodeStatus> {
    let text = |key: &str| v.get(key).and_then(Value::as_str).map(String::from);
    let id = text("id")?;
    let node_type = node_type_of(&text("type")?)?;
    let outputs = v.get("outputs").and_then(outputs_of);
    let template_name = text("templateName");
    let ran = outputs.as_ref().is_some_and(|o| o.exit_code.is_some());
    let telemetry = template_name
        .as_ref()
        .and_then(|t| steps.get(t))
        .filter(|_| node_type == NodeType::Pod && ran)
        .map(|(agent, step)| StepTelemetry {
            agent: agent.clone(),
            step: step.clone(),
            trace_id,
            span_id: super::node_span_id(trace_id, &id),
            attempt: 0,
        });
    Some(NodeStatus {
        name: text("name").unwrap_or_else(|| id.clone()),
        display_name: text("displayName").unwrap_or_default(),
        node_type,
        template_name,
        phase: phase_of(&text("phase").unwrap_or_default()),
        boundary_id: text("boundaryID"),
        children: v
            .get("children")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        message: text("message"),
        started_at: text("startedAt"),
        finished_at: text("finishedAt"),
        outputs,
        telemetry,
        interrupted: Vec::new(),
        process_group: None,
        id,
    })
}

/// Which Pod nodes the live view was told about, so each start and end is told once however
/// often the same state arrives (stream and polls overlap).
#[derive(Default)]
struct Seen {
    started: BTreeSet<String>,
    finished: BTreeSet<String>,
}

impl Seen {
    fn announce(&mut self, record: &RunRecord, on_event: &(dyn Fn(Event) + Send + Sync)) {
        for node in record.status.nodes.values() {
            if node.node_type != NodeType::Pod || node.phase == Phase::Pending {
                continue;
            }
            if self.started.insert(node.id.clone()) {
                on_event(Event::PodStarted {
                    id: node.id.clone(),
                    display: node.display_name.clone(),
                });
            }
            if node.phase.is_finished() && self.finished.insert(node.id.clone()) {
                on_event(Event::PodFinished {
                    id: node.id.clone(),
                    display: node.display_name.clone(),
                    phase: node.phase,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_instrumented_without_run_is_traced_by_its_uid() {
        let template = |annotations| {
            serde_json::json!({
                "name": "hello",
                "metadata": {"annotations": annotations, "labels": {"agent": "rex", "step": "say"}},
                "container": {"image": "busybox", "command": ["echo", "hi"]}
            })
        };
        let workflow = |annotations| -> Workflow {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "wf", "namespace": "argo",
                             "uid": "0af76519-16cd-43dd-8448-eb211c80319c"},
                "spec": {"entrypoint": "hello", "templates": [template(annotations)]},
                "status": {"phase": "Succeeded", "nodes": {"wf": {
                    "id": "wf", "name": "wf", "type": "Pod", "templateName": "hello",
                    "phase": "Succeeded", "outputs": {"exitCode": "0"}}}}
            }))
            .unwrap()
        };
        let uid_form = serde_json::json!({"trace.context": "00-{{=sprig.replace('-', '', workflow.uid)}}-x-01"});
        let record = record_of(&workflow(uid_form), "http://argo:2746").unwrap();
        assert_eq!(
            record.trace_id.to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        let step = record.status.nodes["wf"].telemetry.clone().unwrap();
        assert_eq!(
            step.span_id,
            crate::argo::node_span_id(record.trace_id, "wf")
        );
        let bare = record_of(&workflow(serde_json::json!({})), "http://argo:2746");
        assert!(matches!(bare, Err(RemoteError::NotInstrumented { .. })));
    }

    #[test]
    fn argo_nodes_become_record_nodes_with_their_step_span() {
        let trace = TraceId::random();
        let steps = BTreeMap::from([("hello".to_string(), ("rex".to_string(), "say".to_string()))]);
        let node = serde_json::json!({
            "id": "wf-123", "name": "wf", "displayName": "wf", "type": "Pod",
            "templateName": "hello", "phase": "Succeeded",
            "outputs": {"exitCode": "0", "parameters": [{"name": "p", "value": "v", "valueFrom": {"path": "/tmp/p"}}]}
        });
        let n = node_of(&node, trace, &steps).unwrap();
        assert_eq!(n.phase, Phase::Succeeded);
        let t = n.telemetry.unwrap();
        assert_eq!(t.span_id, crate::argo::node_span_id(trace, "wf-123"));
        assert_eq!((t.agent.as_str(), t.step.as_str()), ("rex", "say"));
        assert_eq!(n.outputs.unwrap().parameters[0].value, "v");
        let pending = serde_json::json!({"id": "wf-9", "type": "Pod", "templateName": "hello"});
        let p = node_of(&pending, trace, &steps).unwrap();
        assert_eq!(p.phase, Phase::Pending);
        assert!(p.telemetry.is_none(), "no exit code: the step did not run");
        assert!(
            node_of(
                &serde_json::json!({"id": "x", "type": "HTTP"}),
                trace,
                &steps
            )
            .is_none()
        );
    }
}
