//! The executor: walks a workflow's templates with Argo's semantics (steps groups, DAG
//! `depends`, loops, `when`, retries, timeouts, parallelism, exit handler, global outputs),
//! names nodes as Argo names them, hands Pod nodes to a [`Runner`] and keeps the run record
//! on disk as it goes, so that an interrupted run can be resumed without re-running what finished.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use tokio::sync::{Semaphore, watch};

use super::clock;
use super::expr::{self, Depends, TaskResult};
use super::load::LoadedWorkflow;
use super::record::{
    NodeStatus, NodeType, Outputs, Parameter, Phase, RecordError, RecordStore, RunRecord,
    StepTelemetry, WorkflowStatus,
};
use super::runner::{Runner, StepExit, StepHandle, StepSpec};
use super::spec::{ContinueOn, Step, Template, TemplateKind, Workflow};
use super::telemetry::{self, Correlation, OtelConfig, StepIdentity};
use super::vars;
use crate::otlp::{SpanId, TraceContext, TraceId};
use crate::shim::outside::KilledAttempt;

/// One expanded invocation of a step or task: node name, display name, item variables.
type Invocation = (String, String, HashMap<String, String>);

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the live view is told.
#[derive(Debug, Clone)]
pub enum Event {
    PodStarted {
        id: String,
        display: String,
    },
    PodFinished {
        id: String,
        display: String,
        phase: Phase,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot create {dir}: {source}")]
    WorkDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("run {name:?} was started from {recorded}, not {given}")]
    WrongFile {
        name: String,
        recorded: PathBuf,
        given: PathBuf,
    },
}

/// Settings of one run that do not come from the workflow file.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub store: RecordStore,
    pub otel: OtelConfig,
    pub namespace: String,
}

/// The result of [`run`].
#[derive(Debug)]
pub struct RunOutcome {
    pub record: RunRecord,
    /// Set when the root span could not be delivered; the run itself is unaffected.
    pub export_error: Option<telemetry::RootSpanError>,
    /// Pod nodes that actually ran in this invocation (not reused from a resumed record).
    pub pods_run: usize,
    /// The spool replayed at the end of the run, when it held anything.
    pub drained: Option<crate::otlp::spool::ReplayReport>,
}

/// Argo's 5-character suffix alphabet for `generateName` (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A new run record for `loaded`, not yet saved.
pub fn new_record(loaded: &LoadedWorkflow, namespace: &str) -> RunRecord {
    let meta = &loaded.workflow.metadata;
    let name = match (&meta.name, &meta.generate_name) {
        (Some(name), _) => name.clone(),
        (None, Some(prefix)) => {
            let mut rng = rand::rng();
            let suffix: String = (0..5)
                .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
                .collect();
            format!("{prefix}{suffix}")
        }
        (None, None) => unreachable!("the loader requires name or generateName"),
    };
    RunRecord {
        name,
        namespace: meta
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_string()),
        workflow_file: std::fs::canonicalize(&loaded.path).unwrap_or_else(|_| loaded.path.clone()),
        parameters: loaded
            .parameters
            .iter()
            .map(|(name, value)| Parameter {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        trace_id: TraceId::random(),
        root_span_id: SpanId::random(),
        status: WorkflowStatus {
            phase: Phase::Running,
            started_at: Some(clock::now()),
            finished_at: None,
            message: None,
            nodes: BTreeMap::new(),
            outputs: None,
        },
    }
}

/// Checks that a record to resume belongs to `loaded`.
pub fn check_resume(record: &RunRecord, loaded: &LoadedWorkflow) -> Result<(), EngineError> {
    let given = std::fs::canonicalize(&loaded.path).unwrap_or_else(|_| loaded.path.clone());
    if given != record.workflow_file {
        return Err(EngineError::WrongFile {
            name: record.name.clone(),
            recorded: record.workflow_file.clone(),
            given,
        });
    }
    Ok(())
}

/// Runs (or resumes) `record` to completion. Nodes already finished in `record` are reused.
pub async fn run<R: Runner>(
    loaded: LoadedWorkflow,
    record: RunRecord,
    runner: R,
    config: RunConfig,
    on_event: Box<dyn Fn(Event) + Send + Sync>,
) -> Result<RunOutcome, EngineError> {
    run_stoppable(loaded, record, runner, config, on_event, false).await
}

/// [`run`], and with `stop_on_signals` SIGINT/SIGTERM stop the run as `argo stop` does (see
/// [`STOPPED`]); for the command line, which owns the process's signals.
pub async fn run_stoppable<R: Runner>(
    loaded: LoadedWorkflow,
    record: RunRecord,
    runner: R,
    config: RunConfig,
    on_event: Box<dyn Fn(Event) + Send + Sync>,
    stop_on_signals: bool,
) -> Result<RunOutcome, EngineError> {
    let otel = config.otel.clone();
    let walked = walk(loaded, record, runner, config, on_event, stop_on_signals).await?;
    let record = walked.record;
    let export_error = telemetry::emit_root_span(
        &otel,
        &telemetry::RootSpan {
            trace_id: record.trace_id,
            span_id: record.root_span_id,
            workflow_name: &record.name,
            namespace: &record.namespace,
            corr: &walked.corr,
            start: walked.started,
            end: walked.finished,
            phase: workflow_status_text(record.status.phase),
            environment: &otel.environment,
        },
    )
    .await
    .err();
    let drained = telemetry::drain_spool(&otel).await;
    Ok(RunOutcome {
        record,
        export_error,
        pods_run: walked.pods_run,
        drained,
    })
}

/// [`walk`] without a live view or signal handling, for the in-process semantics tests.
#[cfg(test)]
pub(super) async fn walk_for_tests<R: Runner>(
    loaded: LoadedWorkflow,
    record: RunRecord,
    runner: R,
    config: RunConfig,
) -> Result<RunRecord, EngineError> {
    let walked = walk(loaded, record, runner, config, Box::new(|_| {}), false).await?;
    Ok(walked.record)
}

/// A run walked to its end, before its root span is emitted.
struct Walked {
    record: RunRecord,
    pods_run: usize,
    corr: Correlation,
    started: SystemTime,
    finished: SystemTime,
}

/// Runs the workflow's nodes and saves the finished record; telemetry is the caller's.
async fn walk<R: Runner>(
    loaded: LoadedWorkflow,
    record: RunRecord,
    runner: R,
    config: RunConfig,
    on_event: Box<dyn Fn(Event) + Send + Sync>,
    stop_on_signals: bool,
) -> Result<Walked, EngineError> {
    let mut record = record;
    let previous = std::mem::take(&mut record.status.nodes);
    record.status.phase = Phase::Running;
    record.status.finished_at = None;
    record.status.message = None;
    for node in previous.values() {
        if !node.phase.is_finished()
            && let Some(pgid) = node.process_group
        {
            super::runner::kill_leftover(pgid, &node.id);
        }
    }
    config.store.save(&record)?;
    let work_root = config.store.dir().join(&record.name);
    std::fs::create_dir_all(&work_root).map_err(|source| EngineError::WorkDir {
        dir: work_root.clone(),
        source,
    })?;
    let started = record
        .status
        .started_at
        .as_deref()
        .and_then(clock::parse)
        .unwrap_or_else(SystemTime::now);
    let wf = loaded.workflow;
    let mut globals = HashMap::new();
    globals.insert("workflow.name".into(), record.name.clone());
    globals.insert("workflow.namespace".into(), record.namespace.clone());
    globals.insert("workflow.uid".into(), record.trace_id.to_hex());
    globals.insert("workflow.mainEntrypoint".into(), wf.spec.entrypoint.clone());
    globals.insert(
        "workflow.creationTimestamp".into(),
        record.status.started_at.clone().unwrap_or_default(),
    );
    globals.insert(
        "workflow.serviceAccountName".into(),
        wf.spec.service_account_name.clone().unwrap_or_default(),
    );
    for (k, v) in &wf.metadata.labels {
        globals.insert(format!("workflow.labels.{k}"), v.clone());
    }
    for (k, v) in &wf.metadata.annotations {
        globals.insert(format!("workflow.annotations.{k}"), v.clone());
    }
    let params_json: Vec<serde_json::Value> = loaded
        .parameters
        .iter()
        .map(|(k, v)| serde_json::json!({"name": k, "value": v}))
        .collect();
    globals.insert(
        "workflow.parameters".into(),
        serde_json::Value::Array(params_json).to_string(),
    );
    for (k, v) in &loaded.parameters {
        globals.insert(format!("workflow.parameters.{k}"), v.clone());
    }
    let corr = Correlation::from_parameters(&loaded.parameters);
    let deadline_secs = wf
        .spec
        .active_deadline_seconds
        .as_ref()
        .and_then(|s| vars::parse_seconds(s.as_str()));
    let (cancel_tx, cancel_rx) = watch::channel(None::<String>);
    let cancel_tx = Arc::new(cancel_tx);
    let state = Arc::new(Mutex::new(State {
        record,
        previous,
        globals,
        pods_run: 0,
    }));
    let saver = Saver::start(state.clone(), config.store.clone());
    let inner = Arc::new(Inner {
        pod_permits: wf
            .spec
            .parallelism
            .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
        wf,
        runner,
        state: state.clone(),
        saver,
        corr,
        work_root,
        cancel: cancel_rx,
        on_event,
        config,
    });
    let deadline_tx = cancel_tx.clone();
    let deadline_task = deadline_secs.map(|secs| {
        let remaining = (started + secs)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::spawn(async move {
            tokio::time::sleep(remaining).await;
            let _ = deadline_tx.send(Some("Step exceeded its deadline".into()));
        })
    });

    let signals = stop_on_signals.then(|| watch_signals(cancel_tx.clone()));
    let (name, entry_tmpl) = {
        let st = inner.lock();
        (st.record.name.clone(), inner.wf.spec.entrypoint.clone())
    };
    let entry_args = inner.wf.template(&entry_tmpl).map_or_else(Vec::new, |t| {
        t.inputs
            .parameters
            .iter()
            .filter_map(|p| {
                loaded
                    .parameters
                    .iter()
                    .find(|(k, _)| k == &p.name)
                    .cloned()
            })
            .collect()
    });
    let entry = inner
        .clone()
        .execute(Call {
            name: name.clone(),
            display: name.clone(),
            template: entry_tmpl,
            args: entry_args,
            boundary: None,
            retry_index: None,
            replaces: None,
        })
        .await;
    let mut phase = entry.phase;
    let mut message = entry.message.clone();
    // As on Argo, the exit handler runs even after the workflow's deadline stopped it.
    if let Some(task) = &deadline_task {
        task.abort();
    }
    cancel_tx.send_replace(None);
    if let Some(exit) = inner.wf.spec.on_exit.clone() {
        {
            let mut st = inner.lock();
            let duration = SystemTime::now()
                .duration_since(started)
                .unwrap_or_default()
                .as_secs_f64();
            let failures = failures_json(&st.record.status.nodes);
            st.globals
                .insert("workflow.status".into(), workflow_status_text(phase).into());
            st.globals
                .insert("workflow.duration".into(), format!("{duration}"));
            st.globals.insert("workflow.failures".into(), failures);
        }
        let exit_name = format!("{name}.onExit");
        let handler = inner
            .clone()
            .execute(Call {
                name: exit_name.clone(),
                display: exit_name,
                template: exit,
                args: Vec::new(),
                boundary: None,
                retry_index: None,
                replaces: None,
            })
            .await;
        if phase == Phase::Succeeded && matches!(handler.phase, Phase::Failed | Phase::Error) {
            phase = handler.phase;
            message = handler.message;
        }
    }
    if let Some(signals) = signals {
        signals.abort();
    }
    let finished = SystemTime::now();
    let (record, pods_run) = {
        let mut st = inner.lock();
        st.record.status.phase = phase;
        st.record.status.message = message;
        st.record.status.finished_at = Some(clock::rfc3339(finished));
        (st.record.clone(), st.pods_run)
    };
    inner.saver.stop();
    inner.config.store.save(&record)?;
    Ok(Walked {
        record,
        pods_run,
        corr: inner.corr.clone(),
        started,
        finished,
    })
}

/// `obsctl.recorded_by_runner` of an attempt that died with an interrupted `obsctl run`.
pub const INTERRUPTED_BY_RESTART: &str = "controller-restart";

/// The message of steps stopped because obsctl was asked to stop.
pub const STOPPED: &str = "Stopped: obsctl received SIGINT or SIGTERM";

/// SIGINT or SIGTERM stops the run as `argo stop` does: running steps get SIGTERM (their shims
/// still export their spans), nothing new starts, the exit handler runs, the record is
/// finished. A second signal exits at once.
fn watch_signals(cancel: Arc<watch::Sender<Option<String>>>) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        cancel.send_replace(Some(STOPPED.into()));
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        std::process::exit(130);
    })
}

