//! `obsctl chaos`: resiliency scenarios (seed 000, subtask 7), each injected, recovered and
//! proven with a loss account. A scenario runs a workflow through `obsctl run` (a child process,
//! as the Argo controller is one), breaks something real while steps run (a step's pod, the
//! backend, the controller itself), undoes it, and then compares what was sent with what the
//! backends hold: `obsctl verify`'s checks plus a line-by-line account of the step logs.
//! `target` is what the faults hit (`docker` on the Docker stack); `scenarios` the four
//! scenarios; `account` the judging.

pub mod account;
pub mod docker;
pub mod scenarios;
pub mod target;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use account::Row;

/// How the backend goes away in the collector-outage scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OutageMode {
    /// SIGTERM (docker stop), then started again: a graceful stop (scaled to 0 and back).
    Stop,
    /// SIGKILL, then started again on the same data.
    Kill,
    /// SIGSTOP/SIGCONT (docker pause/unpause): connections hang (the black-hole case).
    Pause,
    /// Egress blocked: on Docker the collector is disconnected from the stack's network; on the
    /// embedded runtime a relay in front of the backend holds every connection unanswered.
    Partition,
}

impl OutageMode {
    pub const ALL: [OutageMode; 4] = [Self::Stop, Self::Kill, Self::Pause, Self::Partition];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Partition => "partition",
        }
    }
}

/// A scenario as users name it on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioName {
    /// Every scenario in turn.
    All,
    PodKill,
    /// Every outage mode in turn (see --mode).
    CollectorOutage,
    Burst,
    ControllerRestart,
}

/// One scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    PodKill,
    Outage(OutageMode),
    Burst,
    ControllerRestart,
}

impl Scenario {
    pub fn name(self) -> String {
        match self {
            Self::PodKill => "pod-kill".into(),
            Self::Outage(mode) => format!("collector-outage/{}", mode.as_str()),
            Self::Burst => "burst".into(),
            Self::ControllerRestart => "controller-restart".into(),
        }
    }

    /// The scenarios `names` ask for, in the order `all` runs them, each once.
    pub fn expand(names: &[ScenarioName], modes: &[OutageMode]) -> Vec<Scenario> {
        let wants = |n: ScenarioName| {
            names.is_empty() || names.contains(&ScenarioName::All) || names.contains(&n)
        };
        let mut out = Vec::new();
        if wants(ScenarioName::PodKill) {
            out.push(Self::PodKill);
        }
        if wants(ScenarioName::CollectorOutage) {
            let modes = if modes.is_empty() {
                &OutageMode::ALL[..]
            } else {
                modes
            };
            out.extend(modes.iter().map(|m| Self::Outage(*m)));
        }
        if wants(ScenarioName::Burst) {
            out.push(Self::Burst);
        }
        if wants(ScenarioName::ControllerRestart) {
            out.push(Self::ControllerRestart);
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The obsctl executable: `run`, `serve` and the shim.
    pub exe: PathBuf,
    /// What the faults hit.
    pub runtime: target::Runtime,
    /// Scratch space; each scenario gets a directory of its own in it.
    pub work_dir: PathBuf,
    /// Steps of the burst.
    pub steps: u32,
    /// How long the backend stays away in collector-outage.
    pub outage: Duration,
    /// How long verification waits for the data after a scenario.
    pub timeout: Duration,
    /// How the Docker stack's backends are read (TLS, credentials, URLs in front of them).
    pub connector: crate::backends::Connector,
}

/// What the live view shows: a scenario's phase as it changes, and its steps as they go.
#[derive(Debug, Clone)]
pub enum Progress {
    Phase {
        scenario: String,
        phase: String,
    },
    Steps {
        scenario: String,
        finished: usize,
        running: usize,
    },
}

/// The fault window and each step attempt on one time axis (milliseconds from the start of
/// the scenario's run), for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub fault: Option<(u64, u64)>,
    pub steps: Vec<TimelineStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineStep {
    pub node: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub phase: String,
}

/// One measurement of a scenario, under a stable name (the bench and CI read them).
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
}

impl Measure {
    pub fn new(name: &'static str, value: f64, unit: &'static str) -> Self {
        Self { name, value, unit }
    }
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let precision = if self.value.fract() == 0.0 { 0 } else { 2 };
        write!(
            f,
            "{}: {:.*} {}",
            self.name, precision, self.value, self.unit
        )
    }
}

/// What one scenario found.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub passed: bool,
    /// Wall time of the whole scenario: backend start, run, fault, accounting.
    pub elapsed_ms: u64,
    pub runs: Vec<String>,
    pub rows: Vec<Row>,
    /// Named measurements: durations, sizes, ratios.
    pub timings: Vec<Measure>,
    pub timeline: Timeline,
}

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("embedded backend: {0}")]
    Backend(String),
    #[error("Docker stack: {0}")]
    Docker(String),
    #[error("obsctl run: {0}")]
    Run(String),
    #[error("querying the backend: {0}")]
    Query(#[from] crate::backends::BackendError),
    #[error("reading run records: {0}")]
    Records(#[from] crate::workflow::record::RecordError),
    #[error("{0} did not happen within {1:?}")]
    Deadline(String, Duration),
}

impl ChaosError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
