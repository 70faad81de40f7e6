//! A [`Runner`] that starts no process, for in-process tests of the executor's semantics: each
//! template behaves as a test scripts it (exit code, stdout, output files, how long it runs,
//! whether it ignores SIGTERM), and every start is recorded so that a test can check what ran,
//! in which order, with which environment, and how many ran at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch};

use crate::otlp::{SpanId, TraceId};
use crate::workflow::runner::{Runner, RunnerError, ShimStart, StepExit, StepHandle, StepSpec};

/// How one attempt of a template behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    pub exit_code: i32,
    /// `None`: `echo`'s output when the command is `echo`, else nothing.
    pub stdout: Option<String>,
    /// Output files the step writes, by absolute path.
    pub files: HashMap<String, String>,
    /// How long the step runs; `None` runs until it is stopped.
    pub runs_for: Option<Duration>,
    /// A step that ignores SIGTERM ends only with SIGKILL.
    pub ignores_term: bool,
}

impl Behaviour {
    pub fn exit(code: i32) -> Self {
        Self {
            exit_code: code,
            runs_for: Some(Duration::ZERO),
            ..Self::default()
        }
    }

    pub fn prints(text: &str) -> Self {
        Self {
            stdout: Some(text.to_string()),
            ..Self::exit(0)
        }
    }

    pub fn hangs() -> Self {
        Self::default()
    }
}

#[derive(Default)]
struct Script {
    /// Per template: one behaviour per attempt, the last one repeating.
    by_template: HashMap<String, VecDeque<Behaviour>>,
    started: Vec<StepSpec>,
    running: usize,
    most_at_once: usize,
}

/// A scripted runner; clones share the script and the log of starts.
#[derive(Clone, Default)]
pub struct FakeRunner {
    script: Arc<Mutex<Script>>,
}

impl FakeRunner {
    /// Attempts of `template` behave as `attempts`, in order; the last one repeats.
    pub fn script(&self, template: &str, attempts: Vec<Behaviour>) -> &Self {
        self.lock()
            .by_template
            .insert(template.to_string(), attempts.into());
        self
    }

    /// Every step started so far, in order.
    pub fn started(&self) -> Vec<StepSpec> {
        self.lock().started.clone()
    }

    /// The node names started so far, in order.
    pub fn started_names(&self) -> Vec<String> {
        self.lock()
            .started
            .iter()
            .map(|s| s.node_name.clone())
            .collect()
    }

    /// The most steps that ran at the same time.
    pub fn most_at_once(&self) -> usize {
        self.lock().most_at_once
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("fake runner lock")
    }

    fn next_behaviour(&self, spec: &StepSpec) -> Behaviour {
        let mut script = self.lock();
        let queue = script.by_template.get_mut(&spec.template_name);
        let mut behaviour = match queue {
            Some(q) if q.len() > 1 => q.pop_front().expect("non-empty"),
            Some(q) => q.front().cloned().unwrap_or_else(|| Behaviour::exit(0)),
            None => Behaviour::exit(0),
        };
        if behaviour.stdout.is_none() && spec.argv.first().is_some_and(|c| c == "echo") {
            behaviour.stdout = Some(format!("{}\n", spec.argv[1..].join(" ")));
        }
        behaviour
    }
}

impl Runner for FakeRunner {
    type Handle = FakeHandle;

    fn start(&self, spec: StepSpec) -> Result<FakeHandle, RunnerError> {
        let behaviour = self.next_behaviour(&spec);
        {
            let mut script = self.lock();
            script.started.push(spec);
            script.running += 1;
            script.most_at_once = script.most_at_once.max(script.running);
        }
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Some(ShimStart {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
        }));
        let (signals, signal_rx) = watch::channel(None);
        Ok(FakeHandle {
            ends_at: behaviour.runs_for.map(|d| tokio::time::Instant::now() + d),
            behaviour,
            telemetry: Some(rx),
            signals,
            signal_rx,
            runner: self.clone(),
            ended: false,
        })
    }
}

/// One fake step; it counts as running until [`StepHandle::wait`] returns its exit.
pub struct FakeHandle {
    behaviour: Behaviour,
    ends_at: Option<tokio::time::Instant>,
    telemetry: Option<oneshot::Receiver<Option<ShimStart>>>,
    signals: watch::Sender<Option<Signal>>,
    signal_rx: watch::Receiver<Option<Signal>>,
    runner: FakeRunner,
    ended: bool,
}

impl FakeHandle {
    fn ended(&mut self, exit_code: i32) -> Result<StepExit, RunnerError> {
        if !std::mem::replace(&mut self.ended, true) {
            self.runner.lock().running -= 1;
        }
        let files = self
            .behaviour
            .files
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        Ok(StepExit {
            exit_code,
            stdout: self.behaviour.stdout.clone().unwrap_or_default(),
            files,
            shim_killed_by: None,
        })
    }
}

impl StepHandle for FakeHandle {
    fn take_telemetry(&mut self) -> Option<oneshot::Receiver<Option<ShimStart>>> {
        self.telemetry.take()
    }

    async fn wait(&mut self) -> Result<StepExit, RunnerError> {
        loop {
            let signal = *self.signal_rx.borrow_and_update();
            match signal {
                Some(Signal::SIGKILL) => return self.ended(128 + Signal::SIGKILL as i32),
                Some(Signal::SIGTERM) if !self.behaviour.ignores_term => {
                    return self.ended(128 + Signal::SIGTERM as i32);
                }
                _ => {}
            }
            let ends_at = self.ends_at;
            tokio::select! {
                _ = async { tokio::time::sleep_until(ends_at.expect("guarded")).await }, if ends_at.is_some() => {
                    let code = self.behaviour.exit_code;
                    return self.ended(code);
                }
                _ = self.signal_rx.changed() => {}
            }
        }
    }

    fn terminate(&self) {
        self.signals.send_replace(Some(Signal::SIGTERM));
    }

    fn kill(&self) {
        self.signals.send_replace(Some(Signal::SIGKILL));
    }

    fn process_group(&self) -> Option<i32> {
        None
    }
}