fn workflow_status_text(phase: Phase) -> &'static str {
    match phase {
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
        Phase::Error => "Error",
        Phase::Pending => "Pending",
        Phase::Running => "Running",
        Phase::Skipped => "Skipped",
        Phase::Omitted => "Omitted",
    }
}

/// `{{workflow.failures}}`: the failed Pod nodes, shaped as Argo shapes them.
fn failures_json(nodes: &BTreeMap<String, NodeStatus>) -> String {
    let list: Vec<serde_json::Value> = nodes
        .values()
        .filter(|n| n.node_type == NodeType::Pod && matches!(n.phase, Phase::Failed | Phase::Error))
        .map(|n| {
            serde_json::json!({
                "displayName": n.display_name,
                "message": n.message.clone().unwrap_or_default(),
                "templateName": n.template_name.clone().unwrap_or_default(),
                "phase": workflow_status_text(n.phase),
                "podName": n.id,
                "finishedAt": n.finished_at.clone().unwrap_or_default(),
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

struct State {
    record: RunRecord,
    /// Nodes of the record being resumed; finished Pod and Skipped nodes are reused from here.
    previous: BTreeMap<String, NodeStatus>,
    /// `workflow.*` variables, growing as global outputs appear.
    globals: HashMap<String, String>,
    pods_run: usize,
}

struct Inner<R: Runner> {
    wf: Workflow,
    runner: R,
    state: Arc<Mutex<State>>,
    saver: Saver,
    corr: Correlation,
    work_root: PathBuf,
    pod_permits: Option<Arc<Semaphore>>,
    cancel: watch::Receiver<Option<String>>,
    on_event: Box<dyn Fn(Event) + Send + Sync>,
    config: RunConfig,
}

/// One invocation of a template, as Argo names it.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    display: String,
    template: String,
    /// Argument values, already substituted.
    args: Vec<(String, String)>,
    boundary: Option<String>,
    /// Set for the children of a Retry node.
    retry_index: Option<u32>,
    /// The attempt this call replaces (the previous child of a Retry node): its span is linked.
    replaces: Option<TraceContext>,
}

#[derive(Debug, Clone)]
struct NodeResult {
    id: String,
    phase: Phase,
    message: Option<String>,
    outputs: Outputs,
    /// Argo's outbound nodes: where the next steps group or dependent task hangs.
    outbound: Vec<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
}

enum Begin {
    Done(Box<NodeStatus>),
    Run {
        id: String,
        /// The same Pod node as an interrupted run left it (still Running): its attempt died
        /// with that run's controller.
        interrupted: Option<Box<NodeStatus>>,
    },
}

impl<R: Runner> Inner<R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("run state lock")
    }

    fn node_id(&self, name: &str) -> String {
        vars::node_id(&self.lock().record.name, name)
    }

    fn cancelled(&self) -> Option<String> {
        self.cancel.borrow().clone()
    }

    /// Creates (or, on resume, reuses) the node `name`.
    fn begin(
        &self,
        name: &str,
        display: &str,
        node_type: NodeType,
        template: Option<&str>,
        boundary: Option<&str>,
        reusable: bool,
    ) -> Begin {
        let mut st = self.lock();
        let id = vars::node_id(&st.record.name, name);
        let previous = st.previous.get(&id).cloned();
        if reusable
            && let Some(prev) = &previous
            && prev.phase.is_finished()
            && !crate::defect::Defect::ResumeReruns.active()
        {
            st.record.status.nodes.insert(id, prev.clone());
            drop(st);
            self.saver.dirty();
            return Begin::Done(Box::new(prev.clone()));
        }
        let interrupted = previous
            .as_ref()
            .filter(|p| p.node_type == NodeType::Pod && p.phase == Phase::Running)
            .cloned();
        let node = NodeStatus {
            id: id.clone(),
            name: name.to_string(),
            display_name: display.to_string(),
            node_type,
            template_name: template.map(str::to_string),
            phase: if node_type == NodeType::Pod {
                Phase::Pending
            } else {
                Phase::Running
            },
            boundary_id: boundary.map(str::to_string),
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
        st.record.status.nodes.insert(id.clone(), node);
        drop(st);
        self.saver.dirty();
        Begin::Run {
            id,
            interrupted: interrupted.map(Box::new),
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut NodeStatus)) {
        let mut st = self.lock();
        if let Some(node) = st.record.status.nodes.get_mut(id) {
            f(node);
        }
        drop(st);
        self.saver.dirty();
    }

    fn add_child(&self, parent: &str, child: &str) {
        self.update(parent, |n| {
            if !n.children.iter().any(|c| c == child) {
                n.children.push(child.to_string());
            }
        });
    }

    fn finish(
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

    fn reused(node: NodeStatus) -> NodeResult {
        NodeResult {
            outbound: vec![node.id.clone()],
            id: node.id,
            phase: node.phase,
            message: node.message,
            outputs: node.outputs.unwrap_or_default(),
            started_at: node.started_at,
            finished_at: node.finished_at,
        }
    }

    /// A leaf node that never runs: `when` false (Skipped), `depends` false (Omitted), or an
    /// invocation that could not be resolved (Error).
    fn leaf(
        &self,
        name: &str,
        display: &str,
        template: &str,
        boundary: Option<&str>,
        phase: Phase,
        message: String,
    ) -> NodeResult {
        let node_type = if phase == Phase::Error {
            NodeType::Pod
        } else {
            NodeType::Skipped
        };
        match self.begin(name, display, node_type, Some(template), boundary, true) {
            Begin::Done(node) => Self::reused(*node),
            Begin::Run { id, .. } => self.finish(
                &id,
                phase,
                Some(message),
                Outputs::default(),
                vec![id.clone()],
            ),
        }
    }

    /// Sets `workflow.outputs.parameters.<globalName>` and the workflow's outputs.
    fn set_global(&self, name: &str, value: &str) {
        let mut st = self.lock();
        st.globals.insert(
            format!("workflow.outputs.parameters.{name}"),
            value.to_string(),
        );
        let outputs = st
            .record
            .status
            .outputs
            .get_or_insert_with(Outputs::default);
        match outputs.parameters.iter_mut().find(|p| p.name == name) {
            Some(p) => p.value = value.to_string(),
            None => outputs.parameters.push(Parameter {
                name: name.to_string(),
                value: value.to_string(),
            }),
        }
        drop(st);
        self.saver.dirty();
    }

    /// The start of a steps or DAG node: its node, then its parameter scope. A scope that cannot
    /// be formed (an input not supplied) ends the node in Error, which the caller returns.
    fn open_group(
        &self,
        call: &Call,
        tmpl: &Template,
        node_type: NodeType,
    ) -> Result<(String, HashMap<String, String>), Box<NodeResult>> {
        let id = match self.begin(
            &call.name,
            &call.display,
            node_type,
            Some(&tmpl.name),
            call.boundary.as_deref(),
            false,
        ) {
            Begin::Run { id, .. } => id,
            Begin::Done(node) => node.id,
        };
        match self.scope_for(tmpl, &call.args) {
            Ok(scope) => Ok((id, scope)),
            Err(message) => Err(Box::new(self.finish(
                &id,
                Phase::Error,
                Some(message),
                Outputs::default(),
                vec![id.clone()],
            ))),
        }
    }

    fn scope_for(
        &self,
        tmpl: &Template,
        args: &[(String, String)],
    ) -> Result<HashMap<String, String>, String> {
        let mut scope = self.lock().globals.clone();
        for p in &tmpl.inputs.parameters {
            let value = match args.iter().find(|(k, _)| k == &p.name) {
                Some((_, v)) => v.clone(),
                None => {
                    let raw = p
                        .value
                        .as_ref()
                        .or(p.default.as_ref())
                        .map(|v| v.0.clone())
                        .ok_or_else(|| format!("inputs.parameters.{} was not supplied", p.name))?;
                    vars::substitute(&raw, &scope).map_err(|e| e.to_string())?
                }
            };
            scope.insert(format!("inputs.parameters.{}", p.name), value);
        }
        Ok(scope)
    }

    fn execute(self: Arc<Self>, call: Call) -> BoxFut<NodeResult> {
        Box::pin(async move {
            let Some(tmpl) = self.wf.template(&call.template).cloned() else {
                let message = format!("unknown template {}", call.template);
                return self.leaf(
                    &call.name,
                    &call.display,
                    &call.template,
                    call.boundary.as_deref(),
                    Phase::Error,
                    message,
                );
            };
            if tmpl.retry_strategy.is_some() && call.retry_index.is_none() {
                return self.execute_retry(call, tmpl).await;
            }
            match tmpl.kind() {
                Some(TemplateKind::Container | TemplateKind::Script) => {
                    self.run_pod(call, tmpl).await
                }
                Some(TemplateKind::Steps) => self.run_steps(call, tmpl).await,
                Some(TemplateKind::Dag) => self.run_dag(call, tmpl).await,
                None => unreachable!("the loader checks template kinds"),
            }
        })
    }

    async fn execute_retry(self: Arc<Self>, call: Call, tmpl: Template) -> NodeResult {
        let strategy = tmpl.retry_strategy.clone().expect("retry strategy present");
        let id = match self.begin(
            &call.name,
            &call.display,
            NodeType::Retry,
            Some(&tmpl.name),
            call.boundary.as_deref(),
            false,
        ) {
            Begin::Run { id, .. } => id,
            Begin::Done(node) => node.id,
        };
        let scope = self.scope_for(&tmpl, &call.args).unwrap_or_default();
        let limit = strategy
            .limit
            .as_ref()
            .and_then(|l| vars::substitute(l.as_str(), &scope).ok())
            .and_then(|l| l.parse::<u32>().ok());
        let policy = strategy.retry_policy.as_deref().unwrap_or("OnFailure");
        let backoff = strategy.backoff.as_ref();
        let base = backoff
            .and_then(|b| b.duration.as_ref())
            .and_then(|d| vars::parse_duration(d.as_str()));
        let factor = backoff
            .and_then(|b| b.factor.as_ref())
            .and_then(|f| f.as_str().parse::<f64>().ok())
            .unwrap_or(1.0);
        let cap = backoff
            .and_then(|b| b.cap.as_ref())
            .and_then(|d| vars::parse_duration(d.as_str()));
        let max_duration = backoff
            .and_then(|b| b.max_duration.as_ref())
            .and_then(|d| vars::parse_duration(d.as_str()));
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut message_override = None;
        let mut replaces = None;
        let last = loop {
            let child = self
                .clone()
                .execute(Call {
                    name: format!("{}({attempt})", call.name),
                    display: format!("{}({attempt})", call.display),
                    template: call.template.clone(),
                    args: call.args.clone(),
                    boundary: call.boundary.clone(),
                    retry_index: Some(attempt),
                    replaces,
                })
                .await;
            self.add_child(&id, &child.id);
            replaces = self.span_of(&child.id);
            let retry = match child.phase {
                Phase::Failed => matches!(policy, "Always" | "OnFailure"),
                Phase::Error => matches!(policy, "Always" | "OnError"),
                _ => false,
            };
            if !retry || limit.is_some_and(|l| attempt >= l) || self.cancelled().is_some() {
                break child;
            }
            if let Some(base) = base {
                let wait = base.mul_f64(factor.powi(attempt as i32));
                let wait = cap.map_or(wait, |c| wait.min(c));
                if max_duration.is_some_and(|m| started.elapsed() + wait > m) {
                    message_override = Some("Max duration limit exceeded".to_string());
                    break child;
                }
                let next_id = self.node_id(&format!("{}({})", call.name, attempt + 1));
                let next_recorded = self.lock().previous.contains_key(&next_id);
                if !next_recorded {
                    tokio::time::sleep(wait).await;
                }
            }
            attempt += 1;
        };
        let message = message_override.or(last.message.clone());
        self.finish(
            &id,
            last.phase,
            message,
            last.outputs.clone(),
            vec![last.id.clone()],
        )
    }

    fn agent_and_step(&self, tmpl: &Template) -> (String, String) {
        let labels = &tmpl.metadata.labels;
        let agent = labels
            .get("agent")
            .or_else(|| self.wf.metadata.labels.get("agent"))
            .cloned()
            .unwrap_or_else(|| tmpl.name.clone());
        let step = labels
            .get("step")
            .cloned()
            .unwrap_or_else(|| tmpl.name.clone());
        (agent, step)
    }

    async fn run_pod(self: Arc<Self>, call: Call, tmpl: Template) -> NodeResult {
        let (id, interrupted) = match self.begin(
            &call.name,
            &call.display,
            NodeType::Pod,
            Some(&tmpl.name),
            call.boundary.as_deref(),
            true,
        ) {
            Begin::Done(node) => return Self::reused(*node),
            Begin::Run { id, interrupted } => (id, interrupted),
        };
        let fail = |this: &Self, phase: Phase, message: String| {
            this.finish(
                &id,
                phase,
                Some(message),
                Outputs::default(),
                vec![id.clone()],
            )
        };
        if let Some(reason) = self.cancelled() {
            return fail(&self, Phase::Failed, reason);
        }
        let mut scope = match self.scope_for(&tmpl, &call.args) {
            Ok(scope) => scope,
            Err(message) => return fail(&self, Phase::Error, message),
        };
        scope.insert("pod.name".into(), id.clone());
        scope.insert("node.name".into(), call.name.clone());
        scope.insert("retries".into(), call.retry_index.unwrap_or(0).to_string());
        let (image, command, args, env, working_dir, source) = match (&tmpl.container, &tmpl.script)
        {
            (Some(c), _) => (&c.image, &c.command, &c.args, &c.env, &c.working_dir, None),
            (None, Some(s)) => (
                &s.image,
                &s.command,
                &s.args,
                &s.env,
                &s.working_dir,
                Some(&s.source),
            ),
            (None, None) => unreachable!("pod templates have a container or a script"),
        };
        let resolve = |text: &str| vars::substitute(text, &scope);
        let resolved: Result<_, vars::Unresolved> = (|| {
            let mut argv = Vec::new();
            for part in command.iter().chain(args.iter()) {
                argv.push(resolve(part)?);
            }
            let mut env_out = Vec::new();
            for e in env {
                env_out.push((e.name.clone(), resolve(e.value.as_deref().unwrap_or(""))?));
            }
            let working_dir = working_dir.as_deref().map(resolve).transpose()?;
            let source = source.map(|s| resolve(s)).transpose()?;
            let timeout = match (&tmpl.timeout, &tmpl.active_deadline_seconds) {
                (Some(t), _) => vars::parse_duration(&resolve(t.as_str())?),
                (None, Some(s)) => vars::parse_seconds(&resolve(s.as_str())?),
                (None, None) => None,
            };
            Ok((argv, env_out, working_dir, source, timeout))
        })();
        let (argv, template_env, working_dir, source, timeout) = match resolved {
            Ok(r) => r,
            Err(e) => return fail(&self, Phase::Error, e.to_string()),
        };
        let (agent, step) = self.agent_and_step(&tmpl);
        let prev_attempt = interrupted
            .as_ref()
            .map(|n| n.telemetry.as_ref().map_or(0, |t| t.attempt));
        let attempt = prev_attempt.map_or(call.retry_index.unwrap_or(0), |a| a + 1);
        let _permit = match &self.pod_permits {
            Some(permits) => Some(permits.clone().acquire_owned().await.expect("never closed")),
            None => None,
        };
        if let Some(reason) = self.cancelled() {
            return fail(&self, Phase::Failed, reason);
        }
        let (workflow_name, trace_id, root_span, namespace) = {
            let st = self.lock();
            (
                st.record.name.clone(),
                st.record.trace_id,
                st.record.root_span_id,
                st.record.namespace.clone(),
            )
        };
        let template_json = serde_json::to_string(&tmpl).expect("templates always serialize");
        let mut step_env = telemetry::step_env(
            &self.config.otel,
            &self.corr,
            &StepIdentity {
                workflow_name: &workflow_name,
                namespace: &namespace,
                node_id: &id,
                agent: &agent,
                step: &step,
                template_json: &template_json,
            },
            trace_id,
            root_span,
        );
        step_env.extend(template_env);
        if let Some(prev) = &interrupted {
            self.record_interrupted(prev, &step_env, &argv).await;
        }
        let replaces = call
            .replaces
            .or_else(|| interrupted.as_ref().and_then(|n| self.span_of(&n.id)));
        if let Some(replaces) = replaces {
            step_env.push((
                crate::conventions::env::OBSCTL_REPLACES.into(),
                replaces.to_traceparent(),
            ));
        }
        let command = argv.clone();
        let env_for_outside = step_env.clone();
        let output_paths: Vec<String> = tmpl
            .outputs
            .parameters
            .iter()
            .filter_map(|p| p.value_from.as_ref()?.path.clone())
            .collect();
        let work_dir = self.work_root.join(format!("{id}.{attempt}"));
        let spec = StepSpec {
            node_id: id.clone(),
            node_name: call.name.clone(),
            template_name: tmpl.name.clone(),
            agent: agent.clone(),
            step: step.clone(),
            image: image.clone(),
            argv,
            env: step_env,
            working_dir,
            script: source,
            output_paths,
            // Flat: few directories to create per step, which matters in a burst.
            work_dir: work_dir.clone(),
        };
        let pod_started = SystemTime::now();
        self.update(&id, |n| {
            n.phase = Phase::Running;
            n.started_at = Some(clock::now());
        });
        (self.on_event)(Event::PodStarted {
            id: id.clone(),
            display: call.display.clone(),
        });
        self.lock().pods_run += 1;
        let mut handle = match self.runner.start(spec) {
            Ok(handle) => handle,
            Err(e) => {
                let result = fail(&self, Phase::Error, e.to_string());
                self.pod_finished(&result, &call.display);
                return result;
            }
        };
        let pgid = handle.process_group();
        self.update(&id, |n| n.process_group = pgid);
        let mut cancel = self.cancel.clone();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut stop_reason: Option<String> = None;
        let mut telemetry = handle.take_telemetry();
        let record_telemetry = |start: super::runner::ShimStart| {
            self.update(&id, |n| {
                n.telemetry = Some(StepTelemetry {
                    agent: agent.clone(),
                    step: step.clone(),
                    trace_id: start.trace_id,
                    span_id: start.span_id,
                    attempt,
                });
            });
        };
        let waited = loop {
            let sleep_until =
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
            tokio::select! {
                exit = handle.wait() => break exit,
                start = async { telemetry.as_mut().expect("guarded").await }, if telemetry.is_some() => {
                    telemetry = None;
                    if let Ok(Some(start)) = start {
                        record_telemetry(start);
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(sleep_until.into()), if stop_reason.is_none() && deadline.is_some() => {
                    stop_reason = Some("Pod was active on the node longer than the specified deadline".into());
                }
                changed = cancel.changed(), if stop_reason.is_none() => {
                    if changed.is_err() { continue; }
                    match cancel.borrow().clone() {
                        Some(reason) => stop_reason = Some(reason),
                        None => continue,
                    }
                }
            }
            // Kubernetes' way: SIGTERM, a grace period, then SIGKILL.
            handle.terminate();
            match tokio::time::timeout(STOP_GRACE, handle.wait()).await {
                Ok(exit) => break exit,
                Err(_) => {
                    handle.kill();
                    break handle.wait().await;
                }
            }
        };
        // The step may have exited before its first line was taken in the loop above.
        if let Some(Ok(Some(start))) = telemetry.as_mut().map(|rx| rx.try_recv()) {
            record_telemetry(start);
        }
        if let Ok(StepExit {
            shim_killed_by: Some(signal),
            ..
        }) = &waited
            && let Some(t) = self.telemetry_of(&id)
            && !crate::defect::Defect::NoOutsideRecord.active()
        {
            KilledAttempt {
                env: &env_for_outside,
                agent: &t.agent,
                step: &t.step,
                trace_id: t.trace_id,
                span_id: t.span_id,
                start: pod_started,
                end: SystemTime::now(),
                command: &command,
                signal: *signal,
                why: signal.as_str(),
                log_file: Some(&work_dir.join("log")),
            }
            .record()
            .await;
        }
        let result = match waited {
            Err(e) => fail(&self, Phase::Error, e.to_string()),
            Ok(exit) => {
                let mut outputs = Outputs {
                    exit_code: Some(exit.exit_code.to_string()),
                    result: Some(trim_newline(&exit.stdout).to_string()),
                    parameters: Vec::new(),
                };
                let (mut phase, mut message) = match (&stop_reason, exit.exit_code) {
                    (Some(reason), _) => (Phase::Failed, Some(reason.clone())),
                    (None, 0) => (Phase::Succeeded, None),
                    (None, code) => (Phase::Failed, Some(format!("Error (exit code {code})"))),
                };
                for p in &tmpl.outputs.parameters {
                    let value = match &p.value_from {
                        Some(vf) => {
                            let path = vf.path.clone().unwrap_or_default();
                            match exit.files.get(&path).cloned().flatten() {
                                Some(text) => Some(trim_newline(&text).to_string()),
                                None => vf.default.as_ref().map(|d| d.0.clone()),
                            }
                        }
                        None => p
                            .value
                            .as_ref()
                            .and_then(|v| vars::substitute(v.as_str(), &scope).ok()),
                    };
                    match value {
                        Some(value) => {
                            if phase == Phase::Succeeded
                                && let Some(global) = &p.global_name
                            {
                                self.set_global(global, &value);
                            }
                            outputs.parameters.push(Parameter {
                                name: p.name.clone(),
                                value,
                            });
                        }
                        None if phase == Phase::Succeeded => {
                            phase = Phase::Error;
                            message = Some(format!(
                                "failed to read output parameter {}: {} does not exist",
                                p.name,
                                p.value_from
                                    .as_ref()
                                    .and_then(|v| v.path.clone())
                                    .unwrap_or_default()
                            ));
                        }
                        None => {}
                    }
                }
                self.finish(&id, phase, message, outputs, vec![id.clone()])
            }
        };
        self.pod_finished(&result, &call.display);
        result
    }

    fn telemetry_of(&self, id: &str) -> Option<StepTelemetry> {
        self.lock().record.status.nodes.get(id)?.telemetry.clone()
    }

    /// The span of a Pod node's attempt, for the link from the attempt that replaces it.
    fn span_of(&self, id: &str) -> Option<TraceContext> {
        let prev = self
            .lock()
            .previous
            .get(id)
            .and_then(|n| n.telemetry.clone());
        let t = self.telemetry_of(id).or(prev)?;
        Some(TraceContext {
            trace_id: t.trace_id,
            span_id: t.span_id,
            sampled: true,
        })
    }

    /// Records from outside the attempt that a dead controller left running: its shim died with
    /// that `obsctl run` (PDEATHSIG) before it could export. It ended when its log was last
    /// written, the closest trace of its death on disk.
    async fn record_interrupted(
        &self,
        prev: &NodeStatus,
        env: &[(String, String)],
        argv: &[String],
    ) {
        let Some(t) = &prev.telemetry else {
            return;
        };
        let log = self
            .work_root
            .join(format!("{}.{}", prev.id, t.attempt))
            .join("log");
        let start = prev
            .started_at
            .as_deref()
            .and_then(clock::parse)
            .unwrap_or_else(SystemTime::now);
        let end = std::fs::metadata(&log)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        KilledAttempt {
            env,
            agent: &t.agent,
            step: &t.step,
            trace_id: t.trace_id,
            span_id: t.span_id,
            start,
            end,
            command: argv,
            signal: nix::sys::signal::Signal::SIGKILL,
            why: INTERRUPTED_BY_RESTART,
            log_file: Some(&log),
        }
        .record()
        .await;
    }

    fn pod_finished(&self, result: &NodeResult, display: &str) {
        (self.on_event)(Event::PodFinished {
            id: result.id.clone(),
            display: display.to_string(),
            phase: result.phase,
        });
    }

    /// Expands a step or task into its invocations: `(node name, display name, item vars)`.
    fn expand(
        &self,
        step: &Step,
        base_name: &str,
        scope: &HashMap<String, String>,
    ) -> Result<Option<Vec<Invocation>>, String> {
        let items: Vec<serde_json::Value> = if let Some(items) = &step.with_items {
            items
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(s) => vars::substitute(s, scope)
                        .map(serde_json::Value::String)
                        .map_err(|e| e.to_string()),
                    other => Ok(other.clone()),
                })
                .collect::<Result<_, _>>()?
        } else if let Some(param) = &step.with_param {
            let text = vars::substitute(param, scope).map_err(|e| e.to_string())?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Array(items)) => items,
                _ => {
                    return Err(format!(
                        "withParam value could not be parsed as a JSON list: {text}"
                    ));
                }
            }
        } else if let Some(seq) = &step.with_sequence {
            let field = |v: &Option<super::spec::Scalar>| {
                v.as_ref()
                    .map(|v| vars::substitute(v.as_str(), scope).map_err(|e| e.to_string()))
                    .transpose()
            };
            let (count, start, end) = (field(&seq.count)?, field(&seq.start)?, field(&seq.end)?);
            vars::sequence(
                count.as_deref(),
                start.as_deref(),
                end.as_deref(),
                seq.format.as_deref(),
            )
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(serde_json::Value::String)
            .collect()
        } else {
            return Ok(None);
        };
        Ok(Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let (name, vars) = vars::expand_item(base_name, i, item);
                    let (display, _) = vars::expand_item(&step.name, i, item);
                    (name, display, vars)
                })
                .collect(),
        ))
    }

    /// Runs one expanded invocation of `step`: `when`, arguments, then the template.
    fn invoke(
        self: Arc<Self>,
        step: Step,
        name: String,
        display: String,
        scope: HashMap<String, String>,
        boundary: String,
        pool: Option<Arc<Semaphore>>,
    ) -> BoxFut<NodeResult> {
        Box::pin(async move {
            if let Some(when) = &step.when {
                let decided = vars::substitute(when, &scope)
                    .map_err(|e| e.to_string())
                    .and_then(|w| {
                        expr::eval_when(&w)
                            .map(|ok| (ok, w))
                            .map_err(|e| e.to_string())
                    });
                match decided {
                    Ok((true, _)) => {}
                    Ok((false, w)) => {
                        return self.leaf(
                            &name,
                            &display,
                            &step.template,
                            Some(&boundary),
                            Phase::Skipped,
                            format!("when '{w}' evaluated false"),
                        );
                    }
                    Err(e) => {
                        return self.leaf(
                            &name,
                            &display,
                            &step.template,
                            Some(&boundary),
                            Phase::Error,
                            e,
                        );
                    }
                }
            }
            let mut args = Vec::new();
            for a in &step.arguments.parameters {
                let raw = a.value.as_ref().map(|v| v.0.clone()).unwrap_or_default();
                match vars::substitute(&raw, &scope) {
                    Ok(v) => args.push((a.name.clone(), v)),
                    Err(e) => {
                        return self.leaf(
                            &name,
                            &display,
                            &step.template,
                            Some(&boundary),
                            Phase::Error,
                            e.to_string(),
                        );
                    }
                }
            }
            let _permit = match pool {
                Some(pool) => Some(pool.acquire_owned().await.expect("never closed")),
                None => None,
            };
            self.execute(Call {
                name,
                display,
                template: step.template.clone(),
                args,
                boundary: Some(boundary),
                retry_index: None,
                replaces: None,
            })
            .await
        })
    }

    /// The template's own outputs (steps and dag templates), and their global names.
    fn template_outputs(
        &self,
        tmpl: &Template,
        scope: &HashMap<String, String>,
    ) -> Result<Outputs, String> {
        let mut outputs = Outputs::default();
        for p in &tmpl.outputs.parameters {
            let raw = match &p.value_from {
                Some(vf) => vf.parameter.clone().unwrap_or_default(),
                None => p.value.as_ref().map(|v| v.0.clone()).unwrap_or_default(),
            };
            let value = match vars::substitute(&raw, scope) {
                Ok(v) => v,
                Err(e) => match p.value_from.as_ref().and_then(|vf| vf.default.as_ref()) {
                    Some(d) => d.0.clone(),
                    None => return Err(e.to_string()),
                },
            };
            if let Some(global) = &p.global_name {
                self.set_global(global, &value);
            }
            outputs.parameters.push(Parameter {
                name: p.name.clone(),
                value,
            });
        }
        Ok(outputs)
    }

    async fn run_steps(self: Arc<Self>, call: Call, tmpl: Template) -> NodeResult {
        let (id, mut scope) = match self.open_group(&call, &tmpl, NodeType::Steps) {
            Ok(opened) => opened,
            Err(failed) => return *failed,
        };
        let pool = tmpl
            .parallelism
            .map(|n| Arc::new(Semaphore::new(n.max(1) as usize)));
        let mut outbound: Vec<String> = Vec::new();
        let mut phase = Phase::Succeeded;
        let mut message = None;
        for (i, group) in tmpl.steps.clone().unwrap_or_default().iter().enumerate() {
            if let Some(reason) = self.cancelled() {
                phase = Phase::Failed;
                message = Some(reason);
                break;
            }
            let group_name = format!("{}[{i}]", call.name);
            let group_id = match self.begin(
                &group_name,
                &format!("[{i}]"),
                NodeType::StepGroup,
                Some(&tmpl.name),
                Some(&id),
                false,
            ) {
                Begin::Run { id, .. } => id,
                Begin::Done(node) => node.id,
            };
            if i == 0 {
                self.add_child(&id, &group_id);
            } else {
                for o in &outbound {
                    self.add_child(o, &group_id);
                }
            }
            // Refresh globals (outputs of earlier groups may have set some).
            for (k, v) in self.lock().globals.iter() {
                scope.insert(k.clone(), v.clone());
            }
            let mut launched: Vec<(Step, bool, Vec<tokio::task::JoinHandle<NodeResult>>)> =
                Vec::new();
            let mut group_error = None;
            for step in group {
                let base = format!("{group_name}.{}", step.name);
                match self.expand(step, &base, &scope) {
                    Err(e) => {
                        group_error = Some(format!("step {}: {e}", step.name));
                        break;
                    }
                    Ok(expansion) => {
                        let is_loop = expansion.is_some();
                        let invocations = expansion.unwrap_or_else(|| {
                            vec![(base.clone(), step.name.clone(), HashMap::new())]
                        });
                        let handles = invocations
                            .into_iter()
                            .map(|(name, display, item_vars)| {
                                let mut local = scope.clone();
                                local.extend(item_vars);
                                tokio::spawn(self.clone().invoke(
                                    step.clone(),
                                    name,
                                    display,
                                    local,
                                    id.clone(),
                                    pool.clone(),
                                ))
                            })
                            .collect();
                        launched.push((step.clone(), is_loop, handles));
                    }
                }
            }
            let mut group_phase = Phase::Succeeded;
            let mut group_message = group_error.clone();
            if group_error.is_some() {
                group_phase = Phase::Error;
            }
            let mut next_outbound = Vec::new();
            for (step, is_loop, handles) in launched {
                let mut results = Vec::new();
                for h in handles {
                    results.push(h.await.expect("step tasks do not panic"));
                }
                for r in &results {
                    self.add_child(&group_id, &r.id);
                    next_outbound.extend(r.outbound.iter().cloned());
                    if matches!(r.phase, Phase::Failed | Phase::Error)
                        && !continues_on(step.continue_on.as_ref(), r.phase)
                        && group_phase == Phase::Succeeded
                    {
                        group_phase = Phase::Failed;
                        group_message = Some(format!("child '{}' failed", r.id));
                    }
                }
                add_to_scope(
                    &mut scope,
                    &format!("steps.{}", step.name),
                    &results,
                    is_loop,
                );
            }
            if next_outbound.is_empty() {
                next_outbound.push(group_id.clone());
            }
            self.finish(
                &group_id,
                group_phase,
                group_message.clone(),
                Outputs::default(),
                next_outbound.clone(),
            );
            outbound = next_outbound;
            if group_phase != Phase::Succeeded {
                phase = Phase::Failed;
                message = Some(format!(
                    "step group {group_id} was unsuccessful: {}",
                    group_message.unwrap_or_default()
                ));
                break;
            }
        }
        let outputs = if phase == Phase::Succeeded {
            match self.template_outputs(&tmpl, &scope) {
                Ok(o) => o,
                Err(e) => {
                    phase = Phase::Error;
                    message = Some(e);
                    Outputs::default()
                }
            }
        } else {
            Outputs::default()
        };
        if outbound.is_empty() {
            outbound.push(id.clone());
        }
        self.finish(&id, phase, message, outputs, outbound)
    }

    async fn run_dag(self: Arc<Self>, call: Call, tmpl: Template) -> NodeResult {
        let (id, mut scope) = match self.open_group(&call, &tmpl, NodeType::DAG) {
            Ok(opened) => opened,
            Err(failed) => return *failed,
        };
        let dag = tmpl.dag.clone().expect("dag template");
        let pool = tmpl
            .parallelism
            .map(|n| Arc::new(Semaphore::new(n.max(1) as usize)));
        let tasks: HashMap<String, super::spec::DagTask> = dag
            .tasks
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        let deps: HashMap<String, Option<Depends>> = dag
            .tasks
            .iter()
            .map(|t| {
                let d = match &t.depends {
                    Some(d) => Some(Depends::parse(d).expect("the loader parsed depends")),
                    None => t
                        .dependencies
                        .iter()
                        .map(|n| Depends::Task(n.clone(), None))
                        .reduce(|a, b| Depends::And(Box::new(a), Box::new(b))),
                };
                (t.name.clone(), d)
            })
            .collect();
        let dep_names = |task: &str| deps[task].as_ref().map_or_else(Vec::new, Depends::tasks);
        let mut done: HashMap<String, (NodeResult, Vec<Phase>)> = HashMap::new();
        let mut started: HashSet<String> = HashSet::new();
        let mut running = tokio::task::JoinSet::new();
        let mut stopped = None;
        loop {
            let mut progressed = true;
            while progressed && stopped.is_none() {
                progressed = false;
                if let Some(reason) = self.cancelled() {
                    stopped = Some(reason);
                    break;
                }
                for task in &dag.tasks {
                    if started.contains(&task.name)
                        || !dep_names(&task.name).iter().all(|d| done.contains_key(d))
                    {
                        continue;
                    }
                    started.insert(task.name.clone());
                    progressed = true;
                    let node_name = format!("{}.{}", call.name, task.name);
                    let node_id = self.node_id(&node_name);
                    let parents = dep_names(&task.name);
                    if parents.is_empty() {
                        self.add_child(&id, &node_id);
                    }
                    for p in &parents {
                        for o in &done[p].0.outbound {
                            self.add_child(o, &node_id);
                        }
                    }
                    let satisfied = deps[&task.name].as_ref().is_none_or(|d| {
                        d.eval(&|name, result| {
                            let (node, children) = &done[name];
                            let cont = tasks[name].continue_on.as_ref();
                            dep_satisfied(node.phase, children, result, cont)
                        })
                    });
                    if !satisfied {
                        let r = self.leaf(
                            &node_name,
                            &task.name,
                            &task.template,
                            Some(&id),
                            Phase::Omitted,
                            "omitted: depends condition not met".into(),
                        );
                        add_to_scope(
                            &mut scope,
                            &format!("tasks.{}", task.name),
                            std::slice::from_ref(&r),
                            false,
                        );
                        done.insert(task.name.clone(), (r, Vec::new()));
                        continue;
                    }
                    for (k, v) in self.lock().globals.iter() {
                        scope.insert(k.clone(), v.clone());
                    }
                    let this = self.clone();
                    let step = Step::from(task);
                    let local = scope.clone();
                    let dag_id = id.clone();
                    let pool = pool.clone();
                    let name = task.name.clone();
                    running.spawn(async move {
                        let out = this.run_task(step, node_name, local, dag_id, pool).await;
                        (name, out)
                    });
                }
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (name, (result, children, is_loop)) = joined.expect("dag tasks do not panic");
            add_to_scope(&mut scope, &format!("tasks.{name}"), &children, is_loop);
            if is_loop {
                scope.insert(
                    format!("tasks.{name}.status"),
                    workflow_status_text(result.phase).into(),
                );
                scope.insert(format!("tasks.{name}.id"), result.id.clone());
            }
            let phases = children.iter().map(|c| c.phase).collect();
            done.insert(name, (result, phases));
        }
        let targets: Vec<String> = match &dag.target {
            Some(t) => t.split_whitespace().map(str::to_string).collect(),
            None => dag
                .tasks
                .iter()
                .filter(|t| {
                    !dag.tasks
                        .iter()
                        .any(|o| dep_names(&o.name).contains(&t.name))
                })
                .map(|t| t.name.clone())
                .collect(),
        };
        let mut phase = Phase::Succeeded;
        let mut message = stopped.clone();
        let mut outbound = Vec::new();
        for target in &targets {
            let Some((node, _)) = done.get(target) else {
                phase = Phase::Failed;
                continue;
            };
            outbound.extend(node.outbound.iter().cloned());
            let branch = branch_phase(target, &done, &dep_names);
            if matches!(branch, Phase::Failed | Phase::Error)
                && !continues_on(tasks[target].continue_on.as_ref(), branch)
                && phase == Phase::Succeeded
            {
                phase = branch;
                message.get_or_insert_with(|| {
                    format!(
                        "task '{}' {}",
                        node.id,
                        workflow_status_text(branch).to_lowercase()
                    )
                });
            }
        }
        if stopped.is_some() {
            phase = Phase::Failed;
        }
        let outputs = if phase == Phase::Succeeded {
            match self.template_outputs(&tmpl, &scope) {
                Ok(o) => o,
                Err(e) => {
                    phase = Phase::Error;
                    message = Some(e);
                    Outputs::default()
                }
            }
        } else {
            Outputs::default()
        };
        if outbound.is_empty() {
            outbound.push(id.clone());
        }
        self.finish(&id, phase, message, outputs, outbound)
    }

    /// One DAG task: a single node, or a TaskGroup over its loop items. Returns the task's
    /// node, the nodes its variables aggregate over, and whether it looped.
    fn run_task(
        self: Arc<Self>,
        step: Step,
        node_name: String,
        scope: HashMap<String, String>,
        dag_id: String,
        pool: Option<Arc<Semaphore>>,
    ) -> BoxFut<(NodeResult, Vec<NodeResult>, bool)> {
        Box::pin(async move {
            let expansion = match self.expand(&step, &node_name, &scope) {
                Ok(e) => e,
                Err(e) => {
                    let r = self.leaf(
                        &node_name,
                        &step.name,
                        &step.template,
                        Some(&dag_id),
                        Phase::Error,
                        e,
                    );
                    return (r.clone(), vec![r], false);
                }
            };
            let Some(invocations) = expansion else {
                let r = self
                    .clone()
                    .invoke(
                        step.clone(),
                        node_name,
                        step.name.clone(),
                        scope,
                        dag_id,
                        pool,
                    )
                    .await;
                return (r.clone(), vec![r], false);
            };
            let group_id = match self.begin(
                &node_name,
                &step.name,
                NodeType::TaskGroup,
                Some(&step.template),
                Some(&dag_id),
                false,
            ) {
                Begin::Run { id, .. } => id,
                Begin::Done(node) => node.id,
            };
            let handles: Vec<_> = invocations
                .into_iter()
                .map(|(name, display, item_vars)| {
                    let mut local = scope.clone();
                    local.extend(item_vars);
                    tokio::spawn(self.clone().invoke(
                        step.clone(),
                        name,
                        display,
                        local,
                        dag_id.clone(),
                        pool.clone(),
                    ))
                })
                .collect();
            let mut children = Vec::new();
            for h in handles {
                children.push(h.await.expect("task items do not panic"));
            }
            let mut phase = Phase::Succeeded;
            let mut message = None;
            let mut outbound = Vec::new();
            for c in &children {
                self.add_child(&group_id, &c.id);
                outbound.extend(c.outbound.iter().cloned());
                if matches!(c.phase, Phase::Failed | Phase::Error)
                    && !continues_on(step.continue_on.as_ref(), c.phase)
                    && phase == Phase::Succeeded
                {
                    phase = Phase::Failed;
                    message = Some(format!("child '{}' failed", c.id));
                }
            }
            if outbound.is_empty() {
                outbound.push(group_id.clone());
            }
            let r = self.finish(&group_id, phase, message, Outputs::default(), outbound);
            (r, children, true)
        })
    }
}

