//! The executor: walks a workflow's templates with Argo's semantics (steps groups, DAG
//! `depends`, loops, `when`, retries, timeouts, parallelism, exit handler, global outputs),
//! names nodes as Argo names them, hands Pod nodes to a [`Runner`] and keeps the run record
//! on disk as it goes, so that an interrupted run can be resumed without re-running what finished.
//!
//! By concern: `nodes` (the node table, which hides the resume rules), `scope` (variables),
//! `call` (template dispatch, loops, `when`, arguments), `pod`, `retry`, `steps`, `dag`, `hooks`
//! (exit handlers and lifecycle hooks), `suspend`, `saver` (coalesced record writes) and
//! `signals` (stop and deadline).

mod call;
mod dag;
#[cfg(test)]
mod fake;
mod hooks;
mod nodes;
mod pod;
mod retry;
mod saver;
mod scope;
mod signals;
mod steps;
mod suspend;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rand::Rng;
use tokio::sync::Semaphore;

use self::nodes::NodeTable;
use self::scope::Globals;
use self::signals::{Stop, StopReason};
use super::clock;
use super::load::LoadedWorkflow;
use super::record::{
    NodeStatus, Parameter, Phase, RecordError, RecordStore, RunRecord, WorkflowStatus,
};
use super::runner::Runner;
use super::spec::Workflow;
use super::telemetry::{self, Correlation, OtelConfig};
use super::vars;
use crate::otlp::{SpanId, TraceId};

pub use self::pod::INTERRUPTED_BY_RESTART;
pub use self::saver::SAVE_INTERVAL;
pub use self::signals::STOPPED;

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
        sampled: None,
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
            phase: record.status.phase.as_str(),
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
async fn walk_for_tests<R: Runner>(
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
    let (record, previous) = reopen(record, &config.store)?;
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
    let active_deadline = loaded
        .workflow
        .spec
        .active_deadline_seconds
        .as_ref()
        .and_then(|s| vars::parse_seconds(s.as_str()));
    let (stop, stop_reason) = Stop::arm(started, active_deadline, stop_on_signals);
    let exec = Arc::new(Executor {
        pod_permits: loaded
            .workflow
            .spec
            .parallelism
            .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
        globals: Globals::new(&record, &loaded),
        corr: Correlation::from_parameters(&loaded.parameters),
        nodes: NodeTable::open(record, previous, config.store.clone()),
        wf: loaded.workflow,
        runner,
        work_root,
        stop: stop_reason,
        on_event,
        config,
    });
    let hooks = exec.start_workflow_hooks();
    let entry = exec
        .clone()
        .execute(exec.entry_call(&loaded.parameters))
        .await;
    exec.finish_workflow_hooks(hooks, &entry).await;
    stop.lift_for_exit_handler();
    let (phase, message) = exec.clone().exit_handler(&entry, started).await;
    stop.disarm();
    let finished = SystemTime::now();
    let (record, pods_run) = exec.nodes.close(phase, message, finished);
    exec.config.store.save(&record)?;
    Ok(Walked {
        record,
        pods_run,
        corr: exec.corr.clone(),
        started,
        finished,
    })
}

/// Opens `record` for running: its nodes become the ones a resumed run may reuse, and what an
/// interrupted run left running is stopped.
fn reopen(
    mut record: RunRecord,
    store: &RecordStore,
) -> Result<(RunRecord, BTreeMap<String, NodeStatus>), EngineError> {
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
    store.save(&record)?;
    Ok((record, previous))
}

/// One run being executed: the workflow, the runner, the node table and what every node reads.
struct Executor<R: Runner> {
    wf: Workflow,
    runner: R,
    nodes: NodeTable,
    globals: Globals,
    corr: Correlation,
    work_root: PathBuf,
    pod_permits: Option<Arc<Semaphore>>,
    stop: StopReason,
    on_event: Box<dyn Fn(Event) + Send + Sync>,
    config: RunConfig,
}

impl<R: Runner> Executor<R> {
    /// Why the run is being stopped, if it is.
    fn stopping(&self) -> Option<String> {
        self.stop.borrow().clone()
    }
}