/// How long a stopped step gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

fn trim_newline(text: &str) -> &str {
    text.strip_suffix('\n').unwrap_or(text)
}

fn continues_on(c: Option<&ContinueOn>, phase: Phase) -> bool {
    c.is_some_and(|c| match phase {
        Phase::Failed => c.failed,
        Phase::Error => c.error,
        _ => false,
    })
}

/// `depends` semantics of one term: `task.Result`, or a bare name (Succeeded, Skipped or
/// Daemoned, plus Failed/Errored when the task continues on them).
fn dep_satisfied(
    phase: Phase,
    children: &[Phase],
    result: Option<TaskResult>,
    cont: Option<&ContinueOn>,
) -> bool {
    match result {
        None => matches!(phase, Phase::Succeeded | Phase::Skipped) || continues_on(cont, phase),
        Some(TaskResult::Succeeded) => phase == Phase::Succeeded,
        Some(TaskResult::Failed) => phase == Phase::Failed,
        Some(TaskResult::Errored) => phase == Phase::Error,
        Some(TaskResult::Skipped) => phase == Phase::Skipped,
        Some(TaskResult::Omitted) => phase == Phase::Omitted,
        Some(TaskResult::Daemoned) => false,
        Some(TaskResult::AnySucceeded) => children.contains(&Phase::Succeeded),
        Some(TaskResult::AllFailed) => {
            !children.is_empty() && children.iter().all(|p| *p == Phase::Failed)
        }
    }
}

/// The phase a target task stands for when assessing its DAG: its own when it ran, else
/// (Skipped, Omitted) the most severe phase among the branches leading to it.
fn branch_phase(
    task: &str,
    done: &HashMap<String, (NodeResult, Vec<Phase>)>,
    deps: &dyn Fn(&str) -> Vec<String>,
) -> Phase {
    let phase = done.get(task).map_or(Phase::Succeeded, |(n, _)| n.phase);
    if matches!(phase, Phase::Succeeded | Phase::Failed | Phase::Error) {
        return phase;
    }
    let mut worst = Phase::Succeeded;
    for d in deps(task) {
        match branch_phase(&d, done, deps) {
            Phase::Error => return Phase::Error,
            Phase::Failed => worst = Phase::Failed,
            _ => {}
        }
    }
    worst
}

/// The `steps.<name>.*` / `tasks.<name>.*` variables after a step or task finished; loops
/// aggregate their Succeeded children as Argo does.
fn add_to_scope(
    scope: &mut HashMap<String, String>,
    prefix: &str,
    results: &[NodeResult],
    is_loop: bool,
) {
    if !is_loop {
        let Some(r) = results.first() else { return };
        scope.insert(format!("{prefix}.id"), r.id.clone());
        scope.insert(
            format!("{prefix}.status"),
            workflow_status_text(r.phase).into(),
        );
        if let Some(code) = &r.outputs.exit_code {
            scope.insert(format!("{prefix}.exitCode"), code.clone());
        }
        if let Some(result) = &r.outputs.result {
            scope.insert(format!("{prefix}.outputs.result"), result.clone());
        }
        for p in &r.outputs.parameters {
            scope.insert(
                format!("{prefix}.outputs.parameters.{}", p.name),
                p.value.clone(),
            );
        }
        if let Some(t) = &r.started_at {
            scope.insert(format!("{prefix}.startedAt"), t.clone());
        }
        if let Some(t) = &r.finished_at {
            scope.insert(format!("{prefix}.finishedAt"), t.clone());
        }
        return;
    }
    let succeeded: Vec<&NodeResult> = results
        .iter()
        .filter(|r| r.phase == Phase::Succeeded)
        .collect();
    let params: Vec<serde_json::Value> = succeeded
        .iter()
        .filter(|r| !r.outputs.parameters.is_empty())
        .map(|r| {
            serde_json::Value::Object(
                r.outputs
                    .parameters
                    .iter()
                    .map(|p| (p.name.clone(), serde_json::Value::String(p.value.clone())))
                    .collect(),
            )
        })
        .collect();
    scope.insert(
        format!("{prefix}.outputs.parameters"),
        serde_json::Value::Array(params).to_string(),
    );
    let mut per_name: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for r in &succeeded {
        for p in &r.outputs.parameters {
            per_name
                .entry(p.name.clone())
                .or_default()
                .push(serde_json::Value::String(p.value.clone()));
        }
    }
    for (name, values) in per_name {
        scope.insert(
            format!("{prefix}.outputs.parameters.{name}"),
            serde_json::Value::Array(values).to_string(),
        );
    }
    let results_list: Vec<serde_json::Value> = succeeded
        .iter()
        .filter_map(|r| r.outputs.result.as_ref())
        .map(|text| {
            serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone()))
        })
        .collect();
    scope.insert(
        format!("{prefix}.outputs.result"),
        serde_json::Value::Array(results_list).to_string(),
    );
}

/// Keeps the record on disk while the run goes: every change marks it dirty, and a thread
/// writes the latest state, at most every [`SAVE_INTERVAL`], so that a burst of 500 steps
/// costs a few dozen writes rather than thousands.
struct Saver {
    signal: Arc<(Mutex<SaverFlags>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct SaverFlags {
    dirty: bool,
    stop: bool,
}

/// The longest a finished node stays unrecorded; a kill -9 inside this window re-runs it.
pub const SAVE_INTERVAL: Duration = Duration::from_millis(20);

impl Saver {
    fn start(state: Arc<Mutex<State>>, store: RecordStore) -> Self {
        let signal = Arc::new((Mutex::new(SaverFlags::default()), Condvar::new()));
        let thread_signal = signal.clone();
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*thread_signal;
            loop {
                {
                    let mut flags = lock.lock().expect("saver lock");
                    while !flags.dirty && !flags.stop {
                        flags = cv.wait(flags).expect("saver lock");
                    }
                    if flags.stop {
                        return;
                    }
                    flags.dirty = false;
                }
                let (name, body) = {
                    let st = state.lock().expect("run state lock");
                    (
                        st.record.name.clone(),
                        serde_json::to_vec(&st.record).expect("run records always serialize"),
                    )
                };
                if let Err(e) = store.save_serialized(&name, &body) {
                    eprintln!("obsctl: warning: {e}");
                }
                std::thread::sleep(SAVE_INTERVAL);
            }
        });
        Self {
            signal,
            thread: Mutex::new(Some(thread)),
        }
    }

    fn dirty(&self) {
        let (lock, cv) = &*self.signal;
        lock.lock().expect("saver lock").dirty = true;
        cv.notify_one();
    }

    fn stop(&self) {
        let (lock, cv) = &*self.signal;
        lock.lock().expect("saver lock").stop = true;
        cv.notify_one();
        if let Some(t) = self.thread.lock().expect("saver thread lock").take() {
            let _ = t.join();
        }
    }
}
